//! Pulls of repositories a pull-through cache rule serves: a manifest or
//! blob the registry does not have is fetched through the `pull_through`
//! service (after `ecr:BatchImportUpstreamImage`, and `ecr:CreateRepository`
//! for a repository not made yet, as ECR asks); a cached tag is re-checked
//! upstream once per interval. Everything else is the ordinary pull.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::errors::OciError;
use super::{DOCKER_CONTENT_DIGEST, authorize, blobs, denied, manifests, set};
use crate::app::AppState;
use crate::auth::Caller;
use crate::pull_through::{BlobFetch, Plan, PullError};
use crate::reference::Reference;
use crate::registry::{RegistryError, RepoId};

fn pull_error(e: PullError, unknown: &'static str) -> OciError {
    let msg = e.to_string();
    match e {
        PullError::NotFound(_) => OciError::new(StatusCode::NOT_FOUND, unknown, msg),
        PullError::Upstream(_) | PullError::Credentials(_) => {
            OciError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", msg)
        }
        PullError::Tampered(_) => OciError::new(StatusCode::BAD_GATEWAY, "DIGEST_INVALID", msg),
        PullError::Invalid(_) => OciError::new(StatusCode::BAD_GATEWAY, "MANIFEST_INVALID", msg),
        PullError::Busy(_) => OciError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
            .with_header(header::RETRY_AFTER, "1".into()),
        PullError::Registry(r) => match std::sync::Arc::try_unwrap(r) {
            Ok(r) => r.into(),
            Err(r) => OciError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", r.to_string()),
        },
    }
}

async fn plan_of(state: &AppState, repo: &RepoId) -> Result<Option<Plan>, OciError> {
    state
        .pull_through
        .plan(repo)
        .await
        .map_err(|e| RegistryError::Meta(e).into())
}

/// Whether the caller may have the cache fetch from the upstream.
async fn may_import(
    state: &AppState,
    parts: &Parts,
    caller: Option<&Caller>,
    plan: &Plan,
) -> Result<bool, OciError> {
    let Some(c) = caller else { return Ok(true) };
    authorize(
        state,
        parts,
        c,
        "ecr:BatchImportUpstreamImage",
        &plan.repo.registry,
        Some(plan.repo.name.as_str()),
    )
    .await
}

/// Refuse unless the caller may trigger a fetch (and create the repository).
async fn authorize_import(
    state: &AppState,
    parts: &Parts,
    caller: Option<&Caller>,
    plan: &Plan,
) -> Result<(), OciError> {
    let Some(c) = caller else { return Ok(()) };
    let (registry, name) = (&plan.repo.registry, Some(plan.repo.name.as_str()));
    for action in ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"] {
        if action == "ecr:CreateRepository"
            && state
                .pull_through
                .repository_exists(plan)
                .await
                .map_err(|e| OciError::from(RegistryError::Meta(e)))?
        {
            continue;
        }
        if !authorize(state, parts, c, action, registry, name).await? {
            return Err(denied(state, c, action, registry, name));
        }
    }
    Ok(())
}

/// `GET|HEAD /v2/<name>/manifests/<reference>`.
pub(super) async fn manifest(
    state: &AppState,
    parts: &Parts,
    caller: Option<&Caller>,
    repo: &RepoId,
    r: &str,
    head: bool,
) -> Result<Response, OciError> {
    let reg = &state.registry;
    let headers = &parts.headers;
    let Some(plan) = plan_of(state, repo).await? else {
        return manifests::get(reg, repo, r, headers, head).await;
    };
    let pt = &state.pull_through;
    let reference = Reference::parse(r).ok();
    let serve = |f: &crate::pull_through::Fetched, reference: &Reference| {
        manifests::respond(
            repo,
            reference,
            headers,
            head,
            Body::from(f.bytes.clone()),
            f.bytes.len(),
            &f.media_type,
            &f.digest,
        )
    };
    if let Some(reference @ Reference::Tag(t)) = &reference
        && let Some(cached) = pt.tag_due(&plan, t).await
        && may_import(state, parts, caller, &plan).await?
        && let Some(newer) = pt.refresh_tag(&plan, t, &cached).await
    {
        return serve(&newer, reference);
    }
    match manifests::get(reg, repo, r, headers, head).await {
        Ok(resp) => {
            pt.hit("manifest");
            Ok(resp)
        }
        Err(e) if matches!(e.code, "MANIFEST_UNKNOWN" | "NAME_UNKNOWN") => {
            let Some(reference) = reference else {
                return Err(e);
            };
            authorize_import(state, parts, caller, &plan).await?;
            let f = pt
                .fetch_manifest(&plan, &reference)
                .await
                .map_err(|e| pull_error(e, "MANIFEST_UNKNOWN"))?;
            serve(&f, &reference)
        }
        Err(e) => Err(e),
    }
}

/// `GET|HEAD /v2/<name>/blobs/<digest>`. A blob miss streams from the
/// upstream while it is stored (a `Range` is not honoured then: the whole
/// blob comes, with 200). A HEAD of a blob not cached fetches nothing.
pub(super) async fn blob(
    state: &AppState,
    parts: &Parts,
    caller: Option<&Caller>,
    repo: &RepoId,
    d: &str,
    head: bool,
) -> Result<Response, OciError> {
    let reg = &state.registry;
    let headers = &parts.headers;
    let Some(plan) = plan_of(state, repo).await? else {
        return blobs::get(reg, repo, d, headers, head).await;
    };
    let pt = &state.pull_through;
    match blobs::get(reg, repo, d, headers, head).await {
        Ok(resp) => {
            pt.hit("blob");
            Ok(resp)
        }
        Err(e) if !head && matches!(e.code, "BLOB_UNKNOWN" | "NAME_UNKNOWN") => {
            let digest = super::digest(d)?;
            authorize_import(state, parts, caller, &plan).await?;
            match pt
                .fetch_blob(&plan, &digest)
                .await
                .map_err(|e| pull_error(e, "BLOB_UNKNOWN"))?
            {
                BlobFetch::Stored => blobs::get(reg, repo, d, headers, head).await,
                BlobFetch::Streaming { size, body } => {
                    let counter = reg.metrics.bytes_out.clone();
                    let body = body.inspect(move |chunk| {
                        if let Ok(c) = chunk {
                            counter.inc_by(c.len() as u64);
                        }
                    });
                    let mut resp = Response::new(Body::from_stream(body));
                    let h = resp.headers_mut();
                    set(h, DOCKER_CONTENT_DIGEST, digest.as_str());
                    set(h, header::CONTENT_TYPE, "application/octet-stream");
                    if let Some(n) = size {
                        set(h, header::CONTENT_LENGTH, n.to_string());
                    }
                    Ok(resp)
                }
            }
        }
        Err(e) => Err(e),
    }
}
