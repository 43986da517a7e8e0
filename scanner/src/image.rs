//! An image's layer scans merged bottom-up with OCI's rules: a layer's
//! whiteouts delete paths of the layers below it (never its own), an opaque
//! directory hides everything below it, a later file at the same path
//! replaces an earlier one. The result is the image's [`Inventory`].

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::layer::{Fact, LayerScan};
use crate::{Inventory, Os, Package, os};

/// How many symlinks are followed from one path before giving up (a loop).
const MAX_SYMLINKS: usize = 16;

/// Merges layer scans, lowest first; `layer_ids[i]` names layer `i` (its
/// digest) and is recorded on the packages it introduced.
pub fn merge(layers: &[(&str, &LayerScan)]) -> Inventory {
    let mut state: BTreeMap<String, Fact> = BTreeMap::new();
    for (id, scan) in layers {
        // This layer's deletions apply to the layers below only, so before
        // its own facts go in, whatever their order in the tar.
        for path in &scan.whiteouts {
            remove_subtree(&mut state, path);
        }
        for dir in &scan.opaque_dirs {
            if dir.is_empty() {
                state.clear();
            } else {
                remove_subtree(&mut state, dir);
            }
        }
        for (path, fact) in &scan.facts {
            let fact = match fact {
                Fact::Packages { packages } => {
                    // A package the same path already listed (unchanged)
                    // keeps the layer that introduced it.
                    let before: HashMap<PackageKey<'_>, &str> = match state.get(path) {
                        Some(Fact::Packages { packages }) => packages
                            .iter()
                            .map(|p| (key(p), p.layer.as_deref().unwrap_or(id)))
                            .collect(),
                        _ => HashMap::new(),
                    };
                    let packages = packages
                        .iter()
                        .map(|p| {
                            let mut p = p.clone();
                            p.layer = Some(before.get(&key(&p)).copied().unwrap_or(id).to_string());
                            p
                        })
                        .collect();
                    Fact::Packages { packages }
                }
                other => other.clone(),
            };
            state.insert(path.clone(), fact);
        }
    }
    Inventory {
        os: detect_os(&state),
        packages: packages(&state),
    }
}

type PackageKey<'a> = (
    crate::PackageKind,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn key(p: &Package) -> PackageKey<'_> {
    (
        p.kind,
        &p.name,
        &p.version,
        p.arch.as_deref(),
        p.source_name.as_deref(),
        p.source_version.as_deref(),
    )
}

/// Removes `path` and everything under it.
fn remove_subtree(state: &mut BTreeMap<String, Fact>, path: &str) {
    state.remove(path);
    let prefix = format!("{path}/");
    let under: Vec<String> = state
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        state.remove(&k);
    }
}

/// The fact at `path`, following symlink facts (relative to the link's
/// directory, or absolute from the root; `..` stops at the root).
fn resolve<'a>(state: &'a BTreeMap<String, Fact>, path: &str) -> Option<&'a Fact> {
    let mut path = path.to_string();
    for _ in 0..=MAX_SYMLINKS {
        match state.get(&path)? {
            Fact::Symlink { target } => path = link_target(&path, target)?,
            fact => return Some(fact),
        }
    }
    None
}

fn link_target(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = link.split('/').collect();
        p.pop();
        p
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn release_at<'a>(state: &'a BTreeMap<String, Fact>, path: &str) -> Option<&'a Os> {
    match resolve(state, path)? {
        Fact::OsRelease { os } if !os.id.is_empty() => Some(os),
        _ => None,
    }
}

fn detect_os(state: &BTreeMap<String, Fact>) -> Option<Os> {
    let mut found = os::RELEASE_FILES
        .iter()
        .find_map(|path| release_at(state, path))?
        .clone();
    // Debian testing and sid have no VERSION_ID; `etc/debian_version`
    // names the coming release's codename (`trixie/sid`).
    if found.id == "debian"
        && found.version_id.is_empty()
        && found.codename.is_empty()
        && let Some(dv) = release_at(state, "etc/debian_version")
    {
        found.codename.clone_from(&dv.codename);
    }
    Some(found)
}

/// Every surviving package, sorted by (kind, name, version, path, arch). OS
/// packages listed twice (a database and a hard link to it, say) count
/// once; language packages once per path.
fn packages(state: &BTreeMap<String, Fact>) -> Vec<Package> {
    let mut all: Vec<Package> = state
        .values()
        .filter_map(|f| match f {
            Fact::Packages { packages } => Some(packages.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    all.sort_by(|a, b| {
        (
            a.kind,
            &a.name,
            &a.version,
            &a.path,
            &a.arch,
            &a.source_name,
            &a.source_version,
        )
            .cmp(&(
                b.kind,
                &b.name,
                &b.version,
                &b.path,
                &b.arch,
                &b.source_name,
                &b.source_version,
            ))
    });
    let mut seen = HashSet::new();
    all.retain(|p| {
        let path = if p.kind.is_os() { "" } else { p.path.as_str() };
        seen.insert((
            p.kind,
            p.name.clone(),
            p.version.clone(),
            p.arch.clone(),
            path.to_string(),
        ))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackageKind;

    fn pkg(name: &str, version: &str, path: &str) -> Package {
        Package {
            kind: PackageKind::Dpkg,
            name: name.into(),
            version: version.into(),
            source_name: None,
            source_version: None,
            arch: None,
            path: path.into(),
            layer: None,
        }
    }

    fn scan(facts: &[(&str, Fact)], whiteouts: &[&str], opaque: &[&str]) -> LayerScan {
        LayerScan {
            facts: facts
                .iter()
                .map(|(p, f)| (p.to_string(), f.clone()))
                .collect(),
            whiteouts: whiteouts.iter().map(|s| s.to_string()).collect(),
            opaque_dirs: opaque.iter().map(|s| s.to_string()).collect(),
            ..LayerScan::default()
        }
    }

    fn pkgs(list: &[Package]) -> Fact {
        Fact::Packages {
            packages: list.to_vec(),
        }
    }

    fn release(id: &str, version: &str) -> Fact {
        Fact::OsRelease {
            os: Os {
                id: id.into(),
                version_id: version.into(),
                ..Os::default()
            },
        }
    }

    fn link(target: &str) -> Fact {
        Fact::Symlink {
            target: target.into(),
        }
    }

    fn names(inv: &Inventory) -> Vec<(String, String, String)> {
        inv.packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone(), p.layer.clone().unwrap()))
            .collect()
    }

    #[test]
    fn introducing_layer_survives_rewrites() {
        let s = "var/lib/dpkg/status";
        let l1 = scan(
            &[(
                s,
                pkgs(&[pkg("a", "1", s), pkg("b", "1", s), pkg("c", "1", s)]),
            )],
            &[],
            &[],
        );
        // Layer 2 upgrades b, removes c, adds d.
        let l2 = scan(
            &[(
                s,
                pkgs(&[pkg("a", "1", s), pkg("b", "2", s), pkg("d", "1", s)]),
            )],
            &[],
            &[],
        );
        let inv = merge(&[("L1", &l1), ("L2", &l2)]);
        let want = [("a", "1", "L1"), ("b", "2", "L2"), ("d", "1", "L2")];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(names(&inv), want);
        // Whited out, then re-created: the re-creating layer introduced it.
        let l3 = scan(&[], &["var/lib/dpkg"], &[]);
        let l4 = scan(&[(s, pkgs(&[pkg("a", "1", s)]))], &[], &[]);
        let inv = merge(&[("L1", &l1), ("L2", &l2), ("L3", &l3), ("L4", &l4)]);
        assert_eq!(names(&inv), [("a".into(), "1".into(), "L4".into())]);
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        let a = "usr/lib/python3/dist-packages/a/METADATA";
        let b = "usr/lib/python3/dist-packages/b/METADATA";
        let other = "usr/lib/python3.11/x/METADATA";
        let l1 = scan(
            &[
                (a, pkgs(&[pkg("a", "1", a)])),
                (b, pkgs(&[pkg("b", "1", b)])),
                (other, pkgs(&[pkg("o", "1", other)])),
            ],
            &[],
            &[],
        );
        // Opaque dir with a same-layer sibling, and a whiteout of a path
        // the same layer also creates.
        let c = "usr/lib/python3/dist-packages/c/METADATA";
        let l2 = scan(
            &[(c, pkgs(&[pkg("c", "1", c)]))],
            &["usr/lib/python3/dist-packages/c"],
            &["usr/lib/python3/dist-packages"],
        );
        let inv = merge(&[("L1", &l1), ("L2", &l2)]);
        let got: Vec<_> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        // `python3.11` shares a string prefix but is not under the dir.
        assert_eq!(got, ["c", "o"]);
        // A whiteout of a file.
        let l3 = scan(&[], &[other], &[]);
        let inv = merge(&[("L1", &l1), ("L2", &l2), ("L3", &l3)]);
        let got: Vec<_> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, ["c"]);
        // A root opaque dir hides everything below.
        let l4 = scan(&[], &[], &[""]);
        assert!(merge(&[("L1", &l1), ("L4", &l4)]).packages.is_empty());
    }

    #[test]
    fn os_detection_order_and_symlinks() {
        let debian = release("debian", "12");
        let alpine = release("alpine", "3.19.1");
        // A relative symlink into usr/lib.
        let l = scan(
            &[
                ("etc/os-release", link("../usr/lib/os-release")),
                ("usr/lib/os-release", debian.clone()),
                ("etc/alpine-release", alpine.clone()),
            ],
            &[],
            &[],
        );
        assert_eq!(merge(&[("L", &l)]).os.unwrap().id, "debian");
        // An absolute one, the target in a lower layer.
        let l1 = scan(&[("usr/lib/os-release", debian.clone())], &[], &[]);
        let l2 = scan(&[("etc/os-release", link("/usr/lib/os-release"))], &[], &[]);
        assert_eq!(merge(&[("1", &l1), ("2", &l2)]).os.unwrap().id, "debian");
        // `..` past the root stays at the root.
        let l = scan(
            &[
                ("etc/os-release", link("../../../../usr/lib/os-release")),
                ("usr/lib/os-release", debian.clone()),
            ],
            &[],
            &[],
        );
        assert_eq!(merge(&[("L", &l)]).os.unwrap().id, "debian");
        // etc/os-release wins over usr/lib/os-release and older files.
        let l = scan(
            &[
                ("etc/os-release", release("ubuntu", "22.04")),
                ("usr/lib/os-release", debian.clone()),
            ],
            &[],
            &[],
        );
        assert_eq!(merge(&[("L", &l)]).os.unwrap().id, "ubuntu");
        // A loop (and a dangling link) falls back to the older files.
        let l = scan(
            &[
                ("etc/os-release", link("../usr/lib/os-release")),
                ("usr/lib/os-release", link("/etc/os-release")),
                ("etc/alpine-release", alpine.clone()),
            ],
            &[],
            &[],
        );
        assert_eq!(merge(&[("L", &l)]).os.unwrap().id, "alpine");
        let l = scan(&[("etc/os-release", link("os-release"))], &[], &[]);
        assert_eq!(merge(&[("L", &l)]).os, None);
        // A whited-out os-release is gone.
        let l1 = scan(&[("etc/os-release", debian.clone())], &[], &[]);
        let l2 = scan(&[], &["etc/os-release"], &[]);
        assert_eq!(merge(&[("1", &l1), ("2", &l2)]).os, None);
        assert_eq!(merge(&[]), Inventory::default());
    }

    #[test]
    fn debian_testing_codename_from_debian_version() {
        let l = scan(
            &[
                ("etc/os-release", release("debian", "")),
                (
                    "etc/debian_version",
                    Fact::OsRelease {
                        os: Os {
                            id: "debian".into(),
                            codename: "trixie".into(),
                            ..Os::default()
                        },
                    },
                ),
            ],
            &[],
            &[],
        );
        let os = merge(&[("L", &l)]).os.unwrap();
        assert_eq!(crate::os::ecosystem(&os).as_deref(), Some("Debian:13"));
    }

    #[test]
    fn dedupe_and_order() {
        let s = "var/lib/dpkg/status";
        let h = "var/lib/dpkg/status.d/zz";
        let n1 = "app/node_modules/x/package.json";
        let n2 = "lib/node_modules/x/package.json";
        let mut x1 = pkg("x", "1", n1);
        x1.kind = PackageKind::Npm;
        let mut x2 = pkg("x", "1", n2);
        x2.kind = PackageKind::Npm;
        let l = scan(
            &[
                (
                    s,
                    pkgs(&[pkg("b", "1", s), pkg("a", "2", s), pkg("a", "10", s)]),
                ),
                (h, pkgs(&[pkg("a", "2", h)])),
                (n2, pkgs(&[x2])),
                (n1, pkgs(&[x1])),
            ],
            &[],
            &[],
        );
        let inv = merge(&[("L", &l)]);
        let got: Vec<_> = inv
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "10", s),
                ("a", "2", s),
                ("b", "1", s),
                ("x", "1", n1),
                ("x", "1", n2),
            ]
        );
    }
}
