//! apk package database parser: `lib/apk/db/installed` (and Wolfi's
//! `usr/lib/apk/db/installed`), blocks of one-letter `K:value` lines
//! separated by blank lines. `P:` name, `V:` version, `A:` arch, `o:` origin
//! (the source package, which Alpine's advisories name).

use crate::{Package, PackageKind};

/// Whether `path` is an apk database.
pub(crate) fn is_db(path: &str) -> bool {
    path == "lib/apk/db/installed" || path == "usr/lib/apk/db/installed"
}

/// Parses an apk `installed` database; a block without `P:` or `V:` is
/// skipped.
pub fn parse(path: &str, bytes: &[u8]) -> Result<Vec<Package>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut packages = Vec::new();
    let mut block = Block::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(p) = std::mem::take(&mut block).package(path) {
                packages.push(p);
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "P" => block.name = Some(value.to_string()),
            "V" => block.version = Some(value.to_string()),
            "A" => block.arch = Some(value.to_string()),
            "o" => block.origin = Some(value.to_string()),
            _ => {}
        }
    }
    Ok(packages)
}

#[derive(Default)]
struct Block {
    name: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    origin: Option<String>,
}

impl Block {
    fn package(self, path: &str) -> Option<Package> {
        let name = self.name.filter(|n| !n.is_empty())?;
        let version = self.version.filter(|v| !v.is_empty())?;
        Some(Package {
            kind: PackageKind::Apk,
            name,
            version,
            source_name: self.origin.filter(|o| !o.is_empty()),
            source_version: None,
            arch: self.arch.filter(|a| !a.is_empty()),
            path: path.to_string(),
            layer: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
C:Q1sY3lIbNrVNtm5mjmURcEfQwjsA4=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407270
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705320063
c:0c8b8fdb2ef4f8a2ec41d05a4a3f3a6c0a1e2d4f
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1lvFR3A6Bl3bT6OvtzyXbg8uyqWA=

P:libcrypto3
V:3.1.4-r5
A:x86_64
o:openssl

P:noversion
A:x86_64

V:1.0
P:order-does-not-matter
";

    #[test]
    fn parses_blocks() {
        let pkgs = parse("lib/apk/db/installed", SAMPLE.as_bytes()).unwrap();
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source_name.as_deref(),
                    p.arch.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("musl", "1.2.4_git20230717-r4", Some("musl"), Some("x86_64")),
                ("libcrypto3", "3.1.4-r5", Some("openssl"), Some("x86_64")),
                ("order-does-not-matter", "1.0", None, None),
            ]
        );
        assert!(pkgs.iter().all(|p| p.kind == PackageKind::Apk));
        assert!(is_db("usr/lib/apk/db/installed"));
        assert!(!is_db("lib/apk/db/triggers"));
    }

    #[test]
    fn hostile_input_never_panics() {
        for input in [
            &b""[..],
            b"\n\n",
            b"P:\nV:\n",
            b"\xff\xfeP:x\nV:1",
            b":\n:::\nP",
        ] {
            let _ = parse("lib/apk/db/installed", input).unwrap();
        }
        // CRLF endings and no trailing newline.
        let p = parse(
            "lib/apk/db/installed",
            b"P:a\r\nV:1-r0\r\n\r\nP:b\r\nV:2-r0",
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].version, "1-r0");
    }
}
