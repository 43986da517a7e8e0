//! Replication: delivering pushed images to the destinations of the
//! registry's replication rules (`registry::replication`), as ECR does.
//!
//! A push appends the image to each destination's log in its own
//! transaction (`metadata::replication`), and queues that destination's
//! `replicate` job; the job ([`Replicator::deliver_due`]) works through the
//! destination's due entries in push order. A destination in this
//! deployment's region is written in process, linking the blobs it already
//! stores (no byte is copied), as the source account — the destination
//! registry's policy decides (`ecr:ReplicateImage`, and `ecr:CreateRepository`
//! for a repository that does not exist there yet, which is created from a
//! `REPLICATION` creation template or ECR's defaults). A destination in
//! another region is a peer deployment (`[[peers]]`): the image is pushed
//! to it over `/v2/` with the identity configured for it ([`peer`]), and the
//! peer applies the same rules. A failed delivery is retried with backoff
//! (its status says why) and never holds up the entries behind it; pushes
//! are idempotent, so a delivery repeated after a crash changes nothing.

pub mod peer;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Access, Caller};
use crate::digest::Digest;
use crate::iam::Principal;
use crate::metadata::{DestinationKey, ReplicationEntry, now_millis};
use crate::reference::{Reference, RepoName};
use crate::registry::creation_templates::AppliedFor;
use crate::registry::{Registry, RegistryError, RepoId, manifest};

/// Entries read at a time from a destination's log.
const BATCH: i64 = 32;
/// Images of one destination whose content is sent at once.
const PARALLEL: usize = 8;
/// A failing entry is retried for this long after its push, then given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failures of the destination as a whole (not of one image): the run stops
/// and every due entry waits, so a dead destination costs one attempt per
/// backoff, not one per image; its first success makes them all due again.
const DESTINATION_WIDE: &[&str] = &["DESTINATION_UNREACHABLE", "DESTINATION_ERROR"];
/// Index nesting followed when an index's children are delivered.
const MAX_DEPTH: usize = 4;

/// Why a delivery failed: a failure code (DescribeImageReplicationStatus's
/// `failureCode`) and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Failure {
    pub code: &'static str,
    pub reason: String,
    /// Retrying cannot help (the image is gone).
    pub permanent: bool,
}

impl Failure {
    fn new(code: &'static str, reason: impl Into<String>) -> Failure {
        Failure {
            code,
            reason: reason.into(),
            permanent: false,
        }
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        let code = match &e {
            RegistryError::Kms(_) => "KMS_ERROR",
            RegistryError::TagImmutable { .. } => "TAG_IMMUTABLE",
            RegistryError::ManifestInvalid(_)
            | RegistryError::ManifestBlobUnknown(_)
            | RegistryError::ManifestChildUnknown(_) => "REJECTED",
            RegistryError::StorageFull => "DESTINATION_FULL",
            _ => "INTERNAL_ERROR",
        };
        Failure::new(code, e.to_string())
    }
}

/// A `[[peers]]` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PeerError(String);

/// Delivers replication log entries (one per node; the jobs say what to do).
pub struct Replicator {
    registry: Arc<Registry>,
    access: Arc<Access>,
    peers: Vec<peer::Peer>,
    /// The destinations whose gauges the last sweep set.
    reported: std::sync::Mutex<Vec<DestinationKey>>,
}

impl Replicator {
    pub fn new(
        registry: Arc<Registry>,
        access: Arc<Access>,
        peers: &[crate::config::PeerConfig],
    ) -> Result<Replicator, PeerError> {
        Ok(Replicator {
            registry,
            access,
            peers: peers
                .iter()
                .map(peer::Peer::new)
                .collect::<Result<_, _>>()
                .map_err(PeerError)?,
            reported: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The regions replication can reach: this deployment's and the peers'.
    pub fn reachable_regions(&self) -> Vec<&str> {
        self.access
            .regions
            .iter()
            .map(String::as_str)
            .chain(self.peers.iter().map(|p| p.region()))
            .collect()
    }

    /// Deliver what is due for `destination`, oldest push first, until
    /// nothing is due. Returns how many entries were delivered.
    ///
    /// Entries go in batches: the content of up to [`PARALLEL`] images at
    /// once (blobs and manifests are content-addressed, so their order does
    /// not matter), then their tags one image at a time in push order, each
    /// read as it is then, so a tag that moved ends on the newer image.
    pub async fn deliver_due(&self, destination: &DestinationKey) -> Result<u64, RegistryError> {
        use futures_util::StreamExt;
        let mut delivered = 0;
        let mut resumed = false;
        let dest = format!("{}/{}", destination.region, destination.registry);
        let meta = &self.registry.meta;
        loop {
            let due = meta
                .replication_due(destination, now_millis(), BATCH)
                .await?;
            if due.is_empty() {
                return Ok(delivered);
            }
            let started = std::time::Instant::now();
            let preparing: Vec<_> = due.iter().map(|e| self.prepare(e)).collect();
            let prepared: Vec<_> = futures_util::stream::iter(preparing)
                .buffered(PARALLEL)
                .collect()
                .await;
            let mut wide = None;
            for (entry, prepared) in due.iter().zip(prepared) {
                let outcome = match prepared {
                    Ok(p) => self.finish(&p).await,
                    Err(f) => Err(f),
                };
                let seconds = started.elapsed().as_secs_f64();
                let metrics = &self.registry.metrics;
                match outcome {
                    Ok(()) => {
                        delivered += 1;
                        let lag = (now_millis() - entry.pushed_at) as f64 / 1000.0;
                        metrics.replication_delivered(&dest, "ok", seconds, lag);
                        meta.replication_outcome(entry, Ok(())).await?;
                        if !resumed {
                            resumed = true;
                            meta.replication_resume(destination, DESTINATION_WIDE)
                                .await?;
                        }
                    }
                    Err(f) => {
                        metrics.replication_delivered(&dest, f.code, seconds, 0.0);
                        tracing::warn!(repository = %entry.repository, digest = %entry.digest,
                            destination = %dest, attempt = entry.attempts + 1, error = %f,
                            "a replication delivery failed");
                        let retry_at = retry_at(entry, &f);
                        meta.replication_outcome(entry, Err((f.code, &f.reason, retry_at)))
                            .await?;
                        if let (true, Some(at)) = (DESTINATION_WIDE.contains(&f.code), retry_at) {
                            wide.get_or_insert((f.code, f.reason, at));
                        }
                    }
                }
            }
            if let Some((code, reason, at)) = wide {
                meta.replication_defer(destination, code, &reason, at)
                    .await?;
                return Ok(delivered);
            }
        }
    }

    /// After a `replicate` job finished: queue it again if entries became
    /// due meanwhile (a push that came while the job was finishing found it
    /// still queued and did not queue another).
    pub async fn requeue_if_due(&self, destination: &DestinationKey) -> Result<(), RegistryError> {
        let meta = &self.registry.meta;
        if !meta
            .replication_due(destination, now_millis(), 1)
            .await?
            .is_empty()
        {
            meta.enqueue_job(&crate::jobs::replicate(destination))
                .await?;
            self.registry.jobs_queued.notify_one();
        }
        Ok(())
    }

    /// Queue the delivery job of every destination with due entries, and
    /// refresh the replication gauges.
    pub async fn sweep(&self) -> Result<(), RegistryError> {
        let meta = &self.registry.meta;
        for d in meta.replication_due_destinations(now_millis()).await? {
            meta.enqueue_job(&crate::jobs::replicate(&d)).await?;
        }
        let now = now_millis();
        let backlogs = self.registry.replication_backlogs().await?;
        let mut reported = self.reported.lock().expect("not poisoned");
        // A destination no longer configured and caught up reads 0, not its last value.
        for gone in reported
            .iter()
            .filter(|d| !backlogs.iter().any(|b| &b.destination == *d))
        {
            let dest = format!("{}/{}", gone.region, gone.registry);
            self.registry.metrics.replication_backlog(&dest, 0, 0, 0.0);
        }
        reported.clear();
        reported.extend(backlogs.iter().map(|b| b.destination.clone()));
        drop(reported);
        for b in backlogs {
            let dest = format!("{}/{}", b.destination.region, b.destination.registry);
            let lag = b
                .oldest_pending
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            self.registry
                .metrics
                .replication_backlog(&dest, b.pending, b.failed, lag);
        }
        Ok(())
    }

    /// The first half of a delivery: where the entry goes, the
    /// destination's consent, and the image's content there (children,
    /// blobs, and — for an image without tags — its manifest by digest).
    async fn prepare<'a>(&'a self, entry: &ReplicationEntry) -> Result<Prepared<'a>, Failure> {
        let name = RepoName::parse(&entry.repository)
            .ok_or_else(|| Failure::new("INTERNAL_ERROR", "the repository name is invalid"))?;
        let source = RepoId::new(&entry.registry, name);
        let digest: Digest = entry
            .digest
            .parse()
            .map_err(|_| Failure::new("INTERNAL_ERROR", "the digest is invalid"))?;
        let tagged = !current_tags(&self.registry, &source, &digest)
            .await?
            .is_empty();
        let route = if self.access.serves(&entry.destination.region) {
            // A region of this deployment: its registry in the same stores.
            let key = self
                .access
                .registry_key(&entry.destination.registry, &entry.destination.region);
            let target = RepoId::new(&key, source.name.clone());
            self.admit_here(&source, &target).await?;
            self.copy_here(&source, &target, &digest, 0, !tagged)
                .await?;
            Route::Here(target)
        } else {
            let target = RepoId::new(&entry.destination.registry, source.name.clone());
            let peer = self
                .peers
                .iter()
                .find(|p| p.region() == entry.destination.region)
                .ok_or_else(|| {
                    Failure::new(
                        "DESTINATION_UNKNOWN",
                        format!(
                            "no peer serves region {} (add it to [[peers]])",
                            entry.destination.region
                        ),
                    )
                })?;
            peer.push_content(&self.registry, &source, &target, &digest, !tagged)
                .await?;
            Route::Peer(peer, target)
        };
        Ok(Prepared {
            source,
            digest,
            route,
        })
    }

    /// The second half: the tags the image has now (a tag moved since the
    /// push belongs to the image it moved to, whose entry comes later), or
    /// its manifest by digest if it has none left.
    async fn finish(&self, p: &Prepared<'_>) -> Result<(), Failure> {
        let reg = &self.registry;
        let tags = current_tags(reg, &p.source, &p.digest).await?;
        match &p.route {
            Route::Here(target) => {
                if tags.is_empty() {
                    return self.copy_here(&p.source, target, &p.digest, 0, true).await;
                }
                put_tags_here(reg, &p.source, target, &p.digest, &tags).await
            }
            Route::Peer(peer, target) => {
                peer.push_tags(reg, &p.source, target, &p.digest, &tags)
                    .await
            }
        }
    }

    /// Whether the destination registry (of this deployment) takes
    /// replication from the source account, creating the repository if it
    /// is missing: its registry policy decides, as in ECR.
    async fn admit_here(&self, source: &RepoId, target: &RepoId) -> Result<(), Failure> {
        let reg = &self.registry;
        if !reg
            .account_exists(&target.registry)
            .await
            .map_err(|e| Failure::from(RegistryError::Meta(e)))?
        {
            return Err(Failure::new(
                "DESTINATION_UNKNOWN",
                format!(
                    "the registry {} does not exist",
                    crate::reference::key_account(&target.registry)
                ),
            ));
        }
        let source_account = crate::reference::key_account(&source.registry);
        let caller = replication_caller(source_account);
        let allowed = |action: &'static str| {
            let caller = &caller;
            async move {
                self.access
                    .authorize(
                        caller,
                        action,
                        &target.registry,
                        Some(target.name.as_str()),
                        None,
                    )
                    .await
                    .map_err(|e| Failure::from(RegistryError::Meta(e)))
            }
        };
        let denied = |action: &str| {
            Failure::new(
                "ACCESS_DENIED",
                format!(
                    "the registry policy of {} does not allow {action} to account {source_account}",
                    crate::reference::key_account(&target.registry)
                ),
            )
        };
        if !allowed("ecr:ReplicateImage").await? {
            return Err(denied("ecr:ReplicateImage"));
        }
        if reg.would_create(target, AppliedFor::Replication).await? {
            if !allowed("ecr:CreateRepository").await? {
                return Err(denied("ecr:CreateRepository"));
            }
            reg.create_repository_for(target, AppliedFor::Replication)
                .await?;
        }
        Ok(())
    }

    /// Make manifest `digest` of `source` (and everything it references)
    /// exist in `target`, linking stored blobs rather than copying them;
    /// the manifest itself only `with_manifest` (its tags will bring it).
    async fn copy_here(
        &self,
        source: &RepoId,
        target: &RepoId,
        digest: &Digest,
        depth: usize,
        with_manifest: bool,
    ) -> Result<(), Failure> {
        let reg = &self.registry;
        if reg
            .meta
            .manifest_exists(target.key(), digest)
            .await
            .map_err(|e| Failure::from(RegistryError::Meta(e)))?
        {
            return Ok(());
        }
        let (m, parsed) = source_manifest(reg, source, digest).await?;
        if !parsed.children.is_empty() && depth >= MAX_DEPTH {
            return Err(Failure::new("REJECTED", "indexes nest too deeply"));
        }
        for child in &parsed.children {
            Box::pin(self.copy_here(source, target, &child.digest, depth + 1, true)).await?;
        }
        for blob in &parsed.blobs {
            if !reg
                .link_replicated_blob(target, source, &blob.digest)
                .await?
            {
                return Err(Failure::new(
                    "REJECTED",
                    format!("the source no longer holds blob {}", blob.digest),
                ));
            }
        }
        if with_manifest {
            let reference = Reference::Digest(digest.clone());
            let put =
                reg.put_replicated_manifest(target, &reference, Some(&m.media_type), &m.content);
            recorded(reg, source, target, digest, None, put).await?;
        }
        Ok(())
    }
}

/// Where a prepared entry goes.
enum Route<'a> {
    /// A registry of this deployment.
    Here(RepoId),
    /// A registry at a peer deployment.
    Peer(&'a peer::Peer, RepoId),
}

/// An entry whose content is at its destination; its tags are next.
struct Prepared<'a> {
    source: RepoId,
    digest: Digest,
    route: Route<'a>,
}

/// The tags image `digest` of `source` has now.
async fn current_tags(
    reg: &Registry,
    source: &RepoId,
    digest: &Digest,
) -> Result<Vec<String>, Failure> {
    let image = reg
        .meta
        .image(source.key(), digest.as_str())
        .await
        .map_err(|e| Failure::from(RegistryError::Meta(e)))?;
    match image {
        Some(i) => Ok(i.tags),
        None => Err(Failure {
            code: "IMAGE_NOT_FOUND",
            reason: "the image was deleted before it was replicated".into(),
            permanent: true,
        }),
    }
}

/// When to try `entry` again after `f`: backoff doubling per attempt (at
/// most [`MAX_BACKOFF`]); `None` once it is past [`GIVE_UP_AFTER`] or cannot
/// succeed.
fn retry_at(entry: &ReplicationEntry, f: &Failure) -> Option<i64> {
    let now = now_millis();
    if f.permanent || now - entry.pushed_at > GIVE_UP_AFTER.as_millis() as i64 {
        return None;
    }
    let backoff = Duration::from_secs(1 << entry.attempts.clamp(0, 9) as u32).min(MAX_BACKOFF);
    Some(now + backoff.as_millis() as i64)
}

/// The identity replication acts as in a destination registry of this
/// deployment: the source account (its root), as ECR's replication does.
fn replication_caller(account: &str) -> Caller {
    Caller {
        principal: Principal {
            arn: format!("arn:aws:iam::{account}:root"),
            account: account.to_string(),
            user_id: account.to_string(),
            username: None,
        },
        access_key_id: format!("replication:{account}"),
        is_root: true,
        identity_policies: Vec::new(),
        loaded_at: std::time::Instant::now(),
    }
}

/// A source manifest's bytes and what they reference.
pub(crate) async fn source_manifest(
    reg: &Registry,
    source: &RepoId,
    digest: &Digest,
) -> Result<(crate::metadata::ManifestRow, manifest::ParsedManifest), Failure> {
    let m = match reg
        .get_manifest(source, &Reference::Digest(digest.clone()))
        .await
    {
        Ok(m) => m,
        Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown { .. }) => {
            return Err(Failure {
                code: "IMAGE_NOT_FOUND",
                reason: format!("{digest} was deleted before it was replicated"),
                permanent: true,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let parsed = manifest::parse(Some(&m.media_type), &m.content, reg.limits.max_image_layers)
        .map_err(|e| Failure::new("REJECTED", e))?;
    Ok((m, parsed))
}

/// Run `put` (a replicated manifest stored in `target`) as the replication
/// service's own `ReplicateImage`, recorded in the audit log with it.
async fn recorded<T>(
    reg: &Registry,
    source: &RepoId,
    target: &RepoId,
    digest: &Digest,
    tag: Option<&str>,
    put: impl std::future::Future<Output = T>,
) -> T {
    let scope = crate::audit::Scope::new();
    let mut event = reg.service_event(
        "ReplicateImage",
        &target.registry,
        target.name.as_str(),
        "replication.ecr.amazonaws.com",
    );
    let mut image_id = serde_json::json!({ "imageDigest": digest.as_str() });
    if let Some(t) = tag {
        image_id["imageTag"] = t.into();
    }
    event.request_parameters = Some(serde_json::json!({
        "sourceRegistryId": crate::reference::key_account(&source.registry),
        "sourceRegion": crate::reference::key_region(&source.registry, reg.kms.region()),
        "sourceRepositoryName": source.name.as_str(),
        "imageId": image_id,
    }));
    scope.begin(event);
    scope.run(put).await
}

/// Point each of `tags` at `digest` in `target`. A tag the destination
/// keeps immutable at another image stays there: the image arrives
/// without it, as in ECR.
async fn put_tags_here(
    reg: &Registry,
    source: &RepoId,
    target: &RepoId,
    digest: &Digest,
    tags: &[String],
) -> Result<(), Failure> {
    if tags.is_empty() {
        return Ok(());
    }
    let (m, _) = source_manifest(reg, source, digest).await?;
    for tag in tags {
        let Ok(reference) = Reference::parse(tag) else {
            continue;
        };
        let put = reg.put_replicated_manifest(target, &reference, Some(&m.media_type), &m.content);
        match recorded(reg, source, target, digest, Some(tag), put).await {
            Ok(_) => {}
            Err(RegistryError::TagImmutable { .. }) => {
                tracing::info!(repository = %target.name, tag, "an immutable tag at the destination was kept");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
