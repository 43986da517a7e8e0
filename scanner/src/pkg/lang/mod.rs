//! Language packages (ECR's ENHANCED scanning): Python, npm, Go, Rust,
//! Java, Ruby. [`wants`] and [`parse`] have the same contract as
//! [`crate::pkg::wants`] / [`crate::pkg::parse`], for language paths only.

use crate::Package;
use crate::pkg::Want;

/// Whether the walker keeps `path` for a language parser.
pub fn wants(path: &str, mode: u32) -> Want {
    let _ = (path, mode);
    Want::No
}

/// Parses one kept language file.
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    let _ = (path, bytes);
    Ok(vec![])
}
