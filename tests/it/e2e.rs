//! The sample job end to end: rows, lineage, reconciliation to the digit, exit codes.

use crate::common::*;

/// Σ of one decimal column of a CSV, computed here with arrow's CSV reader, not the pipeline.
fn csv_column_sum(path: &std::path::Path, column: &str) -> (i128, usize) {
    use arrow::array::{Array, StringArray};
    let text = std::fs::read_to_string(path).unwrap();
    let header: Vec<String> = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        header
            .iter()
            .map(|h| arrow::datatypes::Field::new(h, arrow::datatypes::DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(std::io::Cursor::new(text))
        .unwrap();
    let (mut sum, mut rows) = (0i128, 0usize);
    for b in reader {
        let b = b.unwrap();
        let c = b
            .column_by_name(column)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for i in 0..c.len() {
            sum += tally::decimal::parse(c.value(i)).unwrap();
            rows += 1;
        }
    }
    (sum, rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_job_runs_and_every_cent_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &sample_job_text(&out)).await.unwrap();
    assert_eq!(m.status, "ok");
    assert!(!m.reconciliation.is_empty());
    for r in &m.reconciliation {
        assert_eq!(r.status, "match", "{r:?}");
        assert_eq!(r.difference, "0");
    }
    assert_eq!(
        m.totals.rows_read + m.totals.rows_derived,
        m.totals.rows_written + m.totals.rows_quarantined + m.totals.rows_folded
    );
    assert!(m.tables["cost_and_usage"].version.is_some());
    assert!(m.tables.contains_key("cost_and_usage_1_2"));
    for used in [
        "sql/normalize/aws_cur.sql",
        "sql/normalize/focus.sql",
        "sql/projections/focus_1_2.sql",
        "schemas/focus_1_4_cost_and_usage.psv",
        "schemas/focus_1_4_row_rules.toml",
        "schemas/tally_columns.psv",
    ] {
        let h = m
            .resources
            .get(used)
            .unwrap_or_else(|| panic!("{used} is not hashed in the manifest"));
        let bytes = std::fs::read(root().join(used)).unwrap();
        assert_eq!(h, &tally::resources::sha256_hex(&bytes), "{used}");
    }

    // AWS legacy CUR: the source's own Σ lineItem/UnblendedCost, computed here from the CSV,
    // equals Σ BilledCost in the table plus Σ Amount in quarantine, to the last digit.
    let csv = root().join("sample-data/aws/cur1/cur1_sample.csv");
    let (source_sum, source_rows) = csv_column_sum(&csv, "lineItem/UnblendedCost");
    assert_eq!(source_rows, 1281);
    let file_filter = "x_SourceFile LIKE '%/cur1_sample.csv'";
    let written = scalar(
        &query(
            &out,
            &format!("SELECT sum(BilledCost) FROM cost_and_usage WHERE {file_filter}"),
        )
        .await,
    );
    let quarantined = query(
        &out,
        &format!("SELECT sum(Amount) FROM quarantine WHERE {file_filter}"),
    )
    .await;
    let q = lines(&quarantined).first().cloned().unwrap_or_default();
    let q = if q == "null" {
        0
    } else {
        tally::decimal::parse(&q).unwrap()
    };
    assert_eq!(tally::decimal::parse(&written).unwrap() + q, source_sum);
    assert_eq!(tally::decimal::format(source_sum), "1.6823086974");
    let rows = scalar(
        &query(
            &out,
            &format!("SELECT count(*) FROM cost_and_usage WHERE {file_filter}"),
        )
        .await,
    );
    let qrows = scalar(
        &query(
            &out,
            &format!("SELECT count(*) FROM quarantine WHERE {file_filter}"),
        )
        .await,
    );
    assert_eq!(
        rows.parse::<usize>().unwrap() + qrows.parse::<usize>().unwrap(),
        1281
    );
    // The AWS rounding is kept and counted as a warning, as the sample job asks.
    assert!(
        m.warnings_by_rule
            .get("ContractedCost-identity")
            .copied()
            .unwrap_or(0)
            > 0
    );

    // The manifest lists the columns nothing reads: the official sample's unprefixed `Id`, but not
    // the OCI tag columns the reader folds into Tags.
    let ignored = |file: &str| {
        m.inputs
            .iter()
            .find(|i| i.url.ends_with(file))
            .unwrap()
            .ignored_columns
            .clone()
    };
    assert!(ignored("focus_1_0_official_sample.csv").contains(&"Id".to_string()));
    let oci = ignored("cost_report_sample.csv");
    assert!(!oci.iter().any(|c| c.starts_with("tags/")), "{oci:?}");

    // Account ids keep their leading zeros, and every input file's rows carry their lineage.
    let zeros = scalar(
        &query(
            &out,
            "SELECT count(*) FROM cost_and_usage WHERE BillingAccountId = '012345678901'",
        )
        .await,
    );
    assert!(
        zeros.parse::<u64>().unwrap() > 0,
        "the hand-made CUR payer 012345678901 kept its leading zero"
    );
    let files = scalar(
        &query(
            &out,
            "SELECT count(DISTINCT x_SourceFile) FROM cost_and_usage",
        )
        .await,
    );
    assert_eq!(files, m.inputs.len().to_string());
    let last = scalar(
        &query(
            &out,
            &format!("SELECT max(x_SourceRow) FROM cost_and_usage WHERE {file_filter}"),
        )
        .await,
    );
    assert_eq!(last, "1281", "record numbers count data rows from 1");

    // The official FOCUS 1.0 sample spells ChargeFrequency "Usage-based" on some rows: those rows
    // are in quarantine with file, row and column, and that row of the file really says so.
    let bad = query(
        &out,
        "SELECT x_SourceFile, x_SourceRow, ColumnName, Value FROM quarantine WHERE RuleId = 'ChargeFrequency-allowed-values' ORDER BY x_SourceRow",
    )
    .await;
    let bad = lines(&bad);
    assert!(!bad.is_empty());
    for l in &bad {
        let parts: Vec<&str> = l.split(" | ").collect();
        assert!(parts[0].ends_with("focus_1_0_official_sample.csv"), "{l}");
        assert_eq!(parts[2], "ChargeFrequency");
        assert_eq!(parts[3], "Usage-based");
        let row: usize = parts[1].parse().unwrap();
        let text =
            std::fs::read_to_string(root().join("sample-data/focus/focus_1_0_official_sample.csv"))
                .unwrap();
        let line = text.lines().nth(row).unwrap(); // line 0 is the header, so record n is line n
        assert!(line.contains("Usage-based"), "record {row} is {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn focus_1_2_projection_has_the_1_2_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/focus/focus_1_2_aws_generated.csv");
    let m = run_job(dir.path(), &one_source_job(&src, &out, None))
        .await
        .unwrap();
    assert_eq!(m.inputs[0].format, "focus");
    assert!(m.inputs[0].format_detected);
    let b = query(&out, "SELECT * FROM cost_and_usage_1_2 LIMIT 1").await;
    let cols: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let want: Vec<String> =
        std::fs::read_to_string(root().join("schemas/focus_1_2_cost_and_usage_columns.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(String::from)
            .collect();
    assert_eq!(want.len(), 57);
    for w in &want {
        assert!(cols.contains(w), "1.2 projection lacks {w}");
    }
    assert!(
        !cols.contains(&"ServiceProviderName".to_string()),
        "1.3 columns are not in the 1.2 projection"
    );
    let n = scalar(
        &query(
            &out,
            "SELECT count(*) FROM cost_and_usage_1_2 WHERE ProviderName IS NULL",
        )
        .await,
    );
    assert_eq!(n, "0");
}

#[test]
fn exit_codes_tell_a_scheduler_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    // A job file that does not parse: usage (2).
    let job = dir.path().join("bad.toml");
    std::fs::write(&job, "[job]\nname = 1\n").unwrap();
    let o = tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml"));

    // A file no format recognises: bad input (3), and the message names the file.
    let odd = dir.path().join("odd.csv");
    std::fs::write(&odd, "colour,size\nred,3\n").unwrap();
    let out = dir.path().join("o");
    let o = run_one_off(&odd, &out);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("odd.csv") && err.contains("cannot tell which export format"),
        "{err}"
    );

    // A bad value in a column the mapping needs is quarantined, not fatal: exit 0, and
    // `tally query` shows file, row and column.
    let src = dir.path().join("cur.csv");
    let csv = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let mut lines: Vec<String> = csv.lines().take(4).map(String::from).collect();
    // Record 2 is a Tax line: LineItemType is followed by UsageStartDate.
    let bad = lines[2].replacen(",Tax,2023-11-01T00:00:00.000Z,", ",Tax,not-a-date,", 1);
    assert_ne!(bad, lines[2]);
    lines[2] = bad;
    std::fs::write(&src, lines.join("\n") + "\n").unwrap();
    let o = run_one_off(&src, &out);
    assert_exit_0(&o);
    let text = query_csv(
        &out,
        "SELECT x_SourceRow, ColumnName, RuleId, Value FROM quarantine WHERE RuleId = 'parse-timestamp'",
    );
    assert!(
        text.contains("2,lineItem/UsageStartDate,parse-timestamp,not-a-date"),
        "{text}"
    );
}

#[test]
fn a_mapping_that_loses_money_fails_the_run_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur-athena");
    // A good run first: version 1 of every table.
    let o = run_one_off(&src, &out);
    assert_exit_0(&o);
    let files_before = parquet_files(&out).len();

    // The same export through a mapping that drops tax from BilledCost.
    let res = dir.path().join("res");
    copy_resources(&res);
    let sql_path = res.join("sql/normalize/aws_cur.sql");
    let sql = std::fs::read_to_string(&sql_path).unwrap();
    let broken = sql.replacen(
        "       ELSE line_item_unblended_cost END AS BilledCost,",
        "       WHEN charge_category = 'Tax' THEN CAST(0 AS DECIMAL(38, 18)) ELSE line_item_unblended_cost END AS BilledCost,",
        1,
    );
    assert_ne!(
        broken, sql,
        "the BilledCost line to break is still in the mapping"
    );
    std::fs::write(&sql_path, broken).unwrap();
    let o = one_off_cmd(&src, &out)
        .env("TALLY_RESOURCES", &res)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("reconciliation failed; nothing was committed")
            && err.contains("2023-12-01T00:00:00Z USD"),
        "{err}"
    );
    assert!(
        err.contains("difference 47.25"),
        "the tax that went missing: {err}"
    );
    // No new table version, and the files it staged were removed again.
    for t in ["cost_and_usage", "quarantine"] {
        let log: Vec<_> = std::fs::read_dir(out.join(t).join("_delta_log"))
            .unwrap()
            .collect();
        assert_eq!(
            log.iter()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json"))
                .count(),
            2,
            "{t}: versions 0 and 1 only"
        );
    }
    assert_eq!(parquet_files(&out).len(), files_before);
    // The failed run still leaves a manifest that says why.
    let manifests: Vec<String> = std::fs::read_dir(out.join("_tally/manifests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        manifests
            .iter()
            .any(|m| m.contains("\"status\": \"failed\"") && m.contains("reconciliation failed"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsed_ai_meters_are_counted_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let case =
        std::fs::read_to_string(root().join("tests/sql/aws_cur/bedrock_tokens.case")).unwrap();
    let csv: Vec<&str> = case
        .lines()
        .skip_while(|l| *l != "input:")
        .skip(1)
        .take_while(|l| !l.starts_with("expect:"))
        .collect();
    let src = dir.path().join("bedrock.csv");
    std::fs::write(&src, csv.join("\n") + "\n").unwrap();
    let m = run_job(
        dir.path(),
        &one_source_job(&src, &dir.path().join("out"), Some("aws_cur")),
    )
    .await
    .unwrap();
    assert_eq!(m.totals.ai_meters_unparsed, 1, "the guardrail meter");
    assert_eq!(m.inputs[0].ai_meters_unparsed, 1);
}

#[test]
fn a_malformed_csv_record_is_named_by_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("sample-data/focus/focus_1_2_aws_generated.csv"))
            .unwrap();
    let mut rows: Vec<&str> = text.lines().collect();
    rows.insert(3, "a,b,c");
    let src = dir.path().join("short.csv");
    std::fs::write(&src, rows.join("\n") + "\n").unwrap();
    let o = run_one_off(&src, &dir.path().join("out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("short.csv: malformed CSV") && err.contains("line 4, expected 57 got 3"),
        "{err}"
    );
}

/// Files of one format share one mapping plan (planned once per run), yet every row still
/// carries its own file and that file's ingestion id; another format gets a plan of its own.
#[test]
fn files_sharing_a_plan_keep_their_own_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let text =
        std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let records: Vec<&str> = lines.collect();
    // Three parts of one export, and a fourth without its last column (one the mapping does
    // not read, so the same plan serves it).
    let sizes = [500, 400, 381];
    let mut at = 0;
    for (i, n) in sizes.iter().enumerate() {
        let part = records[at..at + n].join("\n");
        std::fs::write(
            exports.join(format!("part-{i}.csv")),
            format!("{header}\n{part}\n"),
        )
        .unwrap();
        at += n;
    }
    let cut = |l: &str| l.rsplit_once(',').unwrap().0.to_string();
    let narrow: Vec<String> = records[..100].iter().map(|l| cut(l)).collect();
    std::fs::write(
        exports.join("part-3.csv"),
        format!("{}\n{}\n", cut(header), narrow.join("\n")),
    )
    .unwrap();
    let out = dir.path().join("out");
    let job = dir.path().join("job.toml");
    let focus = root().join("sample-data/focus/focus_1_2_aws_generated.csv");
    let job_text = format!(
        "{}[[source]]\nname = \"focus\"\nurl = \"file://{}\"\nformat = \"focus\"\n",
        one_source_job(&exports, &out, Some("aws_cur")),
        focus.display()
    );
    std::fs::write(&job, job_text).unwrap();
    let o = tally_cmd()
        .args([
            "run",
            job.to_str().unwrap(),
            "--log",
            "tally::mapping_plan=debug",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let plans = |sql: &str| err.matches(&format!("physical plan of {sql}")).count();
    assert_eq!(
        plans("sql/normalize/aws_cur.sql"),
        1,
        "one plan for four files"
    );
    assert_eq!(plans("sql/normalize/focus.sql"), 1);

    // Each file's rows carry its URL and the ingestion id the manifest records for it.
    let manifest = manifests(&out).remove(0);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let mut expected: Vec<String> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let (url, id) = (
                f["url"].as_str().unwrap(),
                f["ingestion_id"].as_str().unwrap(),
            );
            let read = f["rows_read"].as_u64().unwrap() as usize;
            if let Some((_, tail)) = url.rsplit_once("part-") {
                let part: usize = tail[..1].parse().unwrap();
                assert_eq!(read, sizes.get(part).copied().unwrap_or(100), "{url}");
            }
            format!("{url} | {} | {id}", f["rows_written"])
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 5);
    let got = query_csv(
        &out,
        "SELECT x_SourceFile, count(*) AS n, min(x_IngestionRunId) AS lo, max(x_IngestionRunId) AS hi \
                 FROM cost_and_usage GROUP BY 1 ORDER BY 1",
    );
    let got: Vec<String> = got
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f[2], f[3], "one ingestion id per file: {l}");
            format!("{} | {} | {}", f[0], f[1], f[2])
        })
        .collect();
    assert_eq!(got, expected);
    let ids: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|l| l.rsplit(" | ").next().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "every file has its own ingestion id");
}

/// Objects under a source that tally does not read are named in a warning, not passed over in
/// silence (a ZIP-compressed CUR with a hint); an export's own manifest is expected and is not.
#[test]
fn objects_that_are_not_exports_are_named_when_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for f in std::fs::read_dir(root().join("sample-data/aws/cur-athena")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, src.join(f.file_name().unwrap())).unwrap();
    }
    // A ZIP-compressed CUR delivery, with its billing period's manifest: the report files it
    // lists are there (only not readable), so this is no delivery in progress.
    let period = src.join("zipped/20231101-20231201");
    std::fs::create_dir_all(period.join("a1")).unwrap();
    std::fs::write(period.join("a1/zipped-00001.csv.zip"), b"PK").unwrap();
    std::fs::write(
        period.join("zipped-Manifest.json"),
        r#"{"assemblyId": "a1", "reportKeys": ["cur/zipped/20231101-20231201/a1/zipped-00001.csv.zip"]}"#,
    )
    .unwrap();
    std::fs::write(src.join("report-Manifest.json"), b"{}").unwrap();
    let o = run_one_off(&src, &dir.path().join("out"));
    assert_exit_0(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("zipped-00001.csv.zip") && err.contains("ZIP-compressed CUR is not read"),
        "{err}"
    );
    assert!(!err.contains("report-Manifest.json"), "{err}");
    // The manifest lists it too, for an auditor who asks what was under the source.
    let out = dir.path().join("out");
    let m = last_manifest(&out);
    let skipped = m["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/20231101-20231201/a1/zipped-00001.csv.zip")
    );
    assert_eq!(skipped[0]["reason"], "not_an_export");
}

/// `--full` reads every file and rebuilds every recorded partition; `--since` and `--period`
/// narrow an incremental run. Together they would silently mean less than they say: refused.
#[test]
fn full_with_since_or_period_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("sample-data/aws/cur-athena");
    for narrowing in [["--period", "2023-12"], ["--since", "2024-01-01"]] {
        let o = one_off_cmd(&src, &dir.path().join("out"))
            .arg("--full")
            .args(narrowing)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(!dir.path().join("out").exists());
    }
}

/// `tally query` writes rows as they come, in every format: a result over many batches arrives
/// whole and once, and a result with no rows is still its columns (a CSV header, a Parquet
/// file with the schema and no rows).
#[test]
fn query_results_stream_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert_exit_0(&run_one_off(&root().join("sample-data/oci"), &out));
    let query = |format: &str, sql: &str, to: Option<&std::path::Path>| {
        let mut cmd = tally_cmd();
        cmd.args([
            "query",
            "-t",
            out.to_str().unwrap(),
            "--format",
            format,
            sql,
        ]);
        if let Some(to) = to {
            cmd.arg("--out").arg(to);
        }
        let o = cmd.output().unwrap();
        assert_exit_0(&o);
        String::from_utf8(o.stdout).unwrap()
    };
    // The 506 rows twice: at least two batches.
    let all = "SELECT x_SourceRow, BilledCost FROM cost_and_usage \
               UNION ALL SELECT x_SourceRow, BilledCost FROM cost_and_usage";
    let csv = query("csv", all, None);
    assert_eq!(csv.lines().count(), 1013, "one header and every row");
    assert_eq!(csv.lines().next(), Some("x_SourceRow,BilledCost"));
    assert_eq!(csv.matches("x_SourceRow").count(), 1, "one header");
    assert_eq!(query("json", all, None).lines().count(), 1012);
    let file = dir.path().join("rows.parquet");
    assert_eq!(query("parquet", all, Some(&file)), "");
    assert_eq!(
        parquet_columns_and_rows(&file),
        (vec!["x_SourceRow".into(), "BilledCost".into()], 1012)
    );
    // No rows: the columns all the same.
    let none =
        "SELECT x_SourceRow, BilledCost FROM cost_and_usage WHERE BilledCost IS NULL AND false";
    assert_eq!(query("csv", none, None), "x_SourceRow,BilledCost\n");
    assert_eq!(query("json", none, None), "");
    let empty = dir.path().join("none.parquet");
    query("parquet", none, Some(&empty));
    assert_eq!(
        parquet_columns_and_rows(&empty),
        (vec!["x_SourceRow".into(), "BilledCost".into()], 0)
    );

    // A query that fails replaces nothing: the file at --out is as it was, with nothing beside it.
    let kept = dir.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("rows.csv"), "old\n").unwrap();
    let o = tally_cmd()
        .args([
            "query",
            "-t",
            out.to_str().unwrap(),
            "--format",
            "csv",
            "--out",
        ])
        .arg(kept.join("rows.csv"))
        .arg("SELECT x_SourceRow / (x_SourceRow - 300) FROM cost_and_usage")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(kept.join("rows.csv")).unwrap(),
        "old\n"
    );
    assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 1);

    // Queries run in the stages' memory pool: a sort that outgrows it says so.
    let o = tally_cmd()
        .args(["query", "-t", out.to_str().unwrap(), "--format", "csv"])
        .arg("SELECT * FROM cost_and_usage ORDER BY x_SourceRow DESC")
        .env("TALLY_STAGE_MEMORY_MB", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("Resources exhausted"), "{err}");

    // A reader that stops reading (`| head -1`) ends the output, not in an error.
    let mut child = tally_cmd()
        .args(["query", "-t", out.to_str().unwrap(), "--format", "csv"])
        .arg("SELECT * FROM cost_and_usage, (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains(','), "a CSV header: {first}");
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
