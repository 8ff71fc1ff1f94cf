//! CASE expressions whose branches are cheap and cannot fail, evaluated as one selection over
//! the whole batch.
//!
//! DataFusion evaluates `CASE WHEN p1 THEN v1 WHEN p2 THEN v2 … ELSE e END` branch by branch:
//! after a WHEN that matches part of the rows it copies the matched rows, and again the
//! unmatched ones, of every column the CASE reads into new batches, evaluates the THEN on the
//! matched copy and merges the partial results at the end. That is right when a branch can
//! fail or is costly (a UDF, a cast, decimal arithmetic that can overflow must see only its
//! own rows), but most CASEs of a FOCUS mapping pick a column or a literal under comparisons,
//! and `coalesce(a, b)` is planned as one too: there the copies are the work (18% of a 1M-row
//! CUR run's CPU was under `CaseExpr::evaluate`, most of it filtering).
//!
//! [`FlatCase`] takes a CASE whose WHENs, THENs and ELSE are all built from columns, literals,
//! comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `LIKE`, `IN (…)` and such flat CASEs. It
//! evaluates each WHEN on the whole batch and keeps, per row, the first branch that matched
//! (a NULL predicate does not match, as in SQL); it then evaluates only the THENs that won a
//! row, on the whole batch, and builds the result in one pass (`zip` for two sources,
//! `interleave` for more). The result is the one CASE defines, row for row.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Datum, new_empty_array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::interleave;
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
};

/// Rewrites every qualifying [`CaseExpr`] in `expr` (innermost first) into a [`FlatCase`];
/// `schema` is the schema of the batches `expr` is evaluated on.
pub fn flatten(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    expr.clone()
        .transform_up(|e| {
            let Some(case) = e.downcast_ref::<CaseExpr>() else {
                return Ok(Transformed::no(e));
            };
            Ok(match FlatCase::try_new(case, schema)? {
                Some(flat) => Transformed::yes(Arc::new(flat) as Arc<dyn PhysicalExpr>),
                None => Transformed::no(e),
            })
        })
        .map(|t| t.data)
}

/// Whether evaluating `e` on any row of a well-typed batch cannot fail (and costs about a
/// comparison per row): the test for evaluating it on rows the CASE would not give it.
fn infallible(e: &Arc<dyn PhysicalExpr>) -> bool {
    if e.is::<Column>() || e.is::<Literal>() || e.is::<FlatCase>() {
        return true;
    }
    // A LIKE pattern taken from a column could be malformed on rows the CASE never gives it.
    let shape_ok = if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        use Operator::*;
        match b.op() {
            Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom => {
                true
            }
            LikeMatch | ILikeMatch | NotLikeMatch | NotILikeMatch => b.right().is::<Literal>(),
            _ => false,
        }
    } else if let Some(l) = e.downcast_ref::<LikeExpr>() {
        l.pattern().is::<Literal>()
    } else {
        // A CASE DataFusion keeps (a literal lookup, one WHEN choosing a column) cannot fail
        // when none of its parts can.
        e.is::<IsNullExpr>()
            || e.is::<IsNotNullExpr>()
            || e.is::<NotExpr>()
            || e.is::<InListExpr>()
            || e.is::<CaseExpr>()
    };
    shape_ok && e.children().into_iter().all(infallible)
}

/// A CASE evaluated as one selection over the batch; see the module docs.
#[derive(Debug)]
pub struct FlatCase {
    /// `CASE base WHEN literal …`: compared with `=` once per branch.
    base: Option<Arc<dyn PhysicalExpr>>,
    branches: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    else_expr: Option<Arc<dyn PhysicalExpr>>,
    data_type: DataType,
    nullable: bool,
}

impl FlatCase {
    /// `case` as a [`FlatCase`], or `None` when a part of it could fail, when DataFusion's
    /// own evaluation is already a single pass (a literal lookup, one WHEN choosing a column
    /// or NULL, one WHEN choosing between literals), or when a branch's type differs from the
    /// CASE's (DataFusion casts those).
    pub fn try_new(case: &CaseExpr, schema: &Schema) -> Result<Option<FlatCase>> {
        let branches = case.when_then_expr();
        let literal = |e: &Arc<dyn PhysicalExpr>| e.is::<Literal>();
        let single_pass = match case.expr() {
            Some(_) => {
                branches.iter().all(|(_, t)| literal(t)) && case.else_expr().is_none_or(literal)
            }
            None => {
                branches.len() == 1
                    && ((case.else_expr().is_none()
                        && (branches[0].1.is::<Column>() || literal(&branches[0].1)))
                        || (literal(&branches[0].1) && case.else_expr().is_some_and(literal)))
            }
        };
        if single_pass || branches.is_empty() {
            return Ok(None);
        }
        let whens_ok = match case.expr() {
            Some(base) => infallible(base) && branches.iter().all(|(w, _)| literal(w)),
            None => branches.iter().all(|(w, _)| infallible(w)),
        };
        if !whens_ok
            || !branches.iter().all(|(_, t)| infallible(t))
            || !case.else_expr().is_none_or(infallible)
        {
            return Ok(None);
        }
        let data_type = case.data_type(schema)?;
        for value in branches.iter().map(|(_, t)| t).chain(case.else_expr()) {
            if value.data_type(schema)? != data_type {
                return Ok(None);
            }
        }
        if let Some(base) = case.expr() {
            let base_type = base.data_type(schema)?;
            for (w, _) in branches {
                if w.data_type(schema)? != base_type {
                    return Ok(None);
                }
            }
        }
        Ok(Some(FlatCase {
            base: case.expr().cloned(),
            branches: branches.to_vec(),
            else_expr: case.else_expr().cloned(),
            nullable: case.nullable(schema)?,
            data_type,
        }))
    }

    /// The rows (of `n`) where branch `when` holds.
    fn matches(
        &self,
        when: &Arc<dyn PhysicalExpr>,
        base: Option<&ArrayRef>,
        batch: &RecordBatch,
        n: usize,
    ) -> Result<BooleanBuffer> {
        let value = when.evaluate(batch)?;
        let array: BooleanArray = match (base, value) {
            (Some(base), ColumnarValue::Scalar(s)) => eq(base, &s.to_scalar()?)?,
            (Some(base), ColumnarValue::Array(a)) => eq(base, &a)?,
            (None, ColumnarValue::Array(a)) => a.as_boolean().clone(),
            (None, ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))) => {
                return Ok(BooleanBuffer::new_set(n));
            }
            (None, ColumnarValue::Scalar(_)) => return Ok(BooleanBuffer::new_unset(n)),
        };
        // NULL does not match.
        Ok(match array.nulls() {
            Some(valid) => array.values() & valid.inner(),
            None => array.values().clone(),
        })
    }
}

/// A branch's value for the batch and the rows that take it.
struct Source {
    value: ColumnarValue,
    rows: BooleanBuffer,
}

impl PhysicalExpr for FlatCase {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(self.nullable)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(ColumnarValue::Array(new_empty_array(&self.data_type)));
        }
        let base = match &self.base {
            Some(b) => Some(b.evaluate(batch)?.into_array(n)?),
            None => None,
        };
        let mut open = BooleanBuffer::new_set(n);
        let mut left = n;
        let mut sources: Vec<Source> = Vec::new();
        for (when, then) in &self.branches {
            if left == 0 {
                break;
            }
            let hit = &self.matches(when, base.as_ref(), batch, n)? & &open;
            let taken = hit.count_set_bits();
            if taken == 0 {
                continue;
            }
            open = &open & &!&hit;
            left -= taken;
            sources.push(Source {
                value: then.evaluate(batch)?,
                rows: hit,
            });
        }
        if left > 0 {
            let value = match &self.else_expr {
                Some(e) => e.evaluate(batch)?,
                None => ColumnarValue::Scalar(ScalarValue::try_from(&self.data_type)?),
            };
            sources.push(Source { value, rows: open });
        }
        combine(sources, n)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        let mut all: Vec<&Arc<dyn PhysicalExpr>> = self.base.iter().collect();
        for (w, t) in &self.branches {
            all.push(w);
            all.push(t);
        }
        all.extend(self.else_expr.iter());
        all
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let mut it = children.into_iter();
        let mut next = || it.next().expect("one child per part");
        let base = self.base.as_ref().map(|_| next());
        let branches = self.branches.iter().map(|_| (next(), next())).collect();
        let else_expr = self.else_expr.as_ref().map(|_| next());
        Ok(Arc::new(FlatCase {
            base,
            branches,
            else_expr,
            data_type: self.data_type.clone(),
            nullable: self.nullable,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The result: each row from the source that took it (`sources` partition the rows).
fn combine(mut sources: Vec<Source>, n: usize) -> Result<ColumnarValue> {
    if sources.len() == 1 {
        return Ok(sources.pop().expect("one").value);
    }
    let datum = |v: &ColumnarValue| -> Result<Box<dyn Datum>> {
        Ok(match v {
            ColumnarValue::Array(a) => Box::new(a.clone()),
            ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
        })
    };
    if sources.len() == 2 {
        let mask = BooleanArray::new(sources[0].rows.clone(), None);
        let (a, b) = (datum(&sources[0].value)?, datum(&sources[1].value)?);
        return Ok(ColumnarValue::Array(zip(&mask, a.as_ref(), b.as_ref())?));
    }
    // Per row, (source that took it, row in that source); a scalar source is its row 0.
    let at = |s: usize, r: usize| match sources[s].value {
        ColumnarValue::Scalar(_) => (s, 0),
        ColumnarValue::Array(_) => (s, r),
    };
    let mut indices: Vec<(usize, usize)> = (0..n).map(|r| at(0, r)).collect();
    for (s, source) in sources.iter().enumerate().skip(1) {
        for r in source.rows.set_indices() {
            indices[r] = at(s, r);
        }
    }
    let arrays: Vec<ArrayRef> = sources
        .iter()
        .map(|s| s.value.to_array(1))
        .collect::<Result<_>>()?;
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(ColumnarValue::Array(interleave(&refs, &indices)?))
}

impl fmt::Display for FlatCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FLAT CASE ")?;
        if let Some(b) = &self.base {
            write!(f, "{b} ")?;
        }
        for (w, t) in &self.branches {
            write!(f, "WHEN {w} THEN {t} ")?;
        }
        if let Some(e) = &self.else_expr {
            write!(f, "ELSE {e} ")?;
        }
        write!(f, "END")
    }
}

impl PartialEq for FlatCase {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Arc<dyn PhysicalExpr>, b: &Arc<dyn PhysicalExpr>| a.as_ref() == b.as_ref();
        let same_opt =
            |a: &Option<Arc<dyn PhysicalExpr>>, b: &Option<Arc<dyn PhysicalExpr>>| match (a, b) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            };
        same_opt(&self.base, &other.base)
            && same_opt(&self.else_expr, &other.else_expr)
            && self.branches.len() == other.branches.len()
            && self
                .branches
                .iter()
                .zip(&other.branches)
                .all(|((w1, t1), (w2, t2))| same(w1, w2) && same(t1, t2))
            && self.data_type == other.data_type
    }
}

impl Eq for FlatCase {}

impl std::hash::Hash for FlatCase {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for c in self.children() {
            c.as_ref().hash(state);
        }
        self.data_type.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use crate::normalize::session;
    use arrow::array::{Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::array_value_to_string;
    use std::sync::Arc;

    /// 2,000 rows of a small vocabulary with NULLs, so every branch matches part of the rows.
    fn table() -> RecordBatch {
        let n = 2000usize;
        let words = ["RI", "SP", "Usage", "Tax", "i-1", "vol-9", "", "x%y"];
        let text = |seed: usize| -> StringArray {
            StringArray::from_iter((0..n).map(|r| {
                let h = (r * 2654435761 + seed * 40503) % 1009;
                (!h.is_multiple_of(5)).then(|| words[h % words.len()].to_string())
            }))
        };
        let money = Decimal128Array::from_iter((0..n).map(|r| {
            (r % 4 != 1).then(|| (r as i128 * 1_234_567_890_123) - 7_000_000_000_000_000)
        }))
        .with_precision_and_scale(38, 18)
        .unwrap();
        let money2 =
            Decimal128Array::from_iter((0..n).map(|r| (!r.is_multiple_of(3)).then_some(r as i128)))
                .with_precision_and_scale(38, 18)
                .unwrap();
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Utf8, true),
            Field::new("m", DataType::Decimal128(38, 18), true),
            Field::new("m2", DataType::Decimal128(38, 18), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(text(1)),
                Arc::new(text(2)),
                Arc::new(text(3)),
                Arc::new(money),
                Arc::new(money2),
            ],
        )
        .unwrap()
    }

    const CASES: &[&str] = &[
        "CASE WHEN a = 'RI' THEN b WHEN a = 'SP' OR c IS NULL THEN c WHEN b LIKE 'i-%' THEN 'inst' ELSE a END",
        "CASE WHEN a = 'RI' THEN b WHEN c = 'Tax' THEN NULL WHEN b IN ('Usage', 'SP') THEN c END",
        "coalesce(a, b, c)",
        "coalesce(m, m2)",
        "CASE WHEN a IS NULL THEN m WHEN b = 'Tax' THEN CAST(0 AS DECIMAL(38, 18)) ELSE coalesce(m2, m) END",
        "CASE a WHEN 'RI' THEN b WHEN 'SP' THEN c WHEN 'Tax' THEN 'tax' END",
        "CASE a WHEN 'RI' THEN b ELSE c END",
        "CASE WHEN k < 5000 THEN a ELSE b END",
        "CASE WHEN k < 0 THEN a WHEN k < -1 THEN b ELSE c END",
        "CASE WHEN NOT (a = 'Usage') AND b IS NOT NULL THEN CASE WHEN c LIKE '%y' THEN c ELSE b END ELSE 'none' END",
        "CASE WHEN a = 'x%y' THEN 1 WHEN a IS DISTINCT FROM b THEN k ELSE 0 END",
        // A literal lookup (DataFusion's own) inside a flat CASE.
        "CASE WHEN a = 'RI' THEN CASE b WHEN 'SP' THEN 'x' ELSE 'y' END WHEN c LIKE 'i-%' THEN 'inst' ELSE coalesce(b, c) END",
        // Arithmetic can fail, and so can a LIKE whose pattern is a column: DataFusion's CASE.
        "CASE WHEN a = 'RI' THEN m + m2 ELSE m END",
        "CASE WHEN a = 'RI' THEN b WHEN c LIKE b THEN c ELSE a END",
    ];

    fn render(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |r| {
                    (0..b.num_columns())
                        .map(|c| {
                            let col = b.column(c);
                            if col.is_null(r) {
                                "NULL".to_string()
                            } else {
                                format!("{:?}", array_value_to_string(col, r).unwrap())
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn flat_cases_give_datafusions_results_row_for_row() {
        let batch = table();
        // Batches of 300 rows, some where one branch takes every row.
        let slices: Vec<RecordBatch> = (0..batch.num_rows())
            .step_by(300)
            .map(|o| batch.slice(o, 300.min(batch.num_rows() - o)))
            .collect();
        let tally = session().unwrap();
        let plain = datafusion::prelude::SessionContext::new();
        for ctx in [&tally, &plain] {
            let mem =
                datafusion::datasource::MemTable::try_new(batch.schema(), vec![slices.clone()])
                    .unwrap();
            ctx.register_table("t", Arc::new(mem)).unwrap();
        }
        let mut flattened = 0;
        for case in CASES {
            let sql = format!("SELECT k, {case} AS v FROM t");
            let df = tally.sql(&sql).await.unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string();
            let flat = shown.contains("FLAT CASE");
            assert_eq!(
                flat,
                !case.contains("m + m2") && !case.contains("LIKE b"),
                "{case} flattened: {flat}\n{shown}"
            );
            if case.contains("CASE b WHEN") {
                // The outer CASE itself, not only the coalesce inside it.
                assert!(shown.contains("FLAT CASE WHEN a@"), "{shown}");
            }
            flattened += flat as usize;
            let got = render(&df.collect().await.unwrap());
            let want = render(&plain.sql(&sql).await.unwrap().collect().await.unwrap());
            assert_eq!(got.len(), 2000);
            assert_eq!(got, want, "{case}");
        }
        assert_eq!(flattened, CASES.len() - 2);
    }
}
