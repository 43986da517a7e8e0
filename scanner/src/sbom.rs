//! An inventory as a CycloneDX 1.5 JSON document (components with purls).
//!
//! Deterministic: the same inventory, name and digest give the same bytes
//! (no timestamp; the serial number is a UUIDv5 of the digest). Purls follow
//! the purl specification's types (`deb`, `apk`, `rpm`, `pypi`, `npm`,
//! `golang`, `cargo`, `maven`, `gem`), percent-encoded here; a dpkg version
//! keeps its epoch (`1:2.38.1-5+deb12u3` → `1:2.38.1-5%2Bdeb12u3`), an rpm's
//! goes to the `epoch` qualifier as the rpm type says.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::{Inventory, Os, Package, PackageKind};

/// The namespace of Berth's SBOM serial numbers (a UUIDv5 of the URL
/// `https://berth.dev/sbom`, fixed so serials are stable across releases).
const SERIAL_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3d1f_6f0e_8a7b_5c2e_9b41_2f6a_7c0d_e5b3);

/// The SBOM of `inventory` for the image `name` (`repo:tag` or `repo@digest`).
pub fn cyclonedx(inventory: &Inventory, name: &str, digest: &str) -> Value {
    let serial = uuid::Uuid::new_v5(&SERIAL_NAMESPACE, digest.as_bytes());
    let os = inventory.os.as_ref();
    let mut components = Vec::new();
    let mut refs: HashSet<String> = HashSet::new();
    let mut unique_ref = |base: String| -> String {
        let mut candidate = base.clone();
        let mut n = 1;
        while !refs.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{base}#{n}");
        }
        candidate
    };
    if let Some(os) = os {
        let mut c = json!({
            "type": "operating-system",
            "bom-ref": unique_ref(format!("os:{}@{}", os.id, os.version_id)),
            "name": os.id,
        });
        if !os.version_id.is_empty() {
            c["version"] = json!(os.version_id);
        }
        if !os.pretty_name.is_empty() {
            c["description"] = json!(os.pretty_name);
        }
        components.push(c);
    }
    for pkg in &inventory.packages {
        let purl = purl(pkg, os);
        let mut c = json!({
            "type": "library",
            "bom-ref": unique_ref(purl.clone()),
            "name": pkg.name,
            "version": pkg.version,
            "purl": purl,
        });
        if pkg.kind == PackageKind::Maven
            && let Some((group, artifact)) = pkg.name.split_once(':')
        {
            c["group"] = json!(group);
            c["name"] = json!(artifact);
        }
        let mut props = vec![json!({"name": "berth:package_kind", "value": kind_name(pkg.kind)})];
        if let Some(s) = &pkg.source_name {
            props.push(json!({"name": "berth:source_name", "value": s}));
        }
        if let Some(s) = &pkg.source_version {
            props.push(json!({"name": "berth:source_version", "value": s}));
        }
        if let Some(l) = &pkg.layer {
            props.push(json!({"name": "berth:layer", "value": l}));
        }
        props.push(json!({"name": "berth:path", "value": pkg.path}));
        c["properties"] = Value::Array(props);
        components.push(c);
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "berth", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": format!("image:{digest}"),
                "name": name,
                "version": digest,
                "properties": [{"name": "berth:image_digest", "value": digest}],
            },
        },
        "components": components,
    })
}

fn kind_name(kind: PackageKind) -> &'static str {
    match kind {
        PackageKind::Dpkg => "dpkg",
        PackageKind::Apk => "apk",
        PackageKind::Rpm => "rpm",
        PackageKind::Python => "python",
        PackageKind::Npm => "npm",
        PackageKind::Go => "go",
        PackageKind::Cargo => "cargo",
        PackageKind::Maven => "maven",
        PackageKind::Gem => "gem",
    }
}

/// Percent-encodes per the purl specification: everything but the
/// unreserved `A-Z a-z 0-9 . - _ ~` (and `:` where `keep_colon`).
fn enc(s: &str, keep_colon: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'_' | b'~')
            || (keep_colon && b == b':')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of one package.
pub fn purl(pkg: &Package, os: Option<&Os>) -> String {
    let os_id = os.map(|o| o.id.as_str()).unwrap_or("");
    let distro = os.filter(|o| !o.id.is_empty()).map(|o| {
        if o.version_id.is_empty() {
            o.id.clone()
        } else {
            format!("{}-{}", o.id, o.version_id)
        }
    });
    let mut quals: Vec<(&str, String)> = Vec::new();
    let mut version = pkg.version.clone();
    let (ty, namespace, name): (&str, Vec<String>, String) = match pkg.kind {
        PackageKind::Dpkg => {
            let ns = if os_id.is_empty() { "debian" } else { os_id };
            ("deb", vec![ns.to_owned()], pkg.name.clone())
        }
        PackageKind::Apk => {
            let ns = if os_id.is_empty() { "alpine" } else { os_id };
            ("apk", vec![ns.to_owned()], pkg.name.clone())
        }
        PackageKind::Rpm => {
            if let Some((epoch, rest)) = version.split_once(':')
                && !epoch.is_empty()
                && epoch.bytes().all(|b| b.is_ascii_digit())
            {
                quals.push(("epoch", epoch.to_owned()));
                version = rest.to_owned();
            }
            (
                "rpm",
                vec![rpm_namespace(os_id).to_owned()],
                pkg.name.clone(),
            )
        }
        PackageKind::Python => {
            // purl's pypi type: lower case, `_` as `-`.
            ("pypi", vec![], pkg.name.to_lowercase().replace('_', "-"))
        }
        PackageKind::Npm => match pkg.name.split_once('/') {
            Some((scope, n)) if scope.starts_with('@') => {
                ("npm", vec![scope.to_owned()], n.to_owned())
            }
            _ => ("npm", vec![], pkg.name.clone()),
        },
        PackageKind::Go => {
            let mut parts: Vec<String> = pkg.name.split('/').map(str::to_owned).collect();
            let last = parts.pop().unwrap_or_default();
            ("golang", parts, last)
        }
        PackageKind::Cargo => ("cargo", vec![], pkg.name.clone()),
        PackageKind::Maven => match pkg.name.split_once(':') {
            Some((g, a)) => ("maven", vec![g.to_owned()], a.to_owned()),
            None => ("maven", vec![], pkg.name.clone()),
        },
        PackageKind::Gem => ("gem", vec![], pkg.name.clone()),
    };
    if pkg.kind.is_os() {
        if let Some(arch) = pkg.arch.as_deref().filter(|a| !a.is_empty()) {
            quals.push(("arch", arch.to_owned()));
        }
        if let Some(d) = distro {
            quals.push(("distro", d));
        }
    }
    let mut out = format!("pkg:{ty}/");
    for segment in namespace.iter().filter(|s| !s.is_empty()) {
        out.push_str(&enc(segment, false));
        out.push('/');
    }
    out.push_str(&enc(&name, false));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&enc(&version, true));
    }
    quals.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (k, v)) in quals.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&enc(v, true));
    }
    out
}

fn rpm_namespace(os_id: &str) -> &str {
    match os_id {
        "rhel" | "" => "redhat",
        "amzn" => "amazon",
        "ol" => "oracle",
        "sles" | "sled" | "sles_sap" => "suse",
        id if id.starts_with("opensuse") => "opensuse",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: PackageKind, name: &str, version: &str, arch: Option<&str>) -> Package {
        Package {
            kind,
            name: name.into(),
            version: version.into(),
            source_name: None,
            source_version: None,
            arch: arch.map(str::to_owned),
            path: "x".into(),
            layer: None,
        }
    }

    fn os(id: &str, version_id: &str) -> Os {
        Os {
            id: id.into(),
            version_id: version_id.into(),
            codename: String::new(),
            pretty_name: String::new(),
        }
    }

    #[test]
    fn purls_per_kind() {
        let debian = os("debian", "12");
        let alpine = os("alpine", "3.19.1");
        let rhel = os("rhel", "9.3");
        let amzn = os("amzn", "2023");
        let cases: Vec<(Package, Option<&Os>, &str)> = vec![
            (
                p(
                    PackageKind::Dpkg,
                    "bsdutils",
                    "1:2.38.1-5+deb12u3",
                    Some("amd64"),
                ),
                Some(&debian),
                "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12",
            ),
            (
                p(PackageKind::Dpkg, "libstdc++6", "12.2.0-14", Some("amd64")),
                Some(&debian),
                "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12",
            ),
            (
                p(PackageKind::Dpkg, "base-files", "12.4+deb12u5", None),
                None,
                "pkg:deb/debian/base-files@12.4%2Bdeb12u5",
            ),
            (
                p(
                    PackageKind::Apk,
                    "musl",
                    "1.2.4_git20230717-r4",
                    Some("x86_64"),
                ),
                Some(&alpine),
                "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
            ),
            (
                p(
                    PackageKind::Rpm,
                    "openssl-libs",
                    "1:3.0.7-27.el9",
                    Some("x86_64"),
                ),
                Some(&rhel),
                "pkg:rpm/redhat/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rhel-9.3&epoch=1",
            ),
            (
                p(PackageKind::Rpm, "bash", "5.1.8-6.el9", Some("x86_64")),
                Some(&amzn),
                "pkg:rpm/amazon/bash@5.1.8-6.el9?arch=x86_64&distro=amzn-2023",
            ),
            (
                p(PackageKind::Python, "Jinja2", "3.1.2", None),
                Some(&debian),
                "pkg:pypi/jinja2@3.1.2",
            ),
            (
                p(PackageKind::Python, "typing_extensions", "4.9.0", None),
                None,
                "pkg:pypi/typing-extensions@4.9.0",
            ),
            (
                p(PackageKind::Npm, "lodash", "4.17.21", None),
                None,
                "pkg:npm/lodash@4.17.21",
            ),
            (
                p(PackageKind::Npm, "@babel/core", "7.23.0", None),
                None,
                "pkg:npm/%40babel/core@7.23.0",
            ),
            (
                p(
                    PackageKind::Go,
                    "github.com/sirupsen/logrus",
                    "v1.9.3",
                    None,
                ),
                None,
                "pkg:golang/github.com/sirupsen/logrus@v1.9.3",
            ),
            (
                p(PackageKind::Go, "stdlib", "go1.21.5", None),
                None,
                "pkg:golang/stdlib@go1.21.5",
            ),
            (
                p(PackageKind::Cargo, "smallvec", "1.6.0", None),
                None,
                "pkg:cargo/smallvec@1.6.0",
            ),
            (
                p(
                    PackageKind::Maven,
                    "org.apache.logging.log4j:log4j-core",
                    "2.14.1",
                    None,
                ),
                None,
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
            ),
            (
                p(PackageKind::Gem, "rack", "3.0.8", None),
                None,
                "pkg:gem/rack@3.0.8",
            ),
            // hostile names cannot break out of their segment
            (
                p(PackageKind::Cargo, "a/b?c#d@e f%", "1 2", None),
                None,
                "pkg:cargo/a%2Fb%3Fc%23d%40e%20f%25@1%202",
            ),
            (
                p(PackageKind::Gem, "ünï", "1", None),
                None,
                "pkg:gem/%C3%BCn%C3%AF@1",
            ),
        ];
        for (pkg, os, want) in cases {
            assert_eq!(purl(&pkg, os), want);
        }
    }

    fn sample() -> Inventory {
        let mut bsd = p(
            PackageKind::Dpkg,
            "bsdutils",
            "1:2.38.1-5+deb12u3",
            Some("amd64"),
        );
        bsd.source_name = Some("util-linux".into());
        bsd.source_version = Some("2.38.1-5+deb12u3".into());
        bsd.layer = Some("sha256:aaa".into());
        Inventory {
            os: Some(Os {
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                ..os("debian", "12")
            }),
            packages: vec![
                bsd.clone(),
                bsd,
                p(
                    PackageKind::Maven,
                    "org.apache.logging.log4j:log4j-core",
                    "2.14.1",
                    None,
                ),
                p(PackageKind::Python, "six", "1.16.0", None),
            ],
        }
    }

    #[test]
    fn document_has_cyclonedx_required_fields() {
        let doc = cyclonedx(&sample(), "demo:v1", "sha256:0123abcd");
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["version"], 1);
        let serial = doc["serialNumber"].as_str().unwrap();
        // CycloneDX 1.5's pattern: urn:uuid, RFC 4122 version 1-5, variant 8-b
        let u = serial.strip_prefix("urn:uuid:").unwrap();
        let groups: Vec<&str> = u.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&groups[2][..1], "5");
        assert!("89ab".contains(&groups[3][..1]));
        assert_eq!(doc["metadata"]["component"]["type"], "container");
        assert_eq!(doc["metadata"]["component"]["name"], "demo:v1");
        let comps = doc["components"].as_array().unwrap();
        assert_eq!(comps.len(), 5);
        assert_eq!(comps[0]["type"], "operating-system");
        assert_eq!(comps[0]["name"], "debian");
        assert_eq!(comps[0]["version"], "12");
        let mut refs = HashSet::new();
        for c in comps {
            assert!(c["name"].is_string() && c["type"].is_string(), "{c}");
            assert!(
                refs.insert(c["bom-ref"].as_str().unwrap().to_owned()),
                "bom-ref unique: {c}"
            );
        }
        assert_eq!(comps[1]["type"], "library");
        assert_eq!(
            comps[1]["purl"],
            "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"
        );
        let props = comps[1]["properties"].as_array().unwrap();
        let prop = |k: &str| {
            props
                .iter()
                .find(|p| p["name"] == k)
                .map(|p| p["value"].clone())
        };
        assert_eq!(prop("berth:source_name"), Some(json!("util-linux")));
        assert_eq!(
            prop("berth:source_version"),
            Some(json!("2.38.1-5+deb12u3"))
        );
        assert_eq!(prop("berth:layer"), Some(json!("sha256:aaa")));
        assert_eq!(comps[3]["group"], "org.apache.logging.log4j");
        assert_eq!(comps[3]["name"], "log4j-core");
        // deterministic, and the serial follows the digest
        assert_eq!(doc, cyclonedx(&sample(), "demo:v1", "sha256:0123abcd"));
        let other = cyclonedx(&sample(), "demo:v1", "sha256:ffff");
        assert_ne!(doc["serialNumber"], other["serialNumber"]);
        // no OS: no operating-system component
        let bare = cyclonedx(&Inventory::default(), "x", "sha256:1");
        assert_eq!(bare["components"], json!([]));
    }

    /// The oracle: CycloneDX's own Python library validates the document
    /// against the 1.5 JSON schema (strict), and packageurl-python parses
    /// every purl back to the package's name and version.
    #[test]
    fn oracle_cyclonedx_schema_and_packageurl_python() {
        const SCRIPT: &str = r#"
import json, sys
try:
    from cyclonedx.validation.json import JsonStrictValidator
    from cyclonedx.schema import SchemaVersion
    from packageurl import PackageURL
except ImportError as e:
    print("MISSING: " + str(e)); sys.exit(3)
doc = open(sys.argv[1]).read()
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(doc)
if err is not None:
    print("INVALID: " + str(err)[:3000]); sys.exit(1)
out = []
for c in json.loads(doc)["components"]:
    if "purl" in c:
        u = PackageURL.from_string(c["purl"])
        out.append([u.type, u.namespace, u.name, u.version, u.qualifiers])
print(json.dumps(out))
"#;
        let mut inv = sample();
        let mut rpm = p(
            PackageKind::Rpm,
            "openssl-libs",
            "1:3.0.7-27.el9",
            Some("x86_64"),
        );
        rpm.source_name = Some("openssl".into());
        let hostile = p(PackageKind::Cargo, "a/b?c#d@e f%", "1 2", None);
        inv.packages.extend([
            rpm,
            p(
                PackageKind::Apk,
                "musl",
                "1.2.4_git20230717-r4",
                Some("x86_64"),
            ),
            p(PackageKind::Npm, "@babel/core", "7.23.0", None),
            p(
                PackageKind::Go,
                "github.com/sirupsen/logrus",
                "v1.9.3",
                None,
            ),
            p(PackageKind::Cargo, "smallvec", "1.6.0", None),
            p(PackageKind::Gem, "rack", "3.0.8", None),
            hostile,
        ]);
        let doc = cyclonedx(&inv, "demo@sha256:0123", "sha256:0123");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bom.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let missing = "needs python3 with cyclonedx-python-lib[json-validation] and \
                       packageurl-python (pip install 'cyclonedx-python-lib[json-validation]' packageurl-python)";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}; {missing}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.starts_with("MISSING"), "{stdout}: {missing}");
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        /// type, namespace, name, version, qualifiers
        type Parsed = (String, Option<String>, String, Option<String>, Value);
        let parsed: Vec<Parsed> = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(parsed.len(), inv.packages.len());
        for (pkg, (ty, ns, name, version, quals)) in inv.packages.iter().zip(&parsed) {
            let (want_ns, want_name) = match pkg.kind {
                PackageKind::Maven | PackageKind::Npm | PackageKind::Go => {
                    let sep = if pkg.kind == PackageKind::Maven {
                        ':'
                    } else {
                        '/'
                    };
                    match pkg.name.rsplit_once(sep) {
                        Some((n, a)) => (Some(n.to_owned()), a.to_owned()),
                        None => (None, pkg.name.clone()),
                    }
                }
                PackageKind::Python => (None, pkg.name.to_lowercase()),
                PackageKind::Dpkg => (Some("debian".into()), pkg.name.clone()),
                PackageKind::Apk => (Some("debian".into()), pkg.name.clone()),
                PackageKind::Rpm => (Some("debian".into()), pkg.name.clone()),
                _ => (None, pkg.name.clone()),
            };
            assert_eq!((ns, name), (&want_ns, &want_name), "{ty}");
            let want_version = match (pkg.kind, pkg.version.split_once(':')) {
                (PackageKind::Rpm, Some((epoch, rest))) => {
                    assert_eq!(quals["epoch"], epoch);
                    rest.to_owned()
                }
                _ => pkg.version.clone(),
            };
            assert_eq!(version.as_deref(), Some(want_version.as_str()), "{ty}");
            if pkg.kind.is_os() {
                assert_eq!(quals["distro"], "debian-12", "{ty}");
            }
        }
    }
}
