//! Queries about content: blobs and their visibility per repository, upload
//! sessions, manifests, tags, referrers and image listings.

use sqlx::Row;

use super::{
    ImageIdRow, ImageRow, LockMode, ManifestRow, MetadataStore, NewManifest, PutManifestOutcome,
    ReferrerRow, Repo, Result, UploadRow, manifest_row, now_millis,
};
use crate::digest::{Descriptor, Digest};

/// Result of [`MetadataStore::delete_manifest`].
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteManifest {
    /// Deleted, with the tags it had.
    Deleted(Vec<String>),
    NotFound,
    /// An index of the repository references it.
    Referenced,
}

/// Result of [`MetadataStore::unlink_blob`].
#[derive(Debug, PartialEq, Eq)]
pub enum Unlink {
    Removed,
    NotLinked,
    /// A manifest of the repository (this digest) still references the blob.
    Referenced(String),
}

/// Which images a listing keeps (ECR's `filter.tagStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagFilter {
    Any,
    Tagged,
    Untagged,
}

/// Result of [`MetadataStore::claim_upload_writer`].
#[derive(Debug, PartialEq, Eq)]
pub enum WriterClaim {
    Claimed,
    /// Another writer holds the lease.
    Busy,
    /// The session has advanced to this size since it was read.
    Moved(u64),
    Unknown,
}

/// Result of [`MetadataStore::create_upload`].
#[derive(Debug, PartialEq, Eq)]
pub enum CreateUpload {
    Created,
    /// The caller already holds this many open sessions.
    CallerQuota(u64),
    /// The repository already holds this many open sessions.
    RepositoryQuota(u64),
}

impl MetadataStore {
    // ---- blobs --------------------------------------------------------------

    /// Size of `digest` if it is linked into `repo` (and live).
    pub async fn linked_blob_size(&self, repo: Repo<'_>, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.linked_blob(repo, digest).await?.map(|(size, _)| size))
    }

    /// Size of `digest` if any repository holds it (content is global; visibility is per repository).
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1 AND state = 'live'")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    /// Link an already stored blob into `repo` (cross-repository mount).
    /// Returns false if the blob is not linked into `from` (or is being
    /// collected). The new link counts as fresh for garbage collection.
    pub async fn mount_blob(
        &self,
        repo: Repo<'_>,
        from: Repo<'_>,
        digest: &Digest,
    ) -> Result<bool> {
        self.retrying(|| self.mount_blob_once(repo, from, digest))
            .await
    }

    async fn mount_blob_once(
        &self,
        repo: Repo<'_>,
        from: Repo<'_>,
        digest: &Digest,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        self.lock_blob_row(&mut tx, digest, LockMode::Share).await?;
        let linked = live_link(&mut tx, from, digest).await?;
        if linked {
            upsert_link(&mut tx, repo, digest, now_millis()).await?;
        }
        self.commit_if(tx, linked).await?;
        Ok(linked)
    }

    /// Make a published blob visible in `repo` and end the upload session that
    /// produced it, in one transaction. The digest must have been claimed
    /// ([`MetadataStore::claim_blob`]) before its bytes were published. Returns
    /// false, changing nothing, when the claimed row is no longer `live` — GC
    /// marked it (the claim was older than the grace period by then), and may
    /// have deleted the bytes and even the row since — so the blob must not
    /// become visible (docs/gc.md, I3).
    pub async fn commit_blob(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
        upload_id: Option<&str>,
    ) -> Result<bool> {
        self.retrying(|| self.commit_blob_once(repo, digest, upload_id))
            .await
    }

    async fn commit_blob_once(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
        upload_id: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        self.lock_blob_row(&mut tx, digest, LockMode::Update)
            .await?;
        if blob_state(&mut tx, digest).await?.as_deref() != Some("live") {
            return Ok(false);
        }
        upsert_link(&mut tx, repo, digest, now).await?;
        if let Some(id) = upload_id {
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    /// Remove a blob from a repository's view, unless a manifest of the
    /// repository references it (the check and the delete are one transaction).
    pub async fn unlink_blob(&self, repo: Repo<'_>, digest: &Digest) -> Result<Unlink> {
        self.retrying(|| self.unlink_blob_once(repo, digest)).await
    }

    async fn unlink_blob_once(&self, repo: Repo<'_>, digest: &Digest) -> Result<Unlink> {
        let mut tx = self.begin_write().await?;
        // The blob row first, exclusively (the lock order of every writer:
        // blob rows, then links): a manifest PUT that has checked the link
        // holds the row shared until it commits its references, so the
        // check below waits for it and sees them; a PUT that comes later
        // waits for this unlink and then finds the link gone.
        self.lock_blob_row(&mut tx, digest, LockMode::Update)
            .await?;
        let user: Option<String> = sqlx::query(
            "SELECT parent FROM manifest_references \
             WHERE registry_id = $1 AND repository = $2 AND child = $3 AND kind = 'blob' LIMIT 1",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        if let Some(manifest) = user {
            return Ok(Unlink::Referenced(manifest));
        }
        let res = sqlx::query(
            "DELETE FROM repository_blobs WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .execute(&mut *tx)
        .await?;
        self.commit_if(tx, res.rows_affected() > 0).await?;
        Ok(if res.rows_affected() > 0 {
            Unlink::Removed
        } else {
            Unlink::NotLinked
        })
    }

    // ---- upload sessions ----------------------------------------------------

    /// Open an upload session for `owner` (who opened it, for the quotas)
    /// unless `owner` already has `quotas.per_caller` sessions open or the
    /// repository `quotas.per_repository`; the counts and the insert are one
    /// transaction.
    pub async fn create_upload(
        &self,
        id: &str,
        repo: Repo<'_>,
        owner: &str,
        hash_state: &[u8],
        sealing: Option<(&str, &[u8])>,
        quotas: crate::config::UploadQuotas,
    ) -> Result<CreateUpload> {
        self.retrying(|| self.create_upload_once(id, repo, owner, hash_state, sealing, quotas))
            .await
    }

    async fn create_upload_once(
        &self,
        id: &str,
        repo: Repo<'_>,
        owner: &str,
        hash_state: &[u8],
        sealing: Option<(&str, &[u8])>,
        quotas: crate::config::UploadQuotas,
    ) -> Result<CreateUpload> {
        let mut tx = self.begin_write().await?;
        let by_owner: i64 = sqlx::query("SELECT COUNT(*) FROM uploads WHERE owner = $1")
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if by_owner as u64 >= quotas.per_caller {
            return Ok(CreateUpload::CallerQuota(quotas.per_caller));
        }
        let by_repo: i64 =
            sqlx::query("SELECT COUNT(*) FROM uploads WHERE registry_id = $1 AND repository = $2")
                .bind(repo.registry)
                .bind(repo.name)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if by_repo as u64 >= quotas.per_repository {
            return Ok(CreateUpload::RepositoryQuota(quotas.per_repository));
        }
        sqlx::query(
            "INSERT INTO uploads (id, registry_id, repository, size, hash_state, started_at, updated_at, owner, \
             key_ref, wrapped_key) VALUES ($1, $2, $3, 0, $4, $5, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(repo.registry)
        .bind(repo.name)
        .bind(hash_state)
        .bind(now_millis())
        .bind(owner)
        .bind(sealing.map(|s| s.0))
        .bind(sealing.map(|s| s.1))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(CreateUpload::Created)
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row = sqlx::query(
            "SELECT id, registry_id, repository, size, hash_state, started_at, updated_at, \
             staging, contended, key_ref, wrapped_key FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UploadRow {
                id: r.try_get(0)?,
                registry_id: r.try_get(1)?,
                repository: r.try_get(2)?,
                size: r.try_get::<i64, _>(3)? as u64,
                hash_state: r.try_get(4)?,
                started_at: r.try_get(5)?,
                updated_at: r.try_get(6)?,
                staging: r.try_get(7)?,
                contended: r.try_get::<i64, _>(8)? != 0,
                sealing: match (r.try_get::<Option<String>, _>(9)?, r.try_get(10)?) {
                    (Some(k), Some(w)) => Some((k, w)),
                    _ => None,
                },
            })
        })
        .transpose()
    }

    /// Take the writer's lease of upload `id` for `token` until `until`
    /// (epoch ms), if the session still holds `expected_size` bytes and no
    /// other writer holds an unexpired lease. A lease that expired without
    /// being released marks the session contended.
    pub async fn claim_upload_writer(
        &self,
        id: &str,
        expected_size: u64,
        token: &str,
        until: i64,
    ) -> Result<WriterClaim> {
        let now = now_millis();
        let res = sqlx::query(
            "UPDATE uploads SET writer = $1, writer_until = $2, \
             contended = CASE WHEN writer IS NULL THEN contended ELSE 1 END \
             WHERE id = $3 AND size = $4 AND (writer IS NULL OR writer_until < $5)",
        )
        .bind(token)
        .bind(until)
        .bind(id)
        .bind(expected_size as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() > 0 {
            return Ok(WriterClaim::Claimed);
        }
        Ok(match self.get_upload(id).await? {
            None => WriterClaim::Unknown,
            Some(row) if row.size != expected_size => WriterClaim::Moved(row.size),
            Some(_) => WriterClaim::Busy,
        })
    }

    /// Extend `token`'s lease of upload `id`; false if it no longer holds it.
    pub async fn renew_upload_writer(&self, id: &str, token: &str, until: i64) -> Result<bool> {
        let res = sqlx::query("UPDATE uploads SET writer_until = $1 WHERE id = $2 AND writer = $3")
            .bind(until)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Give up `token`'s lease of upload `id` (if it still holds it).
    pub async fn release_upload_writer(&self, id: &str, token: &str) -> Result<()> {
        sqlx::query(
            "UPDATE uploads SET writer = NULL, writer_until = 0 WHERE id = $1 AND writer = $2",
        )
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Record a chunk of upload `id`, written under `token`'s lease, and end
    /// the lease — only if the session still holds `expected_size` bytes and
    /// the lease is still `token`'s (compare-and-swap). Returns whether it
    /// was recorded.
    pub async fn advance_upload(
        &self,
        id: &str,
        token: &str,
        expected_size: u64,
        new_size: u64,
        hash_state: &[u8],
        staging: &str,
    ) -> Result<bool> {
        // An UploadLayerPart's event is written with the part it records.
        let n = self
            .execute_write(
                sqlx::query(
                    "UPDATE uploads SET size = $1, hash_state = $2, staging = $3, updated_at = $4, \
                     writer = NULL, writer_until = 0 WHERE id = $5 AND size = $6 AND writer = $7",
                )
                .bind(new_size as i64)
                .bind(hash_state)
                .bind(staging)
                .bind(now_millis())
                .bind(id)
                .bind(expected_size as i64)
                .bind(token),
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Upload sessions last touched before `before` (epoch ms).
    pub async fn stale_uploads(&self, before: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    // ---- manifests and tags -------------------------------------------------

    pub async fn manifest_exists(&self, repo: Repo<'_>, digest: &Digest) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Image sizes of manifests in `repo` (for computing an index's size).
    pub async fn image_size(&self, repo: Repo<'_>, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT image_size FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    /// Store a manifest with its references and, if given, point a tag at it,
    /// in one transaction. Referenced blobs and children are checked inside the
    /// transaction so a concurrent delete cannot leave a manifest pointing at
    /// nothing; an immutable tag that already points elsewhere stops everything.
    pub async fn put_manifest(&self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        self.retrying(|| self.put_manifest_once(m)).await
    }

    async fn put_manifest_once(&self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        let repo = m.repo;
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        // Garbage collection marks a blob `deleting` and drops its links in
        // one transaction; this check and the reference rows written below
        // are one transaction too, so either GC sees the references or this
        // sees the link gone (docs/gc.md, invariant I1). Checked in batches,
        // one statement per batch, so the transaction stays short.
        let mut blobs: Vec<&Descriptor> = m.blobs.iter().collect();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        for batch in blobs
            .chunk_by(|a, b| a.digest == b.digest)
            .collect::<Vec<_>>()
            .chunks(CHECK_BATCH)
        {
            let digests: Vec<&Digest> = batch.iter().map(|same| &same[0].digest).collect();
            self.lock_blob_rows(&mut tx, &digests, LockMode::Share)
                .await?;
            let stored = sizes_of(&mut tx, LIVE_LINK_SIZES, repo, &digests).await?;
            for same in batch {
                let d = &same[0].digest;
                let Some(size) = stored.get(d.as_str()) else {
                    return Ok(PutManifestOutcome::MissingBlob(d.clone()));
                };
                if let Some(bad) = same.iter().find(|x| x.size != *size) {
                    return Ok(PutManifestOutcome::SizeMismatch {
                        digest: d.clone(),
                        declared: bad.size,
                        stored: *size,
                    });
                }
            }
        }
        for batch in m.children.chunks(CHECK_BATCH) {
            let digests: Vec<&Digest> = batch.iter().map(|c| &c.digest).collect();
            // On PostgreSQL the children are locked (shared) too: a concurrent
            // delete of a child waits, then sees this index's references.
            let stored = match self.dialect {
                super::Dialect::Postgres => {
                    sizes_of_locked(&mut tx, MANIFEST_SIZES, repo, &digests).await?
                }
                super::Dialect::Sqlite => sizes_of(&mut tx, MANIFEST_SIZES, repo, &digests).await?,
            };
            for c in batch {
                let Some(size) = stored.get(c.digest.as_str()) else {
                    return Ok(PutManifestOutcome::MissingChild(c.digest.clone()));
                };
                if *size != c.size {
                    return Ok(PutManifestOutcome::SizeMismatch {
                        digest: c.digest.clone(),
                        declared: c.size,
                        stored: *size,
                    });
                }
            }
        }
        // The tag: take it if it is free (a concurrent push of the same new
        // tag waits here for ours and then finds it taken), else look at whom
        // it points to, locked, and move it unless it is immutable.
        let mut tag_changed = false;
        if let Some(tag) = m.tag {
            let taken = sqlx::query(
                "INSERT INTO tags (registry_id, repository, name, digest, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registry_id, repository, name) DO NOTHING",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(tag)
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if taken {
                tag_changed = true;
            } else {
                let lock = match self.dialect {
                    super::Dialect::Postgres => " FOR UPDATE",
                    super::Dialect::Sqlite => "",
                };
                let current: Option<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT digest FROM tags WHERE registry_id = $1 AND repository = $2 AND name = $3{lock}"
                )))
                .bind(repo.registry)
                .bind(repo.name)
                .bind(tag)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
                match current {
                    Some(d) if d == m.digest.as_str() => {}
                    Some(_) if m.tag_immutable => return Ok(PutManifestOutcome::TagImmutable),
                    _ => {
                        sqlx::query(
                            "INSERT INTO tags (registry_id, repository, name, digest, updated_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (registry_id, repository, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                        )
                        .bind(repo.registry)
                        .bind(repo.name)
                        .bind(tag)
                        .bind(m.digest.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        tag_changed = true;
                    }
                }
            }
        }
        let new_manifest = sqlx::query(
            "INSERT INTO manifests (registry_id, repository, digest, media_type, artifact_type, \
             config_media_type, subject, annotations, size, image_size, content, pushed_at, \
             key_ref, wrapped_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (registry_id, repository, digest) DO NOTHING",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(m.digest.as_str())
        .bind(m.media_type)
        .bind(m.artifact_type)
        .bind(m.config_media_type)
        .bind(m.subject.map(|d| d.as_str()))
        .bind(m.annotations)
        .bind(match m.sealing {
            Some(_) => m
                .content
                .len()
                .saturating_sub(crate::secrets::SEAL_OVERHEAD),
            None => m.content.len(),
        } as i64)
        .bind(m.layer_bytes as i64)
        .bind(m.content)
        .bind(now)
        .bind(m.sealing.map(|s| s.0))
        .bind(m.sealing.map(|s| s.1))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if new_manifest {
            for (kind, list) in [("blob", m.blobs), ("manifest", m.children)] {
                for child in list.iter().map(|d| &d.digest) {
                    sqlx::query(
                        "INSERT INTO manifest_references (registry_id, repository, parent, child, kind) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registry_id, repository, parent, child) DO NOTHING",
                    )
                    .bind(repo.registry)
                    .bind(repo.name)
                    .bind(m.digest.as_str())
                    .bind(child.as_str())
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // A scan of an earlier image with this digest (deleted since)
            // says nothing about this push.
            sqlx::query(
                "DELETE FROM image_scans WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(m.digest.as_str())
            .execute(&mut *tx)
            .await?;
            if let Some((scan_type, job)) = m.scan {
                super::scanning::mark_in_progress(&mut tx, repo, m.digest.as_str(), scan_type, now)
                    .await?;
                super::jobs::insert_job(&mut tx, job, 0).await?;
            }
        }
        if (new_manifest || tag_changed) && !m.replicate.is_empty() {
            let destinations: Vec<_> = m.replicate.iter().map(|(d, _)| d.clone()).collect();
            super::replication::append(&mut tx, repo, m.digest.as_str(), &destinations, now)
                .await?;
            for (_, job) in m.replicate {
                super::jobs::insert_job(&mut tx, job, 0).await?;
            }
        }
        self.commit(tx).await?;
        Ok(PutManifestOutcome::Stored {
            new_manifest,
            tag_changed,
        })
    }

    pub async fn get_manifest(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT digest, media_type, content, last_pulled_at, key_ref, wrapped_key FROM manifests \
             WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(manifest_row).transpose()
    }

    pub async fn get_manifest_by_tag(
        &self,
        repo: Repo<'_>,
        tag: &str,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content, m.last_pulled_at, m.key_ref, m.wrapped_key FROM tags t \
             JOIN manifests m ON m.registry_id = t.registry_id AND m.repository = t.repository AND m.digest = t.digest \
             WHERE t.registry_id = $1 AND t.repository = $2 AND t.name = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.map(manifest_row).transpose()
    }

    /// The digest a tag points at.
    pub async fn tag_digest(&self, repo: Repo<'_>, tag: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT digest FROM tags WHERE registry_id = $1 AND repository = $2 AND name = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Delete a manifest, its tags and its reference rows, unless an index
    /// of the repository references it; the check and the delete are one
    /// transaction, ordered against an index push by the manifest's row lock.
    pub async fn delete_manifest(&self, repo: Repo<'_>, digest: &Digest) -> Result<DeleteManifest> {
        self.retrying(|| self.delete_manifest_once(repo, digest))
            .await
    }

    async fn delete_manifest_once(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
    ) -> Result<DeleteManifest> {
        let mut tx = self.begin_write().await?;
        let lock = match self.dialect {
            super::Dialect::Postgres => " FOR UPDATE",
            super::Dialect::Sqlite => "",
        };
        let exists = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3{lock}"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !exists {
            return Ok(DeleteManifest::NotFound);
        }
        let referenced = sqlx::query(
            "SELECT 1 FROM manifest_references \
             WHERE registry_id = $1 AND repository = $2 AND child = $3 AND kind = 'manifest'",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if referenced {
            return Ok(DeleteManifest::Referenced);
        }
        for sql in [
            "DELETE FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            "DELETE FROM image_scans WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        ] {
            sqlx::query(sql)
                .bind(repo.registry)
                .bind(repo.name)
                .bind(digest.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let tags: Vec<String> = sqlx::query(
            "SELECT name FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3 ORDER BY name",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
        sqlx::query("DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3")
            .bind(repo.registry)
            .bind(repo.name)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM manifest_references WHERE registry_id = $1 AND repository = $2 AND parent = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(DeleteManifest::Deleted(tags))
    }

    /// Whether another manifest in the repository (an index) references `digest`.
    pub async fn manifest_is_referenced(&self, repo: Repo<'_>, digest: &Digest) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM manifest_references \
             WHERE registry_id = $1 AND repository = $2 AND child = $3 AND kind = 'manifest'",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub async fn delete_tag(&self, repo: Repo<'_>, tag: &str) -> Result<bool> {
        let res = sqlx::query(
            "DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND name = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(tag)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Tags of a repository in lexical order after `last`, at most `limit`.
    pub async fn list_tags(
        &self,
        repo: Repo<'_>,
        last: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM tags WHERE registry_id = $1 AND repository = $2 AND name > $3 \
             ORDER BY name LIMIT $4",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Manifests in `repo` whose `subject` is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: Repo<'_>,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations, key_ref, wrapped_key FROM manifests \
             WHERE registry_id = $1 AND repository = $2 AND subject = $3 \
             AND ($4 = '' OR artifact_type = $4)",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(subject.as_str())
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        // Sorted here, not in SQL: an ORDER BY makes SQLite walk every
        // manifest of the repository instead of using the subject index.
        let mut out: Vec<ReferrerRow> = rows
            .iter()
            .map(|r| {
                Ok(ReferrerRow {
                    digest: r.try_get(0)?,
                    media_type: r.try_get(1)?,
                    size: r.try_get(2)?,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                    sealing: match (r.try_get::<Option<String>, _>(5)?, r.try_get(6)?) {
                        (Some(k), Some(w)) => Some((k, w)),
                        _ => None,
                    },
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Images of a repository in push order (`pushed_at`, then digest),
    /// after the image `after` (exclusive), at most `limit`, each with its
    /// tags (oldest-applied first), keeping only tagged or untagged ones when
    /// `filter` says so. One indexed range scan, from `after` on, with the
    /// filter in SQL: the images it rejects are not sent to Berth, but the
    /// database still walks them (one probe of the tags index each), so a
    /// page of tagged images in a run of untagged ones reads the whole run.
    pub async fn list_images(
        &self,
        repo: Repo<'_>,
        after: Option<(i64, &str)>,
        filter: TagFilter,
        limit: i64,
    ) -> Result<Vec<ImageRow>> {
        let clause = match filter {
            TagFilter::Any => "",
            TagFilter::Tagged => {
                " AND EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = m.registry_id \
                 AND t.repository = m.repository AND t.digest = m.digest)"
            }
            TagFilter::Untagged => {
                " AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = m.registry_id \
                 AND t.repository = m.repository AND t.digest = m.digest)"
            }
        };
        let sql = format!(
            "SELECT digest, media_type, config_media_type, subject, image_size, pushed_at, last_pulled_at \
             FROM manifests m WHERE registry_id = $1 AND repository = $2 \
             AND (pushed_at, digest) > ($3, $4){clause} \
             ORDER BY pushed_at, digest LIMIT $5"
        );
        let (after_at, after_digest) = after.unwrap_or((i64::MIN, ""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.registry)
            .bind(repo.name)
            .bind(after_at)
            .bind(after_digest)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut images: Vec<ImageRow> = rows.iter().map(image_row).collect::<Result<_>>()?;
        self.attach_tags(repo, &mut images).await?;
        Ok(images)
    }

    /// Image ids of a repository, one per tag (an untagged image is one id
    /// without a tag), in push order (`pushed_at`, digest) and, within an
    /// image, in the order its tags were applied (`updated_at`, name): the
    /// ids after `after` (exclusive), at most `limit`. Each page costs its
    /// own size, wherever it starts: the rest of the cursor's image comes from
    /// a range of the tag index, the images after it from one join that walks
    /// the push index and stops at `limit` rows.
    pub async fn list_image_ids(
        &self,
        repo: Repo<'_>,
        after: Option<&ImageIdRow>,
        filter: TagFilter,
        limit: i64,
    ) -> Result<Vec<ImageIdRow>> {
        let mut out = Vec::new();
        if let Some(ImageIdRow {
            pushed_at,
            digest,
            tag: Some((tag_at, tag)),
        }) = after
            && filter != TagFilter::Untagged
        {
            let rows = sqlx::query(
                "SELECT updated_at, name FROM tags \
                 WHERE registry_id = $1 AND repository = $2 AND digest = $3 \
                 AND (updated_at, name) > ($4, $5) ORDER BY updated_at, name LIMIT $6",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(digest.as_str())
            .bind(*tag_at)
            .bind(tag.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                out.push(ImageIdRow {
                    pushed_at: *pushed_at,
                    digest: digest.clone(),
                    tag: Some((r.try_get(0)?, r.try_get(1)?)),
                });
            }
        }
        let rest = limit - out.len() as i64;
        if rest <= 0 {
            return Ok(out);
        }
        let (join, clause) = match filter {
            TagFilter::Any => ("LEFT JOIN", ""),
            TagFilter::Tagged => ("JOIN", ""),
            TagFilter::Untagged => ("LEFT JOIN", " AND t.name IS NULL"),
        };
        let sql = format!(
            "SELECT m.pushed_at, m.digest, t.updated_at, t.name FROM manifests m \
             {join} tags t ON t.registry_id = m.registry_id AND t.repository = m.repository \
             AND t.digest = m.digest \
             WHERE m.registry_id = $1 AND m.repository = $2 \
             AND (m.pushed_at, m.digest) > ($3, $4){clause} \
             ORDER BY m.pushed_at, m.digest, t.updated_at, t.name LIMIT $5"
        );
        let (after_at, after_digest) = after
            .map(|a| (a.pushed_at, a.digest.as_str()))
            .unwrap_or((i64::MIN, ""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.registry)
            .bind(repo.name)
            .bind(after_at)
            .bind(after_digest)
            .bind(rest)
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let name: Option<String> = r.try_get(3)?;
            let tag = match name {
                Some(name) => Some((r.try_get::<i64, _>(2)?, name)),
                None => None,
            };
            out.push(ImageIdRow {
                pushed_at: r.try_get(0)?,
                digest: r.try_get(1)?,
                tag,
            });
        }
        Ok(out)
    }

    /// Fill in the tags of `images` (all of one repository), oldest-applied first.
    async fn attach_tags(&self, repo: Repo<'_>, images: &mut [ImageRow]) -> Result<()> {
        for chunk in images.chunks_mut(CHECK_BATCH) {
            let sql = format!(
                "SELECT digest, name, updated_at FROM tags WHERE registry_id = $1 AND repository = $2 \
                 AND digest IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(repo.registry)
                .bind(repo.name);
            for img in chunk.iter() {
                q = q.bind(img.digest.clone());
            }
            let mut by_digest: std::collections::HashMap<String, Vec<(i64, String)>> =
                std::collections::HashMap::new();
            for r in q.fetch_all(&self.pool).await? {
                let digest: String = r.try_get(0)?;
                by_digest
                    .entry(digest)
                    .or_default()
                    .push((r.try_get(2)?, r.try_get(1)?));
            }
            for img in chunk.iter_mut() {
                if let Some(mut tags) = by_digest.remove(&img.digest) {
                    tags.sort();
                    img.tags = tags.into_iter().map(|(_, name)| name).collect();
                }
            }
        }
        Ok(())
    }

    /// One image with its tags.
    pub async fn image(&self, repo: Repo<'_>, digest: &str) -> Result<Option<ImageRow>> {
        let row = sqlx::query(
            "SELECT digest, media_type, config_media_type, subject, image_size, pushed_at, last_pulled_at \
             FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut images = vec![image_row(&row)?];
        self.attach_tags(repo, &mut images).await?;
        Ok(images.pop())
    }

    /// Number of manifests in a repository.
    pub async fn count_images(&self, repo: Repo<'_>) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM manifests WHERE registry_id = $1 AND repository = $2",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}

/// Digests checked per statement when a manifest is stored.
pub(super) const CHECK_BATCH: usize = 200;

/// `$first, $first+1, …` for `n` values.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Of the digests given, those linked into the repository whose blob row is
/// `live`, with the stored size (see [`sizes_of`]).
const LIVE_LINK_SIZES: &str = "SELECT b.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
     WHERE rb.registry_id = $1 AND rb.repository = $2 AND b.state = 'live' AND rb.digest";

/// Of the digests given, the manifests stored in the repository, with their sizes.
const MANIFEST_SIZES: &str =
    "SELECT digest, size FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest";

/// [`sizes_of`] with the rows locked `FOR SHARE` (PostgreSQL), in digest order.
async fn sizes_of_locked(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    select: &str,
    repo: Repo<'_>,
    digests: &[&Digest],
) -> Result<std::collections::HashMap<String, u64>> {
    let mut sorted = digests.to_vec();
    sorted.sort();
    let sql = format!(
        "{select} IN ({}) ORDER BY digest FOR SHARE",
        placeholders(3, sorted.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(repo.registry)
        .bind(repo.name);
    for d in &sorted {
        q = q.bind(d.as_str());
    }
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64)))
        .collect()
}

/// Run `select` (digest and size of rows of `repo`, ending in the digest
/// column it filters on) with ` IN (...)` of `digests`, as the transaction sees them.
async fn sizes_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    select: &str,
    repo: Repo<'_>,
    digests: &[&Digest],
) -> Result<std::collections::HashMap<String, u64>> {
    let sql = format!("{select} IN ({})", placeholders(3, digests.len()));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(repo.registry)
        .bind(repo.name);
    for d in digests {
        q = q.bind(d.as_str());
    }
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64)))
        .collect()
}

/// Whether `digest` is linked into `repo` and its blob row is `live`, as the
/// transaction sees it.
pub(super) async fn live_link(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: Repo<'_>,
    digest: &Digest,
) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
         WHERE rb.registry_id = $1 AND rb.repository = $2 AND rb.digest = $3 AND b.state = 'live'",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .is_some())
}

/// The state of `digest`'s blob row (`live`, `deleting`), as the transaction sees it.
pub(super) async fn blob_state(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    digest: &Digest,
) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT state FROM blobs WHERE digest = $1")
        .bind(digest.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// Insert a link, or refresh its `touched_at` if it exists.
async fn upsert_link(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: Repo<'_>,
    digest: &Digest,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO repository_blobs (registry_id, repository, digest, created_at, touched_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (registry_id, repository, digest) \
         DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn image_row(r: &sqlx::any::AnyRow) -> Result<ImageRow> {
    Ok(ImageRow {
        digest: r.try_get(0)?,
        tags: Vec::new(),
        media_type: r.try_get(1)?,
        config_media_type: r.try_get(2)?,
        subject: r.try_get(3)?,
        image_size: r.try_get(4)?,
        pushed_at: r.try_get(5)?,
        last_pulled_at: r.try_get(6)?,
    })
}
