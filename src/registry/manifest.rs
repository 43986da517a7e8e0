//! Manifest parsing and validation. Manifests are kept as the exact bytes that
//! were pushed; this module reads a lenient view of them to validate the shape
//! and extract what they reference. It never re-serialises.

use serde_json::{Map, Value};

use crate::digest::{Descriptor, Digest};

/// Most manifests an index may list. ECR documents no limit of its own; a
/// thousand is far above any multi-platform image and keeps one push's
/// transaction small.
pub const MAX_INDEX_MANIFESTS: usize = 1000;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// What kind of manifest it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What validation learned from a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: Kind,
    /// Config and layers that must be present in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (of an index) that must be present in the repository.
    pub children: Vec<Descriptor>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, its config media type.
    pub artifact_type: Option<String>,
    /// The `annotations` object, as compact JSON.
    pub annotations: Option<String>,
    /// Media type of the config blob (image manifests only).
    pub config_media_type: Option<String>,
    /// Sum of the layer sizes (image manifests only).
    pub layer_bytes: u64,
}

/// Layers that registries need not hold (their `urls` point elsewhere).
fn non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

fn media_type_of(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Validate `bytes` as a manifest sent with `content_type`; an image manifest
/// may list at most `max_layers` layers.
pub fn parse(
    content_type: Option<&str>,
    bytes: &[u8],
    max_layers: usize,
) -> Result<ParsedManifest, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "manifest must be a JSON object".to_string())?;
    match obj.get("schemaVersion").and_then(Value::as_i64) {
        Some(2) => {}
        Some(1) => return Err("Docker schema 1 manifests are not supported".into()),
        _ => return Err("manifest must have schemaVersion 2".into()),
    }
    let declared = match obj.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("mediaType must be a string".into()),
    };
    let header = content_type.map(media_type_of).filter(|s| !s.is_empty());
    let media_type = match (declared, header) {
        (Some(d), Some(h)) if d != h && is_known(h) => {
            return Err(format!(
                "Content-Type {h:?} does not match the manifest's mediaType {d:?}"
            ));
        }
        (Some(d), _) => d.to_string(),
        (None, Some(h)) if is_known(h) => h.to_string(),
        (None, _) => {
            // OCI manifests may omit mediaType; infer from the shape.
            if obj.contains_key("manifests") {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err("Docker schema 1 manifests are not supported".into());
    }
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };

    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = opt_string(obj, "artifactType")?;
    let mut config_media_type = None;
    let mut layer_bytes: u64 = 0;
    match kind {
        Kind::Image => {
            let config = obj
                .get("config")
                .ok_or_else(|| "image manifest has no config".to_string())?;
            let (config_type, config_digest, config_size) = descriptor(config, "config")?;
            blobs.push(Descriptor {
                digest: config_digest,
                size: config_size,
            });
            config_media_type = Some(config_type.clone());
            let layers = obj
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| "image manifest must have a layers array".to_string())?;
            if layers.len() > max_layers {
                return Err(format!(
                    "image manifest lists {} layers; at most {max_layers} are allowed",
                    layers.len()
                ));
            }
            for (i, layer) in layers.iter().enumerate() {
                let (mt, d, size) = descriptor(layer, &format!("layers[{i}]"))?;
                layer_bytes = layer_bytes.saturating_add(size);
                if !non_distributable(&mt) {
                    blobs.push(Descriptor { digest: d, size });
                }
            }
            if artifact_type.is_none() {
                artifact_type = Some(config_type);
            }
        }
        Kind::Index => {
            let manifests = obj
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| "index must have a manifests array".to_string())?;
            if manifests.len() > MAX_INDEX_MANIFESTS {
                return Err(format!(
                    "index lists {} manifests; at most {MAX_INDEX_MANIFESTS} are allowed",
                    manifests.len()
                ));
            }
            for (i, m) in manifests.iter().enumerate() {
                let (_, d, size) = descriptor(m, &format!("manifests[{i}]"))?;
                children.push(Descriptor { digest: d, size });
            }
        }
    }
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(descriptor(s, "subject")?.1),
    };
    let annotations = match obj.get("annotations") {
        None | Some(Value::Null) => None,
        Some(a @ Value::Object(map)) => {
            if map.values().any(|v| !v.is_string()) {
                return Err("annotation values must be strings".into());
            }
            Some(a.to_string())
        }
        Some(_) => return Err("annotations must be an object".into()),
    };
    Ok(ParsedManifest {
        media_type,
        kind,
        blobs,
        children,
        subject,
        artifact_type,
        annotations,
        config_media_type,
        layer_bytes,
    })
}

fn is_known(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST
    ) || DOCKER_SCHEMA1.contains(&media_type)
}

fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Validate a descriptor; returns its media type, digest and size.
fn descriptor(v: &Value, what: &str) -> Result<(String, Digest, u64), String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{what} must be a descriptor object"))?;
    let mt = match o.get("mediaType") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{what} has no mediaType")),
    };
    let digest = o
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what} has no digest"))?
        .parse::<Digest>()
        .map_err(|e| format!("{what} has an invalid digest: {e}"))?;
    let size = match o.get("size") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
        _ => return Err(format!("{what} must have a non-negative integer size")),
    };
    Ok((mt, digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(s: &str) -> String {
        Digest::sha256_of(s.as_bytes()).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]{extra}}}"#,
            dg("c"),
            dg("l")
        )
    }

    #[test]
    fn image_manifest() {
        let p = parse(Some(OCI_MANIFEST), image("").as_bytes(), 127).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let with_subject = image(&format!(
            r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}},"annotations":{{"a":"b"}}"#,
            dg("s")
        ));
        let p = parse(None, with_subject.as_bytes(), 127).unwrap();
        assert_eq!(p.subject.unwrap().to_string(), dg("s"));
        assert_eq!(p.annotations.as_deref(), Some(r#"{"a":"b"}"#));
    }

    #[test]
    fn index_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}]}}"#,
            dg("m")
        );
        let p = parse(Some(OCI_INDEX), body.as_bytes(), 127).unwrap();
        assert_eq!(p.kind, Kind::Index);
        assert_eq!(p.children.len(), 1);
        assert_eq!(p.children[0].size, 5);
        let entry = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}"#,
            dg("m")
        );
        let big = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            vec![entry; MAX_INDEX_MANIFESTS + 1].join(",")
        );
        let e = parse(Some(OCI_INDEX), big.as_bytes(), 127).unwrap_err();
        assert!(e.contains("at most 1000"), "{e}");
    }

    #[test]
    fn invalid_manifests() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"x","size":1},"layers":[]}"#,
        ] {
            assert!(parse(None, bad.as_bytes(), 127).is_err(), "{bad}");
        }
        // Content-Type and mediaType disagree.
        assert!(parse(Some(DOCKER_MANIFEST), image("").as_bytes(), 127).is_err());
        // More layers than allowed (75,000 descriptors once stalled every push).
        let layer = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}"#,
            dg("l")
        );
        let many = image("").replace(
            &format!("[{layer}]"),
            &format!("[{}]", vec![layer.clone(); 128].join(",")),
        );
        let e = parse(None, many.as_bytes(), 127).unwrap_err();
        assert!(e.contains("128 layers; at most 127"), "{e}");
        assert!(parse(None, many.as_bytes(), 128).is_ok());
        // Negative size.
        assert!(
            parse(
                None,
                image("").replace("\"size\":3", "\"size\":-3").as_bytes(),
                127
            )
            .is_err()
        );
    }
}
