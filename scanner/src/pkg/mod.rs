//! Package database and metadata parsers, one module per format: [`dpkg`],
//! [`apk`], [`rpm`] for OS packages, [`lang`] for language ecosystems. Each
//! takes the bytes of one file (and its path) and returns the packages it
//! lists; [`wants`] tells the layer walker which paths to keep.

pub mod apk;
pub mod dpkg;
pub mod lang;
pub mod rpm;

use crate::Package;

/// What the layer walker should do with a path (normalised, no leading `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Not interesting: skip without reading.
    No,
    /// A metadata file: read it whole (up to `Limits::max_file`, larger
    /// fails the layer) and [`parse`] it.
    Metadata,
    /// A possible binary or archive with embedded package info (an
    /// executable for Go build info or cargo-auditable, a `.jar`): read it
    /// (up to `Limits::max_binary`, larger is skipped) and [`parse`] it.
    Binary,
}

/// Whether the walker keeps `path` (`mode` is the tar entry's mode, for
/// the executable bit). OS package databases, then [`lang::wants`].
pub fn wants(path: &str, mode: u32) -> Want {
    let _ = (path, mode);
    unimplemented!("pkg::wants")
}

/// Parses one kept file; an `Err` is a file that should have parsed and did
/// not (the text says why).
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    let _ = (path, bytes);
    unimplemented!("pkg::parse")
}
