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
//! -- @by_period: true                  run once per billing period (see below)
//! ```
//!
//! A `@by_period` stage computes each row from one billing period's rows (an allocation per
//! charge, weights per period) and orders its rows by `x_BillingPeriod` first. When the tables
//! it reads hold more than [`period_split_rows`] rows over several periods, its query runs once
//! per period (`x_BillingPeriod`), each run seeing only that period's rows of every `@reads`
//! table (inputs whole), one after the other: the same rows in the same order as one query over
//! everything (its `ORDER BY` must order every row, ties only between identical rows),
//! in the memory one period needs rather than the whole history's. Below that, planning the
//! query once per period would cost more than it saves (a second or so each).
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
    /// Run once per billing period of the tables read (`@by_period`, see the module docs).
    pub by_period: bool,
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
        by_period: h.one("by_period").is_some_and(|v| v == "true"),
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
    use futures::TryStreamExt;
    let (schema, rows) = stage_rows(stage, ctx, period_split_rows()?).await?;
    let batches = rows
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| sql_error(&stage.sql_path, e))?
        .into_iter()
        .map(|b| plain_batch(&schema, &b))
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// A stage's rows as they come from its query (a `@by_period` stage's over more than
/// `split_rows` rows: one query per billing period, each run when the one before has ended), and
/// the plain schema they are written with.
async fn stage_rows(
    stage: &Stage,
    ctx: &datafusion::prelude::SessionContext,
    split_rows: u64,
) -> Result<(
    arrow::datatypes::SchemaRef,
    datafusion::execution::SendableRecordBatchStream,
)> {
    use futures::{StreamExt, TryStreamExt};
    let (df, schema) = plan_sql(stage, ctx).await?;
    let periods = if stage.by_period {
        orders_by_period_first(stage, df.logical_plan())?;
        periods_of(stage, ctx).await?
    } else {
        Periods::default()
    };
    if periods.periods.len() < 2 || periods.rows <= split_rows {
        let rows = execute(df)
            .await
            .map_err(|e| sql_error(&stage.sql_path, e))?;
        return Ok((schema, rows));
    }
    info!(
        periods = periods.periods.len(),
        rows = periods.rows,
        "stage runs once per billing period"
    );
    let (ctx, plan, reads) = (ctx.clone(), df.logical_plan().clone(), stage.reads.clone());
    let rows = futures::stream::iter(periods.periods)
        .then(move |period| {
            let ctx = ctx.clone();
            let plan = of_period(&plan, &reads, period.as_deref());
            async move {
                tracing::debug!(period = ?period, "stage period");
                execute(ctx.execute_logical_plan(plan?).await?).await
            }
        })
        .try_flatten();
    let df_schema = Arc::new(df.schema().as_arrow().clone());
    Ok((
        schema,
        Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(df_schema, rows)),
    ))
}

/// Runs a planned query, logging its physical plan.
async fn execute(
    df: datafusion::prelude::DataFrame,
) -> datafusion::error::Result<datafusion::execution::SendableRecordBatchStream> {
    let task = Arc::new(df.task_ctx());
    let physical = df.create_physical_plan().await?;
    tracing::debug!(
        plan = %datafusion::physical_plan::displayable(physical.as_ref()).indent(false),
        "stage plan"
    );
    datafusion::physical_plan::execute_stream(physical, task)
}

/// Checks that a `@by_period` stage's query ends in `ORDER BY x_BillingPeriod` (ascending,
/// NULLs last, then whatever orders rows within a period): only then are its rows the same
/// whether it runs whole or one period at a time.
fn orders_by_period_first(
    stage: &Stage,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Result<()> {
    use datafusion::logical_expr::LogicalPlan;
    let mut node = plan;
    while let LogicalPlan::Projection(p) = node {
        node = p.input.as_ref();
    }
    let first = match node {
        LogicalPlan::Sort(sort) => sort.expr.first(),
        _ => None,
    };
    match first {
        Some(key)
            if key.asc
                && !key.nulls_first
                && matches!(&key.expr, datafusion::prelude::Expr::Column(c) if c.name == PERIOD) =>
        {
            Ok(())
        }
        _ => Err(TallyError::Sql {
            file: stage.sql_path.clone(),
            message: format!(
                "a @by_period stage must end in ORDER BY {PERIOD} (ascending, NULLs last) and then \
                 whatever orders the rows of a period, so that its rows are the same run whole or \
                 one period at a time"
            ),
        }),
    }
}

/// Rows above which a `@by_period` stage runs once per billing period:
/// `TALLY_STAGE_PERIOD_ROWS`, else 1,000,000.
pub(crate) fn period_split_rows() -> Result<u64> {
    match std::env::var("TALLY_STAGE_PERIOD_ROWS") {
        Err(_) => Ok(1_000_000),
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            TallyError::Usage(format!(
                "TALLY_STAGE_PERIOD_ROWS={v:?}: a whole number of rows (0: always by period)"
            ))
        }),
    }
}

/// The billing periods of the tables a `@by_period` stage reads, and their rows.
#[derive(Default)]
struct Periods {
    /// In the order of `ORDER BY x_BillingPeriod` (ascending, a NULL period last).
    periods: Vec<Option<String>>,
    /// Rows of all the tables read.
    rows: u64,
}

/// The billing periods (`x_BillingPeriod`) of the tables a `@by_period` stage reads.
async fn periods_of(stage: &Stage, ctx: &datafusion::prelude::SessionContext) -> Result<Periods> {
    let mut periods = BTreeSet::new();
    let mut rows = 0;
    for name in &stage.reads {
        let table = ctx
            .table(name.as_str())
            .await
            .map_err(|e| sql_error(&stage.sql_path, e))?;
        if table.schema().field_with_unqualified_name(PERIOD).is_err() {
            return Err(TallyError::Sql {
                file: stage.sql_path.clone(),
                message: format!("a @by_period stage reads {name}, which has no {PERIOD} column"),
            });
        }
        let batches = table
            .aggregate(
                vec![period_column(None)],
                vec![datafusion::functions_aggregate::count::count_all()],
            )
            .map_err(|e| sql_error(&stage.sql_path, e))?
            .collect()
            .await
            .map_err(|e| sql_error(&stage.sql_path, e))?;
        for b in batches {
            let text = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let text = arrow::array::AsArray::as_string::<i32>(&text);
            periods.extend(text.iter().map(|v| v.map(String::from)));
            let counts = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                b.column(1).as_ref(),
            );
            rows += counts.values().iter().map(|n| *n as u64).sum::<u64>();
        }
    }
    // BTreeSet puts None first; SQL's ascending order puts NULL last.
    let mut periods: Vec<Option<String>> = periods.into_iter().collect();
    if periods.first() == Some(&None) {
        periods.rotate_left(1);
    }
    Ok(Periods { periods, rows })
}

/// The partition column a `@by_period` stage's queries are split on.
const PERIOD: &str = "x_BillingPeriod";

/// `x_BillingPeriod`, of the table `table` when given.
fn period_column(table: Option<datafusion::common::TableReference>) -> datafusion::prelude::Expr {
    datafusion::prelude::Expr::Column(datafusion::common::Column::new(table, PERIOD))
}

/// `plan` with every scan of a table in `reads` (in subqueries too) filtered to the rows of
/// billing period `period` (NULL when `None`). A table read that is not scanned as a table (a
/// view, which the SQL planner inlines) cannot be filtered, and is an error.
fn of_period(
    plan: &datafusion::logical_expr::LogicalPlan,
    reads: &[String],
    period: Option<&str>,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::{Filter, LogicalPlan};
    let mut filtered: BTreeSet<String> = BTreeSet::new();
    let plan = plan
        .clone()
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) if reads.iter().any(|r| scan.table_name.table() == r) => {
                filtered.insert(scan.table_name.table().to_string());
                let column = period_column(Some(scan.table_name.clone()));
                let predicate = match period {
                    Some(p) => column.eq(datafusion::prelude::lit(p)),
                    None => column.is_null(),
                };
                Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                    predicate,
                    Arc::new(LogicalPlan::TableScan(scan)),
                )?)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    match reads.iter().find(|r| !filtered.contains(*r)) {
        Some(r) => Err(datafusion::error::DataFusionError::Plan(format!(
            "a @by_period stage reads {r}, which its query does not scan as a table (a view?): \
             its rows could not be limited to one billing period"
        ))),
        None => Ok(plan),
    }
}

/// The error of the stage whose SQL is at `path`, naming its file.
fn sql_error(path: &str, e: datafusion::error::DataFusionError) -> TallyError {
    let message = e.to_string();
    TallyError::Sql {
        file: path.to_string(),
        message: format!("{message}{}", memory_hint(&message)),
    }
}

/// `batch` with its columns cast to `schema` (the plain string types of [`plan_sql`]).
fn plain_batch(schema: &arrow::datatypes::SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Plans a stage's SQL; returns the query and the schema its rows are written with.
async fn plan_sql(
    stage: &Stage,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<(datafusion::prelude::DataFrame, arrow::datatypes::SchemaRef)> {
    let df = ctx
        .sql(&stage.sql)
        .await
        .map_err(|e| sql_error(&stage.sql_path, e))?;
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
    Ok((df, schema))
}

/// A stage's session with its tables and inputs registered, and what it read.
struct Prepared {
    ctx: datafusion::prelude::SessionContext,
    reads: Vec<TableRead>,
    inputs: Vec<InputRead>,
}

impl Prepared {
    /// The stage's record, for the rows it wrote (output version not yet known).
    fn record(
        self,
        stage: &Stage,
        root: &str,
        rows: u64,
        content_sha256: String,
    ) -> Result<StageRecord> {
        Ok(StageRecord {
            name: stage.name.clone(),
            sql_path: stage.sql_path.clone(),
            sql_sha256: resources::sha256_hex(stage.sql.as_bytes()),
            reads: self.reads,
            inputs: self.inputs,
            output: TableRead {
                name: stage.writes.clone(),
                url: table::table_url(root, &stage.writes)?.to_string(),
                version: None,
            },
            rows,
            content_sha256,
            status: "ran".into(),
        })
    }
}

/// Runs one stage's SQL over the tables under `root` (each at `versions[name]` when given, else
/// current) and the given input files; returns its rows and its record (output not yet written).
/// Holds every row: for reproducing a stage ([`reproduce`]); a run streams them to the table.
pub async fn evaluate(
    stage: &Stage,
    root: &str,
    versions: &BTreeMap<String, u64>,
    input_urls: &BTreeMap<String, String>,
) -> Result<(Vec<RecordBatch>, arrow::datatypes::SchemaRef, StageRecord)> {
    let prepared = prepare(stage, root, versions, input_urls).await?;
    let (schema, batches) = run_sql(stage, &prepared.ctx).await?;
    let mut pass = Passing::new(&schema, false)?;
    for b in &batches {
        pass.see(b)?;
    }
    let (rows, content_sha256, _) = pass.finish();
    let record = prepared.record(stage, root, rows, content_sha256)?;
    Ok((batches, schema, record))
}

/// What a stage's rows leave behind as they pass on their way to its table: their count, their
/// content hash and, for a `@csv` stage, their CSV text.
struct Passing {
    /// The first error of the rows' way to the table (the query's, or casting, hashing or
    /// writing CSV), returned whatever the write makes of it.
    failed: Option<TallyError>,
    hasher: crate::hash::ContentHasher,
    rows: u64,
    csv: Option<arrow::csv::Writer<Vec<u8>>>,
    schema: arrow::datatypes::SchemaRef,
}

impl Passing {
    fn new(schema: &arrow::datatypes::SchemaRef, csv: bool) -> Result<Passing> {
        Ok(Passing {
            failed: None,
            hasher: crate::hash::ContentHasher::whole(schema)?,
            rows: 0,
            csv: csv.then(|| {
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new())
            }),
            schema: schema.clone(),
        })
    }

    /// The rows' record, shared between the stream and the run; a panic while it was held
    /// leaves it as it was.
    fn lock(p: &std::sync::Mutex<Passing>) -> std::sync::MutexGuard<'_, Passing> {
        p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn see(&mut self, b: &RecordBatch) -> Result<()> {
        self.hasher.update(b)?;
        self.rows += b.num_rows() as u64;
        if let Some(w) = &mut self.csv {
            w.write(b)?;
        }
        Ok(())
    }

    /// Rows, content hash, CSV text (a header alone when no row passed).
    fn finish(mut self) -> (u64, String, Option<Vec<u8>>) {
        if self.rows == 0
            && let Some(w) = &mut self.csv
        {
            // No rows is still a CSV with a header.
            let _ = w.write(&RecordBatch::new_empty(self.schema.clone()));
        }
        let content_sha256 = self
            .hasher
            .finish()
            .into_values()
            .next()
            .unwrap_or_else(|| resources::sha256_hex(b""));
        (self.rows, content_sha256, self.csv.map(|w| w.into_inner()))
    }
}

/// Memory a stage's query may hold (its joins' in-memory sides, aggregations, sorts), in bytes:
/// `TALLY_STAGE_MEMORY_MB` MiB, else three quarters of the memory the process may use (the
/// machine's, or its cgroup's limit when lower), at least 512 MiB. Beyond it sorts and
/// aggregations spill to temporary files, and an operator that cannot spill stops the run with
/// an error that names it, instead of the process being killed for want of memory.
pub(crate) fn memory_limit() -> Result<usize> {
    const MIB: usize = 1024 * 1024;
    if let Ok(v) = std::env::var("TALLY_STAGE_MEMORY_MB") {
        return match v.trim().parse::<usize>() {
            Ok(mb) if mb > 0 => Ok(mb.saturating_mul(MIB)),
            _ => Err(TallyError::Usage(format!(
                "TALLY_STAGE_MEMORY_MB={v:?}: a whole number of MiB, at least 1 (e.g. 2048)"
            ))),
        };
    }
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map(|kib| kib.saturating_mul(1024));
    // cgroup v2 (containers, systemd's MemoryMax): a number, or "max" for none.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    let usable = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (m, c) => m.or(c).unwrap_or(0),
    };
    Ok((usable / 4 * 3).max(512 * MIB))
}

/// The hint a stage's error gets when its query ran out of its memory pool.
fn memory_hint(message: &str) -> String {
    if !(message.contains("Resources exhausted") || message.contains("Not enough memory")) {
        return String::new();
    }
    let mib = memory_limit().map_or(0, |b| b / (1024 * 1024));
    format!(
        "\nThe stage's query needed more than its memory pool of {mib} MiB: raise TALLY_STAGE_MEMORY_MB, or run it on a machine with more memory"
    )
}

/// The session stages run in: tally's (see [`normalize::session`]), with a memory pool of
/// [`memory_limit`] shared fairly by the query's spilling operators, which spill to the system's
/// temporary folder beyond it.
pub(crate) fn session() -> Result<datafusion::prelude::SessionContext> {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        // An error for want of memory names the operators that hold the most.
        .with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::TrackConsumersPool::new(
                datafusion::execution::memory_pool::FairSpillPool::new(memory_limit()?),
                std::num::NonZeroUsize::new(5).expect("not zero"),
            ),
        ))
        .build_arc()?;
    normalize::session_in(runtime)
}

/// A stage's session, with the tables it reads (at `versions`, else current) and its inputs.
async fn prepare(
    stage: &Stage,
    root: &str,
    versions: &BTreeMap<String, u64>,
    input_urls: &BTreeMap<String, String>,
) -> Result<Prepared> {
    let ctx = session()?;
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
    Ok(Prepared {
        ctx,
        reads,
        inputs: inputs_read,
    })
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
        let prepared = prepare(&stage, root, &BTreeMap::new(), input_urls).await?;
        let (t, rows, content_sha256, csv) = write_streaming(&stage, &prepared.ctx, &url).await?;
        if let Some(csv) = csv {
            put_csv(root, &stage.writes, csv).await?;
        }
        let mut record = prepared.record(&stage, root, rows, content_sha256)?;
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

/// Runs a stage's query and streams its rows into its table (an overwrite that keeps the whole
/// log), batch by batch: each cast to the plain schema, counted, hashed and, for a `@csv` stage,
/// written as CSV on its way. Memory is what the query's operators hold (within the session's
/// pool, spilling to disk), not the stage's result. Returns the table, the rows, their content
/// hash and the CSV text.
async fn write_streaming(
    stage: &Stage,
    ctx: &datafusion::prelude::SessionContext,
    url: &url::Url,
) -> Result<(deltalake::DeltaTable, u64, String, Option<Vec<u8>>)> {
    use datafusion::error::DataFusionError;
    use futures::StreamExt;
    let (schema, rows) = stage_rows(stage, ctx, period_split_rows()?).await?;
    let passing = Arc::new(std::sync::Mutex::new(Passing::new(&schema, stage.csv)?));
    let seen = {
        let (passing, schema) = (passing.clone(), schema.clone());
        let stage_path = stage.sql_path.clone();
        rows.map(move |b| {
            let mut p = Passing::lock(&passing);
            let b = b
                .map_err(|e| sql_error(&stage_path, e))
                .and_then(|b| plain_batch(&schema, &b))
                .and_then(|b| p.see(&b).map(|_| b));
            // The first error is kept as tally's own, to be returned whatever the write makes
            // of it.
            b.map_err(|e| {
                let message = e.to_string();
                p.failed.get_or_insert(e);
                DataFusionError::External(message.into())
            })
        })
    };
    let source = datafusion::catalog::streaming::StreamingTable::try_new(
        schema.clone(),
        vec![Arc::new(Once::new(
            schema.clone(),
            Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    schema.clone(),
                    seen,
                ),
            ),
        ))],
    )?;
    let plan = ctx.read_table(Arc::new(source))?.into_unoptimized_plan();
    let table_err = |e: deltalake::DeltaTableError| TallyError::Table {
        table: url.to_string(),
        message: e.to_string(),
    };
    let t = table::keeping_whole_log(table::open(url).await?, url)
        .await?
        .write(Vec::new())
        // Written in a deltalake session (its planner) with one partition, so the rows reach
        // the table in the order they were counted, hashed and written as CSV (several would
        // share the stream's batches among writers in whatever order they come); the query
        // runs in the stage's session.
        .with_input_plan(plan)
        .with_session_state(Arc::new(write_session()?.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        .with_configuration([(table::KEEP_WHOLE_LOG.0, Some(table::KEEP_WHOLE_LOG.1))])
        .await;
    let failed = Passing::lock(&passing).failed.take();
    if let Some(e) = failed {
        return Err(e);
    }
    let t = t.map_err(table_err)?;
    let passing = Arc::try_unwrap(passing)
        .map_err(|_| TallyError::Internal(format!("stage {}: rows still passing", stage.name)))?
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (rows, content_sha256, csv) = passing.finish();
    Ok((t, rows, content_sha256, csv))
}

/// The session deltalake writes a stage's rows in: its own, with one partition.
fn write_session() -> Result<deltalake::delta_datafusion::DeltaSessionContext> {
    deltalake::delta_datafusion::DeltaSessionContext::new_with_session_overrides(
        &std::collections::HashMap::from([(
            "datafusion.execution.target_partitions".to_string(),
            "1".to_string(),
        )]),
    )
    .map_err(|e| TallyError::Internal(format!("stage write session: {e}")))
}

/// A stream that can be executed once: a stage's rows, as the input of the table's write.
struct Once {
    schema: arrow::datatypes::SchemaRef,
    stream: std::sync::Mutex<Option<datafusion::execution::SendableRecordBatchStream>>,
}

impl Once {
    fn new(
        schema: arrow::datatypes::SchemaRef,
        stream: datafusion::execution::SendableRecordBatchStream,
    ) -> Once {
        Once {
            schema,
            stream: std::sync::Mutex::new(Some(stream)),
        }
    }
}

impl std::fmt::Debug for Once {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Once")
    }
}

impl datafusion::physical_plan::streaming::PartitionStream for Once {
    fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        match self.stream.lock().expect("not poisoned").take() {
            Some(s) => s,
            None => Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    self.schema.clone(),
                    futures::stream::once(async {
                        Err(datafusion::error::DataFusionError::Internal(
                            "a stage's rows were read twice".into(),
                        ))
                    }),
                ),
            ),
        }
    }
}

/// Writes a stage's rows as `<root>/exports/<name>.csv` (decimals and times as their text).
async fn put_csv(root: &str, name: &str, buf: Vec<u8>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of a `@by_period` stage over four rows in two periods and NULL, split into one
    /// query per period above `split_rows` rows.
    async fn rows_of(sql: &str, split_rows: u64) -> Result<Vec<String>> {
        rows_reading("t", sql, split_rows).await
    }

    /// [`rows_of`], the stage reading `reads` (`t`, or `v`: a view of it).
    async fn rows_reading(reads: &str, sql: &str, split_rows: u64) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let ctx = session()?;
        ctx.register_batch(
            "t",
            RecordBatch::try_from_iter([
                (
                    PERIOD,
                    Arc::new(arrow::array::StringArray::from(vec![
                        Some("2024-02"),
                        Some("2024-01"),
                        None,
                        Some("2024-01"),
                    ])) as arrow::array::ArrayRef,
                ),
                (
                    "n",
                    Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3, 4])),
                ),
            ])?,
        )?;
        ctx.sql("CREATE VIEW v AS SELECT * FROM t").await?;
        let text =
            format!("-- @stage: s\n-- @reads: {reads}\n-- @writes: s\n-- @by_period: true\n{sql}");
        let stage = parse("s.sql", text)?;
        assert!(stage.by_period);
        let (_, rows) = stage_rows(&stage, &ctx, split_rows).await?;
        let batches: Vec<RecordBatch> = rows.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                out.push(format!(
                    "{} {}",
                    arrow::util::display::array_value_to_string(b.column(0), i)?,
                    arrow::util::display::array_value_to_string(b.column(1), i)?
                ));
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_by_period_stage_must_order_by_period_first_with_nulls_last() {
        for sql in [
            "SELECT * FROM t ORDER BY n",
            "SELECT * FROM t",
            "SELECT * FROM t ORDER BY x_BillingPeriod DESC, n",
            "SELECT * FROM t ORDER BY x_BillingPeriod NULLS FIRST, n",
        ] {
            let e = rows_of(sql, 0).await.unwrap_err().to_string();
            assert!(
                e.contains("must end in ORDER BY x_BillingPeriod"),
                "{sql}: {e}"
            );
        }
        // A view read as the stage's table cannot be limited to a period: an error, not every
        // row once per period.
        let e = rows_reading("v", "SELECT * FROM v ORDER BY x_BillingPeriod, n", 0)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not scan as a table"), "{e}");
        // Whole, and one query per period (each seeing only its rows; NULL last as in SQL):
        // the same rows in the same order.
        for split_rows in [u64::MAX, 0] {
            assert_eq!(
                rows_of("SELECT * FROM t ORDER BY x_BillingPeriod, n", split_rows)
                    .await
                    .unwrap(),
                ["2024-01 2", "2024-01 4", "2024-02 1", " 3"]
            );
        }
    }
}
