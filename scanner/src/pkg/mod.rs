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
    if dpkg::is_db(path) || apk::is_db(path) || rpm::is_db(path) {
        Want::Metadata
    } else {
        lang::wants(path, mode)
    }
}

/// Whether `path` is an OS package database (whose parse failure fails the
/// layer, where a language file's is skipped).
pub(crate) fn is_os_db(path: &str) -> bool {
    dpkg::is_db(path) || apk::is_db(path) || rpm::is_db(path)
}

/// Parses one kept file; an `Err` is a file that should have parsed and did
/// not (the text says why).
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    if dpkg::is_db(path) {
        dpkg::parse(path, bytes)
    } else if apk::is_db(path) {
        apk::parse(path, bytes)
    } else if rpm::is_db(path) {
        rpm::parse(path, bytes)
    } else {
        lang::parse(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_paths_dispatch() {
        for path in [
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/libc6",
            "lib/apk/db/installed",
            "usr/lib/apk/db/installed",
            "var/lib/rpm/rpmdb.sqlite",
            "usr/lib/sysimage/rpm/rpmdb.sqlite",
            "usr/share/rpm/rpmdb.sqlite",
            "var/lib/rpm/Packages",
            "usr/lib/sysimage/rpm/Packages",
        ] {
            assert_eq!(wants(path, 0o644), Want::Metadata, "{path}");
            assert!(is_os_db(path));
        }
        for path in [
            "var/lib/dpkg/status-old",
            "var/lib/dpkg/status.d/libc6.md5sums",
            "var/lib/dpkg/info/libc6.list",
            "etc/os-release",
        ] {
            assert!(!is_os_db(path), "{path}");
        }
        let p = parse("lib/apk/db/installed", b"P:a\nV:1-r0\n").unwrap();
        assert_eq!(p[0].kind, crate::PackageKind::Apk);
        let p = parse(
            "var/lib/dpkg/status",
            b"Package: a\nVersion: 1\nStatus: install ok installed\n",
        )
        .unwrap();
        assert_eq!(p[0].kind, crate::PackageKind::Dpkg);
        assert!(parse("var/lib/rpm/rpmdb.sqlite", b"junk").is_err());
    }
}
