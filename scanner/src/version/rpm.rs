//! rpm version ordering: `rpmvercmp` on each part of `[epoch:]version[-release]`
//! as rpm 4.18 splits and compares EVR strings (`rpmverParse`/`rpmverCmp`,
//! what `rpm.vercmp` evaluates).
//!
//! `rpmvercmp`: alphanumeric segments, anything else separates; `~` sorts
//! before everything (pre-release), `^` after the base but before any further
//! segment (post-release snapshot); a numeric segment beats an alphabetic
//! one; numbers compare numerically, letters by byte. EVR: the epoch is the
//! leading digits before a `:` (missing = 0), the release follows the last
//! `-`; a version with a release sorts after the same version without one.
//! rpm refuses only the empty string (`None`); a NUL byte, which rpm could
//! never see, is refused too.

use std::cmp::Ordering;

use super::cmp_digits;

/// `[epoch:]version[-release]`, split as rpm's `parseEVR` splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Evr<'a> {
    epoch: &'a [u8],
    version: &'a [u8],
    release: Option<&'a [u8]>,
}

fn parse(s: &str) -> Option<Evr<'_>> {
    let b = s.as_bytes();
    if b.is_empty() || b.contains(&0) {
        return None;
    }
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    // The release starts after the last '-' at or after the epoch digits.
    let dash = b
        .get(digits..)?
        .iter()
        .rposition(|&c| c == b'-')
        .map(|p| p + digits);
    let (epoch, vstart) = if b.get(digits) == Some(&b':') {
        let e = b.get(..digits)?;
        (if e.is_empty() { &b"0"[..] } else { e }, digits + 1)
    } else {
        (&b"0"[..], 0)
    };
    let (version, release) = match dash {
        Some(d) => (b.get(vstart..d)?, Some(b.get(d + 1..)?)),
        None => (b.get(vstart..)?, None),
    };
    Some(Evr {
        epoch,
        version,
        release,
    })
}

fn is_sep(c: u8) -> bool {
    !c.is_ascii_alphanumeric() && c != b'~' && c != b'^'
}

/// rpm's `rpmvercmp`.
pub(crate) fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    loop {
        while at(a, i).is_some_and(is_sep) {
            i += 1;
        }
        while at(b, j).is_some_and(is_sep) {
            j += 1;
        }
        let (x, y) = (at(a, i), at(b, j));
        if x.is_none() && y.is_none() {
            return Ordering::Equal;
        }
        if x == Some(b'~') || y == Some(b'~') {
            if x != Some(b'~') {
                return Ordering::Greater;
            }
            if y != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if x == Some(b'^') || y == Some(b'^') {
            if x.is_none() {
                return Ordering::Less;
            }
            if y.is_none() {
                return Ordering::Greater;
            }
            if x != Some(b'^') {
                return Ordering::Greater;
            }
            if y != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(x), Some(_)) = (x, y) else {
            // One ran out: whichever still has characters wins.
            return if x.is_none() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        };
        let numeric = x.is_ascii_digit();
        let class = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (si, sj) = (i, j);
        while at(a, i).is_some_and(class) {
            i += 1;
        }
        while at(b, j).is_some_and(class) {
            j += 1;
        }
        let (sa, sb) = (a.get(si..i).unwrap_or(&[]), b.get(sj..j).unwrap_or(&[]));
        if sb.is_empty() {
            // Different segment types: numeric beats alphabetic.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let o = if numeric {
            // Both are ASCII digits, hence valid UTF-8.
            cmp_digits(
                std::str::from_utf8(sa).unwrap_or(""),
                std::str::from_utf8(sb).unwrap_or(""),
            )
        } else {
            sa.cmp(sb)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
}

fn cmp(a: &Evr<'_>, b: &Evr<'_>) -> Ordering {
    rpmvercmp(a.epoch, b.epoch)
        .then_with(|| rpmvercmp(a.version, b.version))
        .then_with(|| match (a.release, b.release) {
            (Some(x), Some(y)) => rpmvercmp(x, y),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        })
}

pub(crate) fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(cmp(&parse(a)?, &parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use proptest::prelude::*;

    #[test]
    fn rpmvercmp_rules() {
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0^post1", "1.0", Greater),
            ("1.0^post1", "1.0.1", Less),
            ("1.0a", "1.0.1", Less),
            ("1.0", "1.0.0", Less),
            ("1.0a", "1.0", Greater),
            ("1.0.a", "1.0a", Equal),
            ("1.01", "1.1", Equal),
            ("1.10", "1.9", Greater),
            ("1_0", "1.0", Equal),
            ("1.0~~", "1.0~", Less),
            ("1.0^^", "1.0^", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("a", "1", Less),
            ("abc", "abd", Less),
            ("ABC", "abc", Less),
            ("2.el9", "2.el9_1", Less),
            ("1.el8", "1.el9", Less),
            ("9999999999999999999999", "9999999999999999999998", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(rpmvercmp(a.as_bytes(), b.as_bytes()), want, "{a} vs {b}");
            assert_eq!(
                rpmvercmp(b.as_bytes(), a.as_bytes()),
                want.reverse(),
                "{b} vs {a}"
            );
        }
    }

    #[test]
    fn evr_rules() {
        let cases = [
            ("1:1.0-1", "2.0-1", Greater),
            ("0:1.0-1", "1.0-1", Equal),
            (":1.0", "0:1.0", Equal),
            ("01:1.0", "1:1.0", Equal),
            ("1.0-1", "1.0", Greater),
            ("1.0-", "1.0", Greater),
            ("1.0-~", "1.0-", Less),
            ("3.0.7-27.el9", "3.0.7-27.el9_2", Less),
            ("1:3.0.7-27.el9", "3.0.7-28.el9", Greater),
            ("1.0-a-b", "1.0-a-c", Less),
            ("a:1", "b:1", Less),
            ("-1", "1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
            assert_eq!(compare(b, a), Some(want.reverse()), "{b} vs {a}");
        }
        assert_eq!(compare("", "1"), None);
        assert_eq!(compare("1\u{0}", "1"), None);
    }

    fn evr() -> impl Strategy<Value = String> {
        "([0-2]:)?[0-9a-c]{1,2}([._~^][0-9a-c]{1,2}){0,3}-[0-9a-c]{1,2}([._~^][0-9a-c]{1,2}){0,2}"
    }

    ordering_laws!(evr(), evr(), "\\PC{0,12}");

    proptest! {
        #[test]
        fn tilde_and_caret(a in "[0-9a-c]{1,2}([._][0-9a-c]{1,2}){0,3}") {
            let pre = format!("{a}~1");
            let post = format!("{a}^1");
            prop_assert_eq!(rpmvercmp(pre.as_bytes(), a.as_bytes()), Less);
            prop_assert_eq!(rpmvercmp(post.as_bytes(), a.as_bytes()), Greater);
        }
    }
}
