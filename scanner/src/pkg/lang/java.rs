//! Java archives (`*.jar`, `*.war`, `*.ear`, `*.par`), read in memory:
//! every `META-INF/maven/<g>/<a>/pom.properties` (→ `group:artifact`),
//! nested archives (`WEB-INF/lib`, `BOOT-INF/lib`, …) recursively, and, when
//! no `pom.properties` describes the archive itself, its `MANIFEST.MF` — the
//! rules of Trivy's jar parser in offline mode (no SHA-1 → GAV index, so no
//! artifact is guessed from a bare file name). Zip bombs are bounded: a cap
//! on the bytes inflated per entry and per top-level archive, and on depth.
//!
//! Also the zip helpers the Python egg parser uses.

use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::{LangError, base_name, is_java_archive, package};
use crate::{Package, PackageKind};

/// Bytes inflated from one small text entry (`pom.properties`, a manifest).
const MAX_TEXT_ENTRY: u64 = 1 << 20;
/// Bytes inflated from one nested archive.
const MAX_NESTED_ARCHIVE: u64 = 128 << 20;
/// Bytes inflated from everything inside one top-level archive.
const MAX_TOTAL: u64 = 512 << 20;
/// How deep archives nest (the top-level archive is depth 0).
const MAX_DEPTH: u32 = 4;
/// Entries looked at across one top-level archive and its nested ones.
const MAX_ENTRIES: u64 = 1_000_000;

/// What one top-level archive may still inflate.
pub(super) struct Budget {
    bytes: u64,
    entries: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            bytes: MAX_TOTAL,
            entries: MAX_ENTRIES,
        }
    }
}

pub(super) type Zip<'a> = ZipArchive<Cursor<&'a [u8]>>;

pub(super) fn open_zip<'a>(path: &str, bytes: &'a [u8]) -> Result<Zip<'a>, LangError> {
    ZipArchive::new(Cursor::new(bytes)).map_err(|e| LangError::malformed(path, e))
}

/// Reads entry `index` whole, up to `cap` bytes and the budget; `None` when
/// the entry cannot be read (unsupported method, encrypted, corrupt): one
/// bad entry does not hide the rest of the archive.
fn read_index(
    path: &str,
    zip: &mut Zip<'_>,
    index: usize,
    cap: u64,
    budget: &mut Budget,
) -> Result<Option<Vec<u8>>, LangError> {
    let Ok(file) = zip.by_index(index) else {
        return Ok(None);
    };
    let cap = cap.min(budget.bytes);
    let mut out = Vec::new();
    let read = file.take(cap + 1).read_to_end(&mut out);
    if read.is_err() {
        return Ok(None);
    }
    let n = out.len() as u64;
    if n > cap {
        return Err(LangError::limit(
            path,
            format!("an archive entry inflates past {cap} bytes"),
        ));
    }
    budget.bytes -= n;
    Ok(Some(out))
}

/// Reads the entry named `name`, if there is one.
pub(super) fn read_entry(
    path: &str,
    zip: &mut Zip<'_>,
    name: &str,
    budget: &mut Budget,
) -> Result<Option<Vec<u8>>, LangError> {
    match zip.index_for_name(name) {
        Some(i) => read_index(path, zip, i, MAX_TEXT_ENTRY, budget),
        None => Ok(None),
    }
}

/// A top-level Java archive.
pub(super) fn parse_archive(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let mut budget = Budget::default();
    let mut out = Vec::new();
    parse_nested(path, base_name(path), bytes, 0, &mut budget, &mut out)?;
    // One archive may state the same artifact twice (pom.properties and
    // a nested copy); report it once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert((p.name.clone(), p.version.clone())));
    Ok(out)
}

/// One archive, `file_name` being its own name (for the file-name check).
fn parse_nested(
    path: &str,
    file_name: &str,
    bytes: &[u8],
    depth: u32,
    budget: &mut Budget,
    out: &mut Vec<Package>,
) -> Result<(), LangError> {
    let mut zip = match open_zip(path, bytes) {
        Ok(z) => z,
        // A nested entry named *.jar that is not a zip is skipped; the
        // top-level file failing to open is an error.
        Err(e) if depth == 0 => return Err(e),
        Err(_) => return Ok(()),
    };
    let (file_artifact, file_version) = split_file_name(file_name);
    let mut describes_itself = false;
    let mut manifest = None;
    for i in 0..zip.len() {
        if budget.entries == 0 {
            return Err(LangError::limit(path, "too many archive entries"));
        }
        budget.entries -= 1;
        let Some(Ok(name)) = zip.name_for_index(i).map(|s| s.map(|n| n.into_owned())) else {
            continue;
        };
        if is_pom_properties(&name) {
            let Some(text) = read_index(path, &mut zip, i, MAX_TEXT_ENTRY, budget)? else {
                continue;
            };
            if let Some((g, a, v)) = pom_properties(&String::from_utf8_lossy(&text)) {
                if a == file_artifact && v == file_version {
                    describes_itself = true;
                }
                out.push(package(PackageKind::Maven, &format!("{g}:{a}"), &v, path));
            }
        } else if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
            if let Some(text) = read_index(path, &mut zip, i, MAX_TEXT_ENTRY, budget)? {
                manifest = Some(text);
            }
        } else if is_java_archive(&name) && depth < MAX_DEPTH {
            let Some(inner) = read_index(path, &mut zip, i, MAX_NESTED_ARCHIVE, budget)? else {
                continue;
            };
            parse_nested(path, base_name(&name), &inner, depth + 1, budget, out)?;
        }
    }
    if !describes_itself
        && let Some(text) = manifest
        && let Some((g, a, v)) = manifest_gav(&String::from_utf8_lossy(&text))
    {
        out.push(package(PackageKind::Maven, &format!("{g}:{a}"), &v, path));
    }
    Ok(())
}

/// `META-INF/maven/<group>/<artifact>/pom.properties`.
fn is_pom_properties(name: &str) -> bool {
    name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties")
}

/// `artifact-1.2.3.jar` → (`artifact`, `1.2.3`): the version starts at the
/// last `-` followed by a digit; empty strings when there is none.
fn split_file_name(file_name: &str) -> (&str, &str) {
    let stem = match file_name.rfind('.') {
        Some(i) => &file_name[..i],
        None => file_name,
    };
    let b = stem.as_bytes();
    for i in (2..b.len()).rev() {
        if b[i - 1] == b'-' && b[i].is_ascii_digit() {
            return (&stem[..i - 1], &stem[i..]);
        }
    }
    (stem, "")
}

/// Java properties (`key=value`, `key: value`, `#`/`!` comments; escapes
/// and continuation lines are not used by Maven's generated files).
fn pom_properties(text: &str) -> Option<(String, String, String)> {
    let (mut g, mut a, mut v) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(sep) = line.find(['=', ':']) else {
            continue;
        };
        let key = line[..sep].trim();
        let value = line[sep + 1..].trim().to_string();
        match key {
            "groupId" => g = Some(value),
            "artifactId" => a = Some(value),
            "version" => v = Some(value),
            _ => {}
        }
    }
    match (g, a, v) {
        (Some(g), Some(a), Some(v)) if !g.is_empty() && !a.is_empty() && !v.is_empty() => {
            Some((g, a, v))
        }
        _ => None,
    }
}

/// The main section of a manifest, continuation lines joined.
fn manifest_main(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix(' ') {
            if let Some(last) = out.last_mut() {
                last.1.push_str(rest);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Group, artifact and version from a manifest, with Trivy's precedence:
/// group from `Implementation-Vendor-Id`, else `Bundle-SymbolicName` less
/// its last dot-segment, else `Implementation-Vendor`, else
/// `Specification-Vendor`; artifact from `Implementation-Title`, else
/// `Specification-Title`, else `Bundle-Name`; version from
/// `Implementation-Version`, else `Specification-Version`, else
/// `Bundle-Version`. All three must be found.
fn manifest_gav(text: &str) -> Option<(String, String, String)> {
    let main = manifest_main(text);
    let get = |key: &str| {
        main.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let group = get("Implementation-Vendor-Id")
        .map(str::to_string)
        .or_else(|| {
            get("Bundle-SymbolicName").map(|s| {
                // `name;singleton:=true` → `name`, then drop the last segment.
                let s = s.split(';').next().unwrap_or(s).trim();
                match s.rfind('.') {
                    Some(i) if i > 0 => s[..i].to_string(),
                    _ => s.to_string(),
                }
            })
        })
        .or_else(|| get("Implementation-Vendor").map(str::to_string))
        .or_else(|| get("Specification-Vendor").map(str::to_string))?;
    let artifact = get("Implementation-Title")
        .or_else(|| get("Specification-Title"))
        .or_else(|| get("Bundle-Name"))?;
    let version = get("Implementation-Version")
        .or_else(|| get("Specification-Version"))
        .or_else(|| get("Bundle-Version"))?;
    Some((group, artifact.to_string(), version.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    /// A zip of `(name, bytes)` entries, deflated.
    pub(crate) fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn names(p: &[Package]) -> Vec<String> {
        let mut v: Vec<String> = p.iter().map(|p| format!("{}@{}", p.name, p.version)).collect();
        v.sort();
        v
    }

    const POM: &[u8] = b"#Generated by Maven\nartifactId=commons-io\ngroupId=commons-io\nversion=2.11.0\n";

    #[test]
    fn pom_properties_wins_over_manifest() {
        let jar = make_zip(&[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nImplementation-Vendor-Id: other\r\nImplementation-Title: other\r\nImplementation-Version: 9\r\n"),
            ("META-INF/maven/commons-io/commons-io/pom.properties", POM),
        ]);
        let p = parse_archive("usr/share/java/commons-io-2.11.0.jar", &jar).unwrap();
        assert_eq!(names(&p), ["commons-io:commons-io@2.11.0"]);
        assert_eq!(p[0].kind, PackageKind::Maven);
        assert_eq!(p[0].path, "usr/share/java/commons-io-2.11.0.jar");
        // The file name does not say it is this artifact: the manifest
        // counts too (Trivy's rule).
        let p = parse_archive("usr/share/java/commons-io.jar", &jar).unwrap();
        assert_eq!(names(&p), ["commons-io:commons-io@2.11.0", "other:other@9"]);
    }

    #[test]
    fn manifest_precedence_and_continuations() {
        let m = "Manifest-Version: 1.0\nBundle-SymbolicName: org.apache.commons.lan\n g3;singleton:=true\nBundle-Name: Apache Commons Lang\nBundle-Version: 3.12.0\nSpecification-Title: spec\n\nName: x\nImplementation-Title: per-entry\n";
        assert_eq!(
            manifest_gav(m),
            Some(("org.apache.commons".into(), "spec".into(), "3.12.0".into()))
        );
        assert_eq!(manifest_gav("Implementation-Title: a\nImplementation-Version: 1\n"), None);
    }

    #[test]
    fn nested_archives() {
        let inner = make_zip(&[("META-INF/maven/org.x/lib/pom.properties", b"groupId=org.x\nartifactId=lib\nversion=1.0\n")]);
        let inner2 = make_zip(&[("META-INF/maven/org.y/deep/pom.properties", b"groupId=org.y\nartifactId=deep\nversion=2\n")]);
        let mid = make_zip(&[("lib/deep-2.jar", &inner2)]);
        let war = make_zip(&[
            ("WEB-INF/lib/lib-1.0.jar", &inner),
            ("WEB-INF/lib/mid.jar", &mid),
            ("WEB-INF/lib/broken.jar", b"not a zip"),
        ]);
        let p = parse_archive("app.war", &war).unwrap();
        assert_eq!(names(&p), ["org.x:lib@1.0", "org.y:deep@2"]);
        assert!(p.iter().all(|p| p.path == "app.war"));
    }

    #[test]
    fn depth_is_capped() {
        let mut jar = make_zip(&[("META-INF/maven/g/a/pom.properties", b"groupId=g\nartifactId=a\nversion=1\n")]);
        for _ in 0..(MAX_DEPTH + 2) {
            jar = make_zip(&[("x.jar", &jar)]);
        }
        assert_eq!(parse_archive("top.jar", &jar).unwrap(), vec![]);
    }

    #[test]
    fn zip_bomb_is_a_limit_error() {
        let big = vec![0u8; (MAX_TEXT_ENTRY + 10) as usize];
        let jar = make_zip(&[("META-INF/MANIFEST.MF", &big)]);
        assert!(jar.len() < 10_000);
        let e = parse_archive("bomb.jar", &jar).unwrap_err();
        assert!(matches!(e, LangError::Limit { .. }), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_archive("x.jar", b"PK\x03\x04 truncated").is_err());
        assert!(parse_archive("x.jar", b"").is_err());
    }

    #[test]
    fn file_names() {
        assert_eq!(split_file_name("commons-cli-1.5.0.jar"), ("commons-cli", "1.5.0"));
        assert_eq!(split_file_name("guava.jar"), ("guava", ""));
        assert_eq!(split_file_name("guava-31.1-jre.jar"), ("guava", "31.1-jre"));
        assert_eq!(split_file_name("-1.jar"), ("-1", ""));
    }

    #[test]
    fn properties() {
        assert_eq!(pom_properties("groupId = g\nartifactId: a\n# version=0\nversion=1\n"), Some(("g".into(), "a".into(), "1".into())));
        assert_eq!(pom_properties("groupId=g\nartifactId=a\n"), None);
    }
}
