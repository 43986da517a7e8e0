//! Interoperability tests: real container clients (skopeo, podman, buildah,
//! containerd/ctr, docker) push to and pull from a real Berth server, and
//! every manifest and blob is compared byte for byte with what the client
//! reports or stores.
//!
//! The clients are required: a missing binary fails the test (CI installs
//! them). Nothing here needs an external registry; all images are built
//! offline (`FROM scratch`, `buildah from scratch`, or an OCI layout written
//! by hand with `tar` + `gzip`).
//!
//! Run: `cargo test --test clients -- --test-threads=2`

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, require, sha256, tail};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const V2S2_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Upper bound (seconds) for any single client command.
const CMD_TIMEOUT: &str = "300";

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// A client program with fixed leading arguments and environment.
#[derive(Clone)]
struct Tool {
    prog: String,
    base: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tool {
    fn new(prog: &str) -> Tool {
        require(prog);
        Tool {
            prog: prog.to_string(),
            base: vec![],
            env: vec![],
        }
    }

    fn args<S: AsRef<str>>(mut self, args: &[S]) -> Tool {
        self.base
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    fn env(mut self, k: &str, v: impl AsRef<str>) -> Tool {
        self.env.push((k.to_string(), v.as_ref().to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "10", CMD_TIMEOUT, &self.prog])
            .args(&self.base)
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    fn describe(&self, args: &[&str]) -> String {
        let mut v = vec![self.prog.clone()];
        v.extend(self.base.iter().cloned());
        v.extend(args.iter().map(|s| s.to_string()));
        v.join(" ")
    }

    /// Run and return the output, whatever the exit status.
    fn output(&self, args: &[&str]) -> Output {
        let start = Instant::now();
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.describe(args)));
        eprintln!(
            "[{:>6.2}s] {} -> {}",
            start.elapsed().as_secs_f64(),
            self.describe(args),
            out.status
        );
        out
    }

    /// Run, panic with stdout/stderr on failure, return the full output.
    fn run_out(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        if !out.status.success() {
            panic!(
                "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                self.describe(args),
                tail(&out.stdout, 20_000),
                tail(&out.stderr, 20_000)
            );
        }
        out
    }

    /// Run, panic on failure, return stdout as text.
    fn run(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run_out(args).stdout).into_owned()
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP through curl
// ---------------------------------------------------------------------------

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn dump(&self) -> String {
        let mut s = format!("status {}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&tail(&self.body, 4000));
        s
    }
}

fn curl(method: &str, url: &str, accept: &[&str]) -> Resp {
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    let hdrs = tmp.path().join("headers");
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "120".into()];
    if method == "HEAD" {
        args.push("-I".into());
    } else {
        args.extend(["-X".into(), method.into()]);
    }
    if !accept.is_empty() {
        args.extend(["-H".into(), format!("Accept: {}", accept.join(", "))]);
    }
    args.extend([
        "-o".into(),
        body.display().to_string(),
        "-D".into(),
        hdrs.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        url.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Tool::new("curl").run(&args);
    let status: u16 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl status {out:?}"));
    let raw = std::fs::read_to_string(&hdrs).unwrap_or_default();
    // Keep the last header block only (after any 1xx responses).
    let block = raw.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// GET a manifest, assert it is served with `digest` and `media_type`, and
/// that HEAD agrees; return the exact bytes served.
fn served_manifest(
    s: &Server,
    name: &str,
    reference: &str,
    accept: &[&str],
    media_type: &str,
) -> Vec<u8> {
    let url = s.url(&format!("/v2/{name}/manifests/{reference}"));
    let r = curl("GET", &url, accept);
    assert_eq!(
        r.status,
        200,
        "GET {url} (Accept {accept:?}):\n{}",
        r.dump()
    );
    let digest = sha256(&r.body);
    assert_eq!(
        r.header("content-type"),
        Some(media_type),
        "content type of GET {url}:\n{}",
        r.dump()
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.as_str()),
        "Docker-Content-Digest of GET {url} differs from sha256 of the body:\n{}",
        r.dump()
    );
    let h = curl("HEAD", &url, accept);
    assert_eq!(h.status, 200, "HEAD {url}:\n{}", h.dump());
    assert_eq!(
        h.header("docker-content-digest"),
        Some(digest.as_str()),
        "HEAD {url}:\n{}",
        h.dump()
    );
    assert_eq!(
        h.header("content-length"),
        Some(r.body.len().to_string().as_str()),
        "HEAD {url}:\n{}",
        h.dump()
    );
    assert_eq!(
        h.header("content-type"),
        Some(media_type),
        "HEAD {url}:\n{}",
        h.dump()
    );
    r.body
}

/// Assert the manifest is served with exactly `digest`; return its bytes.
fn assert_manifest_digest(
    s: &Server,
    name: &str,
    reference: &str,
    accept: &[&str],
    media_type: &str,
    digest: &str,
) -> Vec<u8> {
    let body = served_manifest(s, name, reference, accept, media_type);
    assert_eq!(
        sha256(&body),
        digest.trim(),
        "manifest {name}:{reference} served by Berth has a different digest than the client reported;\nbody: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

fn assert_manifest_404(s: &Server, name: &str, reference: &str) {
    let url = s.url(&format!("/v2/{name}/manifests/{reference}"));
    let r = curl("GET", &url, &[OCI_MANIFEST, OCI_INDEX, V2S2, V2S2_LIST]);
    assert_eq!(r.status, 404, "GET {url} should be 404:\n{}", r.dump());
}

/// Assert the blob `digest` in repository `name` is served with exactly `bytes`.
fn assert_blob(s: &Server, name: &str, digest: &str, bytes: &[u8]) {
    let url = s.url(&format!("/v2/{name}/blobs/{digest}"));
    let r = curl("GET", &url, &[]);
    assert_eq!(r.status, 200, "GET {url}:\n{}", r.dump());
    assert_eq!(
        sha256(&r.body),
        digest,
        "blob body of {url} does not hash to its digest"
    );
    assert!(r.body == bytes, "blob {url} differs from the pushed bytes");
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Config and layer digests of an image manifest.
fn manifest_blobs(manifest: &[u8]) -> (String, Vec<String>) {
    let m = json(manifest);
    let config = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (config, layers)
}

// ---------------------------------------------------------------------------
// Temporary work area (unmounts anything a client left mounted under it)
// ---------------------------------------------------------------------------

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// An empty auth file for containers/image clients (isolated from the host).
    fn auth_file(&self) -> String {
        let p = self.path("auth.json");
        if !p.exists() {
            std::fs::write(&p, b"{\"auths\":{}}").unwrap();
        }
        p.display().to_string()
    }
}

fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

// ---------------------------------------------------------------------------
// Test content, built offline
// ---------------------------------------------------------------------------

const RANDOM_SIZE: usize = 3 * 1024 * 1024 + 12345;

/// A build context with a few files, one of them ~3 MiB of random data.
fn make_context(dir: &Path, label: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(
        dir.join("hello.txt"),
        format!("hello from berth client test {label}\n"),
    )
    .unwrap();
    let mut random = vec![0u8; RANDOM_SIZE];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    std::fs::write(dir.join("sub/random.bin"), &random).unwrap();
    std::fs::write(
        dir.join("sub/deeper/notes.json"),
        format!("{{\"label\":\"{label}\",\"purpose\":\"interop\"}}\n"),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Compare the files of a context with a directory tree that holds a copy.
fn assert_same_files(ctx: &Path, copy: &Path) {
    for rel in ["hello.txt", "sub/random.bin", "sub/deeper/notes.json"] {
        let a = std::fs::read(ctx.join(rel)).unwrap();
        let b = std::fs::read(copy.join(rel)).unwrap_or_else(|e| {
            panic!("{} missing after round trip: {e}", copy.join(rel).display())
        });
        assert!(
            a == b,
            "{rel} differs after round trip ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }
}

struct BuiltImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config_digest: String,
    layers: Vec<String>,
    /// Build context of the first layer (for file comparisons).
    ctx: PathBuf,
}

/// An OCI image layout on disk, written by hand.
struct Layout {
    dir: PathBuf,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            blobs: BTreeMap::new(),
        }
    }

    fn add_blob(&mut self, bytes: Vec<u8>) -> (String, usize) {
        let digest = sha256(&bytes);
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::write(self.dir.join("blobs/sha256").join(hex), &bytes).unwrap();
        let size = bytes.len();
        self.blobs.insert(digest.clone(), bytes);
        (digest, size)
    }

    fn blob(&self, digest: &str) -> &[u8] {
        &self.blobs[digest]
    }

    /// tar + gzip a directory into a layer blob; returns (digest, size, diff_id).
    fn add_layer(&mut self, src: &Path, scratch: &Path) -> (String, usize, String) {
        std::fs::create_dir_all(scratch).unwrap();
        let tar = scratch.join("layer.tar");
        Tool::new("tar").run(&[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            &src.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ]);
        Tool::new("gzip").run(&["-n", "-f", "-k", &tar.display().to_string()]);
        let raw = std::fs::read(&tar).unwrap();
        let gz = std::fs::read(scratch.join("layer.tar.gz")).unwrap();
        let diff_id = sha256(&raw);
        let (digest, size) = self.add_blob(gz);
        (digest, size, diff_id)
    }

    /// A two-layer image (a context with random data + a small unique layer).
    fn add_image(&mut self, work: &Path, label: &str, arch: &str) -> BuiltImage {
        let ctx = make_context(&work.join(format!("ctx-{label}")), label);
        let small = work.join(format!("small-{label}"));
        std::fs::create_dir_all(small.join("etc")).unwrap();
        std::fs::write(small.join("etc/berth-image"), format!("{label} {arch}\n")).unwrap();
        let l1 = self.add_layer(&ctx, &work.join(format!("scratch-{label}-1")));
        let l2 = self.add_layer(&small, &work.join(format!("scratch-{label}-2")));
        let config = serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/hello"], "Labels": {"org.example.berth": label}},
            "rootfs": {"type": "layers", "diff_ids": [l1.2, l2.2]},
            "history": [{"created_by": "layer 1"}, {"created_by": "layer 2"}]
        });
        let (config_digest, config_size) = self.add_blob(serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": l1.0, "size": l1.1},
                {"mediaType": OCI_LAYER_GZIP, "digest": l2.0, "size": l2.1}
            ]
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let (manifest_digest, _) = self.add_blob(manifest.clone());
        BuiltImage {
            manifest,
            manifest_digest,
            config_digest,
            layers: vec![l1.0, l2.0],
            ctx,
        }
    }

    /// Write index.json with one tagged entry.
    fn set_ref(&self, media_type: &str, digest: &str, tag: &str) {
        let size = self.blobs[digest].len();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}

/// A layout holding one image tagged `v1`.
fn single_image_layout(work: &Work, label: &str) -> (Layout, BuiltImage) {
    let mut layout = Layout::new(work.path(&format!("layout-{label}")));
    let img = layout.add_image(work.dir.path(), label, "amd64");
    layout.set_ref(OCI_MANIFEST, &img.manifest_digest, "v1");
    (layout, img)
}

/// A layout holding an OCI index (amd64 + arm64) tagged `multi`.
fn multi_arch_layout(work: &Work, label: &str) -> (Layout, Vec<u8>, String, Vec<BuiltImage>) {
    let mut layout = Layout::new(work.path(&format!("layout-{label}")));
    let amd = layout.add_image(work.dir.path(), &format!("{label}-amd64"), "amd64");
    let arm = layout.add_image(work.dir.path(), &format!("{label}-arm64"), "arm64");
    let entry = |img: &BuiltImage, arch: &str| {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"}
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")]
    });
    let index = serde_json::to_vec(&index).unwrap();
    let (index_digest, _) = layout.add_blob(index.clone());
    layout.set_ref(OCI_INDEX, &index_digest, "multi");
    (layout, index, index_digest, vec![amd, arm])
}

/// Read an OCI layout written by a client: (index.json entry digest, media type).
fn layout_ref(dir: &Path) -> (String, String) {
    let index = json(&std::fs::read(dir.join("index.json")).unwrap());
    let m = &index["manifests"].as_array().expect("manifests")[0];
    (
        m["digest"].as_str().unwrap().to_string(),
        m["mediaType"].as_str().unwrap_or("").to_string(),
    )
}

fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(dir.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} missing from layout {}: {e}", dir.display()))
}

/// Extract a gzip layer blob and compare its files with the build context.
fn assert_layer_has_context(layer: &[u8], ctx: &Path, scratch: &Path) {
    std::fs::create_dir_all(scratch.join("x")).unwrap();
    std::fs::write(scratch.join("layer.tgz"), layer).unwrap();
    Tool::new("tar").run(&[
        "-xzf",
        &scratch.join("layer.tgz").display().to_string(),
        "-C",
        &scratch.join("x").display().to_string(),
    ]);
    assert_same_files(ctx, &scratch.join("x"));
}

fn skopeo(work: &Work) -> Tool {
    Tool::new("skopeo")
        .args(&["--insecure-policy"])
        .env("REGISTRY_AUTH_FILE", work.auth_file())
}

fn read_digestfile(path: &str) -> String {
    let d = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("digest file {path}: {e}"));
    let d = d.trim().to_string();
    assert!(
        d.starts_with("sha256:") && d.len() == 71,
        "bad digest in {path}: {d:?}"
    );
    d
}

// ---------------------------------------------------------------------------
// 1. skopeo
// ---------------------------------------------------------------------------

/// OCI layout → Berth (OCI manifest, bytes unchanged) → OCI layout.
#[test]
fn skopeo_copy_oci_format_round_trip() {
    let s = Server::start();
    let work = Work::new();
    let sk = skopeo(&work);
    let (layout, img) = single_image_layout(&work, "skopeo-oci");
    let name = "skopeo/oci";
    let dest = format!("docker://{}/{name}:v1", s.addr);

    let df = work.p("digest-push");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        "--digestfile",
        &df,
        &layout.oci_ref("v1"),
        &dest,
    ]);
    let pushed = read_digestfile(&df);
    assert_eq!(
        pushed, img.manifest_digest,
        "skopeo rewrote a manifest that needed no change"
    );

    // Berth serves exactly the bytes that were pushed.
    let body = assert_manifest_digest(&s, name, "v1", &[OCI_MANIFEST], OCI_MANIFEST, &pushed);
    assert!(
        body == img.manifest,
        "served manifest bytes differ from the pushed bytes"
    );
    let by_digest =
        assert_manifest_digest(&s, name, &pushed, &[OCI_MANIFEST], OCI_MANIFEST, &pushed);
    assert!(by_digest == img.manifest);
    for d in std::iter::once(&img.config_digest).chain(&img.layers) {
        assert_blob(&s, name, d, layout.blob(d));
    }
    let raw = sk
        .run_out(&["inspect", "--raw", "--tls-verify=false", &dest])
        .stdout;
    assert!(
        raw == img.manifest,
        "skopeo inspect --raw differs from the pushed manifest"
    );

    // Pull into a fresh OCI layout: same manifest, same blobs, same files.
    let out = work.path("pulled");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--digestfile",
        &work.p("digest-pull"),
        &dest,
        &format!("oci:{}:pulled", out.display()),
    ]);
    assert_eq!(read_digestfile(&work.p("digest-pull")), pushed);
    let (digest, media_type) = layout_ref(&out);
    assert_eq!(digest, pushed);
    assert_eq!(media_type, OCI_MANIFEST);
    assert!(layout_blob(&out, &digest) == img.manifest);
    for d in std::iter::once(&img.config_digest).chain(&img.layers) {
        assert!(
            layout_blob(&out, d) == layout.blob(d),
            "blob {d} changed in the round trip"
        );
    }
    assert_layer_has_context(
        &layout_blob(&out, &img.layers[0]),
        &img.ctx,
        &work.path("extract"),
    );
}

/// OCI layout → Berth converted to Docker v2s2 → dir: and OCI layout.
#[test]
fn skopeo_copy_v2s2_format_round_trip() {
    let s = Server::start();
    let work = Work::new();
    let sk = skopeo(&work);
    let (layout, img) = single_image_layout(&work, "skopeo-v2s2");
    let name = "skopeo/v2s2";
    let dest = format!("docker://{}/{name}:v1", s.addr);

    let df = work.p("digest-push");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--digestfile",
        &df,
        &layout.oci_ref("v1"),
        &dest,
    ]);
    let pushed = read_digestfile(&df);
    let body = assert_manifest_digest(&s, name, "v1", &[V2S2], V2S2, &pushed);
    let m = json(&body);
    assert_eq!(m["mediaType"], V2S2);
    // Conversion changes media types only: blobs are the same bytes.
    let (config, layers) = manifest_blobs(&body);
    assert_eq!(config, img.config_digest);
    assert_eq!(layers, img.layers);
    for d in std::iter::once(&config).chain(&layers) {
        assert_blob(&s, name, d, layout.blob(d));
    }
    // A client accepting every type gets the same manifest.
    let any = assert_manifest_digest(
        &s,
        name,
        "v1",
        &[OCI_MANIFEST, V2S2, V2S2_LIST, OCI_INDEX],
        V2S2,
        &pushed,
    );
    assert!(any == body);
    let raw = sk
        .run_out(&["inspect", "--raw", "--tls-verify=false", &dest])
        .stdout;
    assert!(
        raw == body,
        "skopeo inspect --raw differs from the bytes Berth serves"
    );

    // dir: keeps the manifest bytes exactly as fetched.
    let dir = work.path("dir-pulled");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("dir:{}", dir.display()),
    ]);
    let fetched = std::fs::read(dir.join("manifest.json")).unwrap();
    assert!(
        fetched == body,
        "manifest fetched by skopeo differs from the pushed manifest"
    );
    for d in std::iter::once(&config).chain(&layers) {
        let f = std::fs::read(dir.join(d.strip_prefix("sha256:").unwrap())).unwrap();
        assert!(f == layout.blob(d), "blob {d} changed in the round trip");
    }

    // oci: skopeo converts back to an OCI manifest and re-serializes the
    // config on its side, so only the layers are compared byte for byte.
    let out = work.path("pulled");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:pulled", out.display()),
    ]);
    let (digest, media_type) = layout_ref(&out);
    assert_eq!(media_type, OCI_MANIFEST);
    let (_, layers2) = manifest_blobs(&layout_blob(&out, &digest));
    assert_eq!(layers2, layers);
    for d in &img.layers {
        assert!(
            layout_blob(&out, d) == layout.blob(d),
            "blob {d} changed in the round trip"
        );
    }
    assert_layer_has_context(
        &layout_blob(&out, &layers[0]),
        &img.ctx,
        &work.path("extract"),
    );
}

/// list-tags, copy between two repositories of Berth (cross-repo mount),
/// delete, and 404 afterwards.
#[test]
fn skopeo_list_tags_cross_repo_copy_and_delete() {
    let s = Server::start();
    let work = Work::new();
    let sk = skopeo(&work);
    let (layout, img) = single_image_layout(&work, "skopeo-tags");
    let a = "skopeo/tags-a";
    let b = "skopeo/tags-b";
    let ra = |tag: &str| format!("docker://{}/{a}:{tag}", s.addr);

    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &layout.oci_ref("v1"),
        &ra("v1"),
    ]);
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &layout.oci_ref("v1"),
        &ra("v2"),
    ]);
    let df = work.p("digest-v2s2");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--digestfile",
        &df,
        &layout.oci_ref("v1"),
        &ra("v2s2"),
    ]);
    let v2s2_digest = read_digestfile(&df);
    assert_ne!(v2s2_digest, img.manifest_digest);

    let tags_of = |repo: &str| -> Vec<String> {
        let out = sk.run(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/{repo}", s.addr),
        ]);
        let v = json(out.as_bytes());
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no Tags in {out}"))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        tags.sort();
        tags
    };
    assert_eq!(tags_of(a), ["v1", "v2", "v2s2"]);

    // Copy a → b inside Berth: skopeo mounts the layers from `a`.
    let rb = format!("docker://{}/{b}:copied", s.addr);
    let df = work.p("digest-copy");
    let out = sk.clone().args(&["--debug"]).run_out(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--digestfile",
        &df,
        &ra("v1"),
        &rb,
    ]);
    let debug = String::from_utf8_lossy(&out.stderr);
    assert_eq!(read_digestfile(&df), img.manifest_digest);
    let body = assert_manifest_digest(
        &s,
        b,
        "copied",
        &[OCI_MANIFEST],
        OCI_MANIFEST,
        &img.manifest_digest,
    );
    assert!(body == img.manifest);
    assert!(
        debug.contains(&format!("from={}", a.replace('/', "%2F"))) && debug.contains("mount OK"),
        "skopeo did not cross-repo mount a layer from {a} into {b}; debug output:\n{}",
        tail(debug.as_bytes(), 20_000)
    );
    for d in std::iter::once(&img.config_digest).chain(&img.layers) {
        assert_blob(&s, b, d, layout.blob(d));
    }
    assert_eq!(tags_of(b), ["copied"]);

    // Delete by tag: skopeo resolves the digest and deletes the manifest.
    sk.run(&["delete", "--tls-verify=false", &ra("v1")]);
    assert_manifest_404(&s, a, "v1");
    assert_manifest_404(&s, a, "v2");
    assert_manifest_404(&s, a, &img.manifest_digest);
    assert_eq!(tags_of(a), ["v2s2"]);
    // Other manifests and repositories are untouched.
    assert_manifest_digest(&s, a, "v2s2", &[V2S2], V2S2, &v2s2_digest);
    let body = assert_manifest_digest(
        &s,
        b,
        "copied",
        &[OCI_MANIFEST],
        OCI_MANIFEST,
        &img.manifest_digest,
    );
    assert!(body == img.manifest);

    // Delete by digest.
    sk.run(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/{a}@{v2s2_digest}", s.addr),
    ]);
    assert_manifest_404(&s, a, "v2s2");
    assert_manifest_404(&s, a, &v2s2_digest);
    assert_eq!(tags_of(a), Vec::<String>::new());
    let failed = sk.output(&["inspect", "--raw", "--tls-verify=false", &ra("v2s2")]);
    assert!(
        !failed.status.success(),
        "skopeo inspect of a deleted manifest succeeded"
    );
}

/// `skopeo copy --all` of a two-platform OCI index: the index digest and all
/// child manifests round-trip unchanged.
#[test]
fn skopeo_copy_all_multi_arch_index() {
    let s = Server::start();
    let work = Work::new();
    let sk = skopeo(&work);
    let (layout, index, index_digest, images) = multi_arch_layout(&work, "skopeo-multi");
    let name = "skopeo/multi";
    let dest = format!("docker://{}/{name}:v1", s.addr);

    let df = work.p("digest-push");
    sk.run(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--digestfile",
        &df,
        &layout.oci_ref("multi"),
        &dest,
    ]);
    assert_eq!(read_digestfile(&df), index_digest);
    let body = assert_manifest_digest(
        &s,
        name,
        "v1",
        &[OCI_INDEX, OCI_MANIFEST],
        OCI_INDEX,
        &index_digest,
    );
    assert!(
        body == index,
        "served index bytes differ from the pushed index"
    );
    for img in &images {
        let m = assert_manifest_digest(
            &s,
            name,
            &img.manifest_digest,
            &[OCI_MANIFEST],
            OCI_MANIFEST,
            &img.manifest_digest,
        );
        assert!(m == img.manifest);
        for d in std::iter::once(&img.config_digest).chain(&img.layers) {
            assert_blob(&s, name, d, layout.blob(d));
        }
    }
    let raw = sk
        .run_out(&["inspect", "--raw", "--tls-verify=false", &dest])
        .stdout;
    assert!(raw == index);

    let out = work.path("pulled");
    sk.run(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:pulled", out.display()),
    ]);
    let (digest, media_type) = layout_ref(&out);
    assert_eq!(digest, index_digest);
    assert_eq!(media_type, OCI_INDEX);
    for (d, bytes) in &layout.blobs {
        assert!(
            layout_blob(&out, d) == *bytes,
            "blob {d} changed in the round trip"
        );
    }
    for (i, img) in images.iter().enumerate() {
        assert_layer_has_context(
            &layout_blob(&out, &img.layers[0]),
            &img.ctx,
            &work.path(&format!("x{i}")),
        );
    }
}

// ---------------------------------------------------------------------------
// 2. podman
// ---------------------------------------------------------------------------

fn podman(work: &Work, store: &str) -> Tool {
    Tool::new("podman")
        .args(&[
            "--root",
            &work.p(&format!("{store}/root")),
            "--runroot",
            &work.p(&format!("{store}/run")),
            "--tmpdir",
            &work.p(&format!("{store}/tmp")),
            "--events-backend",
            "none",
        ])
        .env("REGISTRY_AUTH_FILE", work.auth_file())
}

#[test]
fn podman_push_pull_oci_and_v2s2() {
    let s = Server::start();
    let work = Work::new();
    let ctx = make_context(&work.path("ctx"), "podman");
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY . /data/\nCMD [\"/data/hello.txt\"]\n",
    )
    .unwrap();
    let p = podman(&work, "build");
    let local = "localhost/berth-test/podman:v1";
    p.run(&[
        "build",
        "-q",
        "-t",
        local,
        "-f",
        &ctx.join("Containerfile").display().to_string(),
        &ctx.display().to_string(),
    ]);

    let name = "podman/img";
    for (tag, format, accept) in [("oci", "oci", OCI_MANIFEST), ("v2s2", "v2s2", V2S2)] {
        let remote = format!("{}/{name}:{tag}", s.addr);
        let df = work.p(&format!("digest-{tag}"));
        p.run(&[
            "push",
            "--tls-verify=false",
            "--format",
            format,
            "--digestfile",
            &df,
            local,
            &remote,
        ]);
        let pushed = read_digestfile(&df);
        let body = assert_manifest_digest(&s, name, tag, &[accept], accept, &pushed);
        let (config, layers) = manifest_blobs(&body);
        assert_eq!(json(&body)["mediaType"], accept);

        // Pull into an empty store.
        let p2 = podman(&work, &format!("pull-{tag}"));
        p2.run(&["pull", "-q", "--tls-verify=false", &remote]);
        let digest = p2.run(&["image", "inspect", "--format", "{{.Digest}}", &remote]);
        assert_eq!(
            digest.trim(),
            pushed,
            "podman reports another digest than it pushed"
        );
        let id = p2.run(&["image", "inspect", "--format", "{{.Id}}", &remote]);
        assert_eq!(
            format!("sha256:{}", id.trim()),
            config,
            "image ID is not the config digest"
        );
        let repo_digests = p2.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &remote,
        ]);
        assert!(
            repo_digests.contains(&format!("{}/{name}@{pushed}", s.addr)),
            "RepoDigests {repo_digests}"
        );
        for l in &layers {
            let r = curl("HEAD", &s.url(&format!("/v2/{name}/blobs/{l}")), &[]);
            assert_eq!(r.status, 200, "{}", r.dump());
        }
        let mnt = p2.run(&["image", "mount", &remote]);
        assert_same_files(&ctx, &Path::new(mnt.trim()).join("data"));
        p2.run(&["image", "unmount", &remote]);
        p2.run(&["rmi", "-a", "-f"]);
    }
    p.run(&["rmi", "-a", "-f"]);
}

// ---------------------------------------------------------------------------
// 3. buildah
// ---------------------------------------------------------------------------

fn buildah(work: &Work, store: &str) -> Tool {
    Tool::new("buildah")
        .args(&[
            "--root",
            &work.p(&format!("{store}/root")),
            "--runroot",
            &work.p(&format!("{store}/run")),
        ])
        .env("REGISTRY_AUTH_FILE", work.auth_file())
}

#[test]
fn buildah_push_both_formats_and_from() {
    let s = Server::start();
    let work = Work::new();
    let ctx = make_context(&work.path("ctx"), "buildah");
    let b = buildah(&work, "build");
    let c = b.run(&["from", "scratch"]);
    let c = c.trim();
    b.run(&["copy", c, &ctx.display().to_string(), "/data/"]);
    b.run(&[
        "config",
        "--cmd",
        "[\"/data/hello.txt\"]",
        "--label",
        "org.example=berth",
        c,
    ]);
    let local = "localhost/berth-test/buildah:v1";
    b.run(&["commit", "-q", c, local]);
    b.run(&["rm", c]);

    let name = "buildah/img";
    for (tag, format, accept) in [("oci", "oci", OCI_MANIFEST), ("v2s2", "docker", V2S2)] {
        let remote = format!("{}/{name}:{tag}", s.addr);
        let df = work.p(&format!("digest-{tag}"));
        b.run(&[
            "push",
            "--tls-verify=false",
            "--format",
            format,
            "--digestfile",
            &df,
            local,
            &format!("docker://{remote}"),
        ]);
        let pushed = read_digestfile(&df);
        let body = assert_manifest_digest(&s, name, tag, &[accept], accept, &pushed);
        assert_eq!(json(&body)["mediaType"], accept);
        let (config, _) = manifest_blobs(&body);

        // `buildah from` the pushed image into an empty store.
        let b2 = buildah(&work, &format!("from-{tag}"));
        let c2 = b2.run(&["from", "-q", "--tls-verify=false", &remote]);
        let c2 = c2.trim();
        let from_digest = b2.run(&[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.FromImageDigest}}",
            c2,
        ]);
        assert_eq!(
            from_digest.trim(),
            pushed,
            "buildah from resolved another digest"
        );
        let from_id = b2.run(&[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.FromImageID}}",
            c2,
        ]);
        assert_eq!(format!("sha256:{}", from_id.trim()), config);
        let mnt = b2.run(&["mount", c2]);
        assert_same_files(&ctx, &Path::new(mnt.trim()).join("data"));
        b2.run(&["umount", c2]);
        b2.run(&["rm", c2]);
        b2.run(&["rmi", "-a", "-f"]);
    }

    // A manifest list of two local images (amd64 + arm64), pushed with --all.
    let c = b.run(&["from", "scratch"]);
    let c = c.trim();
    b.run(&[
        "copy",
        c,
        &ctx.join("hello.txt").display().to_string(),
        "/hello.txt",
    ]);
    b.run(&["config", "--arch", "arm64", "--os", "linux", c]);
    let local_arm = "localhost/berth-test/buildah-arm64:v1";
    b.run(&["commit", "-q", c, local_arm]);
    b.run(&["rm", c]);
    for (tag, format, accept, child) in [
        ("list-oci", "oci", OCI_INDEX, OCI_MANIFEST),
        ("list-v2s2", "v2s2", V2S2_LIST, V2S2),
    ] {
        let list = format!("localhost/berth-test/list-{tag}");
        b.run(&["manifest", "create", &list]);
        b.run(&[
            "manifest",
            "add",
            &list,
            &format!("containers-storage:{local}"),
        ]);
        b.run(&[
            "manifest",
            "add",
            &list,
            &format!("containers-storage:{local_arm}"),
        ]);
        let remote = format!("{}/{name}:{tag}", s.addr);
        let df = work.p(&format!("digest-{tag}"));
        b.run(&[
            "manifest",
            "push",
            "--all",
            "--tls-verify=false",
            "--format",
            format,
            "--digestfile",
            &df,
            &list,
            &format!("docker://{remote}"),
        ]);
        let pushed = read_digestfile(&df);
        let body = assert_manifest_digest(&s, name, tag, &[accept], accept, &pushed);
        let entries = json(&body)["manifests"]
            .as_array()
            .expect("manifests")
            .clone();
        assert_eq!(entries.len(), 2, "{}", String::from_utf8_lossy(&body));
        let mut archs = vec![];
        for e in &entries {
            let d = e["digest"].as_str().unwrap();
            assert_eq!(e["mediaType"], child);
            let m = assert_manifest_digest(&s, name, d, &[child], child, d);
            assert_eq!(e["size"].as_u64().unwrap() as usize, m.len());
            archs.push(e["platform"]["architecture"].as_str().unwrap().to_string());
        }
        archs.sort();
        assert_eq!(archs, ["amd64", "arm64"]);
        // A client pulling the list by tag sees the same bytes.
        let raw = skopeo(&work)
            .run_out(&[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{remote}"),
            ])
            .stdout;
        assert!(raw == body);
    }
    b.run(&["rmi", "-a", "-f"]);
}

// ---------------------------------------------------------------------------
// 4. containerd + ctr
// ---------------------------------------------------------------------------

/// A containerd daemon with all state under a temporary directory.
struct Containerd {
    child: Child,
    sock: String,
    log: PathBuf,
}

impl Containerd {
    fn start(work: &Work) -> Containerd {
        require("containerd");
        let dir = work.path("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = dir.join("containerd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start containerd");
        let mut daemon = Containerd {
            child,
            sock: format!("{d}/c.sock"),
            log,
        };
        let ctr = Tool::new("ctr").args(&["-a", &daemon.sock]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", daemon.log_text());
            }
            if Path::new(&daemon.sock).exists() && ctr.output(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd socket not ready:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn log_text(&self) -> String {
        tail(&std::fs::read(&self.log).unwrap_or_default(), 10_000)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Digest of an image in containerd's image store (`ctr images ls`).
fn ctr_image_digest(ctr: &Tool, reference: &str) -> String {
    let out = ctr.run(&["images", "ls", &format!("name=={reference}")]);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .unwrap_or_else(|| panic!("{reference} not in `ctr images ls`:\n{out}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn containerd_ctr_pull_tag_push() {
    let s = Server::start();
    let work = Work::new();
    let sk = skopeo(&work);
    require("ctr");

    // Seed Berth with an OCI image, the same image as Docker v2s2, and an index.
    let (layout, img) = single_image_layout(&work, "ctr-single");
    let (mlayout, index, index_digest, mimages) = multi_arch_layout(&work, "ctr-multi");
    let src = "seed/img";
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &layout.oci_ref("v1"),
        &format!("docker://{}/{src}:oci", s.addr),
    ]);
    let df = work.p("digest-v2s2");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--digestfile",
        &df,
        &layout.oci_ref("v1"),
        &format!("docker://{}/{src}:v2s2", s.addr),
    ]);
    let v2s2_digest = read_digestfile(&df);
    sk.run(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &mlayout.oci_ref("multi"),
        &format!("docker://{}/{src}:multi", s.addr),
    ]);

    let daemon = Containerd::start(&work);
    let ctr = Tool::new("ctr").args(&["-a", &daemon.sock, "-n", "test"]);

    let cases = [
        ("oci", OCI_MANIFEST, img.manifest_digest.clone()),
        ("v2s2", V2S2, v2s2_digest),
        ("multi", OCI_INDEX, index_digest.clone()),
    ];
    for (tag, media_type, expected) in cases {
        let served = assert_manifest_digest(&s, src, tag, &[media_type], media_type, &expected);
        if tag == "multi" {
            assert!(
                served == index,
                "index served by Berth differs from the pushed index"
            );
        }
        let from = format!("{}/{src}:{tag}", s.addr);
        let mut pull = vec!["images", "pull", "--plain-http"];
        if tag == "multi" {
            pull.push("--all-platforms");
        }
        pull.push(&from);
        ctr.run(&pull);
        assert_eq!(
            ctr_image_digest(&ctr, &from),
            expected,
            "ctr pulled another digest than Berth serves"
        );
        let stored = ctr.run_out(&["content", "get", &expected]).stdout;
        assert!(
            stored == served,
            "manifest bytes stored by containerd differ from Berth's"
        );

        // Tag into another repository and push it back (cross-repo mounts).
        let to_repo = format!("ctr/{tag}");
        let to = format!("{}/{to_repo}:pushed", s.addr);
        ctr.run(&["images", "tag", &from, &to]);
        ctr.run(&["images", "push", "--plain-http", &to]);
        assert_eq!(ctr_image_digest(&ctr, &to), expected);
        let again =
            assert_manifest_digest(&s, &to_repo, "pushed", &[media_type], media_type, &expected);
        assert!(
            again == served,
            "manifest pushed by ctr differs from the one it pulled"
        );
        let images: Vec<&BuiltImage> = if tag == "multi" {
            mimages.iter().collect()
        } else {
            vec![&img]
        };
        let blobs = if tag == "multi" { &mlayout } else { &layout };
        for im in images {
            if tag == "multi" {
                let m = assert_manifest_digest(
                    &s,
                    &to_repo,
                    &im.manifest_digest,
                    &[OCI_MANIFEST],
                    OCI_MANIFEST,
                    &im.manifest_digest,
                );
                assert!(m == im.manifest);
            }
            for d in std::iter::once(&im.config_digest).chain(&im.layers) {
                assert_blob(&s, &to_repo, d, blobs.blob(d));
            }
        }
    }
    drop(daemon);
}

// ---------------------------------------------------------------------------
// 5. docker
// ---------------------------------------------------------------------------

/// Removes the Docker images and containers a test created.
struct DockerCleanup {
    docker: Tool,
    images: Vec<String>,
    containers: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.docker.output(&["rm", "-f", c]);
        }
        for i in &self.images {
            let _ = self.docker.output(&["rmi", i]);
        }
    }
}

fn docker_push_digest(out: &str) -> String {
    // "v1: digest: sha256:<hex> size: 528"
    let d = out
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"));
    d.to_string()
}

#[test]
fn docker_build_push_pull() {
    let s = Server::start();
    let work = Work::new();
    std::fs::create_dir_all(work.path("docker-config")).unwrap();
    let docker = Tool::new("docker").env("DOCKER_CONFIG", work.p("docker-config"));
    let ctx = make_context(&work.path("ctx"), "docker");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY . /data/\nCMD [\"/data/hello.txt\"]\n",
    )
    .unwrap();

    let name = "docker/img";
    let v1 = format!("{}/{name}:v1", s.addr);
    let v2 = format!("{}/{name}:v2", s.addr);
    let mut cleanup = DockerCleanup {
        docker: docker.clone(),
        images: vec![v1.clone(), v2.clone()],
        containers: vec![],
    };

    docker.run(&["build", "-q", "-t", &v1, &ctx.display().to_string()]);
    let built_id = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", &v1])
        .trim()
        .to_string();

    let pushed = docker_push_digest(&docker.run(&["push", &v1]));
    let body = assert_manifest_digest(&s, name, "v1", &[V2S2], V2S2, &pushed);
    let (config, layers) = manifest_blobs(&body);
    assert_eq!(config, built_id, "config digest is not the image ID");
    // Docker sends the v2s2 manifest to clients that accept everything too.
    assert_manifest_digest(
        &s,
        name,
        "v1",
        &[OCI_MANIFEST, V2S2, V2S2_LIST, OCI_INDEX],
        V2S2,
        &pushed,
    );

    // Second tag of the same image: identical manifest.
    docker.run(&["tag", &v1, &v2]);
    let pushed2 = docker_push_digest(&docker.run(&["push", &v2]));
    assert_eq!(pushed2, pushed);
    let body2 = assert_manifest_digest(&s, name, "v2", &[V2S2], V2S2, &pushed);
    assert!(body2 == body);

    // Remove locally, pull back.
    docker.run(&["rmi", &v1, &v2]);
    let gone = docker.output(&["image", "inspect", &v1]);
    assert!(!gone.status.success(), "image still present after rmi");
    docker.run(&["pull", &v1]);
    let repo_digest = docker.run(&["inspect", "--format", "{{index .RepoDigests 0}}", &v1]);
    assert_eq!(repo_digest.trim(), format!("{}/{name}@{pushed}", s.addr));
    let pulled_id = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", &v1])
        .trim()
        .to_string();
    assert_eq!(
        pulled_id, built_id,
        "pulled image ID differs from the built one"
    );
    for l in &layers {
        let r = curl("HEAD", &s.url(&format!("/v2/{name}/blobs/{l}")), &[]);
        assert_eq!(r.status, 200, "{}", r.dump());
    }

    // Files survive the round trip.
    let cid = docker.run(&["create", &v1, "/none"]).trim().to_string();
    cleanup.containers.push(cid.clone());
    let out = work.path("out");
    std::fs::create_dir_all(&out).unwrap();
    docker.run(&["cp", &format!("{cid}:/data/."), &out.display().to_string()]);
    assert_same_files(&ctx, &out);
    drop(cleanup);
}

// ---------------------------------------------------------------------------
// 6. HTTPS with a test CA
// ---------------------------------------------------------------------------

/// Every client against `--tls-cert` on the machine's non-loopback address
/// (where Docker, like the others, verifies the certificate), each told to
/// trust the test CA its own way, none told to skip verification: skopeo and
/// podman (`--cert-dir`), containerd (`hosts.toml`'s `ca`, and `--tlscacert`),
/// docker (`/etc/docker/certs.d/HOST:PORT/ca.crt`).
#[test]
fn every_client_over_https_with_a_test_ca() {
    use common::tls::{DockerTrust, Pki};
    let pki = Pki::new();
    let work = Work::new();
    let s = common::tls::start_https(&pki, &work.path("data"), &["--auth", "none"], false);
    let addr = s.addr.clone();
    let cert_dir = pki.cert_dir().display().to_string();
    let sk = skopeo(&work);

    // skopeo: an OCI layout pushed, the bytes unchanged; without the CA it refuses.
    let (layout, img) = single_image_layout(&work, "https");
    let name = "tls/img";
    let remote = format!("{addr}/{name}:v1");
    let refused = sk.output(&["copy", &layout.oci_ref("v1"), &format!("docker://{remote}")]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("certificate"), "{why}");
    let df = work.p("digest-https");
    sk.run(&[
        "copy",
        "--dest-cert-dir",
        &cert_dir,
        "--digestfile",
        &df,
        &layout.oci_ref("v1"),
        &format!("docker://{remote}"),
    ]);
    assert_eq!(read_digestfile(&df), img.manifest_digest);
    let raw = sk
        .run_out(&[
            "inspect",
            "--raw",
            "--cert-dir",
            &cert_dir,
            &format!("docker://{remote}"),
        ])
        .stdout;
    assert!(raw == img.manifest, "the manifest came back changed");

    // podman: pull into an empty store, push under another name.
    let p = podman(&work, "https");
    p.run(&["pull", "-q", "--cert-dir", &cert_dir, &remote]);
    let digest = p.run(&["image", "inspect", "--format", "{{.Digest}}", &remote]);
    assert_eq!(digest.trim(), img.manifest_digest);
    let podman_remote = format!("{addr}/tls/podman:v1");
    p.run(&["tag", &remote, &podman_remote]);
    p.run(&["push", "-q", "--cert-dir", &cert_dir, &podman_remote]);
    p.run(&["rmi", "-a", "-f"]);

    // containerd: pull through a hosts.toml naming the CA, push with --tlscacert.
    let hosts = work.path("certs.d");
    std::fs::create_dir_all(hosts.join(&addr)).unwrap();
    std::fs::write(
        hosts.join(&addr).join("hosts.toml"),
        format!(
            "server = \"https://{addr}\"\n[host.\"https://{addr}\"]\n  ca = \"{}\"\n",
            pki.ca().display()
        ),
    )
    .unwrap();
    let daemon = Containerd::start(&work);
    let ctr = Tool::new("ctr").args(&["-a", &daemon.sock, "-n", "test"]);
    ctr.run(&[
        "images",
        "pull",
        "--hosts-dir",
        &hosts.display().to_string(),
        &remote,
    ]);
    assert_eq!(ctr_image_digest(&ctr, &remote), img.manifest_digest);
    let ctr_remote = format!("{addr}/tls/ctr:v1");
    ctr.run(&["images", "tag", &remote, &ctr_remote]);
    ctr.run(&[
        "images",
        "push",
        "--tlscacert",
        &pki.ca().display().to_string(),
        &ctr_remote,
    ]);
    drop(daemon);

    // docker: the engine trusts the CA for this registry only.
    let _trust = DockerTrust::install(&addr, &pki.ca());
    std::fs::create_dir_all(work.path("docker-config")).unwrap();
    let docker = Tool::new("docker").env("DOCKER_CONFIG", work.p("docker-config"));
    let _cleanup = DockerCleanup {
        docker: docker.clone(),
        images: vec![ctr_remote.clone(), podman_remote.clone()],
        containers: vec![],
    };
    for r in [&podman_remote, &ctr_remote] {
        docker.run(&["pull", "-q", r]);
    }
    // containerd pushed back the very bytes it pulled.
    let back = sk
        .run_out(&[
            "inspect",
            "--raw",
            "--cert-dir",
            &cert_dir,
            &format!("docker://{ctr_remote}"),
        ])
        .stdout;
    assert!(back == img.manifest, "ctr pushed another manifest");
    let repo_digest = docker.run(&[
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &ctr_remote,
    ]);
    assert_eq!(
        repo_digest.trim(),
        format!("{addr}/tls/ctr@{}", img.manifest_digest)
    );
}
