//! One layer, streamed once: decompress (gzip, zstd or none), walk the tar,
//! keep only what a scan needs — parsed package databases, OS release
//! files, the symlinks among them, and whiteouts — with every resource
//! bounded ([`Limits`]). A hostile layer (a decompression bomb, path tricks,
//! giant metadata files, a truncated or corrupt stream) is a [`LayerError`],
//! never a panic, never a write anywhere.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::{Os, Package};

/// Bump when what a [`LayerScan`] holds or how it is produced changes: the
/// registry's per-layer cache is keyed by (layer digest, this).
pub const EXTRACTOR_VERSION: u32 = 1;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (OCI and Docker, `+gzip`,
    /// `+zstd`, plain `tar`); `None` for types that are not filesystem
    /// layers a scanner can read (encrypted, foreign/nondistributable
    /// layers are read too when they are tars, `+encrypted` is not).
    pub fn for_media_type(media_type: &str) -> Option<Compression> {
        let _ = media_type;
        unimplemented!("Compression::for_media_type")
    }
}

/// Bounds on the work one layer may cause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes read from one layer.
    pub max_uncompressed: u64,
    /// Tar entries in one layer.
    pub max_entries: u64,
    /// Bytes kept from one metadata file (a package database, a
    /// `package.json`, …); larger files fail the layer.
    pub max_file: u64,
    /// Bytes read from one binary or archive looked into for build info
    /// (Go, cargo-auditable, jars); larger ones are skipped, not failed.
    pub max_binary: u64,
    /// Packages kept from one layer.
    pub max_packages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed: 64 << 30,
            max_entries: 2_000_000,
            max_file: 64 << 20,
            max_binary: 512 << 20,
            max_packages: 1_000_000,
        }
    }
}

/// What one file of a layer contributes to the merged image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Fact {
    /// An os-release style file (`etc/os-release`, `usr/lib/os-release`,
    /// `etc/alpine-release`, …), parsed.
    OsRelease { os: Os },
    /// The packages a package database or metadata file lists.
    Packages { packages: Vec<Package> },
    /// A symlink at a path the scanner cares about, with its target.
    Symlink { target: String },
}

/// The scan of one layer: facts by normalised path (no leading `./` or `/`),
/// and the whiteouts the layer applies to the layers below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScan {
    pub facts: BTreeMap<String, Fact>,
    /// Paths deleted from lower layers (`dir/.wh.name` → `dir/name`).
    pub whiteouts: Vec<String>,
    /// Directories whose lower contents are hidden (`dir/.wh..wh..opq` → `dir`).
    pub opaque_dirs: Vec<String>,
    /// Decompressed bytes and tar entries read.
    pub uncompressed_bytes: u64,
    pub entries: u64,
}

/// Why a layer could not be scanned (the scan is FAILED with this text).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer is corrupt: {0}")]
    Corrupt(String),
    #[error("layer exceeds a scan limit: {0}")]
    Limit(String),
    #[error("reading the layer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Scans one layer from its (compressed) bytes.
pub fn scan_layer(
    reader: impl Read,
    compression: Compression,
    limits: &Limits,
) -> Result<LayerScan, LayerError> {
    let _ = (reader, compression, limits);
    unimplemented!("scan_layer")
}
