//! A physical optimizer rule that evaluates each projection and filter expression on only
//! the columns it reads.
//!
//! DataFusion short-circuits `AND`/`OR` by filtering the *whole* input batch down to the rows
//! whose result still depends on the right-hand side, then evaluating the right-hand side on
//! that smaller batch. A FOCUS mapping reads 100+ source columns and the row rules run over
//! 70 output columns, so each such step copied every string column of the batch to evaluate
//! a predicate that reads two of them (the profile showed 14% of a run's CPU in
//! `filter_record_batch`). Wrapping each expression in [`Narrowed`] hands it a batch of just
//! its own columns (an `Arc` clone each), so the short-circuit filters those few.
//!
//! Before narrowing, the rule flattens the expression's CASEs ([`crate::flat_case`]): both
//! rewrite the same projection and filter expressions, so one pass over the plan does both.
//!
//! The rule runs after DataFusion's own rules: the wrapped expression's column indices refer
//! to the narrowed batch, which no later rewrite would know about.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, LambdaExpr, LambdaVariable, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// Rewrites every [`ProjectionExec`] expression and [`FilterExec`] predicate that reads fewer
/// columns than its input has into a [`Narrowed`] one. Register it last.
#[derive(Debug, Default)]
pub struct NarrowInputs;

impl PhysicalOptimizerRule for NarrowInputs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                let input = p.input().clone();
                let mut changed = false;
                let exprs: Vec<ProjectionExpr> = p
                    .expr()
                    .iter()
                    .map(|e| {
                        let expr = narrow(&e.expr, &input.schema())?;
                        changed |= !Arc::ptr_eq(&expr, &e.expr);
                        Ok(ProjectionExpr {
                            expr,
                            alias: e.alias.clone(),
                        })
                    })
                    .collect::<Result<_>>()?;
                if !changed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt: Arc<dyn ExecutionPlan> =
                    Arc::new(ProjectionExec::try_new(exprs, input)?);
                return Ok(Transformed::yes(rebuilt));
            }
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                let predicate = narrow(f.predicate(), &f.input().schema())?;
                if Arc::ptr_eq(&predicate, f.predicate()) {
                    return Ok(Transformed::no(node));
                }
                let rebuilt: Arc<dyn ExecutionPlan> = Arc::new(
                    FilterExecBuilder::from(f)
                        .with_predicate(predicate)
                        .build()?,
                );
                return Ok(Transformed::yes(rebuilt));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tally_narrow_inputs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` with its CASEs flattened ([`crate::flat_case`]) and wrapped to read only its own
/// columns, or without the wrapper when that gains nothing (a bare column or literal, an
/// expression that reads every column, or one with lambdas, whose variables index the batch
/// too).
fn narrow(expr: &Arc<dyn PhysicalExpr>, input: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    let input_width = input.fields().len();
    let expr = &crate::flat_case::flatten(expr, input)?;
    if expr.downcast_ref::<Column>().is_some() || expr.downcast_ref::<Literal>().is_some() {
        return Ok(expr.clone());
    }
    let mut used = BTreeSet::new();
    let mut lambdas = false;
    expr.apply(|e| {
        if let Some(c) = e.downcast_ref::<Column>() {
            used.insert(c.index());
        } else if e.downcast_ref::<LambdaExpr>().is_some()
            || e.downcast_ref::<LambdaVariable>().is_some()
        {
            lambdas = true;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if lambdas || used.is_empty() || used.len() >= input_width {
        return Ok(expr.clone());
    }
    let projection: Vec<usize> = used.into_iter().collect();
    let inner = expr
        .clone()
        .transform_up(|e| match e.downcast_ref::<Column>() {
            Some(c) => {
                let at = projection
                    .binary_search(&c.index())
                    .expect("every column was collected");
                Ok(Transformed::yes(
                    Arc::new(Column::new(c.name(), at)) as Arc<dyn PhysicalExpr>
                ))
            }
            None => Ok(Transformed::no(e)),
        })?
        .data;
    Ok(Arc::new(Narrowed { projection, inner }))
}

/// An expression evaluated on the columns `projection` picks from its input batch; `inner`'s
/// column indices refer to that narrowed batch.
#[derive(Debug)]
pub struct Narrowed {
    projection: Vec<usize>,
    inner: Arc<dyn PhysicalExpr>,
}

impl PartialEq for Narrowed {
    fn eq(&self, other: &Self) -> bool {
        self.projection == other.projection && self.inner.as_ref() == other.inner.as_ref()
    }
}

impl Eq for Narrowed {}

impl std::hash::Hash for Narrowed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.projection.hash(state);
        self.inner.as_ref().hash(state);
    }
}

impl Narrowed {
    fn schema(&self, input: &Schema) -> Result<Schema> {
        Ok(input.project(&self.projection)?)
    }
}

impl fmt::Display for Narrowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on columns {:?}", self.inner, self.projection)
    }
}

impl PhysicalExpr for Narrowed {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(&self.schema(input_schema)?)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(&self.schema(input_schema)?)
    }

    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(&self.schema(input_schema)?)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        self.inner.evaluate(&batch.project(&self.projection)?)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        // A leaf to the rest of DataFusion: `inner`'s column indices are not the input's.
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self)
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::session;
    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::Field;

    #[tokio::test]
    async fn narrowed_expressions_give_the_same_rows_as_the_wide_ones() {
        // 40 columns, a predicate over two of them whose left side is true on few rows, so
        // DataFusion takes its pre-selection path (the one that filtered every column).
        let n = 1000;
        let mut fields = Vec::new();
        let mut cols: Vec<Arc<dyn arrow::array::Array>> = Vec::new();
        for i in 0..40 {
            fields.push(Field::new(format!("c{i}"), DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from_iter((0..n).map(|r| {
                (r % 7 != 0).then(|| format!("{}", (r * (i + 1)) % 13))
            }))));
        }
        fields.push(Field::new("k", DataType::Int64, false));
        cols.push(Arc::new(Int64Array::from_iter_values(0..n as i64)));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        let ctx = session().unwrap();
        ctx.register_batch("t", batch).unwrap();
        let sql = "SELECT k, (k % 10 = 0 AND c3 = '6') OR (c5 IS NULL AND c7 <> '1') AS p, \
                   CASE WHEN c1 = '2' THEN c2 ELSE c9 END AS q FROM t WHERE k % 3 = 0 OR c11 = '4'";
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert!(
            shown.contains("on columns"),
            "the rule did not run:\n{shown}"
        );
        let got = df.collect().await.unwrap();
        // The same query on a plain DataFusion session (no tally rule) is the reference.
        let plain = datafusion::prelude::SessionContext::new();
        plain
            .register_batch(
                "t",
                ctx.table("t").await.unwrap().collect().await.unwrap()[0].clone(),
            )
            .unwrap();
        let want = plain.sql(sql).await.unwrap().collect().await.unwrap();
        let rows = |bs: &[RecordBatch]| -> Vec<String> {
            bs.iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |r| {
                        let k = b
                            .column(0)
                            .as_primitive::<arrow::datatypes::Int64Type>()
                            .value(r);
                        let p = b.column(1).as_boolean();
                        let q = b.column(2).as_string::<i32>();
                        format!(
                            "{k} {:?} {:?}",
                            p.is_valid(r).then(|| p.value(r)),
                            q.is_valid(r).then(|| q.value(r))
                        )
                    })
                })
                .collect()
        };
        let (got, want) = (rows(&got), rows(&want));
        assert!(got.len() > 300, "{}", got.len());
        assert_eq!(got, want);
    }
}
