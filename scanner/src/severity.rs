//! ECR's severity rule: the distribution's own rating when the advisory has
//! one, else the CVSS v3/v4 (or v2) base score computed from the vector,
//! else UNDEFINED.
//!
//! Vendor ratings read, in order: Debian's tracker urgency
//! (`ecosystem_specific.urgency` / `database_specific.urgency`), Ubuntu's
//! priority (a `severity[]` entry of type `Ubuntu`), and the
//! `database_specific.severity` / `ecosystem_specific.severity` word of Red
//! Hat (Low/Moderate/Important/Critical), GHSA (LOW/MODERATE/HIGH/CRITICAL)
//! and the like. Words that say "no rating yet" (`not yet assigned`,
//! `end-of-life`, `untriaged`, `unknown`) fall through to CVSS. CVSS scores
//! come from the `cvss` crate (tested upstream against Red Hat's CVSS test
//! suites); for v4 the vector is reduced to its base metrics first, so the
//! score is CVSS-B whatever threat/environmental metrics it carries.

use std::str::FromStr;

use serde_json::Value;

use crate::Severity;
use crate::osv::{Affected, Record, SeverityEntry};

/// The rating of one advisory for one affected package, with the CVSS
/// score and vector it came from (when it came from one).
#[derive(Debug, Clone, PartialEq)]
pub struct Rating {
    pub severity: Severity,
    pub cvss: Option<Cvss>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cvss {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`.
    pub kind: String,
    pub vector: String,
    pub score: f64,
}

/// Rates `record` for `affected`.
pub fn rate(record: &Record, affected: &Affected) -> Rating {
    if let Some(severity) = vendor(record, affected) {
        return Rating {
            severity,
            cvss: None,
        };
    }
    match cvss(record, affected) {
        Some(c) => Rating {
            severity: from_score(&c.kind, c.score),
            cvss: Some(c),
        },
        None => Rating {
            severity: Severity::Undefined,
            cvss: None,
        },
    }
}

/// The distribution's (or database's) own rating, when it has a usable one.
pub fn vendor(record: &Record, affected: &Affected) -> Option<Severity> {
    let blobs = [
        affected.ecosystem_specific.as_ref(),
        affected.database_specific.as_ref(),
        record.database_specific.as_ref(),
    ];
    for blob in blobs.iter().flatten() {
        if let Some(s) = field(blob, "urgency").and_then(debian_urgency) {
            return Some(s);
        }
    }
    for entry in affected.severity.iter().chain(&record.severity) {
        if entry.kind.eq_ignore_ascii_case("Ubuntu")
            && let Some(s) = ubuntu_priority(&entry.score)
        {
            return Some(s);
        }
    }
    for blob in blobs.iter().flatten() {
        if let Some(s) = field(blob, "severity").and_then(vendor_word) {
            return Some(s);
        }
    }
    None
}

fn field<'a>(blob: &'a Value, key: &str) -> Option<&'a str> {
    blob.get(key)?.as_str()
}

/// Debian's tracker urgency; `low*`, `low**` (the tracker's "guessed"
/// marks) count as their word.
fn debian_urgency(word: &str) -> Option<Severity> {
    let w = word
        .trim()
        .trim_end_matches('*')
        .trim()
        .to_ascii_lowercase();
    match w.as_str() {
        "unimportant" => Some(Severity::Informational),
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        _ => None,
    }
}

fn ubuntu_priority(word: &str) -> Option<Severity> {
    match word.trim().to_ascii_lowercase().as_str() {
        "negligible" => Some(Severity::Informational),
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// Red Hat's, GHSA's and similar severity words.
fn vendor_word(word: &str) -> Option<Severity> {
    match word.trim().to_ascii_lowercase().as_str() {
        "negligible" | "none" | "informational" => Some(Severity::Informational),
        "low" => Some(Severity::Low),
        "moderate" | "medium" => Some(Severity::Medium),
        "important" | "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// The CVSS vector that rates `affected`: the affected entry's severity
/// before the record's, within each CVSS_V4 before V3 before V2; the first
/// that parses.
pub fn cvss(record: &Record, affected: &Affected) -> Option<Cvss> {
    for entries in [&affected.severity, &record.severity] {
        for kind in ["CVSS_V4", "CVSS_V3", "CVSS_V2"] {
            for entry in entries.iter().filter(|e| e.kind == kind) {
                if let Some(c) = score_entry(entry) {
                    return Some(c);
                }
            }
        }
    }
    None
}

fn score_entry(entry: &SeverityEntry) -> Option<Cvss> {
    let vector = entry.score.trim();
    if vector.len() > 512 {
        return None;
    }
    let score = match entry.kind.as_str() {
        "CVSS_V4" => v4_base_score(vector)?,
        "CVSS_V3" => {
            // The crate scores a vector missing base metrics as if they
            // were zero; a rating needs them all.
            if !has_all(vector, &["AV", "AC", "PR", "UI", "S", "C", "I", "A"]) {
                return None;
            }
            cvss::v3::Vector::from_str(vector)
                .ok()?
                .base_score()
                .value()
        }
        "CVSS_V2" => {
            let v = vector.trim_start_matches('(').trim_end_matches(')');
            let v = v.strip_prefix("CVSS:2.0/").unwrap_or(v);
            if !has_all(v, &["AV", "AC", "Au", "C", "I", "A"]) {
                return None;
            }
            cvss::v2::Vector::from_str(v).ok()?.score().value()
        }
        _ => return None,
    };
    if !(0.0..=10.0).contains(&score) {
        return None;
    }
    Some(Cvss {
        kind: entry.kind.clone(),
        vector: vector.to_owned(),
        score,
    })
}

fn has_all(vector: &str, keys: &[&str]) -> bool {
    keys.iter().all(|k| {
        vector
            .split('/')
            .any(|part| part.split(':').next() == Some(*k))
    })
}

/// The v4 base score (CVSS-B): the vector's base metrics only.
fn v4_base_score(vector: &str) -> Option<f64> {
    const BASE: [&str; 11] = [
        "AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA",
    ];
    let mut parts = vector.split('/');
    let prefix = parts.next()?;
    if prefix != "CVSS:4.0" {
        return None;
    }
    if !has_all(vector, &BASE) {
        return None;
    }
    let mut base = String::from(prefix);
    for part in parts {
        let key = part.split(':').next().unwrap_or("");
        if BASE.contains(&key) {
            base.push('/');
            base.push_str(part);
        }
    }
    Some(cvss::v4::Vector::from_str(&base).ok()?.score().value())
}

/// NVD's rating of a base score (v2 has no CRITICAL and no NONE).
pub fn from_score(kind: &str, score: f64) -> Severity {
    if kind == "CVSS_V2" {
        return if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else {
            Severity::Low
        };
    }
    if score >= 9.0 {
        Severity::Critical
    } else if score >= 7.0 {
        Severity::High
    } else if score >= 4.0 {
        Severity::Medium
    } else if score > 0.0 {
        Severity::Low
    } else {
        Severity::Informational
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osv::AffectedPackage;
    use serde_json::json;

    fn sev(kind: &str, score: &str) -> SeverityEntry {
        SeverityEntry {
            kind: kind.into(),
            score: score.into(),
        }
    }

    fn record(severity: Vec<SeverityEntry>, db: Option<Value>) -> Record {
        Record {
            id: "X-1".into(),
            modified: "2024-01-01T00:00:00Z".into(),
            published: None,
            withdrawn: None,
            aliases: vec![],
            upstream: vec![],
            summary: None,
            details: None,
            severity,
            affected: vec![],
            references: vec![],
            database_specific: db,
        }
    }

    fn affected(severity: Vec<SeverityEntry>, eco: Option<Value>, db: Option<Value>) -> Affected {
        Affected {
            package: AffectedPackage {
                ecosystem: "Debian:12".into(),
                name: "p".into(),
                purl: None,
            },
            ranges: vec![],
            versions: vec![],
            severity,
            ecosystem_specific: eco,
            database_specific: db,
        }
    }

    /// Published base scores: NVD's for the CVEs named, FIRST's examples
    /// for v3.1 (specification-document §7 / examples) and v4.0.
    #[test]
    fn cvss_base_scores_match_published_ones() {
        let cases: &[(&str, &str, f64, Severity)] = &[
            // CVE-2021-44228 (Log4Shell), NVD v3.1
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
                10.0,
                Severity::Critical,
            ),
            // CVE-2014-0160 (Heartbleed), NVD v3.x
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
                7.5,
                Severity::High,
            ),
            // CVE-2014-0160, NVD v2
            (
                "CVSS_V2",
                "AV:N/AC:L/Au:N/C:P/I:N/A:N",
                5.0,
                Severity::Medium,
            ),
            // CVE-2023-4911 (Looney Tunables), NVD v3.1
            (
                "CVSS_V3",
                "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
                7.8,
                Severity::High,
            ),
            // CVE-2014-6271 (Shellshock), NVD v3.1 and v2
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                9.8,
                Severity::Critical,
            ),
            (
                "CVSS_V2",
                "(AV:N/AC:L/Au:N/C:C/I:C/A:C)",
                10.0,
                Severity::High,
            ),
            // FIRST v3.1 examples: CVE-2013-1937 (phpMyAdmin reflected XSS)
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
                6.1,
                Severity::Medium,
            ),
            // FIRST v3.1 examples: CVE-2015-1098 (iWork Denial of Service)
            (
                "CVSS_V3",
                "CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
                7.8,
                Severity::High,
            ),
            // FIRST v3.1 examples: CVE-2014-3566 (POODLE)
            (
                "CVSS_V3",
                "CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N",
                3.1,
                Severity::Low,
            ),
            // no impact: NVD's "None"
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N",
                0.0,
                Severity::Informational,
            ),
            // CVSS v4.0, FIRST calculator: all high, network, no privileges
            (
                "CVSS_V4",
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
                10.0,
                Severity::Critical,
            ),
            (
                "CVSS_V4",
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                9.3,
                Severity::Critical,
            ),
            (
                "CVSS_V4",
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.5,
                Severity::High,
            ),
            (
                "CVSS_V4",
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
                0.0,
                Severity::Informational,
            ),
            // threat metrics present: still the base score
            (
                "CVSS_V4",
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U",
                9.3,
                Severity::Critical,
            ),
        ];
        for (kind, vector, score, want) in cases {
            let c = score_entry(&sev(kind, vector)).unwrap_or_else(|| panic!("{vector}"));
            assert!(
                (c.score - score).abs() < 1e-9,
                "{vector}: {} != {score}",
                c.score
            );
            assert_eq!(from_score(kind, c.score), *want, "{vector}");
        }
    }

    #[test]
    fn bad_vectors_are_no_rating() {
        for (kind, vector) in [
            ("CVSS_V3", "CVSS:3.1/AV:N"),
            ("CVSS_V3", "CVSS:9.9/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            ("CVSS_V3", "not a vector"),
            ("CVSS_V3", ""),
            ("CVSS_V2", "AV:Q/AC:L/Au:N/C:P/I:N/A:N"),
            ("CVSS_V4", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            ("CVSS_V4", "CVSS:4.0/AV:N"),
            (
                "CVSS_V3",
                "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            ),
            ("CVSS_V9", "whatever"),
        ] {
            assert_eq!(score_entry(&sev(kind, vector)), None, "{vector}");
        }
        let long = format!("CVSS:3.1/{}", "AV:N/".repeat(10_000));
        assert_eq!(score_entry(&sev("CVSS_V3", &long)), None);
    }

    #[test]
    fn score_bands() {
        let cases = [
            ("CVSS_V3", 0.0, Severity::Informational),
            ("CVSS_V3", 0.1, Severity::Low),
            ("CVSS_V3", 3.9, Severity::Low),
            ("CVSS_V3", 4.0, Severity::Medium),
            ("CVSS_V3", 6.9, Severity::Medium),
            ("CVSS_V3", 7.0, Severity::High),
            ("CVSS_V3", 8.9, Severity::High),
            ("CVSS_V3", 9.0, Severity::Critical),
            ("CVSS_V4", 10.0, Severity::Critical),
            ("CVSS_V2", 0.0, Severity::Low),
            ("CVSS_V2", 3.9, Severity::Low),
            ("CVSS_V2", 4.0, Severity::Medium),
            ("CVSS_V2", 7.0, Severity::High),
            ("CVSS_V2", 10.0, Severity::High),
        ];
        for (kind, score, want) in cases {
            assert_eq!(from_score(kind, score), want, "{kind} {score}");
        }
    }

    const V3_CRIT: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

    #[test]
    fn vendor_first_then_cvss_then_undefined() {
        type Case = (Record, Affected, Severity, Option<&'static str>);
        let cvss_rec = || record(vec![sev("CVSS_V3", V3_CRIT)], None);
        let cases: Vec<Case> = vec![
            // Debian urgency beats the CVSS vector
            (
                cvss_rec(),
                affected(vec![], Some(json!({"urgency": "unimportant"})), None),
                Severity::Informational,
                None,
            ),
            (
                cvss_rec(),
                affected(vec![], Some(json!({"urgency": "low**"})), None),
                Severity::Low,
                None,
            ),
            (
                cvss_rec(),
                affected(vec![], Some(json!({"urgency": "medium*"})), None),
                Severity::Medium,
                None,
            ),
            (
                cvss_rec(),
                affected(vec![], None, Some(json!({"urgency": "high"}))),
                Severity::High,
                None,
            ),
            // no rating yet: CVSS decides
            (
                cvss_rec(),
                affected(vec![], Some(json!({"urgency": "not yet assigned"})), None),
                Severity::Critical,
                Some("CVSS_V3"),
            ),
            (
                cvss_rec(),
                affected(vec![], Some(json!({"urgency": "end-of-life"})), None),
                Severity::Critical,
                Some("CVSS_V3"),
            ),
            // Ubuntu priority
            (
                record(
                    vec![sev("Ubuntu", "negligible"), sev("CVSS_V3", V3_CRIT)],
                    None,
                ),
                affected(vec![], None, None),
                Severity::Informational,
                None,
            ),
            (
                record(vec![sev("Ubuntu", "critical")], None),
                affected(vec![], None, None),
                Severity::Critical,
                None,
            ),
            (
                record(
                    vec![sev("Ubuntu", "untriaged"), sev("CVSS_V3", V3_CRIT)],
                    None,
                ),
                affected(vec![], None, None),
                Severity::Critical,
                Some("CVSS_V3"),
            ),
            // Red Hat words
            (
                record(
                    vec![sev("CVSS_V3", V3_CRIT)],
                    Some(json!({"severity": "Moderate"})),
                ),
                affected(vec![], None, None),
                Severity::Medium,
                None,
            ),
            (
                record(vec![], Some(json!({"severity": "Important"}))),
                affected(vec![], None, None),
                Severity::High,
                None,
            ),
            (
                record(vec![], None),
                affected(vec![], Some(json!({"severity": "Low"})), None),
                Severity::Low,
                None,
            ),
            // GHSA words
            (
                record(vec![], Some(json!({"severity": "MODERATE", "cwe_ids": []}))),
                affected(vec![], None, None),
                Severity::Medium,
                None,
            ),
            (
                record(vec![], Some(json!({"severity": "CRITICAL"}))),
                affected(vec![], None, None),
                Severity::Critical,
                None,
            ),
            // an unusable word or a non-string falls through
            (
                record(vec![sev("CVSS_V3", V3_CRIT)], Some(json!({"severity": 5}))),
                affected(vec![], None, None),
                Severity::Critical,
                Some("CVSS_V3"),
            ),
            // affected-level CVSS before top-level; V4 before V3 before V2
            (
                record(vec![sev("CVSS_V3", V3_CRIT)], None),
                affected(
                    vec![sev("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:N/A:N")],
                    None,
                    None,
                ),
                Severity::Medium,
                Some("CVSS_V2"),
            ),
            (
                record(
                    vec![
                        sev("CVSS_V2", "AV:N/AC:L/Au:N/C:C/I:C/A:C"),
                        sev("CVSS_V3", "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"),
                        sev(
                            "CVSS_V4",
                            "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                        ),
                    ],
                    None,
                ),
                affected(vec![], None, None),
                Severity::High,
                Some("CVSS_V4"),
            ),
            // a broken V4 falls back to the V3
            (
                record(
                    vec![sev("CVSS_V4", "CVSS:4.0/junk"), sev("CVSS_V3", V3_CRIT)],
                    None,
                ),
                affected(vec![], None, None),
                Severity::Critical,
                Some("CVSS_V3"),
            ),
            // nothing
            (
                record(vec![], None),
                affected(vec![], Some(json!({"urgency": "not yet assigned"})), None),
                Severity::Undefined,
                None,
            ),
        ];
        for (i, (rec, aff, want, kind)) in cases.into_iter().enumerate() {
            let r = rate(&rec, &aff);
            assert_eq!(r.severity, want, "case {i}");
            assert_eq!(r.cvss.as_ref().map(|c| c.kind.as_str()), kind, "case {i}");
        }
    }
}
