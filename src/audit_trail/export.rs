//! `berth audit export` and `berth audit stream`: the log as CloudTrail
//! log files (gzip JSON, one per account, region and hour, in CloudTrail's
//! `AWSLogs/…` layout) and as JSON lines (one record per line), for a SIEM.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::metadata::{AuditRow, MetadataStore};

const HOUR: i64 = 3_600_000;

/// The records of one account, region and hour, before they are written.
struct Group {
    first_seq: i64,
    records: Vec<String>,
}

/// Write every event with `start <= time < end` (ms) as CloudTrail log
/// files under `dir`; returns the files written and the events in them.
/// The names carry the first event's number, so exporting the same hours
/// again rewrites the same files.
pub async fn export(
    meta: &MetadataStore,
    dir: &Path,
    start: i64,
    end: i64,
) -> anyhow::Result<(usize, u64)> {
    let mut open: BTreeMap<(i64, String, String), Group> = BTreeMap::new();
    let mut files = 0;
    let mut events = 0;
    let mut after = match meta.audit_seq_at(start).await? {
        Some(s) => s - 1,
        None => return Ok((0, 0)),
    };
    loop {
        let rows = meta.audit_after(after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let mut newest = i64::MIN;
        for r in rows {
            newest = newest.max(r.event_time);
            if r.event_time < start || r.event_time >= end {
                continue;
            }
            events += 1;
            let key = (
                r.event_time - r.event_time.rem_euclid(HOUR),
                r.account,
                r.region,
            );
            open.entry(key)
                .or_insert_with(|| Group {
                    first_seq: r.seq,
                    records: Vec::new(),
                })
                .records
                .push(r.record);
        }
        // Hours two behind the newest event seen are complete (node clocks
        // may differ a little): written now, so memory holds two hours.
        let done: Vec<_> = open
            .keys()
            .filter(|(hour, _, _)| *hour + 2 * HOUR <= newest)
            .cloned()
            .collect();
        for k in done {
            let g = open.remove(&k).expect("listed");
            write_file(dir, &k, &g)?;
            files += 1;
        }
        if newest >= end.saturating_add(HOUR) {
            break;
        }
    }
    for (k, g) in &open {
        write_file(dir, k, g)?;
        files += 1;
    }
    Ok((files, events))
}

/// `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<n>.json.gz`.
fn file_path(dir: &Path, (hour, account, region): &(i64, String, String), first: i64) -> PathBuf {
    let t = crate::audit::event_time(*hour); // 2026-12-02T05:00:00Z
    let (y, mo, d, h) = (&t[0..4], &t[5..7], &t[8..10], &t[11..13]);
    dir.join("AWSLogs")
        .join(account)
        .join("CloudTrail")
        .join(region)
        .join(y)
        .join(mo)
        .join(d)
        .join(format!(
            "{account}_CloudTrail_{region}_{y}{mo}{d}T{h}00Z_berth{first:012}.json.gz"
        ))
}

fn write_file(dir: &Path, key: &(i64, String, String), g: &Group) -> anyhow::Result<()> {
    let path = file_path(dir, key, g.first_seq);
    std::fs::create_dir_all(path.parent().expect("a file under dir"))?;
    let tmp = path.with_extension("tmp");
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::default());
    gz.write_all(b"{\"Records\":[")?;
    for (i, r) in g.records.iter().enumerate() {
        if i > 0 {
            gz.write_all(b",")?;
        }
        gz.write_all(r.as_bytes())?;
    }
    gz.write_all(b"]}")?;
    gz.finish()?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Print every event from `start` (ms) on as one JSON line (the CloudTrail
/// record); with `follow`, keep printing new events as they are committed.
pub async fn stream(
    meta: &MetadataStore,
    start: i64,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let mut after = match meta.audit_seq_at(start).await? {
        Some(s) => s - 1,
        None => meta.audit_head().await?.seq,
    };
    let mut n = 0;
    loop {
        let rows: Vec<AuditRow> = meta.audit_after(after, 1000).await?;
        for r in &rows {
            out.write_all(r.record.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.flush()?;
        match rows.last() {
            Some(last) => after = last.seq,
            None if follow => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            None => return Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_cloudtrail() {
        let p = file_path(
            Path::new("/x"),
            &(1_796_187_600_000, "123456789012".into(), "us-east-1".into()),
            7,
        );
        assert_eq!(
            p.to_str().unwrap(),
            "/x/AWSLogs/123456789012/CloudTrail/us-east-1/2026/12/02/\
             123456789012_CloudTrail_us-east-1_20261202T0500Z_berth000000000007.json.gz"
        );
    }
}
