//! Wildcard patterns (`*`, `?`), policy variables (`${aws:username}`) and
//! ARN matching.

/// One pattern token. Text that came from a policy variable (or `${*}`) is
/// always literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(char),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters, including none.
    Star,
}

/// Resolves a policy variable name (e.g. `aws:username`) to its value.
pub(crate) type Resolver<'r> = &'r dyn Fn(&str) -> Option<String>;

/// Compiles `pattern` into tokens.
///
/// * `wildcards`: whether `*` and `?` are wildcards (false for
///   `StringEquals`-style comparisons).
/// * `vars`: when `Some`, `${key}`, `${key, 'default'}`, `${*}`, `${?}` and
///   `${$}` are substituted; returns `None` when a variable has no value and
///   no default (the pattern then matches nothing).
pub(crate) fn compile(
    pattern: &str,
    wildcards: bool,
    vars: Option<Resolver<'_>>,
) -> Option<Vec<Tok>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if let Some(resolve) = vars
            && let Some(after) = rest.strip_prefix("${")
            && let Some(end) = after.find('}')
        {
            let inner = &after[..end];
            rest = &after[end + 1..];
            let value = match inner.trim() {
                "*" => "*".to_owned(),
                "?" => "?".to_owned(),
                "$" => "$".to_owned(),
                spec => {
                    let (key, default) = match spec.split_once(',') {
                        Some((k, d)) => {
                            let d = d.trim();
                            let d = d
                                .strip_prefix('\'')
                                .and_then(|d| d.strip_suffix('\''))
                                .unwrap_or(d);
                            (k.trim(), Some(d))
                        }
                        None => (spec, None),
                    };
                    match resolve(key) {
                        Some(v) => v,
                        None => default?.to_owned(),
                    }
                }
            };
            out.extend(value.chars().map(Tok::Lit));
            continue;
        }
        rest = &rest[c.len_utf8()..];
        out.push(match c {
            '*' if wildcards => Tok::Star,
            '?' if wildcards => Tok::One,
            c => Tok::Lit(c),
        });
    }
    Some(out)
}

/// Lower-cases a compiled pattern (for case-insensitive matching).
pub(crate) fn lowercase_tokens(toks: &[Tok]) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    for t in toks {
        match t {
            Tok::Lit(c) => out.extend(c.to_lowercase().map(Tok::Lit)),
            other => out.push(*other),
        }
    }
    out
}

/// Whole-string wildcard match (iterative, with single-star backtracking).
pub(crate) fn glob(p: &[Tok], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                Tok::Star => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                Tok::One => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                Tok::Lit(c) if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                Tok::Lit(_) => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|t| *t == Tok::Star)
}

/// Case-sensitive whole-string wildcard match of `text`.
pub(crate) fn glob_str(p: &[Tok], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    glob(p, &t)
}

/// Case-insensitive wildcard match (used for actions and `...IgnoreCase`).
pub(crate) fn glob_str_ci(p: &[Tok], text: &str) -> bool {
    let p = lowercase_tokens(p);
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    glob(&p, &t)
}

/// ARN matching as IAM does it: when both the pattern and the ARN have the
/// six colon-separated components (`arn:partition:service:region:account:
/// resource`), each component is matched separately, so a `*` in the region
/// cannot swallow the account, while a `*` in the resource component spans
/// `/` and `:`. Anything else (e.g. `*`, `arn:aws:ecr:*`) is matched as a
/// whole string. Case-sensitive.
pub(crate) fn arn_match(p: &[Tok], arn: &str) -> bool {
    let pat_parts: Vec<&[Tok]> = {
        let mut parts = Vec::with_capacity(6);
        let mut start = 0;
        for (i, t) in p.iter().enumerate() {
            if parts.len() == 5 {
                break;
            }
            if *t == Tok::Lit(':') {
                parts.push(&p[start..i]);
                start = i + 1;
            }
        }
        parts.push(&p[start..]);
        parts
    };
    let arn_parts: Vec<&str> = arn.splitn(6, ':').collect();
    if pat_parts.len() == 6 && arn_parts.len() == 6 {
        pat_parts
            .iter()
            .zip(&arn_parts)
            .all(|(p, a)| glob_str(p, a))
    } else {
        glob_str(p, arn)
    }
}

/// Action matching: case-insensitive, `*` and `?` wildcards.
pub(crate) fn action_matches(pattern: &str, action: &str) -> bool {
    compile(pattern, true, None).is_some_and(|p| glob_str_ci(&p, action))
}
