//! dpkg package database parser: `var/lib/dpkg/status` (only packages whose
//! `Status:` state is `installed`) and the distroless one-file-per-package
//! `var/lib/dpkg/status.d/*` (no `Status:` means installed). Stanzas are
//! RFC 822-like, separated by blank lines; a malformed stanza is skipped.

use crate::{Package, PackageKind};

/// The status file.
pub(crate) const STATUS: &str = "var/lib/dpkg/status";
const STATUS_D: &str = "var/lib/dpkg/status.d/";

/// Whether `path` is a dpkg database file.
pub(crate) fn is_db(path: &str) -> bool {
    path == STATUS || is_status_d(path)
}

fn is_status_d(path: &str) -> bool {
    path.strip_prefix(STATUS_D)
        .is_some_and(|name| !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums"))
}

/// Parses a dpkg database file at `path` (the status file or a `status.d`
/// entry).
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    let text = String::from_utf8_lossy(bytes);
    let status_required = !is_status_d(path);
    let mut packages = Vec::new();
    for stanza in stanzas(&text) {
        if let Some(p) = package_of(&stanza, status_required, path) {
            packages.push(p);
        }
    }
    Ok(packages)
}

/// A stanza's single-line fields as (name, value); `None` for a stanza with
/// a line that is neither a field nor a continuation.
type Stanza<'a> = Option<Vec<(&'a str, &'a str)>>;

fn stanzas(text: &str) -> impl Iterator<Item = Stanza<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut fields = Vec::new();
        let mut ok = true;
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                // A continuation of the previous field (Description,
                // Conffiles, …): nothing we need.
                if fields.is_empty() {
                    ok = false;
                }
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    fields.push((name, value.trim()));
                }
                _ => ok = false,
            }
        }
        Some(ok.then_some(fields))
    })
}

fn files_on_disk(state: Option<&str>) -> bool {
    matches!(
        state,
        Some(
            "installed"
                | "unpacked"
                | "half-configured"
                | "half-installed"
                | "triggers-awaiting"
                | "triggers-pending"
        )
    )
}

fn package_of(stanza: &Stanza<'_>, status_required: bool, path: &str) -> Option<Package> {
    let fields = stanza.as_ref()?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    };
    let name = field("Package")?;
    let version = field("Version")?;
    if name.contains(char::is_whitespace) || version.contains(char::is_whitespace) {
        return None;
    }
    match field("Status") {
        // The state (third word) says whether the package's files are on
        // disk: `installed`, and the states between unpacking and
        // configuring (`unpacked`, `half-configured`, `half-installed`,
        // `triggers-*`), whose files are there too (as Trivy counts them);
        // not `config-files` or `not-installed`.
        Some(status) if !files_on_disk(status.split_whitespace().nth(2)) => return None,
        None if status_required => return None,
        _ => {}
    }
    let (source_name, source_version) = match field("Source") {
        Some(source) => match source.split_once('(') {
            Some((n, v)) => {
                let v = v.strip_suffix(')').unwrap_or(v).trim();
                let n = n.trim();
                (
                    if n.is_empty() { name } else { n },
                    if v.is_empty() { version } else { v },
                )
            }
            None => (source, version),
        },
        None => (name, version),
    };
    Some(Package {
        kind: PackageKind::Dpkg,
        name: name.to_string(),
        version: version.to_string(),
        source_name: Some(source_name.to_string()),
        source_version: Some(source_version.to_string()),
        arch: field("Architecture").map(str::to_string),
        path: path.to_string(),
        layer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;

    const SAMPLE: &str = "\
Package: bsdutils
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Source: util-linux (2.38.1-5+deb12u3)
Version: 1:2.38.1-5+deb12u3
Description: basic utilities from 4.4BSD-Lite
 This package contains the bare minimum.
 .
 More text: with a colon.

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b13
Source: bash (5.2.15-2)

Package: gone
Status: deinstall ok config-files
Version: 1.0-1

Package: half
Status: install ok unpacked
Version: 1.0-1

Package: usr-is-merged
Status: install ok installed
Architecture: all
Source: usrmerge
Version: 37~deb12u1

Package: nosource
Status: install ok installed
Version: 2.0


Package: broken
this line has no colon
Status: install ok installed
Version: 1

Package: noversion
Status: install ok installed
";

    #[test]
    fn status_rules() {
        let pkgs = parse(STATUS, SAMPLE.as_bytes()).unwrap();
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source_name.as_deref().unwrap(),
                    p.source_version.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "bsdutils",
                    "1:2.38.1-5+deb12u3",
                    "util-linux",
                    "2.38.1-5+deb12u3"
                ),
                ("bash", "5.2.15-2+b13", "bash", "5.2.15-2"),
                // Unpacked, not configured: its files are on disk.
                ("half", "1.0-1", "half", "1.0-1"),
                ("usr-is-merged", "37~deb12u1", "usrmerge", "37~deb12u1"),
                ("nosource", "2.0", "nosource", "2.0"),
            ]
        );
        assert_eq!(pkgs[0].arch.as_deref(), Some("amd64"));
        assert_eq!(pkgs[0].path, STATUS);
        assert_eq!(pkgs[4].arch, None);
    }

    #[test]
    fn status_d_without_status_is_installed() {
        let path = "var/lib/dpkg/status.d/libc6";
        assert!(is_db(path));
        assert!(!is_db("var/lib/dpkg/status.d/libc6.md5sums"));
        assert!(!is_db("var/lib/dpkg/status.d/"));
        assert!(!is_db("var/lib/dpkg/status.d/a/b"));
        let text = "Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nSource: glibc\n";
        let pkgs = parse(path, text.as_bytes()).unwrap();
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].source_name.as_deref(), Some("glibc"));
        assert_eq!(pkgs[0].source_version.as_deref(), Some("2.36-9+deb12u4"));
        // The same stanza in the status file is not installed.
        assert!(parse(STATUS, text.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn hostile_input_never_panics() {
        for input in [
            &b""[..],
            b"\n\n\n",
            b" continuation first\n",
            b"Package:\nVersion:\n",
            b"\xff\xfe\x00Package: x\nVersion: 1\nStatus: a b installed\n",
            b"Package: x\nVersion: 1\nSource: (\nStatus: a b installed\n",
            b"Package: x\nVersion: 1\nSource: y (\nStatus: a b installed\n",
            b":::\n::\n",
        ] {
            let _ = parse(STATUS, input).unwrap();
        }
        let p = parse(
            STATUS,
            b"Package: x\nVersion: 1\nSource: (2)\nStatus: a b installed\n",
        )
        .unwrap();
        assert_eq!(p[0].source_name.as_deref(), Some("x"));
        assert_eq!(p[0].source_version.as_deref(), Some("2"));
    }

    type Row = (String, String, String, String, String);

    /// `dpkg-query`'s view of the database in `admindir`: installed
    /// packages as (name, arch, version, source, source version).
    fn dpkg_query(admindir: &std::path::Path) -> Vec<Row> {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args([
                "-W",
                "-f=${db:Status-Status}\\t${Package}\\t${Architecture}\\t${Version}\\t${source:Package}\\t${source:Version}\\n",
            ])
            .output()
            .expect("dpkg-query is needed for this test: apt-get install dpkg");
        assert!(out.status.success(), "dpkg-query failed: {out:?}");
        let mut rows: Vec<Row> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                // dpkg-query's state; the parser keeps the states whose
                // files are on disk.
                files_on_disk(Some(f[0])).then(|| {
                    (
                        f[1].into(),
                        f[2].into(),
                        f[3].into(),
                        f[4].into(),
                        f[5].into(),
                    )
                })
            })
            .collect();
        rows.sort();
        rows
    }

    fn ours(bytes: &[u8]) -> Vec<Row> {
        let mut rows: Vec<Row> = parse(STATUS, bytes)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.name,
                    p.arch.unwrap_or_default(),
                    p.version,
                    p.source_name.unwrap(),
                    p.source_version.unwrap(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpkg")
    }

    /// The committed trimmed status file (a capture of a real Debian 12
    /// system, plus edge cases) agrees with dpkg-query reading it.
    #[test]
    fn fixture_matches_dpkg_query() {
        let dir = fixture();
        let bytes = std::fs::read(dir.join("status")).unwrap();
        let want = dpkg_query(&dir);
        assert!(want.len() > 50, "fixture too small: {}", want.len());
        assert_eq!(ours(&bytes), want);
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &want {
            *names.entry(r.0.as_str()).or_default() += 1;
        }
        assert!(names.len() > 50);
    }

    /// This machine's own dpkg database agrees with dpkg-query.
    #[test]
    fn this_machine_matches_dpkg_query() {
        let dir = std::path::Path::new("/var/lib/dpkg");
        let bytes = std::fs::read(dir.join("status"))
            .expect("needs a Debian machine with /var/lib/dpkg/status");
        let want = dpkg_query(dir);
        assert!(!want.is_empty());
        assert_eq!(ours(&bytes), want);
    }
}
