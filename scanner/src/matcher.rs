//! Inventory × advisories → findings. OS packages are matched in their OS's
//! ecosystem by *source* name and *source* version (Debian, Ubuntu, Alpine,
//! Wolfi), by binary name and EVR (the Red Hat family), or by source name
//! with the record's optional `binaries` list (SUSE); language packages in
//! their own ecosystem. One finding per (vulnerability, installed package);
//! an advisory and its aliases (a DSA and its CVE) are one vulnerability.
//!
//! Also the advisory [`Index`] a match looks records up in (a hash probe
//! per package), and [`keys_of`]/[`record_keys`] so the registry can tell
//! which stored inventories a newly imported record touches.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::osv::{Affected, Record, Verdict};
use crate::version::{self, Scheme};
use crate::{Inventory, Package, PackageKind, Severity, severity};

/// One vulnerability in one installed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The CVE id when the advisory has one, else the advisory's id.
    pub name: String,
    pub description: String,
    pub uri: String,
    pub severity: Severity,
    pub package_name: String,
    pub package_version: String,
    /// The OSV ecosystem it was matched in.
    pub ecosystem: String,
    /// Whether the package is an OS package (BASIC scans report only these).
    pub os: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// The advisories that reported it (ids), sorted.
    pub advisories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_vector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_kind: Option<String>,
    /// The layer that introduced the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// Advisories by (ecosystem, package name), names normalised where the
/// ecosystem says names are equal (PyPI, PEP 503). Withdrawn records are
/// not indexed.
#[derive(Debug, Default, Clone)]
pub struct Index {
    by_eco: HashMap<String, HashMap<String, Vec<Arc<Record>>>>,
    records: usize,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes `record` under each (ecosystem, name) its `affected` names.
    pub fn insert(&mut self, record: Arc<Record>) {
        if record.withdrawn.is_some() {
            return;
        }
        let mut indexed = false;
        for (eco, name) in record_keys(&record) {
            let list = self.by_eco.entry(eco).or_default().entry(name).or_default();
            if !list.iter().any(|r| Arc::ptr_eq(r, &record)) {
                list.push(Arc::clone(&record));
                indexed = true;
            }
        }
        if indexed {
            self.records += 1;
        }
    }

    /// The records naming `name` in `ecosystem` (exact ecosystem string).
    pub fn lookup(&self, ecosystem: &str, name: &str) -> &[Arc<Record>] {
        let Some(names) = self.by_eco.get(ecosystem) else {
            return &[];
        };
        names
            .get(normalise_name(ecosystem, name).as_ref())
            .map_or(&[], Vec::as_slice)
    }

    /// Records indexed (each once, whatever it names).
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

/// A package name as the index keys it: PyPI names per PEP 503 (lower
/// case, runs of `-`, `_`, `.` as one `-`); others as written.
pub fn normalise_name<'a>(ecosystem: &str, name: &'a str) -> Cow<'a, str> {
    if ecosystem != "PyPI" {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    Cow::Owned(out)
}

/// The (ecosystem, normalised name) keys `record` is indexed under.
pub fn record_keys(record: &Record) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = record
        .affected
        .iter()
        .filter(|a| !a.package.ecosystem.is_empty() && !a.package.name.is_empty())
        .map(|a| {
            let eco = &a.package.ecosystem;
            (
                eco.clone(),
                normalise_name(eco, &a.package.name).into_owned(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The (ecosystem, normalised name) keys a match of `inventory` looks up:
/// the registry's reverse index for continuous re-matching.
pub fn keys_of(inventory: &Inventory, os_ecosystem: Option<&str>) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = inventory
        .packages
        .iter()
        .flat_map(|p| queries(p, os_ecosystem))
        .map(|q| (q.ecosystem.to_owned(), q.name.into_owned()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// How one installed package is looked up and compared.
struct Query<'a> {
    ecosystem: &'a str,
    /// Normalised for the index.
    name: Cow<'a, str>,
    version: &'a str,
    /// SUSE: the record's `binaries` list, when it has one, must name this.
    binary_filter: Option<&'a str>,
}

/// Every way one installed package is looked up: one, but for the
/// Enterprise Linux rebuilds (Rocky Linux, AlmaLinux), whose records name
/// source packages under a release-qualified ecosystem (`Rocky Linux:9`)
/// and are also found under the bare name and binary names.
fn queries<'a>(pkg: &'a Package, os_ecosystem: Option<&'a str>) -> Vec<Query<'a>> {
    let Some(first) = query(pkg, os_ecosystem) else {
        return Vec::new();
    };
    let base = first.ecosystem.split(':').next().unwrap_or(first.ecosystem);
    if pkg.kind != PackageKind::Rpm || !matches!(base, "Rocky Linux" | "AlmaLinux") {
        return vec![first];
    }
    let qualified = first.ecosystem;
    let source = pkg.source_name.as_deref().unwrap_or(&pkg.name);
    let source_version = pkg.source_version.as_deref().unwrap_or(&pkg.version);
    let mut out: Vec<Query<'a>> = Vec::new();
    for eco in [qualified, base] {
        for (name, version) in [
            (source, source_version),
            (pkg.name.as_str(), pkg.version.as_str()),
        ] {
            if !out.iter().any(|q| q.ecosystem == eco && q.name == name) {
                out.push(Query {
                    ecosystem: eco,
                    name: Cow::Borrowed(name),
                    version,
                    binary_filter: None,
                });
            }
        }
    }
    out
}

fn query<'a>(pkg: &'a Package, os_ecosystem: Option<&'a str>) -> Option<Query<'a>> {
    if let Some(ecosystem) = pkg.kind.language_ecosystem() {
        let mut version = pkg.version.as_str();
        if pkg.kind == PackageKind::Go && matches!(pkg.name.as_str(), "stdlib" | "toolchain") {
            version = version.strip_prefix("go").unwrap_or(version);
        }
        return Some(Query {
            ecosystem,
            name: normalise_name(ecosystem, &pkg.name),
            version,
            binary_filter: None,
        });
    }
    let ecosystem = os_ecosystem?;
    let base = ecosystem.split(':').next().unwrap_or(ecosystem);
    // The package manager must be the OS's (a stray dpkg database in an
    // Alpine image is not matched against Alpine's advisories).
    let wanted = match pkg.kind {
        PackageKind::Dpkg => Scheme::Dpkg,
        PackageKind::Apk => Scheme::Apk,
        _ => Scheme::Rpm,
    };
    if Scheme::for_ecosystem(ecosystem) != Some(wanted) {
        return None;
    }
    let source = pkg.source_name.as_deref().unwrap_or(&pkg.name);
    match base {
        // Source-package ecosystems, always release-qualified: the bare
        // `Debian`/`Alpine`/`Ubuntu` lists every release's records
        // (osv.dev #4230), so they are never matched.
        "Debian" | "Ubuntu" | "Alpine" | "Wolfi" | "Chainguard" => {
            if matches!(base, "Debian" | "Ubuntu" | "Alpine") && !ecosystem.contains(':') {
                return None;
            }
            Some(Query {
                ecosystem,
                name: Cow::Borrowed(source),
                version: pkg.source_version.as_deref().unwrap_or(&pkg.version),
                binary_filter: None,
            })
        }
        // SUSE: source name, the binary's own EVR (a source rpm's file
        // name carries no epoch), filtered by the record's binaries.
        "SUSE" | "openSUSE" => Some(Query {
            ecosystem,
            name: Cow::Borrowed(source),
            version: &pkg.version,
            binary_filter: Some(&pkg.name),
        }),
        _ => Some(Query {
            ecosystem,
            name: Cow::Borrowed(&pkg.name),
            version: &pkg.version,
            binary_filter: None,
        }),
    }
}

/// SUSE's `ecosystem_specific.binaries`: a list of names, or of objects
/// whose keys are names (`[{"kernel-default": "5.14…"}]`), or one object.
fn binaries_allow(affected: &Affected, binary: &str) -> bool {
    let Some(list) = affected
        .ecosystem_specific
        .as_ref()
        .and_then(|e| e.get("binaries"))
    else {
        return true;
    };
    let names = |v: &serde_json::Value| -> bool {
        match v {
            serde_json::Value::String(s) => s == binary,
            serde_json::Value::Object(m) => m.contains_key(binary),
            _ => false,
        }
    };
    match list {
        serde_json::Value::Array(items) => items.iter().any(names),
        other => names(other),
    }
}

/// The vulnerability names a record reports: its CVE ids (the id itself,
/// `aliases`, `upstream`); without any, the least of its id and aliases
/// (so a GHSA and a PYSEC that alias each other are one).
fn vulnerability_names(record: &Record) -> Vec<String> {
    let mut cves: Vec<String> = std::iter::once(&record.id)
        .chain(&record.aliases)
        .chain(&record.upstream)
        .filter(|id| id.starts_with("CVE-"))
        .cloned()
        .collect();
    cves.sort();
    cves.dedup();
    if cves.is_empty() {
        let least = record
            .aliases
            .iter()
            .chain(std::iter::once(&record.id))
            .min()
            .unwrap_or(&record.id);
        cves.push(least.clone());
    }
    cves
}

struct Hit {
    record: Arc<Record>,
    affected: usize,
    verdict: Verdict,
}

/// Matches `inventory`; `os_ecosystem` is the OSV ecosystem of its OS
/// (`crate::os::ecosystem`; `None`: no OS packages are matched) and
/// `lookup(ecosystem, name)` returns the advisories that name the package
/// in that ecosystem (e.g. [`Index::lookup`]). Findings come sorted by
/// severity (highest first), then name, then package.
pub fn match_inventory(
    inventory: &Inventory,
    os_ecosystem: Option<&str>,
    lookup: &dyn Fn(&str, &str) -> Vec<Arc<Record>>,
) -> Vec<Finding> {
    match_with(inventory, os_ecosystem, lookup, &|scheme, a, b| {
        version::compare(scheme, a, b)
    })
}

/// Findings per distinct installed package, kept across many matches
/// against the same records: a re-match of thousands of stored inventories
/// that share their base layers decides each (package, version) once.
/// Start a new cache whenever the records change.
#[derive(Debug, Default)]
pub struct MatchCache {
    entries: HashMap<String, Vec<Finding>>,
}

/// Entries a [`MatchCache`] holds before it starts over.
const MATCH_CACHE_ENTRIES: usize = 1_000_000;

impl MatchCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What decides a package's findings: everything but its layer.
fn package_key(os_ecosystem: Option<&str>, p: &Package) -> String {
    let mut k = String::with_capacity(96);
    for part in [
        os_ecosystem.unwrap_or(""),
        match p.kind {
            PackageKind::Dpkg => "d",
            PackageKind::Apk => "a",
            PackageKind::Rpm => "r",
            PackageKind::Python => "p",
            PackageKind::Npm => "n",
            PackageKind::Go => "g",
            PackageKind::Cargo => "c",
            PackageKind::Maven => "m",
            PackageKind::Gem => "e",
        },
        &p.name,
        &p.version,
        p.source_name.as_deref().unwrap_or("\u{1}"),
        p.source_version.as_deref().unwrap_or("\u{1}"),
    ] {
        k.push_str(part);
        k.push('\0');
    }
    k
}

/// [`match_inventory`], with each distinct package's findings taken from
/// (or added to) `cache`. Gives the same findings as `match_inventory`.
pub fn match_inventory_cached(
    inventory: &Inventory,
    os_ecosystem: Option<&str>,
    lookup: &dyn Fn(&str, &str) -> Vec<Arc<Record>>,
    cache: &mut MatchCache,
) -> Vec<Finding> {
    if cache.entries.len() > MATCH_CACHE_ENTRIES {
        cache.entries.clear();
    }
    let mut seen: std::collections::HashSet<(String, String, String, String)> =
        std::collections::HashSet::new();
    let mut findings = Vec::new();
    for pkg in &inventory.packages {
        let key = package_key(os_ecosystem, pkg);
        let per_package = match cache.entries.get(&key) {
            Some(f) => f,
            None => {
                let alone = Inventory {
                    os: inventory.os.clone(),
                    packages: vec![Package {
                        layer: None,
                        ..pkg.clone()
                    }],
                };
                let f = match_inventory(&alone, os_ecosystem, lookup);
                cache.entries.entry(key).or_insert(f)
            }
        };
        for f in per_package {
            // The same package installed twice is one finding: the first
            // (lowest layer) wins, as in `match_inventory`.
            if seen.insert((
                f.name.clone(),
                f.package_name.clone(),
                f.package_version.clone(),
                f.ecosystem.clone(),
            )) {
                let mut f = f.clone();
                f.layer = pkg.layer.clone();
                findings.push(f);
            }
        }
    }
    sort_findings(&mut findings);
    findings
}

fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.package_name.cmp(&b.package_name))
            .then_with(|| a.package_version.cmp(&b.package_version))
            .then_with(|| a.ecosystem.cmp(&b.ecosystem))
    });
}

type Cmp<'a> = &'a dyn Fn(Scheme, &str, &str) -> Option<Ordering>;

fn match_with(
    inventory: &Inventory,
    os_ecosystem: Option<&str>,
    lookup: &dyn Fn(&str, &str) -> Vec<Arc<Record>>,
    cmp: Cmp<'_>,
) -> Vec<Finding> {
    // (vulnerability, package name, package version, ecosystem) → hits;
    // the same package installed twice is one finding (the first, lowest
    // layer wins).
    type Key = (String, String, String, String);
    let mut groups: BTreeMap<Key, (&Package, Vec<Hit>)> = BTreeMap::new();
    for pkg in &inventory.packages {
        for q in queries(pkg, os_ecosystem) {
            for record in lookup(q.ecosystem, &q.name) {
                if record.withdrawn.is_some() {
                    continue;
                }
                let mut verdict: Option<(usize, Verdict)> = None;
                for (i, affected) in record.affected.iter().enumerate() {
                    if affected.package.ecosystem != q.ecosystem
                        || normalise_name(q.ecosystem, &affected.package.name) != q.name
                    {
                        continue;
                    }
                    if let Some(binary) = q.binary_filter
                        && !binaries_allow(affected, binary)
                    {
                        continue;
                    }
                    if let Some(v) = crate::osv::eval_affects(affected, q.version, cmp) {
                        verdict = Some((i, v));
                        break;
                    }
                }
                let Some((affected, verdict)) = verdict else {
                    continue;
                };
                for name in vulnerability_names(&record) {
                    let key = (
                        name,
                        pkg.name.clone(),
                        pkg.version.clone(),
                        q.ecosystem.to_owned(),
                    );
                    let (_, hits) = groups.entry(key).or_insert_with(|| (pkg, Vec::new()));
                    if !hits.iter().any(|h| h.record.id == record.id) {
                        hits.push(Hit {
                            record: Arc::clone(&record),
                            affected,
                            verdict: verdict.clone(),
                        });
                    }
                }
            }
        }
    }
    let mut findings: Vec<Finding> = groups
        .into_iter()
        .map(|((name, _, _, ecosystem), (pkg, hits))| finding(name, ecosystem, pkg, hits, cmp))
        .collect();
    sort_findings(&mut findings);
    findings
}

fn finding(
    name: String,
    ecosystem: String,
    pkg: &Package,
    mut hits: Vec<Hit>,
    cmp: Cmp<'_>,
) -> Finding {
    hits.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    let mut severity = Severity::Undefined;
    let mut cvss: Option<severity::Cvss> = None;
    for hit in &hits {
        let Some(affected) = hit.record.affected.get(hit.affected) else {
            continue;
        };
        severity = severity.max(severity::rate(&hit.record, affected).severity);
        if let Some(c) = severity::cvss(&hit.record, affected)
            && cvss.as_ref().is_none_or(|cur| c.score > cur.score)
        {
            cvss = Some(c);
        }
    }
    // The fix that closes every report: the greatest fixed version.
    let scheme = Scheme::for_ecosystem(&ecosystem);
    let mut fixed: Option<String> = None;
    for f in hits.iter().filter_map(|h| h.verdict.fixed.as_ref()) {
        let greater = match (&fixed, scheme) {
            (None, _) => true,
            (Some(cur), Some(s)) => cmp(s, f, cur) == Some(Ordering::Greater),
            (Some(_), None) => false,
        };
        if greater {
            fixed = Some(f.clone());
        }
    }
    // The record that describes it: the one named like the finding, else
    // the first (by id) that says anything.
    let primary = hits
        .iter()
        .find(|h| h.record.id == name)
        .or_else(|| hits.iter().find(|h| !describe(&h.record).is_empty()))
        .or(hits.first());
    let description = primary.map(|h| describe(&h.record)).unwrap_or_default();
    let primary_id = primary.map_or(name.as_str(), |h| h.record.id.as_str());
    let uri = uri_for(&name, &ecosystem, pkg.kind.is_os(), primary_id);
    let mut advisories: Vec<String> = hits.iter().map(|h| h.record.id.clone()).collect();
    advisories.dedup();
    Finding {
        uri,
        description,
        severity,
        package_name: pkg.name.clone(),
        package_version: pkg.version.clone(),
        os: pkg.kind.is_os(),
        fixed_version: fixed,
        advisories,
        cvss_score: cvss.as_ref().map(|c| c.score),
        cvss_vector: cvss.as_ref().map(|c| c.vector.clone()),
        cvss_kind: cvss.map(|c| c.kind),
        layer: pkg.layer.clone(),
        name,
        ecosystem,
    }
}

const DESCRIPTION_CHARS: usize = 500;

/// The summary, else the first line of the details, at most 500 chars.
fn describe(record: &Record) -> String {
    let text = record
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            record
                .details
                .as_deref()
                .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        })
        .unwrap_or("");
    if text.len() <= DESCRIPTION_CHARS {
        return text.to_owned();
    }
    text.chars().take(DESCRIPTION_CHARS).collect()
}

fn uri_for(name: &str, ecosystem: &str, os: bool, record_id: &str) -> String {
    if os && name.starts_with("CVE-") {
        match ecosystem.split(':').next().unwrap_or("") {
            "Debian" => return format!("https://security-tracker.debian.org/tracker/{name}"),
            "Ubuntu" => return format!("https://ubuntu.com/security/{name}"),
            "Alpine" => return format!("https://security.alpinelinux.org/vuln/{name}"),
            _ => {}
        }
    }
    format!("https://osv.dev/vulnerability/{record_id}")
}

#[cfg(test)]
mod tests;
