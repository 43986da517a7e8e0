//! One layer, streamed once: decompress (gzip, zstd or none), walk the tar,
//! keep only what a scan needs — parsed package databases, OS release
//! files, the symlinks among them, and whiteouts — with every resource
//! bounded ([`Limits`]). A hostile layer (a decompression bomb, path tricks,
//! giant metadata files, a truncated or corrupt stream) is a [`LayerError`],
//! never a panic, never a write anywhere.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::pkg::{self, Want};
use crate::{Os, Package, os};

/// Bump when what a [`LayerScan`] holds or how it is produced changes: the
/// registry's per-layer cache is keyed by (layer digest, this).
pub const EXTRACTOR_VERSION: u32 = 1;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (OCI and Docker, `+gzip`,
    /// `+zstd`, plain `tar`); `None` for types that are not filesystem
    /// layers a scanner can read (encrypted, foreign/nondistributable
    /// layers are read too when they are tars, `+encrypted` is not).
    pub fn for_media_type(media_type: &str) -> Option<Compression> {
        Some(match media_type.trim() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// Bounds on the work one layer may cause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes read from one layer.
    pub max_uncompressed: u64,
    /// Tar entries in one layer.
    pub max_entries: u64,
    /// Bytes kept from one metadata file (a package database, a
    /// `package.json`, …); larger files fail the layer.
    pub max_file: u64,
    /// Bytes kept from one rpm database (that of a big
    /// RHEL image passes 64 MiB); larger ones fail the layer.
    pub max_database: u64,
    /// Bytes read from one binary or archive looked into for build info
    /// (Go, cargo-auditable, jars); larger ones are skipped, not failed.
    pub max_binary: u64,
    /// Packages kept from one layer.
    pub max_packages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed: 64 << 30,
            max_entries: 2_000_000,
            max_file: 64 << 20,
            max_database: 512 << 20,
            max_binary: 512 << 20,
            max_packages: 1_000_000,
        }
    }
}

/// What one file of a layer contributes to the merged image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Fact {
    /// An os-release style file (`etc/os-release`, `usr/lib/os-release`,
    /// `etc/alpine-release`, …), parsed.
    OsRelease { os: Os },
    /// The packages a package database or metadata file lists.
    Packages { packages: Vec<Package> },
    /// A symlink at a path the scanner cares about, with its target.
    Symlink { target: String },
}

/// The scan of one layer: facts by normalised path (no leading `./` or `/`),
/// and the whiteouts the layer applies to the layers below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScan {
    pub facts: BTreeMap<String, Fact>,
    /// Paths deleted from lower layers (`dir/.wh.name` → `dir/name`).
    pub whiteouts: Vec<String>,
    /// Directories whose lower contents are hidden (`dir/.wh..wh..opq` → `dir`).
    pub opaque_dirs: Vec<String>,
    /// Decompressed bytes and tar entries read.
    pub uncompressed_bytes: u64,
    pub entries: u64,
}

/// Why a layer could not be scanned (the scan is FAILED with this text).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer is corrupt: {0}")]
    Corrupt(String),
    #[error("layer exceeds a scan limit: {0}")]
    Limit(String),
    #[error("reading the layer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Scans one layer from its (compressed) bytes.
pub fn scan_layer(
    reader: impl Read,
    compression: Compression,
    limits: &Limits,
) -> Result<LayerScan, LayerError> {
    let state = Rc::new(StreamState::default());
    let source = Source {
        inner: reader,
        state: state.clone(),
    };
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(source)
                .map_err(|e| LayerError::Corrupt(format!("zstd: {e}")))?,
        ),
    };
    let counted = Counted {
        inner: decoded,
        state: state.clone(),
        limit: limits.max_uncompressed,
        compression,
    };
    let mut walker = Walker {
        limits,
        scan: LayerScan::default(),
        packages: 0,
        kept: 0,
        headers: 0,
        ext: Extensions::default(),
        state: state.clone(),
    };
    let fail = |e: io::Error| state.classify(e, limits);
    let mut archive = tar::Archive::new(counted);
    // Raw: the `tar` crate would read GNU long names and PAX headers into
    // memory whatever their size; the walker reads them itself, bounded.
    for entry in archive.entries().map_err(fail)?.raw(true) {
        let entry = entry.map_err(fail)?;
        walker.raw_entry(entry).map_err(|e| match e {
            WalkError::Io(e) => fail(e),
            WalkError::Layer(e) => e,
        })?;
    }
    if walker.ext.is_pending() {
        return Err(LayerError::Corrupt(
            "tar: extension headers with no entry after them".into(),
        ));
    }
    // Read what follows the end-of-archive blocks, so a truncated or
    // corrupt compressed stream is noticed and the byte count is whole.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(fail)?;
    walker.scan.uncompressed_bytes = state.uncompressed.get();
    Ok(walker.scan)
}

/// What the reader stack saw, shared by its layers: the decompressed byte
/// count, and which layer failed first (so an error surfacing through the
/// tar reader is classified by its cause).
#[derive(Default)]
struct StreamState {
    uncompressed: Cell<u64>,
    /// (at, len): drop `len` decompressed bytes once `at` bytes were read
    /// (the content of an entry whose PAX `size` exceeds its header's,
    /// which the raw tar reader would not skip).
    discard: Cell<Option<(u64, u64)>>,
    limit_hit: Cell<bool>,
    source_failed: Cell<bool>,
    decode_error: Cell<Option<String>>,
}

impl StreamState {
    fn classify(&self, e: io::Error, limits: &Limits) -> LayerError {
        if self.limit_hit.get() {
            LayerError::Limit(format!(
                "more than {} decompressed bytes (max_uncompressed)",
                limits.max_uncompressed
            ))
        } else if self.source_failed.get() {
            LayerError::Io(e)
        } else if let Some(msg) = self.decode_error.take() {
            LayerError::Corrupt(msg)
        } else {
            let mut msg = e.to_string();
            if let Some((cut, _)) = msg.char_indices().nth(200) {
                msg.truncate(cut);
                msg.push('…');
            }
            LayerError::Corrupt(format!(
                "tar: {msg} (near decompressed byte {})",
                self.uncompressed.get()
            ))
        }
    }
}

/// The compressed input; records that an error came from it.
struct Source<R> {
    inner: R,
    state: Rc<StreamState>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.state.source_failed.set(true);
            }
        })
    }
}

/// The decompressed stream: counts bytes, stops past the limit, records
/// decompression errors.
struct Counted<R> {
    inner: R,
    state: Rc<StreamState>,
    limit: u64,
    compression: Compression,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.limit_hit.get() {
            return Err(io::Error::other("decompressed size limit reached"));
        }
        let mut buf = buf;
        if let Some((at, len)) = self.state.discard.get() {
            let pos = self.state.uncompressed.get();
            if pos >= at {
                self.state.discard.set(None);
                let mut scratch = [0u8; 8192];
                let mut left = len;
                while left > 0 {
                    let want = left.min(scratch.len() as u64) as usize;
                    let n = self.read(&mut scratch[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "stream ends inside an entry",
                        ));
                    }
                    left -= n as u64;
                }
            } else {
                let room = usize::try_from(at - pos).unwrap_or(usize::MAX);
                let end = buf.len().min(room);
                buf = &mut buf[..end];
            }
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && !self.state.source_failed.get() {
                    let what = match self.compression {
                        Compression::None => "input",
                        Compression::Gzip => "gzip",
                        Compression::Zstd => "zstd",
                    };
                    self.state.decode_error.set(Some(format!(
                        "{what}: {e} (after {} decompressed bytes)",
                        self.state.uncompressed.get()
                    )));
                }
                return Err(e);
            }
        };
        let total = self.state.uncompressed.get().saturating_add(n as u64);
        self.state.uncompressed.set(total);
        if total > self.limit {
            self.state.limit_hit.set(true);
            return Err(io::Error::other("decompressed size limit reached"));
        }
        Ok(n)
    }
}

enum WalkError {
    Io(io::Error),
    Layer(LayerError),
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Io(e)
    }
}

/// The largest GNU long name or PAX header read.
const MAX_EXTENSION: u64 = 64 << 10;
/// Longer names (past Linux's PATH_MAX) are never facts or whiteouts.
const MAX_PATH: usize = 4096;

/// GNU long name/link and PAX records seen for the next entry.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Extensions {
    fn is_pending(&self) -> bool {
        self.long_name.is_some()
            || self.long_link.is_some()
            || self.pax_path.is_some()
            || self.pax_link.is_some()
            || self.pax_size.is_some()
    }
}

/// An entry's name, link and size after its extension headers.
struct Member {
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    size: u64,
}

struct Walker<'l> {
    limits: &'l Limits,
    scan: LayerScan,
    packages: u64,
    /// Bytes of whiteout and symlink names kept.
    kept: u64,
    /// Tar headers read, extension headers included.
    headers: u64,
    ext: Extensions,
    state: Rc<StreamState>,
}

fn corrupt(msg: impl Into<String>) -> WalkError {
    WalkError::Layer(LayerError::Corrupt(format!("tar: {}", msg.into())))
}

impl Walker<'_> {
    fn raw_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), WalkError> {
        self.headers += 1;
        if self.headers > self.limits.max_entries.saturating_mul(4).saturating_add(16) {
            return Err(WalkError::Layer(LayerError::Limit(format!(
                "more than {} tar headers (max_entries)",
                self.headers - 1
            ))));
        }
        let kind = entry.header().entry_type();
        let ustar_or_gnu = entry.header().as_gnu().is_some() || entry.header().as_ustar().is_some();
        let read_ext = |entry: &mut tar::Entry<'_, R>, what: &str| -> Result<Vec<u8>, WalkError> {
            if entry.size() > MAX_EXTENSION {
                return Err(corrupt(format!(
                    "{what} of {} bytes (more than {MAX_EXTENSION})",
                    entry.size()
                )));
            }
            let mut v = Vec::new();
            entry.read_to_end(&mut v)?;
            Ok(v)
        };
        let strip_nul = |mut v: Vec<u8>| {
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        match kind {
            tar::EntryType::GNULongName if ustar_or_gnu => {
                if self.ext.long_name.is_some() {
                    return Err(corrupt("two GNU long names for one entry"));
                }
                self.ext.long_name = Some(strip_nul(read_ext(&mut entry, "a GNU long name")?));
                return Ok(());
            }
            tar::EntryType::GNULongLink if ustar_or_gnu => {
                if self.ext.long_link.is_some() {
                    return Err(corrupt("two GNU long links for one entry"));
                }
                self.ext.long_link = Some(strip_nul(read_ext(&mut entry, "a GNU long link")?));
                return Ok(());
            }
            tar::EntryType::XHeader if ustar_or_gnu => {
                let data = read_ext(&mut entry, "a PAX header")?;
                for record in tar::PaxExtensions::new(&data) {
                    let record = record.map_err(|_| corrupt("malformed PAX record"))?;
                    match record.key_bytes() {
                        b"path" => self.ext.pax_path = Some(record.value_bytes().to_vec()),
                        b"linkpath" => self.ext.pax_link = Some(record.value_bytes().to_vec()),
                        b"size" => {
                            let size = std::str::from_utf8(record.value_bytes())
                                .ok()
                                .and_then(|s| s.parse::<u64>().ok())
                                .ok_or_else(|| corrupt("malformed PAX size"))?;
                            self.ext.pax_size = Some(size);
                        }
                        _ => {}
                    }
                }
                return Ok(());
            }
            tar::EntryType::XGlobalHeader => return Ok(()),
            tar::EntryType::GNUSparse
                if entry.header().as_gnu().is_some_and(|g| g.is_extended()) =>
            {
                return Err(corrupt(
                    "GNU sparse files with extended sparse headers are not supported",
                ));
            }
            _ => {}
        }
        let ext = std::mem::take(&mut self.ext);
        let header_size = entry.size();
        let size = match ext.pax_size {
            Some(s) if s > header_size => {
                // The raw reader skips the header's size; the rest of the
                // content is dropped under it, so the next header lines up.
                let stored = header_size.div_ceil(512).saturating_mul(512);
                let at = entry.raw_file_position().saturating_add(stored);
                let len = s.div_ceil(512).saturating_mul(512).saturating_sub(stored);
                self.state.discard.set(Some((at, len)));
                s
            }
            Some(s) if s < header_size => {
                return Err(corrupt("PAX size smaller than the header's"));
            }
            _ => header_size,
        };
        let member = Member {
            path: ext
                .pax_path
                .or(ext.long_name)
                .unwrap_or_else(|| entry.header().path_bytes().into_owned()),
            link: ext
                .pax_link
                .or(ext.long_link)
                .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned())),
            size,
        };
        let readable = size == header_size;
        self.entry(&mut entry, member, readable)
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        member: Member,
        readable: bool,
    ) -> Result<(), WalkError> {
        self.scan.entries += 1;
        if self.scan.entries > self.limits.max_entries {
            return Err(WalkError::Layer(LayerError::Limit(format!(
                "more than {} tar entries (max_entries)",
                self.limits.max_entries
            ))));
        }
        // Names with `..` (or nothing but `/` and `.`) are never facts.
        let Some(path) = normalise(&member.path).filter(|p| p.len() <= MAX_PATH) else {
            return Ok(());
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path.as_str()),
        };
        if let Some(deleted) = name.strip_prefix(".wh.") {
            if deleted == ".wh..opq" {
                self.keep(dir.len())?;
                self.scan.opaque_dirs.push(dir.to_string());
            } else if !deleted.is_empty() && !deleted.starts_with(".wh.") && deleted != "." {
                self.keep(path.len())?;
                self.scan.whiteouts.push(join(dir, deleted));
            }
            return Ok(());
        }
        let mode = entry.header().mode().unwrap_or(0);
        let release = os::is_release_file(&path);
        let want = if release {
            Want::Metadata
        } else {
            pkg::wants(&path, mode)
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(entry, path, member.size, readable, release, want)
            }
            tar::EntryType::Link if want != Want::No => {
                let target = member.link.as_deref().and_then(normalise);
                if let Some(fact) = target.and_then(|t| self.scan.facts.get(&t)).cloned() {
                    let fact = match fact {
                        Fact::Packages { mut packages } => {
                            self.count(packages.len())?;
                            for p in &mut packages {
                                p.path.clone_from(&path);
                            }
                            Fact::Packages { packages }
                        }
                        other => other,
                    };
                    self.scan.facts.insert(path, fact);
                }
                Ok(())
            }
            tar::EntryType::Symlink if want == Want::Metadata => {
                let target = member
                    .link
                    .as_deref()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .unwrap_or_default();
                self.keep(path.len() + target.len())?;
                self.scan.facts.insert(path, Fact::Symlink { target });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: String,
        size: u64,
        readable: bool,
        release: bool,
        want: Want,
    ) -> Result<(), WalkError> {
        match want {
            Want::No => Ok(()),
            Want::Metadata => {
                let (cap, name) = if crate::pkg::rpm::is_db(&path) {
                    (self.limits.max_database, "max_database")
                } else {
                    (self.limits.max_file, "max_file")
                };
                if size > cap {
                    return Err(WalkError::Layer(LayerError::Limit(format!(
                        "{path}: {size} bytes, more than {name} ({cap})"
                    ))));
                }
                if !readable {
                    return Err(corrupt(format!(
                        "{path}: PAX size disagrees with the header's"
                    )));
                }
                let bytes = read_bounded(entry, size, cap)?.ok_or_else(|| {
                    WalkError::Layer(LayerError::Limit(format!(
                        "{path}: more than {name} ({cap}) bytes"
                    )))
                })?;
                if release {
                    let text = String::from_utf8_lossy(&bytes);
                    let os = if path.ends_with("os-release") {
                        Some(os::parse_os_release(&text))
                    } else {
                        os::parse_release_file(&path, &text)
                    };
                    if let Some(os) = os {
                        self.scan.facts.insert(path, Fact::OsRelease { os });
                    }
                    return Ok(());
                }
                match pkg::parse(&path, &bytes) {
                    Ok(packages) => {
                        // An empty database still counts: one fact.
                        self.count(packages.len().max(1))?;
                        self.scan.facts.insert(path, Fact::Packages { packages });
                    }
                    Err(reason) if pkg::is_os_db(&path) => {
                        return Err(WalkError::Layer(LayerError::Corrupt(format!(
                            "{path}: {reason}"
                        ))));
                    }
                    // A language metadata file that does not parse is not
                    // worth failing an image's scan for.
                    Err(_) => {}
                }
                Ok(())
            }
            Want::Binary => {
                if size > self.limits.max_binary || !readable {
                    return Ok(());
                }
                let Some(bytes) = read_bounded(entry, size, self.limits.max_binary)? else {
                    return Ok(());
                };
                if let Ok(packages) = pkg::parse(&path, &bytes)
                    && !packages.is_empty()
                {
                    self.count(packages.len())?;
                    self.scan.facts.insert(path, Fact::Packages { packages });
                }
                Ok(())
            }
        }
    }

    /// Whiteouts and symlinks are kept without a package to count: their
    /// names are bounded together by `max_file` bytes.
    fn keep(&mut self, bytes: usize) -> Result<(), WalkError> {
        self.kept = self.kept.saturating_add(bytes as u64 + 16);
        if self.kept > self.limits.max_file {
            return Err(WalkError::Layer(LayerError::Limit(format!(
                "whiteouts and symlinks over {} bytes (max_file)",
                self.limits.max_file
            ))));
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), WalkError> {
        self.packages = self.packages.saturating_add(n as u64);
        if self.packages > self.limits.max_packages {
            return Err(WalkError::Layer(LayerError::Limit(format!(
                "more than {} packages (max_packages)",
                self.limits.max_packages
            ))));
        }
        Ok(())
    }
}

/// Reads an entry whole if it has at most `cap` bytes (`None` if more).
fn read_bounded(entry: &mut impl Read, size: u64, cap: u64) -> io::Result<Option<Vec<u8>>> {
    // The header's size is a hint: never trust it for more than 1 MiB up front.
    let mut buf = Vec::with_capacity(size.min(cap).min(1 << 20) as usize);
    entry.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= cap).then_some(buf))
}

/// A tar member name relative to the root: `./`, `/` and `//` dropped;
/// `None` when it has a `..` component (never resolved, so nothing can
/// point outside the root) or names the root itself.
pub(crate) fn normalise(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests;
