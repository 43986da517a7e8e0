//! apk version ordering (Alpine, Wolfi, Chainguard), with the semantics of
//! current apk-tools' `version.c`: the grammar
//! `N(.N)*[a-z]?(_suffix[N])*[~hex][-rN]`, suffixes `_alpha < _beta < _pre <
//! _rc < (none) < _cvs < _svn < _git < _hg < _p`, a revision `-rN`.
//!
//! apk compares a stream of typed tokens: tokens of the same type compare by
//! value; when the types differ, a pre-release suffix loses, otherwise the
//! version whose next token comes earlier in the grammar wins (a further
//! number beats a letter beats a suffix beats a suffix number beats a commit
//! hash beats a revision beats the end). Values: the first number
//! numerically; a `.`-component numerically unless either side has a
//! leading zero, then as strings (`1.01 < 1.1`, `1.0 < 1.00`); letters, commit
//! hashes as bytes; a missing suffix number sorts below `0` (`_rc < _rc0`).
//!
//! Decisions (documented): a version apk's own validation rejects (empty,
//! `1a2`, `1.2A`, an unknown suffix, `-r` without a number, …) is `None` —
//! apk would compare it with an "invalid" token that sorts last; numbers
//! compare exactly where apk's `uint64_t` would wrap.

use std::cmp::Ordering;

use super::cmp_digits;

/// Token types in apk's order (what "earlier in the grammar" means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Initial,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    Hash,
    Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// A suffix's rank; pre-releases are negative.
    rank: i8,
}

const SUFFIXES: [(&str, i8); 9] = [
    ("alpha", -4),
    ("beta", -3),
    ("pre", -2),
    ("rc", -1),
    ("cvs", 1),
    ("svn", 2),
    ("git", 3),
    ("hg", 4),
    ("p", 5),
];

/// The run of bytes satisfying `f` at `i`.
fn run(s: &str, i: usize, f: impl Fn(u8) -> bool) -> &str {
    let rest = s.get(i..).unwrap_or("");
    let n = rest.bytes().take_while(|&c| f(c)).count();
    rest.get(..n).unwrap_or("")
}

fn token(kind: Kind, text: &str) -> Token<'_> {
    Token {
        kind,
        text,
        rank: 0,
    }
}

/// Splits a version into apk's tokens; `None` where apk's validation fails.
fn tokens(s: &str) -> Option<Vec<Token<'_>>> {
    let b = s.as_bytes();
    let digits = |i| run(s, i, |c| c.is_ascii_digit());
    let mut out = Vec::new();
    let first = digits(0);
    if first.is_empty() {
        return None;
    }
    out.push(token(Kind::Initial, first));
    let mut i = first.len();
    while b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n.is_empty() {
            return None;
        }
        out.push(token(Kind::Digit, n));
        i += 1 + n.len();
    }
    if b.get(i).is_some_and(u8::is_ascii_lowercase) {
        out.push(token(Kind::Letter, s.get(i..i + 1)?));
        i += 1;
    }
    while b.get(i) == Some(&b'_') {
        let name = run(s, i + 1, |c| c.is_ascii_lowercase());
        let (_, rank) = SUFFIXES.iter().find(|(n, _)| *n == name)?;
        out.push(Token {
            kind: Kind::Suffix,
            text: name,
            rank: *rank,
        });
        i += 1 + name.len();
        let n = digits(i);
        if !n.is_empty() {
            out.push(token(Kind::SuffixNo, n));
            i += n.len();
        }
    }
    if b.get(i) == Some(&b'~') {
        let hash = run(s, i + 1, |c| c.is_ascii_hexdigit());
        if hash.is_empty() {
            return None;
        }
        out.push(token(Kind::Hash, hash));
        i += 1 + hash.len();
    }
    if s.get(i..).is_some_and(|r| r.starts_with("-r")) {
        let n = digits(i + 2);
        if n.is_empty() {
            return None;
        }
        out.push(token(Kind::Revision, n));
        i += 2 + n.len();
    }
    (i == b.len()).then_some(out)
}

/// Two tokens of the same kind.
fn cmp_token(a: &Token<'_>, b: &Token<'_>) -> Ordering {
    match a.kind {
        Kind::Digit if a.text.starts_with('0') || b.text.starts_with('0') => {
            a.text.as_bytes().cmp(b.text.as_bytes())
        }
        Kind::Initial | Kind::Digit | Kind::SuffixNo | Kind::Revision => cmp_digits(a.text, b.text),
        Kind::Suffix => a.rank.cmp(&b.rank),
        Kind::Letter | Kind::Hash => a.text.as_bytes().cmp(b.text.as_bytes()),
    }
}

fn is_pre_suffix(t: Option<&Token<'_>>) -> bool {
    t.is_some_and(|t| t.kind == Kind::Suffix && t.rank < 0)
}

fn cmp(a: &[Token<'_>], b: &[Token<'_>]) -> Ordering {
    let mut i = 0;
    loop {
        let (x, y) = (a.get(i), b.get(i));
        match (x, y) {
            (None, None) => return Ordering::Equal,
            (Some(p), Some(q)) if p.kind == q.kind => {
                let o = cmp_token(p, q);
                if o != Ordering::Equal {
                    return o;
                }
                i += 1;
            }
            _ => {
                // The types differ (or one ended): a pre-release suffix
                // loses; otherwise the type earlier in the grammar wins.
                if is_pre_suffix(x) {
                    return Ordering::Less;
                }
                if is_pre_suffix(y) {
                    return Ordering::Greater;
                }
                let rank = |t: Option<&Token<'_>>| t.map(|t| t.kind as u8).unwrap_or(u8::MAX);
                return rank(y).cmp(&rank(x));
            }
        }
    }
}

pub(crate) fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(cmp(&tokens(a)?, &tokens(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use proptest::prelude::*;

    /// Our own table, each line worked out by hand from the rules in the
    /// module comment (apk's `version.data` style: `a op b`).
    const VECTORS: &str = "
        1 = 1
        1 < 2
        2 > 1
        10 > 9
        01 = 1
        1.0 > 1
        1.0 < 1.0.0
        1.0.0 < 1.0.1
        1.2 < 1.10
        1.9 < 1.10
        1.2.3 < 1.2.4
        1.2.3 > 1.2
        2.0 > 1.99.99
        1.01 < 1.1
        1.001 < 1.01
        1.00 > 1.0
        1.0 < 1.00
        1.0 < 1.05
        1.05 > 1.0.5
        1.010 > 1.01
        1.0.1 < 1.01
        1.2a > 1.2
        1.2a < 1.2b
        1.2z > 1.2a
        1.2a < 1.2.1
        1.2a < 1.3
        1.0a < 1.0.0
        1.0a > 1.0
        1.0_alpha < 1.0
        1.0_beta < 1.0
        1.0_pre < 1.0
        1.0_rc < 1.0
        1.0_alpha < 1.0_beta
        1.0_beta < 1.0_pre
        1.0_pre < 1.0_rc
        1.0_rc1 < 1.0_rc2
        1.0_rc2 < 1.0_rc10
        1.0_rc < 1.0_rc0
        1.0_rc0 < 1.0_rc1
        1.0_alpha9 < 1.0_beta1
        1.0_rc99 < 1.0
        1.0 < 1.0_cvs
        1.0_cvs < 1.0_svn
        1.0_svn < 1.0_git
        1.0_git < 1.0_hg
        1.0_hg < 1.0_p
        1.0_p < 1.0_p0
        1.0_p1 < 1.0_p2
        1.0_p9-r0 < 1.0_p10-r0
        1.0_p10-r0 > 1.0_p9-r0
        1.0_p1 > 1.0
        1.0_p1 < 1.0.1
        1.0_git20230101 < 1.0_git20230102
        1.0_git20230101 < 1.0_p1
        0.1.0_alpha_pre2 < 0.1.0_alpha
        1.0_alpha_p1 > 1.0_alpha
        1.0_alpha_p1 > 1.0_alpha1
        1.0_rc1_p2 > 1.0_rc1
        1.0_rc1_p2 < 1.0_rc2
        1.0_rc1_rc1 < 1.0_rc1
        1.0-r0 > 1.0
        1.0-r1 > 1.0-r0
        1.0-r10 > 1.0-r9
        1.0-r1 < 1.0.1
        1.0-r1 < 1.0_p1
        1.0-r1 < 1.0a
        1.0-r9 > 1.0_rc1-r9
        1.0_rc1-r5 < 1.0-r0
        1.0_rc1-r1 > 1.0_rc1
        1.0_rc1-r1 < 1.0_rc1_p1
        1.0-r01 = 1.0-r1
        1.0_rc01 = 1.0_rc1
        3.1.4-r0 < 3.1.4-r1
        3.1.4-r5 < 3.1.5-r0
        1.36.1-r15 < 1.36.1-r16
        1.36.1-r16 > 1.35.0-r29
        2.40.0_git20231010-r0 > 2.40.0-r0
        2.40.0_git20231010-r0 < 2.40.1-r0
        3.0.12-r1 < 3.0.12-r2
        3.0.12-r4 < 3.1.0-r0
        3.0.12-r4 < 3.0.13-r0
        8.5.0-r0 > 8.4.0-r2
        1.2.13-r0 < 1.2.13-r1
        1.1.1w-r1 > 1.1.1v-r1
        1.1.1w-r1 < 1.1.2-r0
        1.1.1w-r1 > 1.1.1-r9
        6.4_p20231125-r0 > 6.4-r2
        6.4_p20231125-r0 < 6.4.1-r0
        20231212 > 20230101
        20231212 > 2.0
        99999999999999999999 < 100000000000000000000
        1.2.3_rc1_p2_alpha3 < 1.2.3_rc1_p2
        1.2.3_beta2_rc1 < 1.2.3_beta2
        1.2.3_beta2_rc1 > 1.2.3_beta1
        1.0~abc < 1.0~abd
        1.0~ab < 1.0~abc
        1.0~abc > 1.0
        1.0~abc-r1 > 1.0-r1
        1.0~abc-r1 < 1.0~abc-r2
        1.0_rc1~ab < 1.0
        1.0~1a2b < 1.0a
        1.0_p1~ab > 1.0_p1
    ";

    #[test]
    fn vector_table() {
        let mut n = 0;
        for line in VECTORS.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            let (a, op, b) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let want = match op {
                "<" => Less,
                "=" => Equal,
                ">" => Greater,
                _ => panic!("bad op in {line}"),
            };
            assert_eq!(compare(a, b), Some(want), "{line}");
            assert_eq!(compare(b, a), Some(want.reverse()), "{line} (reversed)");
            n += 1;
        }
        assert!(n >= 80, "only {n} vectors");
    }

    #[test]
    fn outside_the_grammar_is_none() {
        for bad in [
            "",
            "a",
            "a1",
            ".1",
            "1.",
            "1..2",
            "1.2A",
            "1.2ab",
            "1a2",
            "1a.2",
            "1_",
            "1_foo",
            "1_rc-",
            "1-r",
            "1-r1a",
            "1-1",
            "1-r1-r2",
            "1-r1_p1",
            "1.0~",
            "1.0~xyz",
            "1.0~ab~cd",
            "1.0-r1~ab",
            "1.0~ab_p1",
            "1_prerc",
            "v1.0",
            "1 0",
            "1.0_p1.2",
            "1.0é",
        ] {
            assert_eq!(compare(bad, "1.0"), None, "{bad:?}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        "[0-9]{1,2}(\\.[0-9]{1,2}){0,3}[a-c]?(_(alpha|beta|pre|rc|cvs|git|p)[0-9]?){0,2}(-r[0-9]{1,2})?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");

    proptest! {
        #[test]
        fn pre_and_post_suffixes(a in "[1-9](\\.[1-9]){0,2}", n in 0u8..10) {
            for pre in ["alpha", "beta", "pre", "rc"] {
                prop_assert_eq!(compare(&format!("{a}_{pre}{n}"), &a), Some(Less));
            }
            for post in ["cvs", "svn", "git", "hg", "p"] {
                prop_assert_eq!(compare(&format!("{a}_{post}{n}"), &a), Some(Greater));
            }
            prop_assert_eq!(compare(&format!("{a}-r{n}"), &a), Some(Greater));
        }
    }
}
