//! The HTTP server: opens the stores, builds the router, runs background
//! jobs and shuts down gracefully on SIGTERM or SIGINT.
//!
//! Routes: `/v2/` and everything below it go to `distribution::dispatch`;
//! `POST /` to the ECR, KMS, SSM, STS, CloudFormation or CloudTrail face (`api_face` picks by the headers);
//! `/console/` (and `GET /` from a browser) to the web console; `/healthz` and `/metrics` are answered
//! here. A middleware gives every request its id (in its log lines and its
//! response) and counts it by route, method and status.
//!
//! Below the router: [`listener`] (the accept loop, connection caps and
//! timeouts) and [`conn`] (per-request body rules and keep-alive); the HTTP
//! mechanics the faces share (client addresses, the body budget, request ids)
//! are in `crate::http`. `docs/security.md` lists every limit.

pub mod conn;
pub mod listener;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::auth::Access;
use crate::config::{AuthMode, Config};
use crate::distribution::{self, Route};
use crate::http::budget::BodyBudget;
use crate::http::client_addr;
use crate::http::{REQUEST_ID_HEADER, RequestId};
use crate::metadata::MetadataStore;
use crate::metrics::{KindLabels, Metrics, RequestLabels};
use crate::registry::{Limits, Registry};
use crate::secrets::MasterKey;
use crate::storage::fs::FsBlobStore;

/// Create the data directory if needed and make it private to the service
/// user (mode 0700), whatever the mode of an existing one: every file below
/// it is then out of other users' reach.
pub fn secure_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making data dir {} private", dir.display()))?;
    Ok(())
}

/// Process-wide settings every `berth` command wants: files it creates are
/// private to the service user (umask 077), and as many descriptors are
/// available as the hard limit allows. Returns the descriptor limit.
pub fn init_process() -> u64 {
    // SAFETY: `umask` only sets the process's file mode creation mask and
    // cannot fail; no memory is involved.
    unsafe {
        libc::umask(0o077);
    }
    listener::raise_fd_limit()
}

/// Logs to standard error, filtered by `BERTH_LOG` (default `info`): text
/// (coloured only on a terminal) or one JSON object per line
/// (`--log-format json`), each line with the span it belongs to (a
/// request's id, a job's id and kind).
pub fn init_logging(format: crate::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        crate::config::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Open the stores `config` names: metadata, and blobs on disk or in S3
/// (sealed blobs under `sealed/`, plaintext blobs of a data directory older
/// than encryption where they always were), and the key ring.
pub async fn open_registry(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Registry> {
    let meta = open_metadata(config).await?;
    let (blobs, legacy_blobs): (
        Arc<dyn crate::storage::BlobStore>,
        Arc<dyn crate::storage::BlobStore>,
    ) = match &config.storage {
        crate::config::StorageLocation::File(dir) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("storage"));
            (
                Arc::new(FsBlobStore::open(&dir.join("sealed")).context("opening blob storage")?),
                Arc::new(FsBlobStore::open(&dir).context("opening blob storage")?),
            )
        }
        crate::config::StorageLocation::S3 {
            bucket,
            prefix,
            path_style,
        } => {
            let settings = crate::storage::s3::client::S3Settings::from_env(bucket, *path_style)?;
            let endpoint = settings.endpoint.clone();
            let client = crate::storage::s3::client::S3Client::new(settings)?;
            let spool = config.data_dir.join("spool");
            let open = |prefix: &str| {
                crate::storage::s3::S3BlobStore::open(client.clone(), prefix, spool.clone())
                    .with_context(|| {
                        format!("opening blob storage s3://{bucket}/{prefix} at {endpoint}")
                    })
            };
            let sealed_prefix = format!("{}/sealed", prefix.trim_end_matches('/'));
            (Arc::new(open(&sealed_prefix)?), Arc::new(open(prefix)?))
        }
    };
    let master = master_key(config).await?;
    meta.set_audit_key(audit_chain_key(&master));
    let mut ring = crate::kms::KeyRing::new(meta.clone(), master, &config.region);
    if let Some(t) = transit(config).await? {
        ring = ring.with_transit(t);
        ring.check()
            .await
            .context("preparing the server-managed key in transit")?;
    }
    let kms = Arc::new(ring);
    Ok(Registry {
        jobs_queued: Arc::new(tokio::sync::Notify::new()),
        meta,
        blobs,
        legacy_blobs,
        kms,
        metrics,
        limits: Limits {
            max_manifest_bytes: config.max_manifest_bytes,
            max_image_layers: config.max_image_layers,
            create_on_push: config.auth == AuthMode::None,
            gc_grace: config.gc_grace,
            uploads: config.uploads,
            download_redirects: config.storage_redirects,
            scan_quota_interval: config.scan_quota_interval,
        },
    })
}

/// The metadata store of `config`: `database_url`, else the SQLite file in
/// the data directory (created private).
pub async fn open_metadata(config: &Config) -> anyhow::Result<MetadataStore> {
    secure_data_dir(&config.data_dir)?;
    let url = match &config.database_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("metadata.db").display()
        ),
    };
    MetadataStore::connect(&url)
        .await
        .with_context(|| format!("opening the metadata database {}", redact_url(&url)))
}

/// A URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The transit engine of `config`, if it keeps the keys (checked: a
/// configured transit that does not answer is an error, never a fallback).
pub async fn transit(config: &Config) -> anyhow::Result<Option<crate::kms::transit::Transit>> {
    let Some(t) = &config.kms_transit else {
        return Ok(None);
    };
    let transit = crate::kms::transit::Transit::new(crate::kms::transit::TransitSettings {
        url: t.url.clone(),
        token: zeroize::Zeroizing::new(t.token.clone()),
        mount: t.mount.clone(),
    })?;
    transit
        .check()
        .await
        .with_context(|| format!("the key custody at {} (kms_transit_url)", t.url))?;
    Ok(Some(transit))
}

/// The key of the audit log's hash chain, derived from the master key.
pub fn audit_chain_key(master: &MasterKey) -> crate::audit::ChainKey {
    crate::audit::ChainKey::new(master.derive("berth audit chain v1"))
}

/// The master key of `config`: sealed by transit (`master_key_transit_key`,
/// the ciphertext in `--master-key-file` or `<data_dir>/master.key.transit`),
/// else `--master-key-file`, else `BERTH_MASTER_KEY`, else `<data_dir>/master.key`.
pub async fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    let env = std::env::var("BERTH_MASTER_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    if let Some(name) = &config.master_key_transit_key {
        if env.is_some() {
            anyhow::bail!(
                "give the master key either as BERTH_MASTER_KEY or sealed by transit (master_key_transit_key), not both"
            );
        }
        let transit = transit(config)
            .await?
            .context("master_key_transit_key needs kms_transit_url")?;
        let file = config
            .master_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("master.key.transit"));
        return crate::kms::transit::load_master_key(&transit, name, &file).await;
    }
    MasterKey::load(
        config.master_key_file.as_deref(),
        env.as_deref(),
        &config.data_dir,
    )
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            axum::routing::post(api_dispatch).get(crate::console::root),
        )
        .route("/console", any(crate::console::dispatch))
        .route("/console/", any(crate::console::dispatch))
        .route("/console/{*rest}", any(crate::console::dispatch))
        .route("/v2", any(distribution::dispatch))
        .route("/v2/", any(distribution::dispatch))
        .route("/v2/{*rest}", any(distribution::dispatch))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe_requests,
        ))
        .with_state(state)
}

/// The API a `POST /` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiFace {
    Ecr,
    Kms,
    Ssm,
    Sts,
    CloudFormation,
    CloudTrail,
}

/// Which face answers a `POST /`, from its headers alone (the body is the
/// face's to read, within its own limits): an AWS JSON request by the prefix
/// of its `X-Amz-Target`, a Query-protocol request (form-encoded) by the
/// service its SigV4 credential scope names. Anything else goes to the ECR
/// API, which answers it with the errors an ECR client expects.
fn api_face(headers: &axum::http::HeaderMap) -> ApiFace {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return match target {
            t if t.starts_with(crate::kms_api::TARGET_PREFIX) => ApiFace::Kms,
            t if t.starts_with(crate::ssm_api::TARGET_PREFIX) => ApiFace::Ssm,
            t if t.starts_with(crate::cloudtrail_api::TARGET_PREFIX) => ApiFace::CloudTrail,
            _ => ApiFace::Ecr,
        };
    }
    if crate::http::is_form_encoded(headers) {
        return match crate::sigv4::scope_service(headers) {
            Some(crate::sts_api::SERVICE) => ApiFace::Sts,
            Some("cloudformation") => ApiFace::CloudFormation,
            _ => ApiFace::Ecr,
        };
    }
    ApiFace::Ecr
}

/// `POST /`: the face [`api_face`] picks.
async fn api_dispatch(state: State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    match api_face(req.headers()) {
        ApiFace::Ecr => crate::ecr_api::dispatch(state, req).await,
        ApiFace::Kms => crate::kms_api::dispatch(state, req).await,
        ApiFace::Ssm => crate::ssm_api::dispatch(state, req).await,
        ApiFace::Sts => crate::sts_api::dispatch(state, req).await,
        ApiFace::CloudFormation => crate::cloudformation_api::dispatch(state, req).await,
        ApiFace::CloudTrail => crate::cloudtrail_api::dispatch(state, req).await,
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.meta.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metadata store: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Every request: given an id (kept in the extensions for the faces, in a
/// span so every log line of the request carries it, and in the
/// `x-request-id` response header), counted and timed by route, method and
/// status, and logged when it failed on our side.
async fn observe_requests(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    use tracing::Instrument;
    let id = RequestId::for_request(req.headers());
    req.extensions_mut().insert(id.clone());
    let route = Route::label(req.uri().path());
    let method = method_label(req.method());
    let start = Instant::now();
    // At ERROR level so that the span exists under any log filter (a span
    // disabled by `BERTH_LOG=warn` would leave the warnings without their
    // request id); a span's level only decides whether it is recorded.
    let span = tracing::error_span!("request", id = %id.0, method, route);
    let mut resp = next.run(req).instrument(span.clone()).await;
    // An API call is labelled with its operation (set by its face).
    let route = resp
        .extensions()
        .get::<crate::http::OperationLabel>()
        .map_or(route, |op| op.0);
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(
                status,
                operation = route,
                ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status,
                operation = route,
                ms = elapsed.as_millis() as u64,
                "request"
            );
        }
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id.0) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&KindLabels { kind: route })
        .observe(elapsed.as_secs_f64());
    resp
}

/// HTTP methods as a metrics label: the ones the API uses by name, any other as `other`,
/// so a client cannot create a time series per made-up method.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Run the server until SIGTERM/SIGINT.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    let fd_limit = init_process();
    let fitted = listener::fit_connections(config.http.max_connections, fd_limit);
    if fitted < config.http.max_connections {
        tracing::warn!(
            configured = config.http.max_connections,
            fd_limit,
            max_connections = fitted,
            "max_connections lowered to fit the open-file limit"
        );
        config.http.max_connections = fitted;
    }
    // A certificate that cannot be used stops the start, before anything is opened.
    let certs = match &config.tls {
        Some(files) => Some(Arc::new(
            tls::CertStore::open(files).context("loading the TLS certificate")?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(open_registry(&config, metrics.clone()).await?);
    match registry.blobs.check().await {
        Ok(()) => {}
        // Down for now: serve anyway (blob requests answer 503 until it is back).
        Err(crate::storage::StorageError::Unavailable(e)) => {
            tracing::warn!(error = %e, "blob storage is unavailable; starting anyway");
        }
        Err(e) => return Err(anyhow::anyhow!(e).context("checking blob storage")),
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let master = master_key(&config).await?;
    let pull_through = Arc::new(crate::pull_through::PullThrough::new(
        registry.clone(),
        master.clone(),
        &config.region,
        config.pull_through_interval,
    ));
    let access = Access::open(registry.meta.clone(), master, &config.region).await?;
    let root_key = match (
        env("BERTH_ROOT_ACCESS_KEY_ID"),
        env("BERTH_ROOT_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Some((id, secret)),
        (None, None) => None,
        _ => anyhow::bail!(
            "set both BERTH_ROOT_ACCESS_KEY_ID and BERTH_ROOT_SECRET_ACCESS_KEY, or neither"
        ),
    };
    if let Some(report) = access
        .bootstrap(
            env("BERTH_ACCOUNT_ID").as_deref(),
            root_key.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
        )
        .await?
    {
        println!(
            "Created the primary account {} and its administrator key.",
            report.account_id
        );
        println!("  AWS_ACCESS_KEY_ID={}", report.access_key_id);
        match &report.secret_access_key {
            Some(s) => println!("  AWS_SECRET_ACCESS_KEY={s}   (shown once; store it now)"),
            None => println!("  AWS_SECRET_ACCESS_KEY=<from BERTH_ROOT_SECRET_ACCESS_KEY>"),
        }
    }
    let primary_account = access.primary_account().await?;
    let stacks = crate::stacks::Stacks::new(registry.meta.clone(), config.region.clone());
    let mut access = access;
    access.serve_regions(&config.regions);
    let access = Arc::new(access);
    let replicator = Arc::new(crate::replication::Replicator::new(
        registry.clone(),
        access.clone(),
        &config.peers,
    )?);
    let audit =
        crate::audit_trail::AuditTrail::start(registry.meta.clone(), config.audit, metrics.clone());
    let state = Arc::new(AppState {
        audit: audit.clone(),
        registry: registry.clone(),
        stacks,
        replicator: replicator.clone(),
        pull_through,
        metrics: metrics.clone(),
        access,
        primary_account,
        auth_required: config.auth == AuthMode::Ecr,
        region: config.region.clone(),
        registry_host: config.registry_host.clone(),
        body_budget: BodyBudget::new(config.http.body_memory, config.http.body_memory_per_ip),
        http: config.http.clone(),
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    print_banner(&config, addr);
    tracing::info!(%addr, region = %config.region, regions = ?config.regions,
        tls = certs.is_some(), "listening");
    let acceptor = match &certs {
        Some(store) => {
            tracing::info!(
                cert = %store.cert_path().display(),
                sha256 = %tls::fingerprint(&store.current()),
                "serving HTTPS"
            );
            tokio::spawn(store.clone().watch(metrics.clone()));
            Some(store.acceptor().context("setting up TLS")?)
        }
        None => None,
    };

    let jobs = tokio::spawn(
        crate::jobs::Worker::new(registry, job_schedule(&config))
            .with_replicator(replicator)
            .run(),
    );
    let ctx = listener::ListenerContext {
        router: router(state),
        limits: config.http.clone(),
        trusted: Arc::new(client_addr::TrustedProxies::new(
            config.http.trusted_proxies.clone(),
            config.http.forwarded_header,
        )),
        metrics,
        table: Arc::new(listener::ConnTable::default()),
        tls: acceptor,
    };
    listener::run(listener, ctx, shutdown_signal())
        .await
        .context("serving HTTP")?;
    jobs.abort();
    audit.flush().await;
    tracing::info!("shut down");
    Ok(())
}

/// What `berth serve` prints on start: where it listens, for which region,
/// and the commands that push to it (with the host clients should use).
fn print_banner(config: &Config, addr: std::net::SocketAddr) {
    let host = config
        .registry_host
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let also = match &config.regions[1..] {
        [] => String::new(),
        more => format!(", also serving {}", more.join(", ")),
    };
    println!(
        "Berth is listening on {scheme}://{addr} (region {}{also}, data in {})",
        config.region,
        config.data_dir.display()
    );
    if config.auth == AuthMode::Ecr {
        let e = format!(
            "--endpoint-url {scheme}://{host} --region {}",
            config.region
        );
        println!("Push to it with:");
        println!("  aws ecr create-repository --repository-name NAME {e}");
        println!(
            "  aws ecr get-login-password {e} | docker login --username AWS --password-stdin {host}"
        );
        println!("  docker tag IMAGE {host}/NAME:TAG && docker push {host}/NAME:TAG");
    } else {
        println!(
            "Open registry (--auth none). Push to it with:  docker tag IMAGE {host}/NAME:TAG && docker push {host}/NAME:TAG"
        );
    }
}

/// The GC settings of a configuration.
pub fn gc_settings(config: &Config) -> crate::gc::GcSettings {
    crate::gc::GcSettings {
        grace: config.gc_grace,
        upload_max_age: config.upload_max_age,
    }
}

/// The periodic background jobs of a configuration.
pub fn job_schedule(config: &Config) -> crate::jobs::Schedule {
    crate::jobs::Schedule {
        gc_every: config.gc_interval,
        gc: gc_settings(config),
        lifecycle_interval: config.lifecycle_interval,
        reap_every: config.upload_reap_interval,
        kms_every: config.kms_job_interval,
        upload_max_age: config.upload_max_age,
        audit_retention: config.audit_retention,
        gc_pause_file: config.data_dir.join("gc.pause"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn signed_for(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/{service}/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=00"
        )
    }

    #[test]
    fn post_requests_go_to_the_face_their_headers_name() {
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        let json = "application/x-amz-json-1.1";
        for (pairs, face) in [
            (
                vec![
                    ("content-type", json),
                    (
                        "x-amz-target",
                        "AmazonEC2ContainerRegistry_V20150921.ListImages",
                    ),
                ],
                ApiFace::Ecr,
            ),
            (
                vec![
                    ("content-type", json),
                    ("x-amz-target", "TrentService.Encrypt"),
                ],
                ApiFace::Kms,
            ),
            (
                vec![
                    ("content-type", json),
                    ("x-amz-target", "AmazonSSM.GetParameter"),
                ],
                ApiFace::Ssm,
            ),
            (
                vec![
                    ("content-type", form),
                    ("authorization", signed_for("sts").as_str()),
                ],
                ApiFace::Sts,
            ),
            (
                vec![
                    ("content-type", "Application/X-WWW-Form-URLEncoded"),
                    ("authorization", signed_for("sts").as_str()),
                ],
                ApiFace::Sts,
            ),
            // A target wins over the scope; a JSON body is never a Query request.
            (
                vec![
                    ("content-type", form),
                    ("x-amz-target", "TrentService.Encrypt"),
                    ("authorization", signed_for("sts").as_str()),
                ],
                ApiFace::Kms,
            ),
            (
                vec![
                    ("content-type", json),
                    ("authorization", signed_for("sts").as_str()),
                ],
                ApiFace::Ecr,
            ),
            // A form for a service Berth does not answer, or unsigned: the ECR
            // face refuses it (wrong scope, or no signature).
            (
                vec![
                    ("content-type", form),
                    ("authorization", signed_for("sqs").as_str()),
                ],
                ApiFace::Ecr,
            ),
            (vec![("content-type", form)], ApiFace::Ecr),
            (vec![], ApiFace::Ecr),
        ] {
            assert_eq!(api_face(&headers(&pairs)), face, "{pairs:?}");
        }
    }
}
