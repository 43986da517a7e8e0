//! RubyGems ordering, as `Gem::Version` (RubyGems 3.3, Debian 12's Ruby
//! 3.1) validates and compares: `N(.alnum)*[-alnum(.alnum)*]` with optional
//! surrounding whitespace (blank = `0`); `-` means `.pre.`; segments are digit
//! runs (numbers) and letter runs (strings, case-sensitive); a version with
//! a letter is a prerelease; trailing zeros are dropped from the numeric
//! head and from the string tail ("canonical segments"); a string segment
//! sorts before a number, a missing segment counts as `0`.

use std::cmp::Ordering;

use super::cmp_digits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Num(&'a str),
    Str(&'a str),
}

/// Ruby's regexp `\s`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{b}' | '\u{c}')
}

/// `Gem::Version.correct?` on the trimmed text.
fn correct(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let (main, pre) = match s.split_once('-') {
        Some((m, p)) => (m, Some(p)),
        None => (s, None),
    };
    let mut parts = main.split('.');
    let head_ok = parts
        .next()
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_digit()));
    let rest_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric()));
    let pre_ok = pre.is_none_or(|p| {
        p.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
    });
    head_ok && rest_ok && pre_ok
}

/// The segments of a valid version, `-` read as `.pre.`.
fn segments(s: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let Some(&c) = b.get(i) else { break };
        if c == b'-' {
            out.push(Segment::Str("pre"));
            i += 1;
            continue;
        }
        let class: fn(&u8) -> bool = if c.is_ascii_digit() {
            u8::is_ascii_digit
        } else if c.is_ascii_alphabetic() {
            u8::is_ascii_alphabetic
        } else {
            i += 1;
            continue;
        };
        while b.get(i).is_some_and(class) {
            i += 1;
        }
        let run = s.get(start..i).unwrap_or("");
        out.push(if c.is_ascii_digit() {
            Segment::Num(run)
        } else {
            Segment::Str(run)
        });
    }
    out
}

fn is_zero(s: &Segment<'_>) -> bool {
    matches!(s, Segment::Num(n) if n.bytes().all(|c| c == b'0'))
}

/// `canonical_segments`: trailing zeros dropped from the numeric head and
/// from the tail that starts at the first string.
fn canonical(mut segs: Vec<Segment<'_>>) -> Vec<Segment<'_>> {
    let split = segs
        .iter()
        .position(|s| matches!(s, Segment::Str(_)))
        .unwrap_or(segs.len());
    let mut tail = segs.split_off(split);
    while segs.last().is_some_and(is_zero) {
        segs.pop();
    }
    while tail.last().is_some_and(is_zero) {
        tail.pop();
    }
    segs.append(&mut tail);
    segs
}

fn parse(s: &str) -> Option<Vec<Segment<'_>>> {
    let t = s.trim_matches(is_space);
    if !correct(t) {
        return None;
    }
    Some(canonical(segments(if t.is_empty() { "0" } else { t })))
}

fn cmp(a: &[Segment<'_>], b: &[Segment<'_>]) -> Ordering {
    let zero = Segment::Num("0");
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).unwrap_or(&zero);
        let y = b.get(i).unwrap_or(&zero);
        let o = match (x, y) {
            (Segment::Num(p), Segment::Num(q)) => cmp_digits(p, q),
            (Segment::Str(p), Segment::Str(q)) => p.cmp(q),
            (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
            (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

pub(crate) fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(cmp(&parse(a)?, &parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Less};
    use proptest::prelude::*;

    #[test]
    fn gem_version_chain() {
        let chain = [
            "0.9",
            "1.0.a",
            "1.0.a.1",
            "1.0.b1",
            "1.0.pre",
            "1.0.pre.1",
            "1.0.rc1",
            "1.0",
            "1.0.1.a",
            "1.0.1",
            "1.1",
            "1.10",
            "2",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(compare(a, b), Some(i.cmp(&j)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn canonical_equalities() {
        for (a, b) in [
            ("1", "1.0.0"),
            ("1.0.a", "1.a"),
            ("1.a.0", "1.a"),
            ("1-1", "1.pre.1"),
            ("1.0b1", "1.0.b.1"),
            ("  1.2 ", "1.2"),
            ("", "0"),
            (" ", "0.0"),
            ("01.2", "1.2"),
        ] {
            assert_eq!(compare(a, b), Some(Equal), "{a} vs {b}");
        }
        assert_eq!(compare("1.0.A", "1.0.a"), Some(Less));
        assert_eq!(compare("1.0--1", "1.0"), Some(Less));
    }

    #[test]
    fn malformed_is_none() {
        for bad in [
            "a", "1.", ".1", "1..2", "1.0-", "1-a..b", "1 2", "1.0_1", "v1.0", "1.0+1", "1.é", "-1",
        ] {
            assert_eq!(compare(bad, "1"), None, "{bad:?}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        "[0-2](\\.([0-2]|a|b|rc|pre)){0,3}(-[0-2a-c]{1,2})?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");
}
