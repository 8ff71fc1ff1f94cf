//! GCP billing export end to end: JSON lines and Parquet with nested records, both judges, the
//! money to the digit, and JSON-lines edge cases (fields missing from the first lines, numbers
//! with more digits than a float holds).

use crate::common::*;
use crate::conformance::check_job;

const NO_INVOICE: &str = "the GCP billing export carries no invoice id (only invoice.month), so InvoiceId is null; the validator demands one";

#[tokio::test(flavor = "multi_thread")]
async fn gcp_json_lines_and_parquet_conform() {
    check_job(
        "sample-data/gcp",
        |out| one_source_job(&root().join("sample-data/gcp"), out, None),
        "gcp_billing",
        &[("InvoiceId-C-005-C", NO_INVOICE)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gcp_costs_and_credits_reconcile_to_the_digit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = run_job(
        dir.path(),
        &one_source_job(&root().join("sample-data/gcp"), &out, None),
    )
    .await
    .unwrap();
    // Σ "cost" of the JSON-lines file, summed here from the text of each line.
    let text =
        std::fs::read_to_string(root().join("sample-data/gcp/jsonl/gcp_billing_2024-03.jsonl"))
            .unwrap();
    let re = regex::Regex::new(r#""cost":(-?[0-9.eE+-]+)"#).unwrap();
    let sum: i128 = text
        .lines()
        .map(|l| tally::decimal::parse(&re.captures(l).unwrap()[1]).unwrap())
        .sum();
    let march = m
        .reconciliation
        .iter()
        .find(|r| r.billing_period_start == "2024-03-01T00:00:00Z")
        .unwrap();
    assert_eq!(march.source_total, tally::decimal::format(sum));
    assert_eq!(march.source_total, "7.90273845149200004");
    assert!(m.reconciliation.iter().all(|r| r.status == "match"));
    // EffectiveCost = cost + Σ credits; the 17-digit float text kept as written.
    let rows = lines(
        &query(
            &out,
            "SELECT sum(BilledCost), sum(EffectiveCost) FROM cost_and_usage WHERE x_BillingPeriod = '2024-03'",
        )
        .await,
    );
    assert_eq!(rows, vec!["7.90273845149200004 | 0.68641645149200004"]);
    let odd = lines(
        &query(
            &out,
            "SELECT BilledCost FROM cost_and_usage WHERE SkuId = 'CP-COMPUTEENGINE-N2-RAM'",
        )
        .await,
    );
    assert_eq!(odd, vec!["0.30000000000000004"]);
    assert_eq!(
        m.totals.ai_meters_unparsed, 1,
        "the Gemini image SKU no rule knows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_field_first_seen_late_is_still_read_when_the_format_declares_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("late.jsonl");
    let line = |i: usize, extra: &str| {
        format!(
            r#"{{"billing_account_id":"A","service":{{"description":"Compute Engine"}},"sku":{{"id":"S","description":"Core"}},"usage_start_time":"2024-03-01 00:00:00 UTC","usage_end_time":"2024-03-01 01:00:00 UTC","cost":0.01,"currency":"USD","invoice":{{"month":"202403"}},"cost_type":"regular","usage":{{"amount":1,"unit":"hour","amount_in_pricing_units":1,"pricing_unit":"hour"}},"labels":[{{"key":"n","value":"{i}"}}]{extra}}}"#
        )
    };
    // More than a MiB of lines without credits, then one with them: the header scan never saw
    // `credits`, but the format declares it, so its amount still reaches EffectiveCost.
    let mut text = String::new();
    let mut n = 0;
    while text.len() < (1 << 20) + 4096 {
        text.push_str(&line(n, ""));
        text.push('\n');
        n += 1;
    }
    text.push_str(&line(
        n,
        r#","credits":[{"name":"promo","amount":-0.01}],"brand_new_field":"x""#,
    ));
    text.push('\n');
    std::fs::write(&src, text).unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &one_source_job(&src, &out, None))
        .await
        .unwrap();
    assert_eq!(m.inputs[0].format, "gcp_billing");
    assert_eq!(m.totals.rows_written as usize, n + 1);
    let got = lines(
        &query(
            &out,
            "SELECT EffectiveCost FROM cost_and_usage WHERE EffectiveCost = 0",
        )
        .await,
    );
    assert_eq!(got, vec!["0"], "the late credit was applied");
}
