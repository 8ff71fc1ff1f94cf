//! Content hashes of written rows, per partition, independent of batching and file layout.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::normalize::PartitionKey;
use crate::schema::PARTITION_COLUMNS;

/// SHA-256 per partition over its rows in order, in Arrow's row format.
pub struct ContentHasher {
    converter: RowConverter,
    partition_idx: Vec<usize>,
    hashers: BTreeMap<PartitionKey, Sha256>,
}

impl ContentHasher {
    /// A hasher for batches of this schema (it must have the partition columns).
    pub fn new(schema: &SchemaRef) -> Result<ContentHasher> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let partition_idx = PARTITION_COLUMNS
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        Ok(ContentHasher {
            converter: RowConverter::new(fields)?,
            partition_idx,
            hashers: BTreeMap::new(),
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
        let rows = self.converter.convert_columns(b.columns())?;
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
        let value = |c: usize, r: usize| -> String {
            parts
                .get(c)
                .map(|a| {
                    if a.is_null(r) {
                        String::new()
                    } else {
                        a.value(r).to_string()
                    }
                })
                .unwrap_or_default()
        };
        for r in 0..b.num_rows() {
            let key = (value(0, r), value(1, r), value(2, r));
            self.hashers
                .entry(key)
                .or_default()
                .update(rows.row(r).as_ref());
        }
        Ok(())
    }

    /// The hashes, hex.
    pub fn finish(self) -> BTreeMap<PartitionKey, String> {
        self.hashers
            .into_iter()
            .map(|(k, h)| (k, hex::encode(h.finalize())))
            .collect()
    }
}
