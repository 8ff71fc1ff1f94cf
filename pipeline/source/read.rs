//! Streaming readers: an export file → batches of text columns, plus the file's SHA-256.
//!
//! CSV and CSV.gz are decoded by [`super::csv`] on a blocking thread that pulls the object's
//! bytes from the store as it goes (and hashes them on the way); Parquet is read row group by
//! row group and every column is turned into text, so all formats reach the mapping the same
//! way: every column a string, read exactly as written. The one exception: Parquet doubles and
//! timestamps the typer will type anyway may stay typed ([`Wanted::keeping_typed`]); the typer
//! gives them exactly the values their text would have. JSON lines (BigQuery's export) are read
//! line by line; their numbers are taken as the text written, never through a float. Nested
//! values — Parquet structs, lists and maps, JSON objects and arrays — become JSON text whose
//! leaves are strings, so a layout can take `usage.amount` out of `usage` exactly.

use std::io::{BufRead, Read};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Result, TallyError};
use crate::storage::{DiscoveredFile, FileKind, Location};

/// Rows per batch handed to the mapping.
pub const BATCH_ROWS: usize = 8192;

/// Which of a file's columns a reader decodes. The others reach the layout as all-NULL text,
/// so the batch keeps the file's shape while a column no mapping reads costs nothing (a
/// 100-column AWS CUR has about 55 of those: the Parquet reader skips their pages, the CSV
/// reader builds no arrays for them).
///
/// A Parquet column may also be marked to stay typed: its doubles or timestamps then reach the
/// typing step as they are (which gives them the very values their text would have given),
/// instead of being written out as text only to be parsed back.
#[derive(Debug, Clone)]
pub struct Wanted {
    read: Arc<[bool]>,
    typed: Arc<[bool]>,
}

impl Wanted {
    /// `wanted[i]`: whether column `i` of the file is read.
    pub fn new(wanted: Vec<bool>) -> Wanted {
        Wanted {
            read: wanted.into(),
            typed: Arc::new([]),
        }
    }

    /// Marks the columns (`typed[i]`) a Parquet reader may hand over as doubles or UTC
    /// timestamps rather than as text.
    pub fn keeping_typed(mut self, typed: Vec<bool>) -> Wanted {
        self.typed = typed.into();
        self
    }

    /// Whether column `i` is read.
    pub fn reads(&self, i: usize) -> bool {
        self.read.get(i).copied().unwrap_or(true)
    }

    fn indices(&self) -> Vec<usize> {
        (0..self.read.len()).filter(|i| self.read[*i]).collect()
    }

    /// Whether column `i` may stay typed.
    fn keeps_typed(&self, i: usize) -> bool {
        self.typed.get(i).copied().unwrap_or(false)
    }

    /// A batch of the wanted columns (in file order) widened to the file's `names`, every
    /// column; the columns not read are NULL text.
    fn widen(&self, b: &RecordBatch, names: &[String]) -> RecordBatch {
        let mut read = b.columns().iter();
        let cols: Vec<ArrayRef> = (0..self.read.len())
            .map(|i| match self.read[i] {
                true => read.next().expect("one column per wanted index").clone(),
                false => arrow::array::new_null_array(&DataType::Utf8, b.num_rows()),
            })
            .collect();
        let schema = schema_of(names, &cols);
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
        RecordBatch::try_new_with_options(schema, cols, &options).expect("columns of one length")
    }
}

/// The schema of columns named `names`, each field of its column's type.
fn schema_of(names: &[String], cols: &[ArrayRef]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .zip(cols)
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Whether a Parquet column of this type can reach the typing step as it is: doubles and
/// timestamps in UTC (or without a zone, read as UTC, as their text would be).
pub fn stays_typed(t: &DataType) -> bool {
    t == &DataType::Float64 || is_utc_instant(t)
}

/// Whether a type holds instants in UTC: timestamps zoned "UTC" or "+00:00", or without a zone.
pub fn is_utc_instant(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, tz) if tz.as_deref().is_none_or(|z| z == "UTC" || z == "+00:00"))
}

/// An object's bytes. A local file is read directly, in blocks of [`LOCAL_BLOCK`]:
/// object_store streams a local file in 8 KiB chunks, each a trip through tokio's blocking
/// pool, and those task switches took a fifth of a 1 GB CSV run's CPU. Any other object is
/// read as its store's stream.
enum ObjectBytes {
    Stream(BoxStream<'static, object_store::Result<Bytes>>),
    /// A local file, and its stamp when opened.
    File(Arc<std::fs::File>, Stamp),
}

/// Bytes per read of a local file.
const LOCAL_BLOCK: usize = 1 << 20;

impl ObjectBytes {
    /// The next block of the object's bytes, `None` at its end. Blocks on `rt` for a stream:
    /// call it from a blocking thread.
    fn next_block(&mut self, rt: &tokio::runtime::Handle) -> Option<object_store::Result<Bytes>> {
        match self {
            ObjectBytes::Stream(s) => rt.block_on(s.next()),
            ObjectBytes::File(f, _) => {
                // `read_to_end` fills the block without zeroing it first.
                let mut block = Vec::with_capacity(LOCAL_BLOCK);
                match (&**f).take(LOCAL_BLOCK as u64).read_to_end(&mut block) {
                    Ok(0) => None,
                    Ok(_) => Some(Ok(Bytes::from(block))),
                    Err(e) => Some(Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })),
                }
            }
        }
    }
}

/// A `Read` over an object's bytes, for the blocking CSV decoder. Hashes what it reads.
struct StreamRead {
    rt: tokio::runtime::Handle,
    source: ObjectBytes,
    buf: Bytes,
    digest: Arc<std::sync::Mutex<(Sha256, u64)>>,
}

impl StreamRead {
    fn new(rt: tokio::runtime::Handle, source: ObjectBytes) -> Self {
        StreamRead {
            rt,
            source,
            buf: Bytes::new(),
            digest: Arc::new(std::sync::Mutex::new((Sha256::new(), 0))),
        }
    }
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = out.len().min(buf.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// Buffered reads hand out the object's own blocks: the CSV decoder reads them in place, with
/// no copy into a `BufReader` of its own.
impl BufRead for StreamRead {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.buf.is_empty() {
            match self.source.next_block(&self.rt) {
                Some(Ok(b)) => {
                    let mut d = self.digest.lock().expect("digest");
                    d.0.update(&b);
                    d.1 += b.len() as u64;
                    self.buf = b;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => break,
            }
        }
        Ok(&self.buf)
    }

    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
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

/// Opens the version of `file` the listing saw, with one GET. The manifest records the
/// listing's size, ETag and time beside the hash of the bytes read, and a file's header is
/// read before its rows: a GET that finds another ETag or size means the export was restated
/// since it was listed (exit 4, [`TallyError::Changed`]; the next run reads the new version).
async fn open_listed(loc: &Location, file: &DiscoveredFile) -> Result<ObjectBytes> {
    let got = loc
        .store
        .get(&file.path)
        .await
        .map_err(|e| loc.err("get", &file.path, e))?;
    is_listed_version(file, &got.meta, "when read")?;
    let whole = got.range.start == 0 && got.range.end == got.meta.size;
    Ok(match got.payload {
        object_store::GetResultPayload::File(f, _) if whole => {
            // The store checked the file's metadata as it opened it; this stamp is taken a
            // moment later and must agree, or the file was rewritten in between.
            let stamp = Stamp::now(&f, file)?;
            let modified = stamp.modified.map(chrono::DateTime::<chrono::Utc>::from);
            if stamp.len != got.meta.size || modified.is_some_and(|m| m != got.meta.last_modified) {
                return Err(changed(file, "written to as it was opened".into()));
            }
            ObjectBytes::File(Arc::new(f), stamp)
        }
        _ => ObjectBytes::Stream(got.into_stream()),
    })
}

/// `Ok` if `meta` (from a GET or HEAD, `when`) is of the version the listing saw: the same ETag
/// (see [`same_e_tag`]) and size; else [`TallyError::Changed`].
fn is_listed_version(
    file: &DiscoveredFile,
    meta: &object_store::ObjectMeta,
    when: &str,
) -> Result<()> {
    if let (Some(listed), Some(now)) = (&file.e_tag, &meta.e_tag)
        && !same_e_tag(listed, now)
    {
        return Err(changed(
            file,
            format!("ETag {listed} when listed, {now} {when}"),
        ));
    }
    if meta.size != file.size {
        return Err(changed(
            file,
            format!("{} bytes when listed, {} {when}", file.size, meta.size),
        ));
    }
    Ok(())
}

/// The object's decompressed bytes, buffered: an uncompressed object's blocks are read in place.
fn decoder(kind: FileKind, r: StreamRead) -> Box<dyn BufRead + Send> {
    match kind {
        FileKind::CsvGz | FileKind::JsonGz => Box::new(std::io::BufReader::with_capacity(
            LOCAL_BLOCK,
            flate2::bufread::MultiGzDecoder::new(r),
        )),
        _ => Box::new(r),
    }
}

/// The first MiB of a file, decompressed, read on a blocking thread by `f` (given the file).
async fn read_head<T: Send + 'static>(
    loc: &Location,
    file: &DiscoveredFile,
    f: impl FnOnce(std::io::Take<Box<dyn BufRead + Send>>, &Location, &DiscoveredFile) -> Result<T>
    + Send
    + 'static,
) -> Result<T> {
    let stream = open_listed(loc, file).await?;
    let rt = tokio::runtime::Handle::current();
    let (loc, file) = (loc.clone(), file.clone());
    tokio::task::spawn_blocking(move || {
        let r = StreamRead::new(rt, stream);
        // One byte more, so that a header of exactly HEAD_BYTES is told from a longer one.
        f(decoder(file.kind, r).take(HEAD_BYTES + 1), &loc, &file)
    })
    .await
    .map_err(|e| TallyError::Internal(e.to_string()))?
}

/// How much of a file (decompressed) planning reads for its header or first JSON lines.
const HEAD_BYTES: u64 = 1 << 20;

/// `file` is not what its format says (exit 3).
fn bad_file(file: &DiscoveredFile, message: String) -> TallyError {
    TallyError::BadFile {
        file: file.url.clone(),
        message,
    }
}

/// A failed read of `file`'s bytes as the run's error: the store's failure (a lost connection,
/// a local read error: exit 4) keeps its kind; bytes that do not decompress or decode are a
/// bad file (exit 3), `at` saying where.
fn read_failure(
    loc: &Location,
    file: &DiscoveredFile,
    e: std::io::Error,
    at: impl FnOnce() -> String,
) -> TallyError {
    match e.downcast::<object_store::Error>() {
        Ok(store) => loc.err("read", &file.path, store),
        Err(e) => bad_file(file, format!("{}: {e}", at())),
    }
}

/// Whether two ETags of one object name the same version. Stores quote them differently in
/// a listing and in a GET's header (Azure lists `0x8D…` and sends `"0x8D…"`), and a weak
/// one carries `W/`: what is compared is the opaque tag inside.
fn same_e_tag(a: &str, b: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t)
            .to_string()
    };
    opaque(a) == opaque(b)
}

/// Reads a CSV file's header (with the parser that reads its records, which checks that the
/// header is still this one): column names, a UTF-8 byte-order mark removed.
pub async fn csv_header(loc: &Location, file: &DiscoveredFile) -> Result<Vec<String>> {
    read_head(loc, file, |mut d, loc, file| {
        let bad = |message: String| bad_file(file, message);
        let names = match super::csv::read_header(&mut d) {
            Ok(names) => names.unwrap_or_default(),
            Err(super::csv::CsvError::Io(e)) => {
                return Err(read_failure(loc, file, e, || "cannot read header".into()));
            }
            Err(e) => return Err(bad(format!("cannot read header: {e}"))),
        };
        // csv_core ends a record where its input ends, even inside quotes.
        if d.limit() == 0 {
            return Err(bad(format!(
                "the header runs past the first {HEAD_BYTES} bytes (binary data, or an \
                 unclosed quote)"
            )));
        }
        if names.iter().all(|n| n.is_empty()) {
            return Err(bad("empty file: no header row".into()));
        }
        if let Some(n) = names.iter().find(|n| n.contains(['\r', '\n'])) {
            return Err(bad(format!(
                "header column {n:?} holds a line break (an unclosed quote?)"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(n) = names.iter().find(|n| !seen.insert(*n)) {
            return Err(bad(format!("header repeats column {n:?}")));
        }
        Ok(names)
    })
    .await
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

/// Wraps every bare number of one JSON text in quotes, so a parser keeps its digits as written
/// (`{"cost":0.1000000000000000055}` → `{"cost":"0.1000000000000000055"}`).
pub fn quote_json_numbers(line: &str) -> std::borrow::Cow<'_, str> {
    let b = line.as_bytes();
    if !b.iter().any(|c| c.is_ascii_digit()) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    let (mut in_str, mut esc, mut i) = (false, false, 0);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                i += 1;
            }
            out.push('"');
            out.push_str(&line[start..i]);
            out.push('"');
            continue;
        }
        // Copy one whole UTF-8 character.
        let len = match c {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        }
        .min(b.len() - i);
        out.push_str(&line[i..i + len]);
        i += len;
    }
    std::borrow::Cow::Owned(out)
}

/// One JSON value as a text cell: strings as they are, other scalars as written, objects and
/// arrays as JSON text; `null` as NULL.
fn json_cell(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Reads the top-level keys of a JSON-lines file from its first MiB, in order of appearance
/// (BigQuery leaves NULL fields out of a line, so one line does not show them all).
pub async fn json_header(loc: &Location, file: &DiscoveredFile) -> Result<Vec<String>> {
    read_head(loc, file, |d, loc, file| {
        let mut names: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (n, line) in d.lines().enumerate() {
            let line = match line {
                Ok(line) => line,
                // Later lines: the MiB may end inside a character.
                Err(e) if n == 0 || e.get_ref().is_some_and(|e| e.is::<object_store::Error>()) => {
                    return Err(read_failure(loc, file, e, || "line 1".into()));
                }
                Err(_) => break,
            };
            let line = line.trim_start_matches('\u{feff}').trim();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                &quote_json_numbers(line),
            ) {
                Ok(m) => {
                    for k in m.keys() {
                        if seen.insert(k.clone()) {
                            names.push(k.clone());
                        }
                    }
                }
                // The last line of the first MiB may be cut short; any other is an error.
                Err(_) if n > 0 => break,
                Err(e) => {
                    return Err(bad_file(file, format!("line 1 is not a JSON object: {e}")));
                }
            }
        }
        if names.is_empty() {
            return Err(bad_file(
                file,
                "empty file: no JSON object on its first lines".into(),
            ));
        }
        Ok(names)
    })
    .await
}

/// Batches of a CSV, CSV.gz or JSON-lines file, decoded on a blocking thread of their own;
/// then the SHA-256 of the bytes they came from (hashed while decoding: one pass over the
/// object). Dropping it stops the thread at its next batch.
pub struct TextReader {
    rx: mpsc::Receiver<RecordBatch>,
    task: Option<tokio::task::JoinHandle<Result<FileDigest>>>,
    digest: Option<FileDigest>,
}

impl TextReader {
    /// The next batch; `None` once the file is read to its end. An error is the thread's own,
    /// of its kind: a storage or local read failure, or a file restated while it was read, is
    /// exit 4; a malformed file exit 3.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if let Some(b) = self.rx.recv().await {
            return Some(Ok(b));
        }
        // The handle stays in place until the task is joined, should this call be cancelled.
        let joined = self.task.as_mut()?.await;
        self.task = None;
        match joined {
            Ok(Ok(digest)) => {
                self.digest = Some(digest);
                None
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(TallyError::Internal(e.to_string()))),
        }
    }

    /// What reading the whole file proved about its bytes (reads any batches left first).
    pub async fn finish(mut self) -> Result<FileDigest> {
        while let Some(b) = self.next().await {
            b?;
        }
        self.digest
            .ok_or_else(|| TallyError::Internal("a text reader finished twice".into()))
    }

    /// Stops the thread (its next batch finds no receiver) and waits until it has.
    pub async fn stop(mut self) {
        self.rx.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Why a text reader thread stopped before the end of its file.
enum Stop {
    /// The rows' consumer went away (its file failed, or the run did).
    Gone,
    /// The header is not the one the file was planned with.
    Header(String),
    /// The bytes could not be read, or are not valid CSV or JSON lines.
    Failed(TallyError),
}

/// What must still hold once a file's bytes were streamed: all of the listed size was read,
/// and a local file (read through the handle the store opened) was not written to meanwhile.
struct ReadCheck {
    listed: u64,
    local: Option<(Arc<std::fs::File>, Stamp)>,
}

impl ReadCheck {
    fn of(object: &ObjectBytes, file: &DiscoveredFile) -> ReadCheck {
        let local = match object {
            ObjectBytes::File(f, stamp) => Some((f.clone(), stamp.clone())),
            ObjectBytes::Stream(_) => None,
        };
        ReadCheck {
            listed: file.size,
            local,
        }
    }

    /// `Err` ([`TallyError::Changed`]) if the local file was written to since it was opened,
    /// or if `read` (the bytes of a file read to its end) is not the listed size.
    fn verify(&self, file: &DiscoveredFile, read: Option<u64>) -> Result<()> {
        if let Some(read) = read.filter(|&n| n != self.listed) {
            return Err(changed(
                file,
                format!("{} bytes when listed, {read} read", self.listed),
            ));
        }
        match &self.local {
            Some((f, stamp)) => stamp.unchanged(&Stamp::now(f, file)?, file),
            None => Ok(()),
        }
    }
}

/// Starts reading a CSV, CSV.gz or JSON-lines file whose columns were planned as `schema`
/// (all text); only the columns `wanted` reads are kept. A CSV header other than the planned
/// one, a size other than the listed one, or a local file written to while it is read, is
/// [`TallyError::Changed`].
pub async fn spawn_csv(
    loc: &Location,
    file: &DiscoveredFile,
    schema: SchemaRef,
    wanted: Option<Wanted>,
) -> Result<TextReader> {
    let object = open_listed(loc, file).await?;
    let check = ReadCheck::of(&object, file);
    let (tx, rx) = mpsc::channel(4);
    let rt = tokio::runtime::Handle::current();
    let (loc, file) = (loc.clone(), file.clone());
    let task = tokio::task::spawn_blocking(move || {
        let raw = StreamRead::new(rt, object);
        let digest = raw.digest.clone();
        let stopped = if matches!(file.kind, FileKind::Json | FileKind::JsonGz) {
            read_json_lines(decoder(file.kind, raw), &schema, &tx, &loc, &file)
        } else {
            let mut stopped = Ok(());
            for b in super::csv::CsvBatches::new(decoder(file.kind, raw), schema, wanted.as_ref()) {
                let step = match b {
                    Ok(b) => tx.blocking_send(b).map_err(|_| Stop::Gone),
                    Err(super::csv::CsvError::Io(e)) => {
                        Err(Stop::Failed(read_failure(&loc, &file, e, || {
                            "cannot read".into()
                        })))
                    }
                    Err(super::csv::CsvError::Header(what)) => Err(Stop::Header(what)),
                    Err(e) => Err(Stop::Failed(bad_file(
                        &file,
                        format!("malformed CSV: {e} (line numbers count the header as line 1)"),
                    ))),
                };
                if step.is_err() {
                    stopped = step;
                    break;
                }
            }
            stopped
        };
        let (hasher, read) = std::mem::take(&mut *digest.lock().expect("digest"));
        let failure = match stopped {
            Ok(()) => {
                check.verify(&file, Some(read))?;
                None
            }
            Err(Stop::Gone) => Some(TallyError::Internal("reader's consumer went away".into())),
            Err(Stop::Header(what)) => Some(changed(&file, format!("header: {what}"))),
            Err(Stop::Failed(e)) => Some(e),
        };
        if let Some(e) = failure {
            // A local file written to while it was read explains whatever else went wrong.
            check.verify(&file, None)?;
            return Err(e);
        }
        Ok(FileDigest {
            sha256: hex::encode(hasher.finalize()),
            bytes: read,
        })
    });
    Ok(TextReader {
        rx,
        task: Some(task),
        digest: None,
    })
}

/// JSON lines → text batches of `schema`'s columns. A top-level field the schema lacks (one the
/// first MiB did not show and the format does not declare, so no mapping reads it) is skipped
/// and named in a warning with the line it first appeared on.
fn read_json_lines(
    r: Box<dyn BufRead + Send>,
    schema: &SchemaRef,
    tx: &mpsc::Sender<RecordBatch>,
    loc: &Location,
    file: &DiscoveredFile,
) -> std::result::Result<(), Stop> {
    let index: std::collections::HashMap<&str, usize> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    let new_builders = || -> Vec<StringBuilder> {
        (0..schema.fields().len())
            .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8))
            .collect()
    };
    let mut builders = new_builders();
    let mut cells: Vec<Option<String>> = vec![None; schema.fields().len()];
    let mut rows = 0usize;
    let mut late: std::collections::BTreeMap<String, usize> = Default::default();
    let flush = |builders: &mut Vec<StringBuilder>| -> std::result::Result<(), Stop> {
        let cols: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let batch =
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| Stop::Failed(e.into()))?;
        tx.blocking_send(batch).map_err(|_| Stop::Gone)
    };
    for (n, line) in r.lines().enumerate() {
        let line = line
            .map_err(|e| Stop::Failed(read_failure(loc, file, e, || format!("line {}", n + 1))))?;
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&quote_json_numbers(line)).map_err(|e| {
                Stop::Failed(bad_file(
                    file,
                    format!("line {}: not a JSON object: {e}", n + 1),
                ))
            })?;
        for (k, v) in &obj {
            let Some(&i) = index.get(k.as_str()) else {
                late.entry(k.clone()).or_insert(n + 1);
                continue;
            };
            cells[i] = json_cell(v).filter(|s| !s.is_empty());
        }
        for (b, c) in builders.iter_mut().zip(cells.iter_mut()) {
            b.append_option(c.take());
        }
        rows += 1;
        if rows == BATCH_ROWS {
            flush(&mut builders)?;
            builders = new_builders();
            rows = 0;
        }
    }
    if rows > 0 {
        flush(&mut builders)?;
    }
    if !late.is_empty() {
        tracing::warn!(fields = ?late, "JSON fields first seen after the header lines and not read by the mapping were skipped (field → first line)");
    }
    Ok(())
}

/// One consistent copy of a Parquet export's bytes, read at any offset.
///
/// A local file is read in place through the one handle the store opened, and checked
/// unchanged ([`Stamp`]) once its rows and hash are read; an object in a
/// remote store is fetched with a single GET into an unnamed spool file in the temp directory
/// (`TMPDIR`), hashed as it arrives. Either way the rows and the SHA-256 in the manifest come
/// from the same bytes, and a remote object's bytes cross the network once (planning reads
/// only its footer), not once for its columns and again for its hash.
pub struct ParquetBytes {
    file: Arc<std::fs::File>,
    size: u64,
}

/// The SHA-256 of a [`ParquetBytes`]: known once a spool is written, computed after the rows
/// were read for a local file.
pub enum PendingDigest {
    /// Hashed while spooled.
    Known(FileDigest),
    /// Hashed on [`PendingDigest::finish`], from the handle the rows were read through: its
    /// first `size` bytes, which must still be all of it, unchanged since `stamp`.
    Local {
        file: Arc<std::fs::File>,
        size: u64,
        stamp: Stamp,
    },
}

/// What a local file's metadata says about its contents: its size, its modification time
/// (which a tool can set back) and, on Unix, its change time (which it cannot).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: Option<(i64, i64)>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let changed = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let changed = None;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            changed,
        }
    }

    /// The stamp of the open file `f` (the export `file`) now.
    fn now(f: &std::fs::File, file: &DiscoveredFile) -> Result<Stamp> {
        let meta = f.metadata().map_err(|e| TallyError::Io {
            path: file.url.clone(),
            source: e,
        })?;
        Ok(Stamp::of(&meta))
    }

    /// `Err` ([`TallyError::Changed`]) unless `now`, the file's stamp after it was read, is
    /// this one.
    fn unchanged(&self, now: &Stamp, file: &DiscoveredFile) -> Result<()> {
        if now == self {
            return Ok(());
        }
        let what = if now.len != self.len {
            format!("{} bytes when opened, {} now", self.len, now.len)
        } else {
            "written to since it was opened".to_string()
        };
        Err(changed(file, what))
    }
}

/// The error for an export that changed while the run read it (exit 4: the next run reads it).
fn changed(file: &DiscoveredFile, what: String) -> TallyError {
    TallyError::Changed {
        file: file.url.clone(),
        what,
    }
}

impl PendingDigest {
    /// The SHA-256 and size of the bytes the rows came from.
    pub async fn finish(self, file: &DiscoveredFile) -> Result<FileDigest> {
        let (handle, size, stamp) = match self {
            PendingDigest::Known(d) => return Ok(d),
            PendingDigest::Local { file, size, stamp } => (file, size, stamp),
        };
        let (url, hashing) = (file.url.clone(), handle.clone());
        let sha256 = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            let mut block = vec![0u8; LOCAL_BLOCK];
            let mut at = 0u64;
            while at < size {
                let n = (size - at).min(LOCAL_BLOCK as u64) as usize;
                read_exact_at(&hashing, &mut block[..n], at).map_err(|e| TallyError::Io {
                    path: url.clone(),
                    source: e,
                })?;
                hasher.update(&block[..n]);
                at += n as u64;
            }
            Ok::<_, TallyError>(hex::encode(hasher.finalize()))
        })
        .await
        .map_err(|e| TallyError::Internal(e.to_string()))??;
        // After the hash: the bytes hashed are the bytes the rows came from only if the file was
        // not written to meanwhile.
        stamp.unchanged(&Stamp::now(&handle, file)?, file)?;
        Ok(FileDigest {
            sha256,
            bytes: size,
        })
    }
}

/// Sets its flag when dropped: a spool whose reader went away stops downloading.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ParquetBytes {
    /// `ranges`, read on one blocking thread (a row group's column chunks are one trip). A
    /// range outside the file (a corrupt footer) is an error before anything is allocated.
    fn read_ranges(
        &self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'static, parquet::errors::Result<Vec<Bytes>>> {
        let (file, size) = (self.file.clone(), self.size);
        Box::pin(async move {
            if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > size) {
                return Err(parquet::errors::ParquetError::General(format!(
                    "the footer points at bytes {}..{} of a {size}-byte file",
                    r.start, r.end
                )));
            }
            tokio::task::spawn_blocking(move || {
                ranges
                    .iter()
                    .map(|r| {
                        let mut buf = vec![0u8; (r.end - r.start) as usize];
                        read_exact_at(&file, &mut buf, r.start)?;
                        Ok(Bytes::from(buf))
                    })
                    .collect::<std::io::Result<Vec<Bytes>>>()
            })
            .await
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    async fn open(loc: &Location, file: &DiscoveredFile) -> Result<(ParquetBytes, PendingDigest)> {
        let object = open_listed(loc, file).await?;
        let (bytes, digest) = match object {
            ObjectBytes::File(f, stamp) => {
                let bytes = ParquetBytes {
                    file: f.clone(),
                    size: stamp.len,
                };
                let digest = PendingDigest::Local {
                    file: f,
                    size: stamp.len,
                    stamp,
                };
                (bytes, digest)
            }
            mut stream => {
                let rt = tokio::runtime::Handle::current();
                let (loc, path, url) = (loc.clone(), file.path.clone(), file.url.clone());
                let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let _cancel = CancelOnDrop(cancelled.clone());
                let spooled = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let spool_err = |e: std::io::Error| TallyError::Io {
                        path: format!(
                            "{} (the spool file for {url})",
                            std::env::temp_dir().display()
                        ),
                        source: e,
                    };
                    let mut out = tempfile::tempfile().map_err(spool_err)?;
                    let mut hasher = Sha256::new();
                    let mut bytes = 0u64;
                    while let Some(block) = stream.next_block(&rt) {
                        if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                            return Err(TallyError::Internal(
                                "spool cancelled: its reader went away".into(),
                            ));
                        }
                        let block = block.map_err(|e| loc.err("read", &path, e))?;
                        hasher.update(&block);
                        bytes += block.len() as u64;
                        out.write_all(&block).map_err(spool_err)?;
                    }
                    Ok::<_, TallyError>((
                        out,
                        FileDigest {
                            sha256: hex::encode(hasher.finalize()),
                            bytes,
                        },
                    ))
                })
                .await
                .map_err(|e| TallyError::Internal(e.to_string()))?;
                let (out, digest) = spooled?;
                let bytes = ParquetBytes {
                    file: Arc::new(out),
                    size: digest.bytes,
                };
                (bytes, PendingDigest::Known(digest))
            }
        };
        if bytes.size != file.size {
            return Err(changed(
                file,
                format!("{} bytes when listed, {} when read", file.size, bytes.size),
            ));
        }
        Ok((bytes, digest))
    }
}

/// Fills `buf` from `offset` without using the handle's cursor (on Windows, `seek_read` moves
/// it, which nothing here relies on), so one handle serves every range; retries interrupts.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_exact_at(file, buf, offset);
    #[cfg(windows)]
    {
        let mut at = 0;
        while at < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(file, &mut buf[at..], offset + at as u64)
            {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl parquet::arrow::async_reader::AsyncFileReader for ParquetBytes {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let read = self.read_ranges(vec![range]);
        Box::pin(async move { Ok(read.await?.pop().expect("one range")) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.read_ranges(ranges)
    }

    /// The footer, with the reader's default options (tally reads no page index and no
    /// encrypted file).
    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        let size = self.size;
        Box::pin(async move {
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// A Parquet export's column names, from its footer alone (for planning; no row is read).
// `ParquetObjectReader` is deprecated in parquet 59 in favour of a hand-written `AsyncFileReader`;
// it is still the reader DataFusion 55 itself uses, so tally keeps it until DataFusion moves.
#[allow(deprecated)]
pub async fn parquet_columns(loc: &Location, file: &DiscoveredFile) -> Result<Vec<String>> {
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    use parquet::arrow::async_reader::ParquetObjectReader;
    let reader =
        ParquetObjectReader::new(loc.store.clone(), file.path.clone()).with_file_size(file.size);
    let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
        Ok(b) => b,
        Err(e) => {
            // The footer is read at the listed size: a file restated (or removed) since it was
            // listed fails here too, and is told from a corrupt one by its metadata now.
            match loc.store.head(&file.path).await {
                Ok(now) => is_listed_version(file, &now, "now")?,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(changed(file, "removed since it was listed".into()));
                }
                Err(_) => {}
            }
            // The store's failure (after its retries) is the store's, exit 4, not the file's.
            return Err(match e {
                parquet::errors::ParquetError::External(inner) => {
                    match inner.downcast::<object_store::Error>() {
                        Ok(store) => loc.err("read", &file.path, *store),
                        Err(other) => {
                            parquet_error(&file.url, parquet::errors::ParquetError::External(other))
                        }
                    }
                }
                other => parquet_error(&file.url, other),
            });
        }
    };
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// Opens a Parquet export; returns a stream of batches whose columns are text, but for those
/// `wanted` keeps typed (see [`Wanted::keeping_typed`]), and the pending SHA-256 of the bytes
/// the batches come from (see [`ParquetBytes`]). `planned`: the columns the file was planned
/// with (from [`parquet_columns`]) and those to read; a file whose columns are no longer those
/// changed in between, and is refused.
pub async fn open_parquet(
    loc: &Location,
    file: &DiscoveredFile,
    planned: Option<(&[String], Wanted)>,
) -> Result<(BoxStream<'static, Result<RecordBatch>>, PendingDigest)> {
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    let (planned_names, wanted) = planned.unzip();
    let (bytes, digest) = ParquetBytes::open(loc, file).await?;
    let bad = |e| parquet_error(&file.url, e);
    let mut builder = ParquetRecordBatchStreamBuilder::new(bytes)
        .await
        .map_err(bad)?
        .with_batch_size(BATCH_ROWS);
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if planned_names.is_some_and(|p| p != names) {
        return Err(changed(
            file,
            "its columns differ from those it was planned with".into(),
        ));
    }
    if let Some(w) = &wanted {
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), w.indices());
        builder = builder.with_projection(mask);
    }
    let url = file.url.clone();
    let stream = builder.build().map_err(bad)?;
    let (read_names, keep): (Vec<String>, Vec<bool>) = match &wanted {
        Some(w) => w
            .indices()
            .into_iter()
            .map(|i| (names[i].clone(), w.keeps_typed(i)))
            .unzip(),
        None => (names.clone(), vec![false; names.len()]),
    };
    let all_names = names.clone();
    let out = stream
        .map(move |b| {
            let b = b.map_err(|e| parquet_error(&url, e))?;
            let text = to_text(&b, &read_names, &keep).map_err(|m| TallyError::BadFile {
                file: url.clone(),
                message: m,
            })?;
            Ok(match &wanted {
                Some(w) => w.widen(&text, &all_names),
                None => text,
            })
        })
        .boxed();
    Ok((out, digest))
}

/// A Parquet reader's error: a failed read of the file's bytes is local I/O (exit 4), anything
/// else a file tally cannot read (exit 3).
fn parquet_error(url: &str, e: parquet::errors::ParquetError) -> TallyError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => TallyError::Io {
                    path: url.to_string(),
                    source: *io,
                },
                // The blocking read panicked (or was cancelled): tally's fault, not the file's.
                Err(other) if other.is::<tokio::task::JoinError>() => {
                    TallyError::Internal(format!("reading {url}: {other}"))
                }
                Err(other) => TallyError::BadFile {
                    file: url.to_string(),
                    message: other.to_string(),
                },
            }
        }
        other => TallyError::BadFile {
            file: url.to_string(),
            message: other.to_string(),
        },
    }
}

/// Turns every column of a batch into text, but those `keep` marks that [`stays_typed`] allows;
/// the columns are named `names`.
fn to_text(
    b: &RecordBatch,
    names: &[String],
    keep: &[bool],
) -> std::result::Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
    for (i, c) in b.columns().iter().enumerate() {
        if keep.get(i).copied().unwrap_or(false) && stays_typed(c.data_type()) {
            cols.push(c.clone());
            continue;
        }
        cols.push(column_text(c).map_err(|e| {
            format!(
                "column {:?}: cannot read as text: {e}",
                b.schema().field(i).name()
            )
        })?);
    }
    RecordBatch::try_new(schema_of(names, &cols), cols).map_err(|e| e.to_string())
}

/// One column as text. Map columns (CUR 2.0 `product`, `resource_tags`) become JSON objects;
/// numbers keep their shortest exact text.
pub fn column_text(c: &ArrayRef) -> std::result::Result<ArrayRef, String> {
    Ok(match c.data_type() {
        DataType::Utf8 => c.clone(),
        // UTC instants as RFC 3339 text, each run of equal values formatted once.
        t if is_utc_instant(t) => {
            let micros = arrow::compute::cast(
                c,
                &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            )
            .map_err(|e| e.to_string())?;
            let micros = micros
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .expect("µs");
            Arc::new(crate::timestamp::format_runs(
                micros,
                crate::timestamp::format_micros,
            ))
        }
        DataType::Map(_, _) => Arc::new(map_to_json(
            c.as_any().downcast_ref::<MapArray>().expect("map"),
        )?),
        DataType::Struct(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _) => {
            let values = nested_values(c.as_ref())?;
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 32);
            for v in values {
                b.append_option((!v.is_null()).then(|| v.to_string()));
            }
            Arc::new(b.finish())
        }
        // Doubles (CUR Parquet's costs and rates) as their shortest round-trip text, the
        // text arrow's cast gives them, written straight into one builder.
        DataType::Float64 => {
            let f = c.as_primitive::<arrow::datatypes::Float64Type>();
            let mut b = StringBuilder::with_capacity(f.len(), f.len() * 12);
            let mut text = ryu::Buffer::new();
            for v in f.iter() {
                match v {
                    Some(x) => b.append_value(text.format(x)),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        _ => arrow::compute::cast(c, &DataType::Utf8).map_err(|e| e.to_string())?,
    })
}

/// Every row of a (nested) array as a JSON value; leaves become strings, exactly as their text.
fn nested_values(a: &dyn Array) -> std::result::Result<Vec<serde_json::Value>, String> {
    use arrow::array::AsArray;
    use serde_json::Value;
    let null_or = |i: usize, v: Value| if a.is_null(i) { Value::Null } else { v };
    Ok(match a.data_type() {
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let children: Vec<Vec<Value>> = s
                .columns()
                .iter()
                .map(|c| nested_values(c.as_ref()))
                .collect::<std::result::Result<_, _>>()?;
            (0..a.len())
                .map(|i| {
                    let obj: serde_json::Map<String, Value> = fields
                        .iter()
                        .zip(&children)
                        .map(|(f, c)| (f.name().clone(), c[i].clone()))
                        .collect();
                    null_or(i, Value::Object(obj))
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let (values, offsets): (ArrayRef, Vec<usize>) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    (
                        l.values().clone(),
                        l.value_offsets().iter().map(|o| *o as usize).collect(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = a.as_list::<i64>();
                    (
                        l.values().clone(),
                        l.value_offsets().iter().map(|o| *o as usize).collect(),
                    )
                }
                _ => {
                    let l = a.as_fixed_size_list();
                    let n = l.value_length() as usize;
                    (l.values().clone(), (0..=a.len()).map(|i| i * n).collect())
                }
            };
            let inner = nested_values(values.as_ref())?;
            (0..a.len())
                .map(|i| null_or(i, Value::Array(inner[offsets[i]..offsets[i + 1]].to_vec())))
                .collect()
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            let keys =
                arrow::compute::cast(m.keys(), &DataType::Utf8).map_err(|e| e.to_string())?;
            let keys = keys.as_string::<i32>();
            let values = nested_values(m.values().as_ref())?;
            let offsets = m.value_offsets();
            (0..a.len())
                .map(|i| {
                    let obj: serde_json::Map<String, Value> = (offsets[i] as usize
                        ..offsets[i + 1] as usize)
                        .map(|j| (keys.value(j).to_string(), values[j].clone()))
                        .collect();
                    null_or(i, Value::Object(obj))
                })
                .collect()
        }
        _ => {
            let t = arrow::compute::cast(a, &DataType::Utf8).map_err(|e| e.to_string())?;
            t.as_string::<i32>()
                .iter()
                .map(|v| v.map_or(Value::Null, |s| Value::String(s.to_string())))
                .collect()
        }
    })
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

    use crate::source::meddling::{Ending, Meddling};

    fn parquet_of(values: &[&str]) -> Bytes {
        let a: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        let b = RecordBatch::try_from_iter([("a", a)]).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_remote_parquet_is_read_with_one_get_and_hashed_as_the_rows_it_gave() {
        let (v1, v2) = (parquet_of(&["x", "y"]), parquet_of(&["restated"]));
        assert_ne!(v1.len(), v2.len());
        let store = Arc::new(Meddling::new().restating(v2));
        let file = store
            .holding("f.parquet", v1.clone(), FileKind::Parquet)
            .await;
        let loc = store.location();
        // Planned with its one column "a", which it still has.
        let columns = ["a".to_string()];
        let planned = Some((&columns[..], Wanted::new(vec![true])));
        let (mut rows, digest) = open_parquet(&loc, &file, planned).await.unwrap();
        let mut values = Vec::new();
        while let Some(b) = rows.next().await {
            let b = b.unwrap();
            let a = b.column(0).as_string::<i32>();
            values.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
        let digest = digest.finish(&file).await.unwrap();
        // The rows and the hash are of the version the GET began on, though the object was
        // restated while it was read; and the object was read once.
        assert_eq!(values, ["x", "y"]);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&v1)));
        assert_eq!(digest.bytes, v1.len() as u64);
        assert_eq!(store.reads(), 1);

        // Listed as the first version, read as the restated one: the run stops (exit 4) and
        // says so, rather than record one version's size beside another's hash.
        let Err(e) = open_parquet(&loc, &file, None).await else {
            panic!("a file read at another size than listed must fail");
        };
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert!(
            e.to_string().contains("changed while the run read it"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_read_of_parquet_bytes_is_io_and_a_corrupt_file_is_bad_input() {
        use crate::error::exit;
        let io = parquet::errors::ParquetError::External(Box::new(std::io::Error::other("EIO")));
        assert_eq!(parquet_error("f", io).exit_code(), exit::INFRASTRUCTURE);
        let corrupt = parquet::errors::ParquetError::General("bad footer".into());
        assert_eq!(parquet_error("f", corrupt).exit_code(), exit::BAD_INPUT);
        let other = parquet::errors::ParquetError::External("not io".into());
        assert_eq!(parquet_error("f", other).exit_code(), exit::BAD_INPUT);
    }

    #[tokio::test]
    async fn etags_compare_by_their_opaque_tag() {
        // A listing that quotes the tag the GET sends bare (or the other way round) lists the
        // version the GET reads.
        let store = Arc::new(Meddling::new());
        let file = store
            .holding("f.csv", Bytes::from_static(b"a\n1\n"), FileKind::Csv)
            .await;
        let loc = store.location();
        let bare = store.inner.head(&file.path).await.unwrap().e_tag.unwrap();
        let listed = |e_tag: String| DiscoveredFile {
            e_tag: Some(e_tag),
            ..file.clone()
        };
        assert!(
            open_listed(&loc, &listed(format!("\"{bare}\"")))
                .await
                .is_ok()
        );
        assert!(
            open_listed(&loc, &listed(format!("{bare}x")))
                .await
                .is_err()
        );

        // Azure Blob: listed unquoted, sent quoted by a GET.
        assert!(same_e_tag("0x8DC9D1A2B3C4D5E", "\"0x8DC9D1A2B3C4D5E\""));
        assert!(same_e_tag("\"abc-2\"", "\"abc-2\""));
        assert!(same_e_tag("W/\"abc\"", "\"abc\""));
        assert!(!same_e_tag("\"abc\"", "\"abd\""));
        assert!(!same_e_tag("0x8DC9D1A2B3C4D5E", "0x8DC9D1A2B3C4D5F"));
    }

    #[tokio::test]
    async fn a_panicked_blocking_read_is_internal_not_a_bad_file() {
        let join = tokio::task::spawn_blocking(|| panic!("a bug in the reader"))
            .await
            .unwrap_err();
        let e = parquet_error("f", parquet::errors::ParquetError::External(Box::new(join)));
        assert_eq!(e.exit_code(), crate::error::exit::INTERNAL);
    }

    /// A local file as a local store lists it (at its size now, without an ETag).
    fn local_file(on_disk: &std::path::Path, kind: FileKind) -> (Location, DiscoveredFile) {
        let path = object_store::path::Path::from_absolute_path(on_disk).unwrap();
        let loc = Location {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            store_url: "file://".into(),
            path: path.clone(),
        };
        let file = DiscoveredFile {
            url: format!("file://{}", on_disk.display()),
            path,
            size: std::fs::metadata(on_disk).unwrap().len(),
            e_tag: None,
            last_modified: String::new(),
            kind,
        };
        (loc, file)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_local_parquet_rewritten_while_read_is_refused_at_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = dir.path().join("f.parquet");
        let v1 = parquet_of(&["x", "y"]);
        std::fs::write(&on_disk, &v1).unwrap();
        let (loc, file) = local_file(&on_disk, FileKind::Parquet);
        // Undisturbed: the hash is the file's.
        let (rows, digest) = open_parquet(&loc, &file, None).await.unwrap();
        assert_eq!(rows.count().await, 1);
        let d = digest.finish(&file).await.unwrap();
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&v1)));

        // Planned with other columns than it has now: refused as a changed file (exit 4).
        let columns = ["b".to_string()];
        let planned = Some((&columns[..], Wanted::new(vec![true])));
        let Err(e) = open_parquet(&loc, &file, planned).await else {
            panic!("a file whose columns changed since planning must be refused");
        };
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert!(e.to_string().contains("columns differ"), "{e}");

        // Rewritten in place (same inode) after its rows were read: refused, exit 4.
        let (rows, digest) = open_parquet(&loc, &file, None).await.unwrap();
        assert_eq!(rows.count().await, 1);
        let mut longer = v1.to_vec();
        longer.extend_from_slice(b"appended");
        std::fs::write(&on_disk, &longer).unwrap();
        let e = digest.finish(&file).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert!(
            e.to_string().contains("changed while the run read it"),
            "{e}"
        );

        // Rewritten at the same size with its modification time set back: still refused.
        std::fs::write(&on_disk, &v1).unwrap();
        let when = std::fs::metadata(&on_disk).unwrap().modified().unwrap();
        let (rows, digest) = open_parquet(&loc, &file, None).await.unwrap();
        assert_eq!(rows.count().await, 1);
        let mut same_size = v1.to_vec();
        let last = same_size.len() - 9; // a byte of the footer's metadata, not of the rows
        same_size[last] ^= 1;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&on_disk)
            .unwrap();
        std::io::Write::write_all(&mut &f, &same_size).unwrap();
        f.set_modified(when).unwrap();
        drop(f);
        assert_eq!(
            std::fs::metadata(&on_disk).unwrap().modified().unwrap(),
            when
        );
        let e = digest.finish(&file).await.unwrap_err();
        assert!(
            e.to_string().contains("written to since it was opened"),
            "{e}"
        );
    }

    /// Every batch of `reader`, then its digest; or the first error.
    async fn read_all(mut reader: TextReader) -> Result<(usize, FileDigest)> {
        let mut rows = 0;
        while let Some(b) = reader.next().await {
            rows += b?.num_rows();
        }
        Ok((rows, reader.finish().await?))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_csv_restated_after_its_header_was_read_is_refused() {
        // Its columns swapped, at the same size: read with the planned header, every value
        // would land in the other column.
        let (v1, v2) = (&b"a,b\n1,2\n"[..], &b"b,a\n1,2\n"[..]);
        let store = Arc::new(Meddling::new().restating(Bytes::from_static(v2)));
        let file = store
            .holding("f.csv", Bytes::from_static(v1), FileKind::Csv)
            .await;
        let listed_e_tag = store.inner.head(&file.path).await.unwrap().e_tag;
        let loc = store.location();
        // The header is read from the first version; the store restates it as that read begins.
        let names = csv_header(&loc, &file).await.unwrap();
        assert_eq!(names, ["a", "b"]);

        // Without an ETag to compare, the rows' read finds the other header.
        let reader = spawn_csv(&loc, &file, text_schema(&names), None)
            .await
            .unwrap();
        let e = read_all(reader).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert_eq!(
            e.to_string(),
            "memory://cur/f.csv changed while the run read it (header: column 1 is \"b\", \
             where it was \"a\"); run again"
        );

        // With the listing's ETag, every read is held to the listed version.
        let listed = DiscoveredFile {
            e_tag: listed_e_tag,
            ..file.clone()
        };
        let Err(e) = spawn_csv(&loc, &listed, text_schema(&names), None).await else {
            panic!("a file read at another ETag than listed must fail");
        };
        assert!(e.to_string().contains("when listed"), "{e}");
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_parquet_restated_before_its_footer_was_read_is_changed_not_corrupt() {
        let store = Arc::new(Meddling::new());
        let v1 = parquet_of(&["x"]);
        let file = store.holding("f.parquet", v1, FileKind::Parquet).await;
        let longer = parquet_of(&["a much longer value", "and another"]);
        store.inner.put(&file.path, longer.into()).await.unwrap();
        let e = parquet_columns(&store.location(), &file).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert!(e.to_string().contains("bytes when listed"), "{e}");
        // A corrupt file at its listed size is still a bad file.
        let corrupt = store
            .holding(
                "g.parquet",
                Bytes::from_static(b"not parquet at all"),
                FileKind::Parquet,
            )
            .await;
        let e = parquet_columns(&store.location(), &corrupt)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_read_of_text_is_the_stores_error_and_bad_gzip_a_bad_file() {
        use crate::error::exit;
        let csv = Bytes::from_static(b"a\n1\n");
        // A connection lost after the first chunk of a CSV's rows: the store's error, exit 4.
        let store = Arc::new(Meddling::new().ending(Ending::LostAfter(1)));
        let file = store.holding("f.csv", csv.clone(), FileKind::Csv).await;
        let column_a = async |store: &Arc<Meddling>, file| {
            let schema = text_schema(&["a".into()]);
            read_all(
                spawn_csv(&store.location(), file, schema, None)
                    .await
                    .unwrap(),
            )
            .await
        };
        let e = column_a(&store, &file).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE);
        assert!(e.to_string().contains("connection reset by peer"), "{e}");

        // Lost before any of it: a header (CSV or JSON) that could not be read is exit 4 too,
        // not an empty or malformed file.
        let store = Arc::new(Meddling::new().ending(Ending::LostAfter(0)));
        let file = store.holding("f.csv", csv, FileKind::Csv).await;
        let e = csv_header(&store.location(), &file).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE, "{e}");
        let json = Bytes::from_static(b"{\"a\": 1}\n");
        let file = store.holding("f.json", json, FileKind::Json).await;
        let e = json_header(&store.location(), &file).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE, "{e}");

        // A Parquet footer the store fails to give: exit 4.
        let parquet = parquet_of(&["x"]);
        let file = store.holding("f.parquet", parquet, FileKind::Parquet).await;
        let e = parquet_columns(&store.location(), &file).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE, "{e}");

        // Bytes that do not decompress: a bad file, exit 3, with what the decoder said.
        let store = Arc::new(Meddling::new());
        let garbage = Bytes::from_static(b"\x1f\x8b\x08\x00not deflate at all");
        let file = store.holding("f.csv.gz", garbage, FileKind::CsvGz).await;
        let e = column_a(&store, &file).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::BAD_INPUT);
        assert!(e.to_string().contains("cannot read:"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_header_that_cannot_be_a_header_is_a_bad_file() {
        let store = Arc::new(Meddling::new());
        let refused = async |name: &str, text: Vec<u8>| {
            let file = store.holding(name, text.into(), FileKind::Csv).await;
            let e = csv_header(&store.location(), &file).await.unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT, "{e}");
            e.to_string()
        };
        // An unclosed quote runs on past the first MiB: csv_core would end the header where
        // the MiB ends, and every run would then find "another" header when it streams.
        let mut open = b"a,\"b\n".to_vec();
        open.extend(std::iter::repeat_n(b'x', 2 << 20));
        assert!(refused("open.csv", open).await.contains("runs past"));
        // A quote left open for a line or two swallows rows into the header.
        let swallowed = b"a,\"b\n1,2\n3,\"4\n".to_vec();
        assert!(
            refused("swallowed.csv", swallowed)
                .await
                .contains("line break")
        );
        assert!(
            refused("twice.csv", b"a,b,a\n".to_vec())
                .await
                .contains("repeats")
        );

        // Headers that are headers: only a header, with no line end; exactly the first MiB
        // with its line end; gzipped.
        let read = async |name: &str, text: Vec<u8>, kind| {
            let file = store.holding(name, text.into(), kind).await;
            csv_header(&store.location(), &file).await.unwrap()
        };
        assert_eq!(
            read("only.csv", b"a,b".to_vec(), FileKind::Csv).await,
            ["a", "b"]
        );
        let mut full = vec![b'x'; HEAD_BYTES as usize - 1];
        full.push(b'\n');
        full.extend_from_slice(b"1\n");
        assert_eq!(
            read("full.csv", full, FileKind::Csv).await[0].len(),
            HEAD_BYTES as usize - 1
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"a,b\n1,2\n").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(read("f.csv.gz", gz, FileKind::CsvGz).await, ["a", "b"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_local_csv_written_to_while_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = dir.path().join("f.csv");
        // More batches than the reader runs ahead by: it is still reading (or waiting to send)
        // when the first batch arrives, and checks the file only once it sent the last.
        let mut text = String::from("a,b\n");
        for i in 0..5 * BATCH_ROWS + 1 {
            text.push_str(&format!("{i},x\n"));
        }
        std::fs::write(&on_disk, &text).unwrap();
        let when = std::fs::metadata(&on_disk).unwrap().modified().unwrap();
        let (loc, file) = local_file(&on_disk, FileKind::Csv);
        let schema = text_schema(&["a".into(), "b".into()]);
        let start = || spawn_csv(&loc, &file, schema.clone(), None);

        // Undisturbed: every row, and the file's hash.
        let (rows, digest) = read_all(start().await.unwrap()).await.unwrap();
        assert_eq!(rows, 5 * BATCH_ROWS + 1);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&text)));

        // Appended to after the first batch arrived.
        let mut reader = start().await.unwrap();
        assert!(reader.next().await.unwrap().is_ok());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&on_disk)
            .unwrap();
        std::io::Write::write_all(&mut f, b"late,x\n").unwrap();
        drop(f);
        let e = read_all(reader).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INFRASTRUCTURE);
        assert!(
            e.to_string().contains("changed while the run read it"),
            "{e}"
        );

        // Rewritten in place at the same size, its modification time set back: still refused
        // (its change time moved).
        std::fs::write(&on_disk, &text).unwrap();
        let mut reader = start().await.unwrap();
        assert!(reader.next().await.unwrap().is_ok());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&on_disk)
            .unwrap();
        std::io::Write::write_all(&mut &f, text.replace(",x\n", ",y\n").as_bytes()).unwrap();
        f.set_modified(when).unwrap();
        drop(f);
        let e = read_all(reader).await.unwrap_err();
        assert!(
            e.to_string().contains("written to since it was opened"),
            "{e}"
        );
    }

    #[test]
    fn doubles_read_as_the_text_arrows_cast_gives_them() {
        let values = vec![
            Some(0.1 + 0.2),
            Some(-0.0),
            Some(1e-7),
            Some(1.5e21),
            Some(123456.789),
            None,
            Some(f64::MAX),
            Some(f64::MIN_POSITIVE),
            Some(5e-324),
            Some(f64::NAN),
            Some(f64::NEG_INFINITY),
            Some(0.005),
        ];
        let col = Arc::new(arrow::array::Float64Array::from(values)) as ArrayRef;
        let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(schema, vec![col.clone()]).unwrap();
        let got = to_text(&batch, &["c".to_string()], &[false]).unwrap();
        let want = arrow::compute::cast(&col, &DataType::Utf8).unwrap();
        assert_eq!(got.column(0).as_string::<i32>(), want.as_string::<i32>());
        assert_eq!(
            got.column(0).as_string::<i32>().value(0),
            "0.30000000000000004"
        );
    }

    #[test]
    fn json_numbers_keep_their_digits() {
        let line = r#"{"cost":0.1000000000000000055,"n":-1.5E-7,"s":"a \"1\" é 2","b":true,"a":[1,{"x":2}]}"#;
        let q = quote_json_numbers(line);
        let v: serde_json::Value = serde_json::from_str(&q).unwrap();
        assert_eq!(v["cost"], "0.1000000000000000055");
        assert_eq!(v["n"], "-1.5E-7");
        assert_eq!(v["s"], "a \"1\" é 2");
        assert_eq!(v["b"], true);
        assert_eq!(v["a"][1]["x"], "2");
    }

    #[test]
    fn parquet_structs_and_lists_become_json_text() {
        use arrow::array::{Int64Array, ListArray, StructArray};
        let amount = Arc::new(arrow::array::Float64Array::from(vec![Some(0.1), None])) as ArrayRef;
        let unit = Arc::new(StringArray::from(vec![Some("hour"), Some("byte")])) as ArrayRef;
        let usage = StructArray::from(vec![
            (
                Arc::new(Field::new("amount", DataType::Float64, true)),
                amount,
            ),
            (Arc::new(Field::new("unit", DataType::Utf8, true)), unit),
        ]);
        let credits = ListArray::from_iter_primitive::<arrow::datatypes::Int64Type, _, _>(vec![
            Some(vec![Some(-3), Some(1)]),
            None,
        ]);
        let _ = Int64Array::from(vec![1]);
        let v = nested_values(&usage).unwrap();
        assert_eq!(v[0].to_string(), r#"{"amount":"0.1","unit":"hour"}"#);
        assert_eq!(v[1].to_string(), r#"{"amount":null,"unit":"byte"}"#);
        let c = nested_values(&credits).unwrap();
        assert_eq!(c[0].to_string(), r#"["-3","1"]"#);
        assert!(c[1].is_null());
    }
}
