//! The `berth` command: `berth serve` runs the registry; `berth gc`,
//! `berth lifecycle` and `berth iam` are the operator's commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Garbage collection, on demand (the server also runs it every gc_interval).
    Gc {
        #[command(flatten)]
        settings: ServeArgs,
        #[command(subcommand)]
        command: berth::maintenance::GcCommand,
    },
    /// Lifecycle policies: evaluate now, preview at an instant, list expiries.
    Lifecycle {
        #[command(flatten)]
        settings: ServeArgs,
        #[command(subcommand)]
        command: berth::maintenance::LifecycleCommand,
    },
    /// Manage accounts, IAM users, access keys and identity policies.
    Iam {
        /// The data directory of the registry [default: ./berth-data]
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: berth::admin::IamCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; its settings are overridden by BERTH_* variables and flags.
    #[arg(long, env = "BERTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Directory for blobs and metadata [default: ./berth-data]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Remove upload sessions untouched for this long (e.g. 24h) [default: 24h]
    #[arg(long, global = true)]
    upload_max_age: Option<String>,
    /// How often to look for abandoned uploads [default: 10m]
    #[arg(long, global = true)]
    upload_reap_interval: Option<String>,
    /// Largest manifest accepted, in bytes (at least 4 MiB) [default: 8388608]
    #[arg(long, global = true)]
    max_manifest_bytes: Option<usize>,
    /// How often garbage collection runs [default: 10m]
    #[arg(long, global = true)]
    gc_interval: Option<String>,
    /// Content touched more recently than this is never collected [default: 1h]
    #[arg(long, global = true)]
    gc_grace: Option<String>,
    /// How often lifecycle policies are evaluated [default: 24h]
    #[arg(long, global = true)]
    lifecycle_interval: Option<String>,
    /// `ecr` (tokens and IAM authorization) or `none` (open, create on push) [default: ecr]
    #[arg(long, global = true)]
    auth: Option<String>,
    /// Region of this registry [default: us-east-1]
    #[arg(long, global = true)]
    region: Option<String>,
    /// Host:port clients use for the registry (repositoryUri, proxyEndpoint) [default: the request's Host]
    #[arg(long, global = true)]
    registry_host: Option<String>,
}

fn env_overrides() -> anyhow::Result<Overrides> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(Overrides {
        listen: var("BERTH_LISTEN"),
        data_dir: var("BERTH_DATA_DIR").map(PathBuf::from),
        upload_max_age: var("BERTH_UPLOAD_MAX_AGE"),
        upload_reap_interval: var("BERTH_UPLOAD_REAP_INTERVAL"),
        gc_interval: var("BERTH_GC_INTERVAL"),
        gc_grace: var("BERTH_GC_GRACE"),
        lifecycle_interval: var("BERTH_LIFECYCLE_INTERVAL"),
        auth: var("BERTH_AUTH"),
        region: var("BERTH_REGION"),
        registry_host: var("BERTH_REGISTRY_HOST"),
        max_manifest_bytes: match var("BERTH_MAX_MANIFEST_BYTES") {
            Some(v) => {
                Some(v.parse().map_err(|_| {
                    anyhow::anyhow!("BERTH_MAX_MANIFEST_BYTES: {v:?} is not a number")
                })?)
            }
            None => None,
        },
    })
}

/// Settings from flags over `BERTH_*` over the config file over defaults.
fn resolve(a: ServeArgs) -> anyhow::Result<berth::config::Config> {
    let file = match &a.config {
        Some(p) => Overrides::from_file(p)?,
        None => Overrides::default(),
    };
    let flags = Overrides {
        listen: a.listen,
        data_dir: a.data_dir,
        upload_max_age: a.upload_max_age,
        upload_reap_interval: a.upload_reap_interval,
        max_manifest_bytes: a.max_manifest_bytes,
        gc_interval: a.gc_interval,
        gc_grace: a.gc_grace,
        lifecycle_interval: a.lifecycle_interval,
        auth: a.auth,
        region: a.region,
        registry_host: a.registry_host,
    };
    flags.over(env_overrides()?.over(file)).resolve()
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let config = resolve(a)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(berth::server::serve(config))
        }
        Command::Gc { settings, command } => {
            let config = resolve(settings)?;
            current_thread()?.block_on(berth::maintenance::gc(&config, command))
        }
        Command::Lifecycle { settings, command } => {
            let config = resolve(settings)?;
            current_thread()?.block_on(berth::maintenance::lifecycle(&config, command))
        }
        Command::Iam { data_dir, command } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(berth::admin::run(&data_dir, command))
        }
    }
}
