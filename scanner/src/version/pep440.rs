//! PEP 440 ordering (PyPI), as Python's `packaging.version.Version` parses
//! and sorts: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]` with the
//! permitted spellings (case, `alpha`/`beta`/`c`/`pre`/`preview`,
//! `rev`/`r`, implicit numbers, `-N` posts, `-`/`_`/`.` separators, a
//! leading `v`, surrounding whitespace). Anything else is `None`.

use std::cmp::Ordering;

use super::cmp_digits;

/// A pre-release kind, in sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pre {
    A,
    B,
    Rc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Version<'a> {
    epoch: &'a str,
    /// Release numbers with trailing zeros dropped (they do not count).
    release: Vec<&'a str>,
    pre: Option<(Pre, &'a str)>,
    post: Option<&'a str>,
    dev: Option<&'a str>,
    /// Local segments, original case (compared case-insensitively).
    local: Option<&'a str>,
}

/// A byte cursor over the (trimmed) version text.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn digits(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i > start)
            .then(|| self.s.get(start..self.i))
            .flatten()
    }

    fn sep(&mut self) -> bool {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the first of `words` (ASCII case-insensitive) that is next.
    fn word(&mut self, words: &[&'static str]) -> Option<&'static str> {
        let rest = self.s.get(self.i..)?;
        let w = words.iter().find(|w| {
            rest.get(..w.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(w))
        })?;
        self.i += w.len();
        Some(w)
    }
}

/// `[sep] label [sep] [N]`; the cursor is left untouched when there is no
/// label. Returns the label and the number ("0" when implicit).
fn labelled<'a>(c: &mut Cursor<'a>, labels: &[&'static str]) -> Option<(&'static str, &'a str)> {
    let save = c.i;
    c.sep();
    let Some(label) = c.word(labels) else {
        c.i = save;
        return None;
    };
    // Like packaging's greedy regex: a separator after the label is taken
    // even when no number follows (the next part's separator is optional).
    c.sep();
    Some((label, c.digits().unwrap_or("0")))
}

fn parse(s: &str) -> Option<Version<'_>> {
    // Python's `str.isspace` set: Unicode whitespace plus \x1c..\x1f.
    let s = s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
    let mut c = Cursor { s, i: 0 };
    if matches!(c.peek(), Some(b'v' | b'V')) {
        c.i += 1;
    }
    let first = c.digits()?;
    let epoch = if c.peek() == Some(b'!') {
        c.i += 1;
        Some(first)
    } else {
        None
    };
    let mut release = Vec::new();
    if epoch.is_some() {
        release.push(c.digits()?);
    } else {
        release.push(first);
    }
    loop {
        let save = c.i;
        if c.peek() == Some(b'.') {
            c.i += 1;
            if let Some(n) = c.digits() {
                release.push(n);
                continue;
            }
        }
        c.i = save;
        break;
    }
    // Longest labels first so `alpha` is not read as `a` + `lpha`.
    let pre = labelled(
        &mut c,
        &["alpha", "beta", "preview", "pre", "rc", "a", "b", "c"],
    )
    .map(|(l, n)| {
        let kind = match l {
            "alpha" | "a" => Pre::A,
            "beta" | "b" => Pre::B,
            _ => Pre::Rc,
        };
        (kind, n)
    });
    let post = {
        let save = c.i;
        if c.peek() == Some(b'-')
            && let Some(n) = {
                c.i += 1;
                c.digits()
            }
        {
            Some(n)
        } else {
            c.i = save;
            labelled(&mut c, &["post", "rev", "r"]).map(|(_, n)| n)
        }
    };
    let dev = labelled(&mut c, &["dev"]).map(|(_, n)| n);
    let local = if c.peek() == Some(b'+') {
        let l = c.s.get(c.i + 1..)?;
        let ok = !l.is_empty()
            && l.split(['-', '_', '.'])
                .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !ok {
            return None;
        }
        c.i = c.s.len();
        Some(l)
    } else {
        None
    };
    if c.i != c.s.len() {
        return None;
    }
    while release.len() > 1 && release.last().is_some_and(|n| n.bytes().all(|b| b == b'0')) {
        release.pop();
    }
    if release.len() == 1
        && release
            .first()
            .is_some_and(|n| n.bytes().all(|b| b == b'0'))
    {
        release.clear();
    }
    Some(Version {
        epoch: epoch.unwrap_or("0"),
        release,
        pre,
        post,
        dev,
        local,
    })
}

fn cmp_release(a: &[&str], b: &[&str]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = cmp_digits(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// `packaging`'s local key: segments split on `-_.`; numbers compare
/// numerically and above strings; strings compare lowercased.
fn cmp_local(a: &str, b: &str) -> Ordering {
    let mut xs = a.split(['-', '_', '.']);
    let mut ys = b.split(['-', '_', '.']);
    loop {
        let (x, y) = match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => (x, y),
        };
        let xn = x.bytes().all(|c| c.is_ascii_digit());
        let yn = y.bytes().all(|c| c.is_ascii_digit());
        let o = match (xn, yn) {
            (true, true) => cmp_digits(x, y),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x
                .bytes()
                .map(|c| c.to_ascii_lowercase())
                .cmp(y.bytes().map(|c| c.to_ascii_lowercase())),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
}

/// `None` sorts as −∞ or +∞ depending on the field.
fn cmp_opt<T>(
    a: Option<T>,
    b: Option<T>,
    none_is_max: bool,
    f: impl Fn(T, T) -> Ordering,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) if none_is_max => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) if none_is_max => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => f(x, y),
    }
}

impl Version<'_> {
    /// The pre-release key: a dev release of a final (no pre, no post)
    /// sorts before that version's pre-releases.
    fn pre_key(&self) -> (i8, Option<(Pre, &str)>) {
        match self.pre {
            Some(p) => (0, Some(p)),
            None if self.post.is_none() && self.dev.is_some() => (-1, None),
            None => (1, None),
        }
    }
}

fn cmp(a: &Version<'_>, b: &Version<'_>) -> Ordering {
    let (ak, ap) = a.pre_key();
    let (bk, bp) = b.pre_key();
    cmp_digits(a.epoch, b.epoch)
        .then_with(|| cmp_release(&a.release, &b.release))
        .then_with(|| ak.cmp(&bk))
        .then_with(|| {
            cmp_opt(ap, bp, true, |(x, n), (y, m)| {
                x.cmp(&y).then_with(|| cmp_digits(n, m))
            })
        })
        .then_with(|| cmp_opt(a.post, b.post, false, cmp_digits))
        .then_with(|| cmp_opt(a.dev, b.dev, true, cmp_digits))
        .then_with(|| cmp_opt(a.local, b.local, false, cmp_local))
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
    fn pep440_order() {
        // An increasing chain built from PEP 440's own summary of ordering.
        let chain = [
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "1!0.1",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(compare(a, b), Some(i.cmp(&j)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn normalisation() {
        for (a, b) in [
            ("1.0RC1", "1.0rc1"),
            ("1.0c1", "1.0rc1"),
            ("1.0-pre1", "1.0rc1"),
            ("1.0preview_1", "1.0rc1"),
            ("1.0alpha", "1.0a0"),
            ("1.0.beta.2", "1.0b2"),
            ("1.0-1", "1.0.post1"),
            ("1.0rev", "1.0.post0"),
            ("1.0-r-2", "1.0.post2"),
            ("1.0_dev", "1.0.dev0"),
            ("v1.0", "1.0"),
            (" 1.0\n", "1.0"),
            ("1.0.0.0", "1"),
            ("0!1.0", "1.0"),
            ("01.002", "1.2"),
            ("1.0+ABC", "1.0+abc"),
            ("1.0+a-b_c", "1.0+a.b.c"),
            ("1.0a-1", "1.0a1"),
            ("0", "0.0"),
            ("1.0.post.", "1.0.post0"),
            ("1.0a.-dev", "1.0a0.dev0"),
            ("1.0\u{1c}", "1.0"),
        ] {
            assert_eq!(compare(a, b), Some(Equal), "{a} vs {b}");
        }
        assert_eq!(compare("1.0a-dev", "1.0a0.dev0"), Some(Equal));
        assert_eq!(compare("1.0.post1", "1.0"), Some(Greater));
        assert_eq!(compare("1!0.1", "2.0"), Some(Greater));
        assert_eq!(compare("1.0.dev1", "1.0a1"), Some(Less));
    }

    #[test]
    fn invalid_is_none() {
        for bad in [
            "",
            "1.",
            ".1",
            "1..0",
            "a1",
            "1.0foo",
            "1.0+",
            "1.0+a..b",
            "1.0+é",
            "1!",
            "!1",
            "1.0-",
            "1 0",
            "1.0a1a1",
            "1.0.dev1.post1",
            "vv1",
            "1.0_",
        ] {
            assert_eq!(compare(bad, "1.0"), None, "{bad:?}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        "([0-2]!)?[0-9](\\.[0-9]){0,2}((a|b|rc)[0-2])?(\\.post[0-2])?(\\.dev[0-2])?(\\+[a-c0-2]{1,2}(\\.[a-c0-2]{1,2})?)?"
    }

    ordering_laws!(version(), version(), "\\PC{0,12}");
}
