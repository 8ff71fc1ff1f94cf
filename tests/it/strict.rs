//! tally's own strict checks catch what the official validator lets through.

use std::process::Command;

use crate::common::*;

/// The generated FOCUS 1.2 file with one cell changed (`record` is 1-based, header excluded).
fn focus_with(column: &str, record: usize, value: &str) -> String {
    let text =
        std::fs::read_to_string(root().join("sample-data/focus/focus_1_2_aws_generated.csv"))
            .unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = lines[0].split(',').position(|h| h == column).unwrap();
    let mut cells: Vec<String> = lines[record].split(',').map(String::from).collect();
    cells[i] = value.into();
    lines[record] = cells.join(",");
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_enum_among_good_rows_is_quarantined_with_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("focus.csv");
    std::fs::write(&src, focus_with("ChargeCategory", 37, "Refund")).unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &one_source_job(&src, &out, None))
        .await
        .unwrap();
    assert_eq!(m.totals.rows_quarantined, 1);
    assert_eq!(m.totals.rows_written, 199);
    assert_eq!(
        m.quarantined_by_rule.get("ChargeCategory-allowed-values"),
        Some(&1)
    );
    let q = lines(
        &query(
            &out,
            "SELECT x_SourceFile, x_SourceRow, ColumnName, RuleId, Value FROM quarantine",
        )
        .await,
    );
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0],
        format!(
            "file://{} | 37 | ChargeCategory | ChargeCategory-allowed-values | Refund",
            src.display()
        )
    );
    // The reconciliation still holds: the refused row's amount is in quarantine.
    assert!(m.reconciliation.iter().all(|r| r.status == "match"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cost_identity_off_by_one_unit_in_the_last_place_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("focus.csv");
    // Record 2: ListUnitPrice 0.023 × PricingQuantity 6750.6728 = 155.2654744; write ...745.
    std::fs::write(&src, focus_with("ListCost", 2, "155.2654745")).unwrap();
    let out = dir.path().join("out");
    let m = run_job(dir.path(), &one_source_job(&src, &out, None))
        .await
        .unwrap();
    assert_eq!(
        m.quarantined_by_rule.get("ListCost-identity"),
        Some(&1),
        "{:?}",
        m.quarantined_by_rule
    );
    let q = lines(
        &query(
            &out,
            "SELECT x_SourceRow, ColumnName, Value FROM quarantine",
        )
        .await,
    );
    assert_eq!(q, vec!["2 | ListCost | 155.2654745"]);

    // The untouched file passes the same rule on every row.
    let clean = root().join("sample-data/focus/focus_1_2_aws_generated.csv");
    let m = run_job(
        dir.path(),
        &one_source_job(&clean, &dir.path().join("clean"), None),
    )
    .await
    .unwrap();
    assert_eq!(m.totals.rows_quarantined, 0, "{:?}", m.quarantined_by_rule);
}

#[test]
fn validate_flags_a_custom_column_without_the_x_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("sample-data/focus/focus_1_2_aws_generated.csv"))
            .unwrap();
    let with_col: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}", if i == 0 { "CostCenter" } else { "cc-42" }))
        .collect();
    let f = dir.path().join("custom.csv");
    std::fs::write(&f, with_col.join("\n") + "\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["validate", f.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{stdout}");
    assert!(
        stdout.contains("FAIL Custom-columns-x-prefixed"),
        "{stdout}"
    );
    assert!(stdout.contains("CostCenter"), "{stdout}");

    // Renamed to x_CostCenter it is fine, and the file is otherwise clean.
    let fixed = with_col
        .join("\n")
        .replacen("CostCenter", "x_CostCenter", 1)
        + "\n";
    std::fs::write(&f, fixed).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["validate", f.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ok   Custom-columns-x-prefixed"),
        "{stdout}"
    );
}
