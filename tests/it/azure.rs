//! Azure cost details end to end: the actual/amortized pair of one EA month, the newer EA
//! names, an MCA file; both outside judges; and the cost-view mistakes the reconciliation catches.

use std::path::Path;

use crate::common::*;
use crate::conformance::check_job;

const NO_INVOICE: &str =
    "EA cost details carry no invoice id, so InvoiceId is null; the validator demands one";

/// The EA month as both files: purchases from the actual file, everything else amortized.
fn ea_pair_job(out: &Path, actual_view: &str) -> String {
    let data = root().join("sample-data/azure/ea");
    format!(
        "[job]\nname = \"azure\"\n[output]\nurl = \"file://{}\"\nfocus_versions = [\"1.4\", \"1.2\"]\n\
         [[source]]\nname = \"actual\"\nurl = \"file://{}/actual\"\nparams = {{ cost_view = \"{actual_view}\" }}\n\
         [[source]]\nname = \"amortized\"\nurl = \"file://{}/amortized\"\nparams = {{ cost_view = \"amortized\" }}\n",
        out.display(),
        data.display(),
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ea_pair_reconciles_billed_and_effective_cost_to_the_digit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &ea_pair_job(&out, "actual_purchases"))
        .await
        .unwrap();
    let recon: Vec<(String, String, String)> = m
        .reconciliation
        .iter()
        .map(|r| {
            (
                format!("{:?}", r.measure),
                r.source_total.clone(),
                r.status.clone(),
            )
        })
        .collect();
    // Σ Cost of each file, summed here from the CSV text, less the 3 rows per file whose costs
    // have 22 decimal places (quarantined, never rounded).
    assert_eq!(recon.len(), 2, "{recon:?}");
    assert!(recon.iter().all(|l| l.2 == "match"), "{recon:?}");
    let src = |measure: &str| {
        recon
            .iter()
            .find(|l| l.0 == measure)
            .map(|l| l.1.clone())
            .unwrap()
    };
    assert_eq!(src("BilledCost"), expected_total("actual", 3));
    assert_eq!(src("EffectiveCost"), expected_total("amortized", 3));
    // Every purchase came from the actual file, every other row from the amortized one.
    let folded: u64 = m
        .inputs
        .iter()
        .map(|i| i.rows_folded.values().sum::<u64>())
        .sum();
    assert_eq!(
        folded, 25,
        "the actual file's 29 rows less its purchase and its 3 quarantined rows"
    );
    let rows = query(
        &out,
        "SELECT ChargeCategory, count(*), sum(BilledCost), sum(EffectiveCost) FROM cost_and_usage \
         GROUP BY 1 ORDER BY 1",
    )
    .await;
    let got = lines(&rows);
    assert_eq!(got[0], "Purchase | 1 | 3.25 | 0", "{got:?}");
    assert!(got[1].starts_with("Usage | 25 | "), "{got:?}");
}

/// Σ of the cost column of the one CSV under `sample-data/azure/ea/<view>/`, over the rows
/// whose cost text fits 18 decimal places (`skipped` of them do not).
fn expected_total(view: &str, skipped: usize) -> String {
    let dir = root().join(format!("sample-data/azure/ea/{view}"));
    let file = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    let mut r = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let i = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "Cost")
        .unwrap();
    let mut sum: i128 = 0;
    let mut n = 0;
    for rec in r.records() {
        match tally::decimal::parse(&rec.unwrap()[i]) {
            Ok(v) => sum += v,
            Err(_) => n += 1,
        }
    }
    assert_eq!(n, skipped);
    tally::decimal::format(sum)
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_both_views_as_actual_counts_on_demand_twice_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run_job(dir.path(), &ea_pair_job(&out, "actual"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("reconciliation failed"), "{err}");
    assert!(err.contains("BilledCost"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_actual_file_for_purchases_without_its_amortized_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = root().join("sample-data/azure/ea/actual");
    let job = format!(
        "{}params = {{ cost_view = \"actual_purchases\" }}\n",
        one_source_job(&data, &out, Some("azure_cost_details"))
    );
    let err = run_job(dir.path(), &job).await.unwrap_err().to_string();
    assert!(
        err.contains("azure 2023-09-01T00:00:00Z USD BilledCost"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_cost_view_is_a_job_error_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = root().join("sample-data/azure/mca");
    let job = format!(
        "{}params = {{ cost_view = \"amortised\" }}\n",
        one_source_job(&data, &out, None)
    );
    let err = run_job(dir.path(), &job).await.unwrap_err().to_string();
    assert!(err.contains("actual, amortized, actual_purchases"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_ea_pair_conforms() {
    check_job(
        "sample-data/azure/ea (actual + amortized)",
        |out| ea_pair_job(out, "actual_purchases"),
        "azure_cost_details",
        &[("InvoiceId-C-005-C", NO_INVOICE)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_newer_ea_names_and_mca_conform() {
    check_job(
        "sample-data/azure/ea-newer",
        |out| one_source_job(&root().join("sample-data/azure/ea-newer"), out, None),
        "azure_cost_details",
        &[("InvoiceId-C-005-C", NO_INVOICE)],
    )
    .await;
    check_job(
        "sample-data/azure/mca",
        |out| one_source_job(&root().join("sample-data/azure/mca"), out, None),
        "azure_cost_details",
        &[],
    )
    .await;
}
