//! Inputs that are not billing data — invoices, allocation rules, business metrics — as CSV
//! files (or Parquet, e.g. a FOCUS InvoiceDetail dataset) a job names under `[inputs]`, checked
//! against `schemas/inputs/<name>.psv` on load.
//!
//! Each schema line is `column|type|required|meaning` with type `text`, `decimal` (exact,
//! Decimal128(38,18)) or `timestamp` (UTC). A missing required column, an empty required value
//! or a value that does not parse stops the run with exit code 3, naming the file, the row
//! (1-based, header excluded) and the column: reference data is fixed, not quarantined.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{Result, TallyError};
use crate::{decimal, resources, storage, timestamp};

/// A column of an input schema.
#[derive(Debug, Clone)]
pub struct InputColumn {
    /// Name.
    pub name: String,
    /// `text`, `decimal` or `timestamp`.
    pub ty: String,
    /// Must be present and non-empty.
    pub required: bool,
}

/// The schema of input `name` (`schemas/inputs/<name>.psv`).
pub fn schema(name: &str) -> Result<Vec<InputColumn>> {
    let path = format!("schemas/inputs/{name}.psv");
    let text = resources::load(&path).map_err(|_| {
        TallyError::Usage(format!(
            "no input schema for {name:?}; known inputs: {}",
            resources::list("schemas/inputs/")
                .iter()
                .filter_map(|p| p.strip_prefix("schemas/inputs/")?.strip_suffix(".psv"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut cols = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 3 || !["text", "decimal", "timestamp"].contains(&f[1]) {
            return Err(TallyError::Internal(format!("{path}: bad line {line:?}")));
        }
        cols.push(InputColumn {
            name: f[0].into(),
            ty: f[1].into(),
            required: f[2] == "yes",
        });
    }
    Ok(cols)
}

/// An input with no rows (for a stage's optional input the job does not name).
pub fn empty(name: &str) -> Result<RecordBatch> {
    let fields: Vec<Field> = schema(name)?
        .iter()
        .map(|c| {
            let t = match c.ty.as_str() {
                "decimal" => decimal::data_type(),
                "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                _ => DataType::Utf8,
            };
            Field::new(&c.name, t, !c.required)
        })
        .collect();
    Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))))
}

/// A loaded input.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its rows, typed.
    pub batch: RecordBatch,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The schema's columns out of a Parquet file (a FOCUS dataset such as InvoiceDetail), each cast
/// to its declared type; other columns are ignored. Values are checked like CSV values.
fn from_parquet(
    name: &str,
    url: &str,
    cols: &[InputColumn],
    bytes: bytes::Bytes,
) -> Result<RecordBatch> {
    let bad = |m: String| TallyError::BadFile {
        file: url.into(),
        message: m,
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(e.to_string()))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let Some(first) = batches.first() else {
        return empty(name);
    };
    let all = arrow::compute::concat_batches(&first.schema(), &batches)?;
    let target = empty(name)?.schema();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (c, f) in cols.iter().zip(target.fields()) {
        let Ok(i) = all.schema().index_of(&c.name) else {
            if c.required {
                return Err(bad(format!("input {name:?} lacks column {}", c.name)));
            }
            arrays.push(arrow::array::new_null_array(f.data_type(), all.num_rows()));
            continue;
        };
        // Decimals and text through their exact text, so a wider or narrower scale in the file
        // is parsed like CSV (and refused, not rounded, beyond 18 places).
        let text = arrow::compute::cast(all.column(i), &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("utf8");
        let a: ArrayRef = match c.ty.as_str() {
            "decimal" => {
                let mut b = Decimal128Builder::new();
                for (row, v) in text.iter().enumerate() {
                    b.append_option(v.map(decimal::parse).transpose().map_err(|m| {
                        TallyError::BadValue {
                            file: url.into(),
                            row: row as u64 + 1,
                            column: c.name.clone(),
                            message: m,
                        }
                    })?);
                }
                Arc::new(
                    b.finish()
                        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?,
                )
            }
            "timestamp" => arrow::compute::cast(all.column(i), f.data_type())?,
            _ => Arc::new(text.clone()),
        };
        if c.required && a.null_count() > 0 {
            return Err(bad(format!(
                "input {name:?}: column {} has empty values",
                c.name
            )));
        }
        arrays.push(a);
    }
    Ok(RecordBatch::try_new(target, arrays)?)
}

/// Reads and checks input `name` from `url`.
pub async fn load(name: &str, url: &str) -> Result<Loaded> {
    let cols = schema(name)?;
    let loc = storage::open(url)?;
    let bytes = loc.get_bytes(&loc.path).await?;
    let sha256 = resources::sha256_hex(&bytes);
    if url.to_ascii_lowercase().ends_with(".parquet") {
        return Ok(Loaded {
            batch: from_parquet(name, url, &cols, bytes)?,
            sha256,
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| TallyError::BadFile {
        file: url.into(),
        message: "not UTF-8".into(),
    })?;
    let mut r =
        csv::ReaderBuilder::new().from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let bad_file = |m: String| TallyError::BadFile {
        file: url.into(),
        message: m,
    };
    let header: Vec<String> = r
        .headers()
        .map_err(|e| bad_file(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let idx: Vec<Option<usize>> = cols
        .iter()
        .map(|c| header.iter().position(|h| *h == c.name))
        .collect();
    let missing: Vec<&str> = cols
        .iter()
        .zip(&idx)
        .filter(|(c, i)| c.required && i.is_none())
        .map(|(c, _)| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(bad_file(format!(
            "input {name:?} lacks column(s) {}; it needs {}",
            missing.join(", "),
            cols.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    enum B {
        T(StringBuilder),
        D(Decimal128Builder),
        S(TimestampMicrosecondBuilder),
    }
    let mut builders: Vec<B> = cols
        .iter()
        .map(|c| match c.ty.as_str() {
            "decimal" => B::D(Decimal128Builder::new()),
            "timestamp" => B::S(TimestampMicrosecondBuilder::new()),
            _ => B::T(StringBuilder::new()),
        })
        .collect();
    for (row, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| bad_file(format!("malformed CSV: {e}")))?;
        for ((c, i), b) in cols.iter().zip(&idx).zip(&mut builders) {
            let v = i
                .and_then(|i| rec.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty());
            let bad = |message: String| TallyError::BadValue {
                file: url.into(),
                row: row as u64 + 1,
                column: c.name.clone(),
                message,
            };
            if v.is_none() && c.required {
                return Err(bad("a value is required".into()));
            }
            match b {
                B::T(b) => b.append_option(v),
                B::D(b) => b.append_option(v.map(decimal::parse).transpose().map_err(bad)?),
                B::S(b) => {
                    b.append_option(v.map(timestamp::parse_micros).transpose().map_err(bad)?)
                }
            }
        }
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (c, b) in cols.iter().zip(builders) {
        let (t, a): (DataType, ArrayRef) = match b {
            B::T(mut b) => (DataType::Utf8, Arc::new(b.finish())),
            B::D(mut b) => (
                decimal::data_type(),
                Arc::new(
                    b.finish()
                        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?,
                ),
            ),
            B::S(mut b) => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Arc::new(b.finish().with_timezone("UTC")),
            ),
        };
        fields.push(Field::new(&c.name, t, !c.required));
        arrays.push(a);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    Ok(Loaded { batch, sha256 })
}
