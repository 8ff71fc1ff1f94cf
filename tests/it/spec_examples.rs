//! The FOCUS spec's worked examples (commitment purchase/usage/flexibility) as dataset-rule cases.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

fn examples() -> Vec<PathBuf> {
    let base = root().join("tests/data/spec_examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn validate_json(file: &std::path::Path) -> (i32, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["validate", "--json", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json_end = stdout.rfind('}').unwrap();
    (
        o.status.code().unwrap(),
        serde_json::from_str(&stdout[..=json_end]).unwrap(),
    )
}

fn rule<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
}

#[test]
fn every_commitment_example_balances() {
    let files = examples();
    assert!(
        files.len() >= 4,
        "the flexibility examples are bundled: {files:?}"
    );
    for f in files {
        let (_, report) = validate_json(&f);
        let r = rule(&report, "commitment-balance");
        assert_eq!(r["status"], "pass", "{}: {r}", f.display());
        assert_eq!(
            rule(&report, "parse-decimal")["status"],
            "pass",
            "{}",
            f.display()
        );
    }
}

#[test]
fn changing_one_amount_breaks_the_balance_and_names_the_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("tests/data/spec_examples/one_hundred_percent_utilization_without_commitment_discount_flexibility.csv");
    let text = std::fs::read_to_string(src).unwrap();
    // The purchase bills 1.50 for the hour; make it 1.51.
    let changed = text.replacen(",1.50,1.50,0.00,", ",1.50,1.51,0.00,", 1);
    assert_ne!(changed, text);
    let f = dir.path().join("changed.csv");
    std::fs::write(&f, changed).unwrap();
    let (code, report) = validate_json(&f);
    assert_eq!(code, 5);
    let r = rule(&report, "commitment-balance");
    assert_eq!(r["status"], "fail");
    let example = r["examples"][0].as_str().unwrap();
    assert!(
        example.contains("CommitmentDiscountId=<my-commitment-discount-id>"),
        "{example}"
    );
    assert!(
        example.contains("usage_effective_cost=1.5")
            && example.contains("purchase_billed_cost=1.51"),
        "{example}"
    );
}
