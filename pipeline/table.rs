//! Output tables: Delta Lake through `deltalake`, partitioned by provider, billing account and
//! billing period.
//!
//! Rows stream into a [`Staged`] writer as they are checked: Parquet files are written to the
//! table's folder as they fill, but nothing is visible until [`Staged::commit`] writes one log
//! entry that adds the new files and removes every file of the partitions the run replaces. So
//! readers see either the old partition or the new one, never both or half; a run that fails
//! before its commit (or a crash) leaves only unreferenced files (removed by `VACUUM`). Memory
//! stays bounded by the writer's open files, not by the size of the export. Every commit carries
//! the run id in its commit info, and every version stays readable for time travel.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array as _, AsArray as _, RecordBatch};
use arrow::datatypes::SchemaRef;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow as _, TryIntoKernel as _};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, StructType};
use deltalake::protocol::DeltaOperation;
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use indexmap::IndexMap;
use object_store::ObjectStoreExt as _;
use url::Url;

use crate::error::{Result, TallyError};
use crate::normalize::PartitionKey;
use crate::schema::{PARTITION_COLUMNS, sql_str};

/// Names of the tables tally writes under an output root.
pub mod names {
    /// FOCUS 1.4 CostAndUsage.
    pub const COST_AND_USAGE: &str = "cost_and_usage";
    /// The FOCUS 1.2 projection.
    pub const COST_AND_USAGE_1_2: &str = "cost_and_usage_1_2";
    /// Refused rows.
    pub const QUARANTINE: &str = "quarantine";
}

fn terr(table: &str, e: impl std::fmt::Display) -> TallyError {
    TallyError::Table {
        table: table.to_string(),
        message: e.to_string(),
    }
}

/// URL of a table under an output root.
pub fn table_url(root: &str, name: &str) -> Result<Url> {
    let s = format!("{}/{name}", root.trim_end_matches('/'));
    if let Some(path) = s.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| TallyError::Io {
            path: path.to_string(),
            source: e,
        })?;
        return deltalake::ensure_table_uri(path).map_err(|e| terr(&s, e));
    }
    Url::parse(&s).map_err(|e| TallyError::Usage(format!("{s}: {e}")))
}

/// Opens a table if it exists (loaded), or returns an unloaded handle.
pub async fn open(url: &Url) -> Result<DeltaTable> {
    crate::cloud::register_delta_handlers();
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| terr(url.as_str(), e))?
        .build()
        .map_err(|e| terr(url.as_str(), e))?;
    if table
        .verify_deltatable_existence()
        .await
        .map_err(|e| terr(url.as_str(), e))?
    {
        table.load().await.map_err(|e| terr(url.as_str(), e))?;
    }
    Ok(table)
}

/// Opens a table at a given version (time travel).
pub async fn open_version(url: &Url, version: u64) -> Result<DeltaTable> {
    crate::cloud::register_delta_handlers();
    DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| terr(url.as_str(), e))?
        .with_version(version)
        .load()
        .await
        .map_err(|e| terr(url.as_str(), format!("version {version}: {e}")))
}

/// Opens the table if it exists (unloaded if not), refusing a table whose schema differs from
/// `schema`.
async fn open_checked(url: &Url, schema: &SchemaRef) -> Result<DeltaTable> {
    let table = open(url).await?;
    if table.version().is_some() {
        let existing = table
            .snapshot()
            .map_err(|e| terr(url.as_str(), e))?
            .snapshot()
            .arrow_schema();
        let want: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let have: Vec<_> = existing
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        if want != have {
            return Err(terr(
                url.as_str(),
                "exists with a different schema (written by another tally version?); write to a new output or migrate it",
            ));
        }
    }
    Ok(table)
}

/// The table's schema as Delta stores it.
fn delta_schema(url: &Url, schema: &SchemaRef) -> Result<StructType> {
    schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| terr(url.as_str(), e))
}

/// The table property that keeps a table's whole log: Delta's default removes log entries older
/// than 30 days at every 100th commit's checkpoint, after which those versions cannot be read.
/// An auditor reproduces a run "as of version N" from its manifest, so tally's tables keep
/// theirs (the FOCUS tables from their creation, the stage tables with every overwrite).
pub const KEEP_WHOLE_LOG: (&str, &str) = ("delta.enableExpiredLogCleanup", "false");

/// `table`, keeping its whole log ([`KEEP_WHOLE_LOG`]): a table created without the property
/// (a stage table written by tally before it set it) gets it with one metadata commit; any
/// other is returned as it is.
pub async fn keeping_whole_log(table: DeltaTable, url: &Url) -> Result<DeltaTable> {
    use deltalake::table::config::TablePropertiesExt as _;
    let Ok(state) = table.snapshot() else {
        return Ok(table); // not created yet: the write that creates it sets the property
    };
    if !state.table_config().enable_expired_log_cleanup() {
        return Ok(table);
    }
    let (key, value) = KEEP_WHOLE_LOG;
    table
        .set_tbl_properties()
        .with_properties([(key.to_string(), value.to_string())].into())
        .await
        .map_err(|e| terr(url.as_str(), e))
}

/// Creates the absent table with this schema and the partition columns: version 0. A table
/// that exists by now was created by another run after `table` was opened: that is a conflict
/// (never written over), as Delta's commit check makes it for a table that existed.
async fn create(table: &DeltaTable, url: &Url, schema: &SchemaRef) -> Result<DeltaTable> {
    let created = table
        .create()
        .with_columns(delta_schema(url, schema)?.fields().cloned())
        .with_partition_columns(PARTITION_COLUMNS)
        // Keep the log for time travel: auditors reproduce "as of version N".
        .with_configuration([(KEEP_WHOLE_LOG.0, Some(KEEP_WHOLE_LOG.1))])
        .with_save_mode(SaveMode::ErrorIfExists)
        .await;
    match created {
        Ok(t) => Ok(t),
        Err(e) if open(url).await.is_ok_and(|t| t.version().is_some()) => Err(terr(
            url.as_str(),
            format!(
                "conflict: another run created this table while this run staged its rows ({e})"
            ),
        )),
        Err(e) => Err(terr(url.as_str(), e)),
    }
}

/// A predicate over the partition columns selecting exactly these partitions.
pub fn partitions_predicate(keys: &BTreeSet<PartitionKey>) -> String {
    keys.iter()
        .map(|(p, a, per)| {
            format!(
                "(\"{}\" = {} AND \"{}\" = {} AND \"{}\" = {})",
                PARTITION_COLUMNS[0],
                sql_str(p),
                PARTITION_COLUMNS[1],
                sql_str(a),
                PARTITION_COLUMNS[2],
                sql_str(per)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Per-partition file and row counts of the table's current version.
pub fn partition_stats(table: &DeltaTable) -> BTreeMap<PartitionKey, (u64, u64)> {
    let mut out: BTreeMap<PartitionKey, (u64, u64)> = BTreeMap::new();
    let Ok(snapshot) = table.snapshot() else {
        return out;
    };
    for f in snapshot.log_data().iter() {
        let pv = f.partition_values_map();
        let get = |k: &str| pv.get(k).cloned().flatten().unwrap_or_default();
        let e = out
            .entry((
                get(PARTITION_COLUMNS[0]),
                get(PARTITION_COLUMNS[1]),
                get(PARTITION_COLUMNS[2]),
            ))
            .or_default();
        e.0 += 1;
        e.1 += f.num_records().unwrap_or(0) as u64;
    }
    out
}

/// Registers a table (current version, or `version`) in a DataFusion session under `name`.
pub async fn register(
    ctx: &datafusion::prelude::SessionContext,
    name: &str,
    url: &Url,
    version: Option<u64>,
) -> Result<bool> {
    let table = match version {
        Some(v) => open_version(url, v).await?,
        None => open(url).await?,
    };
    if table.version().is_none() {
        return Ok(false);
    }
    let provider = table
        .table_provider()
        .await
        .map_err(|e| terr(url.as_str(), e))?;
    ctx.register_table(name, provider)
        .map_err(|e| terr(url.as_str(), e))?;
    Ok(true)
}

/// Size at which a table's Parquet file is closed and the next one started.
pub const TARGET_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Rows per Parquet row group in the tables tally writes.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Batches a staged table's writer and hasher may hold in flight before `write` waits.
const IN_FLIGHT: usize = 2;

/// A table being written by a run: files staged, commit pending.
///
/// Hashing and Parquet encoding are pipeline stages of their own (two tasks fed the same
/// batches through bounded channels), so they run beside the mapping rather than after it.
pub struct Staged {
    name: &'static str,
    url: Url,
    /// Unloaded while the table does not exist yet ([`Staged::create_if_missing`] creates it).
    table: DeltaTable,
    schema: SchemaRef,
    rows: u64,
    feeds: Option<(
        tokio::sync::mpsc::Sender<RecordBatch>,
        tokio::sync::mpsc::Sender<RecordBatch>,
    )>,
    stages: Option<StageHandles>,
}

type StageHandles = (
    tokio::task::JoinHandle<Result<RecordBatchWriter>>,
    tokio::task::JoinHandle<Result<crate::hash::ContentHasher>>,
);

/// The partition values of `batch` when all its rows share them (the usual case: an export
/// file holds one billing account and period). The writer then encodes the batch as it is;
/// given a mixed batch it sorts and copies every column into one batch per partition.
fn single_partition(batch: &RecordBatch) -> Option<IndexMap<String, Scalar>> {
    let mut values = IndexMap::new();
    for name in PARTITION_COLUMNS {
        let column = batch.column_by_name(name)?.as_string_opt::<i32>()?;
        if column.is_empty() || column.null_count() > 0 {
            return None;
        }
        let first = column.value(0);
        if !(1..column.len()).all(|i| column.value(i) == first) {
            return None;
        }
        values.insert(name.to_string(), Scalar::String(first.to_string()));
    }
    Some(values)
}

impl Staged {
    /// Opens the table `name` under `root` and starts staging files. A table that does not
    /// exist yet is created by [`Staged::create_if_missing`] before the commit: creating it is
    /// a commit, which must wait until the run's lock is confirmed, and staging need not.
    pub async fn open(root: &str, name: &'static str, schema: &SchemaRef) -> Result<Staged> {
        let url = table_url(root, name)?;
        let table = open_checked(&url, schema).await?;
        // Bounded row groups keep the writer's buffer small however large the export: the
        // default (1M rows per row group) would hold a million rows in memory per open file.
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(64 * 1024 * 1024))
            // Min/max per column chunk (what Delta's file statistics need), not per page: the
            // page-level index of ~100 columns is held until the file closes.
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
            // The source row number is unique per row: a dictionary of it only costs a hash
            // lookup per value and makes the column larger than plain values.
            .set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(crate::source::typing::SOURCE_ROW),
                false,
            )
            .build();
        let writer = if table.version().is_some() {
            RecordBatchWriter::for_table(&table)
        } else {
            // The schema the created table will hand `for_table`: Delta's, back in Arrow.
            let arrow: arrow::datatypes::Schema = (&delta_schema(&url, schema)?)
                .try_into_arrow()
                .map_err(|e| terr(url.as_str(), e))?;
            RecordBatchWriter::try_new(
                url.as_str(),
                std::sync::Arc::new(arrow),
                Some(PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect()),
                None,
            )
        };
        let mut writer = writer
            .map_err(|e| terr(url.as_str(), e))?
            .with_writer_properties(props)
            // Files roll at this size, so a writer's footer metadata stays bounded however
            // large one partition is (deterministic: the roll point is the encoded size).
            .with_target_file_size(TARGET_FILE_BYTES);
        let mut hasher = crate::hash::ContentHasher::new(schema)?;
        let (to_writer, mut writer_rx) = tokio::sync::mpsc::channel::<RecordBatch>(IN_FLIGHT);
        let (to_hasher, mut hasher_rx) = tokio::sync::mpsc::channel::<RecordBatch>(IN_FLIGHT);
        let writer_url = url.clone();
        let writer = tokio::spawn(async move {
            while let Some(b) = writer_rx.recv().await {
                match single_partition(&b) {
                    Some(values) => writer
                        .write_partition(b, &values, WriteMode::Default)
                        .await
                        .map(|_| ()),
                    None => writer.write(b).await,
                }
                .map_err(|e| terr(writer_url.as_str(), e))?;
            }
            Ok(writer)
        });
        let hasher = tokio::spawn(async move {
            while let Some(b) = hasher_rx.recv().await {
                hasher.update(&b)?;
            }
            Ok(hasher)
        });
        Ok(Staged {
            name,
            url,
            table,
            schema: schema.clone(),
            rows: 0,
            feeds: Some((to_writer, to_hasher)),
            stages: Some((writer, hasher)),
        })
    }

    /// Writes one batch of rows (they become visible only at commit).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let (to_writer, to_hasher) = self.feeds.as_ref().ok_or_else(|| {
            TallyError::Internal(format!("{}: write after the writer stopped", self.name))
        })?;
        let sent =
            to_hasher.send(batch.clone()).await.is_ok() && to_writer.send(batch).await.is_ok();
        if !sent {
            // A stage stopped on an error: surface that error.
            self.finish().await?;
            return Err(TallyError::Internal(format!(
                "{}: the table writer stopped",
                self.name
            )));
        }
        Ok(())
    }

    /// Closes the feeds and waits for the writer and hasher stages (once; `None` after that).
    async fn finish(&mut self) -> Result<Option<(RecordBatchWriter, crate::hash::ContentHasher)>> {
        self.feeds = None;
        let Some((writer, hasher)) = self.stages.take() else {
            return Ok(None);
        };
        let join = |e: tokio::task::JoinError| TallyError::Internal(format!("table writer: {e}"));
        let hasher = hasher.await.map_err(join)?;
        let writer = writer.await.map_err(join)?;
        Ok(Some((writer?, hasher?)))
    }

    /// Rows staged so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Data files and rows per partition in the version the commit will replace partitions of
    /// (the table as this run opened it; empty for a table not created yet).
    pub fn partition_stats_before(&self) -> BTreeMap<PartitionKey, (u64, u64)> {
        partition_stats(&self.table)
    }

    /// Table name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Deletes the staged files without committing (a run that failed its checks).
    pub async fn abandon(mut self) -> Result<()> {
        let Some((mut writer, _)) = self.finish().await? else {
            return Ok(());
        };
        let adds = writer
            .flush()
            .await
            .map_err(|e| terr(self.url.as_str(), e))?;
        let store = self.table.object_store();
        let mut first_error = None;
        for a in adds {
            let path = deltalake::Path::parse(&a.path).map_err(|e| terr(self.url.as_str(), e))?;
            if let Err(e) = store.delete(&path).await {
                first_error.get_or_insert(terr(
                    self.url.as_str(),
                    format!("delete staged {}: {e}", a.path),
                ));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Creates the table (version 0, empty) if it did not exist when it was opened. A commit:
    /// only once the run's lock is confirmed, and before any table's rows are committed, so a
    /// run never stops between its commits over a table it could not create. Another run
    /// having created the table meanwhile is a conflict.
    pub async fn create_if_missing(&mut self) -> Result<()> {
        if self.table.version().is_none() {
            self.table = create(&self.table, &self.url, &self.schema).await?;
        }
        Ok(())
    }

    /// Commits the staged files, replacing exactly the partitions `keys`, in one log entry
    /// (the table must exist: [`Staged::create_if_missing`]). Returns the table at the new
    /// version and each partition's content hash.
    pub async fn commit(
        mut self,
        keys: &BTreeSet<PartitionKey>,
        run_id: &str,
    ) -> Result<(DeltaTable, BTreeMap<PartitionKey, String>)> {
        let url = self.url.as_str().to_string();
        let (mut writer, hasher) = self.finish().await?.ok_or_else(|| {
            TallyError::Internal(format!("{}: committed after its writer failed", self.name))
        })?;
        let adds = writer.flush().await.map_err(|e| terr(&url, e))?;
        let hashes = hasher.finish();
        let mut table = self.table;
        if table.version().is_none() {
            return Err(TallyError::Internal(format!(
                "{}: committed before the table was created",
                self.name
            )));
        }
        if keys.is_empty() && adds.is_empty() {
            return Ok((table, hashes));
        }
        let snapshot = table.snapshot().map_err(|e| terr(&url, e))?.clone();
        let mut actions: Vec<Action> = Vec::new();
        for f in snapshot.log_data().iter() {
            let pv = f.partition_values_map();
            let get = |k: &str| pv.get(k).cloned().flatten().unwrap_or_default();
            let key = (
                get(PARTITION_COLUMNS[0]),
                get(PARTITION_COLUMNS[1]),
                get(PARTITION_COLUMNS[2]),
            );
            if keys.contains(&key) {
                actions.push(Action::Remove(f.remove_action(true)));
            }
        }
        actions.extend(adds.into_iter().map(Action::Add));
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("tallyRunId".to_string(), serde_json::json!(run_id));
        metadata.insert(
            "userMetadata".to_string(),
            serde_json::json!(format!("tally run {run_id}")),
        );
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: Some(PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect()),
            predicate: Some(partitions_predicate(keys)),
        };
        let commit = CommitBuilder::default()
            .with_actions(actions)
            .with_app_metadata(metadata)
            .build(Some(&snapshot), table.log_store(), operation)
            .await
            .map_err(|e| terr(&url, e))?;
        table
            .load_version(commit.version)
            .await
            .map_err(|e| terr(&url, e))?;
        Ok((table, hashes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// The partition columns and one number.
    fn partitioned_schema() -> SchemaRef {
        let mut fields: Vec<Field> = PARTITION_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect();
        fields.push(Field::new("n", DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    fn rows(schema: &SchemaRef, n: i64) -> RecordBatch {
        let text = |v: &str| Arc::new(StringArray::from(vec![v; n as usize])) as _;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                text("aws"),
                text("0042"),
                text("2026-10"),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    /// A table written without the property (as tally wrote stage tables before it set it)
    /// gets it once; one that has it is left as it is.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_table_that_would_drop_old_logs_is_made_to_keep_them_once() {
        use deltalake::table::config::TablePropertiesExt as _;
        let dir = tempfile::tempdir().unwrap();
        let url = table_url(&format!("file://{}", dir.path().display()), "stage").unwrap();
        let schema = partitioned_schema();
        let keeps = |t: &DeltaTable| {
            !t.snapshot()
                .unwrap()
                .table_config()
                .enable_expired_log_cleanup()
        };
        let written = open(&url)
            .await
            .unwrap()
            .write([rows(&schema, 3)])
            .await
            .unwrap();
        assert!(!keeps(&written), "Delta's default drops old logs");
        let kept = keeping_whole_log(written, &url).await.unwrap();
        assert!(keeps(&kept));
        assert_eq!(kept.version(), Some(1));
        let again = keeping_whole_log(open(&url).await.unwrap(), &url)
            .await
            .unwrap();
        assert_eq!(again.version(), Some(1), "no second commit");
        assert!(keeps(&open(&url).await.unwrap()));
    }

    /// A stage table keeps the property through an overwrite that changes its schema (a stage
    /// whose SQL gained a column): Delta copies the table's configuration into the new metadata.
    /// Guards the stage tables' kept log against a deltalake upgrade that would not.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_kept_log_survives_an_overwrite_with_another_schema() {
        use deltalake::table::config::TablePropertiesExt as _;
        let dir = tempfile::tempdir().unwrap();
        let url = table_url(&format!("file://{}", dir.path().display()), "stage").unwrap();
        let keep = [(KEEP_WHOLE_LOG.0, Some(KEEP_WHOLE_LOG.1))];
        let schema = partitioned_schema();
        open(&url)
            .await
            .unwrap()
            .write([rows(&schema, 3)])
            .with_configuration(keep)
            .await
            .unwrap();
        let wider = RecordBatch::try_from_iter([(
            "other",
            Arc::new(StringArray::from(vec!["x"])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let t = open(&url)
            .await
            .unwrap()
            .write([wider])
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(t.version(), Some(1));
        let reopened = open(&url).await.unwrap();
        assert!(
            reopened
                .snapshot()
                .unwrap()
                .schema()
                .field("other")
                .is_some()
        );
        assert!(
            !reopened
                .snapshot()
                .unwrap()
                .table_config()
                .enable_expired_log_cleanup()
        );
    }

    /// Staging into an output that has no table yet creates nothing: the table appears (as
    /// version 0, its rows as version 1) only when the run commits, after its lock is
    /// confirmed; a run that abandons its rows leaves no table behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_new_table_is_created_when_its_rows_commit_not_when_staging_starts() {
        let dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}", dir.path().display());
        let out = crate::storage::open(&root).unwrap();
        let lock = crate::lock::acquire(&out, "run-1", "job", Duration::ZERO)
            .await
            .unwrap();
        let schema = partitioned_schema();

        let mut kept = Staged::open(&root, "kept", &schema).await.unwrap();
        let mut dropped = Staged::open(&root, "dropped", &schema).await.unwrap();
        kept.write(rows(&schema, 5)).await.unwrap();
        dropped.write(rows(&schema, 3)).await.unwrap();
        let kept_url = table_url(&root, "kept").unwrap();
        assert_eq!(open(&kept_url).await.unwrap().version(), None);

        dropped.abandon().await.unwrap();
        lock.confirm().await.unwrap();
        kept.create_if_missing().await.unwrap();
        let keys = BTreeSet::from([("aws".into(), "0042".into(), "2026-10".into())]);
        let (table, hashes) = kept.commit(&keys, "run-1").await.unwrap();
        assert_eq!(table.version(), Some(1));
        assert_eq!(partition_stats(&table)[&keys.first().unwrap().clone()].1, 5);
        assert_eq!(hashes.len(), 1);
        let created = open_version(&kept_url, 0).await.unwrap();
        assert_eq!(partition_stats(&created).len(), 0, "version 0 is empty");

        let dropped_url = table_url(&root, "dropped").unwrap();
        assert_eq!(open(&dropped_url).await.unwrap().version(), None);
        let files: Vec<_> = walk(&dir.path().join("dropped"));
        assert!(files.is_empty(), "abandoned files remain: {files:?}");
        lock.release().await;
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        entries
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { walk(&p) } else { vec![p] }
            })
            .collect()
    }

    /// Two runs that both staged rows for a table that did not exist (their lock defeated):
    /// the first creates and commits it; the second's create is a conflict, so it never
    /// writes over a table it did not see.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_table_created_by_another_run_while_staging_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}", dir.path().display());
        let schema = partitioned_schema();
        let mut first = Staged::open(&root, "t", &schema).await.unwrap();
        let mut second = Staged::open(&root, "t", &schema).await.unwrap();
        first.write(rows(&schema, 5)).await.unwrap();
        second.write(rows(&schema, 3)).await.unwrap();
        let keys = BTreeSet::from([("aws".into(), "0042".into(), "2026-10".into())]);
        first.create_if_missing().await.unwrap();
        first.commit(&keys, "run-1").await.unwrap();
        let err = second.create_if_missing().await.unwrap_err().to_string();
        assert!(err.contains("conflict"), "{err}");
        let table = open(&table_url(&root, "t").unwrap()).await.unwrap();
        assert_eq!(table.version(), Some(1));
        assert_eq!(partition_stats(&table)[keys.first().unwrap()].1, 5);
    }
}
