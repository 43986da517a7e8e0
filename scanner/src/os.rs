//! OS detection: `os-release` (and the older release files) parsed, and the
//! OSV ecosystem an OS's packages are matched in (`Debian:12`,
//! `Ubuntu:22.04:LTS`, `Alpine:v3.19`, `Red Hat`, …).

use crate::Os;

/// Parses an os-release file (`KEY=value`, quoted or not).
pub fn parse_os_release(text: &str) -> Os {
    let _ = text;
    unimplemented!("parse_os_release")
}

/// The OSV ecosystem of an OS's packages; `None` when Berth has no
/// vulnerability source for it (the scan is UNSUPPORTED_IMAGE).
pub fn ecosystem(os: &Os) -> Option<String> {
    let _ = os;
    unimplemented!("os::ecosystem")
}
