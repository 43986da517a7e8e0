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

/// The `layerPartBlob` of an UploadLayerPart request, decoded in the body's
/// own buffer by [`parse_part_request`]; what it was is reported where the
/// handler reads the member, so errors come in the same order as for any
/// other member.
pub(super) enum PartBlob {
    Absent,
    NotString,
    NotBase64,
    Decoded(bytes::Bytes),
}

/// An UploadLayerPart body: every member but `layerPartBlob` as the
/// operation's input, and the part decoded from base64 in place. The body's
/// buffer is the only copy of the part: no JSON string of it, no second
/// buffer of decoded bytes (27 + 27 + 20 MiB before, for a body that
/// reserved 27 MiB of the body budget). Answers exactly as parsing the body
/// into a JSON value and decoding the member would.
pub(super) fn parse_part_request(body: Vec<u8>) -> Result<(Value, PartBlob), EcrError> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    if body.is_empty() {
        return Ok((json!({}), PartBlob::Absent));
    }
    let members: BTreeMap<String, &RawValue> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(_) => {
            // Not a JSON object: the same error as any operation's. Checked
            // without building a value of it.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Err(e) => {
                        EcrError::serialization(format!("the request body is not valid JSON: {e}"))
                    }
                    Ok(_) => EcrError::serialization("the request body must be a JSON object"),
                },
            );
        }
    };
    let mut input = serde_json::Map::new();
    let mut blob_at = None;
    for (k, raw) in members {
        if k == "layerPartBlob" {
            let text = raw.get();
            let start = text.as_ptr() as usize - body.as_ptr() as usize;
            blob_at = Some((start, start + text.len()));
            continue;
        }
        let v: Value = serde_json::from_str(raw.get()).map_err(|e| {
            EcrError::serialization(format!("the request body is not valid JSON: {e}"))
        })?;
        input.insert(k, v);
    }
    let part = match blob_at {
        None => PartBlob::Absent,
        Some((start, _)) if body[start] == b'n' => PartBlob::Absent, // null
        Some((start, _)) if body[start] != b'"' => PartBlob::NotString,
        Some((start, end)) => match decode_in_place(body, start, end) {
            Some(b) => PartBlob::Decoded(b),
            None => PartBlob::NotBase64,
        },
    };
    Ok((Value::Object(input), part))
}

/// Decode the JSON string `buf[start..end]` (with its quotes), which holds
/// standard base64, into `buf` itself, and return the bytes (a view of
/// `buf`'s allocation); `None` if it is not base64, as
/// `STANDARD.decode` of the unescaped string would say. The string is
/// unescaped a chunk at a time into a small buffer and each chunk decoded
/// behind the read position: 4 characters in (at least 4 bytes of JSON) are
/// at most 3 bytes out, so the output never overtakes what is still to read.
fn decode_in_place(mut buf: Vec<u8>, start: usize, end: usize) -> Option<bytes::Bytes> {
    const CHUNK: usize = 64 << 10; // a multiple of 4: whole base64 quads
    let stop = end - 1; // the closing quote
    let mut r = start + 1;
    let mut w = start;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        while chunk.len() < CHUNK && r < stop {
            let b = buf[r];
            if b != b'\\' {
                chunk.push(b);
                r += 1;
                continue;
            }
            match *buf.get(r + 1)? {
                e @ (b'"' | b'\\' | b'/') => {
                    chunk.push(e);
                    r += 2;
                }
                // Control characters: never base64.
                b'b' | b'f' | b'n' | b'r' | b't' => {
                    chunk.push(b'!');
                    r += 2;
                }
                b'u' => {
                    let hex = std::str::from_utf8(buf.get(r + 2..r + 6)?).ok()?;
                    let c = u16::from_str_radix(hex, 16).ok()?;
                    // Only ASCII can be base64; anything else is an error.
                    chunk.push(if c < 0x80 { c as u8 } else { b'!' });
                    r += 6;
                }
                _ => return None,
            }
        }
        let last = r >= stop;
        // Padding ends the string: in a chunk with more to come it is an error.
        if !last && chunk.contains(&b'=') {
            return None;
        }
        w += base64::engine::general_purpose::STANDARD
            .decode_slice(&chunk, &mut buf[w..r])
            .ok()?;
        if last {
            break;
        }
    }
    buf.truncate(w);
    Some(bytes::Bytes::from(buf).slice(start..))
}

pub(super) async fn upload_layer_part(
    ctx: &Ctx<'_>,
    input: &Input,
    blob: PartBlob,
) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "UploadLayerPart").await?;
    let id = upload_id(input)?;
    let first = input
        .opt_i64("partFirstByte")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: partFirstByte"))?;
    let last = input
        .opt_i64("partLastByte")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: partLastByte"))?;
    let bytes = match blob {
        PartBlob::Absent => {
            return Err(EcrError::invalid(
                "Missing required parameter: layerPartBlob",
            ));
        }
        PartBlob::NotString => {
            return Err(EcrError::serialization("layerPartBlob must be a string"));
        }
        PartBlob::NotBase64 => {
            return Err(EcrError::serialization("layerPartBlob must be base64"));
        }
        PartBlob::Decoded(b) => b,
    };
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
            .with(
                "registryId",
                json!(crate::reference::key_account(&repo.registry)),
            )
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
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
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
        "registryId": crate::reference::key_account(&repo.registry),
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
        .linked_blob_size(repo.key(), &digest)
        .await
        .map_err(EcrError::meta)?
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
        "registryId": crate::reference::key_account(&repo.registry),
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
        .linked_blob_size(repo.key(), &digest)
        .await
        .map_err(EcrError::meta)?
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
    // With download redirects, ECR's own answer: a presigned storage URL.
    if let Some(url) = ctx
        .state
        .registry
        .blob_download_url(&repo, &digest)
        .await
        .map_err(|e| EcrError::from_registry(e, repo.name.as_str(), &repo.registry))?
    {
        return Ok(json!({ "downloadUrl": url, "layerDigest": digest.as_str() }));
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
            "{}://{host}/v2/{}/blobs/{digest}?{}={token}",
            ctx.scheme.as_str(),
            repo.name,
            crate::auth::DOWNLOAD_GRANT_PARAM
        ),
        "layerDigest": digest.as_str(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the handler saw before: the body as a JSON value, the member read
    /// from it and decoded (or the error of either step).
    fn reference(body: &[u8]) -> Result<(Value, Result<Vec<u8>, String>), String> {
        let mut v = super::super::parse_request(body).map_err(|e| e.message)?;
        let input = Input::new(v.clone());
        let blob = input
            .str("layerPartBlob")
            .map_err(|e| e.message)
            .and_then(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| "layerPartBlob must be base64".to_string())
            });
        v.as_object_mut().unwrap().remove("layerPartBlob");
        Ok((v, blob))
    }

    fn now(body: Vec<u8>) -> Result<(Value, Result<Vec<u8>, String>), String> {
        let (v, part) = parse_part_request(body).map_err(|e| e.message)?;
        let blob = match part {
            PartBlob::Absent => Err("Missing required parameter: layerPartBlob".into()),
            PartBlob::NotString => Err("layerPartBlob must be a string".into()),
            PartBlob::NotBase64 => Err("layerPartBlob must be base64".into()),
            PartBlob::Decoded(b) => Ok(b.to_vec()),
        };
        Ok((v, blob))
    }

    fn body_with(blob: &str) -> Vec<u8> {
        format!(
            r#"{{"registryId":"123456789012","repositoryName":"r","layerPartBlob":{blob},"partFirstByte":0}}"#
        )
        .into_bytes()
    }

    #[test]
    fn parts_are_decoded_in_the_body_buffer() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        let body = body_with(&format!("\"{b64}\""));
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        let (v, part) = parse_part_request(body).unwrap();
        assert_eq!(v["partFirstByte"], 0);
        assert!(v.get("layerPartBlob").is_none());
        let PartBlob::Decoded(b) = part else {
            panic!("not decoded")
        };
        assert_eq!(b.as_ref(), data.as_slice());
        // No second buffer: the bytes are a view of the body's allocation.
        assert!(range.contains(&(b.as_ptr() as usize)));
    }

    #[test]
    fn the_same_answers_as_a_json_value() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0xfbu8; 200_000]);
        let escaped = b64.replace('/', "\\/").replacen('+', "\\u002B", 3);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"[]".to_vec(),
            b"\"x\"".to_vec(),
            b"{".to_vec(),
            b"{}".to_vec(),
            body_with("null"),
            body_with("42"),
            body_with("\"\""),
            body_with("\"QQ==\""),
            body_with("\"QQ\""),
            body_with("\"QQ==QQ==\""),
            body_with("\"Q Q=\""),
            body_with("\"\\u00e9AAA\""),
            body_with("\"\\nAAA\""),
            body_with(&format!("\"{b64}\"")),
            body_with(&format!("\"{escaped}\"")),
            body_with(&format!("\"{}={}\"", &b64[..70_000], &b64[70_001..])),
            br#"{"layerPartBlob":"QUFB","layerPartBlob":"QkJC"}"#.to_vec(),
            br#"{"layerPartBlob":"QUFB","x":[1,{"y":"\u00e9"}]}"#.to_vec(),
        ];
        for body in cases {
            let label = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            assert_eq!(now(body.clone()), reference(&body), "{label}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_part_string_answers_as_before(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            edits in proptest::collection::vec((any::<u16>(), 0u8..6), 0..4),
        ) {
            let mut s = base64::engine::general_purpose::STANDARD.encode(&data);
            for (at, kind) in edits {
                let i = (at as usize) % (s.len() + 1);
                let i = (0..=i).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                match kind {
                    0 => s.insert(i, '='),
                    1 => s.insert_str(i, "\\/"),
                    2 => s.insert_str(i, "\\u0041"),
                    3 => s.insert(i, 'é'),
                    4 => s.truncate(i),
                    _ => s.insert_str(i, "\\t"),
                }
            }
            let body = body_with(&format!("\"{s}\""));
            prop_assert_eq!(now(body.clone()), reference(&body));
        }
    }
}
