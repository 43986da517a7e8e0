//! A minimal read-only reader of the SQLite file format, enough to scan one
//! table's rows from an in-memory database image: the header, table
//! b-trees (interior and leaf pages), overflow chains and the record
//! format. Every offset is bounds-checked and every walk is bounded (pages
//! visited at most once, overflow chains no longer than the page count), so
//! a hostile file is an error, never a panic or a loop.
//!
//! What it does not do: index b-trees, WAL files (only the checkpointed main
//! file is read), freelists, or anything but reading.

use std::collections::HashSet;

/// A column value of a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Owned form of a record's column, as produced by a row scan (a payload
/// spilling into overflow pages has to be reassembled).
pub(crate) type Row = Vec<OwnedValue>;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedValue {
    Null,
    Int(i64),
    Float(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<Value<'_>> for OwnedValue {
    fn from(v: Value<'_>) -> Self {
        match v {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Float(f) => OwnedValue::Float(f),
            Value::Text(t) => OwnedValue::Text(t.to_vec()),
            Value::Blob(b) => OwnedValue::Blob(b.to_vec()),
        }
    }
}

/// A database image.
pub(crate) struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    pages: usize,
}

const MAX_DEPTH: usize = 40;

impl<'a> Db<'a> {
    pub(crate) fn open(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err("not an SQLite 3 database".into());
        }
        let raw = u16::from_be_bytes([bytes[16], bytes[17]]);
        let page_size = if raw == 1 { 65536 } else { raw as usize };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("bad page size {page_size}"));
        }
        let reserved = bytes[20] as usize;
        let usable = page_size - reserved;
        if usable < 480 {
            return Err(format!("bad usable page size {usable}"));
        }
        let pages = bytes.len() / page_size;
        if pages == 0 {
            return Err("database shorter than one page".into());
        }
        Ok(Db {
            bytes,
            page_size,
            usable,
            pages,
        })
    }

    /// Page `n` (1-based).
    fn page(&self, n: u32) -> Result<&'a [u8], String> {
        let n = n as usize;
        if n == 0 || n > self.pages {
            return Err(format!("page {n} out of range (1..={})", self.pages));
        }
        let start = (n - 1) * self.page_size;
        Ok(&self.bytes[start..start + self.page_size])
    }

    /// The root page of table `name`, from `sqlite_master`.
    pub(crate) fn table_root(&self, name: &str) -> Result<u32, String> {
        let mut root = None;
        self.scan_table(1, &mut |row| {
            let is = |i: usize, want: &str| {
                matches!(row.get(i), Some(OwnedValue::Text(t)) if t.eq_ignore_ascii_case(want.as_bytes()))
            };
            if is(0, "table")
                && is(1, name)
                && let Some(OwnedValue::Int(p)) = row.get(3)
            {
                root = u32::try_from(*p).ok();
            }
            Ok(())
        })?;
        root.ok_or_else(|| format!("no table {name:?} in sqlite_master"))
    }

    /// Calls `each` with every row of the table b-tree rooted at `root`.
    pub(crate) fn scan_table(
        &self,
        root: u32,
        each: &mut dyn FnMut(&Row) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut visited = HashSet::new();
        self.walk(root, 0, &mut visited, each)
    }

    fn walk(
        &self,
        n: u32,
        depth: usize,
        visited: &mut HashSet<u32>,
        each: &mut dyn FnMut(&Row) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("b-tree too deep".into());
        }
        if !visited.insert(n) {
            return Err(format!("page {n} reached twice (a cycle)"));
        }
        let page = self.page(n)?;
        let hdr = if n == 1 { 100 } else { 0 };
        let kind = *page.get(hdr).ok_or("short page")?;
        let cells = be16(page, hdr + 3)? as usize;
        let (header_len, interior) = match kind {
            0x0d => (8, false),
            0x05 => (12, true),
            other => {
                return Err(format!(
                    "page {n}: not a table b-tree page (type {other:#x})"
                ));
            }
        };
        let pointers = hdr + header_len;
        for i in 0..cells {
            let off = be16(page, pointers + 2 * i)? as usize;
            if off >= self.usable {
                return Err(format!("page {n}: cell offset {off} out of range"));
            }
            if interior {
                let child = be32(page, off)?;
                self.walk(child, depth + 1, visited, each)?;
            } else {
                let row = self.leaf_cell(page, off)?;
                each(&row)?;
            }
        }
        if interior {
            let right = be32(page, hdr + 8)?;
            self.walk(right, depth + 1, visited, each)?;
        }
        Ok(())
    }

    fn leaf_cell(&self, page: &[u8], off: usize) -> Result<Row, String> {
        let cell = &page[..self.usable];
        let (payload_len, a) = varint(cell, off)?;
        let (_rowid, b) = varint(cell, off + a)?;
        let start = off + a + b;
        let payload_len =
            usize::try_from(payload_len).map_err(|_| "payload length overflows".to_string())?;
        if payload_len > self.bytes.len() {
            return Err(format!("payload of {payload_len} bytes exceeds the file"));
        }
        let u = self.usable;
        let max_local = u - 35;
        if payload_len <= max_local {
            let local = cell
                .get(start..start + payload_len)
                .ok_or("cell payload out of page")?;
            return record(local).map(|v| v.into_iter().map(OwnedValue::from).collect());
        }
        let min_local = ((u - 12) * 32 / 255) - 23;
        let k = min_local + (payload_len - min_local) % (u - 4);
        let local_len = if k <= max_local { k } else { min_local };
        let local = cell
            .get(start..start + local_len)
            .ok_or("cell payload out of page")?;
        let mut payload = Vec::with_capacity(payload_len);
        payload.extend_from_slice(local);
        let mut next = be32(cell, start + local_len)?;
        let mut hops = 0usize;
        while payload.len() < payload_len {
            hops += 1;
            if next == 0 || hops > self.pages {
                return Err("overflow chain broken or cyclic".into());
            }
            let page = self.page(next)?;
            next = be32(page, 0)?;
            let want = (payload_len - payload.len()).min(u - 4);
            payload.extend_from_slice(page.get(4..4 + want).ok_or("short overflow page")?);
        }
        record(&payload).map(|v| v.into_iter().map(OwnedValue::from).collect())
    }
}

/// Decodes a record (header of serial types, then the bodies).
pub(crate) fn record(payload: &[u8]) -> Result<Vec<Value<'_>>, String> {
    let (header_len, mut pos) = varint(payload, 0)?;
    let header_len = usize::try_from(header_len).map_err(|_| "bad record header")?;
    if header_len > payload.len() || header_len < pos {
        return Err("record header out of range".into());
    }
    let mut body = header_len;
    let mut values = Vec::new();
    while pos < header_len {
        let (serial, n) = varint(payload, pos)?;
        pos += n;
        let (len, make): (usize, fn(&[u8]) -> Value<'_>) = match serial {
            0 => (0, |_| Value::Null),
            1 => (1, int),
            2 => (2, int),
            3 => (3, int),
            4 => (4, int),
            5 => (6, int),
            6 => (8, int),
            7 => (8, |b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Float(f64::from_be_bytes(a))
            }),
            8 => (0, |_| Value::Int(0)),
            9 => (0, |_| Value::Int(1)),
            10 | 11 => return Err(format!("reserved serial type {serial}")),
            s if s % 2 == 0 => (
                usize::try_from((s - 12) / 2).map_err(|_| "huge blob")?,
                |b| Value::Blob(b),
            ),
            s => (
                usize::try_from((s - 13) / 2).map_err(|_| "huge text")?,
                |b| Value::Text(b),
            ),
        };
        let bytes = payload
            .get(body..body.checked_add(len).ok_or("overflow")?)
            .ok_or("record body out of range")?;
        values.push(make(bytes));
        body += len;
    }
    Ok(values)
}

/// A big-endian two's complement integer of 1 to 8 bytes.
fn int(b: &[u8]) -> Value<'_> {
    let mut v: i64 = if b.first().is_some_and(|x| x & 0x80 != 0) {
        -1
    } else {
        0
    };
    for &x in b {
        v = (v << 8) | i64::from(x);
    }
    Value::Int(v)
}

/// SQLite's varint: 1 to 9 bytes, big-endian, 7 bits a byte, the ninth
/// byte whole. Returns the value and its length.
pub(crate) fn varint(b: &[u8], at: usize) -> Result<(u64, usize), String> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let x = *b.get(at + i).ok_or("varint out of range")?;
        if i == 8 {
            return Ok(((v << 8) | u64::from(x), 9));
        }
        v = (v << 7) | u64::from(x & 0x7f);
        if x & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    unreachable!("the loop returns by its ninth byte")
}

fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    let s = b.get(at..at + 2).ok_or("u16 out of range")?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    let s = b.get(at..at + 4).ok_or("u32 out of range")?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05], 0).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9], 0).unwrap(), (u64::MAX, 9));
        assert!(varint(&[0x81], 0).is_err());
        assert!(varint(&[], 0).is_err());
    }

    #[test]
    fn records() {
        // header len 4: NULL, i8, text(2); body: 0xff, "hi"
        let rec = [4u8, 0, 1, 17, 0xff, b'h', b'i'];
        assert_eq!(
            record(&rec).unwrap(),
            [Value::Null, Value::Int(-1), Value::Text(b"hi")]
        );
        assert!(record(&[4u8, 0, 1, 17, 0xff, b'h']).is_err());
        assert!(record(&[200u8, 1]).is_err());
        assert!(record(&[2u8, 10]).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Db::open(b"").is_err());
        assert!(Db::open(&[0u8; 4096]).is_err());
        let mut fake = vec![0u8; 1024];
        fake[..16].copy_from_slice(b"SQLite format 3\0");
        fake[16] = 0x02; // 512
        fake[100] = 0x05; // interior page whose right pointer is itself
        fake[108..112].copy_from_slice(&1u32.to_be_bytes());
        let db = Db::open(&fake).unwrap();
        assert!(db.table_root("Packages").is_err());
    }
}
