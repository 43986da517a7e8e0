//! Server configuration: defaults, overridden by a TOML file, overridden by
//! `BERTH_*` environment variables, overridden by command-line flags.
//! `docs/configuration.md` lists every setting; the limits that bound what a
//! client may cost are explained in `docs/security.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The settings of `berth serve`, fully resolved.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The metadata database: `sqlite://…` or `postgres://…`; `None` is the
    /// SQLite file `<data_dir>/metadata.db`.
    pub database_url: Option<String>,
    /// Where blob bytes live.
    pub storage: StorageLocation,
    /// Answer blob downloads with a `307` to a presigned URL of the storage
    /// (S3), valid this long, instead of streaming the bytes through Berth.
    pub storage_redirects: Option<Duration>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where the master key lives; `None`: `BERTH_MASTER_KEY`, else `<data_dir>/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// External key custody: KMS keys and the server-managed key in a
    /// Vault / OpenBao transit engine (`None`: sealed with the master key).
    pub kms_transit: Option<TransitConfig>,
    /// A transit key that seals the master key: the master key file then
    /// holds its transit ciphertext (created on first start).
    pub master_key_transit_key: Option<String>,
    /// How often KMS keys due for deletion or automatic rotation are looked for.
    pub kms_job_interval: Duration,
    /// Upload sessions untouched for this long are removed with their bytes.
    pub upload_max_age: Duration,
    /// How often abandoned uploads are looked for.
    pub upload_reap_interval: Duration,
    /// Largest manifest accepted.
    pub max_manifest_bytes: usize,
    /// Most layers an image manifest may list (ECR and Docker: 127).
    pub max_image_layers: usize,
    /// How often online garbage collection runs.
    pub gc_interval: Duration,
    /// Content younger than this (uploaded, mounted, or confirmed to a client
    /// by an existence check) is never collected; see `docs/gc.md`.
    pub gc_grace: Duration,
    /// How often each repository's lifecycle policy is evaluated (ECR: within 24 h).
    pub lifecycle_interval: Duration,
    /// An image may be scanned (pushed under scan on push, or StartImageScan)
    /// once per this period, as ECR's once per 24 hours; 0 lifts the quota.
    pub scan_quota_interval: Duration,
    /// A tag cached by a pull-through cache rule is compared with the
    /// upstream's at most once per this period (ECR: 24 h).
    pub pull_through_interval: Duration,
    /// Whether API calls and `/v2/` actions are recorded in the audit log
    /// (docs/audit.md); `false` records nothing.
    pub audit: bool,
    /// Audit events older than this are deleted (CloudTrail's event history:
    /// 90 days); 0 keeps them forever.
    pub audit_retention: Duration,
    /// `ecr` (default): `/v2/` needs a token from GetAuthorizationToken, every
    /// request is authorized, pushes need an existing repository.
    /// `none`: an open registry for development; repositories are created on push.
    pub auth: AuthMode,
    /// The region this registry is (ARNs, SigV4 scope): its home region,
    /// where the KMS, CloudFormation, SSM and STS faces answer too.
    pub region: String,
    /// Every region the ECR API and `/v2/` serve, `region` first; each with
    /// its own registries (repositories, policies, settings, ARNs).
    pub regions: Vec<String>,
    /// Host (and port) clients use to reach the registry, as shown in
    /// `repositoryUri` and `proxyEndpoint`; by default the request's `Host`.
    pub registry_host: Option<String>,
    /// What one client may cost: connections, time, memory.
    pub http: HttpLimits,
    /// Open upload sessions allowed per caller and per repository.
    pub uploads: UploadQuotas,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Deployments that serve other regions (`[[peers]]`): where
    /// replication to those regions goes.
    pub peers: Vec<PeerConfig>,
}

/// Another deployment, serving `region` at `endpoint`, and the identity
/// this one uses there (its access key; the secret given inline, in a file
/// only its owner may read, or in an environment variable).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub region: String,
    /// `http://host:port` or `https://host:port` of its API and `/v2/`.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A `[[peers]]` table as written in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub region: String,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: Option<SecretString>,
    pub secret_access_key_file: Option<PathBuf>,
    /// The name of an environment variable holding the secret.
    pub secret_access_key_env: Option<String>,
}

impl PeerEntry {
    fn resolve(self, own_regions: &[String]) -> anyhow::Result<PeerConfig> {
        let what = format!("peers (region {:?})", self.region);
        check_region(&self.region).with_context(|| what.clone())?;
        if own_regions.contains(&self.region) {
            bail!("{what}: this deployment serves {} itself", self.region);
        }
        let endpoint = self.endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
            bail!(
                "{what}: endpoint {:?} must be http://host[:port] or https://host[:port]",
                self.endpoint
            );
        }
        let key_ok = (16..=128).contains(&self.access_key_id.len())
            && self
                .access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !key_ok {
            bail!(
                "{what}: access_key_id {:?} is not an access key id",
                self.access_key_id
            );
        }
        let secret = match (
            self.secret_access_key.map(|s| s.0),
            self.secret_access_key_file,
            self.secret_access_key_env,
        ) {
            (Some(s), None, None) => s,
            (None, Some(f), None) => {
                read_private_file(&f).with_context(|| format!("{what}: secret_access_key_file"))?
            }
            (None, None, Some(var)) => std::env::var(&var).map_err(|_| {
                anyhow::anyhow!(
                    "{what}: the environment variable {var} (secret_access_key_env) is not set"
                )
            })?,
            (None, None, None) => bail!(
                "{what}: give the secret as secret_access_key, secret_access_key_file or secret_access_key_env"
            ),
            _ => bail!(
                "{what}: give only one of secret_access_key, secret_access_key_file, secret_access_key_env"
            ),
        };
        if secret.is_empty() {
            bail!("{what}: the secret access key is empty");
        }
        Ok(PeerConfig {
            region: self.region,
            endpoint,
            access_key_id: self.access_key_id,
            secret_access_key: secret,
        })
    }
}

fn check_region(r: &str) -> anyhow::Result<()> {
    let ok = !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("region: {r:?} is not a region name like us-east-1");
    }
    Ok(())
}

/// The PEM files of `tls_cert` and `tls_key`: the certificate chain (the
/// server's certificate first) and its private key. Re-read when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How log lines are written (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where blob bytes live (`storage_url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageLocation {
    /// A directory (`file:///path`); `None` is `<data_dir>/storage`.
    File(Option<PathBuf>),
    /// An S3 bucket and key prefix (`s3://bucket/prefix`); `path_style`
    /// forces path-style addressing (automatic for an IP-address endpoint).
    S3 {
        bucket: String,
        prefix: String,
        path_style: bool,
    },
}

impl StorageLocation {
    /// Parse a `storage_url`.
    pub fn parse(url: &str, path_style: bool) -> anyhow::Result<StorageLocation> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("storage_url: {url:?} must be file:///absolute/path");
            }
            return Ok(StorageLocation::File(Some(PathBuf::from(path))));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                bail!("storage_url: {bucket:?} is not an S3 bucket name");
            }
            let prefix = prefix.trim_matches('/');
            if !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            {
                bail!(
                    "storage_url: the key prefix {prefix:?} may hold only letters, digits, '-', '_', '.' and '/'"
                );
            }
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            return Ok(StorageLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
                path_style,
            });
        }
        bail!("storage_url: {url:?} is neither file:///path nor s3://bucket/prefix")
    }
}

/// Bounds on what a client may cost the server (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A connection with no request in flight for this long is closed: it
    /// bounds both a client that is slow to send its request headers and an
    /// idle keep-alive connection.
    pub idle_timeout: Duration,
    /// A response the client has not accepted a byte of for this long is abandoned.
    pub send_timeout: Duration,
    /// A request body that has not delivered a byte for this long is abandoned.
    pub body_timeout: Duration,
    /// An ECR API request body, or a manifest, must arrive whole within this long.
    pub api_body_timeout: Duration,
    /// After SIGTERM, requests in flight get this long to finish.
    pub shutdown_timeout: Duration,
    /// Open connections at most (lowered to fit the file descriptor limit).
    pub max_connections: usize,
    /// Open connections at most from one client address (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Bytes of request bodies held in memory at once (ECR API calls, manifests).
    pub body_memory: usize,
    /// The same, for one client address.
    pub body_memory_per_ip: usize,
    /// Reverse proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies write (the only one read).
    pub forwarded_header: ForwardedHeader,
}

/// The header trusted proxies record the client's address in (`forwarded_header`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, Envoy, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(s: &str) -> anyhow::Result<ForwardedHeader> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => bail!("forwarded_header: {s:?} is neither \"x-forwarded-for\" nor \"forwarded\""),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            api_body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_ip: 256,
            body_memory: 256 << 20,
            body_memory_per_ip: 64 << 20,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
        }
    }
}

/// Open upload sessions allowed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadQuotas {
    /// Per caller (an access key; its client address with `--auth none`).
    pub per_caller: u64,
    /// Per repository.
    pub per_repository: u64,
}

impl Default for UploadQuotas {
    fn default() -> Self {
        UploadQuotas {
            per_caller: 2000,
            per_repository: 5000,
        }
    }
}

/// Where the transit engine is. The token is never printed.
#[derive(Clone)]
pub struct TransitConfig {
    pub url: String,
    pub token: String,
    pub mount: String,
}

impl std::fmt::Debug for TransitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitConfig")
            .field("url", &self.url)
            .field("token", &"***")
            .field("mount", &self.mount)
            .finish()
    }
}

/// A secret setting (a token): read like a string, never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Read a secret from a file that only its owner may read.
pub fn read_private_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Ecr,
    None,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid default address"),
            data_dir: PathBuf::from("./berth-data"),
            database_url: None,
            storage: StorageLocation::File(None),
            storage_redirects: None,
            log_format: LogFormat::Text,
            master_key_file: None,
            kms_transit: None,
            master_key_transit_key: None,
            kms_job_interval: Duration::from_secs(60),
            upload_max_age: Duration::from_secs(24 * 3600),
            upload_reap_interval: Duration::from_secs(600),
            max_manifest_bytes: 8 << 20,
            max_image_layers: 127,
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
            lifecycle_interval: Duration::from_secs(24 * 3600),
            scan_quota_interval: Duration::from_secs(24 * 3600),
            pull_through_interval: Duration::from_secs(24 * 3600),
            audit: true,
            audit_retention: Duration::from_secs(90 * 86_400),
            auth: AuthMode::Ecr,
            region: "us-east-1".into(),
            regions: vec!["us-east-1".into()],
            registry_host: None,
            http: HttpLimits::default(),
            uploads: UploadQuotas::default(),
            tls: None,
            peers: Vec::new(),
        }
    }
}

/// Settings as they appear in the config file (and, by the same names, as
/// flags and environment variables); every one optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub storage_url: Option<String>,
    pub s3_path_style: Option<bool>,
    pub storage_redirects: Option<String>,
    pub log_format: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub kms_transit_url: Option<String>,
    pub kms_transit_token: Option<SecretString>,
    pub kms_transit_token_file: Option<PathBuf>,
    pub kms_transit_mount: Option<String>,
    pub master_key_transit_key: Option<String>,
    pub kms_job_interval: Option<String>,
    pub upload_max_age: Option<String>,
    pub upload_reap_interval: Option<String>,
    pub max_manifest_bytes: Option<usize>,
    pub max_image_layers: Option<usize>,
    pub gc_interval: Option<String>,
    pub gc_grace: Option<String>,
    pub lifecycle_interval: Option<String>,
    pub scan_quota_interval: Option<String>,
    pub pull_through_interval: Option<String>,
    pub audit: Option<bool>,
    pub audit_retention: Option<String>,
    pub auth: Option<String>,
    pub region: Option<String>,
    /// Every region served (`regions = [...]`; `--region` more than once).
    pub regions: Option<Vec<String>>,
    pub registry_host: Option<String>,
    pub idle_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub api_body_timeout: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub body_memory: Option<String>,
    pub body_memory_per_ip: Option<String>,
    pub trusted_proxy: Option<Vec<String>>,
    pub forwarded_header: Option<String>,
    pub max_uploads_per_caller: Option<u64>,
    pub max_uploads_per_repository: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Config file only.
    pub peers: Option<Vec<PeerEntry>>,
}

/// `a.or(b)` for every field: the fields of `$hi` win over those of `$lo`.
macro_rules! layer {
    ($hi:ident, $lo:ident; $($f:ident),* $(,)?) => {
        Overrides { $($f: $hi.$f.or($lo.$f)),* }
    };
}

impl Overrides {
    /// Read a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Overrides> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Layer `self` (higher priority) over `lower`.
    pub fn over(self, lower: Overrides) -> Overrides {
        layer!(self, lower;
            listen, data_dir, database_url, storage_url, s3_path_style, storage_redirects,
            log_format, master_key_file,
            kms_transit_url, kms_transit_token, kms_transit_token_file, kms_transit_mount,
            master_key_transit_key, kms_job_interval,
            upload_max_age, upload_reap_interval,
            max_manifest_bytes, max_image_layers, gc_interval, gc_grace, lifecycle_interval,
            scan_quota_interval, pull_through_interval, audit, audit_retention, auth, region, regions, registry_host, idle_timeout, send_timeout, body_timeout,
            api_body_timeout, shutdown_timeout, max_connections, max_connections_per_ip,
            body_memory, body_memory_per_ip, trusted_proxy, forwarded_header,
            max_uploads_per_caller,
            max_uploads_per_repository,
            tls_cert, tls_key, peers,
        )
    }

    /// Apply to the defaults, validating each value.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(l) = self.listen {
            c.listen = l
                .parse()
                .with_context(|| format!("listen: {l:?} is not an address like 127.0.0.1:5000"))?;
        }
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        c.master_key_file = self.master_key_file;
        c.kms_transit = match (
            self.kms_transit_url.filter(|u| !u.is_empty()),
            self.kms_transit_token
                .map(|t| t.0)
                .filter(|t| !t.is_empty()),
            self.kms_transit_token_file,
        ) {
            (None, None, None) => None,
            (None, _, _) => bail!("kms_transit_token needs kms_transit_url"),
            (Some(_), Some(_), Some(_)) => {
                bail!(
                    "give the transit token as kms_transit_token or kms_transit_token_file, not both"
                )
            }
            (Some(url), token, file) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("kms_transit_url: {url:?} is not an http:// or https:// URL");
                }
                let token = match (token, file) {
                    (Some(t), _) => t,
                    (None, Some(f)) => read_private_file(&f).context("kms_transit_token_file")?,
                    (None, None) => bail!(
                        "kms_transit_url needs a token: kms_transit_token (BERTH_KMS_TRANSIT_TOKEN) or kms_transit_token_file"
                    ),
                };
                Some(TransitConfig {
                    url,
                    token,
                    mount: self
                        .kms_transit_mount
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "transit".into()),
                })
            }
        };
        c.master_key_transit_key = self.master_key_transit_key.filter(|k| !k.is_empty());
        if c.master_key_transit_key.is_some() && c.kms_transit.is_none() {
            bail!("master_key_transit_key needs kms_transit_url");
        }
        if let Some(v) = self.kms_job_interval {
            c.kms_job_interval = parse_duration(&v).context("kms_job_interval")?;
            if c.kms_job_interval.is_zero() {
                bail!("kms_job_interval must be longer than 0s");
            }
        }
        if let Some(u) = self.database_url.filter(|u| !u.is_empty()) {
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
            {
                bail!("database_url: {u:?} is neither sqlite://… nor postgres://…");
            }
            c.database_url = Some(u);
        }
        if let Some(u) = self.storage_url.filter(|u| !u.is_empty()) {
            c.storage = StorageLocation::parse(&u, self.s3_path_style.unwrap_or(false))?;
        }
        if let Some(r) = self
            .storage_redirects
            .filter(|r| !r.is_empty() && r != "off")
        {
            if !matches!(c.storage, StorageLocation::S3 { .. }) {
                bail!(
                    "storage_redirects: only S3 storage can hand clients a URL; the filesystem store streams every blob"
                );
            }
            let d = parse_duration(&r).context("storage_redirects")?;
            if d < Duration::from_secs(60) || d > Duration::from_secs(7 * 24 * 3600) {
                bail!(
                    "storage_redirects: presigned URLs last between 1m and 7d (S3's limit), not {r}"
                );
            }
            c.storage_redirects = Some(d);
        }
        match self.log_format.as_deref() {
            None | Some("") | Some("text") => {}
            Some("json") => c.log_format = LogFormat::Json,
            Some(other) => bail!("log_format: {other:?} is neither text nor json"),
        }
        if let Some(a) = self.upload_max_age {
            c.upload_max_age = parse_duration(&a).context("upload_max_age")?;
        }
        if let Some(i) = self.upload_reap_interval {
            c.upload_reap_interval = parse_duration(&i).context("upload_reap_interval")?;
        }
        if let Some(m) = self.max_manifest_bytes {
            if m < 4 << 20 {
                bail!("max_manifest_bytes must be at least 4194304 (4 MiB), as the OCI spec asks");
            }
            c.max_manifest_bytes = m;
        }
        if let Some(n) = self.max_image_layers {
            if n == 0 {
                bail!("max_image_layers must be at least 1");
            }
            c.max_image_layers = n;
        }
        if let Some(v) = self.scan_quota_interval {
            // 0s is allowed: no quota.
            c.scan_quota_interval = parse_duration(&v).context("scan_quota_interval")?;
        }
        if let Some(v) = self.pull_through_interval {
            // 0s is allowed: every pull of a tag asks the upstream.
            c.pull_through_interval = parse_duration(&v).context("pull_through_interval")?;
        }
        if let Some(v) = self.audit {
            c.audit = v;
        }
        if let Some(v) = self.audit_retention {
            // 0s is allowed: events are kept forever.
            c.audit_retention = parse_duration(&v).context("audit_retention")?;
        }
        let h = &mut c.http;
        for (name, value, slot) in [
            ("gc_interval", self.gc_interval, &mut c.gc_interval),
            ("gc_grace", self.gc_grace, &mut c.gc_grace),
            (
                "lifecycle_interval",
                self.lifecycle_interval,
                &mut c.lifecycle_interval,
            ),
            ("idle_timeout", self.idle_timeout, &mut h.idle_timeout),
            ("send_timeout", self.send_timeout, &mut h.send_timeout),
            ("body_timeout", self.body_timeout, &mut h.body_timeout),
            (
                "api_body_timeout",
                self.api_body_timeout,
                &mut h.api_body_timeout,
            ),
            (
                "shutdown_timeout",
                self.shutdown_timeout,
                &mut h.shutdown_timeout,
            ),
        ] {
            if let Some(v) = value {
                let d = parse_duration(&v).context(name)?;
                if d.is_zero() {
                    bail!("{name} must be longer than 0s");
                }
                *slot = d;
            }
        }
        for (name, value, slot) in [
            (
                "max_connections",
                self.max_connections,
                &mut h.max_connections,
            ),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip,
                &mut h.max_connections_per_ip,
            ),
        ] {
            if let Some(n) = value {
                if n == 0 {
                    bail!("{name} must be at least 1");
                }
                *slot = n;
            }
        }
        for (name, value, slot) in [
            ("body_memory", self.body_memory, &mut h.body_memory),
            (
                "body_memory_per_ip",
                self.body_memory_per_ip,
                &mut h.body_memory_per_ip,
            ),
        ] {
            if let Some(v) = value {
                let n = parse_size(&v).context(name)?;
                if n < 1 << 20 {
                    bail!("{name} must be at least 1MiB");
                }
                *slot = n;
            }
        }
        if let Some(list) = self.trusted_proxy {
            h.trusted_proxies = list
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_cidr)
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(f) = self.forwarded_header {
            h.forwarded_header = ForwardedHeader::parse(&f)?;
        }
        for (name, value, slot) in [
            (
                "max_uploads_per_caller",
                self.max_uploads_per_caller,
                &mut c.uploads.per_caller,
            ),
            (
                "max_uploads_per_repository",
                self.max_uploads_per_repository,
                &mut c.uploads.per_repository,
            ),
        ] {
            if let Some(n) = value {
                if n == 0 {
                    bail!("{name} must be at least 1");
                }
                *slot = n;
            }
        }
        if let Some(a) = self.auth {
            c.auth = match a.as_str() {
                "ecr" => AuthMode::Ecr,
                "none" => AuthMode::None,
                other => bail!("auth: {other:?} is neither \"ecr\" nor \"none\""),
            };
        }
        let regions = self.regions.unwrap_or_default();
        if let Some(r) = self.region.or_else(|| regions.first().cloned()) {
            check_region(&r)?;
            c.region = r;
        }
        c.regions = vec![c.region.clone()];
        for r in regions {
            check_region(&r).context("regions")?;
            if !c.regions.contains(&r) {
                c.regions.push(r);
            }
        }
        for p in self.peers.unwrap_or_default() {
            let peer = p.resolve(&c.regions)?;
            if c.peers.iter().any(|q| q.region == peer.region) {
                bail!("peers: region {} is given twice", peer.region);
            }
            c.peers.push(peer);
        }
        c.registry_host = self.registry_host.filter(|h| !h.is_empty());
        let nonempty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        c.tls = match (nonempty(self.tls_cert), nonempty(self.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => bail!("tls_cert is set but tls_key is not: HTTPS needs both"),
            (None, Some(_)) => bail!("tls_key is set but tls_cert is not: HTTPS needs both"),
        };
        Ok(c)
    }
}

/// Parse `90s`, `15m`, `24h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("{s:?} is not a duration like 90s, 15m, 24h or 7d"),
    };
    Ok(Duration::from_secs(secs))
}

/// Parse a byte size: a bare number of bytes, or a number with `KiB`, `MiB`
/// or `GiB` (also `K`, `M`, `G`; all powers of 1024).
pub fn parse_size(s: &str) -> anyhow::Result<usize> {
    let s = s.trim();
    let bad = || anyhow::anyhow!("{s:?} is not a size like 65536, 64MiB or 1GiB");
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..i].parse().map_err(|_| bad())?;
    let shift = match s[i..].trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" | "m" => 20,
        "G" | "GiB" | "g" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1usize << shift).ok_or_else(bad)
}

/// Parse `10.0.0.0/8`, `2001:db8::/32` or a single address (a /32 or /128).
pub fn parse_cidr(s: &str) -> anyhow::Result<ipnet::IpNet> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| anyhow::anyhow!("trusted_proxy: {s:?} is not an address or CIDR block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_parsing() {
        let file: Overrides =
            toml::from_str("listen = \"0.0.0.0:6000\"\ndata_dir = \"/f\"\nidle_timeout = \"5s\"")
                .unwrap();
        let env = Overrides {
            data_dir: Some("/e".into()),
            ..Default::default()
        };
        let flags = Overrides {
            upload_max_age: Some("2h".into()),
            trusted_proxy: Some(vec!["10.0.0.0/8,192.168.1.7".into(), "::1".into()]),
            body_memory: Some("32MiB".into()),
            forwarded_header: Some("Forwarded".into()),
            ..Default::default()
        };
        let c = flags.over(env.over(file)).resolve().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(c.data_dir, PathBuf::from("/e"));
        assert_eq!(c.upload_max_age, Duration::from_secs(7200));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.http.body_memory, 32 << 20);
        assert_eq!(c.http.trusted_proxies.len(), 3);
        assert_eq!(c.http.trusted_proxies[1].to_string(), "192.168.1.7/32");
        assert_eq!(c.http.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(
            Config::default().http.forwarded_header,
            ForwardedHeader::XForwardedFor
        );
        let bad = Overrides {
            forwarded_header: Some("x-real-ip".into()),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        assert!(toml::from_str::<Overrides>("nonsense = 1").is_err());
        let s3 = StorageLocation::parse("s3://my-bucket/berth/prod/", true).unwrap();
        assert_eq!(
            s3,
            StorageLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "berth/prod/".into(),
                path_style: true
            }
        );
        assert!(StorageLocation::parse("s3://B/x", false).is_err());
        assert!(StorageLocation::parse("file://relative", false).is_err());
        assert!(StorageLocation::parse("gs://b", false).is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        let small = Overrides {
            max_manifest_bytes: Some(1000),
            ..Default::default()
        };
        assert!(small.resolve().is_err());
        let zero = Overrides {
            idle_timeout: Some("0s".into()),
            ..Default::default()
        };
        assert!(zero.resolve().is_err());
        let tls: Overrides =
            toml::from_str("tls_cert = \"/etc/berth/cert.pem\"\ntls_key = \"/etc/berth/key.pem\"")
                .unwrap();
        assert_eq!(
            tls.resolve().unwrap().tls,
            Some(TlsFiles {
                cert: "/etc/berth/cert.pem".into(),
                key: "/etc/berth/key.pem".into()
            })
        );
        let half = Overrides {
            tls_cert: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(half.resolve().is_err());
        assert_eq!(Config::default().tls, None);
    }

    #[test]
    fn transit_settings_and_their_secrets() {
        let file: Overrides = toml::from_str(
            "kms_transit_url = \"http://127.0.0.1:8200\"\nkms_transit_token = \"s.sekrit\"",
        )
        .unwrap();
        assert!(!format!("{file:?}").contains("s.sekrit"));
        let c = file.resolve().unwrap();
        let t = c.kms_transit.clone().unwrap();
        assert_eq!(
            (t.token.as_str(), t.mount.as_str()),
            ("s.sekrit", "transit")
        );
        assert!(!format!("{c:?}").contains("s.sekrit"));
        // A URL without a token, a token without a URL, both token sources: refused.
        for text in [
            "kms_transit_url = \"http://x\"",
            "kms_transit_token = \"t\"",
            "master_key_transit_key = \"k\"",
            "kms_transit_url = \"ftp://x\"\nkms_transit_token = \"t\"",
        ] {
            let o: Overrides = toml::from_str(text).unwrap();
            assert!(o.resolve().is_err(), "{text}");
        }
        // A token file must be private.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s.fromfile\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = Overrides {
            kms_transit_url: Some("http://x".into()),
            kms_transit_token_file: Some(f.clone()),
            ..Default::default()
        };
        assert!(o.clone().resolve().is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            o.resolve().unwrap().kms_transit.unwrap().token,
            "s.fromfile"
        );
    }
}
