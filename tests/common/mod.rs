//! Test harness: starts the real `berth` binary on a free loopback port with
//! its own data directory, and stops it (gracefully or with SIGKILL); raw
//! HTTP/1.1 over TCP for the tests that need to control every byte ([`raw`]).
#![allow(dead_code)]

pub mod docker;
pub mod image;
pub mod proxy;
pub mod raw;
pub mod tls;

/// Which deployment the servers a test starts use: the embedded default
/// (SQLite + files in the data directory) or the scale-out one (PostgreSQL
/// + S3, the servers of `tests/services/start.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    ScaleOut,
}

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Embedded) };
    static LOG_FILE: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Run `start` with the standard error of the servers it starts written to
/// `log` (instead of the test's own).
pub fn logging_to<T>(log: &Path, start: impl FnOnce() -> T) -> T {
    LOG_FILE.with(|l| *l.borrow_mut() = Some(log.to_path_buf()));
    let out = start();
    LOG_FILE.with(|l| *l.borrow_mut() = None);
    out
}

/// Run the test `f` with servers on the scale-out backend (a fresh
/// PostgreSQL database per server).
pub fn on_scale_out(f: fn()) {
    BACKEND.with(|b| b.set(Backend::ScaleOut));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BACKEND.with(|b| b.set(Backend::Embedded));
        }
    }
    let _reset = Reset;
    f();
}

/// The backend servers started on this thread use.
pub fn backend() -> Backend {
    BACKEND.with(|b| b.get())
}

/// Where a deployment keeps its state, shared by every node of it: the
/// `berth` arguments and environment that name the stores (each node has
/// its own `--data-dir` besides).
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The S3 key prefix of the blobs on the scale-out backend; `None`: the
    /// blobs are files in the data directory.
    pub s3_prefix: Option<String>,
}

/// Run `f` on a runtime of its own (from sync or async tests alike).
pub fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

/// 64 random hex characters (a master key).
fn hex_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A variable of `tests/services/start.sh`; panics with what to do when missing.
pub fn service(name: &str) -> String {
    berth::metadata::testing::service_var(name).unwrap_or_else(|| {
        panic!("the scale-out tests need the test servers: run tests/services/start.sh (CI does); {name} is not set")
    })
}

impl Deployment {
    /// A fresh deployment on the current backend.
    pub fn new() -> Deployment {
        match backend() {
            Backend::Embedded => Deployment::default(),
            Backend::ScaleOut => Deployment::scale_out(),
        }
    }

    /// A fresh PostgreSQL database and S3 key prefix.
    pub fn scale_out() -> Deployment {
        let url = block_on(berth::metadata::testing::fresh_postgres_database());
        let prefix = format!("t-{}", uuid::Uuid::new_v4());
        Deployment {
            args: vec![
                "--database-url".into(),
                url,
                "--storage-url".into(),
                format!("s3://{}/{prefix}/", service("BERTH_TEST_S3_BUCKET")),
            ],
            env: vec![
                (
                    "AWS_ENDPOINT_URL_S3".into(),
                    service("BERTH_TEST_S3_ENDPOINT"),
                ),
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    service("BERTH_TEST_S3_ACCESS_KEY"),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    service("BERTH_TEST_S3_SECRET_KEY"),
                ),
                ("AWS_REGION".into(), "us-east-1".into()),
                // One master key for every node: tokens and sealed secrets
                // of one node are good on the others.
                ("BERTH_MASTER_KEY".into(), hex_key()),
            ],
            s3_prefix: Some(prefix),
        }
    }

    /// The same deployment reached through proxies on `bind` that a test can
    /// cut (scale-out only): (deployment, PostgreSQL proxy, S3 proxy).
    pub fn proxied(
        &self,
        bind: std::net::IpAddr,
    ) -> (Deployment, proxy::FaultProxy, proxy::FaultProxy) {
        let authority = |url: &str| -> String {
            let rest = url.split_once("://").unwrap().1;
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split('/').next().unwrap().to_string()
        };
        let mut d = self.clone();
        let db = d.args.iter().position(|a| a == "--database-url").unwrap() + 1;
        let pg_at = authority(&d.args[db]);
        let pg = proxy::FaultProxy::start_on(bind, pg_at.parse().unwrap());
        d.args[db] = d.args[db].replacen(&pg_at, &pg.addr.to_string(), 1);
        let ep = d
            .env
            .iter()
            .position(|(k, _)| k == "AWS_ENDPOINT_URL_S3")
            .unwrap();
        let s3_at = authority(&d.env[ep].1);
        let s3 = proxy::FaultProxy::start_on(bind, s3_at.parse().unwrap());
        d.env[ep].1 = d.env[ep].1.replacen(&s3_at, &s3.addr.to_string(), 1);
        (d, pg, s3)
    }

    /// A client of the deployment's bucket (scale-out only).
    pub fn s3(&self) -> berth::storage::s3::client::S3Client {
        berth::storage::s3::client::S3Client::new(berth::storage::s3::client::S3Settings {
            endpoint: service("BERTH_TEST_S3_ENDPOINT"),
            bucket: service("BERTH_TEST_S3_BUCKET"),
            path_style: true,
            signer: berth::sigv4::S3Signer {
                access_key_id: service("BERTH_TEST_S3_ACCESS_KEY"),
                secret_access_key: service("BERTH_TEST_S3_SECRET_KEY"),
                session_token: None,
                region: "us-east-1".into(),
            },
        })
        .unwrap()
    }
}

/// Each named test (a `#[test]` or `#[tokio::test]` fn of the file), again
/// on the scale-out backend, as `scale_out::<name>`.
#[macro_export]
macro_rules! on_scale_out_too {
    ($($name:ident),* $(,)?) => {
        mod scale_out {
            $( #[test] fn $name() { super::common::on_scale_out(super::$name) } )*
        }
    };
}

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub addr: String,
    pub data_dir: PathBuf,
    /// Where its state is (shared with the other nodes of its deployment).
    pub deployment: Deployment,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// The administrator credentials of servers started with [`Server::start_ecr`].
pub const ACCOUNT: &str = "123456789012";
pub const ROOT_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const ROOT_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// The environment that makes a new server's primary account [`ACCOUNT`]
/// with the administrator key [`ROOT_KEY_ID`] / [`ROOT_SECRET`].
pub fn ecr_admin_env() -> Vec<(String, String)> {
    vec![
        ("BERTH_ACCOUNT_ID".to_string(), ACCOUNT.to_string()),
        (
            "BERTH_ROOT_ACCESS_KEY_ID".to_string(),
            ROOT_KEY_ID.to_string(),
        ),
        (
            "BERTH_ROOT_SECRET_ACCESS_KEY".to_string(),
            ROOT_SECRET.to_string(),
        ),
    ]
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Start an open registry (`--auth none`: no tokens, create on push) on a
    /// fresh data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_on(&data, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Start an open registry on a fresh data directory with extra `berth serve` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_on(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Start an open registry on `data_dir` with extra `berth serve` arguments.
    pub fn start_on(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_in(&Deployment::new(), data_dir, extra)
    }

    /// Start an open registry node of `deployment` on `data_dir` with extra
    /// `berth serve` arguments.
    pub fn start_in(deployment: &Deployment, data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--auth".to_string(), "none".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::launch(data_dir, deployment, args, Vec::new())
    }

    /// Start a server in ECR mode (the default) whose primary account and
    /// administrator key are [`ACCOUNT`], [`ROOT_KEY_ID`] and [`ROOT_SECRET`].
    pub fn start_ecr() -> Server {
        Server::start_ecr_with(&[])
    }

    /// [`Server::start_ecr`] with extra `berth serve` arguments.
    pub fn start_ecr_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Server::start_ecr_in(&Deployment::new(), &tmp.path().join("data"), extra);
        s._tmp = Some(tmp);
        s
    }

    /// [`Server::start_ecr`] on `data_dir`, with extra `berth serve` arguments.
    pub fn start_ecr_on(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_ecr_in(&Deployment::new(), data_dir, extra)
    }

    /// An ECR-mode node of `deployment` on `data_dir` (see [`Server::start_ecr`]).
    pub fn start_ecr_in(deployment: &Deployment, data_dir: &Path, extra: &[&str]) -> Server {
        let env = ecr_admin_env();
        let args = extra.iter().map(|s| s.to_string()).collect();
        Server::launch(data_dir, deployment, args, env)
    }

    fn launch(
        data_dir: &Path,
        deployment: &Deployment,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        Server::launch_at(addr, data_dir, deployment, args, env)
    }

    /// Start `berth serve --listen addr` on `data_dir` with `args` and `env`
    /// (ECR mode unless `args` say `--auth none`); with `ecr_admin`, its
    /// primary account and key are [`ACCOUNT`], [`ROOT_KEY_ID`], [`ROOT_SECRET`].
    pub fn start_at(addr: &str, data_dir: &Path, args: &[&str], ecr_admin: bool) -> Server {
        let env = if ecr_admin {
            ecr_admin_env()
        } else {
            Vec::new()
        };
        let args = args.iter().map(|s| s.to_string()).collect();
        Server::launch_at(addr.to_string(), data_dir, &Deployment::new(), args, env)
    }

    fn launch_at(
        addr: String,
        data_dir: &Path,
        deployment: &Deployment,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .args(&deployment.args)
            .args(&args)
            .env("BERTH_LOG", "warn")
            .envs(deployment.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(match LOG_FILE.with(|l| l.borrow().clone()) {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start berth");
        let s = Server {
            addr,
            data_dir: data_dir.to_path_buf(),
            deployment: deployment.clone(),
            args,
            env,
            child: Some(child),
            _tmp: None,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berth did not start listening on {}", self.addr);
    }

    /// A `berth` subcommand on this server's state (`berth iam`, `berth gc`, …):
    /// its data directory, the deployment's stores and environment.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg(subcommand)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.deployment.args)
            .envs(self.deployment.env.iter().map(|(k, v)| (k, v)))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Every blob the deployment's storage holds, sealed or (from before
    /// encryption) plaintext: digest → (stored size, age).
    pub fn stored_blobs(&self) -> std::collections::BTreeMap<String, (u64, Duration)> {
        let mut out = std::collections::BTreeMap::new();
        let now = std::time::SystemTime::now();
        match &self.deployment.s3_prefix {
            None => {
                for root in ["storage/sealed/blobs", "storage/blobs"] {
                    let root = self.data_dir.join(root);
                    for alg in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                        let alg_name = alg.file_name().to_string_lossy().to_string();
                        for shard in std::fs::read_dir(alg.path())
                            .into_iter()
                            .flatten()
                            .flatten()
                        {
                            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                                let m = f.metadata().unwrap();
                                let age = now
                                    .duration_since(m.modified().unwrap())
                                    .unwrap_or_default();
                                let name =
                                    format!("{alg_name}:{}", f.file_name().to_string_lossy());
                                out.insert(name, (m.len(), age));
                            }
                        }
                    }
                }
            }
            Some(prefix) => {
                for dir in [
                    format!("{prefix}/sealed/blobs/"),
                    format!("{prefix}/blobs/"),
                ] {
                    let s3 = self.deployment.s3();
                    let listed = block_on(async move { s3.list(&dir).await.unwrap() });
                    let now_ms = now
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    for o in listed {
                        // .../blobs/{alg}/{shard}/{hex}
                        let parts: Vec<&str> = o.key.rsplitn(4, '/').collect();
                        let name = format!("{}:{}", parts[2], parts[0]);
                        let age = Duration::from_millis((now_ms - o.modified_ms).max(0) as u64);
                        out.insert(name, (o.size, age));
                    }
                }
            }
        }
        out
    }

    /// How many uploads have something staged in the storage (files, or S3
    /// objects and multipart uploads under `uploads/`), sealed or plaintext.
    pub fn staged_uploads(&self) -> usize {
        match &self.deployment.s3_prefix {
            None => ["storage/sealed/uploads", "storage/uploads"]
                .iter()
                .map(|d| {
                    std::fs::read_dir(self.data_dir.join(d))
                        .map(|d| d.count())
                        .unwrap_or(0)
                })
                .sum(),
            Some(prefix) => {
                let mut ids = std::collections::BTreeSet::new();
                for dir in [
                    format!("{prefix}/sealed/uploads/"),
                    format!("{prefix}/uploads/"),
                ] {
                    let s3 = self.deployment.s3();
                    let found = block_on(async move {
                        let mut found = Vec::new();
                        for o in s3.list(&dir).await.unwrap() {
                            found.push(
                                o.key
                                    .trim_start_matches(&dir)
                                    .split('/')
                                    .next()
                                    .unwrap()
                                    .to_string(),
                            );
                        }
                        for (key, _, _) in s3.list_multipart_uploads(&dir).await.unwrap() {
                            found.push(
                                key.trim_start_matches(&dir)
                                    .split('/')
                                    .next()
                                    .unwrap()
                                    .to_string(),
                            );
                        }
                        found
                    });
                    ids.extend(found);
                }
                ids.len()
            }
        }
    }

    /// The stored bytes of blob `digest`, straight from the storage: sealed
    /// (ciphertext), or plaintext for a blob from before encryption.
    pub fn stored_blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.stored_blob_in(true, digest)
            .or_else(|| self.stored_blob_in(false, digest))
    }

    /// The bytes of blob `digest` in the sealed store, or (`sealed` false)
    /// in the plaintext store of data from before encryption.
    fn stored_blob_in(&self, sealed: bool, digest: &str) -> Option<Vec<u8>> {
        let (alg, hex) = digest.split_once(':').unwrap();
        let sub = if sealed { "sealed/blobs" } else { "blobs" };
        match &self.deployment.s3_prefix {
            None => std::fs::read(
                self.data_dir
                    .join("storage")
                    .join(sub)
                    .join(alg)
                    .join(&hex[..2])
                    .join(hex),
            )
            .ok(),
            Some(prefix) => {
                let s3 = self.deployment.s3();
                let key = format!("{prefix}/{sub}/{alg}/{}/{hex}", &hex[..2]);
                block_on(async move { s3.get_bytes(&key).await.ok().map(|b| b.to_vec()) })
            }
        }
    }

    /// Where blob `digest` is stored: the sealed store's path or key.
    pub fn sealed_blob_location(&self, digest: &str) -> String {
        let (alg, hex) = digest.split_once(':').unwrap();
        match &self.deployment.s3_prefix {
            None => self
                .data_dir
                .join("storage/sealed/blobs")
                .join(alg)
                .join(&hex[..2])
                .join(hex)
                .display()
                .to_string(),
            Some(prefix) => format!("{prefix}/sealed/blobs/{alg}/{}/{hex}", &hex[..2]),
        }
    }

    /// Blob `digest` as someone holding the data directory, the database
    /// and the master key could read it: the stored bytes opened with the
    /// data key its wraps give (plaintext blobs as they are). `None` when
    /// it is not stored, or stored without a recorded data key (a copy
    /// published by a node that died before recording it: invisible, and
    /// garbage for GC).
    pub fn open_stored_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let raw = self.stored_blob(digest)?;
        let legacy = self.stored_blob_in(false, digest);
        let url = match self
            .deployment
            .args
            .iter()
            .position(|a| a == "--database-url")
        {
            Some(i) => self.deployment.args[i + 1].clone(),
            None => format!(
                "sqlite://{}?mode=ro",
                self.data_dir.join("metadata.db").display()
            ),
        };
        let master_env = self
            .deployment
            .env
            .iter()
            .find(|(k, _)| k == "BERTH_MASTER_KEY")
            .map(|(_, v)| v.clone());
        let data_dir = self.data_dir.clone();
        let d: berth::digest::Digest = digest.parse().unwrap();
        block_on(async move {
            let meta = berth::metadata::MetadataStore::connect(&url).await.unwrap();
            let sealing = meta.blob_sealing(&d).await.unwrap()?;
            if !sealing.sealed {
                return legacy;
            }
            let master =
                berth::secrets::MasterKey::load(None, master_env.as_deref(), &data_dir).unwrap();
            let ring = berth::kms::KeyRing::new(meta, master, "us-east-1");
            let ctx = format!("blob:{d}");
            let mut dek = None;
            for (k, w) in &sealing.wraps {
                if let Ok(k) = ring.unwrap(&berth::kms::KeyRef::parse(k), w, &ctx).await {
                    dek = Some(k);
                    break;
                }
            }
            let dek = dek?;
            let n = berth::storage::sealed::plain_len(raw.len() as u64)?;
            let raw = bytes::Bytes::from(raw);
            let stream = berth::storage::sealed::open_range(n, None, dek.bytes(), |r| async move {
                let part = raw.slice(r.first as usize..=r.last as usize);
                Ok::<berth::storage::ByteStream, berth::storage::StorageError>(Box::pin(
                    futures_util::stream::once(async move { Ok(part) }),
                ))
            })
            .await
            .ok()?;
            use futures_util::TryStreamExt;
            stream
                .try_fold(Vec::new(), |mut v, b| async move {
                    v.extend_from_slice(&b);
                    Ok(v)
                })
                .await
                .ok()
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Resident memory of the server process, in KiB (`VmRSS`; `VmHWM` for the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Send SIGTERM without waiting.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// Wait up to `limit` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL the process (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    /// Restart on the same data directory and address-independent state.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        let tmp = self._tmp.take();
        let mut s = Server::launch(
            &self.data_dir.clone(),
            &self.deployment.clone(),
            self.args.clone(),
            self.env.clone(),
        );
        s._tmp = tmp;
        std::mem::swap(self, &mut s);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Push `bytes` as a blob of `repo` in one request (an open registry); its digest.
pub async fn push_blob(c: &reqwest::Client, s: &Server, repo: &str, bytes: &[u8]) -> String {
    image::push_blob_at(c, &s.url(""), repo, bytes)
        .await
        .unwrap()
}

/// The bytes of blob `digest` of `repo` (an open registry).
pub async fn pull_blob(c: &reqwest::Client, s: &Server, repo: &str, digest: &str) -> Vec<u8> {
    image::pull_blob_at(c, &s.url(""), repo, digest)
        .await
        .unwrap()
}

/// Headers of a `POST /` for ECR operation `op` with `body`, signed with
/// Berth's own SigV4 signer for `key` / `secret` (us-east-1).
pub fn ecr_headers(
    s: &Server,
    op: &str,
    body: &[u8],
    key: &str,
    secret: &str,
) -> reqwest::header::HeaderMap {
    ecr_headers_for(&s.addr, "us-east-1", op, body, key, secret)
}

/// [`ecr_headers`] for a request to `host` (`ip:port`) in `region`.
pub fn ecr_headers_for(
    host: &str,
    region: &str,
    op: &str,
    body: &[u8],
    key: &str,
    secret: &str,
) -> reqwest::header::HeaderMap {
    use reqwest::header::{HeaderMap, HeaderValue};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut h = axum::http::HeaderMap::new();
    h.insert("host", host.parse().unwrap());
    h.insert(
        "x-amz-date",
        berth::sigv4::format_amz_date(now).parse().unwrap(),
    );
    h.insert(
        "x-amz-target",
        format!("AmazonEC2ContainerRegistry_V20150921.{op}")
            .parse()
            .unwrap(),
    );
    h.insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    let auth = berth::sigv4::sign(
        "POST",
        &axum::http::Uri::from_static("/"),
        &h,
        &["content-type", "host", "x-amz-date", "x-amz-target"],
        body,
        key,
        secret,
        region,
        "ecr",
    );
    let mut out = HeaderMap::new();
    for (k, v) in &h {
        if k != "host" {
            out.insert(
                k.as_str().parse::<reqwest::header::HeaderName>().unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
    }
    out.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    out
}

/// Call ECR operation `op` as the root of [`ACCOUNT`]; the JSON answer (panics on an error).
pub async fn ecr(s: &Server, op: &str, body: serde_json::Value) -> serde_json::Value {
    ecr_as(s, ROOT_KEY_ID, ROOT_SECRET, op, body).await
}

/// Run `berth iam <args>` against the server's data directory; its JSON output.
pub fn berth_iam(s: &Server, args: &[&str]) -> serde_json::Value {
    let out = s.command("iam").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "berth iam {args:?}: {}",
        tail(&out.stderr, 2000)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Call ECR operation `op` with access key `key` / `secret`; the JSON answer
/// (panics on an error).
pub async fn ecr_as(
    s: &Server,
    key: &str,
    secret: &str,
    op: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (status, v) = ecr_call(s, key, secret, op, body).await;
    assert!(status.is_success(), "{op}: {status} {v}");
    v
}

/// An ECR call signed with `key`, whatever it answers: the status and the JSON body.
pub async fn ecr_call(
    s: &Server,
    key: &str,
    secret: &str,
    op: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    ecr_call_at(&s.url(""), "us-east-1", key, secret, op, body).await
}

/// An ECR call to the server at `base` (`http://ip:port`) in `region`,
/// signed with `key`, whatever it answers: the status and the JSON body.
pub async fn ecr_call_at(
    base: &str,
    region: &str,
    key: &str,
    secret: &str,
    op: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    let body = body.to_string().into_bytes();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{base}/"))
        .headers(ecr_headers_for(host, region, op, &body, key, secret))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A registry token (the `docker login` password) of the root of [`ACCOUNT`].
pub async fn registry_token(s: &Server) -> String {
    registry_token_as(s, ROOT_KEY_ID, ROOT_SECRET).await
}

/// A registry token of access key `key`.
pub async fn registry_token_as(s: &Server, key: &str, secret: &str) -> String {
    registry_token_at(&s.url(""), "us-east-1", key, secret).await
}

/// A registry token of access key `key` from the server at `base` in `region`.
pub async fn registry_token_at(base: &str, region: &str, key: &str, secret: &str) -> String {
    use base64::Engine;
    let op = "GetAuthorizationToken";
    let (status, v) = ecr_call_at(base, region, key, secret, op, serde_json::json!({})).await;
    assert!(status.is_success(), "{op}: {status} {v}");
    let t = v["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
    String::from_utf8(decoded).unwrap()["AWS:".len()..].to_string()
}

/// The server's `/metrics` page.
pub async fn metrics(s: &Server) -> String {
    reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// sha256 digest string of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Panic unless `prog` is an executable in PATH: the clients the tests drive
/// are mandatory (CI installs them), so a missing one fails instead of skipping.
pub fn require(prog: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| {
        let p = d.join(prog);
        std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false)
    });
    assert!(
        found,
        "required program `{prog}` not found in PATH; install it (CI does)"
    );
}

/// The last `max` bytes of a command's output, as text (for failure messages).
pub fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > max {
        let mut start = s.len() - max;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        format!("...{}", &s[start..])
    } else {
        s.into_owned()
    }
}
