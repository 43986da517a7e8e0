//! Go binaries: the build info the Go linker embeds (`.go.buildinfo` in
//! ELF, `__go_buildinfo` in Mach-O, else wherever the magic
//! `\xff Go buildinf:` sits in the file). Both layouts: Go ≥ 1.18's inline
//! strings (varint lengths) and the older pointers to `runtime.buildVersion`
//! and `runtime.modinfo`, resolved through the file's sections.
//!
//! Reported as Trivy does: `stdlib` at `v<go version>`, the main module
//! (a `(devel)` version is replaced by a semver `-X …version=` ldflag, else
//! the module is skipped), and every dependency, a replacement winning.

use object::{Object, ObjectSection};

use super::{LangError, package};
use crate::{Package, PackageKind};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER: usize = 32;
/// Bytes read for one string through the pointer layout.
const MAX_STRING: u64 = 16 << 20;

pub(super) fn parse_binary(
    path: &str,
    bytes: &[u8],
    file: &object::File<'_>,
) -> Result<Vec<Package>, LangError> {
    let Some(header) = find_header(bytes, file) else {
        return Ok(Vec::new());
    };
    let (version, modinfo) = read_strings(path, header, file)?;
    Ok(packages(path, &version, &modinfo))
}

/// The 32-byte header and what follows it.
fn find_header<'a>(bytes: &'a [u8], file: &object::File<'a>) -> Option<&'a [u8]> {
    for name in [".go.buildinfo", "__go_buildinfo"] {
        if let Some(section) = file.section_by_name(name)
            && let Ok(data) = section.data()
            && data.starts_with(MAGIC)
        {
            return Some(data);
        }
    }
    // PE and older binaries: the magic in a data section, 16-byte aligned
    // in the file as the linker aligns it; search the whole file — for an
    // ELF only when it is a Go program at all (most executables are not).
    if file.format() == object::BinaryFormat::Elf
        && file.section_by_name(".note.go.buildid").is_none()
        && file.section_by_name(".gopclntab").is_none()
    {
        return None;
    }
    let mut from = 0;
    while let Some(i) = find(bytes.get(from..)?, MAGIC) {
        let at = from + i;
        if at % 16 == 0 {
            return bytes.get(at..);
        }
        from = at + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Go's version string and the module info (sentinels removed; empty when
/// the binary was built without module support).
fn read_strings(
    path: &str,
    data: &[u8],
    file: &object::File<'_>,
) -> Result<(String, String), LangError> {
    let bad = |m: &str| LangError::malformed(path, format!("Go build info: {m}"));
    if data.len() < HEADER {
        return Err(bad("truncated header"));
    }
    let ptr_size = usize::from(data[14]);
    let flags = data[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let rest = &data[HEADER..];
        let (version, rest) = varint_string(rest).ok_or_else(|| bad("bad version string"))?;
        let (modinfo, _) = varint_string(rest).ok_or_else(|| bad("bad modinfo string"))?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(bad("bad pointer size"));
        }
        let big = flags & 1 != 0;
        let version_ptr = read_uint(&data[16..], ptr_size, big).ok_or_else(|| bad("truncated"))?;
        let modinfo_ptr = read_uint(data.get(16 + ptr_size..).unwrap_or(&[]), ptr_size, big)
            .ok_or_else(|| bad("truncated"))?;
        let version = read_go_string(file, version_ptr, ptr_size, big)
            .ok_or_else(|| bad("unreadable version pointer"))?;
        let modinfo = read_go_string(file, modinfo_ptr, ptr_size, big).unwrap_or_default();
        (version, modinfo)
    };
    let version = String::from_utf8_lossy(&version).into_owned();
    // Module info sits between two 16-byte sentinels, the first ending
    // a line.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]).into_owned()
    } else {
        String::new()
    };
    Ok((version, modinfo))
}

/// A uvarint length, then that many bytes.
fn varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = *data.get(i)?;
        i += 1;
        if shift >= 64 {
            return None;
        }
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let len = usize::try_from(len).ok()?;
    let end = i.checked_add(len)?;
    Some((data.get(i..end)?, data.get(end..)?))
}

fn read_uint(data: &[u8], size: usize, big: bool) -> Option<u64> {
    let b = data.get(..size)?;
    let mut v = 0u64;
    for i in 0..size {
        let byte = if big { b[i] } else { b[size - 1 - i] };
        v = (v << 8) | u64::from(byte);
    }
    Some(v)
}

/// `size` bytes at virtual address `addr`, from the section holding them.
fn read_at<'a>(file: &object::File<'a>, addr: u64, size: u64) -> Option<&'a [u8]> {
    for section in file.sections() {
        let start = section.address();
        let end = start.checked_add(section.size())?;
        if addr >= start && addr.checked_add(size)? <= end {
            let data = section.data().ok()?;
            let off = usize::try_from(addr - start).ok()?;
            return data.get(off..off.checked_add(usize::try_from(size).ok()?)?);
        }
    }
    None
}

/// A Go string header (data pointer, length) at `addr`, and its bytes.
fn read_go_string(file: &object::File<'_>, addr: u64, ptr: usize, big: bool) -> Option<Vec<u8>> {
    let header = read_at(file, addr, 2 * ptr as u64)?;
    let data = read_uint(header, ptr, big)?;
    let len = read_uint(header.get(ptr..)?, ptr, big)?;
    if len > MAX_STRING {
        return None;
    }
    Some(read_at(file, data, len)?.to_vec())
}

/// The packages build info lists.
fn packages(path: &str, go_version: &str, modinfo: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let go = go_version.split_whitespace().next().unwrap_or("");
    if let Some(v) = go.strip_prefix("go")
        && v.starts_with(|c: char| c.is_ascii_digit())
    {
        out.push(package(PackageKind::Go, "stdlib", &format!("v{v}"), path));
    }
    let mut main: Option<(&str, &str)> = None;
    let mut ldflags = None;
    // (path, version) of each dep, the last one replaced by a `=>` line.
    let mut deps: Vec<(&str, &str)> = Vec::new();
    let mut last_was_dep = false;
    for line in modinfo.lines() {
        let mut f = line.split('\t');
        match f.next() {
            Some("mod") => {
                main = Some((f.next().unwrap_or(""), f.next().unwrap_or("")));
                last_was_dep = false;
            }
            Some("dep") => {
                deps.push((f.next().unwrap_or(""), f.next().unwrap_or("")));
                last_was_dep = true;
            }
            Some("=>") => {
                if last_was_dep && let Some(d) = deps.last_mut() {
                    *d = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                }
                last_was_dep = false;
            }
            Some("build") => {
                if let Some(v) = line.strip_prefix("build\t-ldflags=") {
                    ldflags = Some(v);
                }
                last_was_dep = false;
            }
            _ => last_was_dep = false,
        }
    }
    if let Some((p, v)) = main
        && !p.is_empty()
    {
        let v = if v == "(devel)" || v.is_empty() {
            ldflags.and_then(version_from_ldflags).unwrap_or("")
        } else {
            v
        };
        if !v.is_empty() {
            out.push(package(PackageKind::Go, p, v, path));
        }
    }
    for (p, v) in deps {
        // A local-directory replacement has no version: nothing to match.
        if !p.is_empty() && !v.is_empty() && v != "(devel)" {
            out.push(package(PackageKind::Go, p, v, path));
        }
    }
    out
}

/// The value of a `-X <pkg>.version=<semver>` (or `.ver`) linker flag.
fn version_from_ldflags(flags: &str) -> Option<&str> {
    let flags = flags.trim_matches(|c| c == '"' || c == '\'');
    let mut words = flags.split_whitespace();
    while let Some(w) = words.next() {
        let x = match w.trim_start_matches('-') {
            "X" => words.next()?,
            other => match other.strip_prefix("X=") {
                Some(x) => x,
                None => continue,
            },
        };
        let x = x.trim_matches(|c| c == '"' || c == '\'');
        let Some((key, value)) = x.split_once('=') else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if (key.ends_with(".version") || key.ends_with(".ver")) && is_semver(value) {
            return Some(value);
        }
    }
    None
}

/// Go's `semver.IsValid`, with the leading `v` optional.
fn is_semver(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let num = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if parts.is_empty() || parts.len() > 3 || !parts.iter().all(|p| num(p)) {
        return false;
    }
    if (pre.is_some() || build.is_some()) && parts.len() != 3 {
        return false;
    }
    pre.is_none_or(ident) && build.is_none_or(ident)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The modinfo string as the linker wraps it.
    pub(crate) fn wrap_modinfo(body: &str) -> Vec<u8> {
        let mut m = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        m.extend_from_slice(body.as_bytes());
        m.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        m
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// An inline (Go ≥ 1.18) build info blob.
    pub(crate) fn inline_blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(HEADER, 0);
        varint(version.len(), &mut b);
        b.extend_from_slice(version.as_bytes());
        varint(modinfo.len(), &mut b);
        b.extend_from_slice(modinfo);
        b
    }

    fn nv(p: &[Package]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    const MODINFO: &str = "path\texample.com/app/cmd/app\nmod\texample.com/app\tv1.4.0\th1:x=\ndep\tgolang.org/x/net\tv0.17.0\th1:y=\ndep\tgithub.com/old/pkg\tv1.0.0\th1:z=\n=>\tgithub.com/new/pkg\tv1.0.1\th1:w=\ndep\texample.com/local\tv0.0.0\n=>\t./local\t\nbuild\t-compiler=gc\n";

    #[test]
    fn modinfo_lines() {
        let p = packages("usr/bin/app", "go1.21.3", MODINFO);
        assert_eq!(
            nv(&p),
            [
                "stdlib@v1.21.3",
                "example.com/app@v1.4.0",
                "golang.org/x/net@v0.17.0",
                "github.com/new/pkg@v1.0.1"
            ]
        );
        assert!(
            p.iter()
                .all(|p| p.kind == PackageKind::Go && p.path == "usr/bin/app")
        );
        // Experiments after the version; devel toolchains have no stdlib.
        assert_eq!(
            nv(&packages("a", "go1.22.0 X:boringcrypto", "")),
            ["stdlib@v1.22.0"]
        );
        assert!(packages("a", "devel go1.23-abc", "").is_empty());
    }

    #[test]
    fn devel_main_module() {
        let m = "path\tx/cmd\nmod\tx\t(devel)\t\nbuild\t-ldflags=\"-s -w -X x/pkg/version.ver=0.76.0\"\n";
        assert_eq!(
            nv(&packages("a", "go1.21.0", m)),
            ["stdlib@v1.21.0", "x@0.76.0"]
        );
        let m = "path\tx/cmd\nmod\tx\t(devel)\t\nbuild\t-ldflags=-X main.commit=abc -X=main.Version=v2.1.0-rc.1\n";
        assert_eq!(
            nv(&packages("a", "go1.21.0", m)),
            ["stdlib@v1.21.0", "x@v2.1.0-rc.1"]
        );
        let m = "path\tx/cmd\nmod\tx\t(devel)\t\nbuild\t-ldflags=-X main.version=dev\n";
        assert_eq!(nv(&packages("a", "go1.21.0", m)), ["stdlib@v1.21.0"]);
    }

    #[test]
    fn semver() {
        for ok in [
            "v1.2.3",
            "1.2.3",
            "v1",
            "v1.2",
            "v1.2.3-rc.1+meta",
            "0.76.0",
        ] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "dev", "v1.2.3.4", "v01.2.3", "v1.2-rc1", "", "v1.2.3-", "v1..2",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn inline_strings_and_sentinels() {
        let blob = inline_blob("go1.21.3", &wrap_modinfo(MODINFO));
        let file_bytes =
            crate::pkg::lang::tests_support::elf_with_sections(&[(".go.buildinfo", &blob)]);
        let file = object::File::parse(&*file_bytes).unwrap();
        let p = parse_binary("usr/bin/app", &file_bytes, &file).unwrap();
        assert_eq!(p.len(), 4);
        // Truncated strings are errors, not panics.
        for cut in [HEADER - 1, HEADER + 3, blob.len() - 1] {
            let short = crate::pkg::lang::tests_support::elf_with_sections(&[(
                ".go.buildinfo",
                &blob[..cut],
            )]);
            let file = object::File::parse(&*short).unwrap();
            assert!(parse_binary("a", &short, &file).is_err(), "cut at {cut}");
        }
        // Without sentinels the module info is ignored; stdlib remains.
        let blob = inline_blob("go1.21.3", MODINFO.as_bytes());
        let b = crate::pkg::lang::tests_support::elf_with_sections(&[(".go.buildinfo", &blob)]);
        let file = object::File::parse(&*b).unwrap();
        assert_eq!(
            nv(&parse_binary("a", &b, &file).unwrap()),
            ["stdlib@v1.21.3"]
        );
    }

    /// A little-endian ELF64 whose sections sit at virtual addresses:
    /// `(name, addr, data)`, written by hand (header, data, names, headers).
    fn elf_at(sections: &[(&str, u64, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        let mut placed = Vec::new();
        for (_, _, d) in sections {
            out.resize(out.len().next_multiple_of(16), 0);
            placed.push(out.len() as u64);
            out.extend_from_slice(d);
        }
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for (n, _, _) in
            sections
                .iter()
                .map(|(n, a, d)| (*n, *a, *d))
                .chain([(".shstrtab", 0, &[][..])])
        {
            name_at.push(names.len() as u32);
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&names);
        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len() as u64;
        let sh =
            |out: &mut Vec<u8>, name: u32, ty: u32, flags: u64, addr: u64, off: u64, size: u64| {
                out.extend_from_slice(&name.to_le_bytes());
                out.extend_from_slice(&ty.to_le_bytes());
                for v in [flags, addr, off, size] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&[0u8; 8]); // sh_link, sh_info
                out.extend_from_slice(&16u64.to_le_bytes());
                out.extend_from_slice(&0u64.to_le_bytes());
            };
        sh(&mut out, 0, 0, 0, 0, 0, 0);
        for (i, (_, addr, d)) in sections.iter().enumerate() {
            // SHT_PROGBITS, SHF_WRITE | SHF_ALLOC
            sh(&mut out, name_at[i], 1, 3, *addr, placed[i], d.len() as u64);
        }
        sh(
            &mut out,
            name_at[sections.len()],
            3,
            0,
            0,
            shstr_off,
            names.len() as u64,
        );
        let shnum = (sections.len() + 2) as u16;
        let mut h = b"\x7fELF\x02\x01\x01".to_vec();
        h.resize(16, 0);
        h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // entry
        h.extend_from_slice(&0u64.to_le_bytes()); // phoff
        h.extend_from_slice(&shoff.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 0, 64, shnum, shnum - 1] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        out[..64].copy_from_slice(&h);
        out
    }

    #[test]
    fn pointer_layout_before_go_1_18() {
        // .data at 0x2000: version header (ptr, len) at 0x2000, modinfo
        // header at 0x2010, version bytes at 0x2020, modinfo at 0x2040.
        let version = b"go1.16.15";
        let modinfo =
            wrap_modinfo("path\tx/cmd\nmod\tx\tv0.3.0\t\ndep\tgithub.com/a/b\tv1.1.0\th1:q=\n");
        let mut data = Vec::new();
        for v in [
            0x2020u64,
            version.len() as u64,
            0x2040,
            modinfo.len() as u64,
        ] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(version);
        data.resize(0x40, 0);
        data.extend_from_slice(&modinfo);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&[8, 0]);
        header.extend_from_slice(&0x2000u64.to_le_bytes());
        header.extend_from_slice(&0x2010u64.to_le_bytes());
        let bin = elf_at(&[(".go.buildinfo", 0x1000, &header), (".data", 0x2000, &data)]);
        let file = object::File::parse(&*bin).unwrap();
        let p = parse_binary("usr/bin/old", &bin, &file).unwrap();
        assert_eq!(
            nv(&p),
            ["stdlib@v1.16.15", "x@v0.3.0", "github.com/a/b@v1.1.0"]
        );
        // A pointer into nowhere is an error, not a panic.
        let mut bad = header.clone();
        bad[16..24].copy_from_slice(&0x9999u64.to_le_bytes());
        let bin = elf_at(&[(".go.buildinfo", 0x1000, &bad), (".data", 0x2000, &data)]);
        let file = object::File::parse(&*bin).unwrap();
        assert!(parse_binary("usr/bin/old", &bin, &file).is_err());
        // Big-endian flag with a 4-byte pointer size reads 4-byte words.
        let mut be = MAGIC.to_vec();
        be.extend_from_slice(&[4, 1]);
        be.extend_from_slice(&0x2000u32.to_be_bytes());
        be.extend_from_slice(&0x2008u32.to_be_bytes());
        be.resize(HEADER, 0);
        let mut d = Vec::new();
        for v in [0x2010u32, version.len() as u32, 0, 0] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(version);
        let bin = elf_at(&[(".go.buildinfo", 0x1000, &be), (".data", 0x2000, &d)]);
        let file = object::File::parse(&*bin).unwrap();
        assert_eq!(
            nv(&parse_binary("a", &bin, &file).unwrap()),
            ["stdlib@v1.16.15"]
        );
    }

    #[test]
    fn magic_found_without_a_section() {
        // PE-style: no named section, the blob somewhere 16-aligned.
        let blob = inline_blob("go1.21.3", &wrap_modinfo(MODINFO));
        let mut bin = crate::pkg::lang::tests_support::elf_with_sections(&[
            (".data", &[0u8; 7]),
            (".note.go.buildid", b"x"),
        ]);
        bin.resize(bin.len().next_multiple_of(16), 0);
        bin.extend_from_slice(&blob);
        let file = object::File::parse(&*bin).unwrap();
        assert_eq!(parse_binary("a", &bin, &file).unwrap().len(), 4);
        // The same bytes in an ELF that is not a Go program: not searched.
        let mut c = crate::pkg::lang::tests_support::elf_with_sections(&[(".data", &[0u8; 7])]);
        c.resize(c.len().next_multiple_of(16), 0);
        c.extend_from_slice(&blob);
        let file = object::File::parse(&*c).unwrap();
        assert_eq!(parse_binary("a", &c, &file).unwrap(), vec![]);
    }

    #[test]
    fn varints() {
        assert_eq!(
            varint_string(&[2, b'a', b'b', b'c']),
            Some((&b"ab"[..], &b"c"[..]))
        );
        assert_eq!(varint_string(&[0xff; 20]), None);
        assert_eq!(varint_string(&[5, b'a']), None);
        assert_eq!(varint_string(&[]), None);
    }
}
