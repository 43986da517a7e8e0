//! OSV records (<https://ossf.github.io/osv-schema/>), read leniently:
//! unknown ecosystems and fields are kept or ignored, never an error; a
//! record that is not valid OSV is an error naming the file and reason.
//! Also the import sources (a `.json` file, a directory of them, an osv.dev
//! `all.zip`: [`read_source`]) and the schema's range evaluation
//! ([`affects`]).

mod eval;
mod import;
mod time;

use serde::{Deserialize, Deserializer, Serialize};

pub(crate) use eval::affects_with as eval_affects;
pub use eval::{affects, compact};
pub use import::{MAX_FILE_BYTES, MAX_MEMBER_BYTES, SourceStats, read_source};
pub use time::rfc3339_unix;

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
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub severity: Vec<SeverityEntry>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub affected: Vec<Affected>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
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
    /// Optional in the schema (an entry with only GIT ranges may have
    /// none); a missing package reads as empty strings and never matches.
    #[serde(default)]
    pub package: AffectedPackage,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ranges: Vec<Range>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub versions: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub severity: Vec<SeverityEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedPackage {
    #[serde(default)]
    pub ecosystem: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
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

/// `null` where the schema has a list reads as the empty list (some
/// producers write `"aliases": null`).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a record or an import source was refused.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct ImportError {
    /// The file (or `archive.zip!member.json`).
    pub file: String,
    pub reason: String,
}

impl ImportError {
    pub(crate) fn new(file: impl Into<String>, reason: impl Into<String>) -> Self {
        ImportError {
            file: file.into(),
            reason: reason.into(),
        }
    }
}

/// How a version stands against one `affected` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The version that fixes it, when a range that contains the version
    /// ends with `fixed`.
    pub fixed: Option<String>,
}

/// Parses one OSV JSON document (one record).
pub fn parse_record(file: &str, bytes: &[u8]) -> Result<Record, ImportError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ImportError::new(file, format!("not JSON: {e}")))?;
    record_from_value(file, value)
}

/// Checks and converts one JSON value that should be one record.
pub(crate) fn record_from_value(
    file: &str,
    value: serde_json::Value,
) -> Result<Record, ImportError> {
    let Some(obj) = value.as_object() else {
        return Err(ImportError::new(file, "an OSV record is a JSON object"));
    };
    // Name the missing required fields plainly rather than by serde's words.
    for field in ["id", "modified"] {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => {
                return Err(ImportError::new(file, format!("no `{field}`")));
            }
            Some(serde_json::Value::String(s)) if s.is_empty() => {
                return Err(ImportError::new(file, format!("`{field}` is empty")));
            }
            Some(serde_json::Value::String(_)) => {}
            Some(_) => {
                return Err(ImportError::new(file, format!("`{field}` is not a string")));
            }
        }
    }
    let record: Record = serde_json::from_value(value)
        .map_err(|e| ImportError::new(file, format!("not an OSV record: {e}")))?;
    if time::rfc3339_unix(&record.modified).is_none() {
        return Err(ImportError::new(
            file,
            format!("`modified` is not an RFC 3339 time: {:?}", record.modified),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parse_keeps_unknown_ecosystems_and_ignores_unknown_fields() {
        let r = parse_record(
            "a.json",
            br#"{"id":"X-1","modified":"2024-01-02T03:04:05Z","schema_version":"1.7.0",
                "aliases":null,"new_field":{"a":[1,2]},
                "affected":[{"package":{"ecosystem":"NewEco:9","name":"p"},
                             "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"whatever":"1"}]}]},
                            {"ranges":[{"type":"GIT","repo":"https://x","events":[{"introduced":"abc"}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.id, "X-1");
        assert!(r.aliases.is_empty());
        assert_eq!(r.affected.len(), 2);
        assert_eq!(r.affected[0].package.ecosystem, "NewEco:9");
        assert_eq!(r.affected[0].ranges[0].events.len(), 2);
        assert_eq!(r.affected[0].ranges[0].events[1], Event::default());
        assert_eq!(r.affected[1].package.name, "");
    }

    #[test]
    fn invalid_records_name_file_and_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not JSON"),
            (b"[]", "JSON object"),
            (br#"{"modified":"2024-01-01T00:00:00Z"}"#, "no `id`"),
            (br#"{"id":"A"}"#, "no `modified`"),
            (
                br#"{"id":"","modified":"2024-01-01T00:00:00Z"}"#,
                "`id` is empty",
            ),
            (
                br#"{"id":7,"modified":"2024-01-01T00:00:00Z"}"#,
                "`id` is not a string",
            ),
            (br#"{"id":"A","modified":"yesterday"}"#, "RFC 3339"),
            (
                br#"{"id":"A","modified":"2024-01-01T00:00:00Z","affected":{"x":1}}"#,
                "not an OSV record",
            ),
            (
                br#"{"id":"A","modified":"2024-01-01T00:00:00Z","affected":[{"versions":[1]}]}"#,
                "not an OSV record",
            ),
        ];
        for (bytes, want) in cases {
            let e = parse_record("dir/f.json", bytes).unwrap_err();
            assert_eq!(e.file, "dir/f.json");
            assert!(e.reason.contains(want), "{:?} -> {}", want, e);
            assert!(e.to_string().starts_with("dir/f.json: "));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut s = String::from(r#"{"id":"A","modified":"2024-01-01T00:00:00Z","x":"#);
        s.push_str(&"[".repeat(100_000));
        s.push_str(&"]".repeat(100_000));
        s.push('}');
        assert!(parse_record("deep.json", s.as_bytes()).is_err());
    }
}
