//! Listing endpoints: `GET /v2/<name>/tags/list`, `GET /v2/_catalog`
//! (both with `n`/`last` pagination and `Link` headers) and
//! `GET /v2/<name>/referrers/<digest>` (with the `artifactType` filter).

use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::OciError;
use super::{OCI_FILTERS_APPLIED, digest, query_get, query_pairs, set};
use crate::registry::Registry;
use crate::registry::RepoId;
use crate::registry::manifest::OCI_INDEX;

/// Page size when the client gives no `n`, and the most we return at once.
const DEFAULT_PAGE: u32 = 1000;
const MAX_PAGE: u32 = 10_000;

fn page_args(q: &[(String, String)]) -> Result<(u32, Option<String>), OciError> {
    let n = match query_get(q, "n") {
        None | Some("") => DEFAULT_PAGE,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| {
                OciError::new(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "n must be a non-negative integer",
                )
            })?
            .min(MAX_PAGE),
    };
    let last = query_get(q, "last")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((n, last))
}

fn json_response(body: Value) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    set(r.headers_mut(), header::CONTENT_TYPE, "application/json");
    r
}

fn with_link(mut r: Response, base: &str, n: u32, last: Option<&String>) -> Response {
    if let Some(last) = last {
        let enc = encode_query(last);
        set(
            r.headers_mut(),
            header::LINK,
            format!("<{base}?n={n}&last={enc}>; rel=\"next\""),
        );
    }
    r
}

fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn tags(reg: &Registry, repo: &RepoId, req: &Parts) -> Result<Response, OciError> {
    let q = query_pairs(req);
    let (n, last) = page_args(&q)?;
    let (tags, more) = reg.list_tags(repo, last.as_deref(), n).await?;
    let next = if more { tags.last() } else { None };
    let r = json_response(json!({ "name": repo.name.as_str(), "tags": tags }));
    Ok(with_link(r, &format!("/v2/{repo}/tags/list"), n, next))
}

/// `GET /v2/_catalog`: the repositories of `registry` that `visible` admits
/// (in ECR mode: those the caller may DescribeRepositories), in name order.
pub(super) async fn catalog<F>(
    reg: &Registry,
    registry: &str,
    req: &Parts,
    visible: impl Fn(&crate::registry::RepositoryRow) -> F,
) -> Result<Response, OciError>
where
    F: std::future::Future<Output = crate::registry::Result<bool>>,
{
    let q = query_pairs(req);
    let (n, last) = page_args(&q)?;
    let (names, more) = reg.catalog(registry, last.as_deref(), n, visible).await?;
    let next = if more { names.last() } else { None };
    let r = json_response(json!({ "repositories": names }));
    Ok(with_link(r, "/v2/_catalog", n, next))
}

pub(super) async fn referrers(
    reg: &Registry,
    repo: &RepoId,
    d: &str,
    req: &Parts,
) -> Result<Response, OciError> {
    let subject = digest(d)?;
    let q = query_pairs(req);
    let artifact_type = query_get(&q, "artifactType").filter(|s| !s.is_empty());
    let rows = reg.referrers(repo, &subject, artifact_type).await?;
    let manifests: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = Value::String(t);
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut r = json_response(body);
    set(r.headers_mut(), header::CONTENT_TYPE, OCI_INDEX);
    if artifact_type.is_some() {
        set(r.headers_mut(), OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(r)
}
