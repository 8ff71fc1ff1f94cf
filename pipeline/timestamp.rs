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

/// Formats microseconds as `YYYY-MM-DDTHH:MM:SSZ` (with fractional seconds only when present).
pub fn format_micros(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(dt) if micros % 1_000_000 == 0 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
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
    DateTime::from_timestamp_micros(micros)
        .map(|dt| dt.format("%Y-%m").to_string())
        .unwrap_or_else(|| "invalid".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV1: i64 = 1_698_796_800_000_000;

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
    fn refuses_garbage_and_formats_back() {
        assert!(parse_micros("yesterday").is_err());
        assert!(parse_micros("2023-13-01").is_err());
        assert!(parse_micros("202313").is_err());
        assert_eq!(format_micros(NOV1), "2023-11-01T00:00:00Z");
        assert_eq!(year_month(NOV1), "2023-11");
    }
}
