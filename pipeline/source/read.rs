//! Streaming readers: an export file → batches of text columns, plus the file's SHA-256.
//!
//! CSV and CSV.gz are decoded by `arrow-csv` on a blocking thread that pulls the object's
//! bytes from the store as it goes (and hashes them on the way); Parquet is read row group by
//! row group and every column is turned into text, so all formats reach the mapping the same
//! way: every column a string, read exactly as written.

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, MapArray, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Result, TallyError};
use crate::storage::{DiscoveredFile, FileKind, Location};

/// Rows per batch handed to the mapping.
pub const BATCH_ROWS: usize = 8192;

/// A `Read` over an object's byte stream, for the blocking CSV decoder. Hashes what it reads.
struct StreamRead {
    rt: tokio::runtime::Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
    digest: Arc<std::sync::Mutex<(Sha256, u64)>>,
}

impl StreamRead {
    fn new(
        rt: tokio::runtime::Handle,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Self {
        StreamRead {
            rt,
            stream,
            buf: Bytes::new(),
            digest: Arc::new(std::sync::Mutex::new((Sha256::new(), 0))),
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => {
                    let mut d = self.digest.lock().expect("digest");
                    d.0.update(&b);
                    d.1 += b.len() as u64;
                    self.buf = b;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// What reading a file proved about its bytes.
#[derive(Debug, Clone)]
pub struct FileDigest {
    /// Hex SHA-256 of the object's bytes as stored (compressed, for `.gz`).
    pub sha256: String,
    /// Bytes read.
    pub bytes: u64,
}

async fn open_stream(
    loc: &Location,
    file: &DiscoveredFile,
) -> Result<BoxStream<'static, object_store::Result<Bytes>>> {
    let got = loc
        .store
        .get(&file.path)
        .await
        .map_err(|e| loc.err("get", &file.path, e))?;
    Ok(got.into_stream())
}

fn decoder(kind: FileKind, r: StreamRead) -> Box<dyn Read + Send> {
    match kind {
        FileKind::CsvGz => Box::new(flate2::read::MultiGzDecoder::new(r)),
        _ => Box::new(r),
    }
}

/// Reads a CSV file's header: column names, a UTF-8 byte-order mark removed.
pub async fn csv_header(loc: &Location, file: &DiscoveredFile) -> Result<Vec<String>> {
    let stream = open_stream(loc, file).await?;
    let rt = tokio::runtime::Handle::current();
    let kind = file.kind;
    let url = file.url.clone();
    tokio::task::spawn_blocking(move || {
        let r = StreamRead::new(rt, stream);
        // A header longer than 1 MiB is not a header (binary data, or CR-only line ends).
        let mut d = std::io::BufReader::new(decoder(kind, r).take(1 << 20));
        let mut line = Vec::new();
        std::io::BufRead::read_until(&mut d, b'\n', &mut line).map_err(|e| {
            TallyError::BadFile {
                file: url.clone(),
                message: format!("cannot read header: {e}"),
            }
        })?;
        let text = String::from_utf8(line).map_err(|_| TallyError::BadFile {
            file: url.clone(),
            message: "header is not UTF-8".into(),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let names = split_csv_line(text.trim_end_matches(['\r', '\n']));
        if names.iter().all(|n| n.is_empty()) {
            return Err(TallyError::BadFile {
                file: url,
                message: "empty file: no header row".into(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if !seen.insert(n) {
                return Err(TallyError::BadFile {
                    file: url,
                    message: format!("header repeats column {n:?}"),
                });
            }
        }
        Ok(names)
    })
    .await
    .map_err(|e| TallyError::Internal(e.to_string()))?
}

/// Splits one CSV line (RFC 4180 quoting).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The all-text schema for a header.
pub fn text_schema(names: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Starts reading a CSV/CSV.gz file; batches arrive on the returned channel, and the task
/// returns the SHA-256 of the bytes it read (hashed while decoding: one pass over the object).
pub async fn spawn_csv(
    loc: &Location,
    file: &DiscoveredFile,
    schema: SchemaRef,
) -> Result<(
    mpsc::Receiver<Result<RecordBatch>>,
    tokio::task::JoinHandle<Result<FileDigest>>,
)> {
    let stream = open_stream(loc, file).await?;
    let (tx, rx) = mpsc::channel(4);
    let rt = tokio::runtime::Handle::current();
    let kind = file.kind;
    let url = file.url.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let raw = StreamRead::new(rt, stream);
        let digest = raw.digest.clone();
        let fail = |tx: &mpsc::Sender<Result<RecordBatch>>, message: String| {
            let _ = tx.blocking_send(Err(TallyError::BadFile {
                file: url.clone(),
                message: message.clone(),
            }));
            Err(TallyError::BadFile {
                file: url.clone(),
                message,
            })
        };
        let reader = match arrow::csv::ReaderBuilder::new(schema)
            .with_header(true)
            .with_batch_size(BATCH_ROWS)
            .build(decoder(kind, raw))
        {
            Ok(r) => r,
            Err(e) => return fail(&tx, e.to_string()),
        };
        for b in reader {
            match b {
                Ok(b) => {
                    if tx.blocking_send(Ok(b)).is_err() {
                        return Err(TallyError::Internal("reader's consumer went away".into()));
                    }
                }
                Err(e) => {
                    return fail(
                        &tx,
                        format!("malformed CSV: {e} (line numbers count the header as line 1)"),
                    );
                }
            }
        }
        let d = digest.lock().expect("digest");
        Ok(FileDigest {
            sha256: hex::encode(d.0.clone().finalize()),
            bytes: d.1,
        })
    });
    Ok((rx, handle))
}

/// SHA-256 and size of an object, streamed.
pub async fn hash_object(loc: &Location, file: &DiscoveredFile) -> Result<FileDigest> {
    let mut stream = open_stream(loc, file).await?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| loc.err("read", &file.path, e))?;
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok(FileDigest {
        sha256: hex::encode(hasher.finalize()),
        bytes,
    })
}

/// Opens a Parquet export; returns its column names and a stream of all-text batches.
// `ParquetObjectReader` is deprecated in parquet 59 in favour of a hand-written `AsyncFileReader`;
// it is still the reader DataFusion 55 itself uses, so tally keeps it until DataFusion moves.
#[allow(deprecated)]
pub async fn open_parquet(
    loc: &Location,
    file: &DiscoveredFile,
) -> Result<(Vec<String>, BoxStream<'static, Result<RecordBatch>>)> {
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    use parquet::arrow::async_reader::ParquetObjectReader;
    let reader =
        ParquetObjectReader::new(loc.store.clone(), file.path.clone()).with_file_size(file.size);
    let bad = |e: parquet::errors::ParquetError| TallyError::BadFile {
        file: file.url.clone(),
        message: e.to_string(),
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(bad)?
        .with_batch_size(BATCH_ROWS);
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let url = file.url.clone();
    let stream = builder.build().map_err(bad)?;
    let text_schema = text_schema(&names);
    let out = stream
        .map(move |b| {
            let b = b.map_err(|e| TallyError::BadFile {
                file: url.clone(),
                message: e.to_string(),
            })?;
            to_text(&b, text_schema.clone()).map_err(|m| TallyError::BadFile {
                file: url.clone(),
                message: m,
            })
        })
        .boxed();
    Ok((names, out))
}

/// Turns every column of a batch into text. Map columns (CUR 2.0 `product`, `resource_tags`)
/// become JSON objects; numbers keep their shortest exact text.
fn to_text(b: &RecordBatch, schema: SchemaRef) -> std::result::Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
    for (i, c) in b.columns().iter().enumerate() {
        let col: ArrayRef = match c.data_type() {
            DataType::Utf8 => c.clone(),
            DataType::Map(_, _) => Arc::new(map_to_json(
                c.as_any().downcast_ref::<MapArray>().expect("map"),
            )?),
            _ => arrow::compute::cast(c, &DataType::Utf8).map_err(|e| {
                format!(
                    "column {:?}: cannot read as text: {e}",
                    b.schema().field(i).name()
                )
            })?,
        };
        cols.push(col);
    }
    RecordBatch::try_new(schema, cols).map_err(|e| e.to_string())
}

fn map_to_json(m: &MapArray) -> std::result::Result<StringArray, String> {
    let keys = arrow::compute::cast(m.keys(), &DataType::Utf8).map_err(|e| e.to_string())?;
    let values = arrow::compute::cast(m.values(), &DataType::Utf8).map_err(|e| e.to_string())?;
    let keys = keys.as_any().downcast_ref::<StringArray>().expect("utf8");
    let values = values.as_any().downcast_ref::<StringArray>().expect("utf8");
    let mut out = StringBuilder::new();
    let offsets = m.value_offsets();
    for row in 0..m.len() {
        if m.is_null(row) {
            out.append_null();
            continue;
        }
        let mut obj = serde_json::Map::new();
        for j in offsets[row] as usize..offsets[row + 1] as usize {
            let v = if values.is_null(j) {
                serde_json::Value::Null
            } else {
                values.value(j).into()
            };
            obj.insert(keys.value(j).to_string(), v);
        }
        out.append_value(serde_json::Value::Object(obj).to_string());
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_header_fields() {
        assert_eq!(
            split_csv_line(r#"a,"b,c","d""e",f"#),
            vec!["a", "b,c", "d\"e", "f"]
        );
    }
}
