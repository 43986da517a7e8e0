//! SemVer 2.0.0 ordering (npm, crates.io): `MAJOR.MINOR.PATCH[-pre][+build]`,
//! strict grammar (no leading `v`, no npm loose forms, no leading zeros in
//! numeric parts), prerelease identifiers compared per §11, build metadata
//! ignored. Also the core of the Go module ordering ([`super::golang`]).

use std::cmp::Ordering;

use super::cmp_digits;

/// A parsed SemVer version; `pre` is the prerelease text without its `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    pub(crate) major: &'a str,
    pub(crate) minor: &'a str,
    pub(crate) patch: &'a str,
    pub(crate) pre: Option<&'a str>,
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// A numeric part: digits, no leading zero unless it is `0`.
fn is_number(s: &str) -> bool {
    is_numeric(s) && (s == "0" || !s.starts_with('0'))
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// Dot-separated non-empty identifiers of `[0-9A-Za-z-]`; with `pre`, a
/// numeric identifier must not have leading zeros.
pub(crate) fn valid_identifiers(s: &str, pre: bool) -> bool {
    s.split('.').all(|id| {
        !id.is_empty()
            && id.bytes().all(is_ident_char)
            && (!pre || !is_numeric(id) || is_number(id))
    })
}

/// Parses `MAJOR.MINOR.PATCH[-pre][+build]` strictly.
pub(crate) fn parse(s: &str) -> Option<Version<'_>> {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    if let Some(b) = build
        && !valid_identifiers(b, false)
    {
        return None;
    }
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    if let Some(p) = pre
        && !valid_identifiers(p, true)
    {
        return None;
    }
    let mut parts = core.split('.');
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = parts.next().filter(|p| is_number(p))?;
    let patch = parts.next().filter(|p| is_number(p))?;
    if parts.next().is_some() {
        return None;
    }
    Some(Version {
        major,
        minor,
        patch,
        pre,
    })
}

/// SemVer §11.4: identifiers left to right; numeric ones numerically and
/// below alphanumeric ones, which compare in ASCII order; a longer list wins
/// when all shared identifiers are equal.
pub(crate) fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (is_numeric(x), is_numeric(y)) {
                    (true, true) => cmp_digits(x, y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(self.major, other.major)
            .then_with(|| cmp_digits(self.minor, other.minor))
            .then_with(|| cmp_digits(self.patch, other.patch))
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => cmp_prerelease(a, b),
            })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
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
    fn spec_precedence_chain() {
        // SemVer 2.0.0 §11's own example chain, and more.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1-0",
            "1.0.1",
            "1.1.0",
            "1.10.0",
            "2.0.0-0.3.7",
            "2.0.0-x.7.z.92",
            "2.0.0",
            "10.0.0",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(compare(a, b), Some(i.cmp(&j)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn build_metadata_is_ignored() {
        assert_eq!(compare("1.0.0+a", "1.0.0+b"), Some(Equal));
        assert_eq!(compare("1.0.0-rc.1+x.y", "1.0.0-rc.1"), Some(Equal));
        assert_eq!(compare("1.0.0-a-b", "1.0.0-a"), Some(Greater));
        assert_eq!(compare("1.0.0-A", "1.0.0-a"), Some(Less));
        assert_eq!(compare("1.0.0-1a", "1.0.0-2"), Some(Greater));
    }

    #[test]
    fn invalid_is_none() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "v1.2.3",
            "=1.2.3",
            " 1.2.3",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3-01",
            "1.2.3+a_b",
            "1.2.3-é",
            "1.2.x",
            "-1.2.3",
            "1.2.3 ",
        ] {
            assert_eq!(compare(bad, "1.0.0"), None, "{bad:?}");
        }
        assert_eq!(compare("1.2.3+01", "1.2.3"), Some(Equal));
        assert_eq!(compare("1.2.3-0a", "1.2.3-0"), Some(Greater));
    }

    fn version() -> impl Strategy<Value = String> {
        "(0|[1-9][0-9]?)\\.(0|[1-9])\\.(0|[1-9])(-(0|[1-9]|[a-c]{1,2}|[a-c]-)(\\.(0|[1-9]|[a-c]{1,2})){0,2})?(\\+[a-z0-9]{1,3})?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");

    proptest! {
        #[test]
        fn prerelease_precedes_release(a in "(0|[1-9])\\.(0|[1-9])\\.(0|[1-9])", p in "[a-z0-9]{1,4}") {
            let pre = format!("{a}-{p}");
            prop_assume!(is_valid_pre(&p));
            prop_assert_eq!(compare(&pre, &a), Some(Less));
        }
    }

    fn is_valid_pre(p: &str) -> bool {
        valid_identifiers(p, true)
    }
}
