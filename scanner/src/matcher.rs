//! Inventory × advisories → findings. OS packages are matched in their OS's
//! ecosystem by *source* name and *source* version (Debian, Ubuntu, Alpine)
//! or binary name and EVR (the Red Hat family); language packages in their
//! own ecosystem. One finding per (vulnerability, installed package); an
//! advisory and its aliases (a DSA and its CVE) are one vulnerability.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::osv::Record;
use crate::{Inventory, Severity};

/// One vulnerability in one installed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The CVE id when the advisory has one, else the advisory's id.
    pub name: String,
    pub description: String,
    pub uri: String,
    pub severity: Severity,
    pub package_name: String,
    pub package_version: String,
    /// The OSV ecosystem it was matched in.
    pub ecosystem: String,
    /// Whether the package is an OS package (BASIC scans report only these).
    pub os: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// The advisories that reported it (ids), sorted.
    pub advisories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_vector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_kind: Option<String>,
    /// The layer that introduced the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// Matches `inventory`; `lookup(ecosystem, name)` returns the advisories
/// that name the package in that ecosystem. Findings come sorted by
/// severity (highest first), then name, then package.
pub fn match_inventory(
    inventory: &Inventory,
    lookup: &dyn Fn(&str, &str) -> Vec<Arc<Record>>,
) -> Vec<Finding> {
    let _ = (inventory, lookup);
    unimplemented!("match_inventory")
}
