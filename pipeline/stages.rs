//! SQL stages: the curated tables built on the FOCUS data (`sql/stages/*.sql`).
//!
//! Each stage is one SQL file whose header names what it reads and writes:
//!
//! ```sql
//! -- @stage: invoice_reconciliation
//! -- @reads: cost_and_usage            tables under the output root (tally's or other stages')
//! -- @inputs: invoices                 files the job names under [inputs] (schemas/inputs/)
//! -- @optional_inputs: usage_metrics   read when the job names them, else empty
//! -- @any_inputs: invoices, invoice_detail   optional, but the stage runs only if one is given
//! -- @writes: invoice_reconciliation   the table it replaces, whole, on every run it runs
//! -- @csv: true                        also <output>/exports/<table>.csv, for people
//! ```
//!
//! Stages run after the FOCUS tables are committed, in the order their reads require (a small
//! DAG), each only when the job names every input it needs. Each run is recorded in the manifest
//! with the SQL's hash, the version of every table read and the hash of every input file, so a
//! stage is skipped when none of those changed and an auditor can reproduce it later
//! (`tally reconcile --manifest`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span};

use crate::error::{Result, TallyError};
use crate::{inputs, normalize, resources, table};

/// One stage file.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Name (`@stage`).
    pub name: String,
    /// Path of the SQL file.
    pub sql_path: String,
    /// SQL text.
    pub sql: String,
    /// Tables read.
    pub reads: Vec<String>,
    /// Job inputs read.
    pub inputs: Vec<String>,
    /// Job inputs read when given (an empty table otherwise).
    pub optional_inputs: Vec<String>,
    /// Optional inputs of which at least one must be given for the stage to run.
    pub any_inputs: Vec<String>,
    /// Table written.
    pub writes: String,
    /// Also write `<output>/exports/<writes>.csv`.
    pub csv: bool,
}

/// A table a stage read or wrote, at a version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRead {
    /// Table name.
    pub name: String,
    /// Table URL.
    pub url: String,
    /// Delta version.
    pub version: Option<u64>,
}

/// An input file a stage read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRead {
    /// Input name.
    pub name: String,
    /// File URL.
    pub url: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
}

/// What the manifest records of one stage run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageRecord {
    /// Stage name.
    pub name: String,
    /// SQL file.
    pub sql_path: String,
    /// SHA-256 of the SQL.
    pub sql_sha256: String,
    /// Tables read, with their versions.
    pub reads: Vec<TableRead>,
    /// Input files read, with their hashes.
    pub inputs: Vec<InputRead>,
    /// The table written and its version.
    pub output: TableRead,
    /// Rows written.
    pub rows: u64,
    /// SHA-256 over the rows in order (Arrow row format).
    pub content_sha256: String,
    /// `ran`, or `unchanged` when nothing it reads changed since the run that wrote it.
    pub status: String,
}

/// What a stage's result depends on: its SQL, the versions of the tables it reads and the bytes
/// of its input files.
type Fingerprint = (String, Vec<TableRead>, Vec<(String, String, String)>);

impl StageRecord {
    fn fingerprint(&self) -> Fingerprint {
        (
            self.sql_sha256.clone(),
            self.reads.clone(),
            self.inputs
                .iter()
                .map(|i| (i.name.clone(), i.url.clone(), i.sha256.clone()))
                .collect(),
        )
    }
}

/// The fingerprint a stage would have now, without running it.
async fn fingerprint_now(
    stage: &Stage,
    root: &str,
    input_urls: &BTreeMap<String, String>,
) -> Result<Fingerprint> {
    let mut reads = Vec::new();
    for name in &stage.reads {
        let url = table::table_url(root, name)?;
        reads.push(TableRead {
            name: name.clone(),
            url: url.to_string(),
            version: table::open(&url).await?.version(),
        });
    }
    let mut inputs = Vec::new();
    for name in stage.inputs.iter().chain(&stage.optional_inputs) {
        if let Some(url) = input_urls.get(name) {
            let loc = crate::storage::open(url)?;
            let bytes = loc.get_bytes(&loc.path).await?;
            inputs.push((name.clone(), url.clone(), resources::sha256_hex(&bytes)));
        }
    }
    Ok((resources::sha256_hex(stage.sql.as_bytes()), reads, inputs))
}

fn parse(path: &str, sql: String) -> Result<Stage> {
    let h = crate::formats::Header::parse(&sql);
    let list = |k: &str| h.list(k);
    let one = |k: &str| {
        h.one(k).ok_or_else(|| TallyError::Sql {
            file: path.into(),
            message: format!("stage header lacks `-- @{k}:`"),
        })
    };
    Ok(Stage {
        name: one("stage")?,
        writes: one("writes")?,
        reads: list("reads"),
        inputs: list("inputs"),
        optional_inputs: list("optional_inputs")
            .into_iter()
            .chain(list("any_inputs"))
            .collect(),
        any_inputs: list("any_inputs"),
        csv: h.one("csv").is_some_and(|v| v == "true"),
        sql_path: path.into(),
        sql,
    })
}

/// Every stage, in an order where each runs after the stages whose tables it reads.
pub fn all() -> Result<Vec<Stage>> {
    let mut pending: Vec<Stage> = resources::list("sql/stages/")
        .into_iter()
        .map(|p| parse(p, resources::load(p)?))
        .collect::<Result<_>>()?;
    pending.sort_by(|a, b| a.name.cmp(&b.name));
    let produced: BTreeSet<String> = pending.iter().map(|s| s.writes.clone()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|s| {
                s.reads
                    .iter()
                    .all(|r| !produced.contains(r) || done.contains(r))
            })
            .ok_or_else(|| {
                TallyError::Internal(format!(
                    "stages read each other in a cycle: {}",
                    pending
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let s = pending.remove(ready);
        done.insert(s.writes.clone());
        ordered.push(s);
    }
    Ok(ordered)
}

/// Runs a stage's SQL in a session where its tables and inputs are registered; string columns
/// come out as plain Utf8 whatever DataFusion chose, so schemas and hashes do not depend on the plan.
pub async fn run_sql(
    stage: &Stage,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let sql_err = |e: datafusion::error::DataFusionError| TallyError::Sql {
        file: stage.sql_path.clone(),
        message: e.to_string(),
    };
    let df = ctx.sql(&stage.sql).await.map_err(sql_err)?;
    // Plain Utf8 whatever string type DataFusion chose (views from Delta reads), so the table's
    // schema and the content hash do not depend on the plan.
    let plain = |t: &arrow::datatypes::DataType| match t {
        arrow::datatypes::DataType::Utf8View | arrow::datatypes::DataType::LargeUtf8 => {
            arrow::datatypes::DataType::Utf8
        }
        other => other.clone(),
    };
    let schema: arrow::datatypes::SchemaRef = Arc::new(arrow::datatypes::Schema::new(
        df.schema()
            .as_arrow()
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(plain(f.data_type()))
                    .with_nullable(true)
            })
            .collect::<Vec<_>>(),
    ));
    let batches = df
        .collect()
        .await
        .map_err(sql_err)?
        .into_iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), cols)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Runs one stage's SQL over the tables under `root` (each at `versions[name]` when given, else
/// current) and the given input files; returns its rows and its record (output not yet written).
pub async fn evaluate(
    stage: &Stage,
    root: &str,
    versions: &BTreeMap<String, u64>,
    input_urls: &BTreeMap<String, String>,
) -> Result<(Vec<RecordBatch>, arrow::datatypes::SchemaRef, StageRecord)> {
    let ctx = normalize::session()?;
    let mut reads = Vec::new();
    for name in &stage.reads {
        let url = table::table_url(root, name)?;
        let t = match versions.get(name) {
            Some(v) => table::open_version(&url, *v).await?,
            None => table::open(&url).await?,
        };
        if !table::register(&ctx, name, &url, t.version()).await? {
            return Err(TallyError::Usage(format!(
                "stage {}: table {name} does not exist under {root}",
                stage.name
            )));
        }
        reads.push(TableRead {
            name: name.clone(),
            url: url.to_string(),
            version: t.version(),
        });
    }
    let mut inputs_read = Vec::new();
    for name in stage.inputs.iter().chain(&stage.optional_inputs) {
        let Some(url) = input_urls.get(name) else {
            if stage.inputs.contains(name) {
                return Err(TallyError::Usage(format!(
                    "stage {}: the job names no [inputs] {name}",
                    stage.name
                )));
            }
            ctx.register_batch(name, inputs::empty(name)?)?;
            continue;
        };
        let loaded = inputs::load(name, url).await?;
        inputs_read.push(InputRead {
            name: name.clone(),
            url: url.clone(),
            sha256: loaded.sha256.clone(),
            rows: loaded.batch.num_rows() as u64,
        });
        ctx.register_batch(name, loaded.batch)?;
    }
    let (schema, batches) = run_sql(stage, &ctx).await?;
    let mut hasher = crate::hash::ContentHasher::whole(&schema)?;
    let mut rows = 0u64;
    for b in &batches {
        hasher.update(b)?;
        rows += b.num_rows() as u64;
    }
    let content_sha256 = hasher
        .finish()
        .into_values()
        .next()
        .unwrap_or_else(|| resources::sha256_hex(b""));
    let record = StageRecord {
        name: stage.name.clone(),
        sql_path: stage.sql_path.clone(),
        sql_sha256: resources::sha256_hex(stage.sql.as_bytes()),
        reads,
        inputs: inputs_read,
        output: TableRead {
            name: stage.writes.clone(),
            url: table::table_url(root, &stage.writes)?.to_string(),
            version: None,
        },
        rows,
        content_sha256,
        status: "ran".into(),
    };
    Ok((batches, schema, record))
}

/// Runs every stage the job has inputs for, skipping those whose reads are unchanged since
/// the `prior` records; returns the records for the manifest.
pub async fn run_all(
    root: &str,
    input_urls: &BTreeMap<String, String>,
    prior: &[StageRecord],
) -> Result<Vec<StageRecord>> {
    let mut out = Vec::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    for stage in all()? {
        if let Some(missing) = stage.inputs.iter().find(|i| !input_urls.contains_key(*i)) {
            info!(stage = %stage.name, input = %missing, "stage skipped: the job names no such [inputs] file");
            skipped.insert(stage.writes.clone());
            continue;
        }
        if !stage.any_inputs.is_empty()
            && !stage.any_inputs.iter().any(|i| input_urls.contains_key(i))
        {
            info!(stage = %stage.name, inputs = ?stage.any_inputs, "stage skipped: the job names none of its [inputs]");
            skipped.insert(stage.writes.clone());
            continue;
        }
        if let Some(table) = stage.reads.iter().find(|t| skipped.contains(*t)) {
            info!(stage = %stage.name, table = %table, "stage skipped: the stage that writes its input did not run");
            skipped.insert(stage.writes.clone());
            continue;
        }
        let span = info_span!("stage", name = %stage.name);
        let _g = span.enter();
        let t0 = std::time::Instant::now();
        // Unchanged: same SQL, tables and inputs as the last successful run, and its table still
        // at the version that run wrote (a run that failed after rewriting it leaves it ahead).
        let url = table::table_url(root, &stage.writes)?;
        if let Some(p) = prior.iter().find(|p| p.name == stage.name)
            && p.output.version.is_some()
            && p.fingerprint() == fingerprint_now(&stage, root, input_urls).await?
            && table::open(&url).await?.version() == p.output.version
        {
            let mut same = p.clone();
            same.status = "unchanged".into();
            info!("stage unchanged: nothing it reads changed");
            out.push(same);
            continue;
        }
        let (batches, schema, mut record) =
            evaluate(&stage, root, &BTreeMap::new(), input_urls).await?;
        let ops = table::keeping_whole_log(table::open(&url).await?, &url).await?;
        if stage.csv {
            write_csv(root, &stage.writes, &schema, &batches).await?;
        }
        let data = if batches.is_empty() {
            vec![RecordBatch::new_empty(schema)]
        } else {
            batches
        };
        let t = ops
            .write(data)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .with_configuration([(table::KEEP_WHOLE_LOG.0, Some(table::KEEP_WHOLE_LOG.1))])
            .await
            .map_err(|e| TallyError::Table {
                table: url.to_string(),
                message: e.to_string(),
            })?;
        record.output.version = t.version();
        info!(rows = record.rows, version = ?t.version(), ms = t0.elapsed().as_millis() as u64, "stage written");
        out.push(record);
    }
    Ok(out)
}

/// What reproducing a stage from a run's manifest found.
#[derive(Debug)]
pub struct Reproduction {
    /// The stage's rows today, from the recorded table versions and input files.
    pub batches: Vec<RecordBatch>,
    /// The record of that run.
    pub recorded: StageRecord,
    /// Today's evaluation.
    pub today: StageRecord,
    /// Why today's result may differ (SQL or inputs changed); empty when nothing did.
    pub notes: Vec<String>,
}

impl Reproduction {
    /// Whether today's rows are the recorded rows, to the byte.
    pub fn identical(&self) -> bool {
        self.today.content_sha256 == self.recorded.content_sha256
            && self.today.rows == self.recorded.rows
    }
}

/// Re-runs stage `name` as the run whose manifest is at `manifest_url` ran it: the tables it read
/// at the versions it read (Delta time travel), the same input files (their SHA-256 checked),
/// and the stage SQL (today's; a changed SQL is reported).
pub async fn reproduce(manifest_url: &str, name: &str) -> Result<Reproduction> {
    let loc = crate::storage::open(manifest_url)?;
    let bytes = loc.get_bytes(&loc.path).await?;
    let run: crate::manifest::PriorRun =
        serde_json::from_slice(&bytes).map_err(|e| TallyError::BadFile {
            file: manifest_url.into(),
            message: format!("not a tally manifest: {e}"),
        })?;
    let recorded = run
        .stages
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| {
            TallyError::Usage(format!(
                "run {} recorded no stage {name:?} (it recorded: {})",
                run.run_id,
                run.stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let stage = all()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| TallyError::Usage(format!("this tally has no stage {name:?}")))?;
    let suffix = format!("/{}", recorded.output.name);
    let root = recorded
        .output
        .url
        .trim_end_matches('/')
        .strip_suffix(&suffix)
        .ok_or_else(|| TallyError::BadFile {
            file: manifest_url.into(),
            message: format!("output {} does not end in {suffix}", recorded.output.url),
        })?;
    let versions: BTreeMap<String, u64> = recorded
        .reads
        .iter()
        .filter_map(|r| r.version.map(|v| (r.name.clone(), v)))
        .collect();
    let input_urls: BTreeMap<String, String> = recorded
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.url.clone()))
        .collect();
    let (batches, schema, today) = evaluate(&stage, root, &versions, &input_urls).await?;
    // No rows is still a result with columns (a Parquet file of them, a header).
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(schema)]
    } else {
        batches
    };
    let mut notes = Vec::new();
    if today.sql_sha256 != recorded.sql_sha256 {
        notes.push(format!(
            "{} changed since the run (SHA-256 {} then, {} now); run with TALLY_RESOURCES pointing at the SQL of tally {} to use the same code",
            stage.sql_path, recorded.sql_sha256, today.sql_sha256, run.run_id
        ));
    }
    for (then, now) in recorded.inputs.iter().zip(&today.inputs) {
        if then.sha256 != now.sha256 {
            notes.push(format!(
                "input {} ({}) changed since the run: SHA-256 {} then, {} now",
                then.name, then.url, then.sha256, now.sha256
            ));
        }
    }
    Ok(Reproduction {
        batches,
        recorded,
        today,
        notes,
    })
}

/// Writes a stage's rows as `<root>/exports/<name>.csv` (decimals and times as their text).
async fn write_csv(
    root: &str,
    name: &str,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        if batches.is_empty() {
            w.write(&RecordBatch::new_empty(schema.clone()))?;
        }
        for b in batches {
            w.write(b)?;
        }
    }
    let loc = crate::storage::open(root)?;
    let path = loc
        .path
        .clone()
        .join("exports")
        .join(format!("{name}.csv").as_str());
    object_store::ObjectStoreExt::put(loc.store.as_ref(), &path, buf.into())
        .await
        .map_err(|e| loc.err("put", &path, e))?;
    Ok(())
}
