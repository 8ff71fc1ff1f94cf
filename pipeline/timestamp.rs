//! Timestamp text → UTC microseconds.
//!
//! Billing exports write times in many shapes; all are read as UTC instants:
//! `2023-11-01T00:00:00Z`, `2023-11-01T00:00:00.000Z`, `2024-09-01 00:00:00`,
//! `2023-11-01T00:00:00+01:00`, `2023-11-01`, the US form `11/01/2023` (Azure) and a billing
//! month `202311` (GCP `invoice.month`, its first instant).
//! Anything else is refused with the text quoted.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Parses one timestamp into microseconds since the Unix epoch, UTC.
pub fn parse_micros(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if let Some(micros) = parse_plain_utc(s.as_bytes()) {
        return Ok(micros);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%MZ",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.fZ",
        "%Y-%m-%d %H:%M:%S%.f UTC",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(n.and_utc().timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Ok(dt.timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            return Ok(d
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_micros());
        }
    }
    // A billing month, `YYYYMM` (GCP invoice.month): its first instant.
    if s.len() == 6
        && s.bytes().all(|b| b.is_ascii_digit())
        && let Some(d) =
            NaiveDate::from_ymd_opt(s[..4].parse().unwrap_or(0), s[4..].parse().unwrap_or(0), 1)
    {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros());
    }
    Err(format!("not a timestamp: {text:?}"))
}

/// The shapes nearly every export uses, read without chrono's pattern machinery:
/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z| UTC]` and `YYYY-MM-DDTHH:MMZ`. `None` for anything
/// else (the general parser then decides).
fn parse_plain_utc(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 16
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let mut rest = &b[16..];
    let mut sec = 0;
    let mut micros = 0i64;
    let with_seconds = rest.first() == Some(&b':');
    if with_seconds {
        sec = num(17..19)?;
        rest = &b[19..];
        if rest.first() == Some(&b'.') {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for (i, c) in rest[1..=digits].iter().enumerate().take(6) {
                micros += i64::from(c - b'0') * 10i64.pow(5 - i as u32);
            }
            rest = &rest[1 + digits..];
        }
    }
    match (rest, with_seconds) {
        (b"Z", _) | (b"", true) | (b" UTC", true) => {}
        _ => return None,
    }
    let date = NaiveDate::from_ymd_opt(y as i32, mo, d)?;
    let t = date.and_hms_opt(h, mi, sec)?;
    Some(t.and_utc().timestamp_micros() + micros)
}

/// Instants (µs) as text through `format`, called once per distinct value among the last
/// [`RECENT`] seen: exports repeat a handful of instants (the hours of a day, the billing
/// period) in any order, so nearly every value is found among the recent ones.
pub fn format_runs(
    micros: &arrow::array::TimestampMicrosecondArray,
    format: fn(i64) -> String,
) -> arrow::array::StringArray {
    let mut out = arrow::array::StringBuilder::with_capacity(micros.len(), micros.len() * 20);
    // (value, text), most recently formatted last; the oldest goes when it is full.
    let mut recent: Vec<(i64, String)> = Vec::with_capacity(RECENT);
    for v in micros.iter() {
        match v {
            None => out.append_null(),
            Some(m) => match recent.iter().rev().find(|(v, _)| *v == m) {
                Some((_, text)) => out.append_value(text),
                None => {
                    if recent.len() == RECENT {
                        recent.remove(0);
                    }
                    recent.push((m, format(m)));
                    out.append_value(&recent[recent.len() - 1].1);
                }
            },
        }
    }
    out.finish()
}

/// How many distinct formatted instants [`format_runs`] keeps at hand.
const RECENT: usize = 32;

/// Formats microseconds as `YYYY-MM-DDTHH:MM:SSZ` (with fractional seconds only when present).
pub fn format_micros(micros: i64) -> String {
    use chrono::{Datelike, Timelike};
    // Written out field by field: chrono's strftime parses its pattern on every call.
    match DateTime::from_timestamp_micros(micros) {
        Some(dt) => {
            let (d, t) = (dt.date_naive(), dt.time());
            let whole = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                d.year(),
                d.month(),
                d.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            match micros.rem_euclid(1_000_000) {
                0 => whole + "Z",
                frac => format!("{whole}.{frac:06}Z"),
            }
        }
        None => format!("<out of range: {micros}>"),
    }
}

/// The first instant of the calendar month (UTC) an instant falls in.
pub fn month_start(micros: i64) -> i64 {
    use chrono::Datelike;
    DateTime::from_timestamp_micros(micros)
        .and_then(|dt| NaiveDate::from_ymd_opt(dt.year(), dt.month(), 1))
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_micros()
        })
        .unwrap_or(micros)
}

/// `YYYY-MM` of an instant, the billing-period partition value.
pub fn year_month(micros: i64) -> String {
    use chrono::Datelike;
    DateTime::from_timestamp_micros(micros)
        .map(|dt| format!("{:04}-{:02}", dt.year(), dt.month()))
        .unwrap_or_else(|| "invalid".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    const NOV1: i64 = 1_698_796_800_000_000;

    #[test]
    fn formatting_through_the_recent_values_gives_each_value_its_own_text() {
        // Hours in shuffled order, more distinct values than are kept at hand, and NULLs.
        let values: Vec<Option<i64>> = (0..500i64)
            .map(|i| (i % 11 != 0).then(|| NOV1 + ((i * 37) % 50) * 3_600_000_000 + i % 3))
            .collect();
        let a = arrow::array::TimestampMicrosecondArray::from(values.clone());
        let got = format_runs(&a, format_micros);
        for (i, v) in values.iter().enumerate() {
            match v {
                None => assert!(got.is_null(i)),
                Some(m) => assert_eq!(got.value(i), format_micros(*m), "row {i}"),
            }
        }
    }

    #[test]
    fn accepts_the_shapes_exports_use() {
        for s in [
            "2023-11-01T00:00:00Z",
            "2023-11-01T00:00:00.000Z",
            "2023-11-01T00:00Z",
            "2023-11-01 00:00:00",
            "2023-11-01T00:00:00",
            "2023-11-01T01:00:00+01:00",
            "2023-11-01",
            "11/01/2023",
            "11/1/2023",
            "20231101",
            "202311",
            "2023-11-01 00:00:00 UTC",
        ] {
            assert_eq!(parse_micros(s), Ok(NOV1), "{s}");
        }
    }

    #[test]
    fn fractions_and_the_fast_path_agree_with_the_general_parser() {
        for s in [
            "2023-11-01T10:20:30.123456789Z",
            "2023-11-01 10:20:30.5",
            "2023-11-01T10:20:30.000123 UTC",
            "2024-02-29T23:59:59Z",
        ] {
            let general = NaiveDateTime::parse_from_str(
                s.trim_end_matches('Z').trim_end_matches(" UTC"),
                "%Y-%m-%d %H:%M:%S%.f",
            )
            .or_else(|_| {
                NaiveDateTime::parse_from_str(
                    s.trim_end_matches('Z').trim_end_matches(" UTC"),
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
            })
            .unwrap()
            .and_utc()
            .timestamp_micros();
            assert_eq!(parse_micros(s), Ok(general), "{s}");
        }
        assert!(parse_micros("2023-02-30T00:00:00Z").is_err());
        assert!(
            parse_micros("2023-11-01T10:20").is_err(),
            "minutes only need a Z"
        );
        assert_eq!(
            parse_micros("2023-11-01T01:00:00+01:00"),
            Ok(NOV1),
            "offsets take the general path"
        );
    }

    #[test]
    fn refuses_garbage_and_formats_back() {
        assert!(parse_micros("yesterday").is_err());
        assert!(parse_micros("2023-13-01").is_err());
        assert!(parse_micros("202313").is_err());
        assert_eq!(format_micros(NOV1), "2023-11-01T00:00:00Z");
        assert_eq!(year_month(NOV1), "2023-11");
    }
}
