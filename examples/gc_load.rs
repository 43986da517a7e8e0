//! Load generator for the lifecycle/GC benchmark (`bench/lifecycle-gc.sh`): pushes
//! garbage and images over the OCI `/v2/` API of an open registry (Berth with
//! `--auth none`, or CNCF Distribution), with reqwest keep-alive connections.
//!
//! All content is derived from `--seed` and an index, so the same command
//! pushes the same bytes to every server and a later command (the deleter of
//! `images --churn-*`) can recompute the digests of what an earlier one pushed.
//!
//! ```text
//! cargo run --release --example gc_load -- --endpoint http://127.0.0.1:PORT [--threads 2] COMMAND [options]
//!
//! commands (each prints one JSON object on stdout):
//!   blobs --repo R --count N [--size 512] [--concurrency 32] [--seed 1] [--mode post|post-put]
//!       Push N distinct blobs that no manifest references. post: one monolithic
//!       `POST /v2/R/blobs/uploads/?digest=` with the body (201 expected; Berth);
//!       post-put: `POST` then `PUT <Location>?digest=` with the body (Distribution
//!       2.8 ignores a body on POST).
//!   small-images --repo R --count N [--concurrency 16] [--seed 1]
//!       Push N small images (a distinct 256 B layer, a distinct config, an OCI
//!       manifest tagged v00000 ..): what `images --churn-*` deletes.
//!   images --repo R --count N [--layer-size 4194304] [--concurrency 4] [--seed 1]
//!          [--churn-repo R2 --churn-count K --churn-rate 100 --churn-seed 1]
//!       Push N images, each one distinct layer of --layer-size pseudo-random bytes
//!       (POST, then PUT <Location>?digest= with the body), a distinct config (same)
//!       and a manifest PUT by tag t00000 ..; C workers, one connection each. Digests
//!       are computed before the clock starts, the bytes are regenerated while pushing.
//!       With --churn-repo: meanwhile, one more connection deletes (DELETE manifest by
//!       digest) the images small-images pushed there, --churn-rate per second,
//!       until the pushes end or K are deleted. Prints {secs, mib_per_s, ...}.
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------- content

/// SplitMix64: a fast deterministic byte stream (not cryptographic, only distinct).
struct SplitMix(u64);

impl SplitMix {
    fn new(stream: &str, seed: u64, index: u64) -> Self {
        // Mix the stream name in so that blobs of different commands differ.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in stream.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut s = SplitMix(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.rotate_left(32));
        s.next();
        s
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// A blob of `size` bytes, distinct for each (stream, seed, index).
fn blob(stream: &str, seed: u64, index: u64, size: usize) -> Vec<u8> {
    let head = format!("berth-bench {stream} seed={seed} index={index}\n");
    let mut v = head.into_bytes();
    if v.len() < size {
        let rest = SplitMix::new(stream, seed, index).fill(size - v.len());
        v.extend_from_slice(&rest);
    }
    v.truncate(size.max(1));
    v
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// An image: one layer (given by digest and size), a distinct config, the manifest.
struct Image {
    layer_digest: String,
    config: Bytes,
    config_digest: String,
    manifest: Bytes,
    manifest_digest: String,
}

fn image(stream: &str, seed: u64, index: u64, layer_digest: String, layer_size: usize) -> Image {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "org.example.bench": format!("{stream}/{seed}/{index}") } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size }],
    })
    .to_string()
    .into_bytes();
    Image {
        manifest_digest: sha256(&manifest),
        layer_digest,
        config: config.into(),
        config_digest,
        manifest: manifest.into(),
    }
}

/// The victims of the churn deleter: 256 B layers.
const SMALL_LAYER: usize = 256;
fn small_image(seed: u64, index: u64) -> (Bytes, Image) {
    let layer = blob("victim-layer", seed, index, SMALL_LAYER);
    let img = image("victim", seed, index, sha256(&layer), SMALL_LAYER);
    (layer.into(), img)
}

// ---------------------------------------------------------------- HTTP

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

struct Target {
    endpoint: String,
}

fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

impl Target {
    /// A Location header as an absolute URL (loopback only).
    fn absolute(&self, location: &str) -> Result<String, BoxError> {
        if location.starts_with("http://127.0.0.1:") || location.starts_with("http://localhost:") {
            Ok(location.to_string())
        } else if location.starts_with('/') {
            Ok(format!("{}{location}", self.endpoint))
        } else {
            Err(format!("unexpected Location {location:?}").into())
        }
    }

    async fn push_blob(
        &self,
        c: &reqwest::Client,
        repo: &str,
        digest: &str,
        body: Bytes,
        single_post: bool,
    ) -> Result<(), BoxError> {
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.endpoint);
        if single_post {
            let resp = c
                .post(format!("{start}?digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let b = resp.bytes().await?;
            if status != 201 {
                return Err(format!("POST ?digest= {digest}: HTTP {status}: {}", short(&b)).into());
            }
            return Ok(());
        }
        let resp = c.post(&start).header("content-length", "0").send().await?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let b = resp.bytes().await?;
        let Some(location) = location.filter(|_| status == 202) else {
            return Err(format!("POST {start}: HTTP {status}: {}", short(&b)).into());
        };
        let url = self.absolute(&location)?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = c
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let b = resp.bytes().await?;
        if status != 201 {
            return Err(
                format!("PUT upload ?digest={digest}: HTTP {status}: {}", short(&b)).into(),
            );
        }
        Ok(())
    }

    async fn put_manifest(
        &self,
        c: &reqwest::Client,
        repo: &str,
        reference: &str,
        manifest: Bytes,
    ) -> Result<(), BoxError> {
        let resp = c
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.endpoint))
            .header("content-type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let b = resp.bytes().await?;
        if status != 201 {
            return Err(format!(
                "PUT manifest {repo}:{reference}: HTTP {status}: {}",
                short(&b)
            )
            .into());
        }
        Ok(())
    }

    async fn delete_manifest(
        &self,
        c: &reqwest::Client,
        repo: &str,
        digest: &str,
    ) -> Result<(), BoxError> {
        let resp = c
            .delete(format!("{}/v2/{repo}/manifests/{digest}", self.endpoint))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let b = resp.bytes().await?;
        if status != 202 {
            return Err(format!(
                "DELETE manifest {repo}@{digest}: HTTP {status}: {}",
                short(&b)
            )
            .into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- arguments

struct Args(Vec<(String, String)>);

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut pairs = Vec::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let k = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            pairs.push((k.to_string(), v.clone()));
        }
        Ok(Args(pairs))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
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
    // Global options (--key value pairs) come before the command.
    let mut i = 0;
    while i < raw.len() && raw[i].starts_with("--") {
        i += 2;
    }
    if i >= raw.len() {
        eprintln!(
            "usage: gc_load --endpoint URL [--threads N] COMMAND [options] (see the source header)"
        );
        std::process::exit(2);
    }
    let parsed = Args::parse(&raw[..i]).and_then(|g| Args::parse(&raw[i + 1..]).map(|a| (g, a)));
    let (global, args) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("gc_load: {e}");
            std::process::exit(2);
        }
    };
    let threads: usize = global.num("threads", 2).unwrap_or(2).clamp(1, 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cmd = raw[i].clone();
    match rt.block_on(run(&cmd, &global, &args, threads)) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("gc_load {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cmd: &str, global: &Args, args: &Args, threads: usize) -> Result<Value, BoxError> {
    let endpoint = global
        .get("endpoint")
        .ok_or("--endpoint is required")?
        .trim_end_matches('/')
        .to_string();
    let uri: axum::http::Uri = endpoint.parse()?;
    let host = uri.host().ok_or("--endpoint needs host:port")?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!("refusing a non-loopback endpoint: {endpoint}").into());
    }
    let target = Arc::new(Target { endpoint });
    match cmd {
        "blobs" => blobs(target, args).await,
        "small-images" => small_images(target, args).await,
        "images" => images(target, args, threads).await,
        other => Err(format!("unknown command {other:?}").into()),
    }
}

// ---------------------------------------------------------------- jobs

struct Outcome {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    secs: f64,
}

/// Run jobs 0..count, at most `concurrency` at a time, each worker with its own connection.
async fn run_jobs<F, Fut>(count: usize, concurrency: usize, timeout: Duration, f: F) -> Outcome
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, f) = (next.clone(), f.clone());
            tokio::spawn(async move {
                let c = client(timeout);
                let (mut ok, mut errors, mut first) = (0, 0, None::<String>);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    match f(c.clone(), i).await {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (ok, errors, first)
            })
        })
        .collect();
    let mut out = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        secs: 0.0,
    };
    for w in workers {
        let (ok, errors, first) = w.await.expect("worker panicked");
        out.ok += ok;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    out.secs = t0.elapsed().as_secs_f64();
    out
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn report(what: &str, o: &Outcome) -> Value {
    json!({
        "what": what,
        "ok": o.ok,
        "errors": o.errors,
        "first_error": o.first_error,
        "secs": r3(o.secs),
        "per_s": ((o.ok as f64 / o.secs.max(1e-9)) * 10.0).round() / 10.0,
    })
}

// ---------------------------------------------------------------- commands

async fn blobs(target: Arc<Target>, args: &Args) -> Result<Value, BoxError> {
    let repo = args.str_or("repo", "gc/garbage");
    let count: usize = args.num("count", 1000)?;
    let size: usize = args.num::<usize>("size", 512)?.clamp(64, 1 << 20);
    let conc: usize = args.num::<usize>("concurrency", 32)?.clamp(1, 256);
    let seed: u64 = args.num("seed", 1)?;
    let single_post = match args.str_or("mode", "post").as_str() {
        "post" => true,
        "post-put" => false,
        other => return Err(format!("--mode {other:?}: post or post-put").into()),
    };
    let o = run_jobs(count, conc, Duration::from_secs(60), move |c, i| {
        let target = target.clone();
        let repo = repo.clone();
        async move {
            let b = blob("garbage", seed, i as u64, size);
            let d = sha256(&b);
            target.push_blob(&c, &repo, &d, b.into(), single_post).await
        }
    })
    .await;
    let mut v = report("unreferenced blobs", &o);
    v["bytes"] = json!(o.ok * size);
    Ok(v)
}

async fn small_images(target: Arc<Target>, args: &Args) -> Result<Value, BoxError> {
    let repo = args.str_or("repo", "churn/victims");
    let count: usize = args.num("count", 1000)?;
    let conc: usize = args.num::<usize>("concurrency", 16)?.clamp(1, 256);
    let seed: u64 = args.num("seed", 1)?;
    let o = run_jobs(count, conc, Duration::from_secs(60), move |c, i| {
        let target = target.clone();
        let repo = repo.clone();
        async move {
            let (layer, img) = small_image(seed, i as u64);
            target
                .push_blob(&c, &repo, &img.layer_digest, layer, true)
                .await?;
            target
                .push_blob(&c, &repo, &img.config_digest, img.config, true)
                .await?;
            target
                .put_manifest(&c, &repo, &format!("v{i:05}"), img.manifest)
                .await
        }
    })
    .await;
    Ok(report("small images", &o))
}

/// This process's user + system CPU seconds (Linux; 0 elsewhere).
fn own_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

async fn images(target: Arc<Target>, args: &Args, threads: usize) -> Result<Value, BoxError> {
    let repo = args.str_or("repo", "push/app");
    let count: usize = args.num("count", 300)?;
    let layer_size: usize = args.num::<usize>("layer-size", 4 << 20)?.clamp(64, 1 << 30);
    let conc: usize = args.num::<usize>("concurrency", 4)?.clamp(1, 64);
    let seed: u64 = args.num("seed", 1)?;
    let churn_repo = args.get("churn-repo").map(str::to_string);
    let churn_count: usize = args.num("churn-count", 0)?;
    let churn_rate: f64 = args.num("churn-rate", 100.0)?;
    let churn_seed: u64 = args.num("churn-seed", 1)?;

    // Digests first (not timed): hash every layer on `threads` OS threads.
    let t_prep = Instant::now();
    let digests: Vec<String> = {
        let per = count.div_ceil(threads.max(1)).max(1);
        let handles: Vec<_> = (0..count)
            .step_by(per)
            .map(|from| {
                let to = (from + per).min(count);
                std::thread::spawn(move || {
                    (from..to)
                        .map(|i| sha256(&blob("layer", seed, i as u64, layer_size)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hash thread"))
            .collect()
    };
    let plan: Arc<Vec<Image>> = Arc::new(
        digests
            .into_iter()
            .enumerate()
            .map(|(i, d)| image("image", seed, i as u64, d, layer_size))
            .collect(),
    );
    let victims: Arc<Vec<String>> = Arc::new(
        (0..churn_count)
            .map(|i| small_image(churn_seed, i as u64).1.manifest_digest)
            .collect(),
    );
    let prep_secs = t_prep.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let churn = churn_repo.map(|crepo| {
        let (target, stop, victims) = (target.clone(), stop.clone(), victims.clone());
        tokio::spawn(async move {
            let c = client(Duration::from_secs(60));
            let period = Duration::from_secs_f64(1.0 / churn_rate.clamp(0.1, 100_000.0));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut ok, mut errors, mut first) = (0usize, 0usize, None::<String>);
            for d in victims.iter() {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match target.delete_manifest(&c, &crepo, d).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, errors, first, victims.len())
        })
    });

    let cpu0 = own_cpu_secs();
    let o = {
        let (target, plan) = (target.clone(), plan.clone());
        run_jobs(count, conc, Duration::from_secs(300), move |c, i| {
            let (target, plan, repo) = (target.clone(), plan.clone(), repo.clone());
            async move {
                let img = &plan[i];
                let layer = Bytes::from(blob("layer", seed, i as u64, layer_size));
                target
                    .push_blob(&c, &repo, &img.layer_digest, layer, false)
                    .await?;
                target
                    .push_blob(&c, &repo, &img.config_digest, img.config.clone(), false)
                    .await?;
                target
                    .put_manifest(&c, &repo, &format!("t{i:05}"), img.manifest.clone())
                    .await
            }
        })
        .await
    };
    let client_cpu = own_cpu_secs() - cpu0;
    stop.store(true, Ordering::Relaxed);
    let mib = (o.ok * layer_size) as f64 / (1024.0 * 1024.0);
    let mut v = report("images", &o);
    v["layer_size"] = json!(layer_size);
    v["concurrency"] = json!(conc);
    v["mib_per_s"] = json!((mib / o.secs.max(1e-9) * 10.0).round() / 10.0);
    v["images_per_s"] = v["per_s"].clone();
    v["prep_secs"] = json!(r3(prep_secs));
    v["client_cpu_s"] = json!((client_cpu * 100.0).round() / 100.0);
    if let Some(h) = churn {
        let (ok, errors, first, planned) = h.await.expect("churn task panicked");
        v["churn_deleted"] = json!(ok);
        v["churn_errors"] = json!(errors);
        v["churn_first_error"] = json!(first);
        v["churn_exhausted"] = json!(ok + errors >= planned);
    }
    Ok(v)
}
