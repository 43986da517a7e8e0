//! The HTTP server: opens the stores, builds the router, runs background
//! jobs and shuts down gracefully on SIGTERM or SIGINT.
//!
//! Routes: `/v2/` and everything below it go to `distribution::dispatch`;
//! `/healthz` and `/metrics` are answered here. A middleware counts every
//! request by route, method and status.

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

use crate::config::Config;
use crate::distribution::{self, Route};
use crate::metadata::MetadataStore;
use crate::metrics::{KindLabels, Metrics, RequestLabels};
use crate::registry::{Limits, Registry};
use crate::storage::fs::FsBlobStore;

/// What every request handler can reach. Holds handles to shared stores
/// only; no registry state lives here.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// Open the embedded stores under `config.data_dir`.
pub async fn open_registry(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Registry> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let meta = MetadataStore::open_sqlite(&config.data_dir.join("metadata.db"))
        .await
        .context("opening the metadata database")?;
    let blobs =
        FsBlobStore::open(&config.data_dir.join("storage")).context("opening blob storage")?;
    Ok(Registry {
        meta,
        blobs: Arc::new(blobs),
        metrics,
        limits: Limits {
            max_manifest_bytes: config.max_manifest_bytes,
        },
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", any(distribution::dispatch))
        .route("/v2/", any(distribution::dispatch))
        .route("/v2/{*rest}", any(distribution::dispatch))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
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

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = Route::label(req.uri().path());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&KindLabels { kind: route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Run the server until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(open_registry(&config, metrics.clone()).await?);
    let state = Arc::new(AppState {
        registry: registry.clone(),
        metrics,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "Berth is listening on http://{addr} (data in {})",
        config.data_dir.display()
    );
    println!("Push to it with:  docker tag IMAGE {addr}/NAME:TAG && docker push {addr}/NAME:TAG");
    tracing::info!(%addr, "listening");

    let reaper = tokio::spawn(reap_uploads(registry, config.clone()));
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    reaper.abort();
    tracing::info!("shut down");
    Ok(())
}

/// Remove abandoned upload sessions periodically.
async fn reap_uploads(registry: Arc<Registry>, config: Config) {
    let mut tick = tokio::time::interval(config.upload_reap_interval);
    loop {
        tick.tick().await;
        match registry.reap_stale_uploads(config.upload_max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed abandoned upload sessions"),
            Err(e) => tracing::warn!(error = %e, "reaping abandoned uploads failed"),
        }
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
