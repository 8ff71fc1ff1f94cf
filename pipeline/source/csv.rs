//! The CSV decoder: an export's records → batches of text columns, built record by record.
//!
//! `csv_core` splits each record into fields; the fields of the columns a mapping reads are
//! appended to their string columns at once, while the record is still in cache. (arrow-csv
//! decodes a whole batch into one buffer first and then builds each column in a pass of its own
//! over it: with 1 KB CUR records that buffer is 8 MB, and reading it back once per column was
//! the largest single cost of a CSV run.) Empty fields become NULL, as arrow-csv makes them;
//! the first record is the header and is skipped.

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use csv_core::ReadRecordResult;

use super::read::{BATCH_ROWS, Wanted};

/// Why a CSV file could not be decoded. Line numbers count the header as line 1.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The bytes could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A record has more or fewer fields than the header.
    #[error("incorrect number of fields for line {line}, expected {expected} got {got}")]
    FieldCount {
        /// Line the record starts on.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in the record.
        got: usize,
    },
    /// The header is not the one the file was planned with (another width or other names):
    /// the file was rewritten between the two reads.
    #[error("its header changed since the run planned it: {0}")]
    Header(String),
    /// A field is not UTF-8 text.
    #[error("invalid UTF-8 on line {line} in column {column:?}")]
    Utf8 {
        /// Line the record starts on.
        line: u64,
        /// The column's name in the header.
        column: String,
    },
}

/// Batches of [`BATCH_ROWS`] records from a CSV file whose header gives `schema` (all text);
/// columns `wanted` does not read come as all-NULL text.
///
/// A record on one line of the input block (nearly every record of a billing export) is split
/// where it lies: at its commas, its quoted fields taken between their quotes. A record with a
/// doubled quote, a line end inside quotes or a bare carriage return, and one that runs past
/// the end of a block, is read by `csv_core`, which handles every case across lines and blocks.
/// Both give the same fields: a test holds them to arrow-csv's reading of the same bytes.
pub struct CsvBatches<R> {
    input: R,
    core: csv_core::Reader,
    columns: Columns,
    /// The slow path's output: field bytes and their ends.
    record: Vec<u8>,
    record_ends: Vec<usize>,
    /// Line the next record starts on (the header is line 1).
    line: u64,
    header_read: bool,
    done: bool,
}

/// The batch being built: one string column per read file column.
struct Columns {
    schema: SchemaRef,
    /// For each file column, the builder its fields go to (`None`: not read).
    slots: Vec<Option<usize>>,
    builders: Vec<StringBuilder>,
    /// Bytes of text each builder held at its last batch: the next one is sized from it.
    sizes: Vec<usize>,
    /// All-NULL text column of `BATCH_ROWS` rows, shared by the unread columns of every batch.
    nulls: ArrayRef,
    /// Field spans (start, end) of the record being appended.
    spans: Vec<(usize, usize)>,
    rows: usize,
}

impl Columns {
    /// The header read must be the one the schema was built from: the same columns, named
    /// alike, in the same order.
    fn check_header(&self, names: &[String]) -> Result<(), CsvError> {
        let planned = self.schema.fields();
        if names.len() != planned.len() {
            return Err(CsvError::Header(format!(
                "{} columns, where it had {}",
                names.len(),
                planned.len()
            )));
        }
        match names.iter().zip(planned).position(|(n, f)| n != f.name()) {
            Some(k) => Err(CsvError::Header(format!(
                "column {} is {:?}, where it was {:?}",
                k + 1,
                names[k],
                planned[k].name()
            ))),
            None => Ok(()),
        }
    }

    /// Appends one record whose field `k` is `text[spans[k].0..spans[k].1]`. `checked`: `text`
    /// is UTF-8 and every span starts and ends at a character boundary.
    fn append(
        &mut self,
        text: &[u8],
        spans: &[(usize, usize)],
        checked: bool,
        line: u64,
    ) -> Result<(), CsvError> {
        if spans.len() != self.slots.len() {
            return Err(CsvError::FieldCount {
                line,
                expected: self.slots.len(),
                got: spans.len(),
            });
        }
        for (i, (&(start, end), slot)) in spans.iter().zip(&self.slots).enumerate() {
            let Some(b) = *slot else { continue };
            let field = &text[start..end];
            let builder = &mut self.builders[b];
            if field.is_empty() {
                builder.append_null();
            } else if checked {
                // SAFETY: `text` is UTF-8 and the span's ends are character boundaries.
                builder.append_value(unsafe { std::str::from_utf8_unchecked(field) });
            } else {
                match std::str::from_utf8(field) {
                    Ok(t) => builder.append_value(t),
                    Err(_) => {
                        return Err(CsvError::Utf8 {
                            line,
                            column: self.schema.field(i).name().clone(),
                        });
                    }
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Splits one line (its line end removed) into fields and appends it; `false` when the line
    /// needs `csv_core` (nothing is appended then).
    fn append_line(&mut self, text: &[u8], line: u64) -> Result<bool, CsvError> {
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        let split = match memchr::memchr2(b'"', b'\r', text) {
            None => {
                let mut start = 0;
                for comma in memchr::memchr_iter(b',', text) {
                    spans.push((start, comma));
                    start = comma + 1;
                }
                spans.push((start, text.len()));
                true
            }
            Some(i) if text[i] == b'"' && memchr::memchr(b'\r', &text[i..]).is_none() => {
                split_quoted(text, &mut spans)
            }
            Some(_) => false,
        };
        // Spans end at commas, quotes (ASCII) or the line's ends: a line of valid UTF-8
        // splits into fields of valid UTF-8.
        let r = match split {
            true => self
                .append(text, &spans, std::str::from_utf8(text).is_ok(), line)
                .map(|()| true),
            false => Ok(false),
        };
        self.spans = spans;
        r
    }

    /// The records appended since the last batch, as one batch of the file's shape.
    fn finish(&mut self) -> RecordBatch {
        let rows = std::mem::take(&mut self.rows);
        let mut read = Vec::with_capacity(self.builders.len());
        for (b, size) in self.builders.iter_mut().zip(self.sizes.iter_mut()) {
            let column = b.finish();
            *size = column.value_data().len();
            // Sized like the batch before: no regrowth while the next one fills.
            *b = StringBuilder::with_capacity(BATCH_ROWS, *size + *size / 8);
            read.push(Arc::new(column) as ArrayRef);
        }
        let mut read = read.into_iter();
        let columns: Vec<ArrayRef> = self
            .slots
            .iter()
            .map(|slot| match slot {
                Some(_) => read.next().expect("one column per read slot"),
                None => self.nulls.slice(0, rows),
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .expect("text columns of one length")
    }
}

/// Splits a one-line record that has quotes into field spans, quoted fields without their
/// quotes. `false` if the line needs `csv_core`: a doubled quote (the field must be unescaped),
/// a quote left open (the field goes on past the line end) or text after a closing quote.
fn split_quoted(text: &[u8], spans: &mut Vec<(usize, usize)>) -> bool {
    let mut i = 0;
    loop {
        let end = if text.get(i) == Some(&b'"') {
            let Some(close) = memchr::memchr(b'"', &text[i + 1..]).map(|c| i + 1 + c) else {
                return false;
            };
            if !matches!(text.get(close + 1), None | Some(b',')) {
                return false;
            }
            spans.push((i + 1, close));
            close + 1
        } else {
            // A quote inside an unquoted field is text, as csv_core reads it.
            let end = memchr::memchr(b',', &text[i..]).map_or(text.len(), |c| i + c);
            spans.push((i, end));
            end
        };
        if end == text.len() {
            return true;
        }
        i = end + 1;
    }
}

impl<R: BufRead> CsvBatches<R> {
    /// A decoder over `input`, which starts with the header line.
    pub fn new(input: R, schema: SchemaRef, wanted: Option<&Wanted>) -> Self {
        let mut slots = Vec::with_capacity(schema.fields().len());
        let mut n = 0;
        for i in 0..schema.fields().len() {
            let reads = wanted.is_none_or(|w| w.reads(i));
            slots.push(reads.then(|| {
                n += 1;
                n - 1
            }));
        }
        CsvBatches {
            input,
            core: csv_core::Reader::new(),
            columns: Columns {
                schema,
                slots,
                builders: (0..n).map(|_| StringBuilder::new()).collect(),
                sizes: vec![0; n],
                nulls: arrow::array::new_null_array(&DataType::Utf8, BATCH_ROWS),
                spans: Vec::new(),
                rows: 0,
            },
            record: vec![0; 4096],
            record_ends: vec![0; 128],
            line: 1,
            header_read: false,
            done: false,
        }
    }

    /// Reads the header, the first record: its fields as text, a UTF-8 byte-order mark removed
    /// (`csv_core` strips one too, unless the input's first block is shorter than it); `None`
    /// if the input is empty.
    fn read_header(&mut self) -> Result<Option<Vec<String>>, CsvError> {
        let Some((fields, _)) = self.slow_record()? else {
            return Ok(None);
        };
        self.header_read = true;
        let mut start = 0;
        let mut names = Vec::with_capacity(fields);
        for (k, &end) in self.record_ends[..fields].iter().enumerate() {
            let name =
                std::str::from_utf8(&self.record[start..end]).map_err(|_| CsvError::Utf8 {
                    line: 1,
                    column: format!("#{}", k + 1),
                })?;
            let name = if k == 0 {
                name.strip_prefix('\u{feff}').unwrap_or(name)
            } else {
                name
            };
            names.push(name.to_string());
            start = end;
        }
        Ok(Some(names))
    }

    /// Reads the next record with `csv_core` into `record`/`record_ends`; returns its field
    /// count and the line it started on, `None` at the end of the input.
    fn slow_record(&mut self) -> Result<Option<(usize, u64)>, CsvError> {
        // Blank lines before the record are counted here: csv_core skips them too, but the
        // record's line is taken before it reads. (Not before the header, where csv_core also
        // strips a byte order mark that only the file's first bytes may carry.)
        while self.header_read {
            let input = self.input.fill_buf()?;
            let blank = input
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            let lines = memchr::memchr_iter(b'\n', &input[..blank]).count();
            let whole = blank == input.len() && blank > 0;
            self.input.consume(blank);
            self.line += lines as u64;
            if !whole {
                break;
            }
        }
        let line = self.line;
        self.core.set_line(line);
        let (mut nout, mut nend) = (0, 0);
        loop {
            let (res, nin, out, end) = {
                let input = self.input.fill_buf()?;
                self.core.read_record(
                    input,
                    &mut self.record[nout..],
                    &mut self.record_ends[nend..],
                )
            };
            self.input.consume(nin);
            nout += out;
            nend += end;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.record.resize(self.record.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => {
                    self.record_ends.resize(self.record_ends.len() * 2, 0)
                }
                ReadRecordResult::Record => {
                    self.line = self.core.line();
                    return Ok(Some((nend, line)));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// Reads one record the slow way and appends it; `false` at the end of the input.
    fn append_slow(&mut self) -> Result<bool, CsvError> {
        match self.slow_record()? {
            Some((fields, line)) => {
                let mut spans = std::mem::take(&mut self.columns.spans);
                spans.clear();
                let mut start = 0;
                for &end in &self.record_ends[..fields] {
                    spans.push((start, end));
                    start = end;
                }
                let r = self.columns.append(&self.record, &spans, false, line);
                self.columns.spans = spans;
                r?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Fills the batch: whole plain lines of the current block the fast way, the rest through
    /// `csv_core`.
    fn fill(&mut self) -> Result<(), CsvError> {
        while self.columns.rows < BATCH_ROWS {
            let input = self.input.fill_buf()?;
            let mut pos = 0;
            let mut slow = input.is_empty();
            while self.columns.rows < BATCH_ROWS {
                let rest = &input[pos..];
                let Some(nl) = memchr::memchr(b'\n', rest) else {
                    // A block that ends at a line end is simply refilled.
                    slow = !rest.is_empty() || input.is_empty();
                    break;
                };
                let text = &rest[..nl];
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if !text.is_empty() && !self.columns.append_line(text, self.line)? {
                    slow = true;
                    break;
                }
                self.line += 1;
                pos += nl + 1;
            }
            self.input.consume(pos);
            if slow && self.columns.rows < BATCH_ROWS && !self.append_slow()? {
                break;
            }
        }
        Ok(())
    }
}

/// A CSV file's header, read by the same parser as its records: column names, a UTF-8
/// byte-order mark removed; `None` for an empty input.
pub fn read_header(input: impl BufRead) -> Result<Option<Vec<String>>, CsvError> {
    let empty = Arc::new(arrow::datatypes::Schema::empty());
    CsvBatches::new(input, empty, None).read_header()
}

impl<R: BufRead> Iterator for CsvBatches<R> {
    type Item = Result<RecordBatch, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = (|| {
            if !self.header_read {
                match self.read_header()? {
                    None => return Ok(None),
                    Some(names) => self.columns.check_header(&names)?,
                }
            }
            self.fill()?;
            Ok((self.columns.rows > 0).then(|| self.columns.finish()))
        })();
        match step {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    fn schema(n: usize) -> SchemaRef {
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        super::super::read::text_schema(&names)
    }

    fn decode(text: &[u8], n: usize, wanted: Option<&Wanted>) -> Vec<RecordBatch> {
        CsvBatches::new(text, schema(n), wanted)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn cells(b: &RecordBatch, col: usize) -> Vec<Option<String>> {
        let a = b.column(col).as_string::<i32>();
        (0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect()
    }

    #[test]
    fn decodes_as_arrow_csv_does() {
        // Quoting, doubled quotes, embedded separators and line ends, CRLF, empty and quoted
        // empty fields, a blank line, non-ASCII text, no final line end.
        let text = "c0,c1,c2\r\n\"x,1\",\"say \"\"hi\"\"\",\r\n\n,\"\",\"two\nlines\"\r\nü,€,z";
        let ours = decode(text.as_bytes(), 3, None);
        let theirs = arrow_csv(text.as_bytes(), 3);
        assert_eq!(ours, theirs);
        assert_eq!(
            cells(&ours[0], 1),
            vec![Some("say \"hi\"".into()), None, Some("€".into())]
        );
        assert_eq!(cells(&ours[0], 2)[1].as_deref(), Some("two\nlines"));
    }

    fn arrow_csv(text: &[u8], n: usize) -> Vec<RecordBatch> {
        arrow::csv::ReaderBuilder::new(schema(n))
            .with_header(true)
            .with_batch_size(BATCH_ROWS)
            .build_buffered(text)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn plain_and_quoted_lines_read_alike_wherever_the_blocks_end() {
        // One-line records are split in place, the others by csv_core; tiny reader buffers cut
        // records and line ends (CR | LF) at every possible place.
        let cells = [
            "",
            "a",
            "0.0480000000",
            "\"b,c\"",
            "\"say \"\"hi\"\"\"",
            "\"two\nlines\"",
            "ü€",
            "\"\"",
            "x\"y",
            "2024-01-01T00:00:00Z",
            "\"$0.005 per 1,000 PUT\"",
            "\"c\rr\"",
            "\"\"\"lead\"",
            "\"ü,€\"",
            "\"ab\"cd",
            "x\"y\"",
        ];
        let mut seed = 7u64;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        let mut text = String::from("c0,c1,c2,c3\r\n");
        // More rows than a batch holds; every kind of line end, blank lines among them.
        for _ in 0..BATCH_ROWS + 900 {
            let row: Vec<&str> = (0..4).map(|_| cells[next(cells.len())]).collect();
            text.push_str(&row.join(","));
            text.push_str(["\n", "\r\n", "\n\n", "\r", "\r\r\n", "\n\r\n"][next(6)]);
        }
        text.push_str("last,line,no,end");
        let theirs = arrow_csv(text.as_bytes(), 4);
        for capacity in [1, 3, 7, 64, 4096, 1 << 20] {
            let r = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let ours: Vec<RecordBatch> = CsvBatches::new(r, schema(4), None)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(ours, theirs, "buffer of {capacity} bytes");
        }
    }

    #[test]
    fn line_numbers_count_crlf_blank_and_quoted_lines() {
        let text = "c0,c1\r\n1,2\r\n\r\n3,\"x\r\ny\"\r\n5\r\n";
        for capacity in [1, 5, 4096] {
            let r = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let err = CsvBatches::new(r, schema(2), None)
                .find_map(|r| r.err())
                .unwrap();
            assert_eq!(
                err.to_string(),
                "incorrect number of fields for line 6, expected 2 got 1",
                "buffer of {capacity} bytes"
            );
        }
    }

    #[test]
    fn blank_lines_before_a_bad_record_count_wherever_the_blocks_end() {
        // LF, CRLF and CR CR LF blank lines, then a good record, more blank lines, a bad one.
        let text = "c0,c1\n1,2\n\n\r\n\r\r\n3,4\n\n\r\n5\n6,7\n";
        for capacity in 1..=text.len() {
            let r = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let mut batches = CsvBatches::new(r, schema(2), None);
            let err = batches.find_map(|r| r.err()).unwrap();
            assert_eq!(
                err.to_string(),
                "incorrect number of fields for line 9, expected 2 got 1",
                "buffer of {capacity} bytes"
            );
        }
    }

    #[test]
    fn a_header_other_than_the_planned_one_is_refused() {
        let first_error = |text: &str, n: usize| {
            CsvBatches::new(text.as_bytes(), schema(n), None)
                .find_map(|r| r.err())
                .map(|e| e.to_string())
        };
        // Rewritten between planning and reading: narrower, or columns swapped.
        assert_eq!(
            first_error("c0,c1\n1,2,3\n", 3).as_deref(),
            Some("its header changed since the run planned it: 2 columns, where it had 3")
        );
        assert_eq!(
            first_error("c1,c0\n1,2\n", 2).as_deref(),
            Some(
                "its header changed since the run planned it: column 1 is \"c1\", where it was \"c0\""
            )
        );
        // Quoting and a byte-order mark are not changes.
        assert_eq!(first_error("\u{feff}\"c0\",c1\n1,2\n", 2), None);
    }

    #[test]
    fn the_header_is_read_as_the_records_are() {
        let names = |text: &[u8]| read_header(text).unwrap();
        assert_eq!(
            names("\u{feff}a,\"b,c\",\"say \"\"d\"\"\"\r\n1,2,3\n".as_bytes()),
            Some(vec!["a".to_string(), "b,c".into(), "say \"d\"".into()])
        );
        // A header's quoted field may hold a line end; blank lines before it are skipped.
        assert_eq!(
            names(b"\n\"two\nlines\",x\n"),
            Some(vec!["two\nlines".to_string(), "x".into()])
        );
        assert_eq!(names(b""), None);
        assert_eq!(
            read_header(&b"a,\xff\n"[..]).unwrap_err().to_string(),
            "invalid UTF-8 on line 1 in column \"#2\""
        );
    }

    #[test]
    fn unread_columns_are_null_and_batches_hold_batch_rows() {
        let mut text = String::from("c0,c1,c2\n");
        for i in 0..BATCH_ROWS + 3 {
            text.push_str(&format!("{i},skip{i},z{i}\n"));
        }
        let wanted = Wanted::new(vec![true, false, true]);
        let batches = decode(text.as_bytes(), 3, Some(&wanted));
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![BATCH_ROWS, 3]
        );
        let last = &batches[1];
        assert_eq!(last.column(1).null_count(), 3);
        assert_eq!(
            cells(last, 0)[2].as_deref(),
            Some(&*(BATCH_ROWS + 2).to_string())
        );
        assert_eq!(
            cells(last, 2)[0].as_deref(),
            Some(&*format!("z{BATCH_ROWS}"))
        );
        assert_eq!(batches[0].schema(), schema(3));
    }

    #[test]
    fn a_short_record_is_named_by_the_line_it_starts_on() {
        let text = "c0,c1\n1,\"multi\nline\"\n3\n";
        let err = CsvBatches::new(text.as_bytes(), schema(2), None)
            .find_map(|r| r.err())
            .unwrap();
        assert_eq!(
            err.to_string(),
            "incorrect number of fields for line 4, expected 2 got 1"
        );
    }

    #[test]
    fn a_field_that_is_not_utf8_is_named_by_line_and_column() {
        let err = CsvBatches::new(&b"c0,c1\n1,2\n3,\xff\n"[..], schema(2), None)
            .find_map(|r| r.err())
            .unwrap();
        assert_eq!(err.to_string(), "invalid UTF-8 on line 3 in column \"c1\"");
    }

    #[test]
    fn a_file_with_only_a_header_has_no_batches() {
        assert!(decode(b"c0,c1\n", 2, None).is_empty());
        assert!(decode(b"", 2, None).is_empty());
    }
}
