//! dpkg version ordering (Debian policy §5.6.12, dpkg's `verrevcmp`):
//! `[epoch:]upstream[-revision]`.
//!
//! Parsing follows dpkg's `parseversion`: what dpkg rejects as an error
//! (empty, embedded blanks, a bad or too big epoch, nothing after the colon,
//! an empty revision or upstream) is `None`; what dpkg only warns about (an
//! upstream not starting with a digit, odd characters) is compared as dpkg
//! compares it, byte by byte with C's signed `char`.

use std::cmp::Ordering;

/// A parsed dpkg version, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    epoch: u32,
    upstream: &'a [u8],
    revision: &'a [u8],
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// C's `isspace` in the C locale (what `strtol` skips).
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses like dpkg's `parseversion`; `None` where dpkg reports an error.
pub(crate) fn parse(s: &str) -> Option<Version<'_>> {
    let bytes = s.as_bytes();
    // dpkg works on C strings: nothing after a NUL is seen; refuse instead.
    if bytes.contains(&0) {
        return None;
    }
    let start = bytes.iter().position(|&c| !is_blank(c))?;
    let rest = bytes.get(start..)?;
    let end = rest.iter().position(|&c| is_blank(c)).unwrap_or(rest.len());
    let (body, tail) = rest.split_at(end);
    if tail.iter().any(|&c| !is_blank(c)) {
        return None; // embedded spaces
    }
    let (epoch, version) = match body.iter().position(|&c| c == b':') {
        Some(colon) => {
            let epoch = parse_epoch(body.get(..colon)?)?;
            let after = body.get(colon + 1..)?;
            if after.is_empty() {
                return None; // nothing after colon
            }
            (epoch, after)
        }
        None => (0, body),
    };
    let (upstream, revision) = match version.iter().rposition(|&c| c == b'-') {
        Some(h) => {
            let rev = version.get(h + 1..)?;
            if rev.is_empty() {
                return None; // revision number is empty
            }
            (version.get(..h)?, rev)
        }
        None => (version, &b""[..]),
    };
    if upstream.is_empty() {
        return None;
    }
    Some(Version {
        epoch,
        upstream,
        revision,
    })
}

/// The epoch as `strtol` reads it, with dpkg's checks: the whole text before
/// the colon must be the number, not negative, at most `INT_MAX`.
fn parse_epoch(text: &[u8]) -> Option<u32> {
    let mut i = 0;
    while text.get(i).is_some_and(|&c| is_c_space(c)) {
        i += 1;
    }
    let negative = match text.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = text.get(i..)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None; // empty, or not a number
    }
    let digits = std::str::from_utf8(digits).ok()?;
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some(0); // "-0" is zero, not negative
    }
    if negative || trimmed.len() > 10 {
        return None;
    }
    let value: u64 = trimmed.parse().ok()?;
    u32::try_from(value).ok().filter(|&v| v <= i32::MAX as u32)
}

/// dpkg's `order`: `~` < end (and digits) < letters < everything else; C's
/// `char` is signed, so bytes ≥ 0x80 weigh `byte - 256 + 256`.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c as i8) + 256,
    }
}

/// dpkg's `verrevcmp` on one part (upstream or revision).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a.get(i).cmp(&b.get(j));
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream, other.upstream))
            .then_with(|| verrevcmp(self.revision, other.revision))
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
    fn policy_examples() {
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+1", Less),
            ("1.0-1~bpo1", "1.0-1", Less),
            ("5.2.15-2", "5.2.15-2+b13", Less),
            ("2.38.1-5+deb12u3", "2.38.1-5+deb12u3+1", Less),
            ("1:0.9", "10", Greater),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1.01", "1.1", Equal),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0.", "1.0a", Greater),
            ("2:1.0-1", "1:9.9-9", Greater),
            ("1.2.3-1", "1.2.3-1.1", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("1:2:3-4", "1:2:3-5", Less),
            ("1.0-2-3", "1.0-2-4", Less),
            ("  1.0\t", "1.0", Equal),
            ("10", "9", Greater),
            ("1.0-1", "1.0-a", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
            assert_eq!(compare(b, a), Some(want.reverse()), "{b} vs {a}");
        }
    }

    #[test]
    fn dpkg_errors_are_none() {
        for bad in [
            "",
            "   ",
            "1.0 2",
            ":1.0",
            "a:1.0",
            "1:",
            "-1:1.0",
            "2147483648:1.0",
            "99999999999999999999:1",
            "1.0-",
            "-1",
            "1:-1",
            "1\u{0}2",
        ] {
            assert_eq!(compare(bad, "1.0"), None, "{bad:?}");
            assert_eq!(compare("1.0", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dpkg_warnings_still_compare() {
        // dpkg warns but compares these.
        assert_eq!(compare("a1.0", "1.0"), Some(Greater));
        assert_eq!(compare("1.0_1", "1.0"), Some(Greater));
        assert_eq!(compare("2147483647:1", "1"), Some(Greater));
        assert_eq!(compare("+1:1", "1:1"), Some(Equal));
        assert_eq!(compare("-0:1", "1"), Some(Equal));
        // A non-ASCII byte sorts after letters, before ASCII punctuation.
        assert_eq!(compare("1.0é", "1.0z"), Some(Greater));
        assert_eq!(compare("1.0é", "1.0+"), Some(Less));
    }

    fn version() -> impl Strategy<Value = String> {
        "([0-9]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,5})?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");

    proptest! {
        #[test]
        fn tilde_sorts_before_everything(a in version()) {
            let tilde = format!("{a}~");
            let plus = format!("{a}+");
            prop_assert_eq!(compare(&tilde, &a), Some(Less));
            prop_assert_eq!(compare(&a, &plus), Some(Less));
        }
    }
}
