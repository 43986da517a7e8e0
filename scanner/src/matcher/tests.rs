//! The matcher against scanning.md §5.1's crafted records (TEST-0001…0016)
//! on a synthetic Debian 12 inventory shaped like the debootstrap fixture,
//! plus dedupe, other OSes and language ecosystems.

use super::*;
use crate::osv::parse_record;
use serde_json::json;

fn pkg(
    kind: PackageKind,
    name: &str,
    version: &str,
    source: Option<(&str, Option<&str>)>,
) -> Package {
    Package {
        kind,
        name: name.into(),
        version: version.into(),
        source_name: source.map(|s| s.0.to_owned()),
        source_version: source.and_then(|s| s.1.map(str::to_owned)),
        arch: Some("amd64".into()),
        path: "var/lib/dpkg/status".into(),
        layer: Some("sha256:base".into()),
    }
}

fn deb(name: &str, version: &str, source: Option<(&str, Option<&str>)>) -> Package {
    pkg(PackageKind::Dpkg, name, version, source)
}

const UL: &str = "2.38.1-5+deb12u3";

/// Debian 12 as debootstrap installs it, in the parts the table needs.
fn bookworm() -> Inventory {
    let ul = Some(("util-linux", None));
    let ul_epoch = Some(("util-linux", Some(UL)));
    let e2 = Some(("e2fsprogs", None));
    Inventory {
        os: None,
        packages: vec![
            // the epoch trap: binary 1:…, source without the epoch
            deb("bsdutils", &format!("1:{UL}"), ul_epoch),
            deb("fdisk", UL, ul),
            deb("libblkid1", UL, ul),
            deb("libmount1", UL, ul),
            deb("libsmartcols1", UL, ul),
            deb("libuuid1", UL, ul),
            deb("mount", UL, ul),
            deb("util-linux", UL, None),
            deb("libsystemd0", "252.39-1~deb12u2", Some(("systemd", None))),
            deb("libudev1", "252.39-1~deb12u2", Some(("systemd", None))),
            deb("e2fsprogs", "1.47.0-2", None),
            deb("libcom-err2", "1.47.0-2", e2),
            deb("libext2fs2", "1.47.0-2", e2),
            deb("libss2", "1.47.0-2", e2),
            // binNMU: binary +b13, source without
            deb("bash", "5.2.15-2+b13", Some(("bash", Some("5.2.15-2")))),
            deb("libcap2", "1:2.66-4", None),
            deb("zlib1g", "1:1.2.13.dfsg-1", Some(("zlib", None))),
            deb("debianutils", "5.7-0.5~deb12u1", None),
            deb("libc6", "2.36-9+deb12u10", Some(("glibc", None))),
            deb("dpkg", "1.21.22", None),
        ],
    }
}

fn record(v: serde_json::Value) -> Arc<Record> {
    let bytes = serde_json::to_vec(&v).unwrap();
    Arc::new(parse_record("test.json", &bytes).unwrap())
}

fn osv(id: &str, eco: &str, name: &str, events: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id, "modified": "2026-01-01T00:00:00Z",
        "summary": format!("{id} summary"),
        "affected": [{"package": {"ecosystem": eco, "name": name},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}]
    })
}

fn index(records: &[Arc<Record>]) -> Index {
    let mut ix = Index::new();
    for r in records {
        ix.insert(Arc::clone(r));
    }
    ix
}

fn run(inv: &Inventory, os: Option<&str>, records: &[Arc<Record>]) -> Vec<Finding> {
    let ix = index(records);
    match_inventory(inv, os, &|e, n| ix.lookup(e, n).to_vec())
}

fn pairs(findings: &[Finding]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = findings
        .iter()
        .map(|f| (f.name.clone(), f.package_name.clone()))
        .collect();
    v.sort();
    v
}

/// The §5.1 table: each entry's expected packages; 17 findings in all.
fn table() -> Vec<(Arc<Record>, Vec<&'static str>)> {
    let plus1 = format!("{UL}+1");
    let mut t1 = osv(
        "TEST-0001",
        "Debian:12",
        "util-linux",
        json!([{"introduced": "0"}, {"fixed": plus1}]),
    );
    t1["severity"] =
        json!([{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]);
    let mut t11 = osv(
        "TEST-0011",
        "Debian:12",
        "dpkg",
        json!([{"introduced": "0"}]),
    );
    t11["withdrawn"] = json!("2026-01-02T00:00:00Z");
    let t13 = json!({"id": "TEST-0013", "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "Debian:12", "name": "debianutils"},
                      "versions": ["5.7-0.5~deb12u1"]}]});
    let t15 = json!({"id": "TEST-0015", "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec"},
                      "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.6.1"}]}]}]});
    let t16 = json!({"id": "TEST-0016", "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
                      "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:0.1"}]},
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"limit": "1:1.3"}]}]}]});
    let ul8 = vec![
        "bsdutils",
        "fdisk",
        "libblkid1",
        "libmount1",
        "libsmartcols1",
        "libuuid1",
        "mount",
        "util-linux",
    ];
    vec![
        (record(t1), ul8),
        (
            record(osv(
                "TEST-0002",
                "Debian:12",
                "util-linux",
                json!([{"introduced": "0"}, {"fixed": UL}]),
            )),
            vec![],
        ),
        (
            record(osv(
                "TEST-0003",
                "Debian:12",
                "systemd",
                json!([{"introduced": "0"}, {"fixed": "252.39-1"}]),
            )),
            vec!["libsystemd0", "libudev1"],
        ),
        (
            record(osv(
                "TEST-0004",
                "Debian:12",
                "e2fsprogs",
                json!([{"introduced": "0"}]),
            )),
            vec!["e2fsprogs", "libcom-err2", "libext2fs2", "libss2"],
        ),
        (
            record(osv(
                "TEST-0005",
                "Debian:12",
                "bash",
                json!([{"introduced": "0"}, {"fixed": "5.2.15-2"}]),
            )),
            vec![],
        ),
        (
            record(osv(
                "TEST-0006",
                "Debian:12",
                "libcap2",
                json!([{"introduced": "0"}, {"last_affected": "1:2.66-4"}]),
            )),
            vec!["libcap2"],
        ),
        (
            record(osv(
                "TEST-0007",
                "Debian:12",
                "libcap2",
                json!([{"introduced": "0"}, {"last_affected": "1:2.66-4~"}]),
            )),
            vec![],
        ),
        (
            record(osv(
                "TEST-0008",
                "Debian:11",
                "zlib",
                json!([{"introduced": "0"}]),
            )),
            vec![],
        ),
        (
            record(osv(
                "TEST-0009",
                "Ubuntu:22.04:LTS",
                "glibc",
                json!([{"introduced": "0"}]),
            )),
            vec![],
        ),
        (
            record(osv(
                "TEST-0010",
                "Debian:12",
                "libsystemd0",
                json!([{"introduced": "0"}]),
            )),
            vec![],
        ),
        (record(t11), vec![]),
        (
            record(osv(
                "TEST-0012",
                "Alpine:v3.19",
                "busybox",
                json!([{"introduced": "0"}]),
            )),
            vec![],
        ),
        (record(t13), vec!["debianutils"]),
        (
            record(osv(
                "TEST-0014",
                "Debian:12",
                "glibc",
                json!([{"introduced": "2.36-9+deb12u10+1"}]),
            )),
            vec![],
        ),
        (record(t15), vec![]),
        (record(t16), vec!["zlib1g"]),
    ]
}

#[test]
fn scanning_md_table_row_by_row() {
    let inv = bookworm();
    for (rec, want) in table() {
        let got = run(&inv, Some("Debian:12"), std::slice::from_ref(&rec));
        let mut names: Vec<&str> = got.iter().map(|f| f.package_name.as_str()).collect();
        names.sort();
        assert_eq!(names, want, "{}", rec.id);
        for f in &got {
            assert_eq!(f.name, rec.id);
            assert_eq!(f.advisories, std::slice::from_ref(&rec.id));
            assert_eq!(f.ecosystem, "Debian:12");
            assert!(f.os);
            assert_eq!(f.layer.as_deref(), Some("sha256:base"));
            assert_eq!(f.uri, format!("https://osv.dev/vulnerability/{}", rec.id));
        }
    }
}

#[test]
fn scanning_md_table_all_at_once_is_17_findings() {
    let records: Vec<Arc<Record>> = table().into_iter().map(|(r, _)| r).collect();
    let got = run(&bookworm(), Some("Debian:12"), &records);
    assert_eq!(got.len(), 17);
    // TEST-0001 is the only rated one (CVSS 9.8): first, CRITICAL, with
    // the fixed version and the vector.
    let first = &got[0];
    assert_eq!(
        (first.name.as_str(), first.package_name.as_str()),
        ("TEST-0001", "bsdutils")
    );
    assert_eq!(first.severity, Severity::Critical);
    assert_eq!(first.fixed_version.as_deref(), Some("2.38.1-5+deb12u3+1"));
    assert_eq!(first.package_version, "1:2.38.1-5+deb12u3");
    assert_eq!(first.cvss_score, Some(9.8));
    assert_eq!(first.cvss_kind.as_deref(), Some("CVSS_V3"));
    assert_eq!(first.description, "TEST-0001 summary");
    assert!(got[8..].iter().all(|f| f.severity == Severity::Undefined));
    // sorted: severity, then name, then package
    let order: Vec<(Severity, &str, &str)> = got
        .iter()
        .map(|f| (f.severity, f.name.as_str(), f.package_name.as_str()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
    assert_eq!(order, sorted);
    // fixed versions: the systemd fix, none for the open e2fsprogs issue
    let libudev = got.iter().find(|f| f.package_name == "libudev1").unwrap();
    assert_eq!(libudev.fixed_version.as_deref(), Some("252.39-1"));
    let e2 = got.iter().find(|f| f.package_name == "libss2").unwrap();
    assert_eq!(e2.fixed_version, None);
}

#[test]
fn bare_and_other_release_ecosystems_never_match_os_packages() {
    let rec = record(osv(
        "DEBIAN-X",
        "Debian",
        "util-linux",
        json!([{"introduced": "0"}]),
    ));
    assert!(run(&bookworm(), Some("Debian:12"), std::slice::from_ref(&rec)).is_empty());
    // nor when the caller passes the bare ecosystem as the OS's
    assert!(run(&bookworm(), Some("Debian"), std::slice::from_ref(&rec)).is_empty());
    // no OS ecosystem: OS packages are not matched at all
    let rec12 = record(osv(
        "DEBIAN-Y",
        "Debian:12",
        "util-linux",
        json!([{"introduced": "0"}]),
    ));
    assert!(run(&bookworm(), None, std::slice::from_ref(&rec12)).is_empty());
    // a dpkg inventory under an Alpine OS is not matched in Alpine
    let alp = record(osv(
        "ALPINE-Z",
        "Alpine:v3.19",
        "util-linux",
        json!([{"introduced": "0"}]),
    ));
    assert!(run(&bookworm(), Some("Alpine:v3.19"), &[alp]).is_empty());
}

#[test]
fn dsa_and_debian_cve_are_one_finding_named_by_the_cve() {
    let mut dsa = osv(
        "DSA-5500-1",
        "Debian:12",
        "util-linux",
        json!([{"introduced": "0"}, {"fixed": format!("{UL}+2")}]),
    );
    dsa["upstream"] = json!(["CVE-2099-1000"]);
    dsa["affected"][0]["ecosystem_specific"] = json!({"urgency": "low"});
    let mut dcve = osv(
        "DEBIAN-CVE-2099-1000",
        "Debian:12",
        "util-linux",
        json!([{"introduced": "0"}, {"fixed": format!("{UL}+1")}]),
    );
    dcve["upstream"] = json!(["CVE-2099-1000"]);
    dcve["summary"] = json!(null);
    dcve["details"] = json!("\n  First line of the details.\nSecond line.");
    dcve["affected"][0]["ecosystem_specific"] = json!({"urgency": "high"});
    let mut other = osv(
        "DEBIAN-CVE-2099-2000",
        "Debian:12",
        "util-linux",
        json!([{"introduced": "0"}]),
    );
    other["upstream"] = json!(["CVE-2099-2000"]);
    let recs = [record(dsa), record(dcve), record(other)];
    let got = run(&bookworm(), Some("Debian:12"), &recs);
    assert_eq!(got.len(), 16, "8 binaries x 2 CVEs");
    let f = got
        .iter()
        .find(|f| f.name == "CVE-2099-1000" && f.package_name == "mount")
        .unwrap();
    assert_eq!(f.advisories, ["DEBIAN-CVE-2099-1000", "DSA-5500-1"]);
    assert_eq!(f.severity, Severity::High, "the higher of low and high");
    assert_eq!(f.fixed_version.as_deref(), Some("2.38.1-5+deb12u3+2"));
    assert_eq!(
        f.uri,
        "https://security-tracker.debian.org/tracker/CVE-2099-1000"
    );
    assert_eq!(
        f.description, "First line of the details.",
        "first by id that says anything"
    );
    // the description of a CVE-named record comes first when there is one
    let mut named = osv(
        "CVE-2099-3000",
        "Debian:12",
        "bash",
        json!([{"introduced": "0"}]),
    );
    named["details"] = json!("x".repeat(2000));
    named["summary"] = json!(null);
    let got = run(&bookworm(), Some("Debian:12"), &[record(named)]);
    assert_eq!(got[0].description.len(), 500);
}

#[test]
fn ghsa_and_pysec_aliasing_each_other_merge_without_a_cve() {
    let inv = Inventory {
        os: None,
        packages: vec![pkg(PackageKind::Python, "Foo_Bar", "1.0", None)],
    };
    let mut g = osv(
        "GHSA-aaaa",
        "PyPI",
        "foo-bar",
        json!([{"introduced": "0"}, {"fixed": "1.1"}]),
    );
    g["aliases"] = json!(["PYSEC-2099-1"]);
    g["database_specific"] = json!({"severity": "MODERATE"});
    let mut p = osv(
        "PYSEC-2099-1",
        "PyPI",
        "foo.bar",
        json!([{"introduced": "0"}, {"fixed": "1.0.1"}]),
    );
    p["aliases"] = json!(["GHSA-aaaa"]);
    let got = run(&inv, None, &[record(g), record(p)]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "GHSA-aaaa");
    assert_eq!(got[0].advisories, ["GHSA-aaaa", "PYSEC-2099-1"]);
    assert_eq!(got[0].severity, Severity::Medium);
    assert_eq!(got[0].fixed_version.as_deref(), Some("1.1"));
    assert!(!got[0].os);
    assert_eq!(got[0].uri, "https://osv.dev/vulnerability/GHSA-aaaa");
}

#[test]
fn ubuntu_matches_by_source_with_its_priority() {
    let inv = Inventory {
        os: None,
        packages: vec![deb("libc6", "2.35-0ubuntu3.8", Some(("glibc", None)))],
    };
    let mut r = osv(
        "UBUNTU-CVE-2099-1",
        "Ubuntu:22.04:LTS",
        "glibc",
        json!([{"introduced": "0"}, {"fixed": "2.35-0ubuntu3.9"}]),
    );
    r["upstream"] = json!(["CVE-2099-1"]);
    r["severity"] = json!([{"type": "Ubuntu", "score": "medium"}]);
    let got = run(&inv, Some("Ubuntu:22.04:LTS"), &[record(r.clone())]);
    assert_eq!(pairs(&got), [("CVE-2099-1".into(), "libc6".into())]);
    assert_eq!(got[0].severity, Severity::Medium);
    assert_eq!(got[0].uri, "https://ubuntu.com/security/CVE-2099-1");
    assert!(run(&inv, Some("Ubuntu:24.04:LTS"), &[record(r)]).is_empty());
}

#[test]
fn alpine_matches_by_origin() {
    // apk's ordering is another module's; `versions` needs none.
    let inv = Inventory {
        os: None,
        packages: vec![
            pkg(
                PackageKind::Apk,
                "libcrypto3",
                "3.1.4-r5",
                Some(("openssl", None)),
            ),
            pkg(PackageKind::Apk, "busybox", "1.36.1-r15", None),
        ],
    };
    let mut r = json!({"id": "ALPINE-CVE-2099-7", "modified": "2026-01-01T00:00:00Z",
        "upstream": ["CVE-2099-7"],
        "affected": [{"package": {"ecosystem": "Alpine:v3.19", "name": "openssl"}, "versions": ["3.1.4-r5"]}]});
    let got = run(&inv, Some("Alpine:v3.19"), &[record(r.clone())]);
    assert_eq!(pairs(&got), [("CVE-2099-7".into(), "libcrypto3".into())]);
    assert_eq!(
        got[0].uri,
        "https://security.alpinelinux.org/vuln/CVE-2099-7"
    );
    r["affected"][0]["package"]["name"] = json!("libcrypto3");
    assert!(
        run(&inv, Some("Alpine:v3.19"), &[record(r)]).is_empty(),
        "binary name, not origin"
    );
}

#[test]
fn red_hat_by_binary_name_and_suse_by_source_with_binaries() {
    let rpm = |name: &str, src: &str| {
        pkg(
            PackageKind::Rpm,
            name,
            "1:3.0.7-27.el9",
            Some((src, Some("3.0.7-27.el9"))),
        )
    };
    let inv = Inventory {
        os: None,
        packages: vec![rpm("openssl-libs", "openssl"), rpm("openssl", "openssl")],
    };
    let rh = json!({"id": "RHSA-2099:1", "modified": "2026-01-01T00:00:00Z", "upstream": ["CVE-2099-9"],
        "database_specific": {"severity": "Important"},
        "affected": [{"package": {"ecosystem": "Red Hat", "name": "openssl-libs"}, "versions": ["1:3.0.7-27.el9"]}]});
    let got = run(&inv, Some("Red Hat"), &[record(rh)]);
    assert_eq!(pairs(&got), [("CVE-2099-9".into(), "openssl-libs".into())]);
    assert_eq!(got[0].severity, Severity::High);
    assert_eq!(got[0].uri, "https://osv.dev/vulnerability/RHSA-2099:1");

    let suse = json!({"id": "SUSE-SU-2099:1", "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "SUSE", "name": "openssl"}, "versions": ["1:3.0.7-27.el9"],
                      "ecosystem_specific": {"binaries": [{"openssl": "3.0.7-27"}]}}]});
    let got = run(&inv, Some("SUSE"), &[record(suse.clone())]);
    assert_eq!(pairs(&got), [("SUSE-SU-2099:1".into(), "openssl".into())]);
    let mut no_filter = suse;
    no_filter["affected"][0]["ecosystem_specific"] = json!(null);
    assert_eq!(run(&inv, Some("SUSE"), &[record(no_filter)]).len(), 2);
}

#[test]
fn language_ecosystems() {
    let inv = Inventory {
        os: None,
        packages: vec![
            pkg(PackageKind::Python, "Jinja2", "3.1.2", None),
            pkg(PackageKind::Python, "zope.interface", "5.0", None),
            pkg(PackageKind::Npm, "lodash", "4.17.20", None),
            pkg(PackageKind::Npm, "@scope/pkg", "1.0.0-beta.2", None),
            pkg(PackageKind::Go, "github.com/x/y", "v1.2.3", None),
            pkg(PackageKind::Go, "stdlib", "go1.21.5", None),
            pkg(
                PackageKind::Maven,
                "org.apache.logging.log4j:log4j-core",
                "2.14.1",
                None,
            ),
            pkg(PackageKind::Cargo, "smallvec", "1.6.0", None),
        ],
    };
    let semver = |id: &str, eco: &str, name: &str, fixed: &str| {
        json!({"id": id, "modified": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]})
    };
    let recs = vec![
        record(osv(
            "PYSEC-1",
            "PyPI",
            "jinja2",
            json!([{"introduced": "0"}, {"fixed": "3.1.3"}]),
        )),
        record(osv(
            "PYSEC-2",
            "PyPI",
            "Zope_Interface",
            json!([{"introduced": "5.0.0"}]),
        )),
        record(osv(
            "PYSEC-3",
            "PyPI",
            "jinja2",
            json!([{"introduced": "0"}, {"fixed": "3.1.2"}]),
        )),
        record(semver("GHSA-npm1", "npm", "lodash", "4.17.21")),
        record(semver("GHSA-npm2", "npm", "lodash", "4.17.20")),
        record(semver("GHSA-npm3", "npm", "@scope/pkg", "1.0.0")),
        record(semver("GO-1", "Go", "github.com/x/y", "1.2.4")),
        record(semver("GO-2", "Go", "stdlib", "1.21.6")),
        record(semver("GO-3", "Go", "github.com/X/y", "9.0.0")),
        record(
            json!({"id": "GHSA-jfh8", "modified": "2026-01-01T00:00:00Z", "aliases": ["CVE-2021-44228"],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Maven", "name": "org.apache.logging.log4j:log4j-core"},
                          "versions": ["2.14.1"]}]}),
        ),
        record(semver("RUSTSEC-1", "crates.io", "smallvec", "1.6.1")),
        // same name, other ecosystem
        record(semver("GHSA-npm4", "npm", "smallvec", "9.0.0")),
    ];
    let got = run(&inv, None, &recs);
    let mut ids: Vec<(&str, &str)> = got
        .iter()
        .map(|f| (f.name.as_str(), f.package_name.as_str()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("CVE-2021-44228", "org.apache.logging.log4j:log4j-core"),
            ("GHSA-npm1", "lodash"),
            ("GHSA-npm3", "@scope/pkg"),
            ("GO-1", "github.com/x/y"),
            ("GO-2", "stdlib"),
            ("PYSEC-1", "Jinja2"),
            ("PYSEC-2", "zope.interface"),
            ("RUSTSEC-1", "smallvec"),
        ]
    );
    assert_eq!(got[0].name, "CVE-2021-44228");
    assert_eq!(got[0].severity, Severity::Critical);
    assert_eq!(got[0].cvss_score, Some(10.0));
    assert_eq!(got[0].ecosystem, "Maven");
    let go = got.iter().find(|f| f.name == "GO-1").unwrap();
    assert_eq!(
        (go.package_version.as_str(), go.fixed_version.as_deref()),
        ("v1.2.3", Some("1.2.4"))
    );
}

#[test]
fn withdrawn_records_never_match_even_from_a_foreign_lookup() {
    let mut r = osv("TEST-W", "Debian:12", "bash", json!([{"introduced": "0"}]));
    r["withdrawn"] = json!("2026-01-01T00:00:00Z");
    let rec = record(r);
    let ix = index(std::slice::from_ref(&rec));
    assert!(ix.is_empty());
    let got = match_inventory(&bookworm(), Some("Debian:12"), &|_, _| {
        vec![Arc::clone(&rec)]
    });
    assert!(got.is_empty());
}

#[test]
fn duplicate_packages_are_one_finding() {
    let mut inv = Inventory {
        os: None,
        packages: vec![pkg(PackageKind::Python, "six", "1.0", None)],
    };
    let mut second = inv.packages[0].clone();
    second.path = "other/site-packages/six.dist-info/METADATA".into();
    second.layer = Some("sha256:top".into());
    inv.packages.push(second);
    let got = run(
        &inv,
        None,
        &[record(osv(
            "PYSEC-9",
            "PyPI",
            "six",
            json!([{"introduced": "0"}]),
        ))],
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].layer.as_deref(), Some("sha256:base"));
}

#[test]
fn index_and_keys() {
    let multi = record(json!({"id": "M-1", "modified": "2026-01-01T00:00:00Z",
    "affected": [
        {"package": {"ecosystem": "PyPI", "name": "Foo.Bar"}},
        {"package": {"ecosystem": "PyPI", "name": "foo_bar"}},
        {"package": {"ecosystem": "Debian:12", "name": "util-linux"}},
        {"ranges": []}
    ]}));
    assert_eq!(
        record_keys(&multi),
        [
            ("Debian:12".into(), "util-linux".into()),
            ("PyPI".into(), "foo-bar".into())
        ]
    );
    let ix = index(&[Arc::clone(&multi)]);
    assert_eq!(ix.len(), 1);
    assert_eq!(
        ix.lookup("PyPI", "FOO--bar").len(),
        1,
        "indexed once under the normalised name"
    );
    assert_eq!(ix.lookup("Debian:12", "util-linux").len(), 1);
    assert!(ix.lookup("Debian", "util-linux").is_empty());
    assert!(ix.lookup("Debian:12", "Util-Linux").is_empty());

    let mut inv = bookworm();
    inv.packages
        .push(pkg(PackageKind::Python, "Foo.Bar", "1", None));
    let keys = keys_of(&inv, Some("Debian:12"));
    assert!(keys.contains(&("Debian:12".into(), "util-linux".into())));
    assert!(keys.contains(&("Debian:12".into(), "systemd".into())));
    assert!(
        !keys.contains(&("Debian:12".into(), "bsdutils".into())),
        "source names, not binaries"
    );
    assert!(keys.contains(&("PyPI".into(), "foo-bar".into())));
    assert_eq!(keys.iter().filter(|k| k.1 == "util-linux").count(), 1);
    // every key a record is indexed under is a key the inventory looks up
    assert!(record_keys(&multi).iter().all(|k| keys.contains(k)));
    assert!(keys_of(&bookworm(), None).is_empty());
}

#[test]
fn pep503_normalisation() {
    for (raw, want) in [
        ("Foo_Bar", "foo-bar"),
        ("foo.bar", "foo-bar"),
        ("foo--__..bar", "foo-bar"),
        ("ZOPE.Interface", "zope-interface"),
        ("_lead", "lead"),
        ("trail_", "trail"),
        ("a", "a"),
    ] {
        assert_eq!(normalise_name("PyPI", raw), want, "{raw}");
    }
    assert_eq!(normalise_name("npm", "Foo_Bar"), "Foo_Bar");
}

#[test]
fn rpm_ranges_compare_the_binary_evr_with_its_epoch() {
    let inv = Inventory {
        os: None,
        packages: vec![pkg(
            PackageKind::Rpm,
            "openssl-libs",
            "1:3.0.7-27.el9",
            Some(("openssl", Some("3.0.7-27.el9"))),
        )],
    };
    let rh = |fixed: &str| {
        record(osv(
            "RHSA-X",
            "Red Hat",
            "openssl-libs",
            json!([{"introduced": "0"}, {"fixed": fixed}]),
        ))
    };
    // the epoch decides: 1:3.0.7-27 < 1:3.0.7-28, and > 3.1 (epoch 0)
    assert_eq!(run(&inv, Some("Red Hat"), &[rh("1:3.0.7-28.el9")]).len(), 1);
    assert!(run(&inv, Some("Red Hat"), &[rh("1:3.0.7-27.el9")]).is_empty());
    assert!(
        run(&inv, Some("Red Hat"), &[rh("3.1.0-1.el9")]).is_empty(),
        "epoch 1 beats epoch 0"
    );
    let got = run(&inv, Some("Red Hat"), &[rh("1:3.0.7-27.el9_3.1")]);
    assert_eq!(got[0].fixed_version.as_deref(), Some("1:3.0.7-27.el9_3.1"));
}

#[test]
fn maven_and_go_ecosystem_ranges() {
    let inv = Inventory {
        os: None,
        packages: vec![
            pkg(
                PackageKind::Maven,
                "org.apache.logging.log4j:log4j-core",
                "2.14.1",
                None,
            ),
            pkg(
                PackageKind::Go,
                "golang.org/x/net",
                "v0.0.0-20220722155237-a158d28d115b",
                None,
            ),
        ],
    };
    let mvn = |fixed: &str| {
        record(osv(
            "GHSA-M",
            "Maven",
            "org.apache.logging.log4j:log4j-core",
            json!([{"introduced": "2.0-beta9"}, {"fixed": fixed}]),
        ))
    };
    assert_eq!(run(&inv, None, &[mvn("2.15.0")]).len(), 1);
    assert!(run(&inv, None, &[mvn("2.14.1")]).is_empty());
    assert_eq!(run(&inv, None, &[mvn("2.14.1.1")]).len(), 1);
    let go = |fixed: &str| {
        json!({"id": "GO-N", "modified": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Go", "name": "golang.org/x/net"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]})
    };
    // a pseudo-version is a prerelease of the next patch
    assert_eq!(
        run(
            &inv,
            None,
            &[record(go("0.0.0-20221004154528-8021a29435af"))]
        )
        .len(),
        1
    );
    assert!(
        run(
            &inv,
            None,
            &[record(go("0.0.0-20220101000000-000000000000"))]
        )
        .is_empty()
    );
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn version_like() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_owned()),
            Just("*".to_owned()),
            "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}",
            "[0-9]:[0-9a-z.+~-]{1,12}",
            "v?[0-9]\\.[0-9]\\.[0-9](-[a-z0-9.]{1,6})?",
            ".{0,12}",
        ]
    }

    fn event() -> impl Strategy<Value = serde_json::Value> {
        (0..4usize, version_like()).prop_map(|(k, v)| {
            let key = ["introduced", "fixed", "last_affected", "limit"][k];
            json!({ key: v })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Hostile ranges in every ecosystem's ordering: no panic, and a
        /// reported fix is above the installed version.
        #[test]
        fn matching_never_panics(
            eco in prop::sample::select(vec!["Debian:12", "Red Hat", "Alpine:v3.19", "PyPI", "npm", "Go", "Maven", "RubyGems", "crates.io", "Unknown"]),
            kind in prop::sample::select(vec!["ECOSYSTEM", "SEMVER", "GIT"]),
            events in prop::collection::vec(event(), 0..12),
            versions in prop::collection::vec(version_like(), 0..4),
            installed in version_like(),
        ) {
            let rec = record(json!({"id": "P-1", "modified": "2026-01-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": eco, "name": "p"},
                              "ranges": [{"type": kind, "events": events}], "versions": versions}]}));
            let affected = &rec.affected[0];
            if let Some(v) = crate::osv::affects(affected, &installed)
                && let (Some(fixed), Some(scheme)) = (v.fixed, Scheme::for_ecosystem(eco))
            {
                let scheme = if kind == "SEMVER" { Scheme::Semver } else { scheme };
                let installed = installed.strip_prefix('v').filter(|_| kind == "SEMVER").unwrap_or(&installed);
                prop_assert_eq!(version::compare(scheme, installed, &fixed), Some(Ordering::Less));
            }
        }

        #[test]
        fn parse_record_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_record("fuzz.json", &bytes);
        }
    }
}

#[test]
fn rocky_and_alma_match_source_names_under_the_release() {
    let rpm = |name: &str, src: &str| {
        pkg(
            PackageKind::Rpm,
            name,
            "1:3.0.7-27.el9",
            Some((src, Some("1:3.0.7-27.el9"))),
        )
    };
    let inv = Inventory {
        os: None,
        packages: vec![rpm("openssl-libs", "openssl"), rpm("zlib", "zlib")],
    };
    // osv.dev's shape: release-qualified ecosystem, source package name.
    let rlsa = json!({"id": "RLSA-2099:1", "modified": "2026-01-01T00:00:00Z", "upstream": ["CVE-2099-1"],
        "affected": [{"package": {"ecosystem": "Rocky Linux:9", "name": "openssl"},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:3.0.7-28.el9"}]}]}]});
    let got = run(&inv, Some("Rocky Linux:9"), &[record(rlsa.clone())]);
    assert_eq!(pairs(&got), [("CVE-2099-1".into(), "openssl-libs".into())]);
    // The bare ecosystem and a binary name are looked up too.
    let bare = json!({"id": "RLSA-2099:2", "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "Rocky Linux", "name": "openssl-libs"}, "versions": ["1:3.0.7-27.el9"]}]});
    assert_eq!(run(&inv, Some("Rocky Linux:9"), &[record(bare)]).len(), 1);
    // Another release does not match.
    let mut r8 = rlsa;
    r8["affected"][0]["package"]["ecosystem"] = json!("Rocky Linux:8");
    assert!(run(&inv, Some("Rocky Linux:9"), &[record(r8)]).is_empty());
    assert!(keys_of(&inv, Some("AlmaLinux:9")).contains(&("AlmaLinux:9".into(), "openssl".into())));
}

#[test]
fn the_match_cache_gives_the_same_findings() {
    let records: Vec<Arc<Record>> = table().into_iter().map(|(r, _)| r).collect();
    let ix = index(&records);
    let lookup = |e: &str, n: &str| ix.lookup(e, n).to_vec();
    let inv = bookworm();
    let plain = match_inventory(&inv, Some("Debian:12"), &lookup);
    let mut cache = MatchCache::new();
    let first = match_inventory_cached(&inv, Some("Debian:12"), &lookup, &mut cache);
    assert_eq!(first, plain);
    assert!(!cache.is_empty());
    // From the cache, with another image's layers.
    let mut other = inv.clone();
    for p in &mut other.packages {
        p.layer = Some("sha256:other".into());
    }
    let second = match_inventory_cached(&other, Some("Debian:12"), &lookup, &mut cache);
    assert_eq!(second.len(), plain.len());
    assert!(
        second
            .iter()
            .all(|f| f.layer.as_deref() == Some("sha256:other"))
    );
    let relabelled: Vec<Finding> = second
        .into_iter()
        .map(|mut f| {
            f.layer = Some("sha256:base".into());
            f
        })
        .collect();
    assert_eq!(relabelled, plain);
}
