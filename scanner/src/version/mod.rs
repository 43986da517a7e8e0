//! Exact version ordering per ecosystem: dpkg (Debian, Ubuntu), rpm (Red Hat
//! family, SUSE), apk (Alpine, Wolfi), PEP 440 (PyPI), SemVer (npm,
//! crates.io), Go modules, Maven, RubyGems. An unparseable version compares
//! as `None`: never a match, never a panic.
//!
//! One private submodule per ordering; each parses with its ecosystem's own
//! grammar and compares without allocation-heavy normalisation. Numbers are
//! compared as digit strings ([`cmp_digits`]), so no length overflows. The
//! oracle tests (`tests/version_oracles.rs`) check them against the real
//! tools: dpkg, rpm, Python's `packaging`, node's `semver`, Maven's
//! `ComparableVersion` and RubyGems.

use std::cmp::Ordering;

/// The laws every ordering's property tests check: reflexive and
/// antisymmetric over `$total`, transitive over `$chain` (Maven's own order
/// is not transitive on every shape), and no panic on any `$junk` string.
/// Expands to the test functions inside a module that has `compare`.
#[cfg(test)]
macro_rules! ordering_laws {
    ($total:expr, $chain:expr, $junk:literal) => {
        proptest::proptest! {
            #[test]
            fn reflexive(a in $total) {
                proptest::prop_assert_eq!(compare(&a, &a), Some(std::cmp::Ordering::Equal));
            }

            #[test]
            fn antisymmetric(a in $total, b in $total) {
                let ab = compare(&a, &b).unwrap();
                proptest::prop_assert_eq!(compare(&b, &a), Some(ab.reverse()));
            }

            #[test]
            fn transitive(mut v in proptest::collection::vec($chain, 3..8)) {
                v.sort_by(|a, b| compare(a, b).unwrap());
                for i in 0..v.len() {
                    for j in i..v.len() {
                        proptest::prop_assert_ne!(
                            compare(&v[i], &v[j]),
                            Some(std::cmp::Ordering::Greater)
                        );
                    }
                }
            }

            #[test]
            fn never_panics(a in $junk, b in $junk) {
                let _ = compare(&a, &b);
            }
        }
    };
}

mod apk;
mod dpkg;
mod golang;
mod maven;
mod pep440;
mod rpm;
mod rubygems;
mod semver;

/// A version ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Dpkg,
    Rpm,
    Apk,
    Pep440,
    Semver,
    Go,
    Maven,
    RubyGems,
}

impl Scheme {
    /// The ordering of an OSV ecosystem (`Debian:12`, `Alpine:v3.19`,
    /// `Red Hat`, `PyPI`, `crates.io`, …); `None` for ecosystems Berth
    /// cannot order.
    pub fn for_ecosystem(ecosystem: &str) -> Option<Scheme> {
        let base = ecosystem.split(':').next().unwrap_or(ecosystem);
        Some(match base {
            "Debian" | "Ubuntu" => Scheme::Dpkg,
            "Alpine" | "Wolfi" | "Chainguard" => Scheme::Apk,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "SUSE" | "openSUSE" | "Mageia"
            | "openEuler" | "Amazon Linux" | "Oracle Linux" | "Fedora" => Scheme::Rpm,
            "PyPI" => Scheme::Pep440,
            "npm" | "crates.io" => Scheme::Semver,
            "Go" => Scheme::Go,
            "Maven" => Scheme::Maven,
            "RubyGems" => Scheme::RubyGems,
            _ => return None,
        })
    }
}

/// Compares `a` with `b` under `scheme`; `None` when either does not parse.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Option<Ordering> {
    match scheme {
        Scheme::Dpkg => dpkg::compare(a, b),
        Scheme::Rpm => rpm::compare(a, b),
        Scheme::Apk => apk::compare(a, b),
        Scheme::Pep440 => pep440::compare(a, b),
        Scheme::Semver => semver::compare(a, b),
        Scheme::Go => golang::compare(a, b),
        Scheme::Maven => maven::compare(a, b),
        Scheme::RubyGems => rubygems::compare(a, b),
    }
}

/// Whether `v` parses under `scheme` (what [`compare`] accepts).
pub fn is_valid(scheme: Scheme, v: &str) -> bool {
    compare(scheme, v, v).is_some()
}

/// Compares two runs of ASCII digits as unbounded non-negative integers
/// (leading zeros ignored).
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_compare_as_unbounded_integers() {
        assert_eq!(cmp_digits("007", "7"), Ordering::Equal);
        assert_eq!(cmp_digits("10", "9"), Ordering::Greater);
        assert_eq!(cmp_digits("", "0"), Ordering::Equal);
        assert_eq!(
            cmp_digits(
                "123456789012345678901234567890",
                "123456789012345678901234567891"
            ),
            Ordering::Less
        );
    }

    #[test]
    fn ecosystems_map_to_schemes() {
        assert_eq!(Scheme::for_ecosystem("Debian:12"), Some(Scheme::Dpkg));
        assert_eq!(Scheme::for_ecosystem("Alpine:v3.19"), Some(Scheme::Apk));
        assert_eq!(Scheme::for_ecosystem("Red Hat"), Some(Scheme::Rpm));
        assert_eq!(Scheme::for_ecosystem("crates.io"), Some(Scheme::Semver));
        assert_eq!(Scheme::for_ecosystem("Hackage"), None);
    }

    #[test]
    fn huge_hostile_inputs_stay_linear_and_never_panic() {
        let schemes = [
            Scheme::Dpkg,
            Scheme::Rpm,
            Scheme::Apk,
            Scheme::Pep440,
            Scheme::Semver,
            Scheme::Go,
            Scheme::Maven,
            Scheme::RubyGems,
        ];
        let inputs = [
            "1.".repeat(50_000) + "1",
            "a1-".repeat(25_000),
            "~".repeat(100_000),
            "0".repeat(100_000),
            "1.0_rc".repeat(15_000),
            format!("1.0.0-{}", "a.".repeat(50_000)) + "a",
            "é".repeat(50_000),
        ];
        let start = std::time::Instant::now();
        for scheme in schemes {
            for a in &inputs {
                for b in &inputs {
                    let _ = compare(scheme, a, b);
                }
                let _ = compare(scheme, a, "1.0");
            }
        }
        // Generous for a debug build on a busy machine; quadratic behaviour
        // on these sizes would take minutes.
        assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    }

    #[test]
    fn validity_follows_compare() {
        assert!(is_valid(Scheme::Dpkg, "1:2.3-4"));
        assert!(!is_valid(Scheme::Dpkg, "1.0-"));
        assert!(is_valid(Scheme::Semver, "1.2.3-rc.1"));
        assert!(!is_valid(Scheme::Semver, "1.2"));
    }
}
