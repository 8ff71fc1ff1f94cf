//! Conformance by outside judges: the official focus-validator 2.2.1 on the FOCUS 1.2 projection
//! of every provider format, and focus-toolkit 0.14.1 on the FOCUS 1.4 table.
//!
//! Both are Python tools installed by `.ci/install-validators.sh` into
//! `$TALLY_VALIDATORS_DIR/venv` (default `~/.cache/tally-validators/venv`). When they are not
//! installed these tests fail and say how to install them; `TALLY_SKIP_CONFORMANCE=1` skips them
//! explicitly (printed, never silent).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn python() -> Option<PathBuf> {
    if std::env::var_os("TALLY_SKIP_CONFORMANCE").is_some() {
        eprintln!("TALLY_SKIP_CONFORMANCE is set: conformance tests skipped");
        return None;
    }
    let dir = std::env::var_os("TALLY_VALIDATORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tally-validators")
        });
    let py = dir.join("venv/bin/python");
    assert!(
        py.exists(),
        "{} not found: run .ci/install-validators.sh (or set TALLY_SKIP_CONFORMANCE=1)",
        py.display()
    );
    Some(py)
}

/// Exports a table to one Parquet file with `tally query`.
fn export(out: &Path, sql: &str, file: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "query",
            "-t",
            out.to_str().unwrap(),
            "--format",
            "parquet",
            "--out",
            file.to_str().unwrap(),
            sql,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn judge(py: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(py).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "judge printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(
        o.status.code(),
        Some(0),
        "unexpected failures: {}",
        serde_json::to_string_pretty(&v).unwrap()
    );
    v
}

/// Runs one sample source through tally and both judges.
async fn check_format(source: &str, expected_format: &str) {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = run_job(
        dir.path(),
        &one_source_job(&root().join(source), &out, None),
    )
    .await
    .unwrap();
    assert!(
        m.inputs.iter().all(|i| i.format == expected_format),
        "{:?}",
        m.inputs
    );
    assert!(m.totals.rows_written > 0);

    let v12 = dir.path().join("focus12.parquet");
    export(&out, "SELECT * FROM cost_and_usage_1_2", &v12);
    let allow = root().join("tests/validators/focus_validator_allowed.txt");
    let report = judge(
        &py,
        &[
            root()
                .join("tests/validators/focus_validator.py")
                .to_str()
                .unwrap(),
            "--data-file",
            v12.to_str().unwrap(),
            "--allow-file",
            allow.to_str().unwrap(),
        ],
    );
    assert!(
        report["pass"].as_u64().unwrap() > 300,
        "the validator really ran its rules: {report}"
    );
    eprintln!(
        "{source}: focus-validator 1.2: {} pass, {} fail (all allowed), {} skipped",
        report["pass"], report["fail"], report["skipped"]
    );

    let v14 = dir.path().join("focus14.parquet");
    export(&out, "SELECT * FROM cost_and_usage", &v14);
    let report = judge(
        &py,
        &[
            root()
                .join("tests/validators/focus_toolkit.py")
                .to_str()
                .unwrap(),
            v14.to_str().unwrap(),
        ],
    );
    eprintln!("{source}: focus-toolkit 1.4: {report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur_legacy_csv_conforms() {
    check_format("sample-data/aws/cur1", "aws_cur").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur_athena_parquet_conforms() {
    check_format("sample-data/aws/cur-athena", "aws_cur").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur2_conforms() {
    check_format("sample-data/aws/cur2", "aws_cur").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn focus_native_exports_conform() {
    check_format("sample-data/focus", "focus").await;
}
