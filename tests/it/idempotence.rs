//! Reruns replace partitions as units: no duplicates, no losses, identical content.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// The legacy CUR sample moved one month later (a second billing period for the same account).
fn december_copy(text: &str) -> String {
    text.replace("2023-12-01", "2024-01-01")
        .replace("2023-11-", "2023-12-")
}

fn hashes(m: &tally::manifest::Manifest, table: &str) -> BTreeMap<String, (u64, String)> {
    m.tables[table]
        .partitions
        .iter()
        .map(|p| {
            (
                format!("{}/{}/{}", p.provider, p.billing_account, p.billing_period),
                (p.rows, p.content_sha256.clone()),
            )
        })
        .collect()
}

async fn count(out: &Path, sql: &str) -> u64 {
    scalar(&query(out, sql).await).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rerunning_a_job_changes_nothing_but_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur1");
    let job = one_source_job(&src, &out, Some("aws_cur"));
    let first = run_job(dir.path(), &job).await.unwrap();
    let n1 = count(&out, "SELECT count(*) FROM cost_and_usage").await;
    let second = run_job_full(dir.path(), &job).await.unwrap();
    let n2 = count(&out, "SELECT count(*) FROM cost_and_usage").await;
    assert_eq!(n1, n2, "a rerun neither duplicates nor loses rows");
    assert_eq!(
        n1,
        count(
            &out,
            "SELECT count(*) FROM (SELECT DISTINCT x_SourceFile, x_SourceRow FROM cost_and_usage)"
        )
        .await
    );
    assert_eq!(
        hashes(&first, "cost_and_usage"),
        hashes(&second, "cost_and_usage")
    );
    assert_eq!(hashes(&first, "quarantine"), hashes(&second, "quarantine"));
    assert!(second.tables["cost_and_usage"].version > first.tables["cost_and_usage"].version);
    assert_ne!(first.run_id, second.run_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_on_the_same_inputs_write_identical_data() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("sample-data/focus/focus_1_2_aws_generated.csv");
    let a = run_job(
        dir.path(),
        &one_source_job(&src, &dir.path().join("a"), None),
    )
    .await
    .unwrap();
    let b = run_job(
        dir.path(),
        &one_source_job(&src, &dir.path().join("b"), None),
    )
    .await
    .unwrap();
    assert_eq!(hashes(&a, "cost_and_usage"), hashes(&b, "cost_and_usage"));
    assert_eq!(
        hashes(&a, "cost_and_usage_1_2"),
        hashes(&b, "cost_and_usage_1_2")
    );
    let all = "SELECT * FROM cost_and_usage ORDER BY x_SourceRow";
    assert_eq!(
        lines(&query(&dir.path().join("a"), all).await),
        lines(&query(&dir.path().join("b"), all).await)
    );
    assert_eq!(
        a.inputs[0].ingestion_id, b.inputs[0].ingestion_id,
        "the ingestion id is a content id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restated_month_replaces_exactly_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    std::fs::write(exports.join("cur-2023-11.csv"), &nov).unwrap();
    std::fs::write(exports.join("cur-2023-12.csv"), december_copy(&nov)).unwrap();
    run_job(dir.path(), &one_source_job(&exports, &out, Some("aws_cur")))
        .await
        .unwrap();
    let by_period = "SELECT x_BillingPeriod, count(*) FROM cost_and_usage GROUP BY 1 ORDER BY 1";
    let before = lines(&query(&out, by_period).await);
    assert_eq!(before.len(), 2, "{before:?}");
    let nov_files = |out: &Path| {
        parquet_files(&out.join("cost_and_usage"))
            .into_iter()
            .filter(|p| p.contains("x_BillingPeriod=2023-11"))
            .collect::<Vec<_>>()
    };
    let nov_before = nov_files(&out);

    // AWS re-delivers December with the first 100 line items dropped (a restatement).
    let restated = dir.path().join("restated");
    std::fs::create_dir_all(&restated).unwrap();
    let dec = december_copy(&nov);
    let mut l: Vec<&str> = dec.lines().collect();
    l.drain(1..101);
    std::fs::write(restated.join("cur-2023-12.csv"), l.join("\n") + "\n").unwrap();
    let m = run_job(
        dir.path(),
        &one_source_job(&restated, &out, Some("aws_cur")),
    )
    .await
    .unwrap();
    assert_eq!(
        m.tables["cost_and_usage"].partitions.len(),
        1,
        "only December is replaced"
    );
    let after = lines(&query(&out, by_period).await);
    assert_eq!(after[0], before[0], "November is untouched");
    let dec_before: u64 = before[1].split(" | ").nth(1).unwrap().parse().unwrap();
    let dec_q_before = 1281 - dec_before;
    let dec_after: u64 = after[1].split(" | ").nth(1).unwrap().parse().unwrap();
    let q_after = count(
        &out,
        "SELECT count(*) FROM quarantine WHERE x_BillingPeriod = '2023-12'",
    )
    .await;
    assert_eq!(
        dec_after + q_after,
        1181,
        "December holds exactly the restated rows"
    );
    assert!(dec_after < dec_before || q_after < dec_q_before);
    assert_eq!(
        nov_files(&out),
        nov_before,
        "November's data files are the same files"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_without_a_readable_period_stay_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let mut rows: Vec<String> = nov.lines().map(String::from).collect();
    // Record 5 loses its billing period: it cannot be placed in a partition.
    let broken = rows[5].replacen(
        ",2023-11-01T00:00:00.000Z,2023-12-01T00:00:00.000Z,",
        ",soon,2023-12-01T00:00:00.000Z,",
        1,
    );
    assert_ne!(broken, rows[5]);
    rows[5] = broken;
    let a = dir.path().join("a.csv");
    std::fs::write(&a, rows.join("\n") + "\n").unwrap();
    run_job(dir.path(), &one_source_job(&a, &out, Some("aws_cur")))
        .await
        .unwrap();
    let placed =
        "SELECT x_BillingPeriod, x_SourceRow FROM quarantine WHERE RuleId = 'parse-timestamp'";
    let first = lines(&query(&out, placed).await);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].starts_with("unknown-") && first[0].ends_with(" | 5"),
        "{first:?}"
    );

    // Another export for the same account and month does not sweep that row away...
    let b = dir.path().join("b.csv");
    std::fs::write(&b, &nov).unwrap();
    run_job(dir.path(), &one_source_job(&b, &out, Some("aws_cur")))
        .await
        .unwrap();
    assert_eq!(lines(&query(&out, placed).await), first);
    // ...and rerunning the first file replaces it rather than adding a second copy.
    run_job(dir.path(), &one_source_job(&a, &out, Some("aws_cur")))
        .await
        .unwrap();
    assert_eq!(lines(&query(&out, placed).await), first);
}
