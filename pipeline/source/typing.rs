//! Typing: all-text source columns → the typed raw table a mapping SQL runs over.
//!
//! Columns the format declares `@decimal` are parsed exactly into Decimal128(38,18) and
//! `@timestamp` columns into UTC microseconds; a value that does not parse sends its row to
//! quarantine (file, row, column, reason, whole record) instead of failing the run or being
//! guessed. Empty strings and the format's `@null_values` become NULL. Columns the SQL uses
//! but the file lacks are added as NULL, so exports with fewer optional columns still map.
//! The source's own cost total is summed here, before any mapping, for the reconciliation.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Builder, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef, TimeUnit};

use crate::decimal;
use crate::formats::{Format, Measure};
use crate::quarantine::QuarantineRow;
use crate::timestamp;

/// Name of the record-number column every raw table carries.
pub const SOURCE_ROW: &str = "x_SourceRow";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Decimal,
    Timestamp,
}

/// Reconciliation key: (provider, billing period start RFC 3339, currency, measure).
pub type TotalKey = (String, String, String, Measure);

/// Per-file facts gathered while typing.
#[derive(Debug, Default, Clone)]
pub struct SourceTally {
    /// Rows read.
    pub rows: u64,
    /// The source's own total of its cost column, per billing period and currency.
    pub totals: BTreeMap<TotalKey, i128>,
    /// Rows whose source cost could not be parsed (they are quarantined).
    pub unparseable_amounts: u64,
    /// A sum overflowed Decimal128 (the run fails rather than wrap).
    pub overflowed: bool,
}

/// The typing plan for one file.
pub struct Typer {
    plan: Vec<(String, Kind, Option<usize>)>,
    null_values: Vec<String>,
    /// Column names as the file spells them (derived columns keep their own name).
    names: Vec<String>,
    schema: SchemaRef,
    total: Option<usize>,
    currency: Option<usize>,
    period: Option<usize>,
    account: Option<usize>,
    measure: Measure,
    monthly: bool,
    provider: String,
    format: String,
    file: String,
    ingestion_id: String,
    keep_refused: bool,
}

/// The Arrow type tally gives every timestamp.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Typer {
    /// Plans typing for a file whose (adapted) columns are `names`; `original` are the file's
    /// own column names (a prefix of `names` after renaming), used in quarantine records so they
    /// name columns as the user's file does.
    pub fn new(
        format: &Format,
        names: &[String],
        original: &[String],
        file: &str,
        ingestion_id: &str,
    ) -> Typer {
        let idx = |c: &str| names.iter().position(|n| n == c);
        let mut plan = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (list, kind) in [
            (&format.text, Kind::Text),
            (&format.decimal, Kind::Decimal),
            (&format.timestamp, Kind::Timestamp),
        ] {
            for c in list {
                if seen.insert(c.clone()) {
                    plan.push((c.clone(), kind, idx(c)));
                }
            }
        }
        let mut fields: Vec<Field> = plan
            .iter()
            .map(|(n, k, _)| {
                let t = match k {
                    Kind::Text => DataType::Utf8,
                    Kind::Decimal => decimal::data_type(),
                    Kind::Timestamp => timestamp_type(),
                };
                Field::new(n, t, true)
            })
            .collect();
        fields.push(Field::new(SOURCE_ROW, DataType::Int64, false));
        Typer {
            null_values: format.null_values.clone(),
            names: names
                .iter()
                .enumerate()
                .map(|(i, n)| original.get(i).unwrap_or(n).clone())
                .collect(),
            schema: Arc::new(Schema::new(fields)),
            total: idx(&format.source_total),
            currency: idx(&format.source_currency),
            period: idx(&format.source_period),
            account: idx(&format.source_account),
            measure: format.measure,
            monthly: format.source_period_grain.as_deref() == Some("month"),
            provider: format.provider.clone(),
            format: format.name.clone(),
            file: file.to_string(),
            ingestion_id: ingestion_id.to_string(),
            keep_refused: false,
            plan,
        }
    }

    /// Keeps refused rows in the typed batches (their bad values NULL) instead of filtering them
    /// out, so the mapping still sees them: the run then quarantines them with the amount the
    /// mapping gives them, which keeps folded pairs (AWS SavingsPlanNegation) balanced.
    pub fn keeping_refused_rows(mut self) -> Typer {
        self.keep_refused = true;
        self
    }

    /// Schema of the typed raw table.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    #[inline]
    fn text<'a>(&self, col: &'a StringArray, r: usize) -> Option<&'a str> {
        if col.is_null(r) {
            return None;
        }
        let v = col.value(r);
        if v.is_empty() || self.null_values.iter().any(|n| n == v) {
            None
        } else {
            Some(v)
        }
    }

    /// Types one batch; `first_row` is the 1-based record number of its first row.
    pub fn apply(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        tally: &mut SourceTally,
        quarantine: &mut Vec<QuarantineRow>,
    ) -> RecordBatch {
        let n = batch.num_rows();
        let text_col = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text batch")
        };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.plan.len() + 1);
        let mut problems: Vec<(usize, String, String, String)> = Vec::new(); // row, column, reason, value
        for (name, kind, src) in &self.plan {
            let col = src.map(text_col);
            let shown = src
                .map(|i| self.names[i].clone())
                .unwrap_or_else(|| name.clone());
            match kind {
                Kind::Text => match col {
                    // Most text columns hold no empty strings or null markers: hand the
                    // column over as it is, and otherwise only mask those values NULL.
                    Some(c) => {
                        let nullish = |r: usize| c.is_valid(r) && self.text(c, r).is_none();
                        if !(0..n).any(nullish) {
                            cols.push(Arc::new(c.clone()));
                        } else {
                            let mask: BooleanArray = (0..n).map(|r| Some(nullish(r))).collect();
                            cols.push(arrow::compute::nullif(c, &mask).expect("same length"));
                        }
                    }
                    None => cols.push(arrow::array::new_null_array(&DataType::Utf8, n)),
                },
                Kind::Decimal => {
                    let mut b = Decimal128Builder::with_capacity(n);
                    for r in 0..n {
                        match col.and_then(|c| self.text(c, r)) {
                            None => b.append_null(),
                            Some(t) => match decimal::parse(t) {
                                Ok(v) => b.append_value(v),
                                Err(e) => {
                                    problems.push((r, shown.clone(), e, t.to_string()));
                                    b.append_null();
                                }
                            },
                        }
                    }
                    let a = b
                        .finish()
                        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
                        .expect("type");
                    cols.push(Arc::new(a));
                }
                Kind::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                    // Exports repeat a time row after row (the hour, the billing period).
                    let mut last: Option<(&str, i64)> = None;
                    for r in 0..n {
                        match col.and_then(|c| self.text(c, r)) {
                            None => b.append_null(),
                            Some(t) if last.is_some_and(|(lt, _)| lt == t) => {
                                b.append_value(last.expect("checked").1)
                            }
                            Some(t) => match timestamp::parse_micros(t) {
                                Ok(v) => {
                                    last = Some((t, v));
                                    b.append_value(v)
                                }
                                Err(e) => {
                                    problems.push((r, shown.clone(), e, t.to_string()));
                                    b.append_null();
                                }
                            },
                        }
                    }
                    cols.push(Arc::new(b.finish()));
                }
            }
        }
        cols.push(Arc::new(Int64Array::from_iter_values(
            (0..n as i64).map(|r| first_row as i64 + r),
        )));

        // The source's own totals, over every row (quarantined or not). Rows come in runs of
        // one period and currency: each run's key is built once and its amounts summed before
        // they reach the map. The amount is the typed value when the total is a typed column.
        let total_typed = self.total.and_then(|ti| {
            self.plan
                .iter()
                .position(|(_, k, s)| *k == Kind::Decimal && *s == Some(ti))
                .map(|p| cols[p].as_primitive::<Decimal128Type>().clone())
        });
        let amount_at = |r: usize| -> Option<i128> {
            match &total_typed {
                Some(a) => a.is_valid(r).then(|| a.value(r)),
                None => self
                    .text_at(batch, self.total, r)
                    .and_then(|t| decimal::parse(t).ok()),
            }
        };
        let mut keys = KeyMemo::default();
        let mut run: Option<(TotalKey, i128)> = None;
        let flush = |run: &mut Option<(TotalKey, i128)>, tally: &mut SourceTally| {
            if let Some((key, sum)) = run.take()
                && crate::decimal::accumulate(&mut tally.totals, key, sum).is_err()
            {
                tally.overflowed = true;
            }
        };
        for r in 0..n {
            let Some(a) = amount_at(r) else {
                if self.text_at(batch, self.total, r).is_some() {
                    tally.unparseable_amounts += 1;
                }
                continue;
            };
            let key = keys.key(self, batch, r);
            match &mut run {
                Some((k, sum)) if *k == *key => match sum.checked_add(a) {
                    Some(v) => *sum = v,
                    None => {
                        flush(&mut run, tally);
                        run = Some((key.clone(), a));
                    }
                },
                _ => {
                    flush(&mut run, tally);
                    run = Some((key.clone(), a));
                }
            }
        }
        flush(&mut run, tally);
        tally.rows += n as u64;

        let mut ok = vec![true; n];
        for p in &problems {
            ok[p.0] = false;
        }
        problems.sort_by_key(|p| p.0);
        let mut last = usize::MAX;
        for (r, column, reason, value) in problems {
            if r == last {
                continue; // one quarantine record per row: its first bad value
            }
            last = r;
            let (key, amount) = (keys.key(self, batch, r).clone(), amount_at(r));
            let account = self
                .text_at(batch, self.account, r)
                .map(str::to_string)
                .unwrap_or_else(|| crate::quarantine::unknown_in(&self.file));
            let period = if key.1 == "unknown" {
                crate::quarantine::unknown_in(&self.file)
            } else {
                key.1[..7].to_string()
            };
            quarantine.push(QuarantineRow {
                provider: self.provider.clone(),
                format: self.format.clone(),
                file: self.file.clone(),
                row: first_row + r as u64,
                rule: if reason.starts_with("not a timestamp") {
                    "parse-timestamp"
                } else {
                    "parse-decimal"
                }
                .into(),
                column,
                reason,
                value: Some(value),
                record: self.record_json(batch, r),
                account,
                period,
                period_start: key.1.clone(),
                currency: key.2.clone(),
                amount: amount.filter(|_| self.measure == Measure::BilledCost),
                effective_amount: amount.filter(|_| self.measure == Measure::EffectiveCost),
                ingestion_id: self.ingestion_id.clone(),
            });
        }

        let out = RecordBatch::try_new(self.schema.clone(), cols)
            .expect("typed batch matches its schema");
        if self.keep_refused || ok.iter().all(|k| *k) {
            out
        } else {
            arrow::compute::filter_record_batch(&out, &BooleanArray::from(ok)).expect("filter")
        }
    }

    /// The text of column `i` (when the file has it) in row `r`, NULL markers as `None`.
    fn text_at<'a>(&self, batch: &'a RecordBatch, i: Option<usize>, r: usize) -> Option<&'a str> {
        let col = batch
            .column(i?)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text batch");
        self.text(col, r)
    }

    /// The reconciliation key of a row with this period and currency text.
    fn total_key(&self, period: Option<&str>, currency: Option<&str>) -> TotalKey {
        let period = period
            .and_then(|t| timestamp::parse_micros(t).ok())
            .map(|m| {
                if self.monthly {
                    timestamp::month_start(m)
                } else {
                    m
                }
            })
            .map(timestamp::format_micros)
            .unwrap_or_else(|| "unknown".into());
        let currency = currency.unwrap_or("unknown");
        (
            self.provider.clone(),
            period,
            currency.to_string(),
            self.measure,
        )
    }

    fn record_json(&self, batch: &RecordBatch, r: usize) -> String {
        let mut m = serde_json::Map::new();
        for (i, name) in self.names.iter().enumerate() {
            let c = batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text");
            if !c.is_null(r) && !c.value(r).is_empty() {
                m.insert(name.clone(), c.value(r).into());
            }
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// The last row's period and currency text and the key built from them: consecutive rows of
/// one period and currency (nearly all of them) reuse it.
#[derive(Default)]
struct KeyMemo {
    last: Option<(Option<String>, Option<String>, TotalKey)>,
}

impl KeyMemo {
    fn key(&mut self, typer: &Typer, batch: &RecordBatch, r: usize) -> &TotalKey {
        let period = typer.text_at(batch, typer.period, r);
        let currency = typer.text_at(batch, typer.currency, r);
        let same = self
            .last
            .as_ref()
            .is_some_and(|(p, c, _)| p.as_deref() == period && c.as_deref() == currency);
        if !same {
            let key = typer.total_key(period, currency);
            self.last = Some((
                period.map(str::to_string),
                currency.map(str::to_string),
                key,
            ));
        }
        &self.last.as_ref().expect("set above").2
    }
}
