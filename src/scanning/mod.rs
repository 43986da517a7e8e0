//! The scanning service: runs image scans (the `scan-image` job), re-matches
//! stored inventories after a vulnerability database import (the `rescan`
//! job), and answers what the API asks of scans.
//!
//! A scan reads each layer once as a stream (`berth_scanner::layer`) on a
//! blocking thread, with the layer's facts cached by blob digest in the
//! metadata store, so a base layer shared by a thousand images is
//! decompressed once; merges the layers into the image's inventory (stored
//! with the scan); and matches it against the vulnerability database
//! ([`vulndb`]). An index is scanned per child image; the index's own scan
//! is the union of its children's.

pub mod findings;
pub mod vulndb;

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_scanner::Inventory;
use berth_scanner::layer::{Compression, EXTRACTOR_VERSION, LayerScan, Limits};
use futures_util::TryStreamExt;
use serde_json::Value;

use crate::digest::Digest;
use crate::metadata::{MetaError, Repo, ScanResult, ScanRow};
use crate::registry::scan_config::{ScanFrequency, ScanType, is_image_config};
use crate::registry::{Registry, RegistryError};
use crate::storage::StorageError;

pub use findings::{StoredFinding, StoredFindings};
pub use vulndb::VulnDb;

/// Scan statuses, as ECR names them.
pub const IN_PROGRESS: &str = "IN_PROGRESS";
pub const COMPLETE: &str = "COMPLETE";
pub const FAILED: &str = "FAILED";
pub const UNSUPPORTED_IMAGE: &str = "UNSUPPORTED_IMAGE";

/// ECR's description of a completed scan.
pub const COMPLETE_DESCRIPTION: &str = "The scan was completed successfully.";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The store failed: the job is retried.
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("blob storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading a layer's bytes failed part way (not its content): retried.
    #[error("reading layer {digest}: {reason}")]
    Read { digest: String, reason: String },
}

/// Packages one image may list, over all its layers: beyond it the scan
/// fails rather than hold an unbounded inventory.
pub const MAX_IMAGE_PACKAGES: usize = 2_000_000;

/// What the layer cache holds for a layer that cannot be scanned: the
/// reason, so a hostile layer costs its decompression once.
const FAILED_LAYER: &str = "FAILED:";

/// Why an image has no findings: the scan's final status and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotScanned {
    pub status: &'static str,
    pub description: String,
}

impl NotScanned {
    fn failed(description: impl Into<String>) -> NotScanned {
        NotScanned {
            status: FAILED,
            description: description.into(),
        }
    }

    fn unsupported(description: impl Into<String>) -> NotScanned {
        NotScanned {
            status: UNSUPPORTED_IMAGE,
            description: description.into(),
        }
    }
}

/// An image's inventory and the OSV ecosystem of its OS packages.
#[derive(Debug, Clone)]
pub struct ImageInventory {
    pub inventory: Inventory,
    pub os_ecosystem: Option<String>,
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One child of an index that is worth scanning: a platform image, not an
/// attestation.
fn scannable_children(manifest: &Value) -> Vec<Digest> {
    let Some(list) = manifest.get("manifests").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter(|m| {
            let attestation = m
                .pointer("/annotations/vnd.docker.reference.type")
                .and_then(Value::as_str)
                == Some("attestation-manifest");
            let unknown_platform =
                m.pointer("/platform/os").and_then(Value::as_str) == Some("unknown");
            !attestation && !unknown_platform
        })
        .filter_map(|m| m.get("digest").and_then(Value::as_str)?.parse().ok())
        .collect()
}

fn is_index(media_type: &str, manifest: &Value) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST || manifest.get("manifests").is_some()
}

/// The inventory of image `digest` of `repo`: each layer's facts from the
/// cache or read from blob storage, merged with OCI's whiteout rules.
/// `Err(Ok(_))` is an image that cannot be scanned (the scan's status);
/// `Err(Err(_))` a store failure.
pub async fn image_inventory(
    registry: &Registry,
    repo: Repo<'_>,
    digest: &Digest,
) -> Result<std::result::Result<ImageInventory, NotScanned>, ScanError> {
    let Some(row) = registry.stored_manifest(repo, digest).await? else {
        return Ok(Err(NotScanned::failed(format!(
            "the image {digest} is no longer in the repository"
        ))));
    };
    let manifest: Value = match serde_json::from_slice(&row.content) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Err(NotScanned::unsupported(format!(
                "UnsupportedImageError: the manifest is not JSON: {e}"
            ))));
        }
    };
    if is_index(&row.media_type, &manifest) {
        return Ok(Err(NotScanned::unsupported(
            "UnsupportedImageError: an index is scanned per child image",
        )));
    }
    let config_type = manifest
        .pointer("/config/mediaType")
        .and_then(Value::as_str);
    if !is_image_config(config_type) {
        return Ok(Err(NotScanned::unsupported(format!(
            "UnsupportedImageError: the artifact's config media type {} is not a container image's",
            config_type.unwrap_or("(none)")
        ))));
    }
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // A layer listed twice is read (and held) once.
    let mut scans: Vec<(String, Arc<LayerScan>)> = Vec::with_capacity(layers.len());
    let mut distinct: std::collections::HashMap<String, Arc<LayerScan>> =
        std::collections::HashMap::new();
    let mut packages = 0usize;
    for layer in &layers {
        let media_type = layer.get("mediaType").and_then(Value::as_str).unwrap_or("");
        let Some(layer_digest) = layer
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Digest>().ok())
        else {
            return Ok(Err(NotScanned::failed(
                "a layer descriptor has no valid digest",
            )));
        };
        let Some(compression) = Compression::for_media_type(media_type) else {
            return Ok(Err(NotScanned::unsupported(format!(
                "UnsupportedImageError: layer {layer_digest} has media type {media_type:?}, which is not a filesystem layer Berth can read"
            ))));
        };
        let key = layer_digest.to_string();
        if let Some(scan) = distinct.get(&key) {
            scans.push((key, scan.clone()));
            continue;
        }
        match layer_scan(registry, &layer_digest, compression).await? {
            Ok(scan) => {
                packages += scan
                    .facts
                    .values()
                    .map(|f| match f {
                        berth_scanner::layer::Fact::Packages { packages } => packages.len(),
                        _ => 0,
                    })
                    .sum::<usize>();
                if packages > MAX_IMAGE_PACKAGES {
                    return Ok(Err(NotScanned::failed(format!(
                        "the image's layers list more than {MAX_IMAGE_PACKAGES} packages"
                    ))));
                }
                let scan = Arc::new(scan);
                distinct.insert(key.clone(), scan.clone());
                scans.push((key, scan));
            }
            Err(reason) => return Ok(Err(NotScanned::failed(reason))),
        }
    }
    let refs: Vec<(&str, &LayerScan)> = scans.iter().map(|(d, s)| (d.as_str(), &**s)).collect();
    let inventory = berth_scanner::image::merge(&refs);
    let os_ecosystem = inventory.os.as_ref().and_then(berth_scanner::os::ecosystem);
    Ok(Ok(ImageInventory {
        inventory,
        os_ecosystem,
    }))
}

/// One layer's facts: cached, or read (once, streaming) and cached.
/// A layer's cached facts (or the reason it cannot be scanned), if any.
async fn cached_layer(
    registry: &Registry,
    digest: &Digest,
) -> Result<Option<std::result::Result<LayerScan, String>>, ScanError> {
    let extractor = i64::from(EXTRACTOR_VERSION);
    let Some(doc) = registry
        .meta
        .layer_inventory(digest.as_str(), extractor)
        .await?
    else {
        return Ok(None);
    };
    if let Some(reason) = doc.strip_prefix(FAILED_LAYER) {
        return Ok(Some(Err(reason.to_string())));
    }
    Ok(serde_json::from_str::<LayerScan>(&doc).ok().map(Ok))
}

/// How long a scan waits for another job that is reading the same layer
/// (an inventory queued when the layer was uploaded) before reading it
/// itself.
const SHARED_LAYER_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

async fn layer_scan(
    registry: &Registry,
    digest: &Digest,
    compression: Compression,
) -> Result<std::result::Result<LayerScan, String>, ScanError> {
    let started = std::time::Instant::now();
    loop {
        if let Some(cached) = cached_layer(registry, digest).await? {
            registry.metrics.scans.layer_cache_hits.inc();
            return Ok(cached);
        }
        // The layer's own inventory job is reading it right now (its upload
        // just committed): wait for it rather than inflate it twice.
        let running = registry
            .meta
            .job_state(crate::jobs::SCAN_LAYER, digest.as_str())
            .await?
            .is_some_and(|s| s == "running");
        if !running || started.elapsed() > SHARED_LAYER_WAIT {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stream = match registry.read_blob_internal(digest).await {
        Ok(s) => s,
        Err(RegistryError::BlobUnknown) => {
            return Ok(Err(format!("layer {digest} is missing from blob storage")));
        }
        // The key that protects it is unusable, or its bytes were altered:
        // the scan fails and says why.
        Err(e @ (RegistryError::Kms(_) | RegistryError::Integrity(_))) => {
            return Ok(Err(format!("layer {digest} cannot be read: {e}")));
        }
        Err(e) => return Err(e.into()),
    };
    read_layer(registry, digest, compression, stream).await
}

/// Inventory blob `digest` ahead of its manifest (the `scan-layer` job): its
/// compression is told by its first bytes; a blob that is no tar layer
/// (a config, an artifact) is left alone.
pub async fn prefetch_layer(registry: &Registry, digest: &Digest) -> Result<(), ScanError> {
    if cached_layer(registry, digest).await?.is_some() {
        return Ok(());
    }
    let mut stream = match registry.read_blob_internal(digest).await {
        Ok(s) => s,
        // Deleted since, or unreadable now: nothing to do ahead of the scan.
        Err(RegistryError::BlobUnknown | RegistryError::Kms(_) | RegistryError::Integrity(_)) => {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut head: Vec<bytes::Bytes> = Vec::new();
    let mut have = 0;
    while have < 512 {
        match futures_util::StreamExt::next(&mut stream).await {
            Some(Ok(chunk)) => {
                have += chunk.len();
                head.push(chunk);
            }
            Some(Err(e)) => {
                return Err(ScanError::Read {
                    digest: digest.to_string(),
                    reason: e.to_string(),
                });
            }
            None => break,
        }
    }
    let first: Vec<u8> = head
        .iter()
        .flat_map(|c| c.iter().copied())
        .take(512)
        .collect();
    let compression = if first.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if first.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if first.get(257..262) == Some(b"ustar".as_slice()) {
        Compression::None
    } else {
        return Ok(());
    };
    let replay = futures_util::stream::iter(head.into_iter().map(Ok::<_, std::io::Error>));
    let whole: crate::storage::ByteStream =
        Box::pin(futures_util::StreamExt::chain(replay, stream));
    // A failed read is retried by the job; a layer that is not a layer
    // after all is cached as such, as a scan would.
    let _cached = read_layer(registry, digest, compression, whole).await?;
    Ok(())
}

/// Read one layer's bytes through the scanner (on a blocking thread) and
/// cache what it found, or why it could not.
async fn read_layer(
    registry: &Registry,
    digest: &Digest,
    compression: Compression,
    stream: crate::storage::ByteStream,
) -> Result<std::result::Result<LayerScan, String>, ScanError> {
    let extractor = i64::from(EXTRACTOR_VERSION);
    registry.metrics.scans.layer_cache_misses.inc();
    let reader = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
    let sync = tokio_util::io::SyncIoBridge::new(reader);
    let limits = Limits::default();
    let result = tokio::task::spawn_blocking(move || {
        berth_scanner::layer::scan_layer(std::io::BufReader::new(sync), compression, &limits)
    })
    .await;
    let scan = match result {
        Ok(Ok(scan)) => scan,
        // The bytes could not be read (storage trouble): try again later.
        Ok(Err(berth_scanner::layer::LayerError::Io(e))) => {
            return Err(ScanError::Read {
                digest: digest.to_string(),
                reason: e.to_string(),
            });
        }
        // The content is hostile or broken: remembered, so it is not
        // decompressed again by the next image that lists it.
        Ok(Err(e)) => {
            let reason = format!("layer {digest}: {e}");
            registry
                .meta
                .put_layer_inventory(
                    digest.as_str(),
                    extractor,
                    &format!("{FAILED_LAYER}{reason}"),
                )
                .await?;
            return Ok(Err(reason));
        }
        Err(e) => {
            tracing::error!(%digest, error = %e, "the layer scanner panicked");
            return Ok(Err(format!("layer {digest}: the scanner failed on it")));
        }
    };
    registry
        .metrics
        .scans
        .layer_bytes_read
        .inc_by(scan.uncompressed_bytes);
    let doc = serde_json::to_string(&scan).expect("serialises");
    registry
        .meta
        .put_layer_inventory(digest.as_str(), extractor, &doc)
        .await?;
    Ok(Ok(scan))
}

/// Severity counts of active findings, as `findingSeverityCounts` has them
/// (non-zero keys only).
pub fn severity_counts(findings: &StoredFindings) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for f in findings.active() {
        *counts.entry(f.finding.severity.as_str()).or_insert(0) += 1;
    }
    counts
}

fn scan_type_of(row: Option<&ScanRow>) -> ScanType {
    row.and_then(|r| ScanType::parse(&r.scan_type))
        .unwrap_or_default()
}

/// Run the scan of image (or index) `digest` of `repo` and record its outcome.
pub async fn run_scan(
    registry: &Registry,
    db: &VulnDb,
    repo: Repo<'_>,
    digest: &Digest,
) -> Result<(), ScanError> {
    let current = registry.meta.image_scan(repo, digest.as_str()).await?;
    let scan_type = scan_type_of(current.as_ref());
    let Some(row) = registry.stored_manifest(repo, digest).await? else {
        // Deleted since it was queued: nothing to record.
        return Ok(());
    };
    let manifest: Value = serde_json::from_slice(&row.content).unwrap_or(Value::Null);
    if is_index(&row.media_type, &manifest) {
        let children = scannable_children(&manifest);
        let mut union = StoredFindings::default();
        let mut complete = 0;
        let mut failed: Option<(Digest, NotScanned)> = None;
        let mut unsupported: Option<NotScanned> = None;
        for child in &children {
            match scan_one(registry, db, repo, child, scan_type).await? {
                Ok(f) => {
                    complete += 1;
                    union.absorb(f);
                }
                Err(n) if n.status == FAILED => failed = Some((child.clone(), n)),
                Err(n) => unsupported = Some(n),
            }
        }
        let source = db.source_updated_at().await?;
        // A child that failed fails the index: its union would look clean.
        // Children of an unsupported platform are left out while another
        // child scans.
        let outcome = if let Some((child, n)) = failed {
            Err(NotScanned::failed(format!(
                "child image {child}: {}",
                n.description
            )))
        } else if complete > 0 {
            Ok(union)
        } else if children.is_empty() {
            Err(NotScanned::unsupported(
                "UnsupportedImageError: the index lists no platform images",
            ))
        } else {
            Err(unsupported.unwrap_or_else(|| {
                NotScanned::unsupported("UnsupportedImageError: no child image could be scanned")
            }))
        };
        record(registry, repo, digest, scan_type, None, outcome, source).await?;
        return Ok(());
    }
    // Recorded by scan_one, whatever the outcome.
    let _outcome = scan_one(registry, db, repo, digest, scan_type).await?;
    Ok(())
}

/// Scan one image and record its outcome; returns its findings.
async fn scan_one(
    registry: &Registry,
    db: &VulnDb,
    repo: Repo<'_>,
    digest: &Digest,
    scan_type: ScanType,
) -> Result<std::result::Result<StoredFindings, NotScanned>, ScanError> {
    let inv = match image_inventory(registry, repo, digest).await? {
        Ok(inv) => inv,
        Err(n) => {
            record(
                registry,
                repo,
                digest,
                scan_type,
                None,
                Err(n.clone()),
                None,
            )
            .await?;
            return Ok(Err(n));
        }
    };
    let inventory_doc = serde_json::to_string(&inv.inventory).expect("serialises");
    let has_language = inv.inventory.packages.iter().any(|p| !p.kind.is_os());
    let usable = match scan_type {
        ScanType::Basic => inv.os_ecosystem.is_some(),
        ScanType::Enhanced => inv.os_ecosystem.is_some() || has_language,
    };
    if !usable {
        let n = NotScanned::unsupported(match &inv.inventory.os {
            Some(os) => format!(
                "UnsupportedImageError: the operating system {:?} {:?} is not supported",
                os.id, os.version_id
            ),
            None => "UnsupportedImageError: no supported operating system was found in the image"
                .to_string(),
        });
        record(
            registry,
            repo,
            digest,
            scan_type,
            Some(&inventory_doc),
            Err(n.clone()),
            None,
        )
        .await?;
        return Ok(Err(n));
    }
    if db.is_empty().await? {
        let n = NotScanned::failed(
            "No vulnerability data is loaded: import OSV data with `berth vulndb import` (see docs/scanning.md)",
        );
        record(
            registry,
            repo,
            digest,
            scan_type,
            Some(&inventory_doc),
            Err(n.clone()),
            None,
        )
        .await?;
        return Ok(Err(n));
    }
    let now = crate::metadata::now_millis();
    let found = db.match_inventory(&inv, scan_type).await?;
    let previous = StoredFindings::from_doc(
        registry
            .meta
            .image_scan(repo, digest.as_str())
            .await?
            .and_then(|r| r.findings)
            .as_deref(),
    );
    let findings = previous.update(found, now);
    let source = db.source_updated_at().await?;
    record(
        registry,
        repo,
        digest,
        scan_type,
        Some(&inventory_doc),
        Ok(findings.clone()),
        source,
    )
    .await?;
    Ok(Ok(findings))
}

async fn record(
    registry: &Registry,
    repo: Repo<'_>,
    digest: &Digest,
    scan_type: ScanType,
    inventory: Option<&str>,
    outcome: std::result::Result<StoredFindings, NotScanned>,
    source_updated_at: Option<i64>,
) -> Result<(), ScanError> {
    let (status, description, findings, counts) = match &outcome {
        Ok(f) => (
            COMPLETE,
            COMPLETE_DESCRIPTION.to_string(),
            Some(serde_json::to_string(f).expect("serialises")),
            Some(serde_json::to_string(&severity_counts(f)).expect("serialises")),
        ),
        Err(n) => (n.status, n.description.clone(), None, None),
    };
    registry
        .metrics
        .scans
        .finished
        .get_or_create(&crate::metrics::StatusLabels { status })
        .inc();
    registry
        .meta
        .finish_scan(
            repo,
            digest.as_str(),
            scan_type.as_str(),
            &ScanResult {
                status,
                description: &description,
                inventory,
                findings: findings.as_deref(),
                counts: counts.as_deref(),
                source_updated_at,
            },
        )
        .await?;
    Ok(())
}

/// The new findings of scan `scan` of `registry`/`repository`, for
/// [`crate::metadata::MetadataStore::rematch_scans`].
fn rematch(
    registry: &str,
    repository: &str,
    scan: &ScanRow,
    findings: &StoredFindings,
) -> crate::metadata::Rematch {
    crate::metadata::Rematch {
        registry: registry.to_string(),
        repository: repository.to_string(),
        digest: scan.digest.clone(),
        read_completed_at: scan.completed_at,
        findings: serde_json::to_string(findings).expect("serialises"),
        counts: serde_json::to_string(&severity_counts(findings)).expect("serialises"),
    }
}

/// What a re-match did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rematched {
    /// Images under continuous scanning re-matched.
    pub images: u64,
    /// Of those, images whose findings changed.
    pub changed: u64,
}

/// Re-match the stored inventories of every image under continuous scanning
/// (ENHANCED, a CONTINUOUS_SCAN rule) against the database as it is now: new
/// findings appear, fixed ones close. No blob is read.
pub async fn rematch_continuous(registry: &Registry, db: &VulnDb) -> Result<Rematched, ScanError> {
    let mut out = Rematched::default();
    let mut after: Option<(String, String, String)> = None;
    let mut configs: BTreeMap<String, crate::registry::scan_config::ScanningConfiguration> =
        BTreeMap::new();
    let mut continuous: BTreeMap<(String, String), bool> = BTreeMap::new();
    let source = db.source_updated_at().await?;
    // Images share their base layers: each distinct package is decided once.
    let mut cache = berth_scanner::matcher::MatchCache::new();
    loop {
        let page = registry
            .meta
            .scans_with_inventory(
                after
                    .as_ref()
                    .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
                100,
            )
            .await?;
        let Some((r, n, s)) = page.last() else {
            break;
        };
        after = Some((r.clone(), n.clone(), s.digest.clone()));
        let mut updates = Vec::new();
        for (reg, name, scan) in &page {
            let key = (reg.clone(), name.clone());
            let is_continuous = match continuous.get(&key) {
                Some(c) => *c,
                None => {
                    if !configs.contains_key(reg) {
                        configs.insert(
                            reg.clone(),
                            registry
                                .scanning_configuration(reg)
                                .await
                                .map_err(|e| match e {
                                    crate::registry::RegistryError::Meta(m) => ScanError::Meta(m),
                                    other => ScanError::Meta(MetaError::Corrupt(other.to_string())),
                                })?,
                        );
                    }
                    let repo = Repo {
                        registry: reg,
                        name,
                    };
                    let c = match registry.meta.get_repository(repo).await? {
                        Some(row) => {
                            configs[reg].effective(&row).frequency == ScanFrequency::ContinuousScan
                        }
                        None => false,
                    };
                    continuous.insert(key, c);
                    c
                }
            };
            if !is_continuous {
                continue;
            }
            let Some(inventory) = scan
                .inventory
                .as_deref()
                .and_then(|d| serde_json::from_str::<Inventory>(d).ok())
            else {
                continue;
            };
            let os_ecosystem = inventory.os.as_ref().and_then(berth_scanner::os::ecosystem);
            let inv = ImageInventory {
                inventory,
                os_ecosystem,
            };
            let found = db
                .match_inventory_with(&inv, ScanType::Enhanced, Some(&mut cache))
                .await?;
            let previous = StoredFindings::from_doc(scan.findings.as_deref());
            let now = crate::metadata::now_millis();
            let updated = previous.clone().update(found, now);
            out.images += 1;
            // Written even when unchanged: its vulnerabilitySourceUpdatedAt moves.
            if !updated.same_as(&previous) {
                out.changed += 1;
            }
            updates.push(rematch(reg, name, scan, &updated));
        }
        registry.meta.rematch_scans(&updates, source).await?;
    }
    registry.metrics.scans.rematched.inc_by(out.images);
    // The indexes of those repositories: their findings are the union of
    // their children's, which may just have changed.
    for ((reg, name), is_continuous) in &continuous {
        if !is_continuous {
            continue;
        }
        let repo = Repo {
            registry: reg,
            name,
        };
        let mut updates = Vec::new();
        for index in registry.meta.index_scans(repo).await? {
            let Ok(digest) = index.digest.parse::<Digest>() else {
                continue;
            };
            let Some(row) = registry.stored_manifest(repo, &digest).await? else {
                continue;
            };
            let manifest: Value = serde_json::from_slice(&row.content).unwrap_or(Value::Null);
            let mut union = StoredFindings::default();
            for child in scannable_children(&manifest) {
                if let Some(child) = registry.meta.image_scan(repo, child.as_str()).await? {
                    union.absorb(StoredFindings::from_doc(child.findings.as_deref()));
                }
            }
            let previous = StoredFindings::from_doc(index.findings.as_deref());
            if union.same_as(&previous) {
                continue;
            }
            out.changed += 1;
            updates.push(rematch(reg, name, &index, &union));
        }
        registry.meta.rematch_scans(&updates, source).await?;
    }
    Ok(out)
}

/// Why StartImageScan refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ECR's one scan per image per 24 hours (`scan_quota_interval`).
    #[error("The scan quota per image has been exceeded. Wait and try again.")]
    Quota,
    /// Not an image or index (a signature, an SBOM, a Helm chart, …).
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// StartImageScan: queue a scan of image `digest` (already resolved and
/// authorized) under the repository's scan type.
pub async fn start_scan(
    registry: &Registry,
    repo: Repo<'_>,
    digest: &Digest,
) -> Result<(), StartError> {
    let Some(row) = registry.stored_manifest(repo, digest).await? else {
        return Err(crate::registry::RegistryError::ManifestUnknown(digest.to_string()).into());
    };
    let manifest: Value = serde_json::from_slice(&row.content).unwrap_or(Value::Null);
    if !is_index(&row.media_type, &manifest)
        && !is_image_config(
            manifest
                .pointer("/config/mediaType")
                .and_then(Value::as_str),
        )
    {
        return Err(StartError::Unsupported(format!(
            "The image {digest} is not a container image (config media type {}) and cannot be scanned",
            manifest
                .pointer("/config/mediaType")
                .and_then(Value::as_str)
                .unwrap_or("(none)")
        )));
    }
    let Some(settings) = registry.meta.get_repository(repo).await? else {
        return Err(crate::registry::RegistryError::NameUnknown {
            repository: repo.name.into(),
            registry: repo.registry.into(),
        }
        .into());
    };
    let scan_type = registry
        .scanning_configuration(repo.registry)
        .await?
        .effective(&settings)
        .scan_type;
    let quota = registry.limits.scan_quota_interval;
    let job = crate::jobs::scan_image(repo, digest.as_str());
    let req = crate::metadata::ScanRequest {
        digest: digest.as_str(),
        scan_type: scan_type.as_str(),
        quota_since: (!quota.is_zero())
            .then(|| crate::metadata::now_millis() - quota.as_millis() as i64),
        job: &job,
    };
    match registry.meta.request_scan(repo, &req).await? {
        crate::metadata::ScanRequested::Queued => {
            registry.jobs_queued.notify_one();
            Ok(())
        }
        crate::metadata::ScanRequested::QuotaExceeded => Err(StartError::Quota),
    }
}

/// The latest scan of an image.
pub async fn latest_scan(
    registry: &Registry,
    repo: Repo<'_>,
    digest: &Digest,
) -> Result<Option<ScanRow>, MetaError> {
    registry.meta.image_scan(repo, digest.as_str()).await
}

/// The scans of a page of images (DescribeImages), by digest.
pub async fn scan_summaries(
    registry: &Registry,
    repo: Repo<'_>,
    digests: &[&str],
) -> Result<BTreeMap<String, ScanRow>, MetaError> {
    Ok(registry
        .meta
        .image_scans(repo, digests)
        .await?
        .into_iter()
        .map(|r| (r.digest.clone(), r))
        .collect())
}

/// Put a registry's scanning configuration.
pub async fn put_configuration(
    registry: &Registry,
    registry_id: &str,
    config: &crate::registry::scan_config::ScanningConfiguration,
) -> Result<(), MetaError> {
    registry
        .meta
        .put_registry_scanning(
            registry_id,
            &serde_json::to_string(config).expect("serialises"),
        )
        .await
}

/// Record a scan FAILED with `description` (its job gave up).
pub async fn give_up(
    registry: &Registry,
    repo: Repo<'_>,
    digest: &Digest,
    description: &str,
) -> Result<(), ScanError> {
    let current = registry.meta.image_scan(repo, digest.as_str()).await?;
    record(
        registry,
        repo,
        digest,
        scan_type_of(current.as_ref()),
        None,
        Err(NotScanned::failed(description)),
        None,
    )
    .await
}
