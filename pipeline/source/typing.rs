//! Typing: all-text source columns → the typed raw table a mapping SQL runs over.
//!
//! Columns the format declares `@decimal` are parsed exactly into Decimal128(38,18) and
//! `@timestamp` columns into UTC microseconds; a value that does not parse sends its row to
//! quarantine (file, row, column, reason, whole record) instead of failing the run or being
//! guessed. Empty strings and the format's `@null_values` become NULL. Columns the SQL uses
//! but the file lacks are added as NULL, so exports with fewer optional columns still map.
//! The source's own cost total is summed here, before any mapping, for the reconciliation.
//!
//! Parquet doubles and timestamps may arrive typed rather than as text (see
//! [`Typer::typed_columns`]). They are typed to exactly the values their text would have given:
//! a double still goes through its shortest round-trip text and the decimal parser (no float
//! arithmetic), and a timestamp is taken as it is only where its text is known to parse back to
//! it (years 1000–9999, no null marker that reads as a time); others go through the text.

use std::borrow::Cow;
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
    /// Whether a null marker is a number, which a double's text could be: then every double
    /// goes through its text.
    numeric_null_marker: bool,
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
    /// Instants whose RFC 3339 text parses back to them, so a typed timestamp in this range is
    /// taken as it is (the text route would give the same value); `None` when a null marker
    /// reads as a time, so every typed timestamp takes the text route.
    exact_instants: Option<std::ops::RangeInclusive<i64>>,
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
            numeric_null_marker: format.null_values.iter().any(|v| decimal::parse(v).is_ok()),
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
            exact_instants: (!format
                .null_values
                .iter()
                .any(|v| timestamp::parse_micros(v).is_ok()))
            .then(|| {
                let at = |t: &str| timestamp::parse_micros(t).expect("a valid instant");
                at("1000-01-01T00:00:00Z")..=at("9999-12-31T23:59:59.999999Z")
            }),
            plan,
        }
    }

    /// Which of the `n` adapted columns a reader may hand over typed (Parquet doubles and
    /// timestamps): the decimal and timestamp columns of the plan, but the source period, which
    /// the reconciliation keys read as text row by row.
    pub fn typed_columns(&self, n: usize) -> Vec<bool> {
        let mut typed = vec![false; n];
        for (_, kind, src) in &self.plan {
            if let (Kind::Decimal | Kind::Timestamp, Some(i)) = (kind, src)
                && Some(*i) != self.period
                && Some(*i) != self.currency
                && Some(*i) != self.account
                && *i < n
            {
                typed[*i] = true;
            }
        }
        typed
    }

    /// Appends each of the `n` rows of a text column (NULL when absent, empty or a null marker) parsed by
    /// `parse`, recording values that do not parse in `problems`; a run of equal texts is
    /// parsed once.
    fn parse_texts<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        n: usize,
        col: Option<&StringArray>,
        b: &mut arrow::array::PrimitiveBuilder<T>,
        parse: impl Fn(&str) -> std::result::Result<T::Native, String>,
        shown: &str,
        problems: &mut Vec<Problem>,
    ) {
        let mut last: Option<(&str, T::Native)> = None;
        for r in 0..n {
            match col.and_then(|c| self.text(c, r)) {
                None => b.append_null(),
                Some(t) if last.is_some_and(|(lt, _)| lt == t) => {
                    b.append_value(last.expect("checked").1)
                }
                Some(t) => {
                    if let Some(v) = push_parsed(b, t, parse(t), (r, shown), problems) {
                        last = Some((t, v));
                    }
                }
            }
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
        self.text_value(col.value(r))
    }

    /// A cell's text, `None` when it is empty or a null marker.
    #[inline]
    fn text_value<'a>(&self, v: &'a str) -> Option<&'a str> {
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
        // A typed column the plan reads as text (not one `typed_columns` names, but the
        // reader's choice is not the typer's to assume) becomes text when first read so.
        let texts: Vec<std::cell::OnceCell<ArrayRef>> = (0..batch.num_columns())
            .map(|_| Default::default())
            .collect();
        let text_col = |i: usize| {
            let c = batch.column(i);
            let c = if c.data_type() == &DataType::Utf8 {
                c
            } else {
                texts[i].get_or_init(|| {
                    // Only doubles and timestamps stay typed, and both always have text.
                    crate::source::read::column_text(c).expect("typed columns have text")
                })
            };
            c.as_any()
                .downcast_ref::<StringArray>()
                .expect("text column")
        };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.plan.len() + 1);
        let mut problems: Vec<Problem> = Vec::new();
        for (name, kind, src) in &self.plan {
            // Read as text only by the arms that read text (a typed column is not turned into it).
            let col = || src.map(text_col);
            let shown = src
                .map(|i| self.names[i].clone())
                .unwrap_or_else(|| name.clone());
            match kind {
                Kind::Text => match col() {
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
                Kind::Decimal if src.is_some_and(|i| is_double(batch.column(i))) => {
                    let f = batch
                        .column(src.expect("checked"))
                        .as_primitive::<arrow::datatypes::Float64Type>();
                    let mut b = Decimal128Builder::with_capacity(n);
                    let mut text = ryu::Buffer::new();
                    // Rates and prices repeat row after row: the last double typed, by its bits.
                    let mut last: Option<(u64, i128)> = None;
                    for r in 0..n {
                        if f.is_null(r) {
                            b.append_null();
                            continue;
                        }
                        let x = f.value(r);
                        if let Some((bits, v)) = last
                            && bits == x.to_bits()
                        {
                            b.append_value(v);
                            continue;
                        }
                        // The value of the very text the reader would have written for it.
                        if !self.numeric_null_marker
                            && let Some(v) = decimal::from_f64_shortest(x)
                        {
                            b.append_value(v);
                            last = Some((x.to_bits(), v));
                            continue;
                        }
                        let t = text.format(x);
                        if self.null_values.iter().any(|v| v == t) {
                            b.append_null();
                            continue;
                        }
                        let parsed = decimal::parse(t);
                        if let Some(v) = push_parsed(&mut b, t, parsed, (r, &shown), &mut problems)
                        {
                            last = Some((x.to_bits(), v));
                        }
                    }
                    cols.push(finish_decimals(b));
                }
                Kind::Timestamp if src.is_some_and(|i| is_instant(batch.column(i))) => {
                    let micros = arrow::compute::cast(
                        batch.column(src.expect("checked")),
                        &DataType::Timestamp(TimeUnit::Microsecond, None),
                    )
                    .expect("timestamps cast to microseconds");
                    let micros =
                        micros.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                    for r in 0..n {
                        if micros.is_null(r) {
                            b.append_null();
                            continue;
                        }
                        let m = micros.value(r);
                        if self.exact_instants.as_ref().is_some_and(|x| x.contains(&m)) {
                            b.append_value(m);
                            continue;
                        }
                        let t = timestamp::format_micros(m);
                        match self.text_value(&t) {
                            None => b.append_null(),
                            Some(t) => {
                                let parsed = timestamp::parse_micros(t);
                                push_parsed(&mut b, t, parsed, (r, &shown), &mut problems);
                            }
                        }
                    }
                    cols.push(Arc::new(b.finish()));
                }
                // Rates and prices repeat row after row, and so does a time (the hour, the
                // billing period): a run of equal texts is parsed once.
                Kind::Decimal => {
                    let mut b = Decimal128Builder::with_capacity(n);
                    self.parse_texts(n, col(), &mut b, decimal::parse, &shown, &mut problems);
                    cols.push(finish_decimals(b));
                }
                Kind::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                    let parse = timestamp::parse_micros;
                    self.parse_texts(n, col(), &mut b, parse, &shown, &mut problems);
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
                    .and_then(|t| decimal::parse(&t).ok()),
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
                .map(Cow::into_owned)
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
    fn text_at<'a>(
        &self,
        batch: &'a RecordBatch,
        i: Option<usize>,
        r: usize,
    ) -> Option<Cow<'a, str>> {
        let col = batch.column(i?);
        match col.as_any().downcast_ref::<StringArray>() {
            Some(c) => self.text(c, r).map(Cow::Borrowed),
            None => cell_text(col, r)
                .filter(|t| self.text_value(t).is_some())
                .map(Cow::Owned),
        }
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
            let col = batch.column(i);
            match col.as_any().downcast_ref::<StringArray>() {
                Some(c) => {
                    if !c.is_null(r) && !c.value(r).is_empty() {
                        m.insert(name.clone(), c.value(r).into());
                    }
                }
                None => {
                    if let Some(t) = cell_text(col, r).filter(|t| !t.is_empty()) {
                        m.insert(name.clone(), t.into());
                    }
                }
            }
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// A value that did not parse: (row, column as the file names it, reason, the value's text).
type Problem = (usize, String, String, String);

/// Appends what `t` parsed to (`parsed`), or NULL and a problem for row `at.0`, column `at.1`
/// when it did not parse; returns the value when it did.
fn push_parsed<T: arrow::datatypes::ArrowPrimitiveType>(
    b: &mut arrow::array::PrimitiveBuilder<T>,
    t: &str,
    parsed: Result<T::Native, String>,
    at: (usize, &str),
    problems: &mut Vec<Problem>,
) -> Option<T::Native> {
    match parsed {
        Ok(v) => {
            b.append_value(v);
            Some(v)
        }
        Err(e) => {
            problems.push((at.0, at.1.to_string(), e, t.to_string()));
            b.append_null();
            None
        }
    }
}

/// The typed column of a decimal builder: Decimal128(38,18).
fn finish_decimals(mut b: Decimal128Builder) -> ArrayRef {
    Arc::new(
        b.finish()
            .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
            .expect("type"),
    )
}

/// Whether a column arrived as Parquet doubles.
fn is_double(c: &ArrayRef) -> bool {
    c.data_type() == &DataType::Float64
}

/// Whether a column arrived as Parquet timestamps the reader may hand over typed.
fn is_instant(c: &ArrayRef) -> bool {
    crate::source::read::is_utc_instant(c.data_type())
}

/// The text the reader would have written for one cell of a typed column (`None` when NULL).
fn cell_text(col: &ArrayRef, r: usize) -> Option<String> {
    if col.is_null(r) {
        return None;
    }
    let text = crate::source::read::column_text(&col.slice(r, 1)).ok()?;
    let text = text.as_any().downcast_ref::<StringArray>()?;
    text.is_valid(0).then(|| text.value(0).to_string())
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
        let (period, currency) = (period.as_deref(), currency.as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampNanosecondArray};

    fn format(null_values: &str) -> Format {
        let sql = format!(
            "-- @format: t\n-- @provider: p\n-- @layout: plain\n-- @detect: cost\n-- @text: account, currency\n\
             -- @decimal: cost, rate\n-- @timestamp: period, start, end, at_ms\n\
             -- @source_total: cost\n-- @source_currency: currency\n\
             -- @source_period: period\n-- @source_account: account\n{null_values}\
             SELECT account, currency, cost, rate, period, start, end, at_ms FROM raw\n"
        );
        Format::parse("t.sql", sql).unwrap()
    }

    /// Typed doubles and timestamps must type exactly as their text would: same values, same
    /// NULLs, same quarantined rows with the same reasons, values and records.
    #[test]
    fn typed_parquet_columns_type_as_their_text_does() {
        let names: Vec<String> = [
            "account", "currency", "cost", "rate", "period", "start", "end", "at_ms",
        ]
        .map(String::from)
        .into();
        let at = |t: &str| timestamp::parse_micros(t).unwrap();
        // Repeated values too: the typer keeps the last one typed.
        let costs = Float64Array::from(vec![
            Some(0.1 + 0.2),
            Some(0.1 + 0.2),
            Some(-0.0),
            Some(f64::NAN),
            Some(f64::NAN),
            Some(12.5),
            Some(12.5),
            Some(1.5e21),
            Some(5e-324),
            Some(f64::INFINITY),
        ]);
        let rates = Float64Array::from(vec![
            Some(1e-7),
            Some(3.0),
            None,
            Some(3.0),
            Some(f64::NEG_INFINITY),
            Some(2.0),
            Some(2.0),
            Some(0.0),
            Some(1.0),
            Some(1.0),
        ]);
        // Microseconds reach years no text can be parsed back from (quarantined both ways).
        let starts = arrow::array::TimestampMicrosecondArray::from(vec![
            Some(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00.123456Z")),
            None,
            Some(at("0999-12-31T23:00:00Z")),
            Some(at("1000-01-01T00:00:00Z")),
            Some(i64::MAX),
            Some(at("9999-12-31T23:59:59.999999Z") + 1),
            Some(at("9999-12-31T23:59:59.999999Z")),
            None,
            Some(at("2026-01-01T00:00:00Z")),
        ])
        .with_timezone("UTC");
        // Nanoseconds without a zone are cut to microseconds, as their text is.
        let ends = TimestampNanosecondArray::from(vec![
            Some(at("2026-01-01T01:00:00Z") * 1000),
            Some(at("2026-01-01T01:00:00.123456Z") * 1000 + 789),
            Some(-1),
            Some(-1001),
            None,
            Some(i64::MAX),
            Some(i64::MIN),
            Some(0),
            Some(1),
            None,
        ]);
        let period = StringArray::from(vec![Some("2026-01-01T00:00:00Z"); 10]);
        let typed_cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("0012"); 10])),
            Arc::new(StringArray::from(vec![Some("USD"); 10])),
            Arc::new(costs),
            Arc::new(rates),
            Arc::new(period),
            Arc::new(starts),
            Arc::new(ends),
            // Milliseconds in a "+00:00" zone.
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(
                    (0..10)
                        .map(|i| (i != 3).then(|| at("2026-01-01T00:00:00Z") / 1000 + i * 1001))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("+00:00"),
            ),
        ];
        let text_cols: Vec<ArrayRef> = typed_cols
            .iter()
            .map(|c| crate::source::read::column_text(c).unwrap())
            .collect();
        let batch = |cols: Vec<ArrayRef>| {
            let fields: Vec<Field> = names
                .iter()
                .zip(&cols)
                .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
        };
        // The instant marker is the text of instants in `start` and `at_ms`, the number one
        // the text of a rate: typed, they must still become NULL (so no typed timestamp may
        // skip its text, nor a double when a marker is a number).
        for nulls in [
            "",
            "-- @null_values: NaN\n",
            "-- @null_values: 2026-01-01T00:00:00Z\n",
            "-- @null_values: 3.0\n",
        ] {
            let f = format(nulls);
            let typer =
                Typer::new(&f, &names, &names, "file:///t.parquet", "i").keeping_refused_rows();
            assert_eq!(
                typer.typed_columns(names.len()),
                [false, false, true, true, false, true, true, true],
                "the source period stays text"
            );
            let run = |b: &RecordBatch| {
                let (mut tally, mut q) = (SourceTally::default(), Vec::new());
                let out = typer.apply(b, 1, &mut tally, &mut q);
                let q: Vec<_> = q
                    .iter()
                    .map(|q| {
                        (
                            q.row,
                            q.column.clone(),
                            q.reason.clone(),
                            q.value.clone(),
                            q.record.clone(),
                        )
                    })
                    .collect();
                (out, tally.totals, tally.unparseable_amounts, q)
            };
            let (typed_out, typed_totals, typed_bad, typed_q) = run(&batch(typed_cols.clone()));
            let (text_out, text_totals, text_bad, text_q) = run(&batch(text_cols.clone()));
            assert_eq!(typed_out, text_out, "null markers {nulls:?}");
            assert_eq!(typed_totals, text_totals);
            assert_eq!(typed_bad, text_bad);
            assert_eq!(typed_q, text_q);
            // The cases above reach every branch: quarantined doubles and times, and both.
            assert!(typed_q.iter().any(|q| q.1 == "cost"), "{typed_q:?}");
            assert!(typed_q.iter().any(|q| q.1 == "start"), "{typed_q:?}");
        }
    }

    #[test]
    fn instants_in_the_exact_range_parse_back_from_their_text() {
        let f = format("");
        let names: Vec<String> = ["period"].map(String::from).into();
        let typer = Typer::new(&f, &names, &names, "f", "i");
        let range = typer.exact_instants.clone().unwrap();
        // A deterministic spread over the whole range, its ends and sub-second values.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let span = (range.end() - range.start()) as u64;
        let mut probes = vec![*range.start(), *range.end(), 0, -1, 1];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            probes.push(range.start() + (x % span) as i64);
        }
        for m in probes {
            let text = timestamp::format_micros(m);
            assert_eq!(timestamp::parse_micros(&text), Ok(m), "{text}");
        }
    }
}
