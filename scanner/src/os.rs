//! OS detection: `os-release` (and the older release files) parsed, and the
//! OSV ecosystem an OS's packages are matched in (`Debian:12`,
//! `Ubuntu:22.04:LTS`, `Alpine:v3.19`, `Red Hat`, …).

use crate::Os;

/// The release files the layer walker keeps, in the order [`crate::image`]
/// falls back through them (`os-release` files first).
pub(crate) const RELEASE_FILES: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "etc/alpine-release",
    "etc/redhat-release",
    "etc/lsb-release",
    "etc/debian_version",
];

/// Whether `path` (normalised) is one of [`RELEASE_FILES`].
pub(crate) fn is_release_file(path: &str) -> bool {
    RELEASE_FILES.contains(&path)
}

/// Parses an os-release file (`KEY=value`, quoted or not).
pub fn parse_os_release(text: &str) -> Os {
    let mut os = Os::default();
    for (key, value) in shell_assignments(text) {
        match key {
            "ID" => os.id = value.to_ascii_lowercase(),
            "VERSION_ID" => os.version_id = value,
            "VERSION_CODENAME" => os.codename = value,
            "PRETTY_NAME" => os.pretty_name = value,
            _ => {}
        }
    }
    os
}

/// `KEY=value` lines of an os-release or lsb-release file, values unquoted
/// (double quotes with `\` escapes, single quotes literal). Comments, blank
/// and malformed lines are skipped.
fn shell_assignments(text: &str) -> impl Iterator<Item = (&str, String)> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (key, raw) = line.split_once('=')?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        Some((key, unquote(raw.trim())))
    })
}

fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                if !matches!(n, '"' | '\\' | '$' | '`') {
                                    out.push('\\');
                                }
                                out.push(n);
                            }
                        }
                        c => out.push(c),
                    }
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Parses one of [`RELEASE_FILES`] by its path; `None` for a file that says
/// nothing recognisable.
pub(crate) fn parse_release_file(path: &str, text: &str) -> Option<Os> {
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let os = match path {
        "etc/os-release" | "usr/lib/os-release" => parse_os_release(text),
        "etc/alpine-release" => Os {
            id: "alpine".into(),
            version_id: first_line?.to_string(),
            ..Os::default()
        },
        "etc/debian_version" => {
            let line = first_line?;
            let mut os = Os {
                id: "debian".into(),
                pretty_name: format!("Debian {line}"),
                ..Os::default()
            };
            if line.starts_with(|c: char| c.is_ascii_digit()) {
                os.version_id = line.to_string();
            } else {
                // `trixie/sid`: the codename of the next release.
                os.codename = line.split('/').next().unwrap_or_default().to_string();
            }
            os
        }
        "etc/lsb-release" => {
            let mut os = Os::default();
            for (key, value) in shell_assignments(text) {
                match key {
                    "DISTRIB_ID" => os.id = value.to_ascii_lowercase(),
                    "DISTRIB_RELEASE" => os.version_id = value,
                    "DISTRIB_CODENAME" => os.codename = value,
                    "DISTRIB_DESCRIPTION" => os.pretty_name = value,
                    _ => {}
                }
            }
            os
        }
        "etc/redhat-release" => parse_redhat_release(first_line?)?,
        _ => return None,
    };
    (!os.id.is_empty()).then_some(os)
}

/// `Red Hat Enterprise Linux release 8.9 (Ootpa)`, `Rocky Linux release
/// 9.3 (Blue Onyx)`, `CentOS Linux release 7.9.2009 (Core)`, …
fn parse_redhat_release(line: &str) -> Option<Os> {
    let (name, rest) = line.split_once(" release ")?;
    let version_id = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let codename = rest
        .split_once('(')
        .and_then(|(_, c)| c.split_once(')'))
        .map(|(c, _)| c.trim().to_string())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let id = [
        ("red hat", "rhel"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("centos", "centos"),
        ("fedora", "fedora"),
        ("oracle", "ol"),
        ("amazon", "amzn"),
    ]
    .iter()
    .find(|(needle, _)| lower.contains(needle))
    .map(|(_, id)| *id)?;
    Some(Os {
        id: id.into(),
        version_id,
        codename,
        pretty_name: line.to_string(),
    })
}

/// The OSV ecosystem of an OS's packages; `None` when Berth has no
/// vulnerability source for it (the scan is UNSUPPORTED_IMAGE).
pub fn ecosystem(os: &Os) -> Option<String> {
    match os.id.as_str() {
        "debian" => {
            let major = leading_number(&os.version_id)
                .or_else(|| debian_release_of_codename(&os.codename))?;
            Some(format!("Debian:{major}"))
        }
        "ubuntu" => {
            let mut parts = os.version_id.split('.');
            let year = parts.next().filter(|y| is_digits(y) && y.len() == 2)?;
            let month = parts.next().filter(|m| is_digits(m) && m.len() == 2)?;
            let lts = month == "04" && year.parse::<u32>().ok()? % 2 == 0;
            Some(format!(
                "Ubuntu:{year}.{month}{}",
                if lts { ":LTS" } else { "" }
            ))
        }
        "alpine" => {
            let mut parts = os.version_id.split('.');
            let major = parts.next().filter(|p| is_digits(p))?;
            let minor: String = parts
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!minor.is_empty()).then(|| format!("Alpine:v{major}.{minor}"))
        }
        "wolfi" => Some("Wolfi".into()),
        "chainguard" => Some("Chainguard".into()),
        "rhel" => Some("Red Hat".into()),
        // Their OSV records name the release (`Rocky Linux:9`); the
        // matcher also looks under the bare name.
        "rocky" => Some(with_major("Rocky Linux", &os.version_id)),
        "almalinux" => Some(with_major("AlmaLinux", &os.version_id)),
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "opensuse-microos" => {
            Some("openSUSE".into())
        }
        "sles" | "sled" | "sles_sap" | "sle-micro" => Some("SUSE".into()),
        // Other OSV ecosystems, by base name (their records append a release).
        "mageia" => Some("Mageia".into()),
        "openeuler" => Some("openEuler".into()),
        "azurelinux" => Some("Azure Linux".into()),
        "alpaquita" => Some("Alpaquita".into()),
        _ => None,
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `base:<major>` when `version_id` starts with a number, else `base`.
fn with_major(base: &str, version_id: &str) -> String {
    match leading_number(version_id) {
        Some(major) => format!("{base}:{major}"),
        None => base.to_string(),
    }
}

fn leading_number(version_id: &str) -> Option<u32> {
    let major = version_id.split('.').next()?;
    if is_digits(major) {
        major.parse().ok()
    } else {
        None
    }
}

fn debian_release_of_codename(codename: &str) -> Option<u32> {
    Some(match codename {
        "buster" => 10,
        "bullseye" => 11,
        "bookworm" => 12,
        "trixie" => 13,
        "forky" => 14,
        "duke" => 15,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(id: &str, version_id: &str, codename: &str) -> Os {
        Os {
            id: id.into(),
            version_id: version_id.into(),
            codename: codename.into(),
            pretty_name: String::new(),
        }
    }

    #[test]
    fn parses_debian_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                    VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\n\
                    ID=debian\nHOME_URL=\"https://www.debian.org/\"\n";
        let os = parse_os_release(text);
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id, "12");
        assert_eq!(os.codename, "bookworm");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(ecosystem(&os).as_deref(), Some("Debian:12"));
    }

    #[test]
    fn quoting_comments_and_junk() {
        let text = "# comment\n\n  ID='alpine'  \nVERSION_ID=\"3.19.1\"\nPRETTY_NAME=\"a \\\"q\\\" \\$x\"\n\
                    garbage line\n=novalue\nBAD KEY=1\nVERSION_CODENAME=\"unterminated\n";
        let os = parse_os_release(text);
        assert_eq!(os.id, "alpine");
        assert_eq!(os.version_id, "3.19.1");
        assert_eq!(os.pretty_name, "a \"q\" $x");
        assert_eq!(os.codename, "unterminated");
        assert_eq!(ecosystem(&os).as_deref(), Some("Alpine:v3.19"));
        // Hostile bytes never panic.
        let _ = parse_os_release("ID=\"\\");
        let _ = parse_os_release("ID='");
        let _ = parse_os_release("\u{0}=\u{0}\n=\n==\n");
    }

    #[test]
    fn ecosystems() {
        let cases = [
            (os("debian", "11", ""), Some("Debian:11")),
            (os("debian", "", "trixie"), Some("Debian:13")),
            (os("debian", "", "sid"), None),
            (os("debian", "", ""), None),
            (os("ubuntu", "22.04", "jammy"), Some("Ubuntu:22.04:LTS")),
            (os("ubuntu", "24.04", "noble"), Some("Ubuntu:24.04:LTS")),
            (os("ubuntu", "23.04", "lunar"), Some("Ubuntu:23.04")),
            (os("ubuntu", "23.10", "mantic"), Some("Ubuntu:23.10")),
            (os("ubuntu", "22.10", ""), Some("Ubuntu:22.10")),
            (os("ubuntu", "jammy", ""), None),
            (
                os("alpine", "3.20.0_alpha20240329", ""),
                Some("Alpine:v3.20"),
            ),
            (os("alpine", "3", ""), None),
            (os("alpine", "edge", ""), None),
            (os("wolfi", "20230201", ""), Some("Wolfi")),
            (os("chainguard", "", ""), Some("Chainguard")),
            (os("rhel", "9.3", ""), Some("Red Hat")),
            (os("rocky", "9.3", ""), Some("Rocky Linux:9")),
            (os("almalinux", "9.3", ""), Some("AlmaLinux:9")),
            (os("rocky", "", ""), Some("Rocky Linux")),
            (os("opensuse-leap", "15.5", ""), Some("openSUSE")),
            (os("sles", "15.5", ""), Some("SUSE")),
            (os("mageia", "9", ""), Some("Mageia")),
            (os("arch", "", ""), None),
            (os("", "", ""), None),
        ];
        for (os, want) in cases {
            assert_eq!(ecosystem(&os).as_deref(), want, "{os:?}");
        }
    }

    #[test]
    fn older_release_files() {
        let a = parse_release_file("etc/alpine-release", "3.19.1\n").unwrap();
        assert_eq!((a.id.as_str(), a.version_id.as_str()), ("alpine", "3.19.1"));
        let d = parse_release_file("etc/debian_version", "12.15\n").unwrap();
        assert_eq!((d.id.as_str(), d.version_id.as_str()), ("debian", "12.15"));
        assert_eq!(ecosystem(&d).as_deref(), Some("Debian:12"));
        let t = parse_release_file("etc/debian_version", "trixie/sid\n").unwrap();
        assert_eq!((t.version_id.as_str(), t.codename.as_str()), ("", "trixie"));
        let r = parse_release_file(
            "etc/redhat-release",
            "Red Hat Enterprise Linux release 8.9 (Ootpa)\n",
        )
        .unwrap();
        assert_eq!(
            (r.id.as_str(), r.version_id.as_str(), r.codename.as_str()),
            ("rhel", "8.9", "Ootpa")
        );
        let c = parse_release_file("etc/redhat-release", "CentOS Linux release 7.9.2009 (Core)")
            .unwrap();
        assert_eq!(c.id, "centos");
        let u = parse_release_file(
            "etc/lsb-release",
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n\
             DISTRIB_DESCRIPTION=\"Ubuntu 22.04.3 LTS\"\n",
        )
        .unwrap();
        assert_eq!(ecosystem(&u).as_deref(), Some("Ubuntu:22.04:LTS"));
        assert!(parse_release_file("etc/redhat-release", "whatever").is_none());
        assert!(parse_release_file("etc/alpine-release", "\n\n").is_none());
        assert!(parse_release_file("etc/os-release", "NAME=x").is_none());
        assert!(parse_release_file("etc/passwd", "root:x:0:0").is_none());
    }
}
