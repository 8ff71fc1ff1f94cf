//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Decimal128Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::DataType;
use tally::job::Job;
use tally::manifest::Manifest;
use tally::run::{RunRequest, run};

/// The checkout.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `jobs/sample.toml` with its output moved into `out_dir` (sources still read `sample-data/`).
pub fn sample_job_text(out_dir: &Path) -> String {
    let text = std::fs::read_to_string(root().join("jobs/sample.toml")).unwrap();
    text.replace(
        "file://../sample-data",
        &format!("file://{}/sample-data", root().display()),
    )
    .replace(
        "file://../out/sample",
        &format!("file://{}", out_dir.display()),
    )
}

/// Writes a job file into `dir` and runs it through the library with these options.
pub async fn run_job_with(
    dir: &Path,
    text: &str,
    options: tally::run::RunOptions,
) -> tally::error::Result<Manifest> {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    let (job, bytes) = Job::load(&path)?;
    run(RunRequest {
        job,
        job_path: path.display().to_string(),
        job_bytes: bytes,
        options,
    })
    .await
}

/// [`run_job_with`], reading every file (`--full`).
pub async fn run_job_full(dir: &Path, text: &str) -> tally::error::Result<Manifest> {
    let options = tally::run::RunOptions {
        full: true,
        ..Default::default()
    };
    run_job_with(dir, text, options).await
}

/// [`run_job_with`], incremental (the default).
pub async fn run_job(dir: &Path, text: &str) -> tally::error::Result<Manifest> {
    run_job_with(dir, text, Default::default()).await
}

/// A one-source job over `source` (a path), output in `out`.
pub fn one_source_job(source: &Path, out: &Path, format: Option<&str>) -> String {
    let fmt = format
        .map(|f| format!("format = \"{f}\"\n"))
        .unwrap_or_default();
    format!(
        "[job]\nname = \"test\"\n[output]\nurl = \"file://{}\"\nfocus_versions = [\"1.4\", \"1.2\"]\n[[source]]\nname = \"s\"\nurl = \"file://{}\"\n{fmt}",
        out.display(),
        source.display()
    )
}

/// Runs SQL over the tables under `out`.
pub async fn query(out: &Path, sql: &str) -> Vec<RecordBatch> {
    let ctx = tally::query::session_for(&format!("file://{}", out.display()), None)
        .await
        .unwrap();
    tally::query::run_sql(&ctx, sql).await.unwrap()
}

/// One cell as text: decimals without trailing zeros, timestamps as RFC 3339, NULL as `null`.
pub fn cell(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return "null".into();
    }
    match a.data_type() {
        DataType::Decimal128(_, 18) => tally::decimal::format(
            a.as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap()
                .value(i),
        ),
        DataType::Timestamp(_, _) => tally::timestamp::format_micros(
            a.as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .value(i),
        ),
        _ => arrow::util::display::array_value_to_string(a, i).unwrap(),
    }
}

/// Rows as `a | b | c` lines.
pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), i))
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    out
}

/// The single value of a one-row, one-column result.
pub fn scalar(batches: &[RecordBatch]) -> String {
    let l = lines(batches);
    assert_eq!(l.len(), 1, "expected one row, got {l:?}");
    l[0].clone()
}

/// The `tally` binary built for these tests.
pub fn tally_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Asserts a `tally` process exited 0, showing its stderr when it did not.
#[track_caller]
pub fn assert_exit_0(o: &std::process::Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The run manifests written under an output root, sorted (by start time, then run id).
pub fn manifests(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(out.join("_tally/manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A Parquet file's column names and its number of rows.
pub fn parquet_columns_and_rows(file: &Path) -> (Vec<String>, usize) {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(file).unwrap(),
    )
    .unwrap();
    let names = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let rows = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    (names, rows)
}

/// The newest run manifest under an output root, as JSON.
pub fn last_manifest(out: &Path) -> serde_json::Value {
    let path = manifests(out).pop().expect("a manifest");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `tally query -t <out> --format csv <sql>` as a separate process: its CSV output (the
/// command must succeed).
pub fn query_csv(out: &Path, sql: &str) -> String {
    let o = tally_cmd()
        .args(["query", "-t", out.to_str().unwrap(), "--format", "csv", sql])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command `tally run --source <src> --output <out>`, to adjust before running.
pub fn one_off_cmd(src: &Path, out: &Path) -> std::process::Command {
    let mut cmd = tally_cmd();
    cmd.args([
        "run",
        "--source",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    cmd
}

/// `tally run --source <src> --output <out>` as a separate process.
pub fn run_one_off(src: &Path, out: &Path) -> std::process::Output {
    one_off_cmd(src, out).output().unwrap()
}

/// Every Parquet file below `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Copies `sql/` and `schemas/` (every file, recursively) to `dir`, for `TALLY_RESOURCES`.
pub fn copy_resources(dir: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let target = to.join(p.file_name().unwrap());
            if p.is_dir() {
                copy(&p, &target);
            } else {
                std::fs::copy(&p, &target).unwrap();
            }
        }
    }
    for sub in ["sql", "schemas"] {
        copy(&root().join(sub), &dir.join(sub));
    }
}
