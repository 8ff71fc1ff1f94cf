//! One export file → checked FOCUS rows, quarantined rows and the numbers that prove it.
//!
//! The file is streamed: a reader task turns it into typed raw batches (see [`crate::source`]),
//! DataFusion runs the format's `sql/normalize/<format>.sql` over them as the table `raw`, a
//! generated projection casts the result to the FOCUS 1.4 schema and evaluates every row rule,
//! and this module splits each output batch into rows to write, rows to quarantine and rows the
//! mapping folded away (e.g. AWS SavingsPlanNegation), keeping the reconciliation sums as it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Result, TallyError};
use crate::formats::{Format, Measure};
use crate::job::Severity;
pub use crate::mapping_plan::MappingPlans;
use crate::quarantine::QuarantineRow;
use crate::schema::{FocusSchema, sql_str};
use crate::source::layout::Adapter;
use crate::source::read::{self, FileDigest};
use crate::source::typing::{SourceTally, TotalKey, Typer};
use crate::storage::{DiscoveredFile, FileKind, Location};
use crate::{timestamp, udf};

/// Column a mapping sets (non-null) on rows it folds into another row instead of writing.
pub const FOLD_COLUMN: &str = "x__fold";

/// Column a mapping sets (non-null) on extra rows it derives from a source row, e.g. the
/// explicit `Unused` commitment row FOCUS asks for beside a commitment fee.
pub const DERIVED_COLUMN: &str = "x__derived";

/// A partition of the cost table: (provider, billing account, billing period `YYYY-MM`).
pub type PartitionKey = (String, String, String);

/// Everything processing one file produced.
#[derive(Debug)]
pub struct FileOutcome {
    /// The file.
    pub file: DiscoveredFile,
    /// Format used.
    pub format: String,
    /// Whether the format was detected (rather than named by the job).
    pub detected: bool,
    /// SHA-256 and size.
    pub digest: FileDigest,
    /// Ingestion id written to `x_IngestionRunId`.
    pub ingestion_id: String,
    /// Rows read and the source's own totals.
    pub source: SourceTally,
    /// Checked rows not yet handed to the sink (drained after every output batch).
    pub batches: Vec<RecordBatch>,
    /// Rows written.
    pub rows_written: u64,
    /// Rows folded by the mapping, by reason.
    pub folded: BTreeMap<String, u64>,
    /// Extra rows the mapping derived from source rows (written too), by reason.
    pub derived: BTreeMap<String, u64>,
    /// Columns of the file that neither the mapping nor the layout adapter reads.
    pub ignored_columns: Vec<String>,
    /// Quarantined rows not yet handed to the sink (drained as the file streams).
    pub quarantined: Vec<QuarantineRow>,
    /// Rows refused before the mapping (a value did not parse), by record number, until the
    /// mapping's output has passed them; `true` once an output row has taken the refusal.
    refused: BTreeMap<u64, (QuarantineRow, bool)>,
    /// What was quarantined, in sum.
    pub quarantine: QuarantineSummary,
    /// Rule violations kept as warnings (rows written), by rule id.
    pub warnings: BTreeMap<String, u64>,
    /// Σ BilledCost written, by (billing period start, currency).
    pub written_totals: BTreeMap<TotalKey, i128>,
    /// Partitions the written rows fall in.
    pub partitions: BTreeSet<PartitionKey>,
    /// Written Generative AI usage rows whose meter no rule in `schemas/ai_token_meters.psv` parsed.
    pub ai_meters_unparsed: u64,
}

/// Where checked and refused rows go as they are produced (the staged Delta writers of a run).
pub trait RowSink {
    /// Accepts one batch of checked rows in the FOCUS 1.4 output schema.
    fn accept(
        &mut self,
        batch: RecordBatch,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Accepts refused rows, in record order.
    fn quarantine(
        &mut self,
        rows: Vec<QuarantineRow>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// What one file's quarantined rows add up to.
#[derive(Debug, Default, Clone)]
pub struct QuarantineSummary {
    /// Rows.
    pub rows: u64,
    /// Rows by rule id.
    pub by_rule: BTreeMap<String, u64>,
    /// Σ amounts by (billing period start, currency).
    pub amounts: BTreeMap<TotalKey, i128>,
    /// Partitions they belong to.
    pub partitions: BTreeSet<PartitionKey>,
    /// A sum of amounts overflowed Decimal128 (the run fails).
    pub overflowed: bool,
}

impl QuarantineSummary {
    fn add(&mut self, q: &QuarantineRow) {
        self.rows += 1;
        *self.by_rule.entry(q.rule.clone()).or_default() += 1;
        for (measure, amount) in [
            (Measure::BilledCost, q.amount),
            (Measure::EffectiveCost, q.effective_amount),
        ] {
            let Some(a) = amount else { continue };
            let key = (
                q.provider.clone(),
                q.period_start.clone(),
                q.currency.clone(),
                measure,
            );
            if crate::decimal::accumulate(&mut self.amounts, key, a).is_err() {
                self.overflowed = true;
            }
        }
        self.partitions
            .insert((q.provider.clone(), q.account.clone(), q.period.clone()));
    }
}

/// Moves the rows the reader refused so far into the outcome, keyed by record number.
fn take_refusals(pre: &Mutex<(SourceTally, Vec<QuarantineRow>)>, outcome: &mut FileOutcome) {
    let inbox = std::mem::take(&mut pre.lock().expect("state").1);
    outcome
        .refused
        .extend(inbox.into_iter().map(|q| (q.row, (q, false))));
}

/// Hands the refused rows up to record `upto` (all when `None`) to the sink, in record order.
/// Rows refused before the mapping wait in `pre` until the mapping's output has passed them, so
/// the quarantine table's order does not depend on thread timing.
async fn drain_quarantine(
    pre: &Mutex<(SourceTally, Vec<QuarantineRow>)>,
    outcome: &mut FileOutcome,
    upto: Option<u64>,
    sink: &mut impl RowSink,
) -> Result<()> {
    let mut rows = std::mem::take(&mut outcome.quarantined);
    take_refusals(pre, outcome);
    // The last record of a batch may continue into the next one (a derived row), so only
    // records before it are settled. A refusal no output row took keeps the source's amount.
    let settled: Vec<u64> = outcome
        .refused
        .keys()
        .copied()
        .filter(|r| upto.is_none_or(|u| *r < u))
        .collect();
    for r in settled {
        if let Some((q, taken)) = outcome.refused.remove(&r)
            && !taken
        {
            rows.push(q);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by_key(|q| q.row);
    for q in &rows {
        outcome.quarantine.add(q);
    }
    sink.quarantine(rows).await
}

/// A DataFusion session for mapping SQL: case-sensitive identifiers (FOCUS names are
/// PascalCase), one partition so rows keep file order (determinism), tally's functions,
/// expressions evaluated on their own columns only ([`crate::narrow`]), unnests that add no
/// rows passing their batch through ([`crate::unnest`]).
pub fn session() -> Result<SessionContext> {
    session_in(Arc::new(
        datafusion::execution::runtime_env::RuntimeEnv::default(),
    ))
}

/// [`session`], with this runtime (its memory pool and spill files).
pub fn session_in(
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(read::BATCH_ROWS)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(crate::narrow::NarrowInputs))
        .with_physical_optimizer_rule(Arc::new(crate::unnest::OneElementPassThrough))
        .build();
    let ctx = SessionContext::new_with_state(state);
    udf::register(&ctx)?;
    Ok(ctx)
}

/// The columns of a file, as the format's layout will name them.
pub async fn header(loc: &Location, file: &DiscoveredFile) -> Result<Vec<String>> {
    match file.kind {
        FileKind::Parquet => read::parquet_columns(loc, file).await,
        FileKind::Json | FileKind::JsonGz => read::json_header(loc, file).await,
        FileKind::Csv | FileKind::CsvGz => read::csv_header(loc, file).await,
    }
}

/// The SQL that casts a mapping's output to the FOCUS schema and evaluates every row rule.
/// The file's own values come from functions set per file ([`crate::mapping_plan`]), so one
/// plan serves every file of a format.
pub fn check_sql(schema: &FocusSchema, mapped: &SchemaRef, format: &Format) -> Result<String> {
    let bad = |m: String| TallyError::Sql {
        file: format.sql_path.clone(),
        message: m,
    };
    let known: BTreeSet<&str> = schema.columns().map(|c| c.name.as_str()).collect();
    for f in mapped.fields() {
        let n = f.name().as_str();
        if n == FOLD_COLUMN || n == DERIVED_COLUMN || n == "x_SourceRow" {
            continue;
        }
        if !known.contains(n) {
            return Err(bad(format!(
                "outputs column {n:?}, which is neither a FOCUS 1.4 column nor one of tally's x_ columns (schemas/tally_columns.psv); custom columns must start with x_ and be declared"
            )));
        }
        if matches!(
            f.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        ) {
            return Err(bad(format!(
                "outputs {n} as {}: money and quantities are never floating point",
                f.data_type()
            )));
        }
        let wants = schema.column(n).map(|c| c.ty);
        let typed_ok = match wants {
            Some(crate::schema::FocusType::Decimal) => {
                matches!(f.data_type(), DataType::Decimal128(_, _) | DataType::Null)
                    || f.data_type().is_integer()
            }
            Some(crate::schema::FocusType::DateTime) => {
                matches!(f.data_type(), DataType::Timestamp(_, _) | DataType::Null)
            }
            _ => true,
        };
        if !typed_ok {
            return Err(bad(format!(
                "outputs {n} as {}; a {:?} column must come out of the mapping already typed (declare its source column @decimal or @timestamp)",
                f.data_type(),
                wants.expect("checked above")
            )));
        }
        if let DataType::Decimal128(_, s) = f.data_type()
            && *s > crate::decimal::SCALE
        {
            return Err(bad(format!(
                "outputs {n} with scale {s}; casting to 18 would round (multiply in Rust or divide exactly)"
            )));
        }
    }
    if mapped.field_with_name("x_SourceRow").is_err() {
        return Err(bad(
            "must select x_SourceRow (the record number) so quarantined rows can be traced".into(),
        ));
    }
    let mut proj = Vec::new();
    for c in schema.columns() {
        let target = c.ty.arrow();
        let expr = match c.name.as_str() {
            "x_SourceProvider" => sql_str(&format.provider),
            "x_SourceFormat" => sql_str(&format.name),
            "x_SourceFile" => format!("{}()", crate::mapping_plan::SOURCE_FILE_FN),
            "x_IngestionRunId" => format!("{}()", crate::mapping_plan::INGESTION_ID_FN),
            "x_SourceRow" => "x_SourceRow".into(),
            "x_BillingPeriod" => "tally_year_month(BillingPeriodStart)".into(),
            name => match mapped.field_with_name(name) {
                Ok(f) if f.data_type() == &target => name.to_string(),
                // Casting text would round decimals silently (or fail the whole run): a mapping
                // must hand over decimals and timestamps typed (see the check above).
                Ok(_) => format!("arrow_cast({name}, {})", sql_str(&target.to_string())),
                Err(_) => format!("arrow_cast(NULL, {})", sql_str(&target.to_string())),
            },
        };
        proj.push(format!("{expr} AS {}", c.name));
    }
    for internal in [FOLD_COLUMN, DERIVED_COLUMN] {
        let expr = if mapped.field_with_name(internal).is_ok() {
            format!("arrow_cast({internal}, 'Utf8')")
        } else {
            "arrow_cast(NULL, 'Utf8')".into()
        };
        proj.push(format!("{expr} AS {internal}"));
    }
    let inner = format!("SELECT {} FROM mapped", proj.join(",\n  "));
    let flags: Vec<String> = schema
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!("coalesce(({}), false) AS __rule_{i}", r.sql))
        .collect();
    Ok(format!(
        "SELECT *,\n  {}\nFROM ({inner}) AS o",
        flags.join(",\n  ")
    ))
}

/// The error a reader task ends with when the mapping side stopped reading from it (nobody
/// sees it: the side that stopped reports its own error).
fn stopped(file: &DiscoveredFile) -> TallyError {
    TallyError::Internal(format!("{}: the mapping stopped reading", file.url))
}

/// The copy of a reader's error that the mapping side sees (its plan reads the batches, and
/// sees the error as a bad file); the run reports the reader's own error, of its kind (a
/// failed read is exit 4, not a bad file), which [`finish_file`] takes from the task.
fn copy_for_mapping(file: &DiscoveredFile, e: &TallyError) -> TallyError {
    let message = match e {
        TallyError::BadFile { message, .. } => message.clone(),
        other => other.to_string(),
    };
    TallyError::BadFile {
        file: file.url.clone(),
        message,
    }
}

/// A file whose reader task has started: typed raw batches queue up (a few at most) until
/// [`finish_file`] maps them. A run starts the next file while it maps the current one, so
/// reading one file overlaps with mapping and writing the one before; rows still reach the
/// tables file by file, in order.
pub struct StartedFile {
    format: Format,
    detected: bool,
    file: DiscoveredFile,
    ingestion_id: String,
    ignored_columns: Vec<String>,
    typer: Arc<Typer>,
    state: Arc<Mutex<(SourceTally, Vec<QuarantineRow>)>>,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    producer: ReaderTask,
}

/// A file's reader task, aborted if dropped before it is joined: a file the run no longer
/// wants (a read-ahead file when the run fails) stops being read, and a remote Parquet file
/// stops being spooled, instead of running on to the end of the run.
struct ReaderTask(Option<tokio::task::JoinHandle<Result<FileDigest>>>);

impl ReaderTask {
    /// Waits for the task: the file's digest, or why it stopped.
    async fn join(mut self) -> std::result::Result<Result<FileDigest>, tokio::task::JoinError> {
        self.0.take().expect("a reader task is joined once").await
    }
}

impl Drop for ReaderTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Starts reading and typing `file` (its columns `names`) on a task of its own.
pub fn start_file(
    format: &Format,
    detected: bool,
    loc: &Location,
    file: &DiscoveredFile,
    names: Vec<String>,
    ingestion_id: &str,
) -> StartedFile {
    let mut names = names;
    if matches!(file.kind, FileKind::Json | FileKind::JsonGz) {
        // JSON lines leave NULL fields out: a field the first MiB did not show may still come.
        for f in format.top_level_fields() {
            if !names.contains(&f) {
                names.push(f);
            }
        }
    }
    let adapter = Adapter::new(format, &names);
    let declared: BTreeSet<&String> = format.declared_columns().collect();
    let sources = [
        &format.source_total,
        &format.source_currency,
        &format.source_period,
        &format.source_account,
    ];
    let wanted = read::Wanted::new(
        (0..names.len())
            .map(|i| {
                let n = &adapter.names()[i];
                declared.contains(n) || sources.contains(&n) || adapter.consumes(i)
            })
            .collect(),
    );
    let ignored_columns: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !wanted.reads(*i))
        .map(|(_, n)| n.clone())
        .collect();
    let text_schema = read::text_schema(&names);
    let adapted = adapter.apply(&RecordBatch::new_empty(text_schema.clone()));
    let adapted_names: Vec<String> = adapted
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let typer = Arc::new(
        Typer::new(format, &adapted_names, &names, &file.url, ingestion_id).keeping_refused_rows(),
    );
    // Parquet doubles and timestamps the typer reads as numbers and times stay typed (the
    // adapter's own sources stay text: it parses them).
    let typed: Vec<bool> = typer
        .typed_columns(names.len())
        .into_iter()
        .enumerate()
        .map(|(i, t)| t && !adapter.consumes(i))
        .collect();
    // JSON lines are parsed whole, record by record: nothing to skip there.
    let wanted = (!matches!(file.kind, FileKind::Json | FileKind::JsonGz))
        .then(|| wanted.keeping_typed(typed));

    // Reader → typed batches.
    let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(4);
    let state = Arc::new(Mutex::new((
        SourceTally::default(),
        Vec::<QuarantineRow>::new(),
    )));
    let producer = {
        let (typer, state, loc, file) = (typer.clone(), state.clone(), loc.clone(), file.clone());
        let planned_names = names.clone();
        let adapter = Arc::new(adapter);
        tokio::spawn(async move {
            let mut next_row = 1u64;
            let mut push = |b: RecordBatch| -> RecordBatch {
                let adapted = adapter.apply(&b);
                let mut st = state.lock().expect("state");
                let (tally, q) = &mut *st;
                let typed = typer.apply(&adapted, next_row, tally, q);
                next_row += b.num_rows() as u64;
                typed
            };
            let digest = match file.kind {
                FileKind::Parquet => {
                    let planned = wanted.map(|w| (planned_names.as_slice(), w));
                    let (mut stream, digest) = read::open_parquet(&loc, &file, planned).await?;
                    while let Some(b) = stream.next().await {
                        let b = match b {
                            Ok(b) => b,
                            Err(e) => {
                                let _ = tx.send(Err(copy_for_mapping(&file, &e))).await;
                                return Err(e);
                            }
                        };
                        if tx.send(Ok(push(b))).await.is_err() {
                            // The mapping side stopped (its file failed, or the run did):
                            // nobody wants the rest, nor the file's hash.
                            return Err(stopped(&file));
                        }
                    }
                    digest.finish(&file).await?
                }
                _ => {
                    let mut reader = read::spawn_csv(&loc, &file, text_schema, wanted).await?;
                    while let Some(b) = reader.next().await {
                        match b {
                            Ok(b) => {
                                if tx.send(Ok(push(b))).await.is_err() {
                                    // As above.
                                    reader.stop().await;
                                    return Err(stopped(&file));
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(copy_for_mapping(&file, &e))).await;
                                return Err(e);
                            }
                        }
                    }
                    reader.finish().await?
                }
            };
            Ok::<FileDigest, TallyError>(digest)
        })
    };
    StartedFile {
        format: format.clone(),
        detected,
        file: file.clone(),
        ingestion_id: ingestion_id.to_string(),
        ignored_columns,
        typer,
        state,
        rx,
        producer: ReaderTask(Some(producer)),
    }
}

/// Maps, checks and splits a started file's rows, handing them to `sink` as they come.
pub async fn finish_file(
    started: StartedFile,
    schema: &FocusSchema,
    cost_identity: Severity,
    plans: &mut MappingPlans,
    sink: &mut impl RowSink,
) -> Result<FileOutcome> {
    let StartedFile {
        format,
        detected,
        file,
        ingestion_id,
        ignored_columns,
        typer,
        state,
        rx,
        producer,
    } = started;
    let (format, file, ingestion_id) = (&format, &file, ingestion_id.as_str());
    let plan = plans.get(schema, format, &typer.schema()).await?;
    let mut stream = plan.execute(rx, &file.url, ingestion_id)?;

    let out_schema = schema.arrow();
    let n_out = out_schema.fields().len();
    let row_idx = out_schema
        .index_of("x_SourceRow")
        .expect("x_SourceRow is a tally column");
    let severities: Vec<Severity> = schema
        .rules
        .iter()
        .map(|r| r.effective_severity(cost_identity))
        .collect();
    let mut outcome = FileOutcome {
        file: file.clone(),
        format: format.name.clone(),
        detected,
        digest: FileDigest {
            sha256: String::new(),
            bytes: 0,
        },
        ingestion_id: ingestion_id.to_string(),
        source: SourceTally::default(),
        batches: Vec::new(),
        rows_written: 0,
        folded: BTreeMap::new(),
        derived: BTreeMap::new(),
        ignored_columns,
        quarantined: Vec::new(),
        refused: BTreeMap::new(),
        quarantine: QuarantineSummary::default(),
        warnings: BTreeMap::new(),
        written_totals: BTreeMap::new(),
        partitions: BTreeSet::new(),
        ai_meters_unparsed: 0,
    };
    let mut failure: Option<TallyError> = None;
    let mut reader_failed = false;
    while let Some(b) = stream.next().await {
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                failure = Some(match e.find_root() {
                    datafusion::error::DataFusionError::External(inner) => {
                        reader_failed = true;
                        let message = match inner.downcast_ref::<TallyError>() {
                            Some(TallyError::BadFile { message, .. }) => message.clone(),
                            _ => inner.to_string(),
                        };
                        TallyError::BadFile {
                            file: file.url.clone(),
                            message,
                        }
                    }
                    other => TallyError::Sql {
                        file: format.sql_path.clone(),
                        message: other.to_string(),
                    },
                });
                break;
            }
        };
        take_refusals(&state, &mut outcome);
        split_batch(schema, &out_schema, n_out, &severities, &b, &mut outcome)?;
        let last_row = b
            .column(row_idx)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .and_then(|a| (!a.is_empty()).then(|| a.value(a.len() - 1) as u64));
        let mut step =
            drain_quarantine(&state, &mut outcome, Some(last_row.unwrap_or(0)), sink).await;
        for good in std::mem::take(&mut outcome.batches) {
            if step.is_ok() {
                step = sink.accept(good).await;
            }
        }
        if let Err(e) = step {
            failure = Some(e);
            break;
        }
    }
    drop(stream);
    let digest = producer
        .join()
        .await
        .map_err(|e| TallyError::Internal(e.to_string()))?;
    if let Some(f) = failure {
        // A reader's own error keeps its kind (a storage or I/O failure is exit 4, a panic
        // exit 1): the mapping side only saw its message, as a bad file.
        return Err(match digest {
            Err(own) if reader_failed => own,
            _ => f,
        });
    }
    outcome.digest = digest?;
    drain_quarantine(&state, &mut outcome, None, sink).await?;
    outcome.source = std::mem::take(&mut state.lock().expect("state").0);
    Ok(outcome)
}

fn split_batch(
    schema: &FocusSchema,
    out_schema: &SchemaRef,
    n_out: usize,
    severities: &[Severity],
    b: &RecordBatch,
    outcome: &mut FileOutcome,
) -> Result<()> {
    let n = b.num_rows();
    let fold = b
        .column(n_out)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("fold column is Utf8");
    let derived = b
        .column(n_out + 1)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("derived column is Utf8");
    let mut keep = vec![true; n];
    let mut failed: Vec<Option<usize>> = vec![None; n];
    let mut warned: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, sev) in severities.iter().enumerate() {
        let flags = b
            .column(n_out + 2 + i)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("rule flag");
        if flags.null_count() == 0 && flags.true_count() == n {
            continue; // every row passes this rule (the usual case)
        }
        for (r, first_failure) in failed.iter_mut().enumerate() {
            if !flags.value(r) {
                match sev {
                    Severity::Quarantine => {
                        if first_failure.is_none() {
                            *first_failure = Some(i);
                        }
                    }
                    Severity::Warn => warned[r].push(i),
                }
            }
        }
    }
    // Rows may still break NOT NULL here (those are quarantined below), so split them under a
    // nullable copy of the schema and apply the strict one to the rows that stay.
    let loose = Arc::new(arrow::datatypes::Schema::new(
        out_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let rows = b.project(&(0..n_out).collect::<Vec<_>>())?;
    let rows = RecordBatch::try_new(loose, rows.columns().to_vec()).map_err(|e| {
        TallyError::Internal(format!("checked rows do not match the FOCUS schema: {e}"))
    })?;
    let col = |name: &str| -> &ArrayRef {
        rows.column(out_schema.index_of(name).expect("schema column"))
    };
    let billed = col("BilledCost")
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("decimal");
    let period = col("BillingPeriodStart")
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("ts");
    let currency = col("BillingCurrency")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let account = col("BillingAccountId")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let provider = col("x_SourceProvider")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let source_row = col("x_SourceRow")
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("i64");
    let effective = col("EffectiveCost")
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("decimal");
    let money = |a: &Decimal128Array, r: usize| (!a.is_null(r)).then(|| a.value(r));
    let key = |r: usize, measure: Measure| -> TotalKey {
        (
            provider.value(r).to_string(),
            if period.is_null(r) {
                "unknown".into()
            } else {
                timestamp::format_micros(period.value(r))
            },
            if currency.is_null(r) {
                "unknown".into()
            } else {
                currency.value(r).to_string()
            },
            measure,
        )
    };
    // Written rows add to sums keyed by (provider, period, currency) and to the set of
    // partitions; both change only where those values change, so keys are built once per run of
    // equal values rather than once per row.
    struct WrittenRun {
        first: usize,
        billed: i128,
        effective: i128,
    }
    let same_run = |a: usize, b: usize| {
        provider.value(a) == provider.value(b)
            && account.value(a) == account.value(b)
            && period.is_null(a) == period.is_null(b)
            && period.value(a) == period.value(b)
            && currency.is_null(a) == currency.is_null(b)
            && currency.value(a) == currency.value(b)
    };
    let flush = |run: WrittenRun, outcome: &mut FileOutcome| -> Result<()> {
        for (m, amount) in [
            (Measure::BilledCost, run.billed),
            (Measure::EffectiveCost, run.effective),
        ] {
            crate::decimal::accumulate(&mut outcome.written_totals, key(run.first, m), amount)
                .map_err(TallyError::Integrity)?;
        }
        outcome.partitions.insert((
            provider.value(run.first).to_string(),
            account.value(run.first).to_string(),
            timestamp::year_month(period.value(run.first)),
        ));
        Ok(())
    };
    let mut run: Option<WrittenRun> = None;
    let mut q_rows = Vec::new();
    for r in 0..n {
        if !derived.is_null(r) {
            *outcome
                .derived
                .entry(derived.value(r).to_string())
                .or_default() += 1;
        }
        if let Some((pre, taken)) = outcome.refused.get_mut(&(source_row.value(r) as u64)) {
            // A value of this record did not parse: quarantine it with the amount the mapping
            // gives it (0 when the mapping folds it), placed where the mapping places it.
            *taken = true;
            keep[r] = false;
            let mut q = pre.clone();
            (q.amount, q.effective_amount) = if !fold.is_null(r) {
                (Some(0), Some(0))
            } else {
                (money(billed, r), money(effective, r))
            };
            let (_, ps, cur, _) = key(r, Measure::BilledCost);
            if !period.is_null(r) {
                q.period = timestamp::year_month(period.value(r));
                q.period_start = ps;
            }
            if !currency.is_null(r) {
                q.currency = cur;
            }
            if !account.is_null(r) {
                q.account = account.value(r).to_string();
            }
            outcome.quarantined.push(q);
        } else if !fold.is_null(r) {
            keep[r] = false;
            *outcome.folded.entry(fold.value(r).to_string()).or_default() += 1;
        } else if let Some(rule) = failed[r] {
            keep[r] = false;
            q_rows.push((r, rule));
        } else {
            if !run.as_ref().is_some_and(|run| same_run(run.first, r)) {
                if let Some(done) = run.take() {
                    flush(done, outcome)?;
                }
                run = Some(WrittenRun {
                    first: r,
                    billed: 0,
                    effective: 0,
                });
            }
            let run = run.as_mut().expect("set above");
            let overflow =
                || TallyError::Integrity("a money sum overflowed Decimal128(38,18)".into());
            run.billed = run
                .billed
                .checked_add(money(billed, r).unwrap_or(0))
                .ok_or_else(overflow)?;
            run.effective = run
                .effective
                .checked_add(money(effective, r).unwrap_or(0))
                .ok_or_else(overflow)?;
            for i in &warned[r] {
                *outcome
                    .warnings
                    .entry(schema.rules[*i].id.clone())
                    .or_default() += 1;
            }
        }
    }
    if let Some(done) = run.take() {
        flush(done, outcome)?;
    }
    if !q_rows.is_empty() {
        let idx =
            arrow::array::UInt32Array::from_iter_values(q_rows.iter().map(|(r, _)| *r as u32));
        let bad = arrow::compute::take_record_batch(&rows, &idx)?;
        let records = rows_as_json(&bad)?;
        for (k, ((r, rule_i), record)) in q_rows.iter().zip(records).enumerate() {
            let rule = &schema.rules[*rule_i];
            let value = bad
                .schema()
                .index_of(&rule.column)
                .ok()
                .and_then(|ci| cell_text(bad.column(ci).as_ref(), k).ok())
                .filter(|v| !v.is_empty());
            let (_, ps, cur, _) = key(*r, Measure::BilledCost);
            outcome.quarantined.push(QuarantineRow {
                provider: provider.value(*r).to_string(),
                format: outcome.format.clone(),
                file: outcome.file.url.clone(),
                row: source_row.value(*r) as u64,
                column: rule.column.clone(),
                rule: rule.id.clone(),
                reason: rule.reason.clone(),
                value,
                record,
                account: if account.is_null(*r) {
                    crate::quarantine::unknown_in(&outcome.file.url)
                } else {
                    account.value(*r).to_string()
                },
                period: if period.is_null(*r) {
                    crate::quarantine::unknown_in(&outcome.file.url)
                } else {
                    timestamp::year_month(period.value(*r))
                },
                period_start: ps,
                currency: cur,
                amount: money(billed, *r),
                effective_amount: money(effective, *r),
                ingestion_id: outcome.ingestion_id.clone(),
            });
        }
    }
    let good = if keep.iter().all(|k| *k) {
        rows
    } else {
        arrow::compute::filter_record_batch(&rows, &BooleanArray::from(keep))?
    };
    let good = RecordBatch::try_new(out_schema.clone(), good.columns().to_vec()).map_err(|e| {
        TallyError::Internal(format!(
            "a row passed every rule yet breaks the FOCUS schema: {e}"
        ))
    })?;
    outcome.rows_written += good.num_rows() as u64;
    outcome.ai_meters_unparsed += count_unparsed_ai_meters(&good);
    if good.num_rows() > 0 {
        outcome.batches.push(good);
    }
    Ok(())
}

/// Generative AI usage rows without a parsed token class (they are written, and counted).
fn count_unparsed_ai_meters(b: &RecordBatch) -> u64 {
    let col = |n: &str| {
        b.column_by_name(n)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
    };
    let (Some(sub), Some(cat), Some(class)) = (
        col("ServiceSubcategory"),
        col("ChargeCategory"),
        col("x_AiTokenClass"),
    ) else {
        return 0;
    };
    (0..b.num_rows())
        .filter(|&r| {
            !sub.is_null(r)
                && sub.value(r) == "Generative AI"
                && cat.value(r) == "Usage"
                && class.is_null(r)
        })
        .count() as u64
}

/// One value as text for people: decimals without trailing zeros, times as RFC 3339.
fn cell_text(a: &dyn Array, r: usize) -> Result<String> {
    Ok(match a.data_type() {
        DataType::Decimal128(_, s) if *s == crate::decimal::SCALE => crate::decimal::format(
            a.as_any()
                .downcast_ref::<Decimal128Array>()
                .expect("decimal")
                .value(r),
        ),
        DataType::Timestamp(_, _) => timestamp::format_micros(
            a.as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .expect("µs")
                .value(r),
        ),
        _ => arrow::util::display::array_value_to_string(a, r)?,
    })
}

/// Rows as JSON objects (nulls omitted), for quarantine records.
fn rows_as_json(b: &RecordBatch) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(b.num_rows());
    for r in 0..b.num_rows() {
        let mut m = serde_json::Map::new();
        for (i, f) in b.schema().fields().iter().enumerate() {
            let c = b.column(i);
            if c.is_null(r) {
                continue;
            }
            let v = cell_text(c.as_ref(), r)?;
            m.insert(f.name().clone(), v.into());
        }
        out.push(serde_json::Value::Object(m).to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn mapped(fields: Vec<Field>) -> SchemaRef {
        let mut f = fields;
        f.push(Field::new("x_SourceRow", DataType::Int64, false));
        Arc::new(Schema::new(f))
    }

    #[test]
    fn a_mapping_may_not_invent_unprefixed_columns_or_use_floats() {
        let schema = FocusSchema::load().unwrap();
        let format = crate::formats::by_name("focus").unwrap();
        let custom = mapped(vec![Field::new("CostCenter", DataType::Utf8, true)]);
        let e = check_sql(&schema, &custom, &format)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CostCenter") && e.contains("x_"), "{e}");
        let float = mapped(vec![Field::new("BilledCost", DataType::Float64, true)]);
        let e = check_sql(&schema, &float, &format).unwrap_err().to_string();
        assert!(e.contains("never floating point"), "{e}");
        let rounding = mapped(vec![Field::new(
            "BilledCost",
            DataType::Decimal128(38, 36),
            true,
        )]);
        assert!(check_sql(&schema, &rounding, &format).is_err());
        let no_row = Arc::new(Schema::new(vec![Field::new(
            "BilledCost",
            crate::decimal::data_type(),
            true,
        )]));
        assert!(
            check_sql(&schema, &no_row, &format)
                .unwrap_err()
                .to_string()
                .contains("x_SourceRow")
        );
        let ok = mapped(vec![
            Field::new("BilledCost", crate::decimal::data_type(), true),
            Field::new("x_UsageType", DataType::Utf8, true),
        ]);
        let sql = check_sql(&schema, &ok, &format).unwrap();
        assert!(sql.contains("__rule_0") && sql.contains("AS x_SourceFile"));
    }

    /// A file's reader must stop, not hang, once nobody maps its rows (the run failed, or the
    /// read-ahead file was dropped): before, the CSV reader thread filled its channel and the
    /// reader task waited for it forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_stops_when_its_rows_are_no_longer_wanted() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        for (name, rows) in [("big.csv", 100_000), ("big.parquet", 100_000)] {
            let path = dir.path().join(name);
            crate::generate::generate("aws_cur", rows, &path, None, &root).unwrap();
            let loc = crate::storage::open(&format!("file://{}", path.display())).unwrap();
            let file = crate::storage::discover(&loc).await.unwrap().remove(0);
            let names = header(&loc, &file).await.unwrap();
            let format = crate::formats::by_name("aws_cur").unwrap();
            let mut started = start_file(&format, false, &loc, &file, names, "id");
            // Take one batch, then walk away, as a failed mapping does.
            assert!(started.rx.recv().await.unwrap().is_ok());
            let StartedFile { rx, producer, .. } = started;
            drop(rx);
            let ended = tokio::time::timeout(std::time::Duration::from_secs(20), producer.join())
                .await
                .unwrap_or_else(|_| panic!("{name}: the reader did not stop"))
                .unwrap();
            assert!(
                ended.unwrap_err().to_string().contains("stopped reading"),
                "{name}"
            );
        }
    }

    /// Takes rows and quarantined rows, and keeps nothing.
    struct Discard;

    impl RowSink for Discard {
        async fn accept(&mut self, _: RecordBatch) -> Result<()> {
            Ok(())
        }
        async fn quarantine(&mut self, _: Vec<QuarantineRow>) -> Result<()> {
            Ok(())
        }
    }

    /// The mapping side sees a reader's failure as a bad file; the file's error must be the
    /// reader's own, of its kind: a lost connection is exit 4 (retry), a panic exit 1 (a bug),
    /// neither exit 3 (look at the file).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_files_error_is_its_readers_own() {
        use crate::error::exit;
        use crate::source::meddling::{Ending, Meddling};
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = dir.path().join("cur.csv");
        crate::generate::generate("aws_cur", 1_000, &path, None, &root).unwrap();
        let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let schema = FocusSchema::load().unwrap();
        let format = crate::formats::by_name("aws_cur").unwrap();
        for (ending, code) in [
            (Ending::LostAfter(1), exit::INFRASTRUCTURE),
            (Ending::PanicAfter(1), exit::INTERNAL),
        ] {
            // The object is one chunk: the header and every row arrive, then the failure.
            let store = Arc::new(Meddling::new().ending(ending));
            let file = store.holding("cur.csv", bytes.clone(), FileKind::Csv).await;
            let loc = store.location();
            let names = header(&loc, &file).await.unwrap();
            let started = start_file(&format, false, &loc, &file, names, "id");
            let mut plans = MappingPlans::default();
            let Err(e) = finish_file(
                started,
                &schema,
                Severity::Quarantine,
                &mut plans,
                &mut Discard,
            )
            .await
            else {
                panic!("{ending:?}: the file must fail");
            };
            assert_eq!(e.exit_code(), code, "{ending:?}: {e}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_task_dropped_before_it_is_joined_is_aborted() {
        // The task holds the sender for ever; its receiver ends only when the task's future is
        // dropped, which abort does and a detached task never would.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = ReaderTask(Some(tokio::spawn(async move {
            let _held = tx;
            std::future::pending::<Result<FileDigest>>().await
        })));
        drop(task);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        assert!(ended.is_ok(), "the dropped reader task is still running");
    }
}
