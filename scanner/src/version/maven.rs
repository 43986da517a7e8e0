//! Maven ordering, as Maven 3.8.7's `ComparableVersion` (Debian 12's
//! `libmaven3-core-java`) parses and compares:
//! items split at `.`, `-` and digit/letter transitions (`-`, a transition
//! and a qualifier after other items open a sub-list), trailing null items (`0`, `""`, `ga`,
//! `final`, `release`, empty lists) trimmed, qualifiers ordered `alpha`/`a` <
//! `beta`/`b` < `milestone`/`m` < `rc`/`cr` < `snapshot` < release < `sp` <
//! unknown qualifiers (lexically), numbers above qualifiers and lists.
//!
//! Every string is a Maven version; `None` only when the nesting is deeper
//! than [`MAX_DEPTH`] (bounded recursion on hostile input). Digits are ASCII
//! digits only (Java's `Character.isDigit` also takes other scripts' digits).

use std::cmp::Ordering;

use super::cmp_digits;

/// Sub-lists allowed inside one version (each `-` or digit/letter
/// transition opens one); real versions use a handful.
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// ASCII digits, as written.
    Int(String),
    /// A qualifier after aliasing (`ga`, `final`, `release` → `""`, `cr` →
    /// `rc`, `a1` → `alpha`, …).
    Str(String),
    List(Vec<Item>),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

/// Index of the release (empty) qualifier.
const RELEASE: usize = 5;

fn string_item(value: &str, followed_by_digit: bool) -> Item {
    let v = match value {
        "a" if followed_by_digit => "alpha",
        "b" if followed_by_digit => "beta",
        "m" if followed_by_digit => "milestone",
        "ga" | "final" | "release" => "",
        "cr" => "rc",
        v => v,
    };
    Item::Str(v.to_owned())
}

fn parse_item(is_digit: bool, buf: &str) -> Item {
    if is_digit {
        Item::Int(buf.to_owned())
    } else {
        string_item(buf, false)
    }
}

/// `comparableQualifier` compared: known qualifiers by index, then unknown
/// ones by Java's UTF-16 string order.
fn cmp_qualifier(a: &str, b: &str) -> Ordering {
    let rank = |q: &str| QUALIFIERS.iter().position(|k| *k == q);
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.encode_utf16().cmp(b.encode_utf16()),
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(d) => d.bytes().all(|c| c == b'0'),
            Item::Str(s) => s.is_empty(),
            Item::List(l) => l.is_empty(),
        }
    }
}

/// `Item.compareTo`, with `None` for Java's `null` (a missing item).
fn cmp(a: Option<&Item>, b: Option<&Item>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(b)) => cmp(Some(b), None).reverse(),
        (Some(Item::Int(x)), None) => cmp_digits(x, "0"),
        (Some(Item::Int(x)), Some(Item::Int(y))) => cmp_digits(x, y),
        (Some(Item::Int(_)), Some(_)) => Ordering::Greater,
        (Some(Item::Str(x)), None) => {
            cmp_qualifier(x, QUALIFIERS.get(RELEASE).copied().unwrap_or(""))
        }
        (Some(Item::Str(_)), Some(Item::Int(_) | Item::List(_))) => Ordering::Less,
        (Some(Item::Str(x)), Some(Item::Str(y))) => cmp_qualifier(x, y),
        // Every item against nothing, not just the first (MNG-6964).
        (Some(Item::List(l)), None) => l
            .iter()
            .map(|i| cmp(Some(i), None))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal),
        (Some(Item::List(_)), Some(Item::Int(_))) => Ordering::Less,
        (Some(Item::List(_)), Some(Item::Str(_))) => Ordering::Greater,
        (Some(Item::List(l)), Some(Item::List(r))) => {
            let n = l.len().max(r.len());
            (0..n)
                .map(|i| cmp(l.get(i), r.get(i)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        }
    }
}

/// `ListItem.normalize`: drop trailing null items, looking past non-null
/// sub-lists.
fn normalize(list: &mut Vec<Item>) {
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        let Some(item) = list.get(i) else { break };
        if item.is_null() {
            list.remove(i);
        } else if !matches!(item, Item::List(_)) {
            break;
        }
    }
}

/// Parses like `ComparableVersion.parseVersion`. The nested lists are built
/// on an explicit stack of open lists; closing one normalises it and pushes
/// it into its parent.
fn parse(version: &str) -> Option<Item> {
    let version = version.to_lowercase();
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let mut is_digit = false;
    let mut start = 0usize;
    let push = |stack: &mut Vec<Vec<Item>>, item: Item| {
        if let Some(top) = stack.last_mut() {
            top.push(item);
        }
    };
    for (i, c) in version.char_indices() {
        let chunk = || version.get(start..i).unwrap_or("");
        if c == '.' || c == '-' {
            if i == start {
                push(&mut stack, Item::Int("0".to_owned()));
            } else {
                push(&mut stack, parse_item(is_digit, chunk()));
            }
            start = i + 1;
            if c == '-' {
                stack.push(Vec::new());
            }
        } else if c.is_ascii_digit() {
            if !is_digit && i > start {
                // Maven 3.8.7: a qualifier followed by digits gets its own
                // sub-list (so `1.0.rc1` and `1.0-rc1` are the same).
                if stack.last().is_some_and(|top| !top.is_empty()) {
                    stack.push(Vec::new());
                }
                push(&mut stack, string_item(chunk(), true));
                start = i;
                stack.push(Vec::new());
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                push(&mut stack, parse_item(true, chunk()));
                start = i;
                stack.push(Vec::new());
            }
            is_digit = false;
        }
        if stack.len() > MAX_DEPTH {
            return None;
        }
    }
    if version.len() > start {
        let rest = version.get(start..).unwrap_or("");
        // Likewise a trailing qualifier after other items.
        if !is_digit && stack.last().is_some_and(|top| !top.is_empty()) {
            stack.push(Vec::new());
        }
        push(&mut stack, parse_item(is_digit, rest));
    }
    // Close the open lists innermost first, as Maven normalises its stack.
    while stack.len() > 1 {
        let mut list = stack.pop()?;
        normalize(&mut list);
        push(&mut stack, Item::List(list));
    }
    let mut top = stack.pop()?;
    normalize(&mut top);
    Some(Item::List(top))
}

pub(crate) fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(cmp(Some(&parse(a)?), Some(&parse(b)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use proptest::prelude::*;

    #[test]
    fn qualifier_chain() {
        let chain = [
            "1-alpha",
            "1-alpha-1",
            "1-alpha2",
            "1-beta",
            "1-b2",
            "1-milestone",
            "1-m3",
            "1-rc",
            "1-cr2",
            "1-snapshot",
            "1",
            "1-sp",
            "1-sp1",
            "1-abc",
            "1-xyz",
            "1-1",
            "1.1",
            "2",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(compare(a, b), Some(i.cmp(&j)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn equivalences() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1.0.0"),
            ("1-ga", "1"),
            ("1-final", "1"),
            ("1.release", "1"),
            ("1.0-RC1", "1-rc-1"),
            ("1.0.RC1", "1.0-rc1"),
            ("31.1.jre", "31.1-jre"),
            ("1CR1", "1-rc-1"),
            ("1a1", "1-alpha-1"),
            ("1.0-", "1"),
            ("1..0", "1"),
            ("1.0.0-SNAPSHOT", "1-snapshot"),
            ("007", "7"),
            ("1-0", "1"),
            ("", "0"),
            ("12345678901234567890123", "12345678901234567890123.0"),
        ] {
            assert_eq!(compare(a, b), Some(Equal), "{a} vs {b}");
        }
        assert_eq!(compare("1.0.1", "1-1"), Some(Greater));
        assert_eq!(compare("1-sp", "1-1"), Some(Less));
        assert_eq!(compare("1a", "1-alpha"), Some(Greater));
        assert_eq!(compare("2.0.0.Final", "2.0.0.CR1"), Some(Greater));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "a1".repeat(10_000);
        assert_eq!(compare(&deep, "1"), None);
        let ok = "a1".repeat(100);
        assert!(compare(&ok, "1").is_some());
    }

    #[test]
    fn maven_itself_is_not_transitive() {
        // Reproduced with Maven 3.8.7's jar: 1 < 1.a-0 < 1-snapshot < 1.
        assert_eq!(compare("1", "1.a-0"), Some(Less));
        assert_eq!(compare("1.a-0", "1-snapshot"), Some(Less));
        assert_eq!(compare("1-snapshot", "1"), Some(Less));
    }

    /// Any shape, for the properties that hold everywhere.
    fn any_version() -> impl Strategy<Value = String> {
        "[0-2](([.-])([0-2]|a|b|rc|sp|ga|snapshot|x)){0,4}"
    }

    /// Conventional shapes (numbers, then one `-qualifier[N]`), where the
    /// order is transitive (see `maven_itself_is_not_transitive`).
    fn version() -> impl Strategy<Value = String> {
        "[0-2](\\.[0-2]){0,2}(-(alpha|beta|rc|snapshot|sp|ga|x)[0-2]?)?"
    }

    ordering_laws!(any_version(), version(), "\\PC{0,16}");
}
