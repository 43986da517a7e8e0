//! What the ECR API shows and changes of repositories, images and
//! lifecycle policies beyond pushing and pulling: repository settings and
//! policies, resource tags, image listings, lifecycle policies and previews.
//! Faces call these, never the metadata store. Most are the store's
//! operation as it is (the rules are in its transactions); where a rule
//! spans more than one statement it is here.

use super::Registry;
use crate::digest::Digest;
use crate::metadata::{
    ImageIdRow, ImageRow, LifecyclePolicyRow, MetaError, PreviewRow, Repo, RepositoryRow, TagFilter,
};

type MetaResult<T> = std::result::Result<T, MetaError>;

impl Registry {
    /// The digest tag `tag` of `repo` points at.
    pub async fn tag_digest(&self, repo: Repo<'_>, tag: &str) -> MetaResult<Option<String>> {
        self.meta.tag_digest(repo, tag).await
    }

    /// An image of `repo` with its tags and sizes.
    pub async fn image(&self, repo: Repo<'_>, digest: &str) -> MetaResult<Option<ImageRow>> {
        self.meta.image(repo, digest).await
    }

    /// A page of `repo`'s images in push order, after the cursor `after`.
    pub async fn list_images(
        &self,
        repo: Repo<'_>,
        after: Option<(i64, &str)>,
        filter: TagFilter,
        limit: i64,
    ) -> MetaResult<Vec<ImageRow>> {
        self.meta.list_images(repo, after, filter, limit).await
    }

    /// A page of `repo`'s image ids (one per tag) in listing order, after `after`.
    pub async fn list_image_ids(
        &self,
        repo: Repo<'_>,
        after: Option<&ImageIdRow>,
        filter: TagFilter,
        limit: i64,
    ) -> MetaResult<Vec<ImageIdRow>> {
        self.meta.list_image_ids(repo, after, filter, limit).await
    }

    /// The size of `digest` if `repo` may see it.
    pub async fn linked_blob_size(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
    ) -> MetaResult<Option<u64>> {
        self.meta.linked_blob_size(repo, digest).await
    }

    /// Store `repo`'s lifecycle policy (validated by the caller with `lifecycle::parse_supported`).
    pub async fn put_lifecycle_policy(
        &self,
        repo: Repo<'_>,
        text: &str,
        now: i64,
    ) -> MetaResult<()> {
        self.meta.put_lifecycle_policy(repo, text, now).await
    }

    /// `repo`'s lifecycle policy.
    pub async fn get_lifecycle_policy(
        &self,
        repo: Repo<'_>,
    ) -> MetaResult<Option<LifecyclePolicyRow>> {
        self.meta.get_lifecycle_policy(repo).await
    }

    /// Remove `repo`'s lifecycle policy; the one removed.
    pub async fn delete_lifecycle_policy(
        &self,
        repo: Repo<'_>,
    ) -> MetaResult<Option<LifecyclePolicyRow>> {
        self.meta.delete_lifecycle_policy(repo).await
    }

    /// The last lifecycle policy preview of `repo`.
    pub async fn get_lifecycle_preview(&self, repo: Repo<'_>) -> MetaResult<Option<PreviewRow>> {
        self.meta.get_lifecycle_preview(repo).await
    }

    /// Whether `repo` exists.
    pub async fn repository_exists(&self, repo: Repo<'_>) -> MetaResult<bool> {
        self.meta.repository_exists(repo).await
    }

    /// Whether account (registry) `id` exists.
    pub async fn account_exists(&self, id: &str) -> MetaResult<bool> {
        self.meta
            .account_exists(crate::reference::key_account(id))
            .await
    }

    /// Create a repository with resource tags; false if it exists.
    pub async fn create_repository(
        &self,
        repo: &RepositoryRow,
        tags: &[(String, String)],
    ) -> MetaResult<bool> {
        self.meta.create_repository(repo, tags).await
    }

    /// A repository and its settings.
    pub async fn get_repository(&self, repo: Repo<'_>) -> MetaResult<Option<RepositoryRow>> {
        self.meta.get_repository(repo).await
    }

    /// A page of a registry's repositories in name order, after `last`.
    pub async fn list_repositories(
        &self,
        registry: &str,
        last: Option<&str>,
        limit: i64,
    ) -> MetaResult<Vec<RepositoryRow>> {
        self.meta.list_repositories(registry, last, limit).await
    }

    /// Delete a repository (with its images when `force`); `Err(())` inside when it holds images and `force` is off.
    pub async fn delete_repository(
        &self,
        repo: Repo<'_>,
        force: bool,
    ) -> MetaResult<Option<std::result::Result<RepositoryRow, ()>>> {
        self.meta.delete_repository(repo, force).await
    }

    /// Add resource tags, keeping at most `max`; false if that would exceed it.
    pub async fn tag_repository(
        &self,
        repo: Repo<'_>,
        tags: &[(String, String)],
        max: usize,
    ) -> MetaResult<bool> {
        self.meta.tag_repository(repo, tags, max).await
    }

    /// Remove resource tags by key.
    pub async fn untag_repository(&self, repo: Repo<'_>, keys: &[String]) -> MetaResult<()> {
        self.meta.untag_repository(repo, keys).await
    }

    /// A repository's resource tags.
    pub async fn repository_tags(&self, repo: Repo<'_>) -> MetaResult<Vec<(String, String)>> {
        self.meta.repository_tags(repo).await
    }

    /// Set tag mutability and its exclusion filters.
    pub async fn set_tag_mutability(
        &self,
        repo: Repo<'_>,
        mutability: &str,
        exclusions: &[String],
    ) -> MetaResult<bool> {
        self.meta
            .set_tag_mutability(repo, mutability, exclusions)
            .await
    }

    /// Set a repository's own scan on push.
    pub async fn set_scan_on_push(&self, repo: Repo<'_>, on: bool) -> MetaResult<bool> {
        self.meta.set_scan_on_push(repo, on).await
    }

    /// Set or remove a repository policy (the caller drops cached decisions).
    pub async fn set_repository_policy(
        &self,
        repo: Repo<'_>,
        policy: Option<&str>,
    ) -> MetaResult<bool> {
        self.meta.set_repository_policy(repo, policy).await
    }

    /// A registry's policy document.
    pub async fn registry_policy(&self, registry: &str) -> MetaResult<Option<String>> {
        self.meta.registry_policy(registry).await
    }

    /// Set or remove a registry policy.
    pub async fn set_registry_policy(
        &self,
        registry: &str,
        policy: Option<&str>,
    ) -> MetaResult<bool> {
        self.meta.set_registry_policy(registry, policy).await
    }

    /// Begin a lifecycle policy preview of `repo` for `text` at `now` unless
    /// one started after `stale_before` is still in progress (false then);
    /// the preview's job is queued in the same transaction.
    pub async fn start_lifecycle_preview(
        &self,
        repo: Repo<'_>,
        text: &str,
        now: i64,
        stale_before: i64,
    ) -> MetaResult<bool> {
        let job = crate::jobs::lifecycle_preview(repo);
        self.meta
            .start_lifecycle_preview(repo, text, now, stale_before, &job)
            .await
    }

    /// The primary account (the first one created), if any.
    pub async fn primary_account(&self) -> MetaResult<Option<String>> {
        self.meta.primary_account().await
    }
}

/// What only the web console asks of the catalog (its face authorizes each
/// call explicitly: no ECR operation shows these).
impl Registry {
    /// A page of `registry`'s repositories whose name contains `contains`,
    /// in `order`, after `after`: at most `limit` rows, one index range.
    pub async fn search_repositories(
        &self,
        registry: &str,
        contains: &str,
        order: crate::metadata::RepoOrder,
        after: Option<&crate::metadata::RepoCursor>,
        limit: i64,
    ) -> MetaResult<Vec<RepositoryRow>> {
        self.meta
            .search_repositories(registry, contains, order, after, limit)
            .await
    }

    /// The bytes of `repo`'s images by push day over the last `days` days.
    pub async fn storage_by_day(&self, repo: Repo<'_>, days: i64) -> MetaResult<Vec<(i64, i64)>> {
        self.meta.storage_by_day(repo, days).await
    }

    /// How many images `repo` holds, and their total size.
    pub async fn repository_usage(&self, repo: Repo<'_>) -> MetaResult<(i64, i64)> {
        self.meta.repository_usage(repo).await
    }
}
