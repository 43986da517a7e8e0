//! Berth's image scanner: what an image's layers install, and which
//! vulnerabilities affect it. Pure and synchronous — bytes in, inventories and
//! findings out; the registry (the `berth` crate) reads blobs, stores results
//! and runs scans as jobs.
//!
//! The pipeline, one module per step:
//! - [`layer`]: stream one layer (gzip, zstd or plain tar) once, keeping only
//!   the facts a scan needs (package databases parsed, OS release files,
//!   whiteouts) in bounded memory — a [`layer::LayerScan`], cached by the
//!   registry per layer digest;
//! - [`pkg`]: the parsers the layer step calls (dpkg, apk, rpm; Python, npm,
//!   Go, Rust, Java, Ruby) and [`os`]: OS detection;
//! - [`image`]: merge an image's layer scans bottom-up with OCI whiteout rules
//!   into an [`Inventory`];
//! - [`version`]: exact version ordering per ecosystem;
//! - [`osv`]: OSV records (parsing, importing files/directories/`all.zip`,
//!   range evaluation);
//! - [`severity`]: ECR's severity rule (vendor rating, else CVSS, else UNDEFINED);
//! - [`matcher`]: inventory × advisories → findings;
//! - [`sbom`]: an inventory as a CycloneDX document.

pub mod image;
pub mod layer;
pub mod matcher;
pub mod os;
pub mod osv;
pub mod pkg;
pub mod sbom;
pub mod severity;
pub mod version;

use serde::{Deserialize, Serialize};

/// Where a package was found, which decides how it is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// dpkg (`var/lib/dpkg/status`, `status.d/*`).
    Dpkg,
    /// apk (`lib/apk/db/installed`).
    Apk,
    /// rpm (`rpmdb.sqlite`, `Packages`, `Packages.db`).
    Rpm,
    /// Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`).
    Python,
    /// npm (`node_modules/**/package.json`, lock files).
    Npm,
    /// Go modules from a binary's build info (and `stdlib`).
    Go,
    /// Rust crates (`Cargo.lock`, cargo-auditable sections).
    Cargo,
    /// Java archives (`pom.properties`, `MANIFEST.MF`).
    Maven,
    /// Ruby gems (`specifications/*.gemspec`).
    Gem,
}

impl PackageKind {
    /// OS packages are what ECR's BASIC scanning reports; the others only
    /// ENHANCED.
    pub fn is_os(self) -> bool {
        matches!(
            self,
            PackageKind::Dpkg | PackageKind::Apk | PackageKind::Rpm
        )
    }

    /// The OSV ecosystem of a language package (`None` for OS packages,
    /// whose ecosystem comes from the detected OS).
    pub fn language_ecosystem(self) -> Option<&'static str> {
        match self {
            PackageKind::Python => Some("PyPI"),
            PackageKind::Npm => Some("npm"),
            PackageKind::Go => Some("Go"),
            PackageKind::Cargo => Some("crates.io"),
            PackageKind::Maven => Some("Maven"),
            PackageKind::Gem => Some("RubyGems"),
            _ => None,
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub kind: PackageKind,
    /// The installed (binary) name; for Maven `group:artifact`.
    pub name: String,
    /// The installed version, as the package manager wrote it.
    pub version: String,
    /// The source package (dpkg `Source:`, apk `o:`, rpm SOURCERPM name),
    /// when it differs or is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// The source version (dpkg `Source: name (version)`, rpm SOURCERPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The file it was read from, relative to the root (`var/lib/dpkg/status`).
    pub path: String,
    /// The layer that introduced it (filled in by [`image::merge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// The detected operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// `ID` from os-release (`debian`, `ubuntu`, `alpine`, `rhel`, …).
    pub id: String,
    #[serde(default)]
    pub version_id: String,
    #[serde(default)]
    pub codename: String,
    #[serde(default)]
    pub pretty_name: String,
}

/// What an image has installed: its OS and its packages, after every layer
/// and whiteout. This is what the registry stores per image, so a new
/// vulnerability database re-matches without reading a blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub os: Option<Os>,
    pub packages: Vec<Package>,
}

/// ECR's severities, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Undefined,
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The wire name (`CRITICAL`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Undefined => "UNDEFINED",
            Severity::Informational => "INFORMATIONAL",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}
