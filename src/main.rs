//! The `berth` command: `berth serve` runs the registry.

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
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long)]
    listen: Option<String>,
    /// Directory for blobs and metadata [default: ./berth-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Remove upload sessions untouched for this long (e.g. 24h) [default: 24h]
    #[arg(long)]
    upload_max_age: Option<String>,
    /// How often to look for abandoned uploads [default: 10m]
    #[arg(long)]
    upload_reap_interval: Option<String>,
    /// Largest manifest accepted, in bytes (at least 4 MiB) [default: 8388608]
    #[arg(long)]
    max_manifest_bytes: Option<usize>,
    /// `ecr` (tokens and IAM authorization) or `none` (open, create on push) [default: ecr]
    #[arg(long)]
    auth: Option<String>,
    /// Region of this registry [default: us-east-1]
    #[arg(long)]
    region: Option<String>,
    /// Host:port clients use for the registry (repositoryUri, proxyEndpoint) [default: the request's Host]
    #[arg(long)]
    registry_host: Option<String>,
}

fn env_overrides() -> anyhow::Result<Overrides> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(Overrides {
        listen: var("BERTH_LISTEN"),
        data_dir: var("BERTH_DATA_DIR").map(PathBuf::from),
        upload_max_age: var("BERTH_UPLOAD_MAX_AGE"),
        upload_reap_interval: var("BERTH_UPLOAD_REAP_INTERVAL"),
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
                auth: a.auth,
                region: a.region,
                registry_host: a.registry_host,
            };
            let config = flags.over(env_overrides()?.over(file)).resolve()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(berth::server::serve(config))
        }
        Command::Iam { data_dir, command } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(berth::admin::run(&data_dir, command))
        }
    }
}
