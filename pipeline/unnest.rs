//! A physical optimizer rule that lets an `unnest` pass a batch through untouched when every
//! list in it holds exactly one element.
//!
//! Mappings add rows with `unnest(CASE WHEN … THEN make_array('charge', 'unused') ELSE
//! make_array('charge') END)`: nearly every source row stays one row, and a few (a commitment
//! fee with unused capacity) become two. DataFusion's `UnnestExec` gathers every column of
//! every batch through `take` whatever the lists hold, which the profile of a 1M-row AWS run
//! showed at 8% of its CPU, copying ~50 source columns to produce the same rows in the same
//! order. [`PassThroughUnnest`] checks each batch first: when no list is NULL and each holds
//! one element, the output is the input with each list column swapped for its values (an
//! `Arc` clone and a slice); any other batch goes through DataFusion's own unnest, so the
//! result is the same rows either way.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, OffsetSizeTrait};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// Wraps every [`UnnestExec`] that unnests list columns one level deep (and no structs) in a
/// [`PassThroughUnnest`].
#[derive(Debug, Default)]
pub struct OneElementPassThrough;

impl PhysicalOptimizerRule for OneElementPassThrough {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(u) = node.downcast_ref::<UnnestExec>() else {
                return Ok(Transformed::no(node));
            };
            let lists = u.list_column_indices();
            let mut columns: Vec<usize> = lists.iter().map(|l| l.index_in_input_schema).collect();
            columns.sort_unstable();
            columns.dedup();
            let eligible = !lists.is_empty()
                && lists.iter().all(|l| l.depth == 1)
                && columns.len() == lists.len()
                && u.struct_column_indices().is_empty()
                && u.schema().fields().len() == u.input().schema().fields().len();
            if !eligible {
                return Ok(Transformed::no(node));
            }
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(PassThroughUnnest {
                inner: Arc::new(u.clone()),
            });
            Ok(Transformed::yes(wrapped))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tally_one_element_unnest_pass_through"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An [`UnnestExec`] that passes batches whose lists each hold one element straight through.
#[derive(Debug)]
pub struct PassThroughUnnest {
    inner: Arc<UnnestExec>,
}

impl DisplayAs for PassThroughUnnest {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PassThroughUnnest")
    }
}

/// [`ExecutionPlan::name`] of the pass-through unnest.
pub const PASS_THROUGH_NAME: &str = "PassThroughUnnest";

impl ExecutionPlan for PassThroughUnnest {
    fn name(&self) -> &'static str {
        PASS_THROUGH_NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.inner.input()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().expect("one child");
        Ok(Arc::new(PassThroughUnnest {
            inner: Arc::new(same_unnest_over(&self.inner, input)?),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.inner.input().execute(partition, context.clone())?;
        let inner = self.inner.clone();
        let schema = inner.schema();
        let out = input
            .then(move |batch| {
                let (inner, context) = (inner.clone(), context.clone());
                async move {
                    let batch = batch?;
                    if batch.num_rows() == 0 {
                        return Ok(Vec::new()); // as DataFusion's unnest: no empty batches
                    }
                    match pass_through(&batch, &inner) {
                        Some(same) => Ok(vec![same]),
                        None => unnest_one(&inner, batch, context).await,
                    }
                }
            })
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

/// `batch` with each unnested list column replaced by its values, when every list is non-NULL
/// and holds one element (the unnest then maps row `i` to row `i`); `None` otherwise.
fn pass_through(batch: &RecordBatch, u: &UnnestExec) -> Option<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    for l in u.list_column_indices() {
        let col = &columns[l.index_in_input_schema];
        let values = match col.data_type() {
            DataType::List(_) => single_values(col.as_list::<i32>())?,
            DataType::LargeList(_) => single_values(col.as_list::<i64>())?,
            _ => return None,
        };
        columns[l.index_in_input_schema] = values;
    }
    RecordBatch::try_new(u.schema(), columns).ok()
}

/// The values of `list` when it has no NULL lists and each holds exactly one element.
fn single_values<O: OffsetSizeTrait>(list: &arrow::array::GenericListArray<O>) -> Option<ArrayRef> {
    if list.null_count() > 0 {
        return None;
    }
    let offsets = list.value_offsets();
    if !offsets
        .windows(2)
        .all(|w| w[1].as_usize() == w[0].as_usize() + 1)
    {
        return None;
    }
    Some(list.values().slice(offsets[0].as_usize(), list.len()))
}

/// DataFusion's own unnest of one batch (one that expands or drops rows).
async fn unnest_one(
    u: &UnnestExec,
    batch: RecordBatch,
    context: Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    let source = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        u.input().schema(),
        None,
    )?;
    let exec = same_unnest_over(u, source)?;
    datafusion::physical_plan::common::collect(exec.execute(0, context)?).await
}

/// `u`'s unnest (same columns, schema and options) over another input.
fn same_unnest_over(u: &UnnestExec, input: Arc<dyn ExecutionPlan>) -> Result<UnnestExec> {
    UnnestExec::new(
        input,
        u.list_column_indices().to_vec(),
        u.struct_column_indices().to_vec(),
        u.schema(),
        u.options().clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::session;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn rows(bs: &[RecordBatch]) -> Vec<String> {
        bs.iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |r| {
                    (0..b.num_columns())
                        .map(|c| {
                            arrow::util::display::array_value_to_string(b.column(c), r).unwrap()
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn one_element_batches_pass_through_and_the_rest_unnest_as_datafusion_does() {
        // Three batches: none expands, one row expands to two and one to none, none again.
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |from: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + 50)),
                    Arc::new(StringArray::from_iter(
                        (from..from + 50).map(|k| (k % 4 != 0).then(|| format!("v{k}"))),
                    )),
                ],
            )
            .unwrap()
        };
        let sql = "SELECT k, s, unnest(CASE WHEN k = 77 THEN make_array('charge', 'unused') \
                   WHEN k = 80 THEN make_array() ELSE make_array('charge') END) AS kind, \
                   k * 2 AS k2 FROM t";
        let batches = vec![batch(0), batch(50), batch(100)];
        let table = |ctx: &datafusion::prelude::SessionContext| {
            let mem =
                datafusion::datasource::MemTable::try_new(schema.clone(), vec![batches.clone()])
                    .unwrap();
            ctx.register_table("t", Arc::new(mem)).unwrap();
        };
        let ctx = session().unwrap();
        table(&ctx);
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert!(
            shown.contains("PassThroughUnnest"),
            "rule did not run:\n{shown}"
        );
        let got = rows(&df.collect().await.unwrap());
        let plain = datafusion::prelude::SessionContext::new();
        table(&plain);
        let want = rows(&plain.sql(sql).await.unwrap().collect().await.unwrap());
        assert_eq!(got.len(), 150, "{got:?}");
        assert_eq!(got, want);
        assert!(got.contains(&"77|v77|unused|154".to_string()), "{got:?}");
        assert!(!got.iter().any(|r| r.starts_with("80|")), "{got:?}");
    }
}
