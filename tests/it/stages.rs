//! SQL stages: invoice reconciliation statuses on the bundled data, reproduction of a past
//! reconciliation from its manifest (time travel + hash-checked inputs), bad inputs refused.

use std::path::Path;

use crate::common::*;

fn job_with_invoices(dir: &Path, out: &Path, invoices: &Path) -> std::path::PathBuf {
    let text = sample_job_text(out).replace(
        &format!(
            "file://{}/sample-data/invoices/invoices.csv",
            root().display()
        ),
        &format!("file://{}", invoices.display()),
    );
    assert!(text.contains(&invoices.display().to_string()));
    let job = dir.join("job.toml");
    std::fs::write(&job, text).unwrap();
    job
}

/// The sample job written as `<dir>/<name>.toml`, its output at `<dir>/<name>`: (job, output).
fn sample_job_file(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (job, out) = (dir.join(format!("{name}.toml")), dir.join(name));
    std::fs::write(&job, sample_job_text(&out)).unwrap();
    (job, out)
}

fn run(job: &Path) -> std::process::Output {
    tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap()
}

/// The configuration in the last metadata action of a Delta table's log.
fn latest_configuration(table: &Path) -> serde_json::Map<String, serde_json::Value> {
    let mut commits: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let mut latest = None;
    for commit in commits {
        for line in std::fs::read_to_string(commit).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(c) = action["metaData"]["configuration"].as_object() {
                latest = Some(c.clone());
            }
        }
    }
    latest.expect("a metadata action")
}

#[test]
fn invoices_reconcile_with_every_status_and_a_past_result_is_reproduced_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let invoices = dir.path().join("invoices.csv");
    std::fs::copy(root().join("sample-data/invoices/invoices.csv"), &invoices).unwrap();
    let job = job_with_invoices(dir.path(), &out, &invoices);
    let o = run(&job);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q = |sql: &str| query_csv(&out, sql);
    // Expected, by hand from the bundled files: the MCA file's 9 rows add up to 148.3785 EUR
    // (1.62 + 3.375 + 0.135 + 21.6 + 0 + 90 − 9 + 0.1485 + 40.5); the invoice for Jan 2024 says
    // 290.15 against 290.1473 billed; INV-2026-05-0003 has no billing rows; INV-2026-05-0001 no
    // invoice row.
    let got = q(
        "SELECT InvoiceId, ExpectedTotal, ActualTotal, Difference, Status FROM invoice_reconciliation",
    );
    assert_eq!(
        got,
        "InvoiceId,ExpectedTotal,ActualTotal,Difference,Status\n\
         E0600ABCDE,148.378500000000000000,148.378500000000000000,0.000000000000000000,match\n\
         EUINDE23-2401001,376.420550000000000000,376.420550000000000000,0.000000000000000000,match\n\
         EUINDE24-2402001,290.150000000000000000,290.147300000000000000,-0.002700000000000000,mismatch\n\
         G012345678,49.608000000000000000,49.608000000000000000,0.000000000000000000,match\n\
         INV-2026-05-0001,,2304.449523127705000000,2304.449523127705000000,missing on invoice\n\
         INV-2026-05-0002,1642.379983922387500000,1642.379983922387500000,0.000000000000000000,match\n\
         INV-2026-05-0003,12.500000000000000000,,-12.500000000000000000,missing in billing data\n"
    );
    let first = manifests(&out).pop().unwrap();
    // Nothing new: no stage is rewritten.
    let o = run(&job);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("nothing new"), "{stdout}");
    assert!(
        stdout.contains("invoice_reconciliation: 7 rows, version 0 (unchanged)"),
        "{stdout}"
    );

    // The invoice file is corrected and the run after it reconciles again...
    let invoices_text = std::fs::read_to_string(&invoices).unwrap();
    std::fs::write(&invoices, invoices_text.replace("290.15", "290.1473")).unwrap();
    // (--full: every table gets a new version, so reproducing the first run needs time travel.)
    let o = tally_cmd()
        .args(["run", job.to_str().unwrap(), "--full"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        q("SELECT Status FROM invoice_reconciliation WHERE InvoiceId = 'EUINDE24-2402001'")
            .contains("match")
    );
    // Every table keeps its whole log, the stage tables through their overwrites too: Delta's
    // default would drop versions older than 30 days at its 100th commit.
    for table in [
        "cost_and_usage",
        "invoice_reconciliation",
        "allocated_costs",
    ] {
        assert_eq!(
            latest_configuration(&out.join(table)).get("delta.enableExpiredLogCleanup"),
            Some(&serde_json::json!("false")),
            "{table}"
        );
    }

    // ...but the auditor's question is about the first run: its inputs changed since, and
    // `tally reconcile` says so and that today's result from them differs.
    let o = tally_cmd()
        .args([
            "reconcile",
            "--manifest",
            first.to_str().unwrap(),
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("input invoices") && err.contains("changed since the run"),
        "{err}"
    );

    // With the invoice file as it was, the first run's result comes back byte for byte, read
    // from cost_and_usage at the version that run read (time travel).
    std::fs::write(&invoices, &invoices_text).unwrap();
    let o = tally_cmd()
        .args([
            "reconcile",
            "--manifest",
            first.to_str().unwrap(),
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("identical: 7 rows"), "{err}");
    assert!(err.contains("read cost_and_usage v1,"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(
        "290.150000000000000000,290.147300000000000000,-0.002700000000000000,18,mismatch"
    ));
    // The reproduced result can be kept as a file, as a query's can.
    let kept = dir.path().join("reproduced.parquet");
    let o = tally_cmd()
        .args(["reconcile", "--manifest", first.to_str().unwrap()])
        .args(["--format", "parquet", "--out", kept.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit_0(&o);
    let (_, rows) = parquet_columns_and_rows(&kept);
    assert_eq!(rows, 7);
}

#[test]
fn a_bad_invoice_file_is_refused_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let invoices = dir.path().join("invoices.csv");
    std::fs::write(
        &invoices,
        "InvoiceId,InvoiceIssuerName,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,BillingCurrency,InvoiceTotal\n\
         A,AWS,1,2024-01-01,2024-02-01,USD,10\n\
         B,AWS,1,2024-01-01,2024-02-01,USD,ten\n",
    )
    .unwrap();
    let src = root().join("sample-data/aws/cur-athena");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "{}[inputs]\ninvoices = \"file://{}\"\n",
            one_source_job(&src, &out, None),
            invoices.display()
        ),
    )
    .unwrap();
    let o = run(&job);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("invoices.csv, row 2, column InvoiceTotal"),
        "{err}"
    );
    // An input nobody has a schema for is a job error.
    std::fs::write(
        &job,
        format!(
            "{}[inputs]\nreceipts = \"file:///x.csv\"\n",
            one_source_job(&src, &out, None)
        ),
    )
    .unwrap();
    let o = run(&job);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A GCP export flattened to CSV (the simplest input to write by hand): one row per charge.
fn gcp_row(n: u32, service: &str, labels: &str, cost: &str, day: &str) -> String {
    format!(
        "A1,{service},SKU-{n},Charge {n},2026-05-{day} 00:00:00 UTC,2026-05-{day} 01:00:00 UTC,p1,P1,\"{labels}\",{cost},USD,1,hour,1,hour,{cost},[],202605,regular\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_split_method_allocates_a_hand_computed_case_and_conserves_every_digit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut csv = String::from(
        "billing_account_id,service.description,sku.id,sku.description,usage_start_time,usage_end_time,project.id,project.name,labels,cost,currency,usage.amount,usage.unit,usage.amount_in_pricing_units,usage.pricing_unit,price.effective_price,credits,invoice.month,cost_type\n",
    );
    let tag = |k: &str, v: &str| format!("[{{\"\"key\"\":\"\"{k}\"\",\"\"value\"\":\"\"{v}\"\"}}]");
    csv += &gcp_row(1, "Compute Engine", &tag("CostCenter", "A"), "30", "01");
    csv += &gcp_row(2, "Compute Engine", &tag("cost-center", " B "), "10", "01");
    csv += &gcp_row(3, "Compute Engine", "[]", "5", "01");
    csv += &gcp_row(4, "Support", "[]", "10", "01");
    csv += &gcp_row(5, "Shared Cluster", "[]", "10", "01");
    csv += &gcp_row(6, "Commitments", "[]", "100", "01");
    csv += &gcp_row(7, "AI Platform", "[]", "9", "02");
    csv += &gcp_row(8, "Broken", "[]", "4", "02");
    // Untagged, in project p2, which carries cost-center C: inherited.
    csv += &gcp_row(9, "Compute Engine", "[]", "2", "03").replace(",p1,P1,", ",p2,P2,");
    let src = dir.path().join("gcp.csv");
    std::fs::write(&src, csv).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        format!("file://{}", p.display())
    };
    let rules = file(
        "rules.csv",
        "Rule,Method,MatchColumn,MatchValue,Target,Percent,Metric\n\
         by-cc,tag,,CostCenter,,,\n\
         support,proportional,ServiceName,Support,A,,\n\
         support,proportional,ServiceName,Support,B,,\n\
         cluster,even,ServiceName,Shared Cluster,A,,\n\
         cluster,even,ServiceName,Shared Cluster,B,,\n\
         cluster,even,ServiceName,Shared Cluster,C,,\n\
         commit,fixed,ServiceName,Commitments,A,70,\n\
         commit,fixed,ServiceName,Commitments,B,30,\n\
         ai,metric,ServiceName,AI Platform,A,,tokens\n\
         ai,metric,ServiceName,AI Platform,B,,tokens\n\
         broken,fixed,ServiceName,Broken,A,50,\n\
         broken,fixed,ServiceName,Broken,B,40,\n",
    );
    let aliases = file("aliases.csv", "Key,Alias\nCostCenter,cost-center\n");
    let metrics = file(
        "metrics.csv",
        "Date,Target,Metric,Value\n2026-05-02,A,tokens,1000000\n2026-05-02,B,tokens,2000000\n2026-05-01,B,tokens,99\n\
         2026-05-03,A,orders,60\n2026-05-04,A,orders,40\n2026-05-31,A,revenue,1000\n",
    );
    let basis = file("basis.csv", "Target,Basis\nB,billed\n");
    let account_tags = file(
        "account_tags.csv",
        "SubAccountId,Key,Value\np2,Cost-Center, C \np2,team,x\n",
    );
    let job = format!(
        "{}[inputs]\nallocation_rules = \"{rules}\"\ntag_aliases = \"{aliases}\"\nusage_metrics = \"{metrics}\"\nchargeback_basis = \"{basis}\"\naccount_tags = \"{account_tags}\"\n",
        one_source_job(&src, &out, Some("gcp_billing"))
    );
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(m.totals.rows_quarantined, 0);
    let got = lines(
        &query(
            &out,
            "SELECT x_SourceRow, Target, Method, Rule, AllocatedEffectiveCost FROM allocated_costs",
        )
        .await,
    );
    assert_eq!(
        got,
        vec![
            "1 | A | tag | null | 30",
            "2 | B | tag | null | 10",
            "3 | unallocated | unallocated | null | 5",
            // Support, in proportion to A's 30 and B's 10 of own cost.
            "4 | A | proportional | support | 7.5",
            "4 | B | proportional | support | 2.5",
            // 10 three ways: the 1e-18 truncation leaves goes to the first target by name.
            "5 | A | even | cluster | 3.333333333333333334",
            "5 | B | even | cluster | 3.333333333333333333",
            "5 | C | even | cluster | 3.333333333333333333",
            "6 | A | fixed | commit | 70",
            "6 | B | fixed | commit | 30",
            // 1M and 2M tokens on the charge's day (B's 99 on another day do not count).
            "7 | A | metric | ai | 3",
            "7 | B | metric | ai | 6",
            // 50 + 40 is not 100: nothing is allocated, and the rule is named.
            "8 | unallocated | unallocated | broken | 4",
            "9 | C | inherited | null | 2",
        ]
    );
    let total = lines(
        &query(
            &out,
            "SELECT (SELECT sum(AllocatedEffectiveCost) FROM allocated_costs), (SELECT sum(AllocatedBilledCost) FROM allocated_costs)",
        )
        .await,
    );
    assert_eq!(total, vec!["180 | 180"], "every digit conserved");
    let coverage = lines(
        &query(
            &out,
            "SELECT TaggedEffectiveCost, InheritedEffectiveCost, SharedEffectiveCost, UnallocatedEffectiveCost, TagCoverage FROM tag_coverage",
        )
        .await,
    );
    assert_eq!(coverage, vec!["40 | 2 | 129 | 9 | 0.222222222222222222"]);

    // Chargeback: A = 30 + 7.5 + 3.333333333333333334 + 70 + 3; B (charged at billed cost, equal
    // here: the export has no credits) = 10 + 2.5 + 3.333333333333333333 + 30 + 6.
    let statements = lines(
        &query(&out, "SELECT CostCenter, Basis, ChargedAmount, SharedEffectiveCost FROM chargeback_statements").await,
    );
    assert_eq!(
        statements,
        vec![
            "A | effective | 113.833333333333333334 | 83.833333333333333334",
            "B | billed | 51.833333333333333333 | 41.833333333333333333",
            "C | effective | 5.333333333333333333 | 3.333333333333333333",
            "unallocated | effective | 9 | 0",
        ]
    );
    let csv = std::fs::read_to_string(out.join("exports/chargeback_statements.csv")).unwrap();
    assert!(
        csv.starts_with("CostCenter,BillingPeriodStart,BillingCurrency,Basis,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5);

    // Unit economics for A in May 2026: 100 orders, revenue 1000, 1M tokens served.
    let units = lines(
        &query(
            &out,
            "SELECT Metric, Units, CostPerUnit, CostPer1KUnits, ReturnOnSpend FROM unit_costs WHERE Target = 'A'",
        )
        .await,
    );
    assert_eq!(
        units,
        vec![
            "orders | 100 | 1.138333333333333333 | 1138.33333333333333334 | 8.784773060029282576",
            "tokens | 1000000 | 0.000113833333333333 | 0.113833333333333333 | 8.784773060029282576",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_focus_invoice_detail_dataset_reconciles_its_cost_and_usage() {
    // focus-data-toolkit's synthetic FOCUS 1.4 pair: InvoiceDetail lines (BilledCost per invoice
    // and charge category, decimal(38,17) in Parquet) against the CostAndUsage rows they sum.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = root().join("tests/data/focus_native");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        data.join("focus_1_4_cost_and_usage_synthetic.parquet"),
        src.join("cau.parquet"),
    )
    .unwrap();
    let job = format!(
        "{}[inputs]\ninvoice_detail = \"file://{}\"\n",
        one_source_job(&src, &out, None),
        data.join("synthetic_focus_1_4_invoice_detail.parquet")
            .display()
    );
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(
        m.stages.len(),
        1,
        "only the invoice reconciliation has its inputs"
    );
    let got = lines(
        &query(
            &out,
            "SELECT InvoiceId, ExpectedTotal, BillingRows, Status FROM invoice_reconciliation",
        )
        .await,
    );
    assert_eq!(
        got,
        vec![
            "INV-2026-05-0001 | 1557.85967987859004 | 69 | match",
            "INV-2026-05-0002 | 4147.94308964938041 | 131 | match",
        ]
    );
}

/// A stage's query runs in a bounded memory pool: one that needs more than
/// `TALLY_STAGE_MEMORY_MB` stops the run with an error that says so and names the knob, instead
/// of the process growing until the machine kills it, and the stage's table stays as it was.
#[test]
fn a_stage_query_that_outgrows_its_memory_pool_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (job, out) = sample_job_file(dir.path(), "sample");
    let run = |mb: &str| {
        tally_cmd()
            .args(["run", job.to_str().unwrap(), "--full"])
            .env("TALLY_STAGE_MEMORY_MB", mb)
            .output()
            .unwrap()
    };
    assert_exit_0(&run("256"));
    let allocated = "SELECT count(*) n, sum(AllocatedEffectiveCost) s FROM allocated_costs";
    let before = query_csv(&out, allocated);
    let versions = || {
        std::fs::read_dir(out.join("allocated_costs/_delta_log"))
            .unwrap()
            .count()
    };
    let logged = versions();
    let o = run("1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("memory pool of 1 MiB") && err.contains("raise TALLY_STAGE_MEMORY_MB"),
        "{err}"
    );
    assert_eq!(versions(), logged, "no commit");
    assert_eq!(query_csv(&out, allocated), before);
    // Not a number of MiB: refused before anything runs.
    let runs = manifests(&out).len();
    let o = run("2G");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(manifests(&out).len(), runs);
}

/// A stage table that a failed run rewrote is not "unchanged" for the next run, though that
/// run's SQL, tables and inputs are again those of the last successful one: the table is not at
/// the version that run recorded, and is written again.
#[test]
fn a_stage_table_rewritten_by_a_failed_run_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rules = dir.path().join("rules.csv");
    let v1 = std::fs::read_to_string(root().join("sample-data/allocation/rules.csv")).unwrap();
    std::fs::write(&rules, &v1).unwrap();
    let basis = dir.path().join("basis.csv");
    let job = |with_basis: bool| {
        let path = dir.path().join("job.toml");
        let mut text = one_source_job(&root().join("sample-data/gcp"), &out, None);
        text.push_str(&format!(
            "[inputs]\nallocation_rules = \"file://{}\"\ntag_aliases = \"file://{}\"\n",
            rules.display(),
            root()
                .join("sample-data/allocation/tag_aliases.csv")
                .display()
        ));
        if with_basis {
            text.push_str(&format!(
                "chargeback_basis = \"file://{}\"\n",
                basis.display()
            ));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let by_target =
        "SELECT Target, sum(AllocatedEffectiveCost) FROM allocated_costs GROUP BY 1 ORDER BY 1";
    assert_exit_0(&run(&job(false)));
    let first = query_csv(&out, by_target);

    // Gemini is no longer shared, and a bad chargeback_basis file fails the stage after
    // allocated_costs: the run fails (exit 3) with allocated_costs rewritten.
    let v2: String = v1
        .lines()
        .filter(|l| !l.starts_with("gemini-flash"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&rules, v2).unwrap();
    std::fs::write(&basis, "Target,Basis\n,billed\n").unwrap();
    let o = run(&job(true));
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(
        query_csv(&out, by_target),
        first,
        "the failed run rewrote allocated_costs"
    );

    // Back to the first run's inputs: allocated_costs is the first run's again.
    std::fs::write(&rules, &v1).unwrap();
    assert_exit_0(&run(&job(false)));
    assert_eq!(query_csv(&out, by_target), first);
}

#[test]
fn a_by_period_stage_writes_the_same_bytes_whole_or_one_period_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    // 0: every @by_period stage runs once per period; 10^9: the sample runs whole.
    for split in ["0", "1000000000"] {
        let (job, out) = sample_job_file(dir.path(), &format!("sample-{split}"));
        let o = tally_cmd()
            .args(["run", job.to_str().unwrap()])
            .env("TALLY_STAGE_PERIOD_ROWS", split)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_exit_0(&o);
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            log.contains("stage runs once per billing period periods=10"),
            split == "0",
            "{log}"
        );
        let m = last_manifest(&out);
        let stage = m["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "allocated_costs")
            .unwrap()
            .clone();
        written.push((stage["rows"].clone(), stage["content_sha256"].clone()));
        if split == "0" {
            // An auditor's reproduction, run whole, finds the rows written period by period.
            let manifest = manifests(&out).pop().unwrap();
            let o = tally_cmd()
                .args(["reconcile", "--manifest", manifest.to_str().unwrap()])
                .args(["--stage", "allocated_costs", "--format", "csv"])
                .env("TALLY_STAGE_PERIOD_ROWS", "1000000000")
                .output()
                .unwrap();
            assert_exit_0(&o);
        }
    }
    // Same rows in the same order: the periods' queries see only their own rows, and the
    // stage orders by period first.
    assert_eq!(written[0], written[1]);
    assert_eq!(written[0].0, 3075);
}

#[test]
fn a_bad_period_split_setting_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (job, out) = sample_job_file(dir.path(), "sample");
    let o = tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .env("TALLY_STAGE_PERIOD_ROWS", "1M")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("TALLY_STAGE_PERIOD_ROWS=\"1M\""));
    assert!(!out.join("_tally").exists(), "nothing written");
}
