//! Language packages (ECR's ENHANCED scanning): Python, npm, Go, Rust,
//! Java, Ruby. [`wants`] and [`parse`] have the same contract as
//! [`crate::pkg::wants`] / [`crate::pkg::parse`], for language paths only.
//!
//! What is read mirrors Trivy's image ("post-build") analyzers, the parity
//! reference: installed metadata (`*.dist-info/METADATA`, `*.egg-info`,
//! `package.json`, `specifications/*.gemspec`), `Cargo.lock`, Java
//! archives, and executables (Go build info, cargo-auditable). One
//! deliberate addition: npm's `package-lock.json` (the issue asks for lock
//! files; Trivy reads it only in repository scans).
//!
//! Each ecosystem is a submodule; this one only dispatches.

mod cargo;
mod golang;
mod java;
mod npm;
mod python;
mod ruby;

pub use python::normalize_pypi;

use crate::Package;
use crate::pkg::Want;

/// Why a kept language file did not parse.
#[derive(Debug, thiserror::Error)]
pub enum LangError {
    #[error("{path}: {msg}")]
    Malformed { path: String, msg: String },
    #[error("{path}: exceeds a limit: {msg}")]
    Limit { path: String, msg: String },
}

impl LangError {
    fn malformed(path: &str, msg: impl std::fmt::Display) -> Self {
        LangError::Malformed {
            path: path.to_string(),
            msg: msg.to_string(),
        }
    }
    fn limit(path: &str, msg: impl std::fmt::Display) -> Self {
        LangError::Limit {
            path: path.to_string(),
            msg: msg.to_string(),
        }
    }
}

/// The last path segment.
fn base_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Whether `s` ends with `suffix`, ASCII case-insensitively.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Java archive extensions Trivy's jar analyzer reads.
fn is_java_archive(path: &str) -> bool {
    [".jar", ".war", ".ear", ".par"]
        .iter()
        .any(|ext| ends_with_ignore_case(path, ext))
}

/// Whether `path` has a directory segment equal to `segment`.
fn has_dir_segment(path: &str, segment: &str) -> bool {
    path.split('/').rev().skip(1).any(|s| s == segment)
}

/// Whether the walker keeps `path` for a language parser. Cheap: suffix and
/// segment comparisons only, no allocation.
pub fn wants(path: &str, mode: u32) -> Want {
    let base = base_name(path);
    // Python (wheels, eggs, egg-info files and directories).
    if path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
        || path.ends_with("EGG-INFO/PKG-INFO")
        || path.ends_with(".egg-info")
    {
        return Want::Metadata;
    }
    if path.ends_with(".egg") {
        return Want::Binary;
    }
    // npm: every package.json (Trivy's node-pkg analyzer keeps those with a
    // name and a version, inside node_modules or not); lock files outside
    // node_modules (`node_modules/.package-lock.json` repeats the tree).
    if base == "package.json" {
        return Want::Metadata;
    }
    if base == "package-lock.json" && !has_dir_segment(path, "node_modules") {
        return Want::Metadata;
    }
    if base == "Cargo.lock" {
        return Want::Metadata;
    }
    if base.ends_with(".gemspec") && has_dir_segment(path, "specifications") {
        return Want::Metadata;
    }
    if is_java_archive(base) {
        return Want::Binary;
    }
    // Any executable may be a Go binary or a cargo-auditable one.
    if mode & 0o111 != 0 {
        return Want::Binary;
    }
    Want::No
}

/// Parses one kept language file. Executables that are not Go or
/// cargo-auditable binaries (scripts, C programs) give no packages.
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    parse_typed(path, bytes).map_err(|e| e.to_string())
}

fn parse_typed(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let base = base_name(path);
    if path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
        || path.ends_with("EGG-INFO/PKG-INFO")
        || path.ends_with(".egg-info")
    {
        return python::parse_metadata(path, bytes);
    }
    if path.ends_with(".egg") {
        return python::parse_egg(path, bytes);
    }
    if base == "package.json" {
        return npm::parse_package_json(path, bytes);
    }
    if base == "package-lock.json" {
        return npm::parse_package_lock(path, bytes);
    }
    if base == "Cargo.lock" {
        return cargo::parse_cargo_lock(path, bytes);
    }
    if base.ends_with(".gemspec") {
        return ruby::parse_gemspec(path, bytes);
    }
    if is_java_archive(base) {
        return java::parse_archive(path, bytes);
    }
    parse_executable(path, bytes)
}

/// An executable: Go build info and/or a cargo-auditable section.
fn parse_executable(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    // Cheap magic check before handing the bytes to an object parser.
    let is_object = bytes.starts_with(b"\x7fELF")
        || bytes.starts_with(b"MZ")
        || bytes.starts_with(&[0xcf, 0xfa, 0xed, 0xfe])
        || bytes.starts_with(&[0xce, 0xfa, 0xed, 0xfe])
        || bytes.starts_with(&[0xfe, 0xed, 0xfa, 0xcf])
        || bytes.starts_with(&[0xfe, 0xed, 0xfa, 0xce]);
    if !is_object {
        return Ok(Vec::new());
    }
    let Ok(file) = object::File::parse(bytes) else {
        // Looked like an object file but is not one: nothing to report.
        return Ok(Vec::new());
    };
    let mut out = golang::parse_binary(path, bytes, &file)?;
    out.extend(cargo::parse_auditable(path, &file)?);
    Ok(out)
}

/// A language package found at `path`.
fn package(kind: crate::PackageKind, name: &str, version: &str, path: &str) -> Package {
    Package {
        kind,
        name: name.to_string(),
        version: version.to_string(),
        source_name: None,
        source_version: None,
        arch: None,
        path: path.to_string(),
        layer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_language_files() {
        let meta = [
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            "usr/lib/python3/dist-packages/foo.egg-info/PKG-INFO",
            "usr/lib/python3/dist-packages/foo-1.0.egg-info",
            "site-packages/foo.egg/EGG-INFO/PKG-INFO",
            "usr/lib/node_modules/npm/package.json",
            "app/package.json",
            "app/package-lock.json",
            "src/app/Cargo.lock",
            "usr/lib/ruby/gems/3.1.0/specifications/rake-13.0.6.gemspec",
            "usr/local/bundle/specifications/default/json-2.6.1.gemspec",
        ];
        for p in meta {
            assert_eq!(wants(p, 0o644), Want::Metadata, "{p}");
        }
        let bin = [
            "opt/app/lib/guava-31.1.jar",
            "opt/app.WAR",
            "x/app.ear",
            "x/app.par",
            "site-packages/foo-1.0-py3.11.egg",
        ];
        for p in bin {
            assert_eq!(wants(p, 0o644), Want::Binary, "{p}");
        }
        assert_eq!(wants("usr/bin/docker", 0o755), Want::Binary);
        let no = [
            "usr/share/doc/foo/copyright",
            "app/node_modules/.package-lock.json",
            "app/node_modules/x/package-lock.json",
            "usr/lib/ruby/foo.gemspec",
            "x/METADATA",
            "x.dist-info/RECORD",
            "",
        ];
        for p in no {
            assert_eq!(wants(p, 0o644), Want::No, "{p}");
        }
    }

    #[test]
    fn non_object_executables_give_nothing() {
        assert_eq!(parse("usr/bin/script", b"#!/bin/sh\necho hi\n"), Ok(vec![]));
        assert_eq!(parse("usr/bin/empty", b""), Ok(vec![]));
        // ELF magic, garbage after it.
        assert_eq!(
            parse("usr/bin/bad", b"\x7fELF\x02\x01\x01garbage"),
            Ok(vec![])
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use object::write::{Object, StandardSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};

    /// A relocatable x86-64 ELF holding `sections` (name, contents).
    pub(crate) fn elf_with_sections(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3], 1);
        for (name, data) in sections {
            let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Data);
            obj.append_section_data(id, data, 16);
        }
        obj.write().unwrap()
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// A deterministic byte soup (xorshift).
    fn soup(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let paths = [
            "a.dist-info/METADATA",
            "a.egg-info",
            "a.egg",
            "node_modules/a/package.json",
            "package-lock.json",
            "Cargo.lock",
            "specifications/a.gemspec",
            "a.jar",
            "usr/bin/a",
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lang");
        let mut inputs: Vec<Vec<u8>> = (0..64).map(|s| soup(s, (s as usize) * 37)).collect();
        for f in [
            "python/METADATA",
            "python/demo-0.4-py3.11.egg",
            "npm/package-lock-v3.json",
            "ruby/rake-13.0.6.gemspec",
        ] {
            let b = std::fs::read(format!("{dir}/{f}")).unwrap();
            for cut in (0..b.len()).step_by(7) {
                inputs.push(b[..cut].to_vec());
            }
        }
        // ELF-looking soups reach the object parser.
        for s in 0..64 {
            let mut b = b"\x7fELF\x02\x01\x01\x00".to_vec();
            b.extend(soup(s, 256));
            inputs.push(b);
        }
        for p in paths {
            for i in &inputs {
                let _ = parse(p, i);
            }
        }
    }
}
