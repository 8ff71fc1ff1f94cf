//! `tally validate`: strict FOCUS 1.4 checks on any FOCUS file or tally table, reported per rule.
//!
//! Works on partial column sets (the spec's worked examples have a dozen columns): a rule runs
//! when every column it reads is present, and is reported as skipped otherwise. Beyond the row
//! rules, it checks the columns themselves (missing Mandatory columns; custom columns without the
//! `x_` prefix) and runs the dataset rules in `sql/checks/` (e.g. commitment balance).

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::datasource::MemTable;
use serde::Serialize;

use crate::error::{Result, TallyError};
use crate::formats::{Format, Layout};
use crate::schema::{FocusSchema, FocusType};
use crate::source::layout::Adapter;
use crate::source::read;
use crate::source::typing::{SourceTally, Typer};
use crate::storage::{self, FileKind};
use crate::table::{self, names};
use crate::{normalize, resources};

/// Outcome of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    /// Rule id.
    pub id: String,
    /// `pass`, `fail` or `skipped`.
    pub status: String,
    /// Rows (or commitments, for dataset rules) that break it.
    pub violations: u64,
    /// What the rule requires, or why it was skipped.
    pub message: String,
    /// Up to five examples (row numbers and values, or dataset rule result rows).
    pub examples: Vec<String>,
}

/// A validation report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was validated.
    pub target: String,
    /// Rows read.
    pub rows: u64,
    /// Every rule, in order.
    pub rules: Vec<RuleResult>,
}

impl Report {
    /// Rules that failed.
    pub fn failures(&self) -> impl Iterator<Item = &RuleResult> {
        self.rules.iter().filter(|r| r.status == "fail")
    }
}

fn references(sql: &str, column: &str) -> bool {
    let b = sql.as_bytes();
    let mut start = 0;
    while let Some(i) = sql[start..].find(column) {
        let s = start + i;
        let e = s + column.len();
        let before = s == 0 || !(b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_');
        let after = e >= b.len() || !(b[e].is_ascii_alphanumeric() || b[e] == b'_');
        if before && after {
            return true;
        }
        start = e;
    }
    false
}

/// Validates a FOCUS file (CSV, CSV.gz, Parquet) or a tally output root / Delta table.
pub async fn validate(target: &str) -> Result<Report> {
    let schema = FocusSchema::load()?;
    let url = crate::job::resolve_url(target, &std::env::current_dir().unwrap_or_default());
    let ctx = normalize::session()?;
    let mut rules = Vec::new();
    let (columns, rows) = if let Some(path) = url
        .strip_prefix("file://")
        .filter(|p| std::path::Path::new(p).join("_delta_log").exists())
    {
        let u = table::table_url(&format!("file://{path}"), "")?;
        if !table::register(&ctx, names::COST_AND_USAGE, &u, None).await? {
            return Err(TallyError::Usage(format!("{target}: not a Delta table")));
        }
        table_columns_and_rows(&ctx).await?
    } else if let Some(path) = url.strip_prefix("file://").filter(|p| {
        std::path::Path::new(p)
            .join(names::COST_AND_USAGE)
            .join("_delta_log")
            .exists()
    }) {
        let u = table::table_url(&format!("file://{path}"), names::COST_AND_USAGE)?;
        table::register(&ctx, names::COST_AND_USAGE, &u, None).await?;
        table_columns_and_rows(&ctx).await?
    } else {
        load_file(&ctx, &schema, &url, &mut rules).await?
    };

    // Columns.
    let missing: Vec<&str> = schema
        .focus
        .iter()
        .filter(|c| c.level == "Mandatory" && !columns.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    rules.push(RuleResult {
        id: "Mandatory-columns-present".into(),
        status: if missing.is_empty() { "pass" } else { "fail" }.into(),
        violations: missing.len() as u64,
        message: "every Mandatory FOCUS 1.4 column is present".into(),
        examples: missing.iter().map(|s| s.to_string()).collect(),
    });
    let custom: Vec<&String> = columns
        .iter()
        .filter(|c| {
            schema.column(c).is_none()
                && !c.starts_with("x_")
                && *c != "ProviderName"
                && *c != "PublisherName"
        })
        .collect();
    rules.push(RuleResult {
        id: "Custom-columns-x-prefixed".into(),
        status: if custom.is_empty() { "pass" } else { "fail" }.into(),
        violations: custom.len() as u64,
        message: "columns that are not FOCUS columns must start with x_ (ColumnHandling)".into(),
        examples: custom.iter().map(|s| s.to_string()).collect(),
    });

    // Row rules.
    let names: Vec<&str> = schema.columns().map(|c| c.name.as_str()).collect();
    for rule in &schema.rules {
        let needed: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| references(&rule.sql, n))
            .collect();
        let absent: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|n| !columns.iter().any(|c| c == n))
            .collect();
        if !absent.is_empty() {
            rules.push(RuleResult {
                id: rule.id.clone(),
                status: "skipped".into(),
                violations: 0,
                message: format!("needs {}", absent.join(", ")),
                examples: vec![],
            });
            continue;
        }
        let row_col = if columns.iter().any(|c| c == "x_SourceRow") {
            "x_SourceRow"
        } else {
            "NULL"
        };
        let file_col = if columns.iter().any(|c| c == "x_SourceFile") {
            "x_SourceFile"
        } else {
            "NULL"
        };
        let sql = format!(
            "SELECT CAST({row_col} AS BIGINT) AS r, CAST({} AS VARCHAR) AS v, CAST({file_col} AS VARCHAR) AS f FROM {} WHERE NOT coalesce(({}), false)",
            if columns.contains(&rule.column) {
                rule.column.as_str()
            } else {
                "NULL"
            },
            names::COST_AND_USAGE,
            rule.sql
        );
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| TallyError::Sql {
                file: format!("rule {}", rule.id),
                message: e.to_string(),
            })?
            .collect()
            .await?;
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut examples = Vec::new();
        for b in &batches {
            let r = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64");
            for i in 0..b.num_rows().min(5 - examples.len().min(5)) {
                let v =
                    arrow::util::display::array_value_to_string(b.column(1), i).unwrap_or_default();
                let row = if r.is_null(i) {
                    "?".into()
                } else {
                    r.value(i).to_string()
                };
                let file =
                    arrow::util::display::array_value_to_string(b.column(2), i).unwrap_or_default();
                let at = if file.is_empty() {
                    String::new()
                } else {
                    format!("{file} ")
                };
                examples.push(format!("{at}row {row}: {}={v:?}", rule.column));
            }
        }
        rules.push(RuleResult {
            id: rule.id.clone(),
            status: if n == 0 { "pass" } else { "fail" }.into(),
            violations: n as u64,
            message: rule.reason.clone(),
            examples,
        });
    }

    // Dataset rules.
    for path in resources::list("sql/checks/") {
        let sql = resources::load(path)?;
        let header = |k: &str| -> Vec<String> {
            sql.lines()
                .filter_map(|l| l.trim().strip_prefix(&format!("-- @{k}:")))
                .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
                .filter(|s| !s.is_empty())
                .collect()
        };
        let id = header("rule")
            .into_iter()
            .next()
            .unwrap_or_else(|| path.to_string());
        let absent: Vec<String> = header("needs")
            .into_iter()
            .filter(|n| !columns.contains(n))
            .collect();
        if !absent.is_empty() {
            rules.push(RuleResult {
                id,
                status: "skipped".into(),
                violations: 0,
                message: format!("needs {}", absent.join(", ")),
                examples: vec![],
            });
            continue;
        }
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| TallyError::Sql {
                file: path.to_string(),
                message: e.to_string(),
            })?
            .collect()
            .await?;
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut examples = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let parts: Vec<String> = b
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(c, f)| {
                        format!(
                            "{}={}",
                            f.name(),
                            arrow::util::display::array_value_to_string(b.column(c), i)
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                examples.push(parts.join(", "));
            }
        }
        let first = sql
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("-- ")
            .to_string();
        rules.push(RuleResult {
            id,
            status: if n == 0 { "pass" } else { "fail" }.into(),
            violations: n as u64,
            message: first,
            examples,
        });
    }
    Ok(Report {
        target: url,
        rows,
        rules,
    })
}

async fn table_columns_and_rows(
    ctx: &datafusion::prelude::SessionContext,
) -> Result<(Vec<String>, u64)> {
    let df = ctx.table(names::COST_AND_USAGE).await?;
    let cols = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let rows = df.count().await? as u64;
    Ok((cols, rows))
}

/// Reads a FOCUS file with its FOCUS columns typed, registers it as `cost_and_usage`, and records
/// values that do not parse as violations of `parse-decimal` / `parse-timestamp`.
async fn load_file(
    ctx: &datafusion::prelude::SessionContext,
    schema: &FocusSchema,
    url: &str,
    rules: &mut Vec<RuleResult>,
) -> Result<(Vec<String>, u64)> {
    let loc = storage::open(url)?;
    let files = storage::discover(&loc).await?;
    let [file] = files.as_slice() else {
        return Err(TallyError::Usage(format!(
            "{url}: expected one CSV or Parquet file or a tally table"
        )));
    };
    let names = normalize::header(&loc, file).await?;
    let of = |t: FocusType| -> Vec<String> {
        names
            .iter()
            .filter(|n| schema.column(n).is_some_and(|c| c.ty == t))
            .cloned()
            .collect()
    };
    let mut text: Vec<String> = names
        .iter()
        .filter(|n| !of(FocusType::Decimal).contains(n) && !of(FocusType::DateTime).contains(n))
        .cloned()
        .collect();
    text.retain(|n| n != "x_SourceRow");
    let format = Format {
        name: "focus-validate".into(),
        provider: "focus".into(),
        sql_path: String::new(),
        sql: String::new(),
        layout: Layout::Plain,
        detect: vec![],
        text,
        decimal: of(FocusType::Decimal),
        timestamp: of(FocusType::DateTime),
        null_values: vec!["NULL".into(), "null".into()],
        source_total: "BilledCost".into(),
        source_currency: "BillingCurrency".into(),
        source_period: "BillingPeriodStart".into(),
        source_account: "BillingAccountId".into(),
        source_period_grain: None,
        params: vec![],
        measure_spec: (crate::formats::Measure::BilledCost, vec![]),
        measure: crate::formats::Measure::BilledCost,
        aliases: vec![],
        template: String::new(),
        records: vec![],
    };
    let adapter = Adapter::new(&format, &names);
    let typer = Typer::new(&format, adapter.names(), &names, &file.url, "");
    let mut tally = SourceTally::default();
    let mut quarantined = Vec::new();
    let mut typed = Vec::new();
    let mut next = 1u64;
    let mut push = |b: RecordBatch| {
        let t = typer.apply(&adapter.apply(&b), next, &mut tally, &mut quarantined);
        next += b.num_rows() as u64;
        typed.push(t);
    };
    match file.kind {
        FileKind::Parquet => {
            use futures::StreamExt;
            let (mut s, _) = read::open_parquet(&loc, file, None).await?;
            while let Some(b) = s.next().await {
                push(b?);
            }
        }
        _ => {
            let mut reader = read::spawn_csv(&loc, file, read::text_schema(&names), None).await?;
            while let Some(b) = reader.next().await {
                push(b?);
            }
            reader.finish().await?;
        }
    }
    for kind in ["parse-decimal", "parse-timestamp"] {
        let bad: Vec<_> = quarantined.iter().filter(|q| q.rule == kind).collect();
        rules.push(RuleResult {
            id: kind.into(),
            status: if bad.is_empty() { "pass" } else { "fail" }.into(),
            violations: bad.len() as u64,
            message: "Decimal and Date/Time columns parse exactly".into(),
            examples: bad
                .iter()
                .take(5)
                .map(|q| format!("row {}: {}: {}", q.row, q.column, q.reason))
                .collect(),
        });
    }
    let mem = MemTable::try_new(typer.schema(), vec![typed])?;
    ctx.register_table(names::COST_AND_USAGE, Arc::new(mem))?;
    let mut cols: Vec<String> = names.clone();
    cols.push("x_SourceRow".into());
    Ok((cols, tally.rows))
}

#[cfg(test)]
mod tests {
    use super::references;

    #[test]
    fn column_references_match_whole_words() {
        assert!(references("ListCost IS NULL", "ListCost"));
        assert!(!references(
            "PricingCurrencyListUnitPrice >= 0",
            "ListUnitPrice"
        ));
        assert!(references("coalesce(ListUnitPrice, 0)", "ListUnitPrice"));
    }
}
