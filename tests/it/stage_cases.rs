//! Readable SQL test cases for the stages: `tests/sql/stages/*.case`, tables in → rows out.
//!
//! ```text
//! # free text: what the case shows
//! stage: allocated_costs
//! table cost_and_usage:                 <- CSV of some cost_and_usage columns; the rest are NULL
//! x_SourceRow,BillingPeriodStart,EffectiveCost,Tags
//! 1,2026-05-01T00:00:00Z,10,"{""CostCenter"":""A""}"
//! input allocation_rules:               <- CSV, checked against schemas/inputs/<name>.psv
//! Rule,Method,MatchColumn,MatchValue,Target,Percent,Metric
//! by-cc,tag,,CostCenter,,,
//! expect: Target, AllocatedEffectiveCost  <- rows in the stage's own order
//! A | 10
//! ```
//!
//! A stage that reads another stage's table (`allocated_costs`, `chargeback_lines`) gets it as a
//! run does: the stages that write it run first, on the case's tables and inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Schema};

use crate::common::*;

#[derive(Default)]
struct Case {
    stage: String,
    tables: Vec<(String, Vec<String>)>,
    inputs: Vec<(String, Vec<String>)>,
    expect_cols: String,
    expect: Vec<String>,
}

fn parse(path: &Path) -> Case {
    let mut c = Case::default();
    let mut section = String::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("stage:") {
            c.stage = v.trim().into();
        } else if let Some(v) = line
            .strip_prefix("table ")
            .and_then(|v| v.strip_suffix(':'))
        {
            c.tables.push((v.trim().into(), vec![]));
            section = "table".into();
        } else if let Some(v) = line
            .strip_prefix("input ")
            .and_then(|v| v.strip_suffix(':'))
        {
            c.inputs.push((v.trim().into(), vec![]));
            section = "input".into();
        } else if let Some(v) = line.strip_prefix("expect:") {
            c.expect_cols = v.trim().into();
            section = "expect".into();
        } else {
            match section.as_str() {
                "table" => c.tables.last_mut().unwrap().1.push(line.into()),
                "input" => c.inputs.last_mut().unwrap().1.push(line.into()),
                "expect" => c.expect.push(line.trim().into()),
                _ => panic!("{}: line outside a section: {line}", path.display()),
            }
        }
    }
    c
}

/// A cost_and_usage batch with the given columns (typed by the FOCUS schema), the others NULL.
fn cost_table(csv: &[String]) -> RecordBatch {
    let full = tally::schema::FocusSchema::load().unwrap().arrow();
    let text = csv.join("\n");
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in full.fields() {
        fields.push(Field::new(f.name(), f.data_type().clone(), true));
        let Some(i) = header.iter().position(|h| h == f.name()) else {
            cols.push(new_null_array(f.data_type(), rows.len()));
            continue;
        };
        let cell = |r: &csv::StringRecord| Some(r[i].to_string()).filter(|v| !v.is_empty());
        let col: ArrayRef = match f.data_type() {
            DataType::Decimal128(p, s) => {
                let mut b = Decimal128Builder::new();
                for r in &rows {
                    b.append_option(cell(r).map(|v| tally::decimal::parse(&v).unwrap()));
                }
                Arc::new(b.finish().with_precision_and_scale(*p, *s).unwrap())
            }
            DataType::Timestamp(_, tz) => {
                let mut b = TimestampMicrosecondBuilder::new();
                for r in &rows {
                    b.append_option(cell(r).map(|v| tally::timestamp::parse_micros(&v).unwrap()));
                }
                Arc::new(b.finish().with_timezone_opt(tz.clone()))
            }
            DataType::Int64 => {
                let mut b = Int64Builder::new();
                for r in &rows {
                    b.append_option(cell(r).map(|v| v.parse().unwrap()));
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for r in &rows {
                    b.append_option(cell(r));
                }
                Arc::new(b.finish())
            }
        };
        cols.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// The stages that write what `stage` reads (other than `cost_and_usage`), and theirs, each
/// before the stages that read it.
fn upstream_of<'a>(
    stage: &tally::stages::Stage,
    stages: &'a [tally::stages::Stage],
) -> Vec<&'a tally::stages::Stage> {
    let mut order: Vec<&tally::stages::Stage> = Vec::new();
    for read in stage.reads.iter().filter(|r| *r != "cost_and_usage") {
        let writer = stages
            .iter()
            .find(|s| &s.writes == read)
            .unwrap_or_else(|| panic!("no stage writes {read}"));
        for s in upstream_of(writer, stages).into_iter().chain([writer]) {
            if !order.iter().any(|o| o.name == s.name) {
                order.push(s);
            }
        }
    }
    order
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/sql/stages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    v.sort();
    v
}

/// A session with a case's tables and inputs, and the rows of the stages upstream of its stage.
async fn case_session(
    path: &Path,
    case: &Case,
    stage: &tally::stages::Stage,
    stages: &[tally::stages::Stage],
) -> datafusion::prelude::SessionContext {
    let ctx = tally::normalize::session().unwrap();
    for (name, csv) in &case.tables {
        assert_eq!(
            name,
            "cost_and_usage",
            "{}: only cost_and_usage tables",
            path.display()
        );
        ctx.register_batch(name, cost_table(csv)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, csv) in &case.inputs {
        let f = dir.path().join(format!("{name}.csv"));
        std::fs::write(&f, csv.join("\n") + "\n").unwrap();
        let loaded = tally::inputs::load(name, &format!("file://{}", f.display()))
            .await
            .unwrap();
        ctx.register_batch(name, loaded.batch).unwrap();
    }
    let upstream = upstream_of(stage, stages);
    for name in upstream
        .iter()
        .chain([&stage])
        .flat_map(|s| &s.optional_inputs)
    {
        if !ctx.table_exist(name.as_str()).unwrap() {
            ctx.register_batch(name, tally::inputs::empty(name).unwrap())
                .unwrap();
        }
    }
    for before in upstream {
        let (schema, batches) = tally::stages::run_sql(before, &ctx)
            .await
            .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), before.name));
        let table = arrow::compute::concat_batches(&schema, &batches).unwrap();
        ctx.register_batch(&before.writes, table).unwrap();
    }
    ctx
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stage_case_gives_its_expected_rows() {
    let all = cases();
    assert!(!all.is_empty());
    let stages = tally::stages::all().unwrap();
    let mut failures = Vec::new();
    for path in all {
        let case = parse(&path);
        let stage = stages
            .iter()
            .find(|s| s.name == case.stage)
            .unwrap_or_else(|| panic!("{}: no stage {}", path.display(), case.stage));
        let ctx = case_session(&path, &case, stage, &stages).await;
        let (_, batches) = match tally::stages::run_sql(stage, &ctx).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let ctx2 = tally::normalize::session().unwrap();
        let table = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        ctx2.register_batch("result", table).unwrap();
        let got = lines(
            &ctx2
                .sql(&format!("SELECT {} FROM result", case.expect_cols))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
        );
        if got != case.expect {
            failures.push(format!(
                "{}:\n  expected {:#?}\n  got      {got:#?}",
                path.display(),
                case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// No stage's plan has a window over whole partitions (`WindowAggExec`, e.g. `sum(x) OVER
/// (PARTITION BY k)`): it holds all of its input in memory, outside the stage's memory pool,
/// where a running window (`BoundedWindowAggExec`) holds one partition at a time. The allocation
/// of ~2M shared charges held 9.5 GB that way.
#[tokio::test(flavor = "multi_thread")]
async fn no_stage_holds_its_whole_input_in_a_window() {
    let stages = tally::stages::all().unwrap();
    let mut planned = std::collections::BTreeSet::new();
    for path in cases() {
        let case = parse(&path);
        if !planned.insert(case.stage.clone()) {
            continue;
        }
        let stage = stages.iter().find(|s| s.name == case.stage).unwrap();
        let ctx = case_session(&path, &case, stage, &stages).await;
        let plan = ctx
            .sql(&stage.sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let whole: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("WindowAggExec"))
            .collect();
        assert!(whole.is_empty(), "{}: {whole:#?}", stage.sql_path);
    }
    assert_eq!(planned.len(), stages.len(), "a case for every stage");
}
