//! Images over `/v2/` against any base URL (a [`super::Server`]'s, a
//! container's): blobs, an OCI manifest, a push and a pull that checks every
//! digest. Failures are returned, not panicked on, for the tests that expect
//! some requests to fail.

use super::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI image manifest of `config` and `layers`.
pub fn manifest(config: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
    let descriptor = |media_type: &str, b: &[u8]| serde_json::json!({ "mediaType": media_type, "digest": sha256(b), "size": b.len() });
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// Push `bytes` as a blob of `repo` at `base` in one request (an open
/// registry); its digest.
pub async fn push_blob_at(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    bytes: &[u8],
) -> Result<String, String> {
    let d = sha256(bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| format!("push of blob {d} to {base}: {e}"))?;
    match r.status() {
        reqwest::StatusCode::CREATED => Ok(d),
        st => Err(format!(
            "push of blob {d} to {base}: {st} {:?}",
            r.text().await
        )),
    }
}

/// The bytes of blob `digest` of `repo` at `base`, checked against the digest.
pub async fn pull_blob_at(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    digest: &str,
) -> Result<Vec<u8>, String> {
    let what = format!("blob {digest} of {repo} from {base}");
    let r = c
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if r.status() != reqwest::StatusCode::OK {
        return Err(format!("{what}: {}", r.status()));
    }
    let bytes = r.bytes().await.map_err(|e| format!("{what}: {e}"))?;
    if sha256(&bytes) != digest {
        return Err(format!("{what}: other bytes ({})", sha256(&bytes)));
    }
    Ok(bytes.to_vec())
}

/// Push the image of `config` and `layers` to `repo` at `base` as `tag`
/// (an open registry); its manifest digest.
pub async fn push_image_at(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) -> Result<String, String> {
    for b in layers.iter().map(Vec::as_slice).chain([config]) {
        push_blob_at(c, base, repo, b).await?;
    }
    let m = manifest(config, layers);
    let what = format!("manifest {repo}:{tag} to {base}");
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    match r.status() {
        reqwest::StatusCode::CREATED => Ok(sha256(&m)),
        st => Err(format!("{what}: {st} {:?}", r.text().await)),
    }
}

/// Pull `reference` of `repo` at `base` and every blob it names, each checked
/// against its digest: the manifest and the blobs (the config first, then
/// the layers).
pub async fn pull_image_at(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let what = format!("manifest {repo}:{reference} from {base}");
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if r.status() != reqwest::StatusCode::OK {
        return Err(format!("{what}: {}", r.status()));
    }
    let m = r
        .bytes()
        .await
        .map_err(|e| format!("{what}: {e}"))?
        .to_vec();
    let v: serde_json::Value =
        serde_json::from_slice(&m).map_err(|e| format!("{what}: not JSON: {e}"))?;
    let mut blobs = Vec::new();
    for d in std::iter::once(&v["config"])
        .chain(v["layers"].as_array().into_iter().flatten())
        .map(|d| d["digest"].as_str().unwrap_or_default())
    {
        blobs.push(pull_blob_at(c, base, repo, d).await?);
    }
    Ok((m, blobs))
}
