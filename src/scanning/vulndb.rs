//! The vulnerability database as scans use it: OSV records imported into the
//! metadata store (`berth vulndb import`: JSON files, directories of them,
//! osv.dev's per-ecosystem `all.zip`), so every node sees an import without
//! a restart; and a per-node cache of the records each (ecosystem, package)
//! names, dropped whenever an import bumps the database's generation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_scanner::matcher::Finding;
use berth_scanner::osv::{ImportError, Record};

use super::ImageInventory;
use crate::metadata::{MetaError, MetadataStore, VulnRecord};
use crate::registry::scan_config::ScanType;

/// Records cached per node before the cache starts over.
const CACHE_KEYS: usize = 200_000;

#[derive(Default)]
struct Cache {
    generation: Option<String>,
    source_updated_at: Option<Option<i64>>,
    records: HashMap<(String, String), Vec<Arc<Record>>>,
}

/// A node's view of the vulnerability database.
pub struct VulnDb {
    meta: MetadataStore,
    cache: Mutex<Cache>,
}

impl VulnDb {
    pub fn new(meta: MetadataStore) -> VulnDb {
        VulnDb {
            meta,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Start over when an import happened since the cache was filled.
    async fn refresh(&self) -> Result<String, MetaError> {
        let generation = self.meta.vulndb_generation().await?;
        let mut c = self.cache.lock().expect("not poisoned");
        if c.generation.as_deref() != Some(generation.as_str()) {
            *c = Cache {
                generation: Some(generation.clone()),
                ..Cache::default()
            };
        }
        Ok(generation)
    }

    /// Whether nothing was ever imported.
    pub async fn is_empty(&self) -> Result<bool, MetaError> {
        Ok(self.refresh().await?.is_empty())
    }

    /// The newest modification time of any record (ECR's
    /// `vulnerabilitySourceUpdatedAt`), epoch ms.
    pub async fn source_updated_at(&self) -> Result<Option<i64>, MetaError> {
        self.refresh().await?;
        if let Some(v) = self.cache.lock().expect("not poisoned").source_updated_at {
            return Ok(v);
        }
        let v = self.meta.vulndb_status().await?.newest_modified_ms;
        self.cache.lock().expect("not poisoned").source_updated_at = Some(v);
        Ok(v)
    }

    /// The findings of an inventory: OS packages only for BASIC, OS and
    /// language packages for ENHANCED.
    pub async fn match_inventory(
        &self,
        inv: &ImageInventory,
        scan_type: ScanType,
    ) -> Result<Vec<Finding>, MetaError> {
        self.match_inventory_with(inv, scan_type, None).await
    }

    /// [`VulnDb::match_inventory`], deciding each distinct package once
    /// per `cache` (a re-match of many images that share their layers).
    pub async fn match_inventory_with(
        &self,
        inv: &ImageInventory,
        scan_type: ScanType,
        cache: Option<&mut berth_scanner::matcher::MatchCache>,
    ) -> Result<Vec<Finding>, MetaError> {
        self.refresh().await?;
        let keys = berth_scanner::matcher::keys_of(&inv.inventory, inv.os_ecosystem.as_deref());
        let missing: Vec<(String, String)> = {
            let c = self.cache.lock().expect("not poisoned");
            keys.iter()
                .filter(|k| !c.records.contains_key(*k))
                .cloned()
                .collect()
        };
        let mut fetched = Vec::with_capacity(missing.len());
        for (eco, name) in missing {
            let rows = self.meta.vuln_records_for(&eco, &name).await?;
            let records: Vec<Arc<Record>> = rows
                .into_iter()
                .filter_map(|(id, json)| match serde_json::from_str::<Record>(&json) {
                    Ok(r) => Some(Arc::new(r)),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "a stored vulnerability record does not parse");
                        None
                    }
                })
                .collect();
            fetched.push(((eco, name), records));
        }
        let snapshot: HashMap<(String, String), Vec<Arc<Record>>> = {
            let mut c = self.cache.lock().expect("not poisoned");
            if c.records.len() + fetched.len() > CACHE_KEYS {
                c.records.clear();
            }
            for (k, v) in fetched {
                c.records.insert(k, v);
            }
            keys.iter()
                .filter_map(|k| c.records.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        };
        let lookup = |eco: &str, name: &str| -> Vec<Arc<Record>> {
            snapshot
                .get(&(eco.to_string(), name.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        let mut findings = match cache {
            Some(cache) => berth_scanner::matcher::match_inventory_cached(
                &inv.inventory,
                inv.os_ecosystem.as_deref(),
                &lookup,
                cache,
            ),
            None => berth_scanner::matcher::match_inventory(
                &inv.inventory,
                inv.os_ecosystem.as_deref(),
                &lookup,
            ),
        };
        if scan_type == ScanType::Basic {
            findings.retain(|f| f.os);
        }
        Ok(findings)
    }
}

/// What an import read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportReport {
    pub files: Vec<PathBuf>,
    pub records: u64,
    /// Records not written because the stored copy is newer (by `modified`).
    pub older_skipped: u64,
    /// Records per ecosystem named by their `affected` entries.
    pub per_ecosystem: BTreeMap<String, u64>,
    pub newest_modified_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// A source or record was refused: nothing was imported.
    #[error("{0} (nothing was imported)")]
    Invalid(ImportError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Parse an OSV timestamp (RFC 3339) to epoch milliseconds.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z').trim()).ok()?;
    Some(
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis()
            .min(i64::MAX as u128) as i64,
    )
}

/// Import the OSV records of `paths` (files, directories, `all.zip`s) in one
/// transaction, and queue the re-match of continuously scanned images.
pub async fn import(
    meta: &MetadataStore,
    paths: &[PathBuf],
) -> Result<ImportReport, ImportFailure> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Record, ImportError>>(256);
    let sources: Vec<PathBuf> = paths.to_vec();
    let reader = tokio::task::spawn_blocking(move || {
        for path in &sources {
            let mut sink = |r: Record| {
                tx.blocking_send(Ok(r)).map_err(|_| ImportError {
                    file: path.display().to_string(),
                    reason: "the import was abandoned".into(),
                })
            };
            if let Err(e) = berth_scanner::osv::read_source(path, &mut sink) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    let mut import = meta.begin_vuln_import().await?;
    let mut report = ImportReport {
        files: paths.to_vec(),
        ..ImportReport::default()
    };
    while let Some(item) = rx.recv().await {
        let record = item.map_err(ImportFailure::Invalid)?;
        let Some(modified_ms) = rfc3339_ms(&record.modified) else {
            return Err(ImportFailure::Invalid(ImportError {
                file: record.id.clone(),
                reason: format!("`modified` is not an RFC 3339 time: {:?}", record.modified),
            }));
        };
        // Debian's records enumerate every affected version beside ranges
        // that already decide: stored without them, verdicts unchanged.
        let mut record = record;
        berth_scanner::osv::compact(&mut record);
        let keys = berth_scanner::matcher::record_keys(&record);
        let mut ecosystems: Vec<&str> = keys.iter().map(|(e, _)| e.as_str()).collect();
        ecosystems.sort_unstable();
        ecosystems.dedup();
        for e in ecosystems {
            *report.per_ecosystem.entry(e.to_string()).or_insert(0) += 1;
        }
        report.newest_modified_ms = report.newest_modified_ms.max(Some(modified_ms));
        let written = import
            .add(&VulnRecord {
                id: record.id.clone(),
                modified_ms,
                json: serde_json::to_string(&record).expect("serialises"),
                keys,
            })
            .await?;
        if written {
            report.records += 1;
        } else {
            report.older_skipped += 1;
        }
    }
    reader
        .await
        .map_err(|e| MetaError::Corrupt(format!("the OSV reader failed: {e}")))?;
    let generation = uuid::Uuid::new_v4().to_string();
    import
        .commit(&generation, &[crate::jobs::rescan(&generation)])
        .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osv_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(rfc3339_ms("2024-05-01T10:00:00.5Z"), Some(1714557600500));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
