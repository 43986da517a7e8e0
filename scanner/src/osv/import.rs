//! Import sources: one `.json` file (a record, or an array of records), a
//! directory of them (recursive, sorted), or an osv.dev `all.zip` (one
//! record per member). Each record goes to a sink as it is read, so a
//! source of any size is read in bounded memory (one member at a time).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ImportError, Record, record_from_value, time};

/// The largest `.json` file read (a whole-ecosystem array is tens of MiB).
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// The largest zip member inflated (a record is KiBs; Debian's largest
/// with enumerated `versions` are a few MiB): a zip bomb stops here.
pub const MAX_MEMBER_BYTES: u64 = 16 << 20;
/// Members of one archive, and files under one directory.
const MAX_ENTRIES: usize = 5_000_000;
/// Directory nesting followed.
const MAX_DEPTH: usize = 32;

/// What one source held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records read (and handed to the sink).
    pub records: u64,
    /// Records per ecosystem named in their `affected` entries (a record
    /// naming two ecosystems counts in both; `""` for entries without a
    /// package).
    pub ecosystems: BTreeMap<String, u64>,
    /// The newest `modified`, as written in its record.
    pub newest_modified: Option<String>,
    /// The same instant as seconds since the Unix epoch.
    pub newest_modified_unix: Option<i64>,
}

impl SourceStats {
    fn add(&mut self, record: &Record) {
        self.records += 1;
        let mut seen: Vec<&str> = record
            .affected
            .iter()
            .map(|a| a.package.ecosystem.as_str())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for eco in seen {
            *self.ecosystems.entry(eco.to_owned()).or_default() += 1;
        }
        if let Some(t) = time::parse(&record.modified) {
            let newer = match &self.newest_modified {
                None => true,
                Some(cur) => time::parse(cur).is_none_or(|c| t > c),
            };
            if newer {
                self.newest_modified = Some(record.modified.clone());
                self.newest_modified_unix = Some(t.0);
            }
        }
    }

    /// Adds another source's counts (an import of several paths).
    pub fn merge(&mut self, other: &SourceStats) {
        self.records += other.records;
        for (eco, n) in &other.ecosystems {
            *self.ecosystems.entry(eco.clone()).or_default() += n;
        }
        if let Some(m) = &other.newest_modified {
            let newer = match (&self.newest_modified, time::parse(m)) {
                (None, _) => true,
                (Some(cur), Some(t)) => time::parse(cur).is_none_or(|c| t > c),
                (Some(_), None) => false,
            };
            if newer {
                self.newest_modified = Some(m.clone());
                self.newest_modified_unix = other.newest_modified_unix;
            }
        }
    }
}

/// Reads one import source — a `.json` file, a directory (recursively its
/// `*.json` files, in sorted path order) or a `.zip` archive — handing
/// each record to `sink`. The first bad record (or a sink error) stops the
/// read and is returned; the caller decides to discard what it collected.
pub fn read_source(
    path: &Path,
    sink: &mut dyn FnMut(Record) -> Result<(), ImportError>,
) -> Result<SourceStats, ImportError> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path).map_err(|e| ImportError::new(&shown, e.to_string()))?;
    let mut stats = SourceStats::default();
    let mut emit = |record: Record| -> Result<(), ImportError> {
        stats.add(&record);
        sink(record)
    };
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_json(path, 0, &mut files)?;
        files.sort();
        for file in files {
            read_json_file(&file, &mut emit)?;
        }
    } else if has_ext(path, "zip") {
        read_zip(path, &mut emit)?;
    } else {
        read_json_file(path, &mut emit)?;
    }
    Ok(stats)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// `*.json` files under `dir`; symlinked directories are not followed (no
/// loops), symlinked files are.
fn collect_json(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let shown = || dir.display().to_string();
    if depth > MAX_DEPTH {
        return Err(ImportError::new(shown(), "directories nested too deeply"));
    }
    let entries = fs::read_dir(dir).map_err(|e| ImportError::new(shown(), e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImportError::new(shown(), e.to_string()))?;
        let path = entry.path();
        let ty = entry
            .file_type()
            .map_err(|e| ImportError::new(path.display().to_string(), e.to_string()))?;
        if ty.is_dir() {
            collect_json(&path, depth + 1, out)?;
        } else if has_ext(&path, "json") && (ty.is_file() || path.is_file()) {
            if out.len() >= MAX_ENTRIES {
                return Err(ImportError::new(shown(), "too many files"));
            }
            out.push(path);
        }
    }
    Ok(())
}

fn read_json_file(
    path: &Path,
    emit: &mut dyn FnMut(Record) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let shown = path.display().to_string();
    let file = fs::File::open(path).map_err(|e| ImportError::new(&shown, e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| ImportError::new(&shown, e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(ImportError::new(
            &shown,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    // Streamed: an array of records is parsed one element at a time.
    let reader = std::io::BufReader::new(file.take(MAX_FILE_BYTES));
    emit_stream(&shown, reader, emit)
}

/// One document: a record, or an array of records (each element parsed
/// and handed on before the next is read).
fn emit_document(
    shown: &str,
    bytes: &[u8],
    emit: &mut dyn FnMut(Record) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    emit_stream(shown, bytes, emit)
}

fn emit_stream(
    shown: &str,
    reader: impl Read,
    emit: &mut dyn FnMut(Record) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    use serde::de::Deserializer as _;
    let mut failure: Option<ImportError> = None;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let visitor = DocVisitor {
        shown,
        emit,
        failure: &mut failure,
    };
    let outcome = de.deserialize_any(visitor).and_then(|()| de.end());
    if let Some(e) = failure {
        return Err(e);
    }
    outcome.map_err(|e| ImportError::new(shown, format!("not JSON: {e}")))
}

struct DocVisitor<'a, 'e> {
    shown: &'a str,
    emit: &'a mut dyn FnMut(Record) -> Result<(), ImportError>,
    failure: &'e mut Option<ImportError>,
}

impl DocVisitor<'_, '_> {
    fn take<E: serde::de::Error>(&mut self, file: &str, value: serde_json::Value) -> Result<(), E> {
        match record_from_value(file, value).and_then(|r| (self.emit)(r)) {
            Ok(()) => Ok(()),
            Err(e) => {
                *self.failure = Some(e);
                Err(E::custom("stopped"))
            }
        }
    }
}

impl<'de> serde::de::Visitor<'de> for DocVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an OSV record or an array of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            let file = format!("{}[{i}]", self.shown);
            self.take(&file, value)?;
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        use serde::Deserialize as _;
        let value =
            serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let shown = self.shown;
        self.take(shown, value)
    }
}

fn read_capped(reader: impl Read, cap: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than {cap} bytes"));
    }
    Ok(bytes)
}

fn read_zip(
    path: &Path,
    emit: &mut dyn FnMut(Record) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let shown = path.display().to_string();
    let file = fs::File::open(path).map_err(|e| ImportError::new(&shown, e.to_string()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| ImportError::new(&shown, format!("not a zip archive: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(ImportError::new(&shown, "too many members"));
    }
    // Member order in the archive is the producer's; read in name order.
    let mut names: Vec<(String, usize)> = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        match archive.name_for_index(i) {
            Some(Ok(name)) => names.push((name.into_owned(), i)),
            Some(Err(e)) => {
                return Err(ImportError::new(
                    &shown,
                    format!("member {i}: bad name: {e}"),
                ));
            }
            None => {}
        }
    }
    names.sort();
    for (name, index) in names {
        let member = format!("{shown}!{name}");
        if name.ends_with('/') || !name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        let entry = archive
            .by_index(index)
            .map_err(|e| ImportError::new(&member, e.to_string()))?;
        if entry.size() > MAX_MEMBER_BYTES {
            return Err(ImportError::new(
                &member,
                format!("inflates to more than {MAX_MEMBER_BYTES} bytes"),
            ));
        }
        // The declared size can lie: the read itself is capped too.
        let bytes =
            read_capped(entry, MAX_MEMBER_BYTES).map_err(|e| ImportError::new(&member, e))?;
        emit_document(&member, &bytes, emit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec(id: &str, modified: &str, eco: &str) -> String {
        format!(
            r#"{{"id":"{id}","modified":"{modified}","affected":[{{"package":{{"ecosystem":"{eco}","name":"p"}}}}]}}"#
        )
    }

    fn collect(path: &Path) -> Result<(SourceStats, Vec<String>), ImportError> {
        let mut ids = Vec::new();
        let stats = read_source(path, &mut |r| {
            ids.push(r.id);
            Ok(())
        })?;
        Ok((stats, ids))
    }

    #[test]
    fn single_file_and_array() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.json");
        fs::write(&one, rec("A-1", "2024-01-01T00:00:00Z", "Debian:12")).unwrap();
        let (stats, ids) = collect(&one).unwrap();
        assert_eq!(ids, ["A-1"]);
        assert_eq!(stats.records, 1);
        assert_eq!(stats.ecosystems.get("Debian:12"), Some(&1));

        let arr = dir.path().join("arr.json");
        fs::write(
            &arr,
            format!(
                "[{},{}]",
                rec("B-1", "2024-01-01T00:00:00.5Z", "PyPI"),
                rec("B-2", "2024-01-01T00:00:00Z", "PyPI")
            ),
        )
        .unwrap();
        let (stats, ids) = collect(&arr).unwrap();
        assert_eq!(ids, ["B-1", "B-2"]);
        assert_eq!(stats.ecosystems.get("PyPI"), Some(&2));
        // the fraction is later, whatever the lexical order says
        assert_eq!(
            stats.newest_modified.as_deref(),
            Some("2024-01-01T00:00:00.5Z")
        );
        assert_eq!(stats.newest_modified_unix, Some(1_704_067_200));

        fs::write(
            &arr,
            format!(
                "[{},{{\"id\":\"X\"}}]",
                rec("B-1", "2024-01-01T00:00:00Z", "PyPI")
            ),
        )
        .unwrap();
        let e = collect(&arr).unwrap_err();
        assert!(e.file.ends_with("arr.json[1]"), "{e}");
        assert!(e.reason.contains("modified"));
    }

    #[test]
    fn directory_recursive_sorted_json_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b/c")).unwrap();
        fs::write(
            dir.path().join("b/c/z.json"),
            rec("Z", "2023-01-01T00:00:00Z", "npm"),
        )
        .unwrap();
        fs::write(
            dir.path().join("b/a.json"),
            rec("A", "2025-06-01T00:00:00+02:00", "Go"),
        )
        .unwrap();
        fs::write(
            dir.path().join("a.json"),
            rec("R", "2024-01-01T00:00:00Z", "Go"),
        )
        .unwrap();
        fs::write(dir.path().join("README.md"), "not a record").unwrap();
        let (stats, ids) = collect(dir.path()).unwrap();
        assert_eq!(ids, ["R", "A", "Z"]);
        assert_eq!(stats.records, 3);
        assert_eq!(stats.ecosystems.get("Go"), Some(&2));
        assert_eq!(
            stats.newest_modified.as_deref(),
            Some("2025-06-01T00:00:00+02:00")
        );

        fs::write(dir.path().join("b/bad.json"), "{}").unwrap();
        let e = collect(dir.path()).unwrap_err();
        assert!(e.file.ends_with("b/bad.json"), "{e}");
        assert!(e.reason.contains("no `id`"));
    }

    #[cfg(unix)]
    #[test]
    fn directory_symlink_loops_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.json"),
            rec("A", "2024-01-01T00:00:00Z", "Go"),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let (_, ids) = collect(dir.path()).unwrap();
        assert_eq!(ids, ["A"]);
    }

    fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn zip_members_in_name_order_and_errors_name_the_member() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("all.zip");
        let b = rec("DSA-2", "2024-02-01T00:00:00Z", "Debian:12");
        let a = rec("DSA-1", "2024-03-01T00:00:00Z", "Debian:11");
        write_zip(
            &z,
            &[
                ("DSA-2.json", b.as_bytes()),
                ("DSA-1.json", a.as_bytes()),
                ("x.txt", b"junk"),
            ],
        );
        let (stats, ids) = collect(&z).unwrap();
        assert_eq!(ids, ["DSA-1", "DSA-2"]);
        assert_eq!(stats.ecosystems.len(), 2);
        assert_eq!(
            stats.newest_modified.as_deref(),
            Some("2024-03-01T00:00:00Z")
        );

        write_zip(
            &z,
            &[("ok.json", a.as_bytes()), ("broken.json", b"{\"id\":1}")],
        );
        let e = collect(&z).unwrap_err();
        assert_eq!(e.file, format!("{}!broken.json", z.display()));

        fs::write(&z, b"PK\x03\x04 truncated").unwrap();
        assert!(collect(&z).unwrap_err().reason.contains("zip"));
    }

    #[test]
    fn zip_bomb_stops_at_the_member_cap() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("bomb.zip");
        let big = vec![b' '; (MAX_MEMBER_BYTES + 10) as usize];
        write_zip(&z, &[("bomb.json", &big)]);
        assert!(
            fs::metadata(&z).unwrap().len() < 1 << 20,
            "deflate made it small"
        );
        let e = collect(&z).unwrap_err();
        assert!(e.file.ends_with("bomb.zip!bomb.json"));
        assert!(e.reason.contains("bytes"), "{e}");
    }

    #[test]
    fn sink_errors_stop_the_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.json"),
            rec("A", "2024-01-01T00:00:00Z", "Go"),
        )
        .unwrap();
        fs::write(
            dir.path().join("b.json"),
            rec("B", "2024-01-01T00:00:00Z", "Go"),
        )
        .unwrap();
        let mut n = 0;
        let e = read_source(dir.path(), &mut |_| {
            n += 1;
            Err(ImportError::new("sink", "full"))
        })
        .unwrap_err();
        assert_eq!((n, e.file.as_str()), (1, "sink"));
        assert!(collect(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn stats_merge() {
        let mut a = SourceStats::default();
        let mut b = SourceStats::default();
        a.add(
            &crate::osv::parse_record("a", rec("A", "2024-01-01T00:00:00Z", "Go").as_bytes())
                .unwrap(),
        );
        b.add(
            &crate::osv::parse_record("b", rec("B", "2025-01-01T00:00:00Z", "Go").as_bytes())
                .unwrap(),
        );
        a.merge(&b);
        assert_eq!(a.records, 2);
        assert_eq!(a.ecosystems.get("Go"), Some(&2));
        assert_eq!(a.newest_modified.as_deref(), Some("2025-01-01T00:00:00Z"));
    }
}
