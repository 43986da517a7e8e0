//! Which images are scanned when: a registry's scanning configuration
//! (PutRegistryScanningConfiguration: scan type BASIC or ENHANCED, rules of
//! a frequency and WILDCARD repository filters) and its precedence over a
//! repository's own `scanOnPush`, as ECR defines them:
//! - BASIC: SCAN_ON_PUSH rules; a repository is scanned on push when a rule
//!   matches it, or no MANUAL rule matches it and its own `scanOnPush` is
//!   set; otherwise scans are manual.
//! - ENHANCED: SCAN_ON_PUSH and CONTINUOUS_SCAN rules (continuous wins when
//!   both match); the repository's `scanOnPush` is not consulted; a
//!   repository no rule matches is scanned manually only.
//!
//! A filter without `*` matches names that contain it; with `*`, the whole
//! name, `*` standing for any run of characters.

use serde::{Deserialize, Serialize};

use super::wildcard_match;
use crate::metadata::RepositoryRow;

/// BASIC (OS packages) or ENHANCED (OS and language packages, continuous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanType {
    #[default]
    Basic,
    Enhanced,
}

impl ScanType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanType::Basic => "BASIC",
            ScanType::Enhanced => "ENHANCED",
        }
    }

    pub fn parse(s: &str) -> Option<ScanType> {
        match s {
            "BASIC" => Some(ScanType::Basic),
            "ENHANCED" => Some(ScanType::Enhanced),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanFrequency {
    ScanOnPush,
    ContinuousScan,
    Manual,
}

impl ScanFrequency {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanFrequency::ScanOnPush => "SCAN_ON_PUSH",
            ScanFrequency::ContinuousScan => "CONTINUOUS_SCAN",
            ScanFrequency::Manual => "MANUAL",
        }
    }

    pub fn parse(s: &str) -> Option<ScanFrequency> {
        match s {
            "SCAN_ON_PUSH" => Some(ScanFrequency::ScanOnPush),
            "CONTINUOUS_SCAN" => Some(ScanFrequency::ContinuousScan),
            "MANUAL" => Some(ScanFrequency::Manual),
            _ => None,
        }
    }
}

/// One rule: a frequency for the repositories its filters match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRule {
    pub frequency: ScanFrequency,
    /// WILDCARD filters (the only filter type ECR has).
    pub filters: Vec<String>,
}

/// A registry's scanning configuration (the default: BASIC, no rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScanningConfiguration {
    pub scan_type: ScanType,
    pub rules: Vec<ScanRule>,
}

/// How one repository is scanned under a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveScanning {
    pub scan_type: ScanType,
    pub frequency: ScanFrequency,
    /// The filters of the rule that decided it (empty when none did).
    pub applied_filters: Vec<String>,
}

impl EffectiveScanning {
    /// Whether a push is scanned.
    pub fn on_push(&self) -> bool {
        self.frequency != ScanFrequency::Manual
    }
}

/// Whether WILDCARD `filter` matches repository `name`.
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if filter.contains('*') {
        wildcard_match(filter, name)
    } else {
        name.contains(filter)
    }
}

/// Whether `filter` is a valid WILDCARD filter (ECR's pattern
/// `^[a-z0-9*](?:[._\-/a-z0-9*]?[a-z0-9*]+)*$`).
pub fn filter_is_valid(filter: &str) -> bool {
    let b = filter.as_bytes();
    let word = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'*';
    let sep = |c: u8| matches!(c, b'.' | b'_' | b'-' | b'/');
    if b.is_empty() || b.len() > 255 || !word(b[0]) {
        return false;
    }
    // After the first character: runs of word characters, each optionally
    // preceded by one separator; never two separators, never one at the end.
    let mut prev_sep = false;
    for &c in &b[1..] {
        if sep(c) {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else if word(c) {
            prev_sep = false;
        } else {
            return false;
        }
    }
    !prev_sep
}

impl ScanningConfiguration {
    /// How `repo` is scanned.
    pub fn effective(&self, repo: &RepositoryRow) -> EffectiveScanning {
        let rule_for = |f: ScanFrequency| {
            self.rules
                .iter()
                .filter(|r| r.frequency == f)
                .find_map(|r| {
                    r.filters
                        .iter()
                        .any(|flt| filter_matches(flt, &repo.name))
                        .then(|| r.filters.clone())
                })
        };
        let decide = |frequency, applied_filters| EffectiveScanning {
            scan_type: self.scan_type,
            frequency,
            applied_filters,
        };
        match self.scan_type {
            ScanType::Enhanced => {
                if let Some(f) = rule_for(ScanFrequency::ContinuousScan) {
                    decide(ScanFrequency::ContinuousScan, f)
                } else if let Some(f) = rule_for(ScanFrequency::ScanOnPush) {
                    decide(ScanFrequency::ScanOnPush, f)
                } else {
                    decide(
                        ScanFrequency::Manual,
                        rule_for(ScanFrequency::Manual).unwrap_or_default(),
                    )
                }
            }
            ScanType::Basic => {
                if let Some(f) = rule_for(ScanFrequency::ScanOnPush) {
                    decide(ScanFrequency::ScanOnPush, f)
                } else if let Some(f) = rule_for(ScanFrequency::Manual) {
                    // The registry's MANUAL rule overrides the repository's own setting.
                    decide(ScanFrequency::Manual, f)
                } else if repo.scan_on_push {
                    decide(ScanFrequency::ScanOnPush, Vec::new())
                } else {
                    decide(ScanFrequency::Manual, Vec::new())
                }
            }
        }
    }
}

/// Config media types of images a scanner can read (others are artifacts:
/// signatures, SBOMs, Helm charts).
pub fn is_image_config(media_type: Option<&str>) -> bool {
    matches!(
        media_type,
        Some("application/vnd.oci.image.config.v1+json")
            | Some("application/vnd.docker.container.image.v1+json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_ecrs_table() {
        let names = [
            "prod",
            "repo-prod",
            "prod-repo",
            "repo-prod-repo",
            "prodrepo",
        ];
        let cases: [(&str, &[&str]); 5] = [
            ("prod", &names),
            ("*prod", &["prod", "repo-prod"]),
            ("prod*", &["prod", "prod-repo", "prodrepo"]),
            ("*prod*", &names),
            ("prod*repo", &["prod-repo", "prodrepo"]),
        ];
        for (filter, expected) in cases {
            let got: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| filter_matches(filter, n))
                .collect();
            assert_eq!(got, expected, "filter {filter}");
        }
    }

    #[test]
    fn filter_pattern() {
        for ok in ["prod", "*", "a*b", "team/app-1", "a.b_c-d/e"] {
            assert!(filter_is_valid(ok), "{ok}");
        }
        for bad in ["", "Prod", "-a", "a-", "a--b", "a b", "a/"] {
            assert!(!filter_is_valid(bad), "{bad}");
        }
    }

    fn repo(name: &str, scan_on_push: bool) -> RepositoryRow {
        RepositoryRow {
            scan_on_push,
            ..RepositoryRow::new("123456789012", name)
        }
    }

    #[test]
    fn precedence() {
        let basic = ScanningConfiguration::default();
        assert_eq!(
            basic.effective(&repo("a", false)).frequency,
            ScanFrequency::Manual
        );
        assert_eq!(
            basic.effective(&repo("a", true)).frequency,
            ScanFrequency::ScanOnPush
        );
        let basic_rule = ScanningConfiguration {
            scan_type: ScanType::Basic,
            rules: vec![ScanRule {
                frequency: ScanFrequency::ScanOnPush,
                filters: vec!["prod*".into()],
            }],
        };
        let e = basic_rule.effective(&repo("prod-api", false));
        assert_eq!(e.frequency, ScanFrequency::ScanOnPush);
        assert_eq!(e.applied_filters, vec!["prod*".to_string()]);
        let enhanced = ScanningConfiguration {
            scan_type: ScanType::Enhanced,
            rules: vec![
                ScanRule {
                    frequency: ScanFrequency::ScanOnPush,
                    filters: vec!["*".into()],
                },
                ScanRule {
                    frequency: ScanFrequency::ContinuousScan,
                    filters: vec!["prod".into()],
                },
            ],
        };
        assert_eq!(
            enhanced.effective(&repo("my-prod", false)).frequency,
            ScanFrequency::ContinuousScan
        );
        assert_eq!(
            enhanced.effective(&repo("dev", false)).frequency,
            ScanFrequency::ScanOnPush
        );
        // A BASIC MANUAL rule overrides the repository's own scanOnPush.
        let manual = ScanningConfiguration {
            scan_type: ScanType::Basic,
            rules: vec![ScanRule {
                frequency: ScanFrequency::Manual,
                filters: vec!["legacy*".into()],
            }],
        };
        let e = manual.effective(&repo("legacy-app", true));
        assert_eq!(e.frequency, ScanFrequency::Manual);
        assert_eq!(e.applied_filters, vec!["legacy*".to_string()]);
        assert_eq!(
            manual.effective(&repo("other", true)).frequency,
            ScanFrequency::ScanOnPush
        );
        // ENHANCED ignores the repository's own setting.
        let enhanced_none = ScanningConfiguration {
            scan_type: ScanType::Enhanced,
            rules: vec![],
        };
        assert_eq!(
            enhanced_none.effective(&repo("a", true)).frequency,
            ScanFrequency::Manual
        );
    }
}
