//! Python: core metadata (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`,
//! `*.egg-info` files, `EGG-INFO/PKG-INFO`, zipped `*.egg`) — the `Name` and
//! `Version` headers of an RFC 822 style header block — and PEP 503 name
//! normalisation.

use super::{LangError, java, package};
use crate::{Package, PackageKind};

/// PEP 503 normalisation: lowercase, every run of `-`, `_`, `.` becomes one
/// `-` (`Foo.Bar__baz` → `foo-bar-baz`). OSV's PyPI names compare this way.
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// `Name` and `Version` from a metadata header block (first occurrence of
/// each, header names case-insensitive, the block ends at the first blank
/// line; continuation lines are ignored, as neither field uses them).
fn name_version(text: &str) -> (Option<&str>, Option<&str>) {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("name") && name.is_none() {
            name = Some(value);
        } else if key.eq_ignore_ascii_case("version") && version.is_none() {
            version = Some(value);
        }
        if name.is_some() && version.is_some() {
            break;
        }
    }
    (name, version)
}

/// One metadata file: one package.
pub(super) fn parse_metadata(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let text = String::from_utf8_lossy(bytes);
    match name_version(&text) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
            Ok(vec![package(PackageKind::Python, n, v, path)])
        }
        _ => Err(LangError::malformed(path, "no Name and Version headers")),
    }
}

/// A zipped egg: its `EGG-INFO/PKG-INFO`.
pub(super) fn parse_egg(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let mut zip = java::open_zip(path, bytes)?;
    let mut budget = java::Budget::default();
    match java::read_entry(path, &mut zip, "EGG-INFO/PKG-INFO", &mut budget)? {
        Some(info) => parse_metadata(path, &info),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep503() {
        assert_eq!(normalize_pypi("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(normalize_pypi("zope.interface"), "zope-interface");
        assert_eq!(normalize_pypi("PyYAML"), "pyyaml");
        assert_eq!(normalize_pypi("a-_-.b"), "a-b");
        assert_eq!(normalize_pypi(" six "), "six");
    }

    #[test]
    fn metadata_headers() {
        let m = b"Metadata-Version: 2.1\r\nName: Foo_Bar\r\nVersion: 1.2.3\r\nSummary: x\r\n\r\nName: body\n";
        let p = parse_metadata("a/foo.dist-info/METADATA", m).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "Foo_Bar");
        assert_eq!(p[0].version, "1.2.3");
        assert_eq!(p[0].kind, PackageKind::Python);
        assert_eq!(p[0].path, "a/foo.dist-info/METADATA");
        // Lowercase keys, continuation lines, first occurrence wins.
        let m = b"name: x\n  continued: y\nversion: 0.1\nVersion: 9\n";
        let p = parse_metadata("x.egg-info", m).unwrap();
        assert_eq!((p[0].name.as_str(), p[0].version.as_str()), ("x", "0.1"));
    }

    #[test]
    fn metadata_without_fields_is_an_error() {
        assert!(parse_metadata("x.egg-info", b"Name: x\n").is_err());
        assert!(parse_metadata("x.egg-info", b"\nName: x\nVersion: 1\n").is_err());
        assert!(parse_metadata("x.egg-info", b"Name:\nVersion: 1\n").is_err());
        assert!(parse_metadata("x.egg-info", &[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn fixtures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lang/python");
        let meta = std::fs::read(format!("{dir}/METADATA")).unwrap();
        let p = parse_metadata("requests-2.31.0.dist-info/METADATA", &meta).unwrap();
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("requests", "2.31.0")
        );
        let egg = std::fs::read(format!("{dir}/demo-0.4-py3.11.egg")).unwrap();
        let p = parse_egg("x/demo-0.4-py3.11.egg", &egg).unwrap();
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("demo.pkg", "0.4")
        );
        assert!(parse_egg("x.egg", b"not a zip").is_err());
    }
}
