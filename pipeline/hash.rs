//! Content hashes of written rows, per partition, independent of batching and file layout.
//!
//! Each column of a partition feeds three SHA-256 streams: the bytes of its non-null values in
//! row order, the lengths of its variable-width values, and its runs of NULLs as (first row,
//! length). The partition's hash is the SHA-256 of those digests, column by column, and its row
//! count. Batches are fed whole runs at a time (a run of valid fixed-width values is one slice
//! of its buffer), so hashing costs little more than reading the bytes once; and since a null run
//! that spans two batches is only emitted once it ends, how rows were batched never changes a hash.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::normalize::PartitionKey;
use crate::schema::PARTITION_COLUMNS;

/// SHA-256 per partition over its rows in order (see the module docs).
pub struct ContentHasher {
    names: Vec<String>,
    partition_idx: Vec<usize>,
    parts: BTreeMap<PartitionKey, PartHash>,
}

struct PartHash {
    rows: u64,
    columns: Vec<ColumnHash>,
}

#[derive(Default)]
struct ColumnHash {
    values: Sha256,
    lengths: Sha256,
    null_runs: Sha256,
    /// A run of NULLs still open at the end of the last batch: (first row, length).
    open_nulls: Option<(u64, u64)>,
}

impl ColumnHash {
    fn nulls(&mut self, first: u64, len: u64) {
        match &mut self.open_nulls {
            Some((start, n)) if *start + *n == first => *n += len,
            _ => {
                self.close_nulls();
                self.open_nulls = Some((first, len));
            }
        }
    }

    fn close_nulls(&mut self) {
        if let Some((start, n)) = self.open_nulls.take() {
            self.null_runs.update(start.to_le_bytes());
            self.null_runs.update(n.to_le_bytes());
        }
    }

    /// Rows `from..to` of `a`, which are rows `first..` of the partition.
    fn update(&mut self, a: &ArrayRef, from: usize, to: usize, first: u64, scratch: &mut Vec<u8>) {
        let valid_runs: Vec<(usize, usize)> = match a.logical_nulls() {
            None => vec![(from, to)],
            Some(n) => n
                .inner()
                .slice(from, to - from)
                .set_slices()
                .map(|(s, e)| (from + s, from + e))
                .collect(),
        };
        let mut at = from;
        for (s, e) in valid_runs {
            if s > at {
                self.nulls(first + (at - from) as u64, (s - at) as u64);
            }
            self.values_of(a, s, e, scratch);
            at = e;
        }
        if to > at {
            self.nulls(first + (at - from) as u64, (to - at) as u64);
        }
    }

    /// Valid rows `s..e` of `a`.
    fn values_of(&mut self, a: &ArrayRef, s: usize, e: usize, scratch: &mut Vec<u8>) {
        match a.data_type() {
            DataType::Utf8 => {
                let a = a.as_string::<i32>();
                let offsets = a.value_offsets();
                let (lo, hi) = (offsets[s] as usize, offsets[e] as usize);
                self.values.update(&a.value_data()[lo..hi]);
                scratch.clear();
                for w in offsets[s..=e].windows(2) {
                    scratch.extend_from_slice(&((w[1] - w[0]) as u32).to_le_bytes());
                }
                self.lengths.update(&scratch[..]);
            }
            DataType::Boolean => {
                let a = a.as_boolean();
                scratch.clear();
                scratch.extend((s..e).map(|i| u8::from(a.value(i))));
                self.values.update(&scratch[..]);
            }
            t if t.is_primitive() => {
                let width = t.primitive_width().expect("primitive");
                let data = a.to_data();
                let start = (data.offset() + s) * width;
                let end = (data.offset() + e) * width;
                self.values
                    .update(&data.buffers()[0].as_slice()[start..end]);
            }
            _ => {
                // Nested values (none in tally's tables today): their display text.
                for i in s..e {
                    let text =
                        arrow::util::display::array_value_to_string(a, i).unwrap_or_default();
                    self.lengths.update((text.len() as u32).to_le_bytes());
                    self.values.update(text.as_bytes());
                }
            }
        }
    }
}

impl ContentHasher {
    /// A hasher for batches of this schema (it must have the partition columns).
    pub fn new(schema: &SchemaRef) -> Result<ContentHasher> {
        let partition_idx = PARTITION_COLUMNS
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        Ok(ContentHasher {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            partition_idx,
            parts: BTreeMap::new(),
        })
    }

    /// A hasher of all rows as one sequence (for tables without partitions, like the stages').
    pub fn whole(schema: &SchemaRef) -> Result<ContentHasher> {
        let mut h = ContentHasher::new(schema)?;
        h.partition_idx.clear();
        Ok(h)
    }

    /// Adds a batch's rows.
    pub fn update(&mut self, b: &RecordBatch) -> Result<()> {
        let parts: Vec<&StringArray> = self
            .partition_idx
            .iter()
            .map(|i| {
                b.column(*i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("partition columns are Utf8")
            })
            .collect();
        let value = |c: usize, r: usize| -> &str {
            parts
                .get(c)
                .map(|a| if a.is_null(r) { "" } else { a.value(r) })
                .unwrap_or_default()
        };
        let n_cols = self.names.len();
        let mut scratch = Vec::new();
        // Rows of one partition come in long runs: each run is hashed column by column.
        let mut r = 0;
        while r < b.num_rows() {
            let key = (value(0, r), value(1, r), value(2, r));
            let mut end = r + 1;
            while end < b.num_rows() && (value(0, end), value(1, end), value(2, end)) == key {
                end += 1;
            }
            let owned = (key.0.to_string(), key.1.to_string(), key.2.to_string());
            let part = self.parts.entry(owned).or_insert_with(|| PartHash {
                rows: 0,
                columns: (0..n_cols).map(|_| ColumnHash::default()).collect(),
            });
            for (c, h) in part.columns.iter_mut().enumerate() {
                h.update(b.column(c), r, end, part.rows, &mut scratch);
            }
            part.rows += (end - r) as u64;
            r = end;
        }
        Ok(())
    }

    /// The hashes, hex.
    pub fn finish(self) -> BTreeMap<PartitionKey, String> {
        let names = self.names;
        self.parts
            .into_iter()
            .map(|(k, mut p)| {
                let mut h = Sha256::new();
                h.update(p.rows.to_le_bytes());
                for (name, c) in names.iter().zip(p.columns.iter_mut()) {
                    c.close_nulls();
                    let c = std::mem::take(c);
                    h.update(name.as_bytes());
                    h.update(c.values.finalize());
                    h.update(c.lengths.finalize());
                    h.update(c.null_runs.finalize());
                }
                (k, hex::encode(h.finalize()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(names: &[Option<&str>], amounts: &[Option<i128>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(38, 18), true),
            Field::new("row", DataType::Int64, false),
        ]));
        let n = names.len() as i64;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(
                    Decimal128Array::from(amounts.to_vec())
                        .with_precision_and_scale(38, 18)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    fn hash(batches: &[RecordBatch]) -> String {
        let mut h = ContentHasher::whole(&batches[0].schema()).unwrap();
        for b in batches {
            h.update(b).unwrap();
        }
        h.finish().into_values().next().unwrap()
    }

    #[test]
    fn batching_never_changes_a_hash_and_content_always_does() {
        let names = [Some("a"), None, None, Some("bc"), None, Some("")];
        let amounts = [Some(1), None, Some(3), None, None, Some(6)];
        let whole = batch(&names, &amounts);
        let reference = hash(std::slice::from_ref(&whole));
        for cut in 1..names.len() {
            let parts = [whole.slice(0, cut), whole.slice(cut, names.len() - cut)];
            assert_eq!(hash(&parts), reference, "cut at {cut}");
        }
        let singles: Vec<RecordBatch> = (0..names.len()).map(|i| whole.slice(i, 1)).collect();
        assert_eq!(hash(&singles), reference);
        // Moving a NULL, merging two strings or changing an amount all change the hash.
        let moved = batch(
            &[Some("a"), None, Some("bc"), None, None, Some("")],
            &amounts,
        );
        let merged = batch(
            &[Some("abc"), None, None, Some(""), None, Some("")],
            &amounts,
        );
        let changed = batch(&names, &[Some(1), None, Some(4), None, None, Some(6)]);
        for other in [moved, merged, changed] {
            assert_ne!(hash(&[other]), reference);
        }
    }
}
