//! Java archives (`*.jar`, `*.war`, `*.ear`, `*.par`), read in memory:
//! every `pom.properties` (`META-INF/maven/<g>/<a>/`; → `group:artifact`)
//! and nested archives (`WEB-INF/lib`, `BOOT-INF/lib`, …) recursively, their
//! packages at the nested path (`app.war/WEB-INF/lib/x-1.0.jar`), as Trivy.
//!
//! Trivy resolves an archive without a `pom.properties` of its own through
//! its Java DB (a SHA-1 → GAV index, ~1 GB): a `MANIFEST.MF` group/artifact
//! only counts if the index knows it, else the SHA-1, else the file name's
//! artifact. Without that index we report neither: unverified manifest
//! values (`commons-io:Apache Commons IO`) are noise no advisory matches —
//! measured on Debian's jars, where Trivy with an empty index reports
//! exactly the `pom.properties` artifacts, as we do. Zip bombs are bounded:
//! a cap on the bytes inflated per entry and per top-level archive, and on
//! depth.
//!
//! Also the zip helpers the Python egg parser uses.

use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::{LangError, base_name, package};
use crate::{Package, PackageKind};

/// Bytes inflated from one small text entry (`pom.properties`, `PKG-INFO`).
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
    parse_nested(path, bytes, 0, &mut budget, &mut out)?;
    // One archive may state the same artifact twice at one path (two
    // pom.properties copies); report it once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert((p.name.clone(), p.version.clone(), p.path.clone())));
    Ok(out)
}

/// One archive and the archives nested in it.
fn parse_nested(
    path: &str,
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
    for i in 0..zip.len() {
        if budget.entries == 0 {
            return Err(LangError::limit(path, "too many archive entries"));
        }
        budget.entries -= 1;
        let Some(Ok(name)) = zip.name_for_index(i).map(|s| s.map(|n| n.into_owned())) else {
            continue;
        };
        if base_name(&name) == "pom.properties" {
            let Some(text) = read_index(path, &mut zip, i, MAX_TEXT_ENTRY, budget)? else {
                continue;
            };
            if let Some((g, a, v)) = pom_properties(&String::from_utf8_lossy(&text)) {
                out.push(package(PackageKind::Maven, &format!("{g}:{a}"), &v, path));
            }
        } else if is_nested_archive(&name) && depth < MAX_DEPTH {
            // Packages of a nested archive are reported at its path inside
            // this one (`app.war/WEB-INF/lib/x.jar`), as Trivy does; an
            // entry name climbing out (`../x.jar`) is skipped.
            let Some(inner_path) = join_entry(path, &name) else {
                continue;
            };
            let Some(inner) = read_index(path, &mut zip, i, MAX_NESTED_ARCHIVE, budget)? else {
                continue;
            };
            parse_nested(&inner_path, &inner, depth + 1, budget, out)?;
        }
    }
    Ok(())
}

/// `outer/entry`, the entry's `.` and empty segments dropped; `None` when
/// it has a `..` segment.
fn join_entry(outer: &str, entry: &str) -> Option<String> {
    let mut out = outer.to_string();
    for seg in entry.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    Some(out)
}

/// Archives Trivy looks into inside an archive (not `.par`).
fn is_nested_archive(name: &str) -> bool {
    name.ends_with(".jar") || name.ends_with(".war") || name.ends_with(".ear")
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
        let mut v: Vec<String> = p
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        v.sort();
        v
    }

    const POM: &[u8] =
        b"#Generated by Maven\nartifactId=commons-io\ngroupId=commons-io\nversion=2.11.0\n";

    #[test]
    fn pom_properties_not_manifests() {
        let jar = make_zip(&[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nImplementation-Vendor-Id: other\r\nImplementation-Title: other\r\nImplementation-Version: 9\r\n"),
            ("META-INF/maven/commons-io/commons-io/pom.properties", POM),
            ("META-INF/maven/x/incomplete/pom.properties", b"groupId=x\nartifactId=incomplete\n"),
        ]);
        let p = parse_archive("usr/share/java/commons-io.jar", &jar).unwrap();
        assert_eq!(names(&p), ["commons-io:commons-io@2.11.0"]);
        assert_eq!(p[0].kind, PackageKind::Maven);
        assert_eq!(p[0].path, "usr/share/java/commons-io.jar");
        // A manifest alone names nothing (no SHA-1 index to confirm it).
        let jar = make_zip(&[(
            "META-INF/MANIFEST.MF",
            b"Implementation-Vendor-Id: g\nImplementation-Title: a\nImplementation-Version: 1\n",
        )]);
        assert_eq!(parse_archive("a-1.jar", &jar).unwrap(), vec![]);
    }

    #[test]
    fn nested_archives() {
        let inner = make_zip(&[(
            "META-INF/maven/org.x/lib/pom.properties",
            b"groupId=org.x\nartifactId=lib\nversion=1.0\n",
        )]);
        let inner2 = make_zip(&[(
            "META-INF/maven/org.y/deep/pom.properties",
            b"groupId=org.y\nartifactId=deep\nversion=2\n",
        )]);
        let mid = make_zip(&[("lib/deep-2.jar", &inner2)]);
        let war = make_zip(&[
            ("WEB-INF/lib/lib-1.0.jar", &inner),
            ("WEB-INF/lib/mid.jar", &mid),
            ("WEB-INF/lib/broken.jar", b"not a zip"),
        ]);
        let p = parse_archive("app.war", &war).unwrap();
        assert_eq!(names(&p), ["org.x:lib@1.0", "org.y:deep@2"]);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "app.war/WEB-INF/lib/lib-1.0.jar",
                "app.war/WEB-INF/lib/mid.jar/lib/deep-2.jar"
            ]
        );
        let evil = make_zip(&[("../../lib-1.0.jar", &inner)]);
        assert_eq!(parse_archive("app.war", &evil).unwrap(), vec![]);
        assert_eq!(
            join_entry("a.war", "./x//y.jar").as_deref(),
            Some("a.war/x/y.jar")
        );
    }

    #[test]
    fn depth_is_capped() {
        let mut jar = make_zip(&[(
            "META-INF/maven/g/a/pom.properties",
            b"groupId=g\nartifactId=a\nversion=1\n",
        )]);
        for _ in 0..(MAX_DEPTH + 2) {
            jar = make_zip(&[("x.jar", &jar)]);
        }
        assert_eq!(parse_archive("top.jar", &jar).unwrap(), vec![]);
    }

    #[test]
    fn zip_bomb_is_a_limit_error() {
        let big = vec![0u8; (MAX_TEXT_ENTRY + 10) as usize];
        let jar = make_zip(&[("META-INF/maven/g/a/pom.properties", &big)]);
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
    fn properties() {
        assert_eq!(
            pom_properties("groupId = g\nartifactId: a\n# version=0\nversion=1\n"),
            Some(("g".into(), "a".into(), "1".into()))
        );
        assert_eq!(pom_properties("groupId=g\nartifactId=a\n"), None);
    }
}
