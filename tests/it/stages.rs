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

fn run(job: &Path) -> std::process::Output {
    tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap()
}

fn manifests(out: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(out.join("_tally/manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
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
    let q = |sql: &str| {
        let o = tally_cmd()
            .args(["query", "-t", out.to_str().unwrap(), "--format", "csv", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
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
