//! RFC 3339 timestamps (OSV's `modified`), parsed to a comparable instant
//! without a date library: lexical order is wrong across fractions and
//! offsets (`…00.5Z` sorts before `…00Z`).

/// Seconds since the Unix epoch and nanoseconds of an RFC 3339 time
/// (`2024-01-02T03:04:05.123456Z`, `…+02:00`); `None` when malformed.
pub(crate) fn parse(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 64 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let min = num(14, 2)?;
    let sec = num(17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > *mdays.get((month - 1) as usize)? {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + min * 60 + sec - offset, nanos))
}

/// Seconds since the Unix epoch of an RFC 3339 time (what the registry
/// reports as `vulnerabilitySourceUpdatedAt`); `None` when malformed.
pub fn rfc3339_unix(s: &str) -> Option<i64> {
    parse(s).map(|(secs, _)| secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        let cases: &[(&str, Option<(i64, u32)>)] = &[
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2024-01-02T03:04:05Z", Some((1_704_164_645, 0))),
            ("2024-01-02T03:04:05.5Z", Some((1_704_164_645, 500_000_000))),
            (
                "2024-01-02T03:04:05.123456789123Z",
                Some((1_704_164_645, 123_456_789)),
            ),
            ("2024-01-02T05:04:05+02:00", Some((1_704_164_645, 0))),
            ("2024-01-02T01:04:05-02:00", Some((1_704_164_645, 0))),
            ("2024-02-29T00:00:00Z", Some((1_709_164_800, 0))),
            ("2023-02-29T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-01-02T03:04:05", None),
            ("2024-01-02T03:04:05.Z", None),
            ("2024-01-02 03:04:05Z", Some((1_704_164_645, 0))),
            ("2024-01-02T03:04:05+0200", None),
            ("2024-01-02T03:04:05Zjunk", None),
            ("２０２４-01-02T03:04:05Z", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s), *want, "{s}");
        }
    }

    #[test]
    fn fractions_order_correctly() {
        assert!(parse("2024-01-01T00:00:00.5Z") > parse("2024-01-01T00:00:00Z"));
    }
}
