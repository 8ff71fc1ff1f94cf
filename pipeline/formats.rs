//! Source formats: one SQL file per provider format in `sql/normalize/`.
//!
//! Each file starts with a header of `-- @key: value` lines that tells the reader how to
//! prepare the raw table the SQL runs over:
//!
//! | key | meaning |
//! |---|---|
//! | `@format` | the format's name (what `format = "..."` in a job names) |
//! | `@provider` | provider slug for partitioning and `x_SourceProvider` |
//! | `@layout` | `plain`, or `aws_cur` (snake_case column names, `product` map flattened, tags folded) |
//! | `@detect` | columns whose presence identifies the format (all must be present) |
//! | `@text` | text columns the SQL reads (added as NULL when a file lacks them) |
//! | `@decimal` | columns parsed exactly into Decimal128(38,18); a bad value quarantines the row |
//! | `@timestamp` | columns parsed into UTC microseconds; a bad value quarantines the row |
//! | `@null_values` | extra spellings of NULL besides the empty string (e.g. `NULL`) |
//! | `@source_total` | the source's own cost column, summed for the reconciliation |
//! | `@source_currency`, `@source_period`, `@source_account` | how the source groups that total |
//! | `@source_period_grain` | `month` when `@source_period` is a usage time, not a billing period start |

use std::collections::BTreeMap;

use crate::error::{Result, TallyError};
use crate::resources;

/// How a format's raw columns are laid out before the SQL sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Columns as in the file.
    Plain,
    /// OCI cost reports: `lineItem/referenceNo` headers become `line_item_reference_no`, and
    /// the `tags/<namespace>.<key>` columns fold into a `tags` JSON column (keys as OCI writes them).
    OciCost,
    /// AWS CUR: legacy `lineItem/UnblendedCost` headers become `line_item_unblended_cost`
    /// (the Athena/CUR 2.0 spelling, ARN → `a_r_n`), CUR 2.0's `product` map is flattened into
    /// `product_<key>` columns and resource tags (columns or map) are folded into a `tags`
    /// JSON column.
    AwsCur,
}

/// One source format: its SQL and how to read the raw table for it.
#[derive(Debug, Clone)]
pub struct Format {
    /// Name.
    pub name: String,
    /// Provider slug.
    pub provider: String,
    /// Path of the SQL file.
    pub sql_path: String,
    /// SQL text.
    pub sql: String,
    /// Raw layout.
    pub layout: Layout,
    /// Columns that identify the format.
    pub detect: Vec<String>,
    /// Text columns used by the SQL.
    pub text: Vec<String>,
    /// Decimal columns.
    pub decimal: Vec<String>,
    /// Timestamp columns.
    pub timestamp: Vec<String>,
    /// Extra NULL spellings.
    pub null_values: Vec<String>,
    /// Reconciliation: source cost column.
    pub source_total: String,
    /// Reconciliation: currency column.
    pub source_currency: String,
    /// Reconciliation: billing period column (a timestamp column).
    pub source_period: String,
    /// Partition of pre-SQL quarantined rows: billing account column.
    pub source_account: String,
    /// When the source has no billing period column: `month` keys the source total by the
    /// calendar month of `source_period` (the mapping must derive BillingPeriodStart the same way).
    pub source_period_grain: Option<String>,
}

impl Format {
    /// Parses a normalize SQL file's header.
    pub fn parse(sql_path: &str, sql: String) -> Result<Format> {
        let mut h: BTreeMap<String, String> = BTreeMap::new();
        for line in sql.lines() {
            let Some(rest) = line.trim().strip_prefix("-- @") else {
                continue;
            };
            let Some((k, v)) = rest.split_once(':') else {
                continue;
            };
            let e = h.entry(k.trim().to_string()).or_default();
            if !e.is_empty() {
                e.push(',');
            }
            e.push_str(v.trim());
        }
        let bad = |m: String| TallyError::Sql {
            file: sql_path.to_string(),
            message: m,
        };
        let one = |k: &str| {
            h.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("header lacks `-- @{k}:`")))
        };
        let list = |k: &str| -> Vec<String> {
            h.get(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let layout = match one("layout")?.as_str() {
            "plain" => Layout::Plain,
            "aws_cur" => Layout::AwsCur,
            "oci_cost" => Layout::OciCost,
            other => return Err(bad(format!("unknown @layout {other:?}"))),
        };
        let f = Format {
            name: one("format")?,
            provider: one("provider")?,
            sql_path: sql_path.to_string(),
            layout,
            detect: list("detect"),
            text: list("text"),
            decimal: list("decimal"),
            timestamp: list("timestamp"),
            null_values: list("null_values"),
            source_total: one("source_total")?,
            source_currency: one("source_currency")?,
            source_period: one("source_period")?,
            source_account: one("source_account")?,
            source_period_grain: h.get("source_period_grain").cloned(),
            sql,
        };
        if f.detect.is_empty() {
            return Err(bad("header needs `-- @detect:` columns".into()));
        }
        if !f.decimal.contains(&f.source_total) {
            return Err(bad(format!(
                "@source_total {} must be listed in @decimal",
                f.source_total
            )));
        }
        if !f.timestamp.contains(&f.source_period) {
            return Err(bad(format!(
                "@source_period {} must be listed in @timestamp",
                f.source_period
            )));
        }
        Ok(f)
    }

    /// Every raw column the SQL may reference.
    pub fn declared_columns(&self) -> impl Iterator<Item = &String> {
        self.text.iter().chain(&self.decimal).chain(&self.timestamp)
    }
}

/// All known formats, in a stable order.
pub fn all() -> Result<Vec<Format>> {
    let mut out = Vec::new();
    for path in resources::list("sql/normalize/") {
        out.push(Format::parse(path, resources::load(path)?)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds a format by name.
pub fn by_name(name: &str) -> Result<Format> {
    let all = all()?;
    let names: Vec<_> = all.iter().map(|f| f.name.clone()).collect();
    all.into_iter().find(|f| f.name == name).ok_or_else(|| {
        TallyError::Usage(format!(
            "unknown format {name:?}; known: {}",
            names.join(", ")
        ))
    })
}

/// Picks the format whose `@detect` columns are all in `columns` (already in that format's layout).
/// Refuses a file that matches none, or more than one.
pub fn detect<'a>(candidates: &'a [(Format, Vec<String>)], file: &str) -> Result<&'a Format> {
    let hits: Vec<&Format> = candidates
        .iter()
        .filter(|(f, cols)| f.detect.iter().all(|d| cols.contains(d)))
        .map(|(f, _)| f)
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(TallyError::BadFile {
            file: file.to_string(),
            message: format!(
                "cannot tell which export format this is: its header matches none of {}; name one with `format = \"...\"`",
                candidates
                    .iter()
                    .map(|(f, _)| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        many => Err(TallyError::BadFile {
            file: file.to_string(),
            message: format!(
                "header matches several formats ({}); name one with `format = \"...\"`",
                many.iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_format_parses() {
        let all = all().unwrap();
        assert!(all.iter().any(|f| f.name == "aws_cur"));
        assert!(all.iter().any(|f| f.name == "focus"));
    }

    #[test]
    fn header_errors_name_the_key() {
        let e = Format::parse("x.sql", "-- @format: x\nSELECT 1".into()).unwrap_err();
        assert!(
            e.to_string().contains("@layout") || e.to_string().contains("@provider"),
            "{e}"
        );
    }
}
