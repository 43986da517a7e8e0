//! A registry's replication configuration, as ECR defines it: rules, each
//! with destinations (a region and a registry) and repository filters
//! (`PREFIX_MATCH`); which destinations a push to a repository goes to. The
//! push's transaction appends the image to each destination's log
//! (`Registry::put_manifest`); the `replication` service delivers it.

use serde::{Deserialize, Serialize};

use super::{Registry, Result};
use crate::metadata::{DestinationKey, MetaError};

/// The document of PutReplicationConfiguration, as stored and shown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationConfiguration {
    pub rules: Vec<ReplicationRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    pub destinations: Vec<ReplicationDestination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_filters: Vec<RepositoryFilter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestination {
    pub region: String,
    pub registry_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFilter {
    pub filter: String,
    /// Always `PREFIX_MATCH` (the only type ECR has).
    pub filter_type: String,
}

impl ReplicationConfiguration {
    /// The destinations a push to `repository` goes to, each once.
    pub fn destinations_for(&self, repository: &str) -> Vec<DestinationKey> {
        let mut out: Vec<DestinationKey> = Vec::new();
        for rule in &self.rules {
            let matches = rule.repository_filters.is_empty()
                || rule
                    .repository_filters
                    .iter()
                    .any(|f| repository.starts_with(&f.filter));
            if !matches {
                continue;
            }
            for d in &rule.destinations {
                let key = DestinationKey {
                    region: d.region.clone(),
                    registry: d.registry_id.clone(),
                };
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        }
        out
    }
}

impl Registry {
    /// `registry`'s replication configuration (no rules when none was put).
    pub async fn replication_configuration(
        &self,
        registry: &str,
    ) -> Result<ReplicationConfiguration> {
        Ok(match self.meta.replication_config(registry).await? {
            Some(doc) => serde_json::from_str(&doc)
                .map_err(|e| MetaError::Corrupt(format!("replication configuration: {e}")))?,
            None => ReplicationConfiguration::default(),
        })
    }

    /// Replace `registry`'s replication configuration (validated by the
    /// caller); no rules removes it. Images pushed from now on follow it.
    pub async fn put_replication_configuration(
        &self,
        registry: &str,
        config: &ReplicationConfiguration,
    ) -> Result<()> {
        let doc =
            (!config.rules.is_empty()).then(|| serde_json::to_string(config).expect("serialises"));
        Ok(self
            .meta
            .put_replication_config(registry, doc.as_deref())
            .await?)
    }
}

impl Registry {
    /// Every destination's backlog: the configured destinations (caught up
    /// or not) and any other that still has undelivered entries.
    pub async fn replication_backlogs(
        &self,
    ) -> std::result::Result<Vec<crate::metadata::DestinationBacklog>, MetaError> {
        let out = self.meta.replication_backlogs().await?;
        let configs = self.meta.replication_configs().await?;
        Ok(with_configured(out, configs))
    }

    /// The backlog of what `registry` pushed, per destination: those of its
    /// replication configuration (caught up or not) and any other that still
    /// has undelivered entries of it.
    pub async fn replication_backlogs_from(
        &self,
        registry: &str,
    ) -> std::result::Result<Vec<crate::metadata::DestinationBacklog>, MetaError> {
        let out = self.meta.replication_backlogs_from(registry).await?;
        let config = self.meta.replication_config(registry).await?;
        Ok(with_configured(out, config))
    }

    /// The replication log entries of image `digest` of `repo`, one per destination.
    pub async fn replication_entries(
        &self,
        repo: &super::RepoId,
        digest: &crate::digest::Digest,
    ) -> std::result::Result<Vec<crate::metadata::ReplicationEntry>, MetaError> {
        self.meta
            .replication_entries(repo.key(), digest.as_str())
            .await
    }

    /// Make blob `digest` of `source` visible in `target` (a replication
    /// destination in this deployment) without copying it: the stored copy
    /// is shared, and its data key gets a wrap for `target`'s key on the
    /// first read there. False when `source` no longer holds it.
    pub async fn link_replicated_blob(
        &self,
        target: &super::RepoId,
        source: &super::RepoId,
        digest: &crate::digest::Digest,
    ) -> Result<bool> {
        Ok(self
            .meta
            .mount_blob(target.key(), source.key(), digest)
            .await?)
    }
}

/// `backlogs` with every destination of the configuration documents
/// `configs` added (caught up) where missing, in destination order.
fn with_configured(
    mut out: Vec<crate::metadata::DestinationBacklog>,
    configs: impl IntoIterator<Item = String>,
) -> Vec<crate::metadata::DestinationBacklog> {
    for doc in configs {
        let Ok(config) = serde_json::from_str::<ReplicationConfiguration>(&doc) else {
            continue;
        };
        let configured =
            config
                .rules
                .iter()
                .flat_map(|r| &r.destinations)
                .map(|d| DestinationKey {
                    region: d.region.clone(),
                    registry: d.registry_id.clone(),
                });
        for destination in configured {
            if !out.iter().any(|b| b.destination == destination) {
                out.push(crate::metadata::DestinationBacklog {
                    destination,
                    pending: 0,
                    failing: 0,
                    oldest_pending: None,
                    failed: 0,
                    last_failure: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.destination.cmp(&b.destination));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(dest: &[(&str, &str)], filters: &[&str]) -> ReplicationRule {
        ReplicationRule {
            destinations: dest
                .iter()
                .map(|(r, a)| ReplicationDestination {
                    region: r.to_string(),
                    registry_id: a.to_string(),
                })
                .collect(),
            repository_filters: filters
                .iter()
                .map(|f| RepositoryFilter {
                    filter: f.to_string(),
                    filter_type: "PREFIX_MATCH".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn prefix_filters_pick_the_destinations_of_matching_rules_once() {
        let c = ReplicationConfiguration {
            rules: vec![
                rule(&[("eu-west-1", "111111111111")], &["prod/", "team"]),
                rule(
                    &[("eu-west-1", "111111111111"), ("us-west-2", "222222222222")],
                    &[],
                ),
            ],
        };
        let names = |repo| {
            c.destinations_for(repo)
                .into_iter()
                .map(|d| d.region)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("prod/app"), ["eu-west-1", "us-west-2"]);
        assert_eq!(names("teamcity"), ["eu-west-1", "us-west-2"]);
        let only = ReplicationConfiguration {
            rules: vec![rule(&[("eu-west-1", "111111111111")], &["prod/"])],
        };
        assert!(only.destinations_for("dev/app").is_empty());
        assert_eq!(only.destinations_for("prod/app").len(), 1);
    }

    #[test]
    fn the_document_is_ecr_shaped() {
        let c = ReplicationConfiguration {
            rules: vec![rule(&[("eu-west-1", "111111111111")], &["prod"])],
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"rules": [{"destinations": [{"region": "eu-west-1", "registryId": "111111111111"}],
                "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}]})
        );
    }
}
