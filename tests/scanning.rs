//! Image scanning end to end on real images: the OCI layouts of
//! `scanner/tests/fixtures/build-images.sh` (a debootstrap bookworm rootfs
//! with packages purged, removed and left unpacked by its top layers, a
//! distroless `status.d` image, an apk database, an rpm database written by
//! rpm, pip-installed Python packages) are pushed with skopeo into a real
//! server with scanOnPush; OSV records written here against the packages
//! those images really hold are loaded with `berth vulndb import`; the
//! findings of DescribeImageScanFindings must be exactly the ones the
//! records mean.
//!
//! The expectations never come from Berth: the installed packages are read
//! with `dpkg-query` (the debootstrap rootfs), `rpm -qa` (the rpm layer,
//! unpacked with tar) and from the apk database and the `dist-info`s in the
//! layers; every record says which of them it affects, and its version
//! boundaries are derived from the installed versions (checked with
//! `dpkg --compare-versions`), so a newer Debian mirror never breaks them.
//!
//! Needs root and: `apt-get install -y debootstrap rpm zstd python3-pip skopeo`
//! (the fixtures are cached in `<workspace>/target/scan-fixtures`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{ROOT_KEY_ID, ROOT_SECRET, Server, ecr, ecr_call, registry_token, require, tail};

const IMAGES: [&str; 5] = ["debian", "distroless", "alpine", "rpm", "python"];
const INSTALL_HINT: &str =
    "apt-get install -y debootstrap rpm zstd python3-pip skopeo (as root: debootstrap needs it)";

/// What the debian image's top layers take away from the debootstrap rootfs
/// (build-images.sh, `build_debian`): `logsave` purged (no stanza) and
/// `hostname` removed (`deinstall ok config-files`, files whited out).
/// `sysvinit-utils` is left `install ok unpacked`: its files are there, so
/// it is still installed software.
const DEBIAN_REMOVED: [&str; 2] = ["logsave", "hostname"];

/// The stanzas the distroless image's `status.d` holds (`build_distroless`).
const DISTROLESS: [&str; 4] = ["base-files", "libc6", "zlib1g", "libsystemd0"];

// ---------------------------------------------------------------- fixtures

fn in_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(prog).is_file())
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        tail(&out.stderr, 4000)
    );
    out.stdout
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("UTF-8 output")
}

/// Builds the fixture images (or finds them cached); their directory.
fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scanner/tests/fixtures/build-images.sh");
    let out = root.join("target/scan-fixtures");
    let mut needed = vec![
        "bash",
        "tar",
        "zstd",
        "python3",
        "dpkg",
        "dpkg-query",
        "rpm",
    ];
    let stamp = common::sha256(&std::fs::read(&script).unwrap())["sha256:".len()..].to_string();
    let fresh = |img: &str| {
        std::fs::read_to_string(out.join(img).join(".stamp")).is_ok_and(|s| s.trim() == stamp)
    };
    if !IMAGES.iter().all(|i| fresh(i)) {
        needed.extend(["gzip", "sha256sum", "pip3", "rpmbuild", "flock"]);
        if !out.join(".build/rootfs").is_dir() {
            needed.push("debootstrap");
        }
    }
    let missing: Vec<&str> = needed.into_iter().filter(|p| !in_path(p)).collect();
    assert!(
        missing.is_empty(),
        "the scanning fixtures need {missing:?} in PATH: {INSTALL_HINT}"
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = if in_path("flock") {
        // One build at a time (the scanner's parity tests build here too).
        let mut c = Command::new("flock");
        c.arg(out.join(".lock")).arg("bash");
        c
    } else {
        Command::new("bash")
    };
    let built = cmd.arg(&script).arg(&out).args(IMAGES).output().unwrap();
    assert!(
        built.status.success(),
        "{} failed ({}):\n{}\nThe fixtures need root and: {INSTALL_HINT}",
        script.display(),
        built.status,
        tail(&built.stderr, 4000)
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&digest["sha256:".len()..])
}

/// The manifest digest of an OCI layout (ref `latest`) and the manifest.
fn layout_manifest(layout: &Path) -> (String, Value) {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read_json(&blob(layout, &digest));
    (digest, manifest)
}

/// The top layer of an OCI layout, unpacked by tar into a fresh directory.
fn unpack_top_layer(layout: &Path) -> tempfile::TempDir {
    let (_, manifest) = layout_manifest(layout);
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    // GNU tar detects gzip, zstd or no compression itself.
    run(Command::new("tar")
        .arg("-xf")
        .arg(blob(layout, &layer))
        .arg("-C")
        .arg(dir.path()));
    dir
}

/// What skopeo pushes a fixture from: the OCI layout; for a layout whose
/// manifest has Docker's media type (distroless), which skopeo 1.9's `oci:`
/// transport does not find by its ref name, the same manifest and blobs as
/// a `dir:` directory written in `dir`.
fn source_of(layout: &Path, dir: &Path) -> String {
    let index = read_json(&layout.join("index.json"));
    if index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json" {
        return format!("oci:{}:latest", layout.display());
    }
    let (digest, manifest) = layout_manifest(layout);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    std::fs::copy(blob(layout, &digest), dir.join("manifest.json")).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    for d in std::iter::once(config).chain(layers.iter().map(|l| l["digest"].as_str().unwrap())) {
        std::fs::copy(blob(layout, d), dir.join(&d["sha256:".len()..])).unwrap();
    }
    format!("dir:{}", dir.display())
}

// ---------------------------------------------------------------- packages

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deb,
    Apk,
    Rpm,
    Python,
}

/// An installed package as its own package manager reports it.
#[derive(Clone, Debug)]
struct Pkg {
    kind: Kind,
    name: String,
    version: String,
    /// The source package (Debian), the origin (Alpine); else the name.
    source: String,
    source_version: String,
}

/// The packages dpkg considers installed in the rootfs (`dpkg-query`),
/// including those whose configuration is pending (their files are there).
fn dpkg_packages(rootfs: &Path) -> Vec<Pkg> {
    let out = text(run(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${Package}\t${Version}\t${source:Package}\t${source:Version}\t${db:Status-Status}\n",
        ])));
    let pkgs: Vec<Pkg> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "dpkg-query line {l:?}");
            (!matches!(f[4], "not-installed" | "config-files")).then(|| Pkg {
                kind: Kind::Deb,
                name: f[0].into(),
                version: f[1].into(),
                source: f[2].into(),
                source_version: f[3].into(),
            })
        })
        .collect();
    assert!(
        pkgs.len() > 50,
        "dpkg-query found only {} packages",
        pkgs.len()
    );
    pkgs
}

/// `lib/apk/db/installed` of the alpine layer: P (name), V, o (origin).
fn apk_packages(layer: &Path) -> Vec<Pkg> {
    let db = std::fs::read_to_string(layer.join("lib/apk/db/installed")).unwrap();
    db.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|stanza| {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k).map(str::to_string))
            };
            let name = field("P:").expect("P: line");
            let version = field("V:").expect("V: line");
            Pkg {
                kind: Kind::Apk,
                source: field("o:").unwrap_or_else(|| name.clone()),
                source_version: version.clone(),
                name,
                version,
            }
        })
        .collect()
}

/// `rpm -qa` on the rpm layer's database: names and EVRs (`E:V-R`).
fn rpm_packages(layer: &Path) -> Vec<Pkg> {
    let out = text(run(Command::new("rpm")
        .arg("--dbpath")
        .arg(layer.join("var/lib/rpm"))
        .args(["--define", "_db_backend sqlite", "-qa", "--qf"])
        .arg("%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n")));
    out.lines()
        .map(|l| {
            let (name, evr) = l.split_once('\t').unwrap();
            Pkg {
                kind: Kind::Rpm,
                name: name.into(),
                version: evr.into(),
                source: name.into(),
                source_version: evr.into(),
            }
        })
        .collect()
}

/// The version of Python distribution `name` in a `dist-info` under `site`.
fn dist_info(site: &Path, name: &str) -> Pkg {
    let dir = std::fs::read_dir(site)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.starts_with(&format!("{name}-")) && f.ends_with(".dist-info")
        })
        .unwrap_or_else(|| panic!("no {name} dist-info in {}", site.display()));
    let meta = std::fs::read_to_string(dir.join("METADATA")).unwrap();
    let version = meta
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .trim()
        .to_string();
    Pkg {
        kind: Kind::Python,
        name: name.into(),
        version: version.clone(),
        source: name.into(),
        source_version: version,
    }
}

/// The one source version of Debian source package `source`.
fn source_version(pkgs: &[Pkg], source: &str) -> String {
    let versions: BTreeSet<&str> = pkgs
        .iter()
        .filter(|p| p.source == source)
        .map(|p| p.source_version.as_str())
        .collect();
    assert_eq!(versions.len(), 1, "source {source}: versions {versions:?}");
    versions.into_iter().next().unwrap().to_string()
}

/// `v` with its last number one higher (`2.38.1-5+deb12u3` → `…u4`).
fn bump(v: &str) -> String {
    let digits = v.len() - v.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    assert!(digits > 0, "{v} does not end in a number");
    let (head, n) = v.split_at(v.len() - digits);
    format!("{head}{}", n.parse::<u64>().unwrap() + 1)
}

/// An rpm EVR with its release's first number one higher.
fn bump_release(evr: &str) -> String {
    let (vr, rel) = evr.rsplit_once('-').unwrap();
    let n: String = rel.chars().take_while(char::is_ascii_digit).collect();
    format!("{vr}-{}{}", n.parse::<u64>().unwrap() + 1, &rel[n.len()..])
}

/// The oracle: `dpkg --compare-versions a op b`.
fn dpkg_says(a: &str, op: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, op, b])
        .status()
        .unwrap()
        .success()
}

// ---------------------------------------------------------------- records

const CVSS_CRITICAL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"; // 9.8
const CVSS_HIGH: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"; // 7.5
const CVSS_MEDIUM: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"; // 5.3
const CVSS_LOW: &str = "CVSS:3.1/AV:L/AC:H/PR:H/UI:N/S:U/C:L/I:N/A:N"; // 1.9

/// The newest `modified` of the records (one of the affecting ones).
const NEWEST: &str = "2025-06-30T12:34:56Z";

/// What a record means: the finding name and severity it gives every
/// package `hits` selects.
struct Intent {
    name: &'static str,
    severity: &'static str,
    hits: Box<dyn Fn(&Pkg) -> bool>,
}

struct Rec {
    osv: Value,
    intent: Option<Intent>,
}

/// A record of `name` in `eco`; a `DEBIAN-CVE-*` one names its CVE in
/// `upstream`, as Debian's records on osv.dev do.
fn osv(id: &str, modified: &str, eco: &str, name: &str) -> Value {
    let mut r = json!({
        "schema_version": "1.6.0",
        "id": id,
        "modified": modified,
        "published": "2025-01-01T00:00:00Z",
        "summary": format!("{name}: a test vulnerability ({id})"),
        "affected": [{"package": {"ecosystem": eco, "name": name}}],
    });
    if let Some(cve) = id.strip_prefix("DEBIAN-") {
        r["upstream"] = json!([cve]);
    }
    r
}

fn events(mut r: Value, events: Value) -> Value {
    r["affected"][0]["ranges"] = json!([{"type": "ECOSYSTEM", "events": events}]);
    r
}

fn set(mut r: Value, pointer: &str, v: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    r.pointer_mut(if parent.is_empty() { "" } else { parent })
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.into(), v);
    r
}

fn cvss(r: Value, vector: &str) -> Value {
    set(
        r,
        "/severity",
        json!([{"type": "CVSS_V3", "score": vector}]),
    )
}

fn urgency(r: Value, word: &str) -> Value {
    set(
        r,
        "/affected/0/ecosystem_specific",
        json!({"urgency": word}),
    )
}

fn affects(name: &'static str, severity: &'static str, kind: Kind, source: &str) -> Option<Intent> {
    let source = source.to_string();
    Some(Intent {
        name,
        severity,
        hits: Box::new(move |p: &Pkg| p.kind == kind && p.source == source),
    })
}

fn records(deb: &[Pkg], apk: &[Pkg], rpm: &[Pkg], requests: &Pkg) -> Vec<Rec> {
    let d12 = "Debian:12";
    let util_linux = source_version(deb, "util-linux");
    let systemd = source_version(deb, "systemd");
    let libcap2 = source_version(deb, "libcap2");
    let debianutils = source_version(deb, "debianutils");
    let glibc = source_version(deb, "glibc");
    let bash = source_version(deb, "bash");
    // The traps the records are about must be in the rootfs.
    let bsdutils = deb.iter().find(|p| p.name == "bsdutils").unwrap();
    assert!(
        bsdutils.version.starts_with("1:") && !util_linux.contains(':'),
        "bsdutils {} / util-linux {util_linux}: the epoch trap is gone",
        bsdutils.version
    );
    let (systemd_fix, _) = systemd
        .split_once('~')
        .unwrap_or_else(|| panic!("systemd {systemd} has no tilde"));
    let binary_only = "libsystemd0";
    assert!(
        deb.iter()
            .any(|p| p.name == binary_only && p.source != binary_only)
            && !deb.iter().any(|p| p.source == binary_only)
    );
    let libcap2_below = format!("{libcap2}~");
    let (l_ul, l_sd, l_gl) = (bump(&util_linux), systemd_fix.to_string(), bump(&glibc));
    for (a, op, b) in [
        (&util_linux, "lt", &l_ul),
        (&glibc, "lt", &l_gl),
        (&systemd, "lt", &l_sd),
        (&libcap2_below, "lt", &libcap2),
    ] {
        assert!(dpkg_says(a, op, b), "dpkg: not {a} {op} {b}");
    }
    let openssl = apk.iter().find(|p| p.name == "libcrypto3").unwrap();
    assert_eq!(openssl.source, "openssl");
    assert!(
        apk.iter()
            .any(|p| p.name == "alpine-keys" && p.source == "alpine-keys")
    );
    let rpm_evr = |name: &str| -> String {
        rpm.iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no rpm {name}"))
            .version
            .clone()
    };
    let openssl_libs = rpm_evr("openssl-libs");
    let (epoch, openssl_vr) = openssl_libs
        .split_once(':')
        .expect("openssl-libs has an epoch");
    assert_ne!(epoch, "0");
    let openssl_above_without_epoch = bump_release(openssl_vr);

    vec![
        // A fix one revision above the installed source version, CVSS v3:
        // every binary of util-linux, bsdutils (epoch only on the binary) too.
        Rec {
            osv: cvss(
                set(
                    events(
                        osv("DSA-9101-1", NEWEST, d12, "util-linux"),
                        json!([{"introduced": "0"}, {"fixed": l_ul}]),
                    ),
                    "/aliases",
                    json!(["CVE-2099-1001"]),
                ),
                CVSS_CRITICAL,
            ),
            intent: affects("CVE-2099-1001", "CRITICAL", Kind::Deb, "util-linux"),
        },
        // The tracker's record of the same CVE: the same findings, not more.
        Rec {
            osv: set(
                events(
                    osv(
                        "DEBIAN-CVE-2099-1001",
                        "2025-02-01T00:00:00Z",
                        d12,
                        "util-linux",
                    ),
                    json!([{"introduced": "0"}, {"fixed": l_ul}]),
                ),
                "/upstream",
                json!(["CVE-2099-1001"]),
            ),
            intent: None,
        },
        // Fixed at the installed version: not affected.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1002",
                    "2025-02-01T00:00:00Z",
                    d12,
                    "util-linux",
                ),
                json!([{"introduced": "0"}, {"fixed": util_linux}]),
            ),
            intent: None,
        },
        // Fixed at the version without the installed `~deb12uN`: affected
        // (a tilde sorts before everything); severity from the urgency.
        Rec {
            osv: urgency(
                events(
                    osv(
                        "DEBIAN-CVE-2099-1003",
                        "2025-02-01T00:00:00Z",
                        d12,
                        "systemd",
                    ),
                    json!([{"introduced": "0"}, {"fixed": l_sd}]),
                ),
                "medium",
            ),
            intent: affects("CVE-2099-1003", "MEDIUM", Kind::Deb, "systemd"),
        },
        // last_affected = installed: affected; no severity at all.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1004",
                    "2025-02-01T00:00:00Z",
                    d12,
                    "libcap2",
                ),
                json!([{"introduced": "0"}, {"last_affected": libcap2}]),
            ),
            intent: affects("CVE-2099-1004", "UNDEFINED", Kind::Deb, "libcap2"),
        },
        // last_affected just below the installed version: not affected.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1005",
                    "2025-02-01T00:00:00Z",
                    d12,
                    "libcap2",
                ),
                json!([{"introduced": "0"}, {"last_affected": libcap2_below}]),
            ),
            intent: None,
        },
        // Withdrawn.
        Rec {
            osv: set(
                events(
                    osv("DEBIAN-CVE-2099-1006", "2025-02-01T00:00:00Z", d12, "dpkg"),
                    json!([{"introduced": "0"}]),
                ),
                "/withdrawn",
                json!("2025-03-01T00:00:00Z"),
            ),
            intent: None,
        },
        // Another release.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1007",
                    "2025-02-01T00:00:00Z",
                    "Debian:11",
                    "zlib",
                ),
                json!([{"introduced": "0"}]),
            ),
            intent: None,
        },
        // A binary name: Debian's records name source packages.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1008",
                    "2025-02-01T00:00:00Z",
                    d12,
                    binary_only,
                ),
                json!([{"introduced": "0"}]),
            ),
            intent: None,
        },
        // Only `versions`, no ranges, and no CVE (the finding is named by
        // the record's id); urgency not yet assigned: the CVSS vector rates it.
        Rec {
            osv: cvss(
                urgency(
                    set(
                        osv(
                            "BERTH-2099-1009",
                            "2025-02-01T00:00:00Z",
                            d12,
                            "debianutils",
                        ),
                        "/affected/0/versions",
                        json!([debianutils]),
                    ),
                    "not yet assigned",
                ),
                CVSS_MEDIUM,
            ),
            intent: affects("BERTH-2099-1009", "MEDIUM", Kind::Deb, "debianutils"),
        },
        // Unfixed in e2fsprogs: its binaries, but logsave where it was purged.
        Rec {
            osv: urgency(
                events(
                    osv(
                        "DEBIAN-CVE-2099-1010",
                        "2025-02-01T00:00:00Z",
                        d12,
                        "e2fsprogs",
                    ),
                    json!([{"introduced": "0"}]),
                ),
                "high",
            ),
            intent: affects("CVE-2099-1010", "HIGH", Kind::Deb, "e2fsprogs"),
        },
        // glibc, urgency unimportant: libc6 and libc-bin (distroless: libc6).
        Rec {
            osv: urgency(
                events(
                    osv("DEBIAN-CVE-2099-1011", "2025-02-01T00:00:00Z", d12, "glibc"),
                    json!([{"introduced": "0"}, {"fixed": l_gl}]),
                ),
                "unimportant",
            ),
            intent: affects("CVE-2099-1011", "INFORMATIONAL", Kind::Deb, "glibc"),
        },
        // Fixed at bash's source version: the binNMU binary is not affected.
        Rec {
            osv: events(
                osv("DEBIAN-CVE-2099-1012", "2025-02-01T00:00:00Z", d12, "bash"),
                json!([{"introduced": "0"}, {"fixed": bash}]),
            ),
            intent: None,
        },
        // hostname: removed in the debian image (config-files), present in
        // the python image's base.
        Rec {
            osv: events(
                osv(
                    "DEBIAN-CVE-2099-1013",
                    "2025-02-01T00:00:00Z",
                    d12,
                    "hostname",
                ),
                json!([{"introduced": "0"}]),
            ),
            intent: affects("CVE-2099-1013", "UNDEFINED", Kind::Deb, "hostname"),
        },
        // sysvinit: sysvinit-utils is unpacked, not configured: still there.
        Rec {
            osv: cvss(
                events(
                    osv(
                        "DEBIAN-CVE-2099-1014",
                        "2025-02-01T00:00:00Z",
                        d12,
                        "sysvinit",
                    ),
                    json!([{"introduced": "0"}]),
                ),
                CVSS_LOW,
            ),
            intent: affects("CVE-2099-1014", "LOW", Kind::Deb, "sysvinit"),
        },
        // Alpine, by origin: libcrypto3 and libssl3.
        Rec {
            osv: cvss(
                set(
                    events(
                        osv(
                            "ALPINE-2099-1015",
                            "2025-02-01T00:00:00Z",
                            "Alpine:v3.19",
                            "openssl",
                        ),
                        json!([{"introduced": "0"}, {"fixed": bump(&openssl.version)}]),
                    ),
                    "/upstream",
                    json!(["CVE-2099-1015"]),
                ),
                CVSS_HIGH,
            ),
            intent: affects("CVE-2099-1015", "HIGH", Kind::Apk, "openssl"),
        },
        // A package with no origin line is its own origin.
        Rec {
            osv: set(
                events(
                    osv(
                        "ALPINE-2099-1016",
                        "2025-02-01T00:00:00Z",
                        "Alpine:v3.19",
                        "alpine-keys",
                    ),
                    json!([{"introduced": "0"}]),
                ),
                "/upstream",
                json!(["CVE-2099-1016"]),
            ),
            intent: affects("CVE-2099-1016", "UNDEFINED", Kind::Apk, "alpine-keys"),
        },
        // Another Alpine branch.
        Rec {
            osv: events(
                osv(
                    "ALPINE-2099-1017",
                    "2025-02-01T00:00:00Z",
                    "Alpine:v3.18",
                    "zlib",
                ),
                json!([{"introduced": "0"}]),
            ),
            intent: None,
        },
        // Rocky Linux, by binary name and EVR: openssl-libs, not openssl.
        Rec {
            osv: cvss(
                set(
                    events(
                        osv(
                            "RLSA-2099:1018",
                            "2025-02-01T00:00:00Z",
                            "Rocky Linux",
                            "openssl-libs",
                        ),
                        json!([{"introduced": "0"}, {"fixed": bump_release(&openssl_libs)}]),
                    ),
                    "/aliases",
                    json!(["CVE-2099-1018"]),
                ),
                CVSS_MEDIUM,
            ),
            intent: Some(Intent {
                name: "CVE-2099-1018",
                severity: "MEDIUM",
                hits: Box::new(|p: &Pkg| p.kind == Kind::Rpm && p.name == "openssl-libs"),
            }),
        },
        // Fixed at a higher version without the installed epoch: the epoch
        // makes the installed EVR greater.
        Rec {
            osv: set(
                events(
                    osv(
                        "RLSA-2099:1019",
                        "2025-02-01T00:00:00Z",
                        "Rocky Linux",
                        "openssl-libs",
                    ),
                    json!([{"introduced": "0"}, {"fixed": openssl_above_without_epoch}]),
                ),
                "/aliases",
                json!(["CVE-2099-1019"]),
            ),
            intent: None,
        },
        // PyPI (ENHANCED scans only).
        Rec {
            osv: cvss(
                set(
                    events(
                        osv(
                            "PYSEC-2099-1020",
                            "2025-02-01T00:00:00Z",
                            "PyPI",
                            "requests",
                        ),
                        json!([{"introduced": "0"}, {"fixed": bump(&requests.version)}]),
                    ),
                    "/aliases",
                    json!(["CVE-2099-1020"]),
                ),
                CVSS_HIGH,
            ),
            intent: affects("CVE-2099-1020", "HIGH", Kind::Python, "requests"),
        },
    ]
}

type Finding = (String, String, String, String);

/// What the records mean for an image holding `pkgs`.
fn expected(recs: &[Rec], pkgs: &[Pkg], enhanced: bool) -> BTreeSet<Finding> {
    let mut out = BTreeSet::new();
    for intent in recs.iter().filter_map(|r| r.intent.as_ref()) {
        for p in pkgs.iter().filter(|p| enhanced || p.kind != Kind::Python) {
            if (intent.hits)(p) {
                out.insert((
                    intent.name.to_string(),
                    p.name.clone(),
                    p.version.clone(),
                    intent.severity.to_string(),
                ));
            }
        }
    }
    out
}

fn counts(findings: &BTreeSet<Finding>) -> Value {
    let mut m: BTreeMap<&str, u64> = BTreeMap::new();
    for f in findings {
        *m.entry(f.3.as_str()).or_default() += 1;
    }
    json!(m)
}

// ---------------------------------------------------------------- the server

fn skopeo(args: &[&str]) {
    run(Command::new("timeout")
        .args(["-k", "10", "300", "skopeo", "--insecure-policy"])
        .args(args));
}

fn digestfile(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Waits for the scan of `repo:v1` to end; it must be COMPLETE. Every
/// finding of it (all pages) under `key` and the last answer.
async fn scan_result(s: &Server, repo: &str, key: &str) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut token: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let mut body =
            json!({"repositoryName": repo, "imageId": {"imageTag": "v1"}, "maxResults": 7});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let (status, v) = ecr_call(
            s,
            ROOT_KEY_ID,
            ROOT_SECRET,
            "DescribeImageScanFindings",
            body,
        )
        .await;
        let pending = if status.is_success() {
            match v["imageScanStatus"]["status"].as_str() {
                Some("COMPLETE") => false,
                Some("IN_PROGRESS" | "PENDING") => true,
                _ => panic!("scan of {repo}:v1 ended {v}"),
            }
        } else {
            assert_eq!(v["__type"], "ScanNotFoundException", "{repo}: {status} {v}");
            true
        };
        if pending {
            assert!(
                token.is_none(),
                "the scan of {repo}:v1 changed while paging"
            );
            assert!(
                Instant::now() < deadline,
                "the scan of {repo}:v1 is not done: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        all.extend(
            v["imageScanFindings"][key]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match v["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return (all, v),
        }
    }
}

fn attr<'a>(f: &'a Value, key: &str) -> Option<&'a str> {
    f["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]
        .as_str()
}

fn basic_set(findings: &[Value]) -> BTreeSet<Finding> {
    findings
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                attr(f, "package_name").unwrap().to_string(),
                attr(f, "package_version").unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn enhanced_set(findings: &[Value]) -> BTreeSet<Finding> {
    findings
        .iter()
        .map(|f| {
            let d = &f["packageVulnerabilityDetails"];
            let p = &d["vulnerablePackages"][0];
            assert_eq!(f["status"], "ACTIVE", "{f}");
            (
                d["vulnerabilityId"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The OS (or, with `python`, also Python) packages of `berth scan sbom`.
fn sbom_packages(s: &Server, image: &str, python: bool) -> BTreeSet<(String, String)> {
    let bom: Value = serde_json::from_slice(&run(s.command("scan").args(["sbom", image]))).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            let kind = c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "berth:package_kind")
                .and_then(|p| p["value"].as_str());
            matches!(kind, Some("dpkg" | "apk" | "rpm")) || (python && kind == Some("python"))
        })
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn names_versions(pkgs: &[Pkg]) -> BTreeSet<(String, String)> {
    pkgs.iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

struct Image {
    fixture: &'static str,
    repo: &'static str,
    /// Its packages (for the SBOM, only the OS ones are compared exactly).
    pkgs: Vec<Pkg>,
}

#[tokio::test]
async fn scans_real_images_exactly() {
    require("skopeo");
    let started = Instant::now();
    let fx = fixtures();
    let rootfs = dpkg_packages(&fx.join(".build/rootfs"));
    let debian: Vec<Pkg> = rootfs
        .iter()
        .filter(|p| !DEBIAN_REMOVED.contains(&p.name.as_str()))
        .cloned()
        .collect();
    assert_eq!(debian.len() + DEBIAN_REMOVED.len(), rootfs.len());
    let distroless: Vec<Pkg> = rootfs
        .iter()
        .filter(|p| DISTROLESS.contains(&p.name.as_str()))
        .cloned()
        .collect();
    assert_eq!(distroless.len(), DISTROLESS.len());
    let alpine = apk_packages(unpack_top_layer(&fx.join("alpine")).path());
    let rpm = rpm_packages(unpack_top_layer(&fx.join("rpm")).path());
    assert!(rpm.len() >= 7, "rpm -qa: {rpm:?}");
    let python_layer = unpack_top_layer(&fx.join("python"));
    let requests = dist_info(
        &python_layer.path().join("opt/app/site-packages"),
        "requests",
    );
    let mut python = rootfs.clone();
    python.push(requests.clone());
    let recs = records(&rootfs, &alpine, &rpm, &requests);

    // The records, one file each.
    let osv_dir = tempfile::tempdir().unwrap();
    for r in &recs {
        let id = r.osv["id"].as_str().unwrap().replace(':', "_");
        std::fs::write(osv_dir.path().join(format!("{id}.json")), r.osv.to_string()).unwrap();
    }

    let s = Server::start_ecr_with(&[]);
    let imported: Value =
        serde_json::from_slice(&run(s.command("vulndb").arg("import").arg(osv_dir.path())))
            .unwrap();
    assert_eq!(imported["imported"], recs.len(), "{imported}");
    let token = registry_token(&s).await;
    let creds = format!("AWS:{token}");

    let images = [
        Image {
            fixture: "debian",
            repo: "scan-e2e/debian",
            pkgs: debian,
        },
        Image {
            fixture: "distroless",
            repo: "scan-e2e/distroless",
            pkgs: distroless,
        },
        Image {
            fixture: "alpine",
            repo: "scan-e2e/alpine",
            pkgs: alpine,
        },
        Image {
            fixture: "rpm",
            repo: "scan-e2e/rpm",
            pkgs: rpm,
        },
        Image {
            fixture: "python",
            repo: "scan-e2e/python",
            pkgs: python.clone(),
        },
    ];
    let work = tempfile::tempdir().unwrap();
    let push = |fixture: &str, repo: &str| -> String {
        let layout = fx.join(fixture);
        let df = work.path().join(format!("{fixture}-push"));
        let source = source_of(&layout, &work.path().join(format!("{fixture}-dir")));
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            "--dest-creds",
            &creds,
            "--digestfile",
            df.to_str().unwrap(),
            &source,
            &format!("docker://{}/{repo}:v1", s.addr),
        ]);
        let (digest, _) = layout_manifest(&layout);
        assert_eq!(
            digestfile(&df),
            digest,
            "skopeo changed the manifest of {fixture}"
        );
        digest
    };
    for img in &images {
        ecr(
            &s,
            "CreateRepository",
            json!({"repositoryName": img.repo, "imageScanningConfiguration": {"scanOnPush": true}}),
        )
        .await;
        push(img.fixture, img.repo);
    }

    let newest = humantime::parse_rfc3339(NEWEST).unwrap();
    let newest = newest
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut all_os = BTreeSet::new();
    for img in &images {
        let (findings, answer) = scan_result(&s, img.repo, "findings").await;
        let want = expected(&recs, &img.pkgs, false);
        let got = basic_set(&findings);
        assert_eq!(
            got.len(),
            findings.len(),
            "{}: a finding is listed twice",
            img.fixture
        );
        assert_eq!(
            got,
            want,
            "{}: findings\n  unexpected: {:?}\n  missing: {:?}",
            img.fixture,
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        );
        let body = &answer["imageScanFindings"];
        assert_eq!(
            body["findingSeverityCounts"],
            counts(&want),
            "{}",
            img.fixture
        );
        let updated = body["vulnerabilitySourceUpdatedAt"]
            .as_f64()
            .unwrap_or_else(|| {
                panic!("{}: no vulnerabilitySourceUpdatedAt in {body}", img.fixture)
            });
        assert!(
            (updated - newest).abs() < 0.001,
            "{}: vulnerabilitySourceUpdatedAt {updated}, the newest record is {NEWEST}",
            img.fixture
        );
        // The inventory behind the findings: the OS packages the package
        // managers list, and every finding's package among them.
        let sbom = sbom_packages(&s, &format!("{}:v1", img.repo), false);
        let os: Vec<Pkg> = img
            .pkgs
            .iter()
            .filter(|p| p.kind != Kind::Python)
            .cloned()
            .collect();
        let want_pkgs = names_versions(&os);
        assert_eq!(
            sbom,
            want_pkgs,
            "{}: SBOM packages\n  unexpected: {:?}\n  missing: {:?}",
            img.fixture,
            sbom.difference(&want_pkgs).collect::<Vec<_>>(),
            want_pkgs.difference(&sbom).collect::<Vec<_>>()
        );
        for f in &got {
            assert!(
                sbom.contains(&(f.1.clone(), f.2.clone())),
                "{f:?} not in the SBOM"
            );
        }
        all_os.extend(got);
    }
    // Every affecting OS record was seen somewhere (the table tests them all).
    let seen: BTreeSet<&str> = all_os.iter().map(|f| f.0.as_str()).collect();
    for intent in recs.iter().filter_map(|r| r.intent.as_ref()) {
        assert!(
            seen.contains(intent.name) || intent.name == "CVE-2099-1020",
            "{} matched no image",
            intent.name
        );
    }
    // DescribeImages carries the same summary.
    let d = ecr(
        &s,
        "DescribeImages",
        json!({"repositoryName": "scan-e2e/debian", "imageIds": [{"imageTag": "v1"}]}),
    )
    .await;
    assert_eq!(
        d["imageDetails"][0]["imageScanFindingsSummary"]["findingSeverityCounts"],
        counts(&expected(&recs, &images[0].pkgs, false))
    );

    // ENHANCED for one repository by a registry rule: language packages too.
    ecr(
        &s,
        "PutRegistryScanningConfiguration",
        json!({"scanType": "ENHANCED", "rules": [{"scanFrequency": "SCAN_ON_PUSH",
            "repositoryFilters": [{"filter": "scan-e2e/python-enhanced", "filterType": "WILDCARD"}]}]}),
    )
    .await;
    let enhanced_repo = "scan-e2e/python-enhanced";
    ecr(
        &s,
        "CreateRepository",
        json!({"repositoryName": enhanced_repo}),
    )
    .await;
    push("python", enhanced_repo);
    let (findings, answer) = scan_result(&s, enhanced_repo, "enhancedFindings").await;
    let want = expected(&recs, &python, true);
    assert!(want.iter().any(|f| f.0 == "CVE-2099-1020"));
    let got = enhanced_set(&findings);
    assert_eq!(
        got,
        want,
        "enhanced findings\n  unexpected: {:?}\n  missing: {:?}",
        got.difference(&want).collect::<Vec<_>>(),
        want.difference(&got).collect::<Vec<_>>()
    );
    assert_eq!(
        answer["imageScanFindings"]["findingSeverityCounts"],
        counts(&want)
    );
    let py = findings
        .iter()
        .find(|f| f["packageVulnerabilityDetails"]["vulnerabilityId"] == "CVE-2099-1020")
        .unwrap();
    assert_eq!(
        py["packageVulnerabilityDetails"]["vulnerablePackages"][0]["fixedInVersion"],
        bump(&requests.version)
    );
    let sbom = sbom_packages(&s, &format!("{enhanced_repo}:v1"), true);
    assert!(sbom.contains(&(requests.name.clone(), requests.version.clone())));
    for f in &got {
        assert!(
            sbom.contains(&(f.1.clone(), f.2.clone())),
            "{f:?} not in the SBOM"
        );
    }

    // Scanning did not disturb the content: pulled back, every byte is the
    // same (dir: keeps the manifest as served).
    for img in &images {
        let layout = fx.join(img.fixture);
        let (digest, manifest) = layout_manifest(&layout);
        let dir = work.path().join(format!("{}-pulled", img.fixture));
        let df = work.path().join(format!("{}-pull", img.fixture));
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            "--digestfile",
            df.to_str().unwrap(),
            &format!("docker://{}/{}:v1", s.addr, img.repo),
            &format!("dir:{}", dir.display()),
        ]);
        assert_eq!(digestfile(&df), digest, "{}", img.fixture);
        assert!(
            std::fs::read(dir.join("manifest.json")).unwrap()
                == std::fs::read(blob(&layout, &digest)).unwrap(),
            "{}: the manifest changed",
            img.fixture
        );
        let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
        blobs.extend(
            manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string()),
        );
        for b in blobs {
            let pulled = std::fs::read(dir.join(&b["sha256:".len()..])).unwrap();
            assert_eq!(
                common::sha256(&pulled),
                b,
                "{}: blob {b} changed",
                img.fixture
            );
        }
    }
    eprintln!("scans_real_images_exactly: {:.1?}", started.elapsed());
}

on_scale_out_too!(scans_real_images_exactly);
