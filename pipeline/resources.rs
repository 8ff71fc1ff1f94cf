//! The SQL and schema files tally runs, embedded at build time.
//!
//! Every transformation lives in `sql/` and every schema in `schemas/` as readable files.
//! They are compiled into the binary so that `tally` runs from anywhere; setting
//! `TALLY_RESOURCES=<dir>` (a folder holding `sql/` and `schemas/`) makes tally read them from
//! disk instead, so a mapping can be changed without a release. The manifest records the
//! SHA-256 of every file used.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::error::{Result, TallyError};

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../", $path)))),*]
    };
}

/// Every resource file, by its path relative to the project root.
pub static EMBEDDED: &[(&str, &str)] = embed![
    "schemas/focus_1_4_cost_and_usage.psv",
    "schemas/focus_1_2_cost_and_usage_columns.txt",
    "schemas/focus_1_4_row_rules.toml",
    "schemas/tally_columns.psv",
    "schemas/focus_1_4_service_subcategories.psv",
    "schemas/ai_token_meters.psv",
    "schemas/lookups/azure_pricing_units.csv",
    "schemas/lookups/azure_regions.csv",
    "schemas/lookups/azure_services.csv",
    "schemas/lookups/gcp_services.csv",
    "schemas/lookups/gcp_units.csv",
    "sql/normalize/gcp_billing.sql",
    "sql/normalize/aws_cur.sql",
    "sql/normalize/azure_cost_details.sql",
    "sql/normalize/focus.sql",
    "sql/normalize/oci_cost.sql",
    "sql/projections/focus_1_2.sql",
    "sql/checks/commitment_balance.sql",
    "sql/stages/invoice_reconciliation.sql",
    "schemas/inputs/invoices.psv",
    "schemas/inputs/allocation_rules.psv",
    "schemas/inputs/tag_aliases.psv",
    "schemas/inputs/usage_metrics.psv",
    "sql/stages/allocated_costs.sql",
    "sql/stages/tag_coverage.sql",
    "sql/stages/chargeback_lines.sql",
    "sql/stages/chargeback_statements.sql",
    "sql/stages/unit_costs.sql",
    "schemas/inputs/chargeback_basis.psv",
    "schemas/inputs/account_tags.psv",
    "schemas/inputs/invoice_detail.psv",
];

fn used() -> &'static Mutex<BTreeMap<String, String>> {
    static USED: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    USED.get_or_init(Default::default)
}

/// Reads one resource (from `TALLY_RESOURCES` when set) and records its hash as used.
pub fn load(path: &str) -> Result<String> {
    let text = match std::env::var_os("TALLY_RESOURCES") {
        Some(dir) => {
            let p = std::path::Path::new(&dir).join(path);
            std::fs::read_to_string(&p).map_err(|e| TallyError::Io {
                path: p.display().to_string(),
                source: e,
            })?
        }
        None => EMBEDDED
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| TallyError::Internal(format!("no embedded resource {path}")))?,
    };
    used()
        .lock()
        .expect("resource registry")
        .insert(path.to_string(), sha256_hex(text.as_bytes()));
    Ok(text)
}

/// Paths of the embedded files under a folder prefix (e.g. `sql/normalize/`).
pub fn list(prefix: &str) -> Vec<&'static str> {
    EMBEDDED
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// SHA-256 of every resource loaded so far, by path.
pub fn used_hashes() -> BTreeMap<String, String> {
    used().lock().expect("resource registry").clone()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
