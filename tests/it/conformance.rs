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

/// Runs one source through tally and both judges. `allowed` adds rule ids that fail because of
/// what this particular input lacks, each with its reason (printed), on top of the validator's
/// documented false positives in tests/validators/focus_validator_allowed.txt.
async fn check_format(source: &Path, expected_format: &str, allowed: &[(&str, &str)]) {
    check_job(
        &source.display().to_string(),
        |out| one_source_job(source, out, None),
        expected_format,
        allowed,
    )
    .await
}

/// [`check_format`] for a job of several sources (`job` builds its text for an output folder).
pub async fn check_job(
    label: &str,
    job: impl Fn(&Path) -> String,
    expected_format: &str,
    allowed: &[(&str, &str)],
) {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &job(&out)).await.unwrap();
    assert!(
        m.inputs.iter().all(|i| i.format == expected_format),
        "{:?}",
        m.inputs
    );
    assert!(m.totals.rows_written > 0);
    assert!(m.reconciliation.iter().all(|r| r.status == "match"));

    let v12 = dir.path().join("focus12.parquet");
    export(&out, "SELECT * FROM cost_and_usage_1_2", &v12);
    let mut args = vec![
        root()
            .join("tests/validators/focus_validator.py")
            .display()
            .to_string(),
        "--data-file".into(),
        v12.display().to_string(),
        "--allow-file".into(),
        root()
            .join("tests/validators/focus_validator_allowed.txt")
            .display()
            .to_string(),
    ];
    for (rule, why) in allowed {
        eprintln!("{}: allowing {rule}: {why}", label);
        args.push("--allow".into());
        args.push(rule.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = judge(&py, &args);
    assert!(
        report["pass"].as_u64().unwrap() > 300,
        "the validator really ran its rules: {report}"
    );
    eprintln!(
        "{}: focus-validator 1.2: {} pass, {} fail (all allowed), {} skipped",
        label, report["pass"], report["fail"], report["skipped"]
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
    assert_eq!(report["violations_total"], 0, "{report}");
    eprintln!(
        "{}: focus-toolkit 1.4: ok, levels {}",
        label, report["levels_passed"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur_legacy_csv_conforms() {
    let why = "this sample's month was not invoiced yet: AWS leaves bill/InvoiceId empty, and FOCUS says InvoiceId is \
               null until a charge is on an invoice, but the validator cannot tell and demands one";
    check_format(
        &root().join("sample-data/aws/cur1"),
        "aws_cur",
        &[("InvoiceId-C-005-C", why)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur_athena_parquet_conforms() {
    check_format(&root().join("sample-data/aws/cur-athena"), "aws_cur", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cur2_conforms() {
    check_format(&root().join("sample-data/aws/cur2"), "aws_cur", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_cost_report_conforms() {
    let why =
        "OCI cost reports carry no invoice id, so InvoiceId is null; the validator demands one";
    check_format(
        &root().join("sample-data/oci"),
        "oci_cost",
        &[("InvoiceId-C-005-C", why)],
    )
    .await;
}

/// FOCUS 1.2 and 1.3 exports shaped like AWS, Azure and GCP's (focus-data-toolkit, MIT),
/// upgraded to 1.4 and projected back to 1.2.
#[tokio::test(flavor = "multi_thread")]
async fn focus_native_exports_conform() {
    for p in ["aws", "azure", "gcp"] {
        for v in ["1_2", "1_3"] {
            let f = root().join(format!(
                "tests/data/focus_native/focus_{v}_cost_and_usage_{p}.csv"
            ));
            check_format(&f, "focus", &[]).await;
        }
    }
}

/// Providers' own FOCUS exports through the FOCUS-native path: Microsoft Cost Management's
/// FOCUS 1.0 export (invoice id in `x_InvoiceId`, Microsoft's `x_` columns) and OCI's FOCUS
/// report (custom `oci_` columns without the `x_` prefix, which are not written).
#[tokio::test(flavor = "multi_thread")]
async fn provider_focus_exports_conform() {
    check_format(
        &root().join("sample-data/focus/azure_cost_management_focus_1_0_export.csv"),
        "focus",
        &[],
    )
    .await;
    let why =
        "OCI's FOCUS report carries no invoice id, so InvoiceId is null; the validator demands one";
    check_format(
        &root().join("sample-data/focus/oci_focus_1_0_report.csv"),
        "focus",
        &[("InvoiceId-C-005-C", why)],
    )
    .await;
}
