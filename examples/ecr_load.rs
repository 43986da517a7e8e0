//! Load generator and seeder for the ECR API (used by `bench/ecr-api.sh`).
//!
//! Every request is `POST /` with AWS JSON 1.1, signed with SigV4 by
//! `berth::sigv4::sign` (service `ecr`, signed headers
//! `content-type;host;x-amz-date;x-amz-target`), sent with reqwest over
//! keep-alive connections. Works against Berth and against moto's server.
//!
//! ```text
//! cargo run --release --example ecr_load -- --endpoint http://127.0.0.1:PORT [global options] COMMAND [options]
//!
//! global options:
//!   --access-key-id AKID   (default AKIAIOSFODNN7EXAMPLE)
//!   --secret-access-key S  (default wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY)
//!   --region R             (default us-east-1)
//!   --threads N            tokio worker threads (default 2)
//!
//! commands (each prints one JSON object on stdout):
//!   create-repos --prefix P --count N [--start 0] [--concurrency 8]
//!       CreateRepository P00000 .. P{N-1}
//!   seed-images --repo R --count N [--concurrency 8] [--upload-layers]
//!       CreateRepository R, with --upload-layers push one config and one layer blob
//!       (InitiateLayerUpload/UploadLayerPart/CompleteLayerUpload), then PutImage N distinct OCI
//!       manifests (same config/layer, distinct annotation), tagged t00000 .. t{N-1}
//!   load --op OP [--repo R] [--duration 10] [--concurrency 16] [--max-results 100] [--timeout 60]
//!       OP: describe-images | list-images | describe-repositories | get-authorization-token
//!       Each of C workers owns one keep-alive connection and walks nextTokens, restarting at the
//!       end. Runs for --duration seconds; requests in flight at the deadline are awaited
//!       (bounded by --timeout). Prints {rps, p50_ms, p99_ms, errors, requests, items, items_per_s, ...}.
//!   token
//!       GetAuthorizationToken; prints {"authorizationToken": ...} (base64 of AWS:<token>).
//!   lifecycle-setup --prefix P --repos N --policy TEXT [--concurrency 8]
//!       For each repository P00000 .. P{N-1}: CreateRepository, push the config and layer blob
//!       seed-images uses (layer upload API), PutLifecyclePolicy with TEXT.
//!   lifecycle-seed --prefix P --repos N --images M [--concurrency 8]
//!       PutImage M distinct OCI manifests (those blobs, distinct annotation) into each of
//!       P00000 .. P{N-1}, tagged t00000 .. t{M-1} (used by bench/lifecycle-gc.sh).
//!   count-images --prefix P --repos N [--concurrency 8]
//!       ListImages (maxResults 1000, every page) of each repository; prints {images, min, max}.
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, Uri};
use base64::Engine;
use serde_json::{Value, json};

const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Signer {
    endpoint: String,
    host: HeaderValue,
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl Signer {
    /// The headers for one signed ECR call.
    fn headers(&self, op: &str, body: &[u8]) -> HeaderMap {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        h.insert("host", self.host.clone());
        h.insert(
            "x-amz-date",
            HeaderValue::from_str(&berth::sigv4::format_amz_date(now)).expect("ascii"),
        );
        h.insert(
            "x-amz-target",
            HeaderValue::from_str(&format!("{TARGET_PREFIX}{op}")).expect("ascii"),
        );
        let auth = berth::sigv4::sign(
            "POST",
            &Uri::from_static("/"),
            &h,
            &["content-type", "host", "x-amz-date", "x-amz-target"],
            body,
            &self.access_key_id,
            &self.secret_access_key,
            &self.region,
            "ecr",
        );
        h.insert(
            "authorization",
            HeaderValue::from_str(&auth).expect("ascii"),
        );
        h
    }

    /// One call: (HTTP status, body bytes).
    async fn call(
        &self,
        client: &reqwest::Client,
        op: &str,
        body: &Value,
    ) -> Result<(u16, bytes::Bytes), BoxError> {
        let body = serde_json::to_vec(body)?;
        let headers = self.headers(op, &body);
        let resp = client
            .post(format!("{}/", self.endpoint))
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, bytes))
    }

    /// A call that must succeed; returns the parsed JSON.
    async fn call_ok(
        &self,
        client: &reqwest::Client,
        op: &str,
        body: &Value,
    ) -> Result<Value, BoxError> {
        let (status, bytes) = self.call(client, op, body).await?;
        if status != 200 {
            return Err(format!(
                "{op}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
            .into());
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

fn client(timeout: Duration, pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

struct Args {
    pairs: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut pairs = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let k = raw[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {:?}", raw[i]))?;
            if k == "upload-layers" {
                pairs.push((k.to_string(), None));
                i += 1;
                continue;
            }
            let v = raw
                .get(i + 1)
                .ok_or_else(|| format!("--{k} needs a value"))?;
            pairs.push((k.to_string(), Some(v.clone())));
            i += 2;
        }
        Ok(Self { pairs })
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_deref())
    }
    fn flag(&self, k: &str) -> bool {
        self.pairs.iter().any(|(key, _)| key == k)
    }
    fn str_or(&self, k: &str, d: &str) -> String {
        self.get(k).unwrap_or(d).to_string()
    }
    fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{k}: {v:?} is not a number")),
        }
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // Global options come before the command, command options after it.
    let cmd_at = raw
        .iter()
        .enumerate()
        .position(|(i, a)| !a.starts_with("--") && (i == 0 || !raw[i - 1].starts_with("--")));
    let Some(cmd_at) = cmd_at else {
        eprintln!(
            "usage: ecr_load --endpoint URL [global options] COMMAND [options] (see the source header)"
        );
        std::process::exit(2);
    };
    let parsed =
        Args::parse(&raw[..cmd_at]).and_then(|g| Args::parse(&raw[cmd_at + 1..]).map(|c| (g, c)));
    let (global, args) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ecr_load: {e}");
            std::process::exit(2);
        }
    };
    let threads: usize = global.num("threads", 2).unwrap_or(2).clamp(1, 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cmd = raw[cmd_at].clone();
    match rt.block_on(run(&cmd, &global, &args)) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("ecr_load {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cmd: &str, global: &Args, args: &Args) -> Result<Value, BoxError> {
    let endpoint = global
        .get("endpoint")
        .ok_or("--endpoint is required")?
        .trim_end_matches('/')
        .to_string();
    let uri: Uri = endpoint.parse()?;
    let authority = uri.authority().ok_or("--endpoint needs host:port")?;
    if !matches!(authority.host(), "127.0.0.1" | "localhost") {
        return Err(format!("refusing a non-loopback endpoint: {endpoint}").into());
    }
    let signer = Arc::new(Signer {
        host: HeaderValue::from_str(authority.as_str())?,
        endpoint,
        access_key_id: global.str_or("access-key-id", "AKIAIOSFODNN7EXAMPLE"),
        secret_access_key: global.str_or(
            "secret-access-key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        region: global.str_or("region", "us-east-1"),
    });
    match cmd {
        "create-repos" => create_repos(signer, args).await,
        "seed-images" => seed_images(signer, args).await,
        "load" => load(signer, args).await,
        "lifecycle-setup" => lifecycle_setup(signer, args).await,
        "lifecycle-seed" => lifecycle_seed(signer, args).await,
        "count-images" => count_images(signer, args).await,
        "token" => {
            let c = client(Duration::from_secs(30), 1);
            let v = signer
                .call_ok(&c, "GetAuthorizationToken", &json!({}))
                .await?;
            let tok = v["authorizationData"][0]["authorizationToken"]
                .as_str()
                .ok_or("no authorizationToken in the answer")?;
            Ok(json!({ "authorizationToken": tok }))
        }
        other => Err(format!("unknown command {other:?}").into()),
    }
}

/// Run `count` jobs `f(i)` with at most `concurrency` in flight (each worker
/// owns one keep-alive connection). Returns (ok, errors, first error, seconds).
async fn run_jobs<F, Fut>(
    count: usize,
    concurrency: usize,
    f: F,
) -> (usize, usize, Option<String>, f64)
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = Arc::new(f);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, f) = (next.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let c = client(Duration::from_secs(60), 1);
            let (mut ok, mut err, mut first) = (0usize, 0usize, None::<String>);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                match f(c.clone(), i).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        err += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, err, first)
        }));
    }
    let (mut ok, mut err, mut first) = (0, 0, None);
    for t in tasks {
        let (o, e, fe) = t.await.expect("worker panicked");
        ok += o;
        err += e;
        if first.is_none() {
            first = fe;
        }
    }
    (ok, err, first, t0.elapsed().as_secs_f64())
}

fn seed_report(what: &str, ok: usize, errors: usize, first: Option<String>, secs: f64) -> Value {
    json!({
        "what": what,
        "ok": ok,
        "errors": errors,
        "first_error": first,
        "secs": (secs * 1000.0).round() / 1000.0,
        "per_s": ((ok as f64 / secs) * 10.0).round() / 10.0,
    })
}

async fn create_repos(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let prefix = args.str_or("prefix", "bench/repo-");
    let count: usize = args.num("count", 10_000)?;
    let start: usize = args.num("start", 0)?;
    let conc: usize = args.num("concurrency", 8)?;
    let (ok, err, first, secs) = run_jobs(count, conc, move |c, i| {
        let signer = signer.clone();
        let name = format!("{prefix}{:05}", start + i);
        async move {
            signer
                .call_ok(&c, "CreateRepository", &json!({ "repositoryName": name }))
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(seed_report("CreateRepository", ok, err, first, secs))
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// InitiateLayerUpload + one UploadLayerPart + CompleteLayerUpload.
async fn upload_blob(
    signer: &Signer,
    c: &reqwest::Client,
    repo: &str,
    blob: &[u8],
) -> Result<(), BoxError> {
    let digest = sha256(blob);
    let v = signer
        .call_ok(c, "InitiateLayerUpload", &json!({ "repositoryName": repo }))
        .await?;
    let id = v["uploadId"].as_str().ok_or("no uploadId")?.to_string();
    signer
        .call_ok(
            c,
            "UploadLayerPart",
            &json!({
                "repositoryName": repo,
                "uploadId": id,
                "partFirstByte": 0,
                "partLastByte": blob.len() - 1,
                "layerPartBlob": base64::engine::general_purpose::STANDARD.encode(blob),
            }),
        )
        .await?;
    signer
        .call_ok(
            c,
            "CompleteLayerUpload",
            &json!({ "repositoryName": repo, "uploadId": id, "layerDigests": [digest] }),
        )
        .await?;
    Ok(())
}

/// The config blob and the 1 KiB layer blob every seeded image references.
fn seed_blobs() -> (&'static [u8], Vec<u8>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    (config, layer)
}

/// A distinct OCI manifest over the seed blobs (distinct by `index`), and its digest.
fn seed_manifest(config: &[u8], layer: &[u8], index: usize) -> (String, String) {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": sha256(config), "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER, "digest": sha256(layer), "size": layer.len() }],
        "annotations": { "org.example.bench.index": index.to_string() },
    })
    .to_string();
    let digest = sha256(manifest.as_bytes());
    (manifest, digest)
}

async fn seed_images(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let repo = args.str_or("repo", "bench/images");
    let count: usize = args.num("count", 20_000)?;
    let conc: usize = args.num("concurrency", 8)?;
    let c = client(Duration::from_secs(60), 1);
    let t0 = Instant::now();
    signer
        .call_ok(&c, "CreateRepository", &json!({ "repositoryName": repo }))
        .await?;
    let (config, layer) = seed_blobs();
    if args.flag("upload-layers") {
        upload_blob(&signer, &c, &repo, config).await?;
        upload_blob(&signer, &c, &repo, &layer).await?;
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    let (config_d, layer_d) = (sha256(config), sha256(&layer));
    let (config_n, layer_n) = (config.len(), layer.len());
    let (ok, err, first, secs) = run_jobs(count, conc, move |c, i| {
        let signer = signer.clone();
        let repo = repo.clone();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_d, "size": config_n },
            "layers": [{ "mediaType": OCI_LAYER, "digest": layer_d, "size": layer_n }],
            "annotations": { "org.example.bench.index": i.to_string() },
        })
        .to_string();
        // Given explicitly: moto otherwise derives an image's digest from its
        // layer digests only, which would make all these images one digest.
        let digest = sha256(manifest.as_bytes());
        async move {
            signer
                .call_ok(
                    &c,
                    "PutImage",
                    &json!({
                        "repositoryName": repo,
                        "imageManifest": manifest,
                        "imageDigest": digest,
                        "imageManifestMediaType": OCI_MANIFEST,
                        "imageTag": format!("t{i:05}"),
                    }),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
    let mut v = seed_report("PutImage", ok, err, first, secs);
    v["setup_secs"] = json!((setup_secs * 1000.0).round() / 1000.0);
    Ok(v)
}

/// Repositories `{prefix}{i:05}`, each with the seed blobs and a lifecycle policy.
async fn lifecycle_setup(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let prefix = args.str_or("prefix", "bench/lc-");
    let repos: usize = args.num("repos", 1)?;
    let conc: usize = args.num("concurrency", 8)?;
    let policy = args
        .get("policy")
        .ok_or("--policy is required")?
        .to_string();
    serde_json::from_str::<Value>(&policy).map_err(|e| format!("--policy is not JSON: {e}"))?;
    let (ok, err, first, secs) = run_jobs(repos, conc, move |c, i| {
        let signer = signer.clone();
        let name = format!("{prefix}{i:05}");
        let policy = policy.clone();
        async move {
            signer
                .call_ok(&c, "CreateRepository", &json!({ "repositoryName": name }))
                .await?;
            let (config, layer) = seed_blobs();
            upload_blob(&signer, &c, &name, config).await?;
            upload_blob(&signer, &c, &name, &layer).await?;
            signer
                .call_ok(
                    &c,
                    "PutLifecyclePolicy",
                    &json!({ "repositoryName": name, "lifecyclePolicyText": policy }),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(seed_report(
        "CreateRepository+blobs+PutLifecyclePolicy",
        ok,
        err,
        first,
        secs,
    ))
}

/// `images` PutImage calls into each of `repos` repositories (job j: repository
/// j / images, tag t{j % images}); manifests are distinct across all repositories.
async fn lifecycle_seed(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let prefix = args.str_or("prefix", "bench/lc-");
    let repos: usize = args.num("repos", 1)?;
    let images: usize = args.num("images", 100)?;
    let conc: usize = args.num("concurrency", 8)?;
    if images == 0 || images > 99_999 {
        return Err("--images must be 1..=99999".into());
    }
    let (config, layer) = seed_blobs();
    let layer = Arc::new(layer);
    let (ok, err, first, secs) = run_jobs(repos * images, conc, move |c, j| {
        let signer = signer.clone();
        let repo = format!("{prefix}{:05}", j / images);
        let tag = format!("t{:05}", j % images);
        let (manifest, digest) = seed_manifest(config, &layer, j);
        async move {
            signer
                .call_ok(
                    &c,
                    "PutImage",
                    &json!({
                        "repositoryName": repo,
                        "imageManifest": manifest,
                        "imageDigest": digest,
                        "imageManifestMediaType": OCI_MANIFEST,
                        "imageTag": tag,
                    }),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(seed_report("PutImage", ok, err, first, secs))
}

/// Images per repository, counted by walking ListImages.
async fn count_images(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let prefix = args.str_or("prefix", "bench/lc-");
    let repos: usize = args.num("repos", 1)?;
    let conc: usize = args.num("concurrency", 8)?;
    let counts = Arc::new(std::sync::Mutex::new(vec![0u64; repos]));
    let out = counts.clone();
    let (ok, err, first, secs) = run_jobs(repos, conc, move |c, i| {
        let signer = signer.clone();
        let counts = counts.clone();
        let name = format!("{prefix}{i:05}");
        async move {
            let mut token: Option<String> = None;
            let mut n = 0u64;
            loop {
                let mut body = json!({ "repositoryName": name, "maxResults": 1000 });
                if let Some(t) = &token {
                    body["nextToken"] = json!(t);
                }
                let v = signer.call_ok(&c, "ListImages", &body).await?;
                n += v["imageIds"].as_array().map_or(0, Vec::len) as u64;
                match v["nextToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            counts.lock().expect("counts")[i] = n;
            Ok(())
        }
    })
    .await;
    let counts = out.lock().expect("counts");
    let mut v = seed_report("ListImages", ok, err, first, secs);
    v["images"] = json!(counts.iter().sum::<u64>());
    v["min"] = json!(counts.iter().min());
    v["max"] = json!(counts.iter().max());
    Ok(v)
}

/// Only what the load loop needs from a page: its size and the next token.
#[derive(serde::Deserialize)]
#[allow(non_snake_case)]
struct Page {
    nextToken: Option<String>,
    imageDetails: Option<Vec<serde::de::IgnoredAny>>,
    imageIds: Option<Vec<serde::de::IgnoredAny>>,
    repositories: Option<Vec<serde::de::IgnoredAny>>,
    authorizationData: Option<Vec<serde::de::IgnoredAny>>,
}

impl Page {
    fn items(&self) -> usize {
        [
            &self.imageDetails,
            &self.imageIds,
            &self.repositories,
            &self.authorizationData,
        ]
        .iter()
        .map(|v| v.as_ref().map_or(0, Vec::len))
        .sum()
    }
}

/// This process's user + system CPU seconds (Linux `/proc/self/stat`; 0 elsewhere).
fn own_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

#[derive(Default)]
struct WorkerStats {
    lat_us: Vec<u32>,
    ok: u64,
    errors: u64,
    items: u64,
    /// Times a worker reached the last page and started over.
    wraps: u64,
    first_error: Option<String>,
}

async fn load(signer: Arc<Signer>, args: &Args) -> Result<Value, BoxError> {
    let op_arg = args.str_or("op", "describe-images");
    let op = match op_arg.as_str() {
        "describe-images" => "DescribeImages",
        "list-images" => "ListImages",
        "describe-repositories" => "DescribeRepositories",
        "get-authorization-token" => "GetAuthorizationToken",
        other => return Err(format!("unknown --op {other:?}").into()),
    };
    let repo = args.str_or("repo", "bench/images");
    let secs: f64 = args.num("duration", 10.0)?;
    let secs = secs.clamp(0.5, 120.0);
    let conc: usize = args.num::<usize>("concurrency", 16)?.clamp(1, 256);
    let max_results: u32 = args.num("max-results", 100)?;
    let timeout: f64 = args.num("timeout", 60.0)?;
    let timeout = Duration::from_secs_f64(timeout.clamp(1.0, 300.0));

    let base = match op {
        "DescribeImages" | "ListImages" => {
            json!({ "repositoryName": repo, "maxResults": max_results })
        }
        "DescribeRepositories" => json!({ "maxResults": max_results }),
        _ => json!({}),
    };
    let cpu0 = own_cpu_secs();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let signer = signer.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let c = client(timeout, 1);
            let mut st = WorkerStats::default();
            let mut token: Option<String> = None;
            while Instant::now() < deadline {
                let mut body = base.clone();
                if let Some(t) = &token {
                    body["nextToken"] = json!(t);
                }
                let started = Instant::now();
                let res = signer.call(&c, op, &body).await;
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match res {
                    Ok((200, bytes)) => match serde_json::from_slice::<Page>(&bytes) {
                        Ok(page) => {
                            st.ok += 1;
                            st.lat_us.push(us);
                            st.items += page.items() as u64;
                            token = page.nextToken;
                            if token.is_none() {
                                st.wraps += 1;
                            }
                        }
                        Err(e) => {
                            st.errors += 1;
                            st.first_error
                                .get_or_insert_with(|| format!("bad JSON: {e}"));
                            token = None;
                        }
                    },
                    Ok((status, bytes)) => {
                        st.errors += 1;
                        st.first_error.get_or_insert_with(|| {
                            format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                            )
                        });
                        token = None;
                    }
                    Err(e) => {
                        st.errors += 1;
                        st.first_error.get_or_insert_with(|| e.to_string());
                        token = None;
                        // Do not spin on a dead server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            st
        }));
    }
    let mut all = WorkerStats::default();
    for t in tasks {
        let st = t.await.expect("worker panicked");
        all.lat_us.extend(st.lat_us);
        all.ok += st.ok;
        all.errors += st.errors;
        all.items += st.items;
        all.wraps += st.wraps;
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let client_cpu = own_cpu_secs() - cpu0;
    all.lat_us.sort_unstable();
    let pct = |p: f64| -> Value {
        if all.lat_us.is_empty() {
            return Value::Null;
        }
        let idx = ((p / 100.0) * all.lat_us.len() as f64).ceil() as usize;
        let v = all.lat_us[idx.clamp(1, all.lat_us.len()) - 1];
        json!((v as f64 / 10.0).round() / 100.0)
    };
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(json!({
        "op": op,
        "concurrency": conc,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "requests": all.ok,
        "errors": all.errors,
        "first_error": all.first_error,
        "rps": round1(all.ok as f64 / elapsed),
        "items": all.items,
        "items_per_s": round1(all.items as f64 / elapsed),
        "items_per_page": if all.ok > 0 { json!(round1(all.items as f64 / all.ok as f64)) } else { Value::Null },
        "wraps": all.wraps,
        "p50_ms": pct(50.0),
        "p99_ms": pct(99.0),
        "max_ms": pct(100.0),
        "client_cpu_s": (client_cpu * 100.0).round() / 100.0,
    }))
}
