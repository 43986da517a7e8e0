//! The layer path of the ECR API: BatchCheckLayerAvailability,
//! InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload and
//! GetDownloadUrlForLayer. Uploads are the same sessions `/v2/` uses
//! (`registry::uploads`), so a layer pushed either way is the same blob.

use base64::Engine;
use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError};
use crate::digest::Digest;
use crate::registry::uploads::ChunkRange;
use crate::registry::{RegistryError, RepoId};

/// Part size suggested to clients (what ECR answers).
const PART_SIZE: i64 = 10_485_760;
pub(super) const MAX_PART: usize = 20_971_520;
/// Lifetime of a download URL, as ECR's presigned URLs (`X-Amz-Expires=3600`).
const DOWNLOAD_URL_SECS: i64 = 3600;

fn upload_id(input: &Input) -> Result<String, EcrError> {
    let id = input.str("uploadId")?;
    let ok = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !ok {
        return Err(EcrError::constraint(
            "uploadId",
            "must satisfy regular expression '[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}'",
        ));
    }
    Ok(id.to_ascii_lowercase())
}

fn upload_not_found(id: &str, repo: &RepoId) -> EcrError {
    EcrError::new(
        "UploadNotFoundException",
        400,
        format!(
            "The upload with id '{id}' does not exist in the repository with name '{}' in the registry with id '{}'",
            repo.name, repo.registry
        ),
    )
}

pub(super) async fn batch_check_layer_availability(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let repo = ctx
        .existing_repo(input, "BatchCheckLayerAvailability")
        .await?;
    let digests = input
        .opt_str_list("layerDigests")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: layerDigests"))?;
    input::check_count("layerDigests", digests.len(), 1, 100)?;
    let mut layers = Vec::new();
    let mut failures = Vec::new();
    for d in &digests {
        let Ok(digest) = d.parse::<Digest>() else {
            failures.push(json!({ "layerDigest": d, "failureCode": "InvalidLayerDigest", "failureReason": "Invalid layer digest" }));
            continue;
        };
        match ctx.state.registry.check_blob(&repo, &digest).await {
            Ok(size) => layers.push(json!({
                "layerDigest": d,
                "layerAvailability": "AVAILABLE",
                "layerSize": size,
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            })),
            Err(RegistryError::BlobUnknown) => failures.push(json!({ "layerDigest": d, "failureCode": "MissingLayerDigest", "failureReason": "Layer digest does not exist in the repository" })),
            Err(e) => return Err(EcrError::from_registry(e, repo.name.as_str(), &repo.registry)),
        }
    }
    Ok(json!({ "layers": layers, "failures": failures }))
}

pub(super) async fn initiate_layer_upload(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "InitiateLayerUpload").await?;
    let session = ctx
        .state
        .registry
        .start_upload(&repo, &ctx.caller.access_key_id)
        .await
        .map_err(|e| EcrError::from_registry(e, repo.name.as_str(), &repo.registry))?;
    Ok(json!({ "uploadId": session.id, "partSize": PART_SIZE }))
}

pub(super) async fn upload_layer_part(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "UploadLayerPart").await?;
    let id = upload_id(input)?;
    let first = input
        .opt_i64("partFirstByte")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: partFirstByte"))?;
    let last = input
        .opt_i64("partLastByte")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: partLastByte"))?;
    let blob = input.str("layerPartBlob")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| EcrError::serialization("layerPartBlob must be base64"))?;
    if bytes.len() > MAX_PART {
        return Err(EcrError::constraint(
            "layerPartBlob",
            format!("Member must have length less than or equal to {MAX_PART}"),
        ));
    }
    let session = ctx
        .state
        .registry
        .upload_status(&repo, &id)
        .await
        .map_err(|_| upload_not_found(&id, &repo))?;
    let invalid_part = |size: u64, why: &str| {
        EcrError::new("InvalidLayerPartException", 400, why.to_string())
            .with("registryId", json!(repo.registry))
            .with("repositoryName", json!(repo.name.as_str()))
            .with("uploadId", json!(id))
            .with("lastValidByteReceived", json!(size as i64 - 1))
    };
    if first < 0 || last < first || (last - first + 1) as usize != bytes.len() {
        return Err(invalid_part(
            session.size,
            "The part's byte range does not match the length of layerPartBlob",
        ));
    }
    if first as u64 != session.size {
        return Err(invalid_part(
            session.size,
            "The part must start right after the last byte received",
        ));
    }
    let body =
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))]);
    let range = Some(ChunkRange {
        first: first as u64,
        last: last as u64,
    });
    let after = ctx
        .state
        .registry
        .append_upload(session, range, body)
        .await
        .map_err(|e| match e {
            RegistryError::ChunkOutOfOrder { size } => {
                invalid_part(size, "The part is out of order")
            }
            RegistryError::UploadUnknown => upload_not_found(&id, &repo),
            other => EcrError::from_registry(other, repo.name.as_str(), &repo.registry),
        })?;
    Ok(json!({
        "registryId": repo.registry,
        "repositoryName": repo.name.as_str(),
        "uploadId": id,
        "lastByteReceived": after.size as i64 - 1,
    }))
}

pub(super) async fn complete_layer_upload(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "CompleteLayerUpload").await?;
    let id = upload_id(input)?;
    let digests = input
        .opt_str_list("layerDigests")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: layerDigests"))?;
    input::check_count("layerDigests", digests.len(), 1, 100)?;
    let digest: Digest = digests[0]
        .parse()
        .map_err(|e: crate::digest::DigestError| {
            EcrError::constraint("layerDigests", e.to_string())
        })?;
    let reg = &ctx.state.registry;
    let session = reg
        .upload_status(&repo, &id)
        .await
        .map_err(|_| upload_not_found(&id, &repo))?;
    if session.size == 0 {
        return Err(EcrError::new(
            "EmptyUploadException",
            400,
            format!("The upload with id '{id}' has no parts"),
        ));
    }
    if reg
        .meta
        .linked_blob_size(repo.key(), &digest)
        .await
        .map_err(EcrError::server)?
        .is_some()
    {
        let _ = reg.cancel_upload(&repo, &id).await;
        return Err(EcrError::new(
            "LayerAlreadyExistsException",
            400,
            format!(
                "The layer with digest '{digest}' already exists in the repository with name '{}' in registry with id '{}'",
                repo.name, repo.registry
            ),
        ));
    }
    reg.finish_upload(&repo, &id, &digest)
        .await
        .map_err(|e| match e {
            RegistryError::DigestInvalid(m) => EcrError::new("InvalidLayerException", 400, m),
            other => EcrError::from_registry(other, repo.name.as_str(), &repo.registry),
        })?;
    Ok(json!({
        "registryId": repo.registry,
        "repositoryName": repo.name.as_str(),
        "uploadId": id,
        "layerDigest": digest.as_str(),
    }))
}

pub(super) async fn get_download_url_for_layer(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "GetDownloadUrlForLayer").await?;
    let d = input.str("layerDigest")?;
    let digest: Digest = d.parse().map_err(|e: crate::digest::DigestError| {
        EcrError::constraint("layerDigest", e.to_string())
    })?;
    if ctx
        .state
        .registry
        .meta
        .linked_blob_size(repo.key(), &digest)
        .await
        .map_err(EcrError::server)?
        .is_none()
    {
        return Err(EcrError::new(
            "LayersNotFoundException",
            400,
            format!(
                "The layer with digest '{digest}' does not exist in the repository with name '{}' in registry with id '{}'",
                repo.name, repo.registry
            ),
        ));
    }
    // A presigned URL: the blob URL with a one-hour grant for exactly this
    // blob of this repository (see distribution::authenticate).
    let host = ctx.state.registry_host_for(&repo.registry, ctx.host);
    let token = ctx.state.access.issue_download_grant(
        ctx.caller,
        &repo.registry,
        repo.name.as_str(),
        digest.as_str(),
        DOWNLOAD_URL_SECS,
    );
    Ok(json!({
        "downloadUrl": format!(
            "http://{host}/v2/{}/blobs/{digest}?{}={token}",
            repo.name,
            crate::distribution::DOWNLOAD_TOKEN_PARAM
        ),
        "layerDigest": digest.as_str(),
    }))
}
