//! Go module ordering (`golang.org/x/mod/semver`): SemVer with a `v`
//! prefix, which is optional here because OSV's Go ecosystem writes versions
//! without it (`1.2.3`) while build info has `v1.2.3`. The shorthands `v1`
//! and `v1.2` mean `v1.0.0` and `v1.2.0`; build metadata (`+incompatible`)
//! is ignored; pseudo-versions (`v0.0.0-20191109021931-daa7c04131f5`,
//! `v1.2.4-0.2019…`) are prereleases and order by SemVer's rules.

use std::cmp::Ordering;

use super::semver;

fn parse(s: &str) -> Option<semver::Version<'_>> {
    let s = s.strip_prefix('v').unwrap_or(s);
    if let Some(v) = semver::parse(s) {
        return Some(v);
    }
    // The shorthands: MAJOR or MAJOR.MINOR, nothing after.
    let mut parts = s.split('.');
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = match parts.next() {
        None => "0",
        Some(m) if is_number(m) => m,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(semver::Version {
        major,
        minor,
        patch: "0",
        pre: None,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

pub(crate) fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use proptest::prelude::*;

    #[test]
    fn module_version_chain() {
        let chain = [
            "v0.0.0-20191109021931-daa7c04131f5",
            "v0.0.0-20200101000000-000000000000",
            "v0.0.1",
            "v0.1.0",
            "v1.2.3-pre",
            "v1.2.3-pre.0.20191109021931-daa7c04131f5",
            "v1.2.3",
            "v1.2.4-0.20191109021931-daa7c04131f5",
            "v1.2.4",
            "v1.10.0",
            "v2.0.0+incompatible",
            "v2.0.1",
            "v10.0.0",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(compare(a, b), Some(i.cmp(&j)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn prefix_shorthand_and_build() {
        for (a, b) in [
            ("v1.2.3", "1.2.3"),
            ("v1", "v1.0.0"),
            ("v1.2", "1.2.0"),
            ("v2.0.0+incompatible", "v2.0.0"),
            ("v1.0.0-rc.1+meta", "1.0.0-rc.1"),
        ] {
            assert_eq!(compare(a, b), Some(Equal), "{a} vs {b}");
        }
        assert_eq!(compare("v1.2.3-rc.10", "v1.2.3-rc.9"), Some(Greater));
        assert_eq!(compare("v1.2.3-alpha", "v1.2.3-1"), Some(Greater));
        assert_eq!(compare("1.21.0-rc.2", "1.21.0"), Some(Less));
    }

    #[test]
    fn invalid_is_none() {
        for bad in [
            "",
            "v",
            "vv1.0.0",
            "v01.0.0",
            "v1.02",
            "v1.2-pre",
            "v1.2+meta",
            "v1.2.3.4",
            "v1.2.3-",
            "v1.2.3-01",
            "v1.2.3+",
            "V1.2.3",
            "go1.21.3",
            "latest",
            "v1.2.3-a..b",
        ] {
            assert_eq!(compare(bad, "v1.0.0"), None, "{bad:?}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        "v?(0|[1-9])(\\.(0|[1-9])(\\.(0|[1-9])(-(0|[1-9]|[a-c]{1,2}|20[0-9]{2})(\\.(0|[1-9]|[a-c]{1,2})){0,2})?(\\+incompatible)?)?)?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");
}
