//! ECR's severity rule: the distribution's own rating when the advisory has
//! one, else the CVSS v3/v4 (or v2) base score computed from the vector,
//! else UNDEFINED.

use crate::Severity;
use crate::osv::{Affected, Record};

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
    let _ = (record, affected);
    unimplemented!("severity::rate")
}
