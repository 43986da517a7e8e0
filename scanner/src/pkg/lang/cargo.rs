//! Rust: `Cargo.lock` (every `[[package]]`, as Trivy reports a lock file it
//! sees without its `Cargo.toml`) and binaries built with cargo-auditable
//! (section `.dep-v0`: zlib-compressed JSON listing the crates compiled in;
//! build-time-only crates are skipped, as Trivy does).

use std::io::Read;

use object::{Object, ObjectSection};
use serde::Deserialize;

use super::{LangError, package};
use crate::{Package, PackageKind};

/// Bytes inflated from one `.dep-v0` section (cargo-auditable's own limit
/// is 8 MiB).
const MAX_AUDIT_JSON: u64 = 8 << 20;

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
}

pub(super) fn parse_cargo_lock(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let text = std::str::from_utf8(bytes).map_err(|e| LangError::malformed(path, e))?;
    let lock: Lock = toml::from_str(text).map_err(|e| LangError::malformed(path, e))?;
    let mut out: Vec<Package> = lock
        .package
        .into_iter()
        .filter(|p| !p.name.is_empty() && !p.version.is_empty())
        .map(|p| package(PackageKind::Cargo, &p.name, &p.version, path))
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok(out)
}

#[derive(Deserialize)]
struct Audit {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The crates a cargo-auditable binary lists (none without the section).
pub(super) fn parse_auditable(
    path: &str,
    file: &object::File<'_>,
) -> Result<Vec<Package>, LangError> {
    // ELF and PE name it `.dep-v0`; Mach-O `__dep_v0` (in `__DATA`).
    let Some(section) = file
        .section_by_name(".dep-v0")
        .or_else(|| file.section_by_name("__dep_v0"))
    else {
        return Ok(Vec::new());
    };
    let compressed = section
        .data()
        .map_err(|e| LangError::malformed(path, format!(".dep-v0: {e}")))?;
    parse_audit_data(path, compressed)
}

fn parse_audit_data(path: &str, compressed: &[u8]) -> Result<Vec<Package>, LangError> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_AUDIT_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|e| LangError::malformed(path, format!(".dep-v0: {e}")))?;
    if json.len() as u64 > MAX_AUDIT_JSON {
        return Err(LangError::limit(path, ".dep-v0 inflates past 8 MiB"));
    }
    let audit: Audit = serde_json::from_slice(&json)
        .map_err(|e| LangError::malformed(path, format!(".dep-v0: {e}")))?;
    let mut out: Vec<Package> = audit
        .packages
        .into_iter()
        // `kind` is absent for runtime crates; `build` ones are only
        // compiled into build scripts, `dev` into tests.
        .filter(|p| p.kind.as_deref().is_none_or(|k| k == "runtime"))
        .filter(|p| !p.name.is_empty() && !p.version.is_empty())
        .map(|p| package(PackageKind::Cargo, &p.name, &p.version, path))
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) const AUDIT_JSON: &str = r#"{"packages":[
        {"name":"hello","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},
        {"name":"serde","version":"1.0.190","source":"crates.io"},
        {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"},
        {"name":"libc","version":"0.2.149","source":"crates.io","kind":"runtime"}
    ]}"#;

    fn nv(p: &[Package]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    #[test]
    fn this_repository_lock_file() {
        let lock = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let p = parse_cargo_lock("src/Cargo.lock", &lock).unwrap();
        // The workspace's own lock file, cross-checked by counting tables.
        let text = String::from_utf8(lock).unwrap();
        assert_eq!(p.len(), text.matches("[[package]]").count());
        assert!(p.iter().any(|p| p.name == "serde_json"));
        assert!(
            p.iter()
                .any(|p| p.name == "berth" && p.path == "src/Cargo.lock")
        );
        assert!(p.iter().all(|p| p.kind == PackageKind::Cargo));
    }

    #[test]
    fn lock_errors() {
        assert!(parse_cargo_lock("Cargo.lock", b"[[package]]\nname = 1\n").is_err());
        assert!(parse_cargo_lock("Cargo.lock", b"not = [toml").is_err());
        assert!(parse_cargo_lock("Cargo.lock", &[0xff, 0xfe]).is_err());
        assert_eq!(
            parse_cargo_lock("Cargo.lock", b"version = 3\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn audit_data() {
        let p = parse_audit_data("usr/bin/hello", &zlib(AUDIT_JSON.as_bytes())).unwrap();
        assert_eq!(nv(&p), ["hello@0.1.0", "libc@0.2.149", "serde@1.0.190"]);
        assert!(parse_audit_data("a", b"not zlib").is_err());
        assert!(parse_audit_data("a", &zlib(b"{\"packages\":3}")).is_err());
        // A bomb: 9 MiB of spaces compress to a few KiB.
        let bomb = zlib(&vec![b' '; 9 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            parse_audit_data("a", &bomb),
            Err(LangError::Limit { .. })
        ));
    }
}
