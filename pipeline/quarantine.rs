//! The quarantine table: every row tally refused, with where it came from and why.
//!
//! A row is never dropped silently: a value that cannot be parsed, or a row that breaks a
//! FOCUS rule, is written here with the file, the record number, the column, the rule and the
//! reason, plus the whole record as JSON so nothing is lost. The manifest counts these rows by
//! rule and adds their amounts to the reconciliation.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::decimal;

/// One refused row.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    /// Provider slug.
    pub provider: String,
    /// Format name.
    pub format: String,
    /// File URL.
    pub file: String,
    /// 1-based record number.
    pub row: u64,
    /// The column at fault.
    pub column: String,
    /// Rule id (`parse-decimal`, `not-null`, `allowed-values`, or a rule from the rules file).
    pub rule: String,
    /// Human-readable reason.
    pub reason: String,
    /// The offending value as text, when there is one.
    pub value: Option<String>,
    /// The record as a JSON object (source columns before mapping, FOCUS columns after).
    pub record: String,
    /// Partition: billing account ([`unknown_in`] the file when it cannot be read).
    pub account: String,
    /// Partition: billing period `YYYY-MM` ([`unknown_in`] the file when it cannot be read).
    pub period: String,
    /// Reconciliation key: billing period start, RFC 3339 (`unknown` when it cannot be read).
    pub period_start: String,
    /// Reconciliation key: currency.
    pub currency: String,
    /// The row's amount for the reconciliation (BilledCost; before mapping, the source's cost when that is its measure).
    pub amount: Option<i128>,
    /// The row's EffectiveCost for the reconciliation of sources whose total is EffectiveCost.
    pub effective_amount: Option<i128>,
    /// Ingestion id of the file.
    pub ingestion_id: String,
}

/// The partition value for a quarantined row whose account or billing period cannot be read:
/// `unknown-<8 hex of the file URL>`, so that only a rerun of the same file replaces it.
pub fn unknown_in(file: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "unknown-{}",
        &hex::encode(Sha256::digest(file.as_bytes()))[..8]
    )
}

/// Arrow schema of the quarantine table.
pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("x_SourceProvider", false),
        s("x_SourceFormat", false),
        s("x_SourceFile", false),
        Field::new("x_SourceRow", DataType::Int64, false),
        s("ColumnName", false),
        s("RuleId", false),
        s("Reason", false),
        s("Value", true),
        s("Record", false),
        s("BillingAccountId", false),
        s("x_BillingPeriod", false),
        s("BillingPeriodStart", false),
        s("BillingCurrency", false),
        Field::new("Amount", decimal::data_type(), true),
        s("x_IngestionRunId", false),
    ]))
}

/// Builds a batch of quarantine rows.
pub fn to_batch(rows: &[QuarantineRow]) -> RecordBatch {
    let strs = |f: &dyn Fn(&QuarantineRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let mut row = Int64Builder::new();
    let mut amount = Decimal128Builder::new();
    for r in rows {
        row.append_value(r.row as i64);
        amount.append_option(r.amount);
    }
    let amount = amount
        .finish()
        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
        .expect("decimal type");
    RecordBatch::try_new(
        schema(),
        vec![
            strs(&|r| Some(&r.provider)),
            strs(&|r| Some(&r.format)),
            strs(&|r| Some(&r.file)),
            Arc::new(row.finish()),
            strs(&|r| Some(&r.column)),
            strs(&|r| Some(&r.rule)),
            strs(&|r| Some(&r.reason)),
            strs(&|r| r.value.as_deref()),
            strs(&|r| Some(&r.record)),
            strs(&|r| Some(&r.account)),
            strs(&|r| Some(&r.period)),
            strs(&|r| Some(&r.period_start)),
            strs(&|r| Some(&r.currency)),
            Arc::new(amount),
            strs(&|r| Some(&r.ingestion_id)),
        ],
    )
    .expect("quarantine batch matches its schema")
}
