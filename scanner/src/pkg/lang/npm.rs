//! npm: installed `package.json` files (name and version; files without
//! both are skipped, as Trivy does) and `package-lock.json` (lockfile v1's
//! nested `dependencies`, v2/v3's `packages` map; dev, linked and
//! versionless entries are skipped).

use serde::Deserialize;
use serde_json::Value;

use super::{LangError, package};
use crate::{Package, PackageKind};

#[derive(Deserialize)]
struct PackageJson {
    #[serde(default)]
    name: Value,
    #[serde(default)]
    version: Value,
}

pub(super) fn parse_package_json(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let pj: PackageJson =
        serde_json::from_slice(strip_bom(bytes)).map_err(|e| LangError::malformed(path, e))?;
    match (pj.name.as_str(), pj.version.as_str()) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
            Ok(vec![package(PackageKind::Npm, n, v, path)])
        }
        _ => Ok(Vec::new()),
    }
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default, rename = "lockfileVersion")]
    lockfile_version: Value,
    #[serde(default)]
    packages: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    dependencies: Option<serde_json::Map<String, Value>>,
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub(super) fn parse_package_lock(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let lock: Lock =
        serde_json::from_slice(strip_bom(bytes)).map_err(|e| LangError::malformed(path, e))?;
    let mut out = Vec::new();
    let v2 = lock.lockfile_version.as_u64().is_some_and(|v| v >= 2);
    if let (true, Some(packages)) = (v2, &lock.packages) {
        for (key, entry) in packages {
            // "" is the project itself; keys outside node_modules are
            // workspace members' sources, listed again under their links.
            let Some(i) = key.rfind("node_modules/") else {
                continue;
            };
            if flag(entry, "dev") || flag(entry, "link") {
                continue;
            }
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&key[i + "node_modules/".len()..]);
            if let Some(version) = entry.get("version").and_then(Value::as_str)
                && !name.is_empty()
                && !version.is_empty()
            {
                out.push(package(PackageKind::Npm, name, version, path));
            }
        }
    } else if let Some(deps) = &lock.dependencies {
        // serde_json's recursion limit bounds the nesting depth.
        walk_v1(path, deps, &mut out);
    } else if lock.packages.is_none() {
        return Err(LangError::malformed(
            path,
            "neither packages nor dependencies",
        ));
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok(out)
}

fn walk_v1(path: &str, deps: &serde_json::Map<String, Value>, out: &mut Vec<Package>) {
    for (name, entry) in deps {
        if flag(entry, "dev") {
            continue;
        }
        if let Some(version) = entry.get("version").and_then(Value::as_str)
            // `file:` and `link:` versions are local directories.
            && !version.is_empty()
            && !version.starts_with("file:")
            && !version.starts_with("link:")
        {
            out.push(package(PackageKind::Npm, name, version, path));
        }
        if let Some(nested) = entry.get("dependencies").and_then(Value::as_object) {
            walk_v1(path, nested, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nv(p: &[Package]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    #[test]
    fn package_json() {
        let p = parse_package_json(
            "usr/lib/node_modules/npm/package.json",
            b"\xef\xbb\xbf{\"name\":\"npm\",\"version\":\"9.2.0\",\"dependencies\":{}}",
        )
        .unwrap();
        assert_eq!(nv(&p), ["npm@9.2.0"]);
        assert_eq!(p[0].kind, PackageKind::Npm);
        // Missing or non-string fields: not a package.
        for j in [
            r#"{"name":"x"}"#,
            r#"{"version":"1"}"#,
            r#"{"name":"x","version":1}"#,
            "[]",
        ] {
            assert_eq!(
                parse_package_json("package.json", j.as_bytes()).ok(),
                Some(vec![]),
                "{j}"
            );
        }
        assert!(parse_package_json("package.json", b"{nope").is_err());
    }

    #[test]
    fn lock_v3() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lang/npm");
        let bytes = std::fs::read(format!("{dir}/package-lock-v3.json")).unwrap();
        let p = parse_package_lock("app/package-lock.json", &bytes).unwrap();
        assert_eq!(
            nv(&p),
            ["@scope/pkg@1.0.1", "debug@2.6.9", "debug@4.3.4", "ms@2.1.2"]
        );
    }

    #[test]
    fn lock_v1() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lang/npm");
        let bytes = std::fs::read(format!("{dir}/package-lock-v1.json")).unwrap();
        let p = parse_package_lock("app/package-lock.json", &bytes).unwrap();
        assert_eq!(nv(&p), ["debug@2.6.9", "debug@4.3.4", "ms@2.0.0"]);
    }

    #[test]
    fn lock_errors() {
        assert!(parse_package_lock("package-lock.json", b"{}").is_err());
        assert!(parse_package_lock("package-lock.json", b"\"x\"").is_err());
        let deep = "[".repeat(10_000);
        assert!(parse_package_lock("package-lock.json", deep.as_bytes()).is_err());
    }
}
