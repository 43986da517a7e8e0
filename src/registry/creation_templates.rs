//! Repository creation templates: the settings of the repositories that
//! Berth creates itself — at a replication destination (`REPLICATION`), for
//! a pull-through cache (`PULL_THROUGH_CACHE`), or for a push to a missing
//! repository (`CREATE_ON_PUSH`). A template matches repository names under
//! its prefix (`prod` ⇒ `prod/…`), the longest prefix wins, and `ROOT`
//! matches names no other template does. Applied once, at creation.

use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, RepoId, Result};
use crate::metadata::{CreationTemplateRow, MetaError, RepositoryRow, now_millis};

/// The prefix of the template for names no other template matches.
pub const ROOT: &str = "ROOT";

/// When a template applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppliedFor {
    Replication,
    PullThroughCache,
    CreateOnPush,
}

impl AppliedFor {
    pub fn as_str(self) -> &'static str {
        match self {
            AppliedFor::Replication => "REPLICATION",
            AppliedFor::PullThroughCache => "PULL_THROUGH_CACHE",
            AppliedFor::CreateOnPush => "CREATE_ON_PUSH",
        }
    }

    pub fn parse(s: &str) -> Option<AppliedFor> {
        [
            AppliedFor::Replication,
            AppliedFor::PullThroughCache,
            AppliedFor::CreateOnPush,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// A template's settings, in ECR's shape (the stored document; the face
/// validated every field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationTemplate {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `AES256` or `KMS`.
    pub encryption_type: String,
    /// The KMS key's ARN (`KMS` only; `None`: the account's `aws/ecr` key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub resource_tags: Vec<(String, String)>,
    pub image_tag_mutability: String,
    #[serde(default)]
    pub mutability_exclusions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy: Option<String>,
    /// `REPLICATION`, `PULL_THROUGH_CACHE`, `CREATE_ON_PUSH`.
    pub applied_for: Vec<String>,
}

impl CreationTemplate {
    fn applies_for(&self, what: AppliedFor) -> bool {
        self.applied_for.iter().any(|a| a == what.as_str())
    }

    /// Whether the template's prefix covers `name` (ROOT covers every name).
    fn covers(&self, name: &str) -> bool {
        if self.prefix == ROOT {
            return true;
        }
        let p = self.prefix.trim_end_matches('/');
        name.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The template that applies to a repository named `name` created for
/// `what`: the one with the longest prefix covering it, else `ROOT`.
pub fn choose<'t>(
    templates: &'t [CreationTemplate],
    name: &str,
    what: AppliedFor,
) -> Option<&'t CreationTemplate> {
    let eligible = templates
        .iter()
        .filter(|t| t.applies_for(what) && t.covers(name));
    let specific = eligible
        .clone()
        .filter(|t| t.prefix != ROOT)
        .max_by_key(|t| t.prefix.trim_end_matches('/').len());
    specific.or_else(|| eligible.into_iter().find(|t| t.prefix == ROOT))
}

/// A stored template's document.
pub fn parse_row(row: &CreationTemplateRow) -> Result<CreationTemplate> {
    serde_json::from_str(&row.document).map_err(|e| {
        RegistryError::Meta(MetaError::Corrupt(format!(
            "creation template {}: {e}",
            row.prefix
        )))
    })
}

fn row_of(registry: &str, t: &CreationTemplate, now: i64) -> CreationTemplateRow {
    CreationTemplateRow {
        registry: registry.to_string(),
        prefix: t.prefix.clone(),
        document: serde_json::to_string(t).expect("serialises"),
        created_at: now,
        updated_at: now,
    }
}

/// Most templates a registry may have read when one is chosen.
const MAX_TEMPLATES: i64 = 1000;

impl Registry {
    /// Every creation template of `registry`.
    pub async fn creation_templates(&self, registry: &str) -> Result<Vec<CreationTemplate>> {
        let rows = self
            .meta
            .creation_templates(registry, None, MAX_TEMPLATES)
            .await?;
        rows.iter().map(parse_row).collect()
    }

    /// Every template of `registry` with its creation and update times, in prefix order.
    pub async fn creation_template_rows(
        &self,
        registry: &str,
    ) -> Result<Vec<(CreationTemplate, i64, i64)>> {
        let rows = self
            .meta
            .creation_templates(registry, None, MAX_TEMPLATES)
            .await?;
        rows.iter()
            .map(|r| Ok((parse_row(r)?, r.created_at, r.updated_at)))
            .collect()
    }

    /// The template of `registry` with `prefix`, and when it was created.
    pub async fn creation_template(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<Option<(CreationTemplate, i64)>> {
        Ok(self
            .creation_template_rows(registry)
            .await?
            .into_iter()
            .find(|(t, ..)| t.prefix == prefix)
            .map(|(t, created, _)| (t, created)))
    }

    /// Store a new template (validated by the caller); false if its prefix has one.
    pub async fn create_creation_template(
        &self,
        registry: &str,
        t: &CreationTemplate,
        now: i64,
    ) -> std::result::Result<bool, MetaError> {
        self.meta
            .create_creation_template(&row_of(registry, t, now))
            .await
    }

    /// Replace a template; false if there is none with its prefix.
    pub async fn update_creation_template(
        &self,
        registry: &str,
        t: &CreationTemplate,
        now: i64,
    ) -> std::result::Result<bool, MetaError> {
        self.meta
            .update_creation_template(&row_of(registry, t, now))
            .await
    }

    /// Remove a template; the one removed, with its creation and update times.
    pub async fn delete_creation_template(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<Option<(CreationTemplate, i64, i64)>> {
        match self.meta.delete_creation_template(registry, prefix).await? {
            Some(r) => Ok(Some((parse_row(&r)?, r.created_at, r.updated_at))),
            None => Ok(None),
        }
    }

    /// Whether a push to `repo` would create it for `what`: it is missing,
    /// and `what` is a replication delivery (which always creates, from a
    /// template or with the defaults) or a template covers it for `what`.
    pub async fn would_create(&self, repo: &RepoId, what: AppliedFor) -> Result<bool> {
        if self.meta.repository_exists(repo.key()).await? {
            return Ok(false);
        }
        if what == AppliedFor::Replication {
            return Ok(true);
        }
        let templates = self.creation_templates(&repo.registry).await?;
        Ok(choose(&templates, repo.name.as_str(), what).is_some())
    }

    /// Create `repo` as `what` would (a replication destination, a cache):
    /// with the settings of the template that applies, or ECR's defaults
    /// (MUTABLE, AES256, no policies). Returns the repository, which may
    /// have been created meanwhile by someone else (then it is kept as is).
    pub async fn create_repository_for(
        &self,
        repo: &RepoId,
        what: AppliedFor,
    ) -> Result<RepositoryRow> {
        let templates = self.creation_templates(&repo.registry).await?;
        let template = choose(&templates, repo.name.as_str(), what);
        let mut row = RepositoryRow::new(&repo.registry, repo.name.as_str());
        let mut tags = Vec::new();
        if let Some(t) = template {
            row.tag_mutability = t.image_tag_mutability.clone();
            row.mutability_exclusions = t.mutability_exclusions.clone();
            row.encryption_type = t.encryption_type.clone();
            row.policy = t.repository_policy.clone();
            if t.encryption_type == "KMS" {
                // The key must still be usable, as for CreateRepository.
                match self
                    .kms
                    .repository_key(&repo.registry, "KMS", t.kms_key.as_deref())
                    .await?
                {
                    crate::kms::KeyRef::Kms(arn) => row.kms_key = Some(arn),
                    crate::kms::KeyRef::ServerManaged => {}
                }
            }
            tags = t.resource_tags.clone();
        }
        row.created_at = now_millis();
        // Berth's own CreateRepository, in the audit log as the service that
        // asked for it (not as the request that set it off).
        let scope = crate::audit::Scope::new();
        let service = match what {
            AppliedFor::Replication => "replication.ecr.amazonaws.com",
            AppliedFor::PullThroughCache => "pullthroughcache.ecr.amazonaws.com",
            AppliedFor::CreateOnPush => crate::audit::ECR,
        };
        let mut event = self.service_event(
            "CreateRepository",
            &repo.registry,
            repo.name.as_str(),
            service,
        );
        event.request_parameters = Some(serde_json::json!({
            "repositoryName": repo.name.as_str(),
            "appliedFor": what.as_str(),
            "template": template.map(|t| t.prefix.as_str()),
        }));
        scope.begin(event);
        if scope.run(self.meta.create_repository(&row, &tags)).await? {
            if let Some(policy) = template.and_then(|t| t.lifecycle_policy.as_deref()) {
                crate::audit::outside(self.meta.put_lifecycle_policy(
                    repo.key(),
                    policy,
                    now_millis(),
                ))
                .await?;
            }
            tracing::info!(registry = %repo.registry, repository = %repo.name,
                template = template.map(|t| t.prefix.as_str()).unwrap_or("(defaults)"),
                applied_for = what.as_str(), "created a repository");
        }
        self.meta
            .get_repository(repo.key())
            .await?
            .ok_or_else(|| repo.not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(prefix: &str, applied: &[&str]) -> CreationTemplate {
        CreationTemplate {
            prefix: prefix.into(),
            encryption_type: "AES256".into(),
            image_tag_mutability: "MUTABLE".into(),
            applied_for: applied.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_longest_covering_prefix_wins_and_root_is_the_fallback() {
        let all = [
            t("prod", &["REPLICATION"]),
            t("prod/web", &["REPLICATION"]),
            t("ROOT", &["REPLICATION", "PULL_THROUGH_CACHE"]),
            t("cache/", &["PULL_THROUGH_CACHE"]),
        ];
        let pick = |name, what| choose(&all, name, what).map(|t| t.prefix.as_str());
        assert_eq!(
            pick("prod/web/app", AppliedFor::Replication),
            Some("prod/web")
        );
        assert_eq!(pick("prod/api", AppliedFor::Replication), Some("prod"));
        // `prod` covers names under `prod/`, not `production` or `prod` itself.
        assert_eq!(pick("production", AppliedFor::Replication), Some("ROOT"));
        assert_eq!(pick("prod", AppliedFor::Replication), Some("ROOT"));
        assert_eq!(
            pick("cache/library/nginx", AppliedFor::PullThroughCache),
            Some("cache/")
        );
        assert_eq!(pick("other", AppliedFor::PullThroughCache), Some("ROOT"));
        assert_eq!(pick("prod/x", AppliedFor::CreateOnPush), None);
    }

    #[test]
    fn applied_for_round_trips() {
        for a in ["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"] {
            assert_eq!(AppliedFor::parse(a).unwrap().as_str(), a);
        }
        assert!(AppliedFor::parse("replication").is_none());
    }
}
