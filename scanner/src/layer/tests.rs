//! Layer walking tests: tars built here with the `tar` crate, hostile
//! streams generated lazily.

use super::*;
use crate::image;
use std::io::Cursor;

/// A tar written entry by entry, with raw names where a test needs them
/// (`./x`, `/x`, `../x`), which the `tar` crate's path setters refuse.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn raw(&mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Symlink {
            0o777
        } else {
            0o644
        });
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, "", data.as_bytes())
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Symlink, target, b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Link, target, b"")
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Directory, "", b"")
    }

    /// A file whose name goes in a PAX `path` record (the header holds a
    /// truncated name).
    fn pax_file(&mut self, name: &str, data: &str) -> &mut Self {
        self.0
            .append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        self.file("truncated-name", data)
    }

    /// A file with a long name as the `tar` crate writes it (GNU longname).
    fn long_file(&mut self, name: &str, data: &str) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        self.0.append_data(&mut h, name, data.as_bytes()).unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn scan(tar: &[u8]) -> LayerScan {
    scan_layer(Cursor::new(tar), Compression::None, &Limits::default()).unwrap()
}

const STATUS: &str = "var/lib/dpkg/status";

fn status(pkgs: &[(&str, &str)]) -> String {
    pkgs.iter()
        .map(|(n, v)| format!("Package: {n}\nStatus: install ok installed\nVersion: {v}\n\n"))
        .collect()
}

const DEBIAN: &str = "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";

fn names(inv: &crate::Inventory) -> Vec<String> {
    inv.packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

#[test]
fn media_types() {
    use Compression::*;
    for (mt, want) in [
        ("application/vnd.oci.image.layer.v1.tar", Some(None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            Some(None),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Some(Zstd),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            Option::None,
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            Option::None,
        ),
        ("application/vnd.oci.image.config.v1+json", Option::None),
        ("", Option::None),
    ] {
        assert_eq!(Compression::for_media_type(mt), want, "{mt}");
    }
}

#[test]
fn name_normalisation() {
    assert_eq!(
        normalise(b"./etc/os-release").as_deref(),
        Some("etc/os-release")
    );
    assert_eq!(
        normalise(b"/etc//os-release").as_deref(),
        Some("etc/os-release")
    );
    assert_eq!(
        normalise(b"etc/./os-release/").as_deref(),
        Some("etc/os-release")
    );
    assert_eq!(normalise(b"../../etc/passwd"), Option::None);
    assert_eq!(normalise(b"etc/../../etc/os-release"), Option::None);
    assert_eq!(normalise(b"./"), Option::None);
    assert_eq!(normalise(b""), Option::None);
}

#[test]
fn facts_whiteouts_and_prefixes() {
    let tar = Tar::new()
        .dir("./")
        .dir("./etc/")
        .file("./etc/os-release", DEBIAN)
        .file("/var/lib/dpkg/status", &status(&[("bash", "5.2.15-2+b13")]))
        .file("usr/bin/ls", "\x7fELF not interesting")
        .file("etc/.wh.motd", "")
        .file("./usr/.wh.games", "")
        .file("/opt/app/.wh..wh..opq", "")
        .file(".wh.srv", "")
        .file("./.wh..wh..opq", "")
        .file("etc/.wh..wh.plnk", "")
        .bytes();
    let s = scan(&tar);
    assert_eq!(
        s.facts.keys().collect::<Vec<_>>(),
        ["etc/os-release", STATUS]
    );
    assert_eq!(s.whiteouts, ["etc/motd", "usr/games", "srv"]);
    assert_eq!(s.opaque_dirs, ["opt/app", ""]);
    assert_eq!(s.entries, 11);
    assert_eq!(s.uncompressed_bytes, tar.len() as u64);
    match &s.facts["etc/os-release"] {
        Fact::OsRelease { os } => assert_eq!(os.version_id, "12"),
        other => panic!("{other:?}"),
    }
}

/// Every whiteout rule, end to end: tars → scan_layer → image::merge.
#[test]
fn whiteout_rules_across_layers() {
    let l1 = scan(
        &Tar::new()
            .file("etc/os-release", DEBIAN)
            .file(STATUS, &status(&[("a", "1"), ("b", "1")]))
            .file("lib/apk/db/installed", "P:musl\nV:1.2.4-r1\no:musl\n")
            .file(
                "var/lib/dpkg/status.d/zlib1g",
                "Package: zlib1g\nVersion: 1:1.2.13\n",
            )
            .file(
                "var/lib/dpkg/status.d/libc6",
                "Package: libc6\nVersion: 2.36-9\n",
            )
            .bytes(),
    );
    // Layer 2: a `.wh.` file (apk db), a `.wh.` dir (status.d) re-created
    // in the same layer with one entry, an opaque var/lib/dpkg with a
    // same-layer sibling (a new status).
    let l2 = scan(
        &Tar::new()
            .file("lib/apk/db/.wh.installed", "")
            .file(
                "var/lib/dpkg/status.d/libc6",
                "Package: libc6\nVersion: 2.36-10\n",
            )
            .file(STATUS, &status(&[("a", "2")]))
            .file("var/lib/dpkg/.wh..wh..opq", "")
            .file("var/lib/dpkg/.wh.status.d", "")
            .bytes(),
    );
    let inv = image::merge(&[("L1", &l1), ("L2", &l2)]);
    assert_eq!(names(&inv), ["a=2", "libc6=2.36-10"]);
    assert_eq!(inv.os.as_ref().unwrap().id, "debian");
    // Layer 3 whites out the status file; layer 4 re-creates it.
    let l3 = scan(&Tar::new().file("./var/lib/dpkg/.wh.status", "").bytes());
    let inv = image::merge(&[("L1", &l1), ("L2", &l2), ("L3", &l3)]);
    assert_eq!(names(&inv), ["libc6=2.36-10"]);
    let l4 = scan(
        &Tar::new()
            .file("/var/lib/dpkg/status", &status(&[("c", "3")]))
            .bytes(),
    );
    let inv = image::merge(&[("L1", &l1), ("L2", &l2), ("L3", &l3), ("L4", &l4)]);
    assert_eq!(names(&inv), ["c=3", "libc6=2.36-10"]);
    let layers: Vec<_> = inv.packages.iter().map(|p| p.layer.as_deref()).collect();
    assert_eq!(layers, [Some("L4"), Some("L2")]);
    // A whiteout of a whole directory tree.
    let l5 = scan(&Tar::new().file("var/.wh.lib", "").bytes());
    let inv = image::merge(&[("L1", &l1), ("L5", &l5)]);
    assert_eq!(names(&inv), ["musl=1.2.4-r1"]);
}

#[test]
fn distroless_status_d() {
    let tar = Tar::new()
        .file(
            "etc/os-release",
            "PRETTY_NAME=\"Distroless\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .file(
            "var/lib/dpkg/status.d/base-files",
            "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
        )
        .file(
            "var/lib/dpkg/status.d/libsystemd0",
            "Package: libsystemd0\nSource: systemd\nVersion: 252.39-1~deb12u2\n",
        )
        .file(
            "var/lib/dpkg/status.d/libsystemd0.md5sums",
            "abc  usr/lib/x\n",
        )
        .bytes();
    let inv = image::merge(&[("L", &scan(&tar))]);
    assert_eq!(
        names(&inv),
        ["base-files=12.4+deb12u5", "libsystemd0=252.39-1~deb12u2"]
    );
    assert_eq!(inv.packages[1].source_name.as_deref(), Some("systemd"));
    assert_eq!(
        crate::os::ecosystem(inv.os.as_ref().unwrap()).as_deref(),
        Some("Debian:12")
    );
}

#[test]
fn symlinked_os_release_and_long_names() {
    let long_dir = format!("usr/{}/", "d".repeat(120));
    let tar = Tar::new()
        .symlink("./etc/os-release", "../usr/lib/os-release")
        .pax_file("./usr/lib/os-release", DEBIAN)
        .long_file(&format!("{long_dir}x"), "uninteresting")
        .pax_file(&format!("{long_dir}.wh.y"), "")
        .bytes();
    let s = scan(&tar);
    assert_eq!(
        s.facts.get("etc/os-release"),
        Some(&Fact::Symlink {
            target: "../usr/lib/os-release".into()
        })
    );
    assert!(matches!(
        s.facts.get("usr/lib/os-release"),
        Some(Fact::OsRelease { .. })
    ));
    assert_eq!(s.whiteouts, [format!("{long_dir}y")]);
    let inv = image::merge(&[("L", &s)]);
    assert_eq!(inv.os.unwrap().codename, "bookworm");
    // A symlink loop at etc/os-release: no OS, no hang.
    let looped = scan(
        &Tar::new()
            .symlink("etc/os-release", "../usr/lib/os-release")
            .symlink("usr/lib/os-release", "/etc/os-release")
            .bytes(),
    );
    assert_eq!(image::merge(&[("L", &looped)]).os, Option::None);
    let self_loop = scan(&Tar::new().symlink("etc/os-release", "os-release").bytes());
    assert_eq!(image::merge(&[("L", &self_loop)]).os, Option::None);
}

#[test]
fn hardlinks() {
    let tar = Tar::new()
        .file("var/lib/dpkg/status-old", "not kept")
        .file("var/lib/dpkg/status.d/a", "Package: a\nVersion: 1\n")
        // A link to a file kept earlier in this layer: same content.
        .hardlink("./var/lib/dpkg/status.d/b", "var/lib/dpkg/status.d/a")
        // A link to a file that was not kept: nothing.
        .hardlink(STATUS, "var/lib/dpkg/status-old")
        // A link to a file that comes later: nothing.
        .hardlink("var/lib/dpkg/status.d/c", "var/lib/dpkg/status.d/d")
        .file("var/lib/dpkg/status.d/d", "Package: d\nVersion: 1\n")
        // A link escaping the root: nothing.
        .hardlink("etc/os-release", "../../etc/os-release")
        .bytes();
    let s = scan(&tar);
    assert_eq!(
        s.facts.keys().collect::<Vec<_>>(),
        [
            "var/lib/dpkg/status.d/a",
            "var/lib/dpkg/status.d/b",
            "var/lib/dpkg/status.d/d"
        ]
    );
    match &s.facts["var/lib/dpkg/status.d/b"] {
        Fact::Packages { packages } => {
            assert_eq!(packages[0].name, "a");
            assert_eq!(packages[0].path, "var/lib/dpkg/status.d/b");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_traversal_names_are_ignored() {
    let tar = Tar::new()
        .file("../../etc/os-release", "ID=evil\n")
        .file("etc/../../var/lib/dpkg/status", &status(&[("evil", "1")]))
        .file("../etc/.wh.os-release", "")
        .file("etc/.wh..", "")
        .file("etc/.wh..wh..opq/../x", "")
        .symlink("etc/os-release", "../../../../../../etc/passwd")
        .bytes();
    let s = scan(&tar);
    assert_eq!(s.facts.len(), 1);
    assert!(s.whiteouts.is_empty());
    assert!(s.opaque_dirs.is_empty());
    // The symlink resolves inside the root, where nothing is.
    assert_eq!(image::merge(&[("L", &s)]).os, Option::None);
}

#[test]
fn gzip_zstd_and_plain_agree() {
    let tar = Tar::new()
        .file("etc/os-release", DEBIAN)
        .file(
            STATUS,
            &status(&[("bash", "5.2.15-2+b13"), ("zlib1g", "1:1.2.13")]),
        )
        .bytes();
    let plain = scan(&tar);
    let gz = scan_layer(
        Cursor::new(gzip(&tar)),
        Compression::Gzip,
        &Limits::default(),
    )
    .unwrap();
    let zst = zstd::encode_all(Cursor::new(&tar), 3).unwrap();
    let zs = scan_layer(Cursor::new(zst), Compression::Zstd, &Limits::default()).unwrap();
    assert_eq!(plain.facts.len(), 2);
    assert_eq!(plain, gz);
    assert_eq!(plain, zs);
    assert_eq!(gz.uncompressed_bytes, tar.len() as u64);
}

/// 10 GiB of zeros behind a tar header, gzip-compressed as it is read:
/// nothing is allocated, and max_uncompressed stops it.
#[test]
fn gzip_bomb_stops_at_max_uncompressed() {
    let mut h = tar::Header::new_ustar();
    h.set_path("zeros").unwrap();
    h.set_size(10 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let stream = Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0).take(10 << 30));
    let bomb = flate2::read::GzEncoder::new(stream, flate2::Compression::fast());
    let limits = Limits {
        max_uncompressed: 16 << 20,
        ..Limits::default()
    };
    match scan_layer(bomb, Compression::Gzip, &limits) {
        Err(LayerError::Limit(msg)) => assert!(msg.contains("max_uncompressed"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // A bomb after the end of the archive is stopped too.
    let mut tar = Tar::new().file("etc/os-release", DEBIAN).bytes();
    tar.extend(std::iter::repeat_n(0u8, 1 << 20));
    let bomb = flate2::read::GzEncoder::new(
        Cursor::new(tar).chain(io::repeat(0).take(10 << 30)),
        flate2::Compression::fast(),
    );
    assert!(matches!(
        scan_layer(bomb, Compression::Gzip, &limits),
        Err(LayerError::Limit(_))
    ));
}

#[test]
fn truncated_and_corrupt_streams() {
    let big: String = status(&[("bash", "5")]).repeat(2000);
    let tar = Tar::new()
        .file("etc/os-release", DEBIAN)
        .file(STATUS, &big)
        .file("usr/share/doc/x", &"y".repeat(100_000))
        .bytes();
    let gz = gzip(&tar);
    let err = scan_layer(
        Cursor::new(&gz[..gz.len() / 2]),
        Compression::Gzip,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
    // A gzip stream cut just before its CRC trailer.
    let err = scan_layer(
        Cursor::new(&gz[..gz.len() - 4]),
        Compression::Gzip,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
    // Garbage in the middle of the deflate stream.
    let mut bad = gz.clone();
    for b in &mut bad[gz.len() / 3..gz.len() / 3 + 64] {
        *b ^= 0x5a;
    }
    let err = scan_layer(Cursor::new(bad), Compression::Gzip, &Limits::default()).unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
    // Not gzip at all.
    let err = scan_layer(Cursor::new(&tar), Compression::Gzip, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    // Truncated zstd.
    let zst = zstd::encode_all(Cursor::new(&tar), 3).unwrap();
    let err = scan_layer(
        Cursor::new(&zst[..zst.len() / 2]),
        Compression::Zstd,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
    // A corrupt tar header (checksum mismatch) in the second entry.
    let mut bad = tar.clone();
    let second = 512 + DEBIAN.len().div_ceil(512) * 512;
    bad[second + 10] ^= 0xff;
    let err = scan_layer(Cursor::new(bad), Compression::None, &Limits::default()).unwrap_err();
    match err {
        LayerError::Corrupt(msg) => assert!(msg.starts_with("tar:"), "{msg}"),
        other => panic!("{other}"),
    }
    // A plain tar cut inside an entry.
    let err = scan_layer(
        Cursor::new(&tar[..tar.len() / 2]),
        Compression::None,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
}

#[test]
fn source_errors_are_io() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "blob store went away",
            ))
        }
    }
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let err = scan_layer(Failing, c, &Limits::default()).unwrap_err();
        assert!(matches!(err, LayerError::Io(_)), "{c:?}: {err}");
    }
}

/// A 200 MiB metadata file is refused by its header's size, before any of
/// it is read (its content is generated lazily, never allocated).
#[test]
fn oversized_metadata_file_is_refused() {
    let size: u64 = 200 << 20;
    let mut h = tar::Header::new_ustar();
    h.set_path(STATUS).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let layer = Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(b'a').take(size));
    match scan_layer(layer, Compression::None, &Limits::default()) {
        Err(LayerError::Limit(msg)) => {
            assert!(msg.contains(STATUS) && msg.contains("max_file"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn entry_and_package_limits() {
    let tar = Tar::new().file("a", "").file("b", "").file("c", "").bytes();
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let err = scan_layer(Cursor::new(&tar), Compression::None, &limits).unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
    let tar = Tar::new()
        .file(STATUS, &status(&[("a", "1"), ("b", "1"), ("c", "1")]))
        .bytes();
    let limits = Limits {
        max_packages: 2,
        ..Limits::default()
    };
    let err = scan_layer(Cursor::new(&tar), Compression::None, &limits).unwrap_err();
    assert!(err.to_string().contains("max_packages"), "{err}");
    // A corrupt OS package database fails the layer, naming it.
    let tar = Tar::new().file("var/lib/rpm/rpmdb.sqlite", "junk").bytes();
    match scan_layer(Cursor::new(&tar), Compression::None, &Limits::default()) {
        Err(LayerError::Corrupt(msg)) => {
            assert!(msg.starts_with("var/lib/rpm/rpmdb.sqlite"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

/// The real rpmdb fixture, read out of a layer.
#[test]
fn rpmdb_in_a_layer() {
    let db = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm/rpmdb.sqlite"),
    )
    .unwrap();
    let mut t = Tar::new();
    t.file("etc/os-release", "ID=\"rhel\"\nVERSION_ID=\"9.3\"\n");
    t.raw(
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        tar::EntryType::Regular,
        "",
        &db,
    );
    let inv = image::merge(&[("L", &scan(&t.bytes()))]);
    assert!(
        inv.packages
            .iter()
            .any(|p| p.name == "berth-epoch" && p.version == "7:1.2.3-4.el9")
    );
    assert!(
        inv.packages
            .iter()
            .all(|p| p.kind == crate::PackageKind::Rpm)
    );
    assert_eq!(
        crate::os::ecosystem(inv.os.as_ref().unwrap()).as_deref(),
        Some("Red Hat")
    );
}

/// 300 MiB of uninteresting file content streams through without being
/// buffered: every byte is counted as read, the files after it are still
/// found, and the process's peak memory stays far below the layer's size.
#[test]
fn big_uninteresting_files_stream() {
    let chunk: u64 = 100 << 20;
    let mut parts: Vec<Box<dyn Read>> = Vec::new();
    for i in 0..3 {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("usr/share/big{i}")).unwrap();
        h.set_size(chunk);
        h.set_mode(0o644);
        h.set_cksum();
        parts.push(Box::new(Cursor::new(h.as_bytes().to_vec())));
        parts.push(Box::new(io::repeat(7).take(chunk)));
    }
    let tail = Tar::new().file("etc/os-release", DEBIAN).bytes();
    let tail_len = tail.len() as u64;
    parts.push(Box::new(Cursor::new(tail)));
    let layer = parts
        .into_iter()
        .reduce(|a, b| Box::new(a.chain(b)))
        .unwrap();
    let s = scan_layer(layer, Compression::None, &Limits::default()).unwrap();
    assert_eq!(s.uncompressed_bytes, 3 * (512 + chunk) + tail_len);
    assert_eq!(s.entries, 4);
    assert!(s.facts.contains_key("etc/os-release"));
    if let Some(peak) = peak_rss_kib() {
        eprintln!("peak RSS {peak} KiB");
        assert!(peak < 96 << 10, "peak RSS {peak} KiB");
    }
}

/// VmHWM of this process (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A GNU long name entry claiming 10 GiB is refused by its size, not read
/// into memory (the `tar` crate alone would buffer it whole).
#[test]
fn huge_extension_headers_are_refused() {
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
    ] {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(kind);
        h.set_size(10 << 30);
        h.set_cksum();
        let layer = Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(b'a').take(10 << 30));
        match scan_layer(layer, Compression::None, &Limits::default()) {
            Err(LayerError::Corrupt(msg)) => assert!(msg.contains("bytes (more than"), "{msg}"),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
    // Extension headers with no entry after them.
    let mut t = Tar::new();
    t.0.append_pax_extensions([("path", &b"etc/os-release"[..])])
        .unwrap();
    let err = scan_layer(
        Cursor::new(t.bytes()),
        Compression::None,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no entry after"), "{err}");
}

/// Go's archive/tar writes files over 8 GiB with a PAX `size` and 0 in the
/// header: the content is skipped and the entries after it still found.
#[test]
fn pax_size_larger_than_header() {
    let size: u64 = (1 << 30) + 3;
    let mut t = Tar::new();
    t.0.append_pax_extensions([("size", size.to_string().as_bytes())])
        .unwrap();
    t.raw("usr/share/huge", tar::EntryType::Regular, "", b"");
    let head = t.bytes();
    // The builder ended the archive: drop its two zero blocks.
    let head = head[..head.len() - 1024].to_vec();
    let tail = Tar::new().file("etc/os-release", DEBIAN).bytes();
    let padded = size.div_ceil(512) * 512;
    let layer = Cursor::new(head.clone())
        .chain(io::repeat(0).take(padded))
        .chain(Cursor::new(tail.clone()));
    let s = scan_layer(layer, Compression::None, &Limits::default()).unwrap();
    assert!(s.facts.contains_key("etc/os-release"), "{s:?}");
    assert_eq!(s.entries, 2);
    assert_eq!(
        s.uncompressed_bytes,
        head.len() as u64 + padded + tail.len() as u64
    );
    // An absurd PAX size: an error, not an overflow.
    let mut t = Tar::new();
    t.0.append_pax_extensions([("size", u64::MAX.to_string().as_bytes())])
        .unwrap();
    t.raw("usr/share/x", tar::EntryType::Regular, "", b"");
    let err = scan_layer(
        Cursor::new(t.bytes()),
        Compression::None,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err}");
    // The same at a metadata path is over max_file.
    let mut t = Tar::new();
    t.0.append_pax_extensions([("size", size.to_string().as_bytes())])
        .unwrap();
    t.raw(STATUS, tar::EntryType::Regular, "", b"");
    match scan_layer(
        Cursor::new(t.bytes()),
        Compression::None,
        &Limits::default(),
    ) {
        Err(LayerError::Limit(msg)) => assert!(msg.contains(STATUS), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn kept_names_are_bounded() {
    let mut t = Tar::new();
    for i in 0..200 {
        t.file(&format!("{}/.wh.f{i}", "d".repeat(90)), "");
    }
    let limits = Limits {
        max_file: 8 << 10,
        ..Limits::default()
    };
    let err = scan_layer(Cursor::new(t.bytes()), Compression::None, &limits).unwrap_err();
    assert!(err.to_string().contains("whiteouts and symlinks"), "{err}");
    // Names past PATH_MAX are not kept at all.
    let mut t = Tar::new();
    t.pax_file(&format!("{}/.wh.x", "d/".repeat(3000)), "");
    let s = scan_layer(
        Cursor::new(t.bytes()),
        Compression::None,
        &Limits::default(),
    )
    .unwrap();
    assert!(s.whiteouts.is_empty());
    assert_eq!(s.entries, 1);
}

/// Layers with bytes flipped at pseudo-random places, through every
/// decompressor: an error or a scan, never a panic.
#[test]
fn mutated_layers_never_panic() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut t = Tar::new();
    t.file("etc/os-release", DEBIAN)
        .file(STATUS, &status(&[("a", "1"), ("b", "2")]))
        .symlink("usr/lib/os-release", "../../etc/os-release")
        .hardlink("var/lib/dpkg/status.d/x", STATUS)
        .pax_file(&format!("{}/.wh.y", "p".repeat(150)), "")
        .long_file(&format!("{}/z", "q".repeat(150)), "zz")
        .file("lib/apk/db/installed", "P:musl\nV:1\n");
    let tar = t.bytes();
    let gz = gzip(&tar);
    let zst = zstd::encode_all(Cursor::new(&tar), 3).unwrap();
    for (clean, c) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        for round in 0..200 {
            let mut bytes = clean.clone();
            for _ in 0..1 + round % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= (next() as u8) | 1;
            }
            let _ = scan_layer(Cursor::new(&bytes), c, &Limits::default());
            let cut = (next() as usize) % bytes.len();
            let _ = scan_layer(Cursor::new(&bytes[..cut]), c, &Limits::default());
        }
    }
}
