//! OSV records (<https://ossf.github.io/osv-schema/>), read leniently:
//! unknown ecosystems and fields are kept or ignored, never an error; a
//! record that is not valid OSV is an error naming the file and reason.
//! Also the import sources (a `.json` file, a directory of them, an osv.dev
//! `all.zip`) and the schema's range evaluation.

use serde::{Deserialize, Serialize};

/// One advisory, in the fields a scan uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// RFC 3339, as published.
    pub modified: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<Affected>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    pub package: AffectedPackage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedPackage {
    pub ecosystem: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    pub events: Vec<Event>,
}

/// One range event; exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// Why a record or an import source was refused.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct ImportError {
    /// The file (or `archive.zip!member.json`).
    pub file: String,
    pub reason: String,
}

/// Parses one OSV JSON document (one record).
pub fn parse_record(file: &str, bytes: &[u8]) -> Result<Record, ImportError> {
    let _ = (file, bytes);
    unimplemented!("osv::parse_record")
}

/// How a version stands against one `affected` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The version that fixes it, when a range that contains the version
    /// ends with `fixed`.
    pub fixed: Option<String>,
}

/// Whether `version` is affected by `affected` (listed in `versions`, or
/// inside one of its ECOSYSTEM/SEMVER ranges under the ecosystem's
/// ordering); `None` when not affected or not decidable.
pub fn affects(affected: &Affected, version: &str) -> Option<Verdict> {
    let _ = (affected, version);
    unimplemented!("osv::affects")
}
