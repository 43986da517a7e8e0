//! `berth gc`, `berth lifecycle`, `berth jobs`, `berth vulndb`, `berth scan`
//! and `berth encryption`: the operator's commands for garbage collection,
//! lifecycle policies, the background job queue, the vulnerability database,
//! image inventories and re-encryption of data from before encryption. Like `berth iam`, they open the data
//! directory directly, so they run beside a live server (SQLite admits
//! several processes; the GC protocol holds between processes as it does
//! between nodes). Output is JSON on stdout.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::Config;
use crate::metadata::{Repo, now_millis};
use crate::metrics::Metrics;
use crate::registry::Registry;

#[derive(clap::Subcommand, Debug)]
pub enum GcCommand {
    /// Run one garbage collection now and print what it freed.
    Run,
    /// Pause the scheduled collections of every node sharing this database
    /// (for a backup); `berth gc run` still works.
    Pause,
    /// Resume the scheduled collections.
    Resume,
}

#[derive(clap::Subcommand, Debug)]
pub enum JobsCommand {
    /// Print every job of the queue (periodic ones first) as JSON.
    List,
    /// Queue a failed job again, now.
    Retry { id: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum ReplicationCommand {
    /// Print each replication destination's backlog as JSON: images
    /// waiting, failing, given up, the age of the oldest undelivered push
    /// (the lag) and the last failure.
    Status,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the audit log's hash chain and recompute every link: prints a
    /// JSON report and fails (exit 1) when an event is missing or altered.
    Verify,
    /// Write events as CloudTrail log files (gzip JSON, one per account,
    /// region and hour, under OUT/AWSLogs/...).
    Export {
        #[arg(long)]
        out: PathBuf,
        /// The first time exported (RFC 3339) [default: the oldest event]
        #[arg(long)]
        start: Option<String>,
        /// Events before this time (RFC 3339) [default: now]
        #[arg(long)]
        end: Option<String>,
    },
    /// Print events as JSON lines (one CloudTrail record per line).
    Stream {
        /// The first time printed (RFC 3339) [default: only new events]
        #[arg(long)]
        since: Option<String>,
        /// Keep printing events as they are recorded.
        #[arg(long)]
        follow: bool,
    },
    /// Delete events older than the retention (`audit_retention`) now.
    Prune,
}

#[derive(clap::Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Evaluate lifecycle policies now and expire what they select: one
    /// repository's (with --repository-name), or every repository's.
    Run {
        #[arg(long)]
        repository_name: Option<String>,
        /// Account (registry) id; defaults to the first account.
        #[arg(long)]
        registry_id: Option<String>,
    },
    /// Print, as JSON, what a repository's policy (or --policy-file) would
    /// expire if evaluated at --at (RFC 3339, default now), over the images
    /// the repository holds now. Changes nothing.
    Preview {
        #[arg(long)]
        repository_name: String,
        #[arg(long)]
        registry_id: Option<String>,
        /// The instant to evaluate at, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        at: Option<String>,
        /// A policy document to preview instead of the stored one.
        #[arg(long)]
        policy_file: Option<std::path::PathBuf>,
    },
    /// Print the recorded expiries of a repository.
    Events {
        #[arg(long)]
        repository_name: String,
        #[arg(long)]
        registry_id: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum VulndbCommand {
    /// Load OSV records (JSON files, directories of them, osv.dev's
    /// per-ecosystem all.zip) into the shared database, in one transaction:
    /// every node uses them at once; a source that fails imports nothing.
    Import {
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// Records per ecosystem and the newest modification time (what scans
    /// report as vulnerabilitySourceUpdatedAt).
    Status,
}

#[derive(clap::Subcommand, Debug)]
pub enum EncryptionCommand {
    /// How much is sealed and how much is still plaintext (from a data
    /// directory older than encryption), as JSON.
    Status,
    /// Re-encrypt every plaintext blob and manifest now (the server also
    /// does it in the background), then print the status.
    Run,
}

#[derive(clap::Subcommand, Debug)]
pub enum ScanCommand {
    /// Print an image's inventory as a CycloneDX 1.5 SBOM (JSON).
    Sbom {
        /// REPOSITORY:TAG or REPOSITORY@DIGEST (an image, not an index).
        image: String,
        #[arg(long)]
        registry_id: Option<String>,
    },
}

async fn open(config: &Config) -> anyhow::Result<Registry> {
    crate::server::open_registry(config, Arc::new(Metrics::new())).await
}

async fn registry_id(registry: &Registry, given: Option<String>) -> anyhow::Result<String> {
    if let Some(id) = given {
        return Ok(id);
    }
    registry
        .meta
        .primary_account()
        .await?
        .context("no account exists yet; pass --registry-id")
}

pub async fn gc(config: &Config, command: GcCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        GcCommand::Run => {
            let report = crate::gc::collect(&registry, &crate::server::gc_settings(config)).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        GcCommand::Pause => {
            let at = now_millis().to_string();
            registry
                .meta
                .set_setting(crate::jobs::GC_PAUSED_SETTING, at.as_bytes())
                .await?;
            println!("{}", json!({ "paused": true }));
        }
        GcCommand::Resume => {
            let was = registry
                .meta
                .delete_setting(crate::jobs::GC_PAUSED_SETTING)
                .await?;
            println!("{}", json!({ "paused": false, "wasPaused": was }));
        }
    }
    Ok(())
}

pub async fn jobs(config: &Config, command: JobsCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        JobsCommand::List => {
            let rfc = |ms: i64| -> Value {
                if ms <= 0 {
                    Value::Null
                } else {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
                    json!(humantime::format_rfc3339_millis(t).to_string())
                }
            };
            let jobs: Vec<Value> = registry
                .meta
                .list_jobs()
                .await?
                .into_iter()
                .map(|j| {
                    json!({
                        "id": j.id,
                        "kind": j.kind,
                        "key": j.dedupe,
                        "state": j.state,
                        "periodSeconds": (j.every_ms > 0).then_some(j.every_ms as f64 / 1000.0),
                        "runAt": rfc(j.run_at),
                        "attempts": j.attempts,
                        "leaseOwner": j.lease_owner,
                        "leaseUntil": rfc(j.lease_until),
                        "lastStartedAt": rfc(j.last_started_at),
                        "lastFinishedAt": rfc(j.last_finished_at),
                        "lastError": j.last_error,
                        "payload": serde_json::from_str::<Value>(&j.payload).unwrap_or(Value::Null),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&jobs)?);
        }
        JobsCommand::Retry { id } => {
            if !registry.meta.retry_job(&id).await? {
                bail!("no failed job {id}");
            }
            println!("{}", json!({ "id": id, "state": "queued" }));
        }
    }
    Ok(())
}

fn parse_time(what: &str, s: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| anyhow::anyhow!("{what} {s:?} is not an RFC 3339 time: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

pub async fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    let meta = &registry.meta;
    match command {
        AuditCommand::Verify => {
            let master = crate::server::master_key(config).await?;
            let key = crate::server::audit_chain_key(&master);
            let report = crate::audit_trail::verify(meta, &key).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "ok": report.ok(),
                    "eventsChecked": report.checked,
                    "head": { "sequence": report.head.seq, "link": report.head.link },
                    "retainedFrom": report.head.pruned_seq + 1,
                    "problems": report.problems,
                    "moreProblems": report.more,
                }))?
            );
            if !report.ok() {
                anyhow::bail!(
                    "the audit log was tampered with: {} problem(s) found",
                    report.problems.len() as u64 + report.more
                );
            }
        }
        AuditCommand::Export { out, start, end } => {
            let start = start.map(|s| parse_time("--start", &s)).transpose()?;
            let end = end.map(|s| parse_time("--end", &s)).transpose()?;
            let (files, events) =
                crate::audit_trail::export(meta, &out, start.unwrap_or(0), end.unwrap_or(i64::MAX))
                    .await?;
            println!("{}", json!({ "files": files, "events": events }));
        }
        AuditCommand::Stream { since, follow } => {
            let since = since.map(|s| parse_time("--since", &s)).transpose()?;
            let mut stdout = std::io::stdout();
            crate::audit_trail::stream(meta, since.unwrap_or(i64::MAX), follow, &mut stdout)
                .await?;
        }
        AuditCommand::Prune => {
            if config.audit_retention.is_zero() {
                println!("{}", json!({ "deleted": 0, "retention": "forever" }));
                return Ok(());
            }
            let n = crate::audit_trail::prune(meta, config.audit_retention).await?;
            println!("{}", json!({ "deleted": n }));
        }
    }
    Ok(())
}

pub async fn replication(config: &Config, command: ReplicationCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        ReplicationCommand::Status => {
            let now = crate::metadata::now_millis();
            let out: Vec<Value> = registry
                .replication_backlogs()
                .await?
                .into_iter()
                .map(|b| {
                    json!({
                        "region": b.destination.region,
                        "registryId": b.destination.registry,
                        "pending": b.pending,
                        "failing": b.failing,
                        "failed": b.failed,
                        "lagSeconds": b.oldest_pending.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
                        "lastFailure": b.last_failure,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

pub async fn lifecycle(config: &Config, command: LifecycleCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        LifecycleCommand::Run {
            repository_name,
            registry_id: given,
        } => {
            let rows = match repository_name {
                Some(name) => {
                    let id = registry_id(&registry, given).await?;
                    let repo = Repo {
                        registry: &id,
                        name: &name,
                    };
                    match registry.meta.get_lifecycle_policy(repo).await? {
                        Some(row) => vec![row],
                        None => {
                            bail!("repository {name:?} of registry {id} has no lifecycle policy")
                        }
                    }
                }
                // Every policy: due "before the end of time".
                None => {
                    registry
                        .meta
                        .lifecycle_policies_due(i64::MAX, i64::MAX)
                        .await?
                }
            };
            let mut out = Vec::new();
            for row in rows {
                let repo = Repo {
                    registry: &row.registry_id,
                    name: &row.repository,
                };
                let now = now_millis();
                // Claim like the scheduler does, so a concurrent run elsewhere is not repeated.
                if !registry
                    .meta
                    .claim_lifecycle_evaluation(repo, &row.policy, row.last_evaluated_at, now)
                    .await?
                {
                    continue;
                }
                let e = crate::lifecycle::evaluate(&registry, &row, "berth-cli", now).await?;
                out.push(json!({
                    "registryId": row.registry_id,
                    "repositoryName": row.repository,
                    "evaluatedAt": humantime::format_rfc3339_millis(millis_to_time(now)).to_string(),
                    "expired": e.expired.iter().map(event_json).collect::<Vec<_>>(),
                }));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "evaluations": out }))?
            );
        }
        LifecycleCommand::Preview {
            repository_name,
            registry_id: given,
            at,
            policy_file,
        } => {
            let id = registry_id(&registry, given).await?;
            let repo = Repo {
                registry: &id,
                name: &repository_name,
            };
            if !registry.meta.repository_exists(repo).await? {
                bail!("repository {repository_name:?} does not exist in registry {id}");
            }
            let text = match policy_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => registry
                    .meta
                    .get_lifecycle_policy(repo)
                    .await?
                    .map(|r| r.policy)
                    .context("the repository has no lifecycle policy; pass --policy-file")?,
            };
            let policy = crate::lifecycle::parse_supported(&text)?;
            let at_ms = match at {
                Some(s) => {
                    let t = humantime::parse_rfc3339_weak(&s)
                        .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?;
                    t.duration_since(std::time::UNIX_EPOCH)
                        .context("--at is before 1970")?
                        .as_millis() as i64
                }
                None => now_millis(),
            };
            let mut v = crate::lifecycle::preview(&registry.meta, repo, &policy, at_ms).await?;
            v["registryId"] = json!(id);
            v["repositoryName"] = json!(repository_name);
            v["evaluatedAt"] =
                json!(humantime::format_rfc3339_millis(millis_to_time(at_ms)).to_string());
            v["lifecyclePolicyText"] = json!(text);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        LifecycleCommand::Events {
            repository_name,
            registry_id: given,
        } => {
            let id = registry_id(&registry, given).await?;
            let repo = Repo {
                registry: &id,
                name: &repository_name,
            };
            let events = registry.meta.lifecycle_events(repo).await?;
            let out: Vec<Value> = events.iter().map(event_json).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "events": out }))?
            );
        }
    }
    Ok(())
}

fn millis_to_time(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

fn event_json(e: &crate::metadata::ExpiryRecord) -> Value {
    json!({
        "imageDigest": e.digest,
        "imageTags": e.tags,
        "action": e.action,
        "appliedRulePriority": e.rule_priority,
        "reason": e.reason,
        "imagePushedAt": humantime::format_rfc3339_millis(millis_to_time(e.image_pushed_at)).to_string(),
        "occurredAt": humantime::format_rfc3339_millis(millis_to_time(e.occurred_at)).to_string(),
        "actor": e.actor,
    })
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

pub async fn vulndb(config: &Config, command: VulndbCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        VulndbCommand::Import { paths } => {
            let report = crate::scanning::vulndb::import(&registry.meta, &paths).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "imported": report.records,
                    "olderThanStoredSkipped": report.older_skipped,
                    "sources": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "ecosystems": report.per_ecosystem,
                    "newestModified": report.newest_modified_ms.map(rfc3339),
                }))?
            );
        }
        VulndbCommand::Status => {
            let s = registry.meta.vulndb_status().await?;
            let ecosystems: serde_json::Map<String, Value> = s
                .per_ecosystem
                .iter()
                .map(|(e, n)| (e.clone(), json!(n)))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "records": s.records,
                    "ecosystems": ecosystems,
                    "newestModified": s.newest_modified_ms.map(rfc3339),
                    "lastImport": s.last_import_ms.map(rfc3339),
                }))?
            );
        }
    }
    Ok(())
}

pub async fn encryption(config: &Config, command: EncryptionCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    let done = match command {
        EncryptionCommand::Status => None,
        EncryptionCommand::Run => {
            let r = registry.reseal_legacy(u64::MAX).await?;
            let swept = registry.sweep_legacy_copies().await?;
            registry.meta.checkpoint().await?;
            Some((r, swept))
        }
    };
    let p = registry.meta.sealing_progress().await?;
    let total = p.sealed_bytes + p.plaintext_bytes;
    let mut out = json!({
        "sealedBlobs": p.sealed_blobs,
        "sealedBytes": p.sealed_bytes,
        "plaintextBlobs": p.plaintext_blobs,
        "plaintextBytes": p.plaintext_bytes,
        "plaintextManifests": p.plaintext_manifests,
        "percentSealed": if total == 0 { 100.0 } else { (p.sealed_bytes as f64 * 1000.0 / total as f64).floor() / 10.0 },
        "complete": p.plaintext_blobs == 0 && p.plaintext_manifests == 0,
    });
    if let Some((r, swept)) = done {
        out["reencrypted"] = json!({
            "blobs": r.blobs, "bytes": r.bytes, "manifests": r.manifests, "skipped": r.skipped,
            "plaintextCopiesRemoved": swept,
        });
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn scan(config: &Config, command: ScanCommand) -> anyhow::Result<()> {
    let registry = open(config).await?;
    match command {
        ScanCommand::Sbom {
            image,
            registry_id: given,
        } => {
            let account = registry_id(&registry, given).await?;
            let (name, reference) = match image.split_once('@') {
                Some((n, d)) => (n, crate::reference::Reference::parse(d)),
                None => match image.rsplit_once(':') {
                    Some((n, t)) if !t.contains('/') => (n, crate::reference::Reference::parse(t)),
                    _ => (image.as_str(), crate::reference::Reference::parse("latest")),
                },
            };
            let reference = reference.map_err(|e| anyhow::anyhow!("{image}: {e}"))?;
            let repo_name = crate::reference::RepoName::parse(name)
                .with_context(|| format!("{name:?} is not a repository name"))?;
            let repo = crate::registry::RepoId::new(&account, repo_name);
            let m = registry
                .get_manifest(&repo, &reference)
                .await
                .with_context(|| image.clone())?;
            let inv =
                match crate::scanning::image_inventory(&registry, repo.key(), &m.digest).await? {
                    Ok(inv) => inv,
                    Err(n) => bail!("{image} ({}): {}", m.digest, n.description),
                };
            let doc = berth_scanner::sbom::cyclonedx(&inv.inventory, &image, m.digest.as_str());
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}
