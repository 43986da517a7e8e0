//! rpm package database parser: the SQLite rpmdb (`rpmdb.sqlite`, Fedora ≥
//! 33, RHEL/UBI 9, Amazon Linux 2023), read with a small pure-Rust reader of
//! the SQLite file format (`sqlite`); the Berkeley DB hash `Packages` of
//! RHEL/CentOS 7–8 and Amazon Linux 2 (`bdb`); and the rpm header blobs
//! both hold (NAME, EPOCH, VERSION, RELEASE, ARCH, SOURCERPM).
//!
//! Not read: SUSE's NDB `Packages.db` (Debian's rpm has no NDB backend, so
//! no fixture can be made offline here).

mod bdb;
mod sqlite;

use crate::{Package, PackageKind};

/// The SQLite rpmdb paths.
const SQLITE_PATHS: &[&str] = &[
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/share/rpm/rpmdb.sqlite",
];

/// The Berkeley DB paths.
const BDB_PATHS: &[&str] = &["var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages"];

/// Whether `path` is an rpm database this module reads.
pub(crate) fn is_db(path: &str) -> bool {
    SQLITE_PATHS.contains(&path) || BDB_PATHS.contains(&path)
}

/// Parses an `rpmdb.sqlite` or a Berkeley DB `Packages`; `gpg-pubkey`
/// pseudo-packages are skipped, as are headers that are malformed.
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    if BDB_PATHS.contains(&path) || bdb::is_bdb_hash(bytes) {
        let mut packages = Vec::new();
        bdb::values(bytes, &mut |blob| {
            if let Ok(h) = Header::parse(blob)
                && let Some(p) = h.package(path)
            {
                packages.push(p);
            }
            Ok(())
        })?;
        return Ok(packages);
    }
    parse_sqlite(path, bytes)
}

fn parse_sqlite(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    let db = sqlite::Db::open(bytes)?;
    let root = db.table_root("Packages")?;
    let mut packages = Vec::new();
    db.scan_table(root, &mut |row| {
        // (hnum INTEGER PRIMARY KEY, blob BLOB): the blob is the last column.
        if let Some(sqlite::OwnedValue::Blob(blob)) = row.last()
            && let Ok(h) = Header::parse(blob)
            && let Some(p) = h.package(path)
        {
            packages.push(p);
        }
        Ok(())
    })?;
    Ok(packages)
}

const TAG_NAME: i32 = 1000;
const TAG_VERSION: i32 = 1001;
const TAG_RELEASE: i32 = 1002;
const TAG_EPOCH: i32 = 1003;
const TAG_ARCH: i32 = 1022;
const TAG_SOURCERPM: i32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own bounds on a header (`hdrchkTags`, `hdrchkData`).
const MAX_TAGS: usize = 0xffff;
const MAX_DATA: usize = 256 << 20;

/// The fields of an rpm header we need.
#[derive(Debug, Default, PartialEq)]
struct Header {
    name: Option<String>,
    version: Option<String>,
    release: Option<String>,
    epoch: Option<u32>,
    arch: Option<String>,
    source_rpm: Option<String>,
}

impl Header {
    /// An rpmdb header blob: `il` and `dl` (big-endian u32), `il` index
    /// entries of (tag, type, offset, count), then `dl` bytes of data.
    fn parse(blob: &[u8]) -> Result<Header, String> {
        let il = be32(blob, 0)? as usize;
        let dl = be32(blob, 4)? as usize;
        if il > MAX_TAGS || dl > MAX_DATA {
            return Err("header too large".into());
        }
        let data_start = 8 + 16 * il;
        let data = blob
            .get(data_start..data_start + dl)
            .ok_or("header shorter than its index says")?;
        let mut h = Header::default();
        for i in 0..il {
            let e = 8 + 16 * i;
            let tag = be32(blob, e)? as i32;
            let ty = be32(blob, e + 4)?;
            let offset = be32(blob, e + 8)? as usize;
            let count = be32(blob, e + 12)?;
            let string = || -> Option<String> {
                if !matches!(ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || count == 0 {
                    return None;
                }
                let rest = data.get(offset..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                String::from_utf8(rest[..end].to_vec()).ok()
            };
            match tag {
                TAG_NAME => h.name = string(),
                TAG_VERSION => h.version = string(),
                TAG_RELEASE => h.release = string(),
                TAG_ARCH => h.arch = string(),
                TAG_SOURCERPM => h.source_rpm = string(),
                TAG_EPOCH if ty == TYPE_INT32 && count >= 1 => {
                    h.epoch = Some(be32(data, offset)?);
                }
                _ => {}
            }
        }
        Ok(h)
    }

    fn package(self, path: &str) -> Option<Package> {
        let name = self.name.filter(|n| !n.is_empty())?;
        if name == "gpg-pubkey" {
            return None;
        }
        let version = self.version.filter(|v| !v.is_empty())?;
        let release = self.release.filter(|r| !r.is_empty())?;
        let epoch = self.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        let (source_name, source_version) = match self.source_rpm.as_deref().and_then(split_srpm) {
            Some((n, v, r)) => (Some(n.to_string()), Some(format!("{epoch}{v}-{r}"))),
            None => (None, None),
        };
        Some(Package {
            kind: PackageKind::Rpm,
            name,
            version: format!("{epoch}{version}-{release}"),
            source_name,
            source_version,
            arch: self.arch.filter(|a| !a.is_empty()),
            path: path.to_string(),
            layer: None,
        })
    }
}

/// `openssl-3.0.7-27.el9.src.rpm` → (`openssl`, `3.0.7`, `27.el9`).
fn split_srpm(srpm: &str) -> Option<(&str, &str, &str)> {
    let base = srpm
        .strip_suffix(".src.rpm")
        .or_else(|| srpm.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    (!name.is_empty() && !version.is_empty() && !release.is_empty())
        .then_some((name, version, release))
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    let s = b
        .get(at..at.checked_add(4).ok_or("offset overflow")?)
        .ok_or("u32 out of range")?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm")
    }

    /// Builds a header blob from (tag, type, data) entries.
    fn header(entries: &[(i32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, bytes) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(bytes);
        }
        let mut out = (entries.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn header_fields() {
        let blob = header(&[
            (TAG_NAME, TYPE_STRING, s("openssl-libs")),
            (TAG_VERSION, TYPE_STRING, s("3.0.7")),
            (TAG_RELEASE, TYPE_STRING, s("27.el9")),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            (TAG_ARCH, TYPE_STRING, s("x86_64")),
            (
                TAG_SOURCERPM,
                TYPE_STRING,
                s("openssl-3.0.7-27.el9.src.rpm"),
            ),
        ]);
        let p = Header::parse(&blob).unwrap().package("p").unwrap();
        assert_eq!(p.name, "openssl-libs");
        assert_eq!(p.version, "1:3.0.7-27.el9");
        assert_eq!(p.source_name.as_deref(), Some("openssl"));
        assert_eq!(p.source_version.as_deref(), Some("1:3.0.7-27.el9"));
        assert_eq!(p.arch.as_deref(), Some("x86_64"));
        let no_epoch = header(&[
            (TAG_NAME, TYPE_STRING, s("bash")),
            (TAG_VERSION, TYPE_STRING, s("5.1.8")),
            (TAG_RELEASE, TYPE_STRING, s("9.el9")),
        ]);
        let p = Header::parse(&no_epoch).unwrap().package("p").unwrap();
        assert_eq!((p.version.as_str(), p.source_name), ("5.1.8-9.el9", None));
        let key = header(&[
            (TAG_NAME, TYPE_STRING, s("gpg-pubkey")),
            (TAG_VERSION, TYPE_STRING, s("fd431d51")),
            (TAG_RELEASE, TYPE_STRING, s("4ae0493b")),
        ]);
        assert!(Header::parse(&key).unwrap().package("p").is_none());
    }

    #[test]
    fn srpm_names() {
        assert_eq!(
            split_srpm("python3.11-3.11.5-1.el9.src.rpm"),
            Some(("python3.11", "3.11.5", "1.el9"))
        );
        assert_eq!(split_srpm("a-b-c.nosrc.rpm"), Some(("a", "b", "c")));
        assert_eq!(split_srpm("nodashes.src.rpm"), None);
        assert_eq!(split_srpm("x-1.src"), None);
        assert_eq!(split_srpm("-1-2.src.rpm"), None);
    }

    #[test]
    fn hostile_headers_never_panic() {
        let mut blobs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0, 0, 0, 1],
            vec![0xff; 8],
            vec![0, 0, 0, 1, 0, 0, 0, 0],
        ];
        // An entry whose offset points past the data, and a string without NUL.
        let mut b = header(&[(TAG_NAME, TYPE_STRING, b"abc".to_vec())]);
        blobs.push(b.clone());
        b[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        blobs.push(b);
        blobs.push(header(&[(TAG_EPOCH, TYPE_INT32, vec![1])]));
        for blob in blobs {
            if let Ok(h) = Header::parse(&blob) {
                assert!(h.package("p").is_none());
            }
        }
        assert!(parse("p", b"").is_err());
        assert!(parse("p", b"SQLite format 3\0 but then nothing").is_err());
    }

    /// `rpm -qa` over a copy of the fixture `file` (rpm opens databases
    /// read-write), as lines like ours below.
    fn rpm_qa(file: &str, backend: &str) -> Vec<String> {
        let tmp = std::env::temp_dir().join(format!("berth-rpmdb-{}-{file}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(fixture_dir().join(file), tmp.join(file)).unwrap();
        let out = Command::new("rpm")
            .arg("--dbpath")
            .arg(&tmp)
            .arg("--define")
            .arg(format!("_db_backend {backend}"))
            .args([
                "-qa",
                "--qf",
                "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH} %{SOURCERPM}\\n",
            ])
            .output()
            .expect("rpm is needed for this test: apt-get install rpm");
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(out.status.success(), "rpm -qa failed: {out:?}");
        let mut want: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("gpg-pubkey "))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let (n, v, r) = split_srpm(f[3]).unwrap();
                let epoch = f[1].split_once(':').map(|(e, _)| format!("{e}:"));
                format!(
                    "{} {} {} {n} {}{v}-{r}",
                    f[0],
                    f[1],
                    f[2],
                    epoch.unwrap_or_default()
                )
            })
            .collect();
        want.sort();
        want
    }

    fn ours(file: &str, path: &str) -> Vec<String> {
        let bytes = std::fs::read(fixture_dir().join(file)).unwrap();
        let mut ours: Vec<String> = parse(path, &bytes)
            .unwrap()
            .into_iter()
            .map(|p| {
                assert_eq!(p.path, path);
                format!(
                    "{} {} {} {} {}",
                    p.name,
                    p.version,
                    p.arch.unwrap_or_default(),
                    p.source_name.unwrap_or_default(),
                    p.source_version.unwrap_or_default()
                )
            })
            .collect();
        ours.sort();
        ours
    }

    /// The committed fixtures (made by `tests/fixtures/rpm/make.sh` with
    /// Debian's rpm and Berkeley DB's db_load) parse to what `rpm -qa`
    /// says of them.
    #[test]
    fn sqlite_fixture_matches_rpm_qa() {
        let ours = ours("rpmdb.sqlite", "var/lib/rpm/rpmdb.sqlite");
        let want = rpm_qa("rpmdb.sqlite", "sqlite");
        assert!(want.len() >= 3, "fixture has too few packages: {want:?}");
        assert_eq!(ours, want);
        // The fixture exercises an epoch (its headers also spill into
        // overflow pages, and the table has interior pages).
        assert!(ours.iter().any(|l| l.contains(" 7:")), "{ours:?}");
    }

    #[test]
    fn bdb_fixture_matches_rpm_qa() {
        let ours = ours("Packages", "var/lib/rpm/Packages");
        let want = rpm_qa("Packages", "bdb_ro");
        assert!(want.len() >= 3, "fixture has too few packages: {want:?}");
        assert_eq!(ours, want);
        assert!(ours.iter().any(|l| l.contains(" 7:")), "{ours:?}");
    }

    /// Fixtures with bytes flipped at pseudo-random places: errors or
    /// fewer packages, never a panic or a hang.
    #[test]
    fn mutated_fixtures_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (file, path) in [
            ("rpmdb.sqlite", "var/lib/rpm/rpmdb.sqlite"),
            ("Packages", "var/lib/rpm/Packages"),
        ] {
            let clean = std::fs::read(fixture_dir().join(file)).unwrap();
            let full = parse(path, &clean).unwrap().len();
            for round in 0..300 {
                let mut bytes = clean.clone();
                for _ in 0..1 + round % 8 {
                    let at = (next() as usize) % bytes.len();
                    // Mostly the first pages, where the structure is.
                    let at = if round % 2 == 0 { at % 8192 } else { at };
                    bytes[at] ^= (next() as u8) | 1;
                }
                if let Ok(p) = parse(path, &bytes) {
                    assert!(p.len() <= full + 1, "{file} round {round}");
                }
                let cut = (next() as usize) % bytes.len();
                let _ = parse(path, &bytes[..cut]);
            }
        }
    }
}
