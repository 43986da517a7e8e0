//! An image's findings as stored with its scan: each finding with when it
//! was first and last observed and whether it is still ACTIVE or CLOSED (no
//! longer matched after a re-scan or a re-match: fixed, or its advisory
//! withdrawn). Counts and the BASIC `findings` list show active ones only;
//! ENHANCED `enhancedFindings` show both, as Amazon Inspector does.

use serde::{Deserialize, Serialize};

use berth_scanner::matcher::Finding;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingStatus {
    Active,
    Closed,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Active => "ACTIVE",
            FindingStatus::Closed => "CLOSED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredFinding {
    pub finding: Finding,
    pub status: FindingStatus,
    pub first_observed_at: i64,
    pub last_observed_at: i64,
    /// When its status or content last changed.
    pub updated_at: i64,
}

impl StoredFinding {
    fn key(&self) -> (&str, &str, &str, &str) {
        key_of(&self.finding)
    }
}

fn key_of(f: &Finding) -> (&str, &str, &str, &str) {
    (
        f.name.as_str(),
        f.package_name.as_str(),
        f.package_version.as_str(),
        f.ecosystem.as_str(),
    )
}

/// Every finding of one image, in the matcher's order (severity, name,
/// package), closed ones after the active ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredFindings {
    pub findings: Vec<StoredFinding>,
}

impl StoredFindings {
    /// The findings stored as `doc` (a scan row's `findings`); none when
    /// there is no document or it does not parse.
    pub fn from_doc(doc: Option<&str>) -> StoredFindings {
        doc.and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default()
    }

    pub fn active(&self) -> impl Iterator<Item = &StoredFinding> {
        self.findings
            .iter()
            .filter(|f| f.status == FindingStatus::Active)
    }

    /// These findings after a new match at `now` found `found`.
    pub fn update(self, found: Vec<Finding>, now: i64) -> StoredFindings {
        let mut previous: std::collections::HashMap<
            (String, String, String, String),
            StoredFinding,
        > = self
            .findings
            .into_iter()
            .map(|f| {
                let (a, b, c, d) = f.key();
                ((a.into(), b.into(), c.into(), d.into()), f)
            })
            .collect();
        let mut out = Vec::with_capacity(found.len());
        for f in found {
            let (a, b, c, d) = key_of(&f);
            let k = (a.to_string(), b.to_string(), c.to_string(), d.to_string());
            let stored = match previous.remove(&k) {
                Some(p) => {
                    let changed = p.status != FindingStatus::Active || p.finding != f;
                    StoredFinding {
                        updated_at: if changed { now } else { p.updated_at },
                        finding: f,
                        status: FindingStatus::Active,
                        first_observed_at: p.first_observed_at,
                        last_observed_at: now,
                    }
                }
                None => StoredFinding {
                    finding: f,
                    status: FindingStatus::Active,
                    first_observed_at: now,
                    last_observed_at: now,
                    updated_at: now,
                },
            };
            out.push(stored);
        }
        let mut closed: Vec<StoredFinding> = previous
            .into_values()
            .map(|mut p| {
                if p.status == FindingStatus::Active {
                    p.status = FindingStatus::Closed;
                    p.updated_at = now;
                }
                p
            })
            .collect();
        closed.sort_by(|a, b| a.key().cmp(&b.key()));
        out.extend(closed);
        StoredFindings { findings: out }
    }

    /// Add another image's findings (an index's union of its children),
    /// once per (vulnerability, package, version).
    pub fn absorb(&mut self, other: StoredFindings) {
        let mut seen: std::collections::HashSet<(String, String, String, String)> = self
            .findings
            .iter()
            .map(|f| {
                let (a, b, c, d) = f.key();
                (a.into(), b.into(), c.into(), d.into())
            })
            .collect();
        for f in other.findings {
            let (a, b, c, d) = f.key();
            let key: (String, String, String, String) = (a.into(), b.into(), c.into(), d.into());
            if seen.insert(key.clone()) {
                self.findings.push(f);
            } else if f.status == FindingStatus::Active {
                // One child's ACTIVE copy wins over another's CLOSED one.
                if let Some(kept) = self.findings.iter_mut().find(|k| {
                    let (a, b, c, d) = k.key();
                    (a, b, c, d)
                        == (
                            key.0.as_str(),
                            key.1.as_str(),
                            key.2.as_str(),
                            key.3.as_str(),
                        )
                }) && kept.status == FindingStatus::Closed
                {
                    *kept = f;
                }
            }
        }
        self.findings.sort_by(|a, b| {
            (a.status != FindingStatus::Active)
                .cmp(&(b.status != FindingStatus::Active))
                .then(b.finding.severity.cmp(&a.finding.severity))
                .then_with(|| a.key().cmp(&b.key()))
        });
    }

    /// Whether two sets say the same (ignoring when they were last observed).
    pub fn same_as(&self, other: &StoredFindings) -> bool {
        self.findings.len() == other.findings.len()
            && self
                .findings
                .iter()
                .zip(&other.findings)
                .all(|(a, b)| a.finding == b.finding && a.status == b.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scanner::Severity;

    fn finding(name: &str, pkg: &str) -> Finding {
        Finding {
            name: name.into(),
            description: String::new(),
            uri: String::new(),
            severity: Severity::High,
            package_name: pkg.into(),
            package_version: "1.0".into(),
            ecosystem: "Debian:12".into(),
            os: true,
            fixed_version: None,
            advisories: vec![name.into()],
            cvss_score: None,
            cvss_vector: None,
            cvss_kind: None,
            layer: None,
        }
    }

    #[test]
    fn new_findings_appear_and_fixed_ones_close() {
        let first = StoredFindings::default().update(vec![finding("CVE-1", "a")], 10);
        assert_eq!(first.active().count(), 1);
        let second = first
            .clone()
            .update(vec![finding("CVE-1", "a"), finding("CVE-2", "b")], 20);
        assert_eq!(second.active().count(), 2);
        assert_eq!(second.findings[0].first_observed_at, 10);
        assert_eq!(second.findings[0].last_observed_at, 20);
        let third = second.update(vec![finding("CVE-2", "b")], 30);
        assert_eq!(third.active().count(), 1);
        let closed: Vec<_> = third
            .findings
            .iter()
            .filter(|f| f.status == FindingStatus::Closed)
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].finding.name, "CVE-1");
        assert_eq!(closed[0].updated_at, 30);
        // The same match again changes nothing but the observation time.
        let fourth = third.clone().update(vec![finding("CVE-2", "b")], 40);
        assert!(fourth.same_as(&third));
    }

    #[test]
    fn an_index_counts_a_shared_finding_once() {
        let mut a = StoredFindings::default().update(vec![finding("CVE-1", "a")], 1);
        let b =
            StoredFindings::default().update(vec![finding("CVE-1", "a"), finding("CVE-3", "c")], 1);
        a.absorb(b);
        assert_eq!(a.findings.len(), 2);
    }
}
