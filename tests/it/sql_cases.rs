//! Readable SQL test cases: `tests/sql/<format>/*.case`, input rows → expected rows.
//!
//! A case file has sections, each starting with a `keyword:` line:
//!
//! ```text
//! # free text: what the case shows
//! format: aws_cur
//! params: cost_view = amortized             <- optional: the format's settings (`tally formats`)
//! input:
//! <CSV header>
//! <CSV rows ...>
//! expect: ChargeCategory, BilledCost        <- columns of cost_and_usage, rows in file order
//! Usage | 1.5
//! quarantine: x_SourceRow, RuleId           <- optional: columns of the quarantine table
//! 3 | ChargeCategory-allowed-values
//! folded: 1                                 <- optional: rows the mapping folded away
//! derived: 1                                <- optional: extra rows the mapping derived
//! ```
//!
//! Cells print as in `tally query`: decimals without trailing zeros, times as RFC 3339, `null`.

use std::path::{Path, PathBuf};

use crate::common::*;

#[derive(Default)]
struct Case {
    format: String,
    params: Vec<(String, String)>,
    input: Vec<String>,
    expect_cols: String,
    expect: Vec<String>,
    quarantine_cols: Option<String>,
    quarantine: Vec<String>,
    folded: Option<u64>,
    derived: Option<u64>,
}

fn parse(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut c = Case::default();
    let mut section = "";
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("format:") {
            c.format = v.trim().into();
        } else if let Some(v) = line.strip_prefix("params:") {
            for kv in v.split(',') {
                let (k, v) = kv.split_once('=').expect("params: name = value, ...");
                c.params.push((k.trim().into(), v.trim().into()));
            }
        } else if line == "input:" {
            section = "input";
        } else if let Some(v) = line.strip_prefix("expect:") {
            c.expect_cols = v.trim().into();
            section = "expect";
        } else if let Some(v) = line.strip_prefix("quarantine:") {
            c.quarantine_cols = Some(v.trim().into());
            section = "quarantine";
        } else if let Some(v) = line.strip_prefix("folded:") {
            c.folded = Some(v.trim().parse().unwrap());
        } else if let Some(v) = line.strip_prefix("derived:") {
            c.derived = Some(v.trim().parse().unwrap());
        } else {
            match section {
                "input" => c.input.push(line.into()),
                "expect" => c.expect.push(line.trim().into()),
                "quarantine" => c.quarantine.push(line.trim().into()),
                _ => panic!("{}: line outside a section: {line}", path.display()),
            }
        }
    }
    c
}

fn cases() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root().join("tests/sql")).unwrap() {
        let dir = dir.unwrap().path();
        // tests/sql/stages holds the stages' cases (tests/it/stage_cases.rs).
        if dir.ends_with("stages") {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "case") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sql_case_gives_its_expected_rows() {
    let all = cases();
    assert!(all.len() >= 5, "cases found: {all:?}");
    let mut failures = Vec::new();
    for path in all {
        let case = parse(&path);
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("input.csv");
        std::fs::write(&src, case.input.join("\n") + "\n").unwrap();
        let out = dir.path().join("out");
        let mut job = one_source_job(&src, &out, Some(&case.format));
        if !case.params.is_empty() {
            let kv: Vec<String> = case
                .params
                .iter()
                .map(|(k, v)| format!("{k} = \"{v}\""))
                .collect();
            job.push_str(&format!("params = {{ {} }}\n", kv.join(", ")));
        }
        let m = match run_job(dir.path(), &job).await {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: run failed: {e}", path.display()));
                continue;
            }
        };
        let got = if m.totals.rows_written > 0 {
            lines(
                &query(
                    &out,
                    &format!(
                        // A derived row (e.g. Unused) shares its fee row's record number.
                        "SELECT {} FROM cost_and_usage ORDER BY x_SourceRow, ChargeCategory",
                        case.expect_cols
                    ),
                )
                .await,
            )
        } else {
            vec![]
        };
        if got != case.expect {
            failures.push(format!(
                "{}:\n  expected {:#?}\n  got      {:#?}",
                path.display(),
                case.expect,
                got
            ));
        }
        let q_cols = case
            .quarantine_cols
            .clone()
            .unwrap_or_else(|| "x_SourceRow, RuleId".into());
        let got_q = if m.totals.rows_quarantined > 0 {
            lines(
                &query(
                    &out,
                    &format!("SELECT {q_cols} FROM quarantine ORDER BY x_SourceRow, RuleId"),
                )
                .await,
            )
        } else {
            vec![]
        };
        if got_q != case.quarantine {
            failures.push(format!(
                "{}: quarantine\n  expected {:#?}\n  got      {:#?}",
                path.display(),
                case.quarantine,
                got_q
            ));
        }
        if m.totals.rows_folded != case.folded.unwrap_or(0) {
            failures.push(format!(
                "{}: folded {} rows, expected {:?}",
                path.display(),
                m.totals.rows_folded,
                case.folded
            ));
        }
        if m.totals.rows_derived != case.derived.unwrap_or(0) {
            failures.push(format!(
                "{}: derived {} rows, expected {:?}",
                path.display(),
                m.totals.rows_derived,
                case.derived
            ));
        }
        // (a reconciliation mismatch fails run_job itself, above)
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
