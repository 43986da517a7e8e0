//! A minimal read-only reader of a Berkeley DB hash database (rpm's
//! `var/lib/rpm/Packages` before rpm 4.16: RHEL/CentOS 7–8, Amazon Linux 2),
//! enough to list its values: every hash page's key/data pairs, values
//! stored inline or in overflow page chains. Pages are read in file order
//! (no bucket arithmetic needed to list everything); byte order is taken
//! from the metadata page's magic. Every offset is bounds-checked and every
//! overflow chain bounded by the page count.

const HASH_MAGIC: u32 = 0x0006_1561;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;
/// The page header: lsn, pgno, prev, next, entries, hf_offset, level, type.
const PAGE_HEADER: usize = 26;

/// Whether `bytes` starts like a Berkeley DB hash database.
pub(crate) fn is_bdb_hash(bytes: &[u8]) -> bool {
    bytes.get(12..16).is_some_and(|m| {
        let m = [m[0], m[1], m[2], m[3]];
        u32::from_le_bytes(m) == HASH_MAGIC || u32::from_be_bytes(m) == HASH_MAGIC
    })
}

/// Calls `each` with every data item (not the keys) of the database.
pub(crate) fn values(
    bytes: &[u8],
    each: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let magic = bytes.get(12..16).ok_or("not a Berkeley DB file")?;
    let magic = [magic[0], magic[1], magic[2], magic[3]];
    let le = if u32::from_le_bytes(magic) == HASH_MAGIC {
        true
    } else if u32::from_be_bytes(magic) == HASH_MAGIC {
        false
    } else {
        return Err("not a Berkeley DB hash database".into());
    };
    let r = Reader { bytes, le };
    let page_size = r.u32(20)? as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("bad page size {page_size}"));
    }
    // Encrypted databases (a nonzero encrypt_alg) are unreadable.
    if bytes.get(24).is_some_and(|&alg| alg != 0) {
        return Err("encrypted Berkeley DB database".into());
    }
    let pages = bytes.len() / page_size;
    let mut overflow = Vec::new();
    for n in 1..pages {
        let base = n * page_size;
        let page = &bytes[base..base + page_size];
        let kind = page[25];
        if kind != P_HASH && kind != P_HASH_UNSORTED {
            continue;
        }
        let entries = r.u16(base + 20)? as usize;
        // Items are key, data, key, data, … packed down from the page end;
        // an item ends where the previous one begins.
        for i in (1..entries).step_by(2) {
            let off = r.u16(base + PAGE_HEADER + 2 * i)? as usize;
            let end = r.u16(base + PAGE_HEADER + 2 * (i - 1))? as usize;
            if off < PAGE_HEADER || off >= page_size || end > page_size || end <= off {
                return Err(format!("page {n}: item {i} out of range"));
            }
            let item = &page[off..end];
            match item[0] {
                H_KEYDATA => each(&item[1..])?,
                H_OFFPAGE => {
                    let first = r.u32(base + off + 4)?;
                    let total = r.u32(base + off + 8)? as usize;
                    if total > bytes.len() {
                        return Err(format!("page {n}: overflow item larger than the file"));
                    }
                    overflow.clear();
                    r.overflow_chain(first, total, page_size, pages, &mut overflow)?;
                    each(&overflow)?;
                }
                // Duplicates (sorted sets of values) are not used by rpm.
                _ => {}
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    le: bool,
}

impl Reader<'_> {
    fn u16(&self, at: usize) -> Result<u16, String> {
        let b = self.bytes.get(at..at + 2).ok_or("u16 out of range")?;
        let b = [b[0], b[1]];
        Ok(if self.le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Result<u32, String> {
        let b = self.bytes.get(at..at + 4).ok_or("u32 out of range")?;
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn overflow_chain(
        &self,
        mut n: u32,
        total: usize,
        page_size: usize,
        pages: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut hops = 0;
        while out.len() < total {
            hops += 1;
            let idx = n as usize;
            if n == 0 || idx >= pages || hops > pages {
                return Err("overflow chain broken or cyclic".into());
            }
            let base = idx * page_size;
            if self.bytes.get(base + 25) != Some(&P_OVERFLOW) {
                return Err(format!("page {n} is not an overflow page"));
            }
            let len = self.u16(base + 22)? as usize;
            let data = self
                .bytes
                .get(base + PAGE_HEADER..base + PAGE_HEADER + len)
                .filter(|_| PAGE_HEADER + len <= page_size)
                .ok_or_else(|| format!("overflow page {n}: length out of range"))?;
            out.extend_from_slice(&data[..len.min(total - out.len())]);
            n = self.u32(base + 16)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inline (H_KEYDATA) value, big-endian, as a hand-built page (the
    /// fixture's headers are all large enough to be stored off-page).
    #[test]
    fn inline_values_big_endian() {
        let mut db = vec![0u8; 8192];
        db[12..16].copy_from_slice(&HASH_MAGIC.to_be_bytes());
        db[20..24].copy_from_slice(&4096u32.to_be_bytes());
        let page = &mut db[4096..];
        page[25] = P_HASH;
        page[20..22].copy_from_slice(&2u16.to_be_bytes());
        // key at 4090..4096 ("\x01key!"), data at 4080..4090.
        page[26..28].copy_from_slice(&4090u16.to_be_bytes());
        page[28..30].copy_from_slice(&4080u16.to_be_bytes());
        page[4090] = H_KEYDATA;
        page[4091..4096].copy_from_slice(b"key!!");
        page[4080] = H_KEYDATA;
        page[4081..4090].copy_from_slice(b"the-value");
        let mut got = Vec::new();
        values(&db, &mut |v| {
            got.push(v.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [b"the-value".to_vec()]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(!is_bdb_hash(b""));
        assert!(values(b"", &mut |_| Ok(())).is_err());
        assert!(values(&[0u8; 4096], &mut |_| Ok(())).is_err());
        // A hash page whose item offsets point anywhere.
        let mut db = vec![0u8; 8192];
        db[12..16].copy_from_slice(&HASH_MAGIC.to_le_bytes());
        db[20..24].copy_from_slice(&4096u32.to_le_bytes());
        assert!(is_bdb_hash(&db));
        db[4096 + 25] = P_HASH;
        db[4096 + 20] = 2;
        db[4096 + 26..4096 + 30].copy_from_slice(&[0xff, 0xff, 0x10, 0x00]);
        assert!(values(&db, &mut |_| Ok(())).is_err());
        // An off-page item pointing at a page that is not an overflow page.
        db[4096 + 26..4096 + 30].copy_from_slice(&[0x00, 0x10, 0xf0, 0x0f]);
        db[4096 + 0xff0] = H_OFFPAGE;
        db[4096 + 0xff4..4096 + 0xff8].copy_from_slice(&1u32.to_le_bytes());
        db[4096 + 0xff8..4096 + 0xffc].copy_from_slice(&100u32.to_le_bytes());
        assert!(values(&db, &mut |_| Ok(())).is_err());
        // An overflow page that links to itself and holds nothing.
        db.extend(vec![0u8; 4096]);
        db[4096 + 0xff4..4096 + 0xff8].copy_from_slice(&2u32.to_le_bytes());
        db[8192 + 25] = P_OVERFLOW;
        db[8192 + 16..8192 + 20].copy_from_slice(&2u32.to_le_bytes());
        let err = values(&db, &mut |_| Ok(())).unwrap_err();
        assert!(err.contains("cyclic"), "{err}");
    }
}
