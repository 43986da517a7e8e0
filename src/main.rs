//! The `berth` command: `berth serve` runs the registry; `berth gc`,
//! `berth lifecycle`, `berth iam`, `berth secrets` and `berth break-glass` are the operator's
//! commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use berth::config::Overrides;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted container registry that speaks ECR"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry: the OCI Distribution API on /v2/ and the ECR API on POST /.
    Serve(Box<ServeArgs>),
    /// Garbage collection, on demand (the server also runs it every gc_interval).
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// Content touched more recently than this is never collected [default: 1h]
        #[arg(long, env = "BERTH_GC_GRACE", global = true)]
        gc_grace: Option<String>,
        /// Upload sessions untouched for this long are removed [default: 24h]
        #[arg(long, env = "BERTH_UPLOAD_MAX_AGE", global = true)]
        upload_max_age: Option<String>,
        #[command(subcommand)]
        command: berth::maintenance::GcCommand,
    },
    /// Lifecycle policies: evaluate now, preview at an instant, list expiries.
    Lifecycle {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::LifecycleCommand,
    },
    /// The background job queue: list jobs, retry a failed one.
    Jobs {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::JobsCommand,
    },
    /// The audit log: verify its hash chain, export CloudTrail log files, stream JSON lines.
    Audit {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::AuditCommand,
    },
    /// Replication: each destination's backlog, lag and last failure.
    Replication {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::ReplicationCommand,
    },
    /// The vulnerability database scans match against: import OSV data, show what is loaded.
    Vulndb {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::VulndbCommand,
    },
    /// Encryption at rest: progress of re-encrypting an older data directory; do it now.
    Encryption {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::EncryptionCommand,
    },
    /// Image inventories: export one as a CycloneDX SBOM.
    Scan {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::maintenance::ScanCommand,
    },
    /// Manage accounts, IAM users, access keys and identity policies.
    Iam {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::admin::IamCommand,
    },
    /// Upstream credentials for pull-through cache rules (their credentialArn).
    Secrets {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::admin::SecretsCommand,
    },
    /// Repair access that policies have locked out, with direct access to the
    /// store (docs/access-control.md, "Break-glass").
    BreakGlass {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: berth::admin::BreakGlassCommand,
    },
}

/// Where the state is: what every command that opens the store needs.
#[derive(Args)]
struct StoreArgs {
    /// TOML config file; its settings are overridden by BERTH_* variables and flags.
    #[arg(long, env = "BERTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory for blobs and metadata [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Metadata database: sqlite://FILE or postgres://USER:PASS@HOST:PORT/DB [default: <data-dir>/metadata.db]
    #[arg(long, env = "BERTH_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Blob storage: file:///DIR or s3://BUCKET/PREFIX (endpoint, region and credentials from the AWS_* variables) [default: file://<data-dir>/storage]
    #[arg(long, env = "BERTH_STORAGE_URL", global = true)]
    storage_url: Option<String>,
    /// Address S3 by path (http://host/bucket/key) rather than by virtual host [default: only for an IP-address endpoint]
    #[arg(long, env = "BERTH_S3_PATH_STYLE", global = true)]
    s3_path_style: bool,
    /// File holding the master key (64 hex characters); created if absent
    /// [default: BERTH_MASTER_KEY, else <data-dir>/master.key]
    #[arg(long, env = "BERTH_MASTER_KEY_FILE", global = true)]
    master_key_file: Option<PathBuf>,
    /// Keep KMS keys and the AES256 key in this Vault / OpenBao transit engine (e.g. http://127.0.0.1:8200) [default: sealed with the master key]
    #[arg(long, env = "BERTH_KMS_TRANSIT_URL", global = true)]
    kms_transit_url: Option<String>,
    /// The transit token (prefer BERTH_KMS_TRANSIT_TOKEN or --kms-transit-token-file: flags show in `ps`)
    #[arg(
        long,
        env = "BERTH_KMS_TRANSIT_TOKEN",
        global = true,
        hide_env_values = true
    )]
    kms_transit_token: Option<String>,
    /// File holding the transit token (mode 0600)
    #[arg(long, env = "BERTH_KMS_TRANSIT_TOKEN_FILE", global = true)]
    kms_transit_token_file: Option<PathBuf>,
    /// The transit engine's mount path [default: transit]
    #[arg(long, env = "BERTH_KMS_TRANSIT_MOUNT", global = true)]
    kms_transit_mount: Option<String>,
    /// Seal the master key with this transit key; the master key file then holds its ciphertext [default: off]
    #[arg(long, env = "BERTH_MASTER_KEY_TRANSIT_KEY", global = true)]
    master_key_transit_key: Option<String>,
    /// Region of this registry [default: us-east-1]; given more than once (or
    /// comma-separated), every region this deployment serves, the first its home
    #[arg(long, env = "BERTH_REGION", global = true, value_delimiter = ',')]
    region: Vec<String>,
    /// Log lines as `text` or `json` (one object per line) [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT", global = true)]
    log_format: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<String>,
    /// `ecr` (tokens and IAM authorization) or `none` (open, create on push) [default: ecr]
    #[arg(long, env = "BERTH_AUTH")]
    auth: Option<String>,
    /// Host:port clients use for the registry (repositoryUri, proxyEndpoint) [default: the request's Host]
    #[arg(long, env = "BERTH_REGISTRY_HOST")]
    registry_host: Option<String>,
    /// Answer blob downloads with a 307 to a presigned S3 URL valid this long (e.g. 15m), instead of streaming them [default: off]
    #[arg(long, env = "BERTH_STORAGE_REDIRECTS")]
    storage_redirects: Option<String>,
    /// Remove upload sessions untouched for this long (e.g. 24h) [default: 24h]
    #[arg(long, env = "BERTH_UPLOAD_MAX_AGE")]
    upload_max_age: Option<String>,
    /// How often to look for abandoned uploads [default: 10m]
    #[arg(long, env = "BERTH_UPLOAD_REAP_INTERVAL")]
    upload_reap_interval: Option<String>,
    /// Largest manifest accepted, in bytes (at least 4 MiB) [default: 8388608]
    #[arg(long, env = "BERTH_MAX_MANIFEST_BYTES")]
    max_manifest_bytes: Option<usize>,
    /// Most layers an image manifest may list [default: 127, as ECR and Docker]
    #[arg(long, env = "BERTH_MAX_IMAGE_LAYERS")]
    max_image_layers: Option<usize>,
    /// How often garbage collection runs [default: 10m]
    #[arg(long, env = "BERTH_GC_INTERVAL")]
    gc_interval: Option<String>,
    /// Content touched more recently than this is never collected [default: 1h]
    #[arg(long, env = "BERTH_GC_GRACE")]
    gc_grace: Option<String>,
    /// How often lifecycle policies are evaluated [default: 24h]
    #[arg(long, env = "BERTH_LIFECYCLE_INTERVAL")]
    lifecycle_interval: Option<String>,
    /// An image may be scanned once per this period, as ECR's quota; 0s lifts it [default: 24h]
    #[arg(long, env = "BERTH_SCAN_QUOTA_INTERVAL")]
    scan_quota_interval: Option<String>,
    /// A tag cached by a pull-through cache rule is re-checked upstream at most this often [default: 24h, as ECR]
    #[arg(long, env = "BERTH_PULL_THROUGH_INTERVAL")]
    pull_through_interval: Option<String>,
    /// Record API calls and /v2/ actions in the audit log (docs/audit.md) [default: true]
    #[arg(long, env = "BERTH_AUDIT")]
    audit: Option<bool>,
    /// Delete audit events older than this; 0s keeps them forever [default: 90d]
    #[arg(long, env = "BERTH_AUDIT_RETENTION")]
    audit_retention: Option<String>,
    /// Close a connection with no request in flight for this long [default: 30s]
    #[arg(long, env = "BERTH_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// Abandon a response the client has not read from for this long [default: 60s]
    #[arg(long, env = "BERTH_SEND_TIMEOUT")]
    send_timeout: Option<String>,
    /// Abandon a request body that has sent nothing for this long [default: 30s]
    #[arg(long, env = "BERTH_BODY_TIMEOUT")]
    body_timeout: Option<String>,
    /// An ECR API request body or a manifest must arrive within this long [default: 60s]
    #[arg(long, env = "BERTH_API_BODY_TIMEOUT")]
    api_body_timeout: Option<String>,
    /// After SIGTERM, give requests in flight this long [default: 30s]
    #[arg(long, env = "BERTH_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Option<String>,
    /// Most open connections [default: 4096, lowered to fit the file descriptor limit]
    #[arg(long, env = "BERTH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most open connections from one client address [default: 256]
    #[arg(long, env = "BERTH_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Request bodies held in memory at once, e.g. 256MiB [default: 256MiB]
    #[arg(long, env = "BERTH_BODY_MEMORY")]
    body_memory: Option<String>,
    /// Request bodies held in memory at once for one client address [default: 64MiB]
    #[arg(long, env = "BERTH_BODY_MEMORY_PER_IP")]
    body_memory_per_ip: Option<String>,
    /// A reverse proxy (address or CIDR) whose forwarding header (--forwarded-header) is believed; repeatable
    #[arg(long, env = "BERTH_TRUSTED_PROXY", value_delimiter = ',')]
    trusted_proxy: Vec<String>,
    /// The header the trusted proxies write the client's address in, the only one read: `x-forwarded-for` or `forwarded` (RFC 7239) [default: x-forwarded-for]
    #[arg(long, env = "BERTH_FORWARDED_HEADER")]
    forwarded_header: Option<String>,
    /// Open upload sessions allowed per caller [default: 2000]
    #[arg(long, env = "BERTH_MAX_UPLOADS_PER_CALLER")]
    max_uploads_per_caller: Option<u64>,
    /// Open upload sessions allowed per repository [default: 5000]
    #[arg(long, env = "BERTH_MAX_UPLOADS_PER_REPOSITORY")]
    max_uploads_per_repository: Option<u64>,
    /// Serve HTTPS: the certificate chain, PEM (server certificate first); re-read when it changes [default: plain HTTP]
    #[arg(long, env = "BERTH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "BERTH_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

impl StoreArgs {
    /// The file named by `--config`, under these flags (flags and `BERTH_*` win).
    fn overrides(self, extra: Overrides) -> anyhow::Result<Overrides> {
        let file = match &self.config {
            Some(p) => Overrides::from_file(p)?,
            None => Overrides::default(),
        };
        let flags = Overrides {
            data_dir: self.data_dir,
            database_url: self.database_url,
            storage_url: self.storage_url,
            s3_path_style: self.s3_path_style.then_some(true),
            master_key_file: self.master_key_file,
            kms_transit_url: self.kms_transit_url,
            kms_transit_token: self.kms_transit_token.map(berth::config::SecretString),
            kms_transit_token_file: self.kms_transit_token_file,
            kms_transit_mount: self.kms_transit_mount,
            master_key_transit_key: self.master_key_transit_key,
            region: self.region.first().cloned(),
            regions: (self.region.len() > 1).then_some(self.region),
            log_format: self.log_format,
            ..extra
        };
        Ok(flags.over(file))
    }

    /// The settings, with logging started as they say.
    fn resolve(self, extra: Overrides) -> anyhow::Result<berth::config::Config> {
        let config = self.overrides(extra)?.resolve()?;
        berth::server::init_logging(config.log_format);
        Ok(config)
    }
}

/// Settings from flags over `BERTH_*` (clap reads both) over the config file over defaults.
fn resolve(a: ServeArgs) -> anyhow::Result<berth::config::Config> {
    let flags = Overrides {
        listen: a.listen,
        auth: a.auth,
        registry_host: a.registry_host,
        storage_redirects: a.storage_redirects,
        upload_max_age: a.upload_max_age,
        upload_reap_interval: a.upload_reap_interval,
        max_manifest_bytes: a.max_manifest_bytes,
        max_image_layers: a.max_image_layers,
        gc_interval: a.gc_interval,
        gc_grace: a.gc_grace,
        lifecycle_interval: a.lifecycle_interval,
        scan_quota_interval: a.scan_quota_interval,
        pull_through_interval: a.pull_through_interval,
        audit: a.audit,
        audit_retention: a.audit_retention,
        idle_timeout: a.idle_timeout,
        send_timeout: a.send_timeout,
        body_timeout: a.body_timeout,
        api_body_timeout: a.api_body_timeout,
        shutdown_timeout: a.shutdown_timeout,
        max_connections: a.max_connections,
        max_connections_per_ip: a.max_connections_per_ip,
        body_memory: a.body_memory,
        body_memory_per_ip: a.body_memory_per_ip,
        trusted_proxy: (!a.trusted_proxy.is_empty()).then_some(a.trusted_proxy),
        forwarded_header: a.forwarded_header,
        max_uploads_per_caller: a.max_uploads_per_caller,
        max_uploads_per_repository: a.max_uploads_per_repository,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        ..Overrides::default()
    };
    a.store.resolve(flags)
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let config = resolve(*a)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(berth::server::serve(config));
            // Blocking I/O still running (a write the shutdown cut short) gets
            // a moment to finish; nothing waits on it forever.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            result
        }
        Command::Gc {
            store,
            gc_grace,
            upload_max_age,
            command,
        } => {
            let config = store.resolve(Overrides {
                gc_grace,
                upload_max_age,
                ..Overrides::default()
            })?;
            current_thread()?.block_on(berth::maintenance::gc(&config, command))
        }
        Command::Lifecycle { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::lifecycle(&config, command))
        }
        Command::Vulndb { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::vulndb(&config, command))
        }
        Command::Encryption { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::encryption(&config, command))
        }
        Command::Scan { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::scan(&config, command))
        }
        Command::Jobs { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::jobs(&config, command))
        }
        Command::Audit { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::audit(&config, command))
        }
        Command::Replication { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::maintenance::replication(&config, command))
        }
        Command::Iam { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::admin::run(&config, command))
        }
        Command::Secrets { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::admin::secrets(&config, command))
        }
        Command::BreakGlass { store, command } => {
            let config = store.resolve(Overrides::default())?;
            current_thread()?.block_on(berth::admin::break_glass(&config, command))
        }
    }
}
