//! The physical plan of a format's mapping and row checks, planned once per run and reused
//! for every file of that format with the same columns.
//!
//! Planning the ~76-column mapping and its generated check query takes DataFusion about 0.1 s
//! of CPU: nothing beside a million-row file, but a run over 200 files of 1,000 rows spent 19
//! of its 20 s planning. Two things differ between files mapped by one plan: the rows, which
//! come from the `raw` table's channel (fed anew for each file), and the file's own values,
//! which the check query reads through `tally_source_file()` and `tally_ingestion_id()`. Those
//! functions are volatile, so the optimizer never folds a file's value into the plan; they
//! return whatever [`MappingPlan::execute`] set for the file it is running.
//!
//! A plan is only reused when every node in it can run again from scratch (projections,
//! filters, unnests, the streaming scan). A mapping that plans anything else (a join, whose
//! build side is computed once per plan, an aggregate, a sort) is planned per file as before.
//!
//! Each execution registers metrics in the plan's nodes (one per projected expression, labelled
//! with its text: ~0.4 MB per file for the AWS mapping), so before running again the plan's
//! nodes are rebuilt with fresh metrics (DataFusion's `reset_plan_states`, which keeps the
//! expressions and plan properties): memory stays flat however many files a run reads.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use tokio::sync::mpsc;

use crate::error::{Result, TallyError};
use crate::formats::Format;
use crate::schema::FocusSchema;

/// SQL function giving the URL of the file being mapped (`x_SourceFile`).
pub const SOURCE_FILE_FN: &str = "tally_source_file";

/// SQL function giving the ingestion id of the file being mapped (`x_IngestionRunId`).
pub const INGESTION_ID_FN: &str = "tally_ingestion_id";

/// Operators that keep no state between executions: a plan built only of these can run again
/// on the next file's rows.
const REUSABLE: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "StreamingTableExec",
    "UnnestExec",
    "CoalesceBatchesExec",
    "EmptyExec",
    "PlaceholderRowExec",
    crate::unnest::PASS_THROUGH_NAME,
];

/// The `raw` table's only partition: a channel of typed raw batches, fed once per execution.
pub struct ChannelPartition {
    schema: SchemaRef,
    rx: Mutex<Option<mpsc::Receiver<Result<RecordBatch>>>>,
}

impl std::fmt::Debug for ChannelPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelPartition")
    }
}

impl PartitionStream for ChannelPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let Some(rx) = self.rx.lock().expect("partition").take() else {
            let err = datafusion::error::DataFusionError::Plan(
                "the raw table is a stream and can be read only once: a mapping must scan `raw` a single time \
                 (use unnest to emit several rows per source row, not UNION ALL)"
                    .into(),
            );
            return Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async { Err(err) }),
            ));
        };
        let rx = Some(rx);
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let item = rx.recv().await?;
            Some((
                item.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))),
                Some(rx),
            ))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A planned mapping + check query, ready to run over one file at a time.
pub struct MappingPlan {
    key: PlanKey,
    /// The mapping's file, for errors.
    sql_path: String,
    /// The plan, and whether it has run (then its nodes are rebuilt before the next run).
    plan: Mutex<(Arc<dyn ExecutionPlan>, bool)>,
    task: Arc<TaskContext>,
    input: Arc<ChannelPartition>,
    source_file: Arc<Mutex<String>>,
    ingestion_id: Arc<Mutex<String>>,
}

/// What a plan depends on: the format's SQL (after job parameters) and the raw table's
/// columns and types.
#[derive(PartialEq)]
struct PlanKey {
    format: String,
    provider: String,
    sql: String,
    raw: SchemaRef,
}

impl PlanKey {
    fn of(format: &Format, raw: &SchemaRef) -> PlanKey {
        PlanKey {
            format: format.name.clone(),
            provider: format.provider.clone(),
            sql: format.sql.clone(),
            raw: raw.clone(),
        }
    }
}

/// A function of no arguments returning the value last set in `cell`. Volatile, so the
/// optimizer leaves it in the plan instead of folding the value of the file it planned for.
fn file_value(name: &str, cell: Arc<Mutex<String>>) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |_args: &[ColumnarValue]| {
            let v = cell.lock().expect("file value").clone();
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(v))))
        }),
    )
}

/// Whether every operator of `plan` can execute again (see the module docs).
fn reusable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    REUSABLE.contains(&plan.name()) && plan.children().iter().all(|c| reusable(c))
}

impl MappingPlan {
    /// Plans `format`'s mapping over a `raw` table of `raw_schema`, and the generated check
    /// query on top (`check_sql` builds it from the mapping's output schema).
    async fn build(
        format: &Format,
        raw_schema: &SchemaRef,
        check_sql: impl FnOnce(&SchemaRef) -> Result<String>,
    ) -> Result<MappingPlan> {
        let ctx = crate::normalize::session()?;
        let source_file = Arc::new(Mutex::new(String::new()));
        let ingestion_id = Arc::new(Mutex::new(String::new()));
        ctx.register_udf(file_value(SOURCE_FILE_FN, source_file.clone()));
        ctx.register_udf(file_value(INGESTION_ID_FN, ingestion_id.clone()));
        let input = Arc::new(ChannelPartition {
            schema: raw_schema.clone(),
            rx: Mutex::new(None),
        });
        let raw = StreamingTable::try_new(raw_schema.clone(), vec![input.clone()])?;
        ctx.register_table("raw", Arc::new(raw))?;
        let sql_err = |e: datafusion::error::DataFusionError| TallyError::Sql {
            file: format.sql_path.clone(),
            message: e.to_string(),
        };
        let mapping = ctx.sql(&format.sql).await.map_err(sql_err)?;
        let mapped_schema: SchemaRef = Arc::new(mapping.schema().as_arrow().clone());
        ctx.register_table("mapped", mapping.into_view())?;
        let check = check_sql(&mapped_schema)?;
        let df = ctx.sql(&check).await.map_err(|e| TallyError::Sql {
            file: format!("{} (generated checks)", format.sql_path),
            message: e.to_string(),
        })?;
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.map_err(sql_err)?;
        tracing::debug!(
            plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true),
            "physical plan of {}", format.sql_path
        );
        Ok(MappingPlan {
            key: PlanKey::of(format, raw_schema),
            sql_path: format.sql_path.clone(),
            plan: Mutex::new((plan, false)),
            task,
            input,
            source_file,
            ingestion_id,
        })
    }

    /// Runs the plan over the batches `rx` delivers, as the file `source_file` with
    /// `ingestion_id`. One execution at a time: the next file's starts after this stream ends.
    pub fn execute(
        &self,
        rx: mpsc::Receiver<Result<RecordBatch>>,
        source_file: &str,
        ingestion_id: &str,
    ) -> Result<SendableRecordBatchStream> {
        *self.source_file.lock().expect("file value") = source_file.to_string();
        *self.ingestion_id.lock().expect("file value") = ingestion_id.to_string();
        *self.input.rx.lock().expect("partition") = Some(rx);
        let sql_err = |e: datafusion::error::DataFusionError| TallyError::Sql {
            file: self.sql_path.clone(),
            message: e.to_string(),
        };
        let mut guard = self.plan.lock().expect("plan");
        let (plan, ran) = &mut *guard;
        if *ran {
            // Fresh nodes, so the last file's metrics are dropped (see the module docs).
            *plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan.clone())
                .map_err(sql_err)?;
        }
        *ran = true;
        datafusion::physical_plan::execute_stream(plan.clone(), self.task.clone()).map_err(sql_err)
    }

    /// How many metrics the plan's nodes hold (they grow with each execution until the next
    /// reset).
    #[cfg(test)]
    fn metric_count(&self) -> usize {
        fn count(p: &Arc<dyn ExecutionPlan>) -> usize {
            p.metrics().map_or(0, |m| m.iter().count())
                + p.children().iter().map(|c| count(c)).sum::<usize>()
        }
        count(&self.plan.lock().expect("plan").0)
    }
}

/// The plans of one run, by format and raw columns.
#[derive(Default)]
pub struct MappingPlans {
    plans: Vec<Arc<MappingPlan>>,
}

impl MappingPlans {
    /// The plan for `format` over a `raw` table of `raw_schema`: a reusable one planned for an
    /// earlier file, or a new one (kept for later files when every operator in it can run
    /// again).
    pub async fn get(
        &mut self,
        schema: &FocusSchema,
        format: &Format,
        raw_schema: &SchemaRef,
    ) -> Result<Arc<MappingPlan>> {
        let key = PlanKey::of(format, raw_schema);
        if let Some(p) = self.plans.iter().find(|p| p.key == key) {
            return Ok(p.clone());
        }
        let plan = Arc::new(
            MappingPlan::build(format, raw_schema, |mapped| {
                crate::normalize::check_sql(schema, mapped, format)
            })
            .await?,
        );
        if reusable(&plan.plan.lock().expect("plan").0) {
            self.plans.push(plan.clone());
        } else {
            tracing::info!(
                format = %format.name,
                "the mapping plans an operator that cannot run twice: planned again for every file"
            );
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use futures::StreamExt;

    async fn run(plan: &MappingPlan, file: &str, values: &[i64]) -> Vec<(i64, String, String)> {
        let (tx, rx) = mpsc::channel(4);
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .unwrap();
        tx.send(Ok(batch)).await.unwrap();
        drop(tx);
        let mut stream = plan.execute(rx, file, &format!("id-of-{file}")).unwrap();
        let mut rows = Vec::new();
        while let Some(b) = stream.next().await {
            let b = b.unwrap();
            let x = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let f = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let i = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
            for r in 0..b.num_rows() {
                rows.push((x.value(r), f.value(r).to_string(), i.value(r).to_string()));
            }
        }
        rows
    }

    /// One plan runs file after file: each run sees its own rows and its own file's values,
    /// and the plan's metrics do not pile up from run to run.
    #[tokio::test]
    async fn a_plan_runs_again_for_each_file_with_that_files_values() {
        let mut format = crate::formats::by_name("focus").unwrap();
        format.sql = "SELECT a * 2 AS x FROM raw WHERE a > 0".into();
        let raw = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let plan = MappingPlan::build(&format, &raw, |_| {
            Ok(format!(
                "SELECT x, {SOURCE_FILE_FN}() AS f, {INGESTION_ID_FN}() AS i FROM mapped"
            ))
        })
        .await
        .unwrap();
        assert!(reusable(&plan.plan.lock().unwrap().0));
        let one = |x: i64, f: &str| (x, f.to_string(), format!("id-of-{f}"));
        assert_eq!(
            run(&plan, "a.csv", &[1, -1, 2]).await,
            vec![one(2, "a.csv"), one(4, "a.csv")]
        );
        let metrics = plan.metric_count();
        assert!(metrics > 0);
        for i in 0..20 {
            let file = format!("f{i}.csv");
            assert_eq!(
                run(&plan, &file, &[i + 1]).await,
                vec![one(2 * (i + 1), &file)]
            );
            assert_eq!(plan.metric_count(), metrics, "metrics after {} runs", i + 2);
        }
    }
}
