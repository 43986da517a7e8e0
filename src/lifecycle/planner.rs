//! The lifecycle planner: which images a policy acts on, and how.
//!
//! [`plan`] is a pure function of a validated [`Policy`], a snapshot of the
//! repository's images ([`ImageFacts`]) and the evaluation time. It implements
//! `docs/ecr-api.md` §4.2 and serves both the preview and the execution, so
//! the two always agree:
//!
//! 1. **identify**: a rule identifies an image of its storage class whose tags
//!    fit its `tagStatus` and tag filter;
//! 2. **mark**: each rule marks among *all* the images it identified, claimed
//!    by another rule or not (`imageCountMoreThan N`: all but the N newest;
//!    `since*`: the ones older than N days);
//! 3. **claim**: an image belongs to the first rule (lowest priority) that
//!    identifies it;
//! 4. **apply**: an image gets its claiming rule's action iff that rule marked
//!    it.
//!
//! Choices where the specification leaves room:
//! - Age key `k(i)` = `last_activated_at` when the image was restored from
//!   archive, else `pushed_at`; it orders `imageCountMoreThan` and measures
//!   `sinceImagePushed`.
//! - `imageCountMoreThan` counts from the newest: images sorted by
//!   `(k, digest)` descending, so among equal ages the greater digest (byte
//!   order) counts as newer and is kept first.
//! - "Older than N days" is strict: `now − reference > N × 86,400,000 ms`
//!   (exactly N days old is kept), with no truncation to whole days.
//! - `sinceImagePulled` measures from the last pull, unless the image was
//!   restored after it (or never pulled): then from the restore, else from the
//!   push. `sinceImageTransitioned` measures from `last_archived_at`; an image
//!   without it is never marked.
//! - Images referenced by an index (`in_index`) are identified, counted and
//!   claimed like any other but never acted on (step 5). Referrers whose
//!   subject is present (`attached`) are invisible: not counted, not claimed,
//!   never acted on — they follow their subject.
//! - Output order: by rule priority, then in counting order (newest first,
//!   `(k, digest)` descending). It depends only on the set of images, not on
//!   their order in the input (digests are assumed unique, as in a
//!   repository).
//!
//! Cost: one sort of the images, then one pass per rule, i.e.
//! O(images × log images + rules × images × tag-filter size).

use super::policy::{Action, Count, Policy, Rule, StorageClass, TagFilter, TagStatus};
use crate::registry::wildcard_match;

/// Milliseconds in a day, the unit of the `since*` count types.
const DAY_MS: i128 = 86_400_000;

/// What the planner knows about one image (one digest) of the repository.
#[derive(Clone, Debug)]
pub struct ImageFacts {
    pub digest: String,
    pub tags: Vec<String>,
    /// Epoch milliseconds.
    pub pushed_at: i64,
    pub storage_class: StorageClass,
    /// Epoch milliseconds of the last recorded pull.
    pub last_pulled_at: Option<i64>,
    /// Epoch milliseconds of the last restore from archive.
    pub last_activated_at: Option<i64>,
    /// Epoch milliseconds of the last move to archive.
    pub last_archived_at: Option<i64>,
    /// Referenced by an image index in the repository: counted by rules, never acted on (step 5).
    pub in_index: bool,
    /// A referrer (OCI `subject`) whose subject is in the repository: it follows its subject and is invisible to rules.
    pub attached: bool,
}

/// One image the policy acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub digest: String,
    pub action: Action,
    /// The priority of the rule that claimed the image (ECR's `appliedRulePriority`).
    pub rule_priority: u32,
}

impl ImageFacts {
    /// The age key `k(i)`: the last restore from archive, else the push.
    fn age_key(&self) -> i64 {
        self.last_activated_at.unwrap_or(self.pushed_at)
    }

    /// Where `sinceImagePulled` measures from.
    fn pull_reference(&self) -> i64 {
        match (self.last_pulled_at, self.last_activated_at) {
            (Some(pulled), None) => pulled,
            (Some(pulled), Some(activated)) if pulled >= activated => pulled,
            _ => self.age_key(),
        }
    }
}

/// Decisions in a deterministic order: by rule priority, then newest first
/// (`(k, digest)` descending), independent of the order of `images`.
pub fn plan(policy: &Policy, images: &[ImageFacts], now_ms: i64) -> Vec<Decision> {
    // Counting order: newest first, greater digest first among equal ages.
    let mut order: Vec<&ImageFacts> = images.iter().filter(|i| !i.attached).collect();
    order.sort_unstable_by(|a, b| (b.age_key(), &b.digest).cmp(&(a.age_key(), &a.digest)));

    // `policy.rules` is sorted already; sort anyway (stably) since the fields are public.
    let mut rules: Vec<&Rule> = policy.rules.iter().collect();
    rules.sort_by_key(|r| r.priority);

    let mut claimed = vec![false; order.len()];
    let mut unclaimed = order.len();
    let mut decisions = Vec::new();
    for rule in rules {
        if unclaimed == 0 {
            break;
        }
        // How many images this rule identified so far, newest first.
        let mut rank: u64 = 0;
        for (slot, image) in order.iter().enumerate() {
            if !identifies(rule, image) {
                continue;
            }
            let position = rank;
            rank += 1;
            if claimed[slot] {
                continue;
            }
            claimed[slot] = true;
            unclaimed -= 1;
            if !image.in_index && marks(rule.count, image, position, now_ms) {
                decisions.push(Decision {
                    digest: image.digest.clone(),
                    action: rule.action,
                    rule_priority: rule.priority,
                });
            }
        }
    }
    decisions
}

/// Step 1: whether `rule` identifies `image`. A tag filter applies to
/// `tagged` rules only (the parser gives other rules none); a `tagged` rule
/// without a filter identifies every tagged image.
fn identifies(rule: &Rule, image: &ImageFacts) -> bool {
    if image.storage_class != rule.storage_class {
        return false;
    }
    match rule.tag_status {
        TagStatus::Any => true,
        TagStatus::Untagged => image.tags.is_empty(),
        TagStatus::Tagged => {
            !image.tags.is_empty() && tag_filter_holds(&rule.tag_filter, &image.tags)
        }
    }
}

/// Every prefix starts some tag / every pattern matches some whole tag (the
/// tags may differ from one entry to the next).
fn tag_filter_holds(filter: &TagFilter, tags: &[String]) -> bool {
    match filter {
        TagFilter::None => true,
        TagFilter::Prefixes(prefixes) => prefixes
            .iter()
            .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
        TagFilter::Patterns(patterns) => patterns
            .iter()
            .all(|p| tags.iter().any(|t| wildcard_match(p, t))),
    }
}

/// Step 2: whether the rule marks the image; `position` is the image's index
/// among the images the rule identified, newest first.
fn marks(count: Count, image: &ImageFacts, position: u64, now_ms: i64) -> bool {
    match count {
        Count::MoreThan(keep) => position >= keep,
        Count::SincePushedDays(days) => older_than(now_ms, image.age_key(), days),
        Count::SincePulledDays(days) => older_than(now_ms, image.pull_reference(), days),
        Count::SinceTransitionedDays(days) => image
            .last_archived_at
            .is_some_and(|archived| older_than(now_ms, archived, days)),
    }
}

/// Strictly more than `days` days between `reference` and `now_ms` (in i128,
/// so no count can overflow).
fn older_than(now_ms: i64, reference: i64, days: u64) -> bool {
    i128::from(now_ms) - i128::from(reference) > i128::from(days) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;
    /// 2025-03-01T00:00:00Z.
    const NOW: i64 = 1_740_787_200_000;

    fn image(digest: &str, tags: &[&str], pushed_at: i64) -> ImageFacts {
        ImageFacts {
            digest: digest.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at,
            storage_class: StorageClass::Standard,
            last_pulled_at: None,
            last_activated_at: None,
            last_archived_at: None,
            in_index: false,
            attached: false,
        }
    }

    fn rule(
        priority: u32,
        tag_status: TagStatus,
        tag_filter: TagFilter,
        count: Count,
        action: Action,
    ) -> Rule {
        Rule {
            priority,
            description: None,
            tag_status,
            tag_filter,
            storage_class: StorageClass::Standard,
            count,
            action,
        }
    }

    fn prefixes(list: &[&str]) -> TagFilter {
        TagFilter::Prefixes(list.iter().map(|s| s.to_string()).collect())
    }

    fn patterns(list: &[&str]) -> TagFilter {
        TagFilter::Patterns(list.iter().map(|s| s.to_string()).collect())
    }

    fn decision(digest: &str, action: Action, rule_priority: u32) -> Decision {
        Decision {
            digest: digest.into(),
            action,
            rule_priority,
        }
    }

    fn expire(digest: &str, rule_priority: u32) -> Decision {
        decision(digest, Action::Expire, rule_priority)
    }

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    // ---- worked examples of §4.3 ---------------------------------------------

    #[test]
    fn example_l1_claiming_protects_kept_images() {
        let images = [
            image("A", &["alpha-1", "beta-1"], NOW - 4 * DAY),
            image("B", &[], NOW - 3 * DAY),
            image("C", &["alpha-2"], NOW - 2 * DAY),
            image("D", &["githash"], NOW - 22 * HOUR),
            image("E", &[], NOW - 20 * HOUR),
        ];
        let p = policy(vec![
            rule(
                1,
                TagStatus::Tagged,
                prefixes(&["alpha"]),
                Count::MoreThan(1),
                Action::Expire,
            ),
            rule(
                2,
                TagStatus::Untagged,
                TagFilter::None,
                Count::SincePushedDays(1),
                Action::Expire,
            ),
            rule(
                3,
                TagStatus::Any,
                TagFilter::None,
                Count::MoreThan(1),
                Action::Expire,
            ),
        ]);
        assert_eq!(
            plan(&p, &images, NOW),
            [expire("A", 1), expire("B", 2), expire("D", 3)]
        );
    }

    fn example_l2_images() -> Vec<ImageFacts> {
        vec![
            image("P1", &["prod-1", "beta-1"], NOW - 10 * DAY),
            image("P2", &["prod-2", "beta-2"], NOW - 9 * DAY),
            image("P3", &["beta-3"], NOW - 8 * DAY),
            image("P4", &["prod-3"], NOW - 7 * DAY),
        ]
    }

    #[test]
    fn example_l2a_priority_order_decides() {
        let p = policy(vec![
            rule(
                1,
                TagStatus::Tagged,
                patterns(&["prod-*"]),
                Count::MoreThan(2),
                Action::Expire,
            ),
            rule(
                2,
                TagStatus::Tagged,
                patterns(&["beta-*"]),
                Count::MoreThan(1),
                Action::Expire,
            ),
        ]);
        assert_eq!(plan(&p, &example_l2_images(), NOW), [expire("P1", 1)]);
    }

    #[test]
    fn example_l2b_priorities_swapped() {
        let p = policy(vec![
            rule(
                1,
                TagStatus::Tagged,
                patterns(&["beta-*"]),
                Count::MoreThan(1),
                Action::Expire,
            ),
            rule(
                2,
                TagStatus::Tagged,
                patterns(&["prod-*"]),
                Count::MoreThan(2),
                Action::Expire,
            ),
        ]);
        // Newest first within the rule: P2 (−9d) before P1 (−10d).
        assert_eq!(
            plan(&p, &example_l2_images(), NOW),
            [expire("P2", 1), expire("P1", 1)]
        );
    }

    #[test]
    fn example_l3_archive_transition_and_expiry() {
        let standard = |digest: &str, tag: &str, pushed_days: i64| {
            image(digest, &[tag], NOW - pushed_days * DAY)
        };
        let archived = |digest: &str, tag: &str, pushed_days: i64, archived_days: i64| ImageFacts {
            storage_class: StorageClass::Archive,
            last_archived_at: Some(NOW - archived_days * DAY),
            ..image(digest, &[tag], NOW - pushed_days * DAY)
        };
        let images = [
            standard("X1", "app-1", 200),
            ImageFacts {
                last_pulled_at: Some(NOW - 10 * DAY),
                ..standard("X2", "app-2", 150)
            },
            ImageFacts {
                last_pulled_at: Some(NOW - 100 * DAY),
                ..standard("X3", "app-3", 120)
            },
            archived("X4", "app-4", 400, 120),
            archived("X5", "app-5", 300, 60),
            ImageFacts {
                last_pulled_at: Some(NOW - 400 * DAY),
                last_activated_at: Some(NOW - 20 * DAY),
                last_archived_at: Some(NOW - 200 * DAY),
                ..standard("X6", "app-6", 500)
            },
        ];
        let p = policy(vec![
            rule(
                1,
                TagStatus::Any,
                TagFilter::None,
                Count::SincePulledDays(90),
                Action::Transition,
            ),
            Rule {
                storage_class: StorageClass::Archive,
                ..rule(
                    2,
                    TagStatus::Any,
                    TagFilter::None,
                    Count::SinceTransitionedDays(90),
                    Action::Expire,
                )
            },
        ]);
        // Rule 1 newest first: X3 (pushed −120d) before X1 (−200d).
        assert_eq!(
            plan(&p, &images, NOW),
            [
                decision("X3", Action::Transition, 1),
                decision("X1", Action::Transition, 1),
                expire("X4", 2),
            ]
        );
    }

    // ---- pinned choices ---------------------------------------------------------

    #[test]
    fn older_than_is_strict() {
        let images = [
            image("exact", &[], NOW - 7 * DAY),
            image("older", &[], NOW - 7 * DAY - 1),
            image("newer", &[], NOW - 7 * DAY + 1),
        ];
        let p = policy(vec![rule(
            1,
            TagStatus::Untagged,
            TagFilter::None,
            Count::SincePushedDays(7),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &images, NOW), [expire("older", 1)]);
    }

    #[test]
    fn equal_ages_keep_the_greater_digest() {
        let images = [
            image("sha256:1", &["x"], NOW - DAY),
            image("sha256:3", &["y"], NOW - DAY),
            image("sha256:2", &["z"], NOW - DAY),
        ];
        let p = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::MoreThan(1),
            Action::Expire,
        )]);
        assert_eq!(
            plan(&p, &images, NOW),
            [expire("sha256:2", 1), expire("sha256:1", 1)]
        );
    }

    #[test]
    fn restored_images_count_from_their_restore() {
        // Pushed long ago but restored yesterday: newest by the age key.
        let restored = ImageFacts {
            last_activated_at: Some(NOW - DAY),
            ..image("old", &["a"], NOW - 300 * DAY)
        };
        let images = [restored, image("mid", &["b"], NOW - 10 * DAY)];
        let count = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::MoreThan(1),
            Action::Expire,
        )]);
        assert_eq!(plan(&count, &images, NOW), [expire("mid", 1)]);
        let pushed = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::SincePushedDays(5),
            Action::Expire,
        )]);
        assert_eq!(plan(&pushed, &images, NOW), [expire("mid", 1)]);
    }

    #[test]
    fn since_pulled_reference() {
        let p = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::SincePulledDays(30),
            Action::Transition,
        )]);
        let cases = [
            // (pushed, pulled, restored, marked?)
            (100, None, None, true),
            (100, Some(10), None, false),
            (100, Some(40), None, true),
            // Pulled after the restore: the pull counts.
            (100, Some(40), Some(50), true),
            (100, Some(10), Some(50), false),
            // Pulled at the restore instant: the pull counts (same time anyway).
            (100, Some(40), Some(40), true),
            // Restored after the last pull: the restore counts.
            (100, Some(90), Some(10), false),
            (100, Some(90), Some(40), true),
            // Restored, never pulled.
            (100, None, Some(10), false),
            (100, None, Some(40), true),
        ];
        for (pushed, pulled, restored, marked) in cases {
            let img = ImageFacts {
                last_pulled_at: pulled.map(|d: i64| NOW - d * DAY),
                last_activated_at: restored.map(|d: i64| NOW - d * DAY),
                ..image("i", &["t"], NOW - pushed * DAY)
            };
            let expected = if marked {
                vec![decision("i", Action::Transition, 1)]
            } else {
                vec![]
            };
            assert_eq!(
                plan(&p, &[img], NOW),
                expected,
                "{pushed} {pulled:?} {restored:?}"
            );
        }
    }

    #[test]
    fn since_transitioned_needs_an_archive_time() {
        let p = policy(vec![Rule {
            storage_class: StorageClass::Archive,
            ..rule(
                1,
                TagStatus::Any,
                TagFilter::None,
                Count::SinceTransitionedDays(90),
                Action::Expire,
            )
        }]);
        let never = ImageFacts {
            storage_class: StorageClass::Archive,
            ..image("never", &[], NOW - 900 * DAY)
        };
        let old = ImageFacts {
            last_archived_at: Some(NOW - 91 * DAY),
            ..never.clone()
        };
        let old = ImageFacts {
            digest: "old".into(),
            ..old
        };
        // A standard image archived long ago (then restored) is not the archive rule's business.
        let restored = ImageFacts {
            digest: "restored".into(),
            storage_class: StorageClass::Standard,
            ..old.clone()
        };
        assert_eq!(plan(&p, &[never, old, restored], NOW), [expire("old", 1)]);
    }

    #[test]
    fn tag_filters_need_every_entry() {
        let images = [
            image("both", &["prod-1", "web-1"], NOW - 5 * DAY),
            image("prod-only", &["prod-2"], NOW - 4 * DAY),
            image("one-tag-both", &["prodweb"], NOW - 3 * DAY),
            image("case", &["PROD-3", "WEB"], NOW - 2 * DAY),
            image("untagged", &[], NOW - DAY),
        ];
        let all_of = |filter: TagFilter| {
            let p = policy(vec![rule(
                1,
                TagStatus::Tagged,
                filter,
                Count::SincePushedDays(0),
                Action::Expire,
            )]);
            let mut digests: Vec<String> = plan(&p, &images, NOW)
                .into_iter()
                .map(|d| d.digest)
                .collect();
            digests.sort();
            digests
        };
        assert_eq!(all_of(prefixes(&["prod", "web"])), ["both"]);
        assert_eq!(
            all_of(prefixes(&["prod"])),
            ["both", "one-tag-both", "prod-only"]
        );
        assert_eq!(
            all_of(patterns(&["prod*", "*web*"])),
            ["both", "one-tag-both"]
        );
        assert_eq!(all_of(patterns(&["prod-*"])), ["both", "prod-only"]);
        // Whole-tag match, case-sensitive.
        assert_eq!(all_of(patterns(&["prod"])), Vec::<String>::new());
        assert_eq!(all_of(patterns(&["*-3"])), ["case"]);
        assert_eq!(
            all_of(patterns(&["*"])),
            ["both", "case", "one-tag-both", "prod-only"]
        );
    }

    #[test]
    fn index_children_count_but_are_kept() {
        let child = ImageFacts {
            in_index: true,
            ..image("child", &[], NOW - 10 * DAY)
        };
        let images = [
            image("new", &[], NOW - DAY),
            child,
            image("old", &[], NOW - 20 * DAY),
        ];
        let p = policy(vec![
            rule(
                1,
                TagStatus::Untagged,
                TagFilter::None,
                Count::MoreThan(1),
                Action::Expire,
            ),
            rule(
                2,
                TagStatus::Any,
                TagFilter::None,
                Count::SincePushedDays(0),
                Action::Expire,
            ),
        ]);
        // The child takes a counting slot and is claimed by rule 1 (so rule 2 cannot act on it either).
        assert_eq!(plan(&p, &images, NOW), [expire("old", 1)]);
    }

    #[test]
    fn attached_referrers_are_invisible() {
        let signature = ImageFacts {
            attached: true,
            ..image("sig", &[], NOW - DAY)
        };
        let images = [
            signature,
            image("a", &[], NOW - 2 * DAY),
            image("b", &[], NOW - 3 * DAY),
        ];
        let p = policy(vec![rule(
            1,
            TagStatus::Untagged,
            TagFilter::None,
            Count::MoreThan(1),
            Action::Expire,
        )]);
        // Had the (newest) signature been counted, "a" would be expired too.
        assert_eq!(plan(&p, &images, NOW), [expire("b", 1)]);
        let p = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::SincePushedDays(0),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &images, NOW), [expire("a", 1), expire("b", 1)]);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let images = [image("a", &[], i64::MIN), image("b", &[], i64::MAX)];
        let p = policy(vec![rule(
            1,
            TagStatus::Untagged,
            TagFilter::None,
            Count::SincePushedDays(u64::MAX),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &images, NOW), []);
        let p = policy(vec![rule(
            1,
            TagStatus::Untagged,
            TagFilter::None,
            Count::SincePushedDays(1),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &images, i64::MAX), [expire("a", 1)]);
        let p = policy(vec![rule(
            1,
            TagStatus::Untagged,
            TagFilter::None,
            Count::MoreThan(u64::MAX),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &images, NOW), []);
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(plan(&policy(vec![]), &[image("a", &[], 0)], NOW), []);
        let p = policy(vec![rule(
            1,
            TagStatus::Any,
            TagFilter::None,
            Count::MoreThan(1),
            Action::Expire,
        )]);
        assert_eq!(plan(&p, &[], NOW), []);
    }

    #[test]
    fn twenty_thousand_images() {
        let images: Vec<ImageFacts> = (0..20_000i64)
            .map(|i| {
                let tags: Vec<String> = match i % 4 {
                    0 => vec![],
                    1 => vec![format!("prod-{i}")],
                    2 => vec![format!("dev-{i}"), "latest".into()],
                    _ => vec![format!("feature-{i}-x")],
                };
                ImageFacts {
                    tags,
                    ..image(&format!("sha256:{i:064x}"), &[], NOW - i * HOUR)
                }
            })
            .collect();
        let p = policy(vec![
            rule(
                1,
                TagStatus::Tagged,
                prefixes(&["prod"]),
                Count::MoreThan(100),
                Action::Expire,
            ),
            rule(
                2,
                TagStatus::Tagged,
                patterns(&["*-*-x"]),
                Count::SincePushedDays(30),
                Action::Expire,
            ),
            rule(
                3,
                TagStatus::Untagged,
                TagFilter::None,
                Count::SincePushedDays(7),
                Action::Expire,
            ),
            rule(
                4,
                TagStatus::Any,
                TagFilter::None,
                Count::MoreThan(1000),
                Action::Transition,
            ),
        ]);
        let start = std::time::Instant::now();
        let decisions = plan(&p, &images, NOW);
        let elapsed = start.elapsed();
        let count = |priority: u32| {
            decisions
                .iter()
                .filter(|d| d.rule_priority == priority)
                .count()
        };
        assert_eq!(count(1), 5_000 - 100);
        assert_eq!(
            count(2),
            (0..20_000)
                .filter(|i| i % 4 == 3 && i * HOUR > 30 * DAY)
                .count()
        );
        assert_eq!(
            count(3),
            (0..20_000)
                .filter(|i| i % 4 == 0 && i * HOUR > 7 * DAY)
                .count()
        );
        // Rule 4 claims only the dev images; the 1,000 newest images overall are kept.
        assert_eq!(count(4), (1000..20_000).filter(|i| i % 4 == 2).count());
        assert!(elapsed.as_secs() < 5, "{elapsed:?}");
    }

    // ---- properties ---------------------------------------------------------------

    /// Whole-tag glob match, written independently of `wildcard_match`.
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
            Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
        }
    }

    /// Step 1, written from the specification.
    fn naive_identifies(rule: &Rule, image: &ImageFacts) -> bool {
        !image.attached
            && image.storage_class == rule.storage_class
            && match (rule.tag_status, &rule.tag_filter) {
                (TagStatus::Any, _) => true,
                (TagStatus::Untagged, _) => image.tags.is_empty(),
                (TagStatus::Tagged, TagFilter::None) => !image.tags.is_empty(),
                (TagStatus::Tagged, TagFilter::Prefixes(ps)) => {
                    !image.tags.is_empty()
                        && ps
                            .iter()
                            .all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
                }
                (TagStatus::Tagged, TagFilter::Patterns(ps)) => {
                    !image.tags.is_empty()
                        && ps
                            .iter()
                            .all(|p| image.tags.iter().any(|t| glob(p.as_bytes(), t.as_bytes())))
                }
            }
    }

    fn key(image: &ImageFacts) -> (i64, &str) {
        (
            image.last_activated_at.unwrap_or(image.pushed_at),
            &image.digest,
        )
    }

    /// The whole algorithm, quadratically, straight from §4.2.
    fn naive_plan(policy: &Policy, images: &[ImageFacts], now: i64) -> Vec<Decision> {
        let days = |n: u64| i128::from(n) * i128::from(DAY);
        let age = |reference: i64| i128::from(now) - i128::from(reference);
        let mut out = Vec::new();
        for image in images {
            let Some(rule) = policy.rules.iter().find(|r| naive_identifies(r, image)) else {
                continue;
            };
            let marked = match rule.count {
                Count::MoreThan(n) => {
                    let newer = images
                        .iter()
                        .filter(|j| naive_identifies(rule, j) && key(j) > key(image))
                        .count();
                    newer as u64 >= n
                }
                Count::SincePushedDays(n) => age(key(image).0) > days(n),
                Count::SincePulledDays(n) => {
                    let reference = match (image.last_pulled_at, image.last_activated_at) {
                        (Some(p), Some(a)) if p >= a => p,
                        (Some(p), None) => p,
                        (_, Some(a)) => a,
                        (None, None) => image.pushed_at,
                    };
                    age(reference) > days(n)
                }
                Count::SinceTransitionedDays(n) => {
                    image.last_archived_at.is_some_and(|a| age(a) > days(n))
                }
            };
            if marked && !image.in_index {
                out.push(Decision {
                    digest: image.digest.clone(),
                    action: rule.action,
                    rule_priority: rule.priority,
                });
            }
        }
        out
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        let filter = prop_oneof![
            Just((TagStatus::Untagged, TagFilter::None)),
            Just((TagStatus::Any, TagFilter::None)),
            prop::collection::vec(
                prop::sample::select(vec!["prod", "beta", "app-", "v1", "p"]),
                1..3
            )
            .prop_map(|l| (
                TagStatus::Tagged,
                TagFilter::Prefixes(l.into_iter().map(String::from).collect())
            )),
            prop::collection::vec(
                prop::sample::select(vec![
                    "prod*", "*-1", "*beta*", "app-*", "*", "prod-1", "*o*e*"
                ]),
                1..3
            )
            .prop_map(|l| (
                TagStatus::Tagged,
                TagFilter::Patterns(l.into_iter().map(String::from).collect())
            )),
        ];
        let action = || prop_oneof![Just(Action::Expire), Just(Action::Transition)];
        let standard = prop_oneof![
            (1u64..6, action()).prop_map(|(n, a)| (Count::MoreThan(n), a)),
            (1u64..200, action()).prop_map(|(n, a)| (Count::SincePushedDays(n), a)),
            (1u64..200).prop_map(|n| (Count::SincePulledDays(n), Action::Transition)),
        ]
        .prop_map(|(c, a)| (StorageClass::Standard, c, a));
        let archive = (90u64..300).prop_map(|n| {
            (
                StorageClass::Archive,
                Count::SinceTransitionedDays(n),
                Action::Expire,
            )
        });
        (filter, prop_oneof![3 => standard, 1 => archive]).prop_map(
            |((tag_status, tag_filter), (storage_class, count, action))| Rule {
                priority: 0,
                description: None,
                tag_status,
                tag_filter,
                storage_class,
                count,
                action,
            },
        )
    }

    /// Rules valid one by one, with unique increasing priorities (gaps allowed).
    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            prop::collection::vec(arb_rule(), 1..6),
            prop::collection::vec(1u32..4, 6),
        )
            .prop_map(|(rules, gaps)| {
                let mut priority = 0;
                let rules = rules
                    .into_iter()
                    .zip(gaps)
                    .map(|(rule, gap)| {
                        priority += gap;
                        Rule { priority, ..rule }
                    })
                    .collect();
                Policy { rules }
            })
    }

    fn arb_image() -> impl Strategy<Value = ImageFacts> {
        // Coarse times so that equal ages are common.
        let when = || (0i64..40).prop_map(|weeks| NOW - weeks * 7 * DAY);
        let tags = prop::collection::vec(
            prop::sample::select(vec![
                "prod-1", "prod-2", "beta-1", "app-1", "app-x", "v1.0", "latest", "probe",
            ]),
            0..3,
        );
        (
            tags,
            when(),
            prop_oneof![3 => Just(StorageClass::Standard), 1 => Just(StorageClass::Archive)],
            proptest::option::of(when()),
            proptest::option::of(when()),
            proptest::option::of(when()),
            proptest::bool::weighted(0.15),
            proptest::bool::weighted(0.15),
        )
            .prop_map(
                |(
                    tags,
                    pushed_at,
                    storage_class,
                    last_pulled_at,
                    last_activated_at,
                    last_archived_at,
                    in_index,
                    attached,
                )| {
                    ImageFacts {
                        digest: String::new(),
                        tags: tags.into_iter().map(String::from).collect(),
                        pushed_at,
                        storage_class,
                        last_pulled_at,
                        last_activated_at,
                        last_archived_at,
                        in_index,
                        attached,
                    }
                },
            )
    }

    /// Images with unique digests (in an order unrelated to their position),
    /// and the same images shuffled.
    fn arb_images() -> impl Strategy<Value = (Vec<ImageFacts>, Vec<ImageFacts>)> {
        prop::collection::vec(arb_image(), 0..40)
            .prop_flat_map(|images| {
                let n = images.len();
                (
                    Just(images),
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                )
            })
            .prop_flat_map(|(images, names)| {
                let images: Vec<ImageFacts> = images
                    .into_iter()
                    .zip(names)
                    .map(|(image, name)| ImageFacts {
                        digest: format!("sha256:{name:02x}"),
                        ..image
                    })
                    .collect();
                (Just(images.clone()), Just(images).prop_shuffle())
            })
    }

    fn sorted(mut decisions: Vec<Decision>) -> Vec<Decision> {
        decisions.sort_by(|a, b| (&a.digest, a.rule_priority).cmp(&(&b.digest, b.rule_priority)));
        decisions
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// (a) Each image gets at most one decision.
        #[test]
        fn at_most_one_decision_per_image(policy in arb_policy(), (images, _) in arb_images()) {
            let decisions = plan(&policy, &images, NOW);
            let mut digests: Vec<&str> = decisions.iter().map(|d| d.digest.as_str()).collect();
            digests.sort_unstable();
            let before = digests.len();
            digests.dedup();
            prop_assert_eq!(before, digests.len());
        }

        /// (b) The acting rule is the first rule that identifies the image, and
        /// the action is that rule's.
        #[test]
        fn the_first_identifying_rule_acts(policy in arb_policy(), (images, _) in arb_images()) {
            for d in plan(&policy, &images, NOW) {
                let image = images.iter().find(|i| i.digest == d.digest).unwrap();
                let first = policy.rules.iter().find(|r| naive_identifies(r, image)).unwrap();
                prop_assert_eq!(d.rule_priority, first.priority);
                prop_assert_eq!(d.action, first.action);
            }
        }

        /// (c) An `imageCountMoreThan N` rule acts on at most (identified − N)
        /// images and never on its N newest.
        #[test]
        fn count_rules_keep_their_newest(policy in arb_policy(), (images, _) in arb_images()) {
            let decisions = plan(&policy, &images, NOW);
            for rule in &policy.rules {
                let Count::MoreThan(n) = rule.count else { continue };
                let mut identified: Vec<&ImageFacts> = images.iter().filter(|i| naive_identifies(rule, i)).collect();
                identified.sort_by(|a, b| key(b).cmp(&key(a)));
                let acted: Vec<&Decision> = decisions.iter().filter(|d| d.rule_priority == rule.priority).collect();
                prop_assert!(acted.len() as u64 <= (identified.len() as u64).saturating_sub(n));
                for newest in identified.iter().take(n as usize) {
                    prop_assert!(!acted.iter().any(|d| d.digest == newest.digest));
                }
            }
        }

        /// (d) The input order does not matter (not even for the output order).
        #[test]
        fn input_order_does_not_matter(policy in arb_policy(), (images, shuffled) in arb_images()) {
            let decisions = plan(&policy, &images, NOW);
            let again = plan(&policy, &shuffled, NOW);
            prop_assert_eq!(sorted(decisions.clone()), sorted(again.clone()));
            prop_assert_eq!(decisions, again);
        }

        /// (e) Index children and attached referrers are never acted on.
        #[test]
        fn protected_images_are_never_acted_on(policy in arb_policy(), (images, _) in arb_images()) {
            for d in plan(&policy, &images, NOW) {
                let image = images.iter().find(|i| i.digest == d.digest).unwrap();
                prop_assert!(!image.in_index && !image.attached);
            }
        }

        /// (f) `sinceImagePushed N` acts only on images strictly older than N days.
        #[test]
        fn since_pushed_acts_only_on_old_images(policy in arb_policy(), (images, _) in arb_images()) {
            for d in plan(&policy, &images, NOW) {
                let rule = policy.rules.iter().find(|r| r.priority == d.rule_priority).unwrap();
                if let Count::SincePushedDays(n) = rule.count {
                    let image = images.iter().find(|i| i.digest == d.digest).unwrap();
                    let k = image.last_activated_at.unwrap_or(image.pushed_at);
                    prop_assert!(i128::from(NOW - k) > i128::from(n) * i128::from(DAY));
                }
            }
        }

        /// (g) The planner agrees with a naive transcription of §4.2, and
        /// orders its output by priority, then newest first.
        #[test]
        fn agrees_with_the_naive_algorithm(policy in arb_policy(), (images, _) in arb_images()) {
            let decisions = plan(&policy, &images, NOW);
            prop_assert_eq!(sorted(decisions.clone()), sorted(naive_plan(&policy, &images, NOW)));
            let keys: Vec<(u32, std::cmp::Reverse<(i64, &str)>)> = decisions
                .iter()
                .map(|d| (d.rule_priority, std::cmp::Reverse(key(images.iter().find(|i| i.digest == d.digest).unwrap()))))
                .collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
