//! The OSV schema's "is this version affected" evaluation, without sorting:
//! walking the sorted events leaves the state of the *greatest* event that
//! applies to the version, so the walk is a maximum over the applicable
//! events. No sort means no total order is needed from a comparator fed
//! hostile strings (and nothing that can panic on an inconsistent one).

use std::cmp::Ordering;

use super::{Affected, Event, Range, Verdict};
use crate::version::{self, Scheme};

/// The comparator of a range: `SEMVER` ranges use SemVer whatever the
/// ecosystem (Go's SEMVER ranges carry no `v`), `ECOSYSTEM` ranges the
/// ecosystem's own ordering; other types (GIT) are not evaluated.
fn scheme_of(range_kind: &str, ecosystem: &str) -> Option<Scheme> {
    match range_kind {
        "SEMVER" => Some(Scheme::Semver),
        "ECOSYSTEM" => Scheme::for_ecosystem(ecosystem),
        _ => None,
    }
}

/// Whether `version` is affected by `affected` (inside one of its
/// ECOSYSTEM/SEMVER ranges under the ecosystem's ordering, or listed in
/// `versions`); `None` when not affected or not decidable (unknown
/// ecosystem, unparseable version). When a range decides, `versions` (an
/// enumeration of the same ranges on osv.dev) is not consulted; otherwise
/// an exact string in it is affected in any ecosystem, and an equal
/// version under the ordering too.
pub fn affects(affected: &Affected, version: &str) -> Option<super::Verdict> {
    affects_with(affected, version, &|scheme, a, b| {
        version::compare(scheme, a, b)
    })
}

pub(crate) type Cmp<'a> = &'a dyn Fn(Scheme, &str, &str) -> Option<Ordering>;

pub(crate) fn affects_with(affected: &Affected, version: &str, cmp: Cmp<'_>) -> Option<Verdict> {
    let ecosystem = affected.package.ecosystem.as_str();
    let mut decided = false;
    for range in &affected.ranges {
        let Some(scheme) = scheme_of(&range.kind, ecosystem) else {
            continue;
        };
        let v = if scheme == Scheme::Semver {
            strip_v(version)
        } else {
            version
        };
        match in_range(range, scheme, v, cmp) {
            Outcome::Inside(verdict) => return Some(verdict),
            Outcome::Outside => decided = true,
            Outcome::Undecidable => {}
        }
    }
    // A range that decided "outside" is the record's word: its `versions`
    // are osv.dev's enumeration of the same ranges (hundreds of strings
    // for Debian), consulted only when no range could decide.
    if decided {
        return None;
    }
    if affected.versions.iter().any(|listed| listed == version) {
        return Some(Verdict { fixed: None });
    }
    let scheme = Scheme::for_ecosystem(ecosystem)?;
    // Equal under the ordering (`1.0` and `1.0.0` in PyPI, `0:1.2` and `1.2` in dpkg).
    cmp(scheme, version, version)?;
    if affected
        .versions
        .iter()
        .any(|listed| cmp(scheme, version, listed) == Some(Ordering::Equal))
    {
        return Some(Verdict { fixed: None });
    }
    None
}

/// Drops the `versions` of each affected entry whose ranges will always
/// decide (an ECOSYSTEM/SEMVER range whose every event parses under its
/// ordering): [`affects`] does not consult them then, and osv.dev's Debian
/// records enumerate hundreds. Returns the strings dropped.
pub fn compact(record: &mut super::Record) -> usize {
    let mut dropped = 0;
    for affected in &mut record.affected {
        if affected.versions.is_empty() {
            continue;
        }
        let ecosystem = affected.package.ecosystem.as_str();
        let decides = affected.ranges.iter().find_map(|range| {
            let scheme = scheme_of(&range.kind, ecosystem)?;
            (!range.events.is_empty()
                && range.events.iter().all(|e| {
                    [&e.introduced, &e.fixed, &e.last_affected, &e.limit]
                        .into_iter()
                        .flatten()
                        .all(|v| {
                            let v = if scheme == Scheme::Semver {
                                strip_v(v)
                            } else {
                                v
                            };
                            v == "0" || v == "*" || version::compare(scheme, v, v).is_some()
                        })
                }))
            .then_some(scheme)
        });
        if let Some(scheme) = decides {
            // A listed version the ordering cannot parse is still matched by
            // its exact string (a range cannot decide it): it stays.
            let before = affected.versions.len();
            affected.versions.retain(|v| {
                let v = if scheme == Scheme::Semver {
                    strip_v(v)
                } else {
                    v
                };
                version::compare(scheme, v, v).is_none()
            });
            dropped += before - affected.versions.len();
        }
    }
    dropped
}

fn strip_v(s: &str) -> &str {
    s.strip_prefix('v').unwrap_or(s)
}

/// Event kinds in the order the walk visits equal versions: an
/// `introduced` before the `fixed`/`last_affected` at the same version.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Introduced,
    LastAffected,
    Fixed,
}

enum Outcome {
    Inside(Verdict),
    Outside,
    /// An event or the version does not parse: never a guess.
    Undecidable,
}

/// One range: inside it (and below one of its limits, when it has any),
/// outside, or not decidable.
fn in_range(range: &Range, scheme: Scheme, v: &str, cmp: Cmp<'_>) -> Outcome {
    match range_verdict(range, scheme, v, cmp) {
        Some(Some(verdict)) => Outcome::Inside(verdict),
        Some(None) => Outcome::Outside,
        None => Outcome::Undecidable,
    }
}

/// `None`: undecidable; `Some(None)`: outside; `Some(Some(_))`: inside.
fn range_verdict(range: &Range, scheme: Scheme, v: &str, cmp: Cmp<'_>) -> Option<Option<Verdict>> {
    cmp(scheme, v, v)?;
    let norm = |s: &str| -> String {
        if scheme == Scheme::Semver {
            strip_v(s).to_owned()
        } else {
            s.to_owned()
        }
    };
    // The greatest applicable event so far: (version, kind); version
    // `None` is introduced "0", below everything.
    let mut top: Option<(Option<String>, Kind)> = None;
    let mut limits = Vec::new();
    let mut fixes = Vec::new();
    for event in &range.events {
        let Some((kind, value)) = classify(event) else {
            if let Some(limit) = &event.limit {
                limits.push(norm(limit));
            }
            continue;
        };
        if kind == Kind::Introduced && value == "0" {
            if top.is_none() {
                top = Some((None, kind));
            }
            continue;
        }
        let value = norm(value);
        let order = cmp(scheme, v, &value)?;
        let applies = match kind {
            Kind::Introduced | Kind::Fixed => order != Ordering::Less,
            Kind::LastAffected => order == Ordering::Greater,
        };
        if kind == Kind::Fixed && order == Ordering::Less {
            fixes.push(value.clone());
        }
        if !applies {
            continue;
        }
        let greater = match &top {
            None => true,
            Some((None, _)) => true,
            Some((Some(top_value), top_kind)) => match cmp(scheme, &value, top_value)? {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => kind > *top_kind,
            },
        };
        if greater {
            top = Some((Some(value), kind));
        }
    }
    if !matches!(top, Some((_, Kind::Introduced))) {
        return Some(None);
    }
    if !limits.is_empty() {
        let mut below_one = false;
        for limit in &limits {
            if limit == "*" || cmp(scheme, v, limit)? == Ordering::Less {
                below_one = true;
            }
        }
        if !below_one {
            return Some(None);
        }
    }
    // The fix of the stretch that contains `v`: the least `fixed` above it.
    let mut fixed: Option<String> = None;
    for f in fixes {
        fixed = match fixed {
            None => Some(f),
            Some(cur) => {
                if cmp(scheme, &f, &cur)? == Ordering::Less {
                    Some(f)
                } else {
                    Some(cur)
                }
            }
        };
    }
    Some(Some(Verdict { fixed }))
}

fn classify(event: &Event) -> Option<(Kind, &str)> {
    if let Some(v) = &event.introduced {
        Some((Kind::Introduced, v))
    } else if let Some(v) = &event.fixed {
        Some((Kind::Fixed, v))
    } else {
        event
            .last_affected
            .as_deref()
            .map(|v| (Kind::LastAffected, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osv::AffectedPackage;

    /// A stand-in ordering for the evaluation's own tests: dotted numbers,
    /// anything else unparseable. (The real orderings are `version`'s and
    /// are exercised through the matcher's tests.)
    fn dotted(_: Scheme, a: &str, b: &str) -> Option<Ordering> {
        let parse =
            |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
        let (mut x, mut y) = (parse(a)?, parse(b)?);
        while x.len() < y.len() {
            x.push(0);
        }
        while y.len() < x.len() {
            y.push(0);
        }
        Some(x.cmp(&y))
    }

    fn ev(kind: &str, v: &str) -> Event {
        let mut e = Event::default();
        let s = Some(v.to_owned());
        match kind {
            "i" => e.introduced = s,
            "f" => e.fixed = s,
            "la" => e.last_affected = s,
            "l" => e.limit = s,
            _ => unreachable!(),
        }
        e
    }

    fn entry(eco: &str, ranges: Vec<(&str, Vec<Event>)>, versions: &[&str]) -> Affected {
        Affected {
            package: AffectedPackage {
                ecosystem: eco.to_owned(),
                name: "p".to_owned(),
                purl: None,
            },
            ranges: ranges
                .into_iter()
                .map(|(k, events)| Range {
                    kind: k.to_owned(),
                    events,
                })
                .collect(),
            versions: versions.iter().map(|s| s.to_string()).collect(),
            severity: vec![],
            ecosystem_specific: None,
            database_specific: None,
        }
    }

    fn check(a: &Affected, v: &str) -> Option<Option<String>> {
        affects_with(a, v, &dotted).map(|verdict| verdict.fixed)
    }

    #[test]
    fn range_table() {
        let f = |s: &str| Some(Some(s.to_owned()));
        type Case<'a> = (Vec<Event>, &'a str, Option<Option<String>>);
        let cases: Vec<Case> = vec![
            // introduced 0 is the minimum
            (vec![ev("i", "0"), ev("f", "2")], "0.0.1", f("2")),
            (vec![ev("i", "0"), ev("f", "2")], "2", None),
            (vec![ev("i", "0"), ev("f", "2")], "2.0.0", None),
            (vec![ev("i", "0")], "99", Some(None)),
            // introduced inclusive, fixed exclusive
            (vec![ev("i", "1"), ev("f", "2")], "1", f("2")),
            (vec![ev("i", "1"), ev("f", "2")], "0.9", None),
            (vec![ev("i", "1"), ev("f", "2")], "1.9.9", f("2")),
            // events out of order still mean the sorted walk
            (vec![ev("f", "2"), ev("i", "1")], "1.5", f("2")),
            // several stretches; the fix of the containing one
            (
                vec![ev("i", "1"), ev("f", "2"), ev("i", "3"), ev("f", "4")],
                "3.5",
                f("4"),
            ),
            (
                vec![ev("f", "4"), ev("i", "3"), ev("f", "2"), ev("i", "1")],
                "1.5",
                f("2"),
            ),
            (
                vec![ev("i", "1"), ev("f", "2"), ev("i", "3"), ev("f", "4")],
                "2.5",
                None,
            ),
            // last_affected inclusive
            (vec![ev("i", "0"), ev("la", "2")], "2", Some(None)),
            (vec![ev("i", "0"), ev("la", "2")], "2.0.1", None),
            // limit: below at least one
            (vec![ev("i", "0"), ev("l", "3")], "2.9", Some(None)),
            (vec![ev("i", "0"), ev("l", "3")], "3", None),
            (vec![ev("i", "0"), ev("l", "*")], "300", Some(None)),
            (vec![ev("i", "0"), ev("f", "5"), ev("l", "3")], "4", None),
            // introduced and fixed at the same version: not affected there
            (vec![ev("i", "1"), ev("f", "1")], "1", None),
            // no introduced at all: nothing is affected
            (vec![ev("f", "2")], "1", None),
            // an unparseable event makes the range undecidable
            (vec![ev("i", "0"), ev("f", "x")], "1", None),
            // an empty event is ignored
            (vec![ev("i", "0"), Event::default()], "1", Some(None)),
        ];
        for (events, v, want) in cases {
            let a = entry("PyPI", vec![("ECOSYSTEM", events.clone())], &[]);
            assert_eq!(check(&a, v), want, "{events:?} @ {v}");
        }
    }

    #[test]
    fn versions_list_exact_or_equal_under_the_ordering() {
        let a = entry("PyPI", vec![], &["1.0", "weird-tag"]);
        assert_eq!(check(&a, "1.0"), Some(None));
        assert_eq!(check(&a, "1.0.0"), Some(None));
        assert_eq!(check(&a, "weird-tag"), Some(None));
        assert_eq!(check(&a, "1.1"), None);
        // with a range that decides, the list is not consulted
        let both = entry(
            "PyPI",
            vec![("ECOSYSTEM", vec![ev("i", "0"), ev("f", "0.5")])],
            &["1.0", "2.0.0"],
        );
        assert_eq!(check(&both, "0.1"), Some(Some("0.5".into())));
        assert_eq!(check(&both, "1.0"), None);
        assert_eq!(check(&both, "2.0"), None);
        // a GIT range decides nothing: the list is
        let git = entry("PyPI", vec![("GIT", vec![ev("i", "0")])], &["1.0"]);
        assert_eq!(check(&git, "1.0.0"), Some(None));
        // an undecidable range leaves the list on
        let junk = entry("PyPI", vec![("ECOSYSTEM", vec![ev("i", "x")])], &["2.0.0"]);
        assert_eq!(check(&junk, "2.0"), Some(None));
        // an unknown ecosystem: exact strings only, no ordering
        let u = entry("Hackage", vec![("ECOSYSTEM", vec![ev("i", "0")])], &["1.0"]);
        assert_eq!(check(&u, "1.0"), Some(None));
        assert_eq!(check(&u, "1.0.0"), None);
        assert_eq!(check(&u, "2.0"), None);
    }

    #[test]
    fn range_types_and_unparseable_versions() {
        let git = entry("PyPI", vec![("GIT", vec![ev("i", "0")])], &[]);
        assert_eq!(check(&git, "1"), None);
        let semver = entry(
            "Go",
            vec![("SEMVER", vec![ev("i", "0"), ev("f", "1.2")])],
            &[],
        );
        assert_eq!(check(&semver, "v1.1"), Some(Some("1.2".into())));
        assert_eq!(check(&semver, "v1.2"), None);
        let eco = entry("PyPI", vec![("ECOSYSTEM", vec![ev("i", "0")])], &[]);
        assert_eq!(check(&eco, "not-a-version"), None);
        // a second range can still match after an undecidable first one
        let two = entry(
            "PyPI",
            vec![
                ("ECOSYSTEM", vec![ev("i", "0"), ev("f", "junk")]),
                ("ECOSYSTEM", vec![ev("i", "1"), ev("f", "3")]),
            ],
            &[],
        );
        assert_eq!(check(&two, "2"), Some(Some("3".into())));
    }

    #[test]
    fn compact_drops_versions_only_where_ranges_decide() {
        let mut r = crate::osv::parse_record(
            "c.json",
            br#"{"id":"C","modified":"2024-01-01T00:00:00Z","affected":[
              {"package":{"ecosystem":"PyPI","name":"a"},"versions":["1.0","1.1"],
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2"}]}]},
              {"package":{"ecosystem":"PyPI","name":"b"},"versions":["1.0"],
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"<junk>"}]}]},
              {"package":{"ecosystem":"PyPI","name":"c"},"versions":["1.0"],
               "ranges":[{"type":"GIT","events":[{"introduced":"abc"}]}]},
              {"package":{"ecosystem":"Go","name":"d"},"versions":["v1.0.0"],
               "ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0"}]}]}]}"#,
        )
        .unwrap();
        let before: Vec<Option<Verdict>> = ["1.0", "1.1", "1.3"]
            .iter()
            .map(|v| affects(&r.affected[0], v))
            .collect();
        assert_eq!(compact(&mut r), 3);
        assert!(r.affected[0].versions.is_empty());
        assert_eq!(r.affected[1].versions, ["1.0"]);
        assert_eq!(r.affected[2].versions, ["1.0"]);
        assert!(r.affected[3].versions.is_empty());
        let after: Vec<Option<Verdict>> = ["1.0", "1.1", "1.3"]
            .iter()
            .map(|v| affects(&r.affected[0], v))
            .collect();
        assert_eq!(before, after);
        assert_eq!(
            affects(&r.affected[1], "1.0"),
            Some(Verdict { fixed: None })
        );
    }

    #[test]
    fn an_inconsistent_comparator_never_panics() {
        let liar = |_: Scheme, a: &str, b: &str| -> Option<Ordering> {
            Some(if a.len() % 2 == b.len() % 2 {
                Ordering::Less
            } else {
                Ordering::Greater
            })
        };
        let events: Vec<Event> = (0..50)
            .map(|i| ev(["i", "f", "la", "l"][i % 4], &"9".repeat(i + 1)))
            .collect();
        let a = entry("PyPI", vec![("ECOSYSTEM", events)], &[]);
        let _ = affects_with(&a, "5", &liar);
    }
}
