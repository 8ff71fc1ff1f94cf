//! Reference tables the mappings look values up in: `schemas/lookups/<table>.csv`.
//!
//! Provider facts that are not billing data — Azure's unit-of-measure block sizes, region
//! spellings, resource types → FOCUS services — live as CSV files beside the FOCUS schema, so
//! a new region or unit needs a data change, not a release. The SQL reads them with
//! `tally_lookup('azure_regions', 'RegionId', 'OriginalValue', resource_location)`: keys are
//! compared trimmed and case-insensitively, the first matching row wins, and a key with no row
//! gives NULL (the mapping decides what that means; it never guesses).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Result, TallyError};
use crate::resources;

/// Key column positions → normalised key values → first matching row.
type Indexes = HashMap<Vec<usize>, Arc<HashMap<Vec<String>, usize>>>;

/// One reference table.
#[derive(Debug)]
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Index by key columns → key values (normalised) → first row.
    indexes: Mutex<Indexes>,
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

impl Table {
    /// Parses a CSV reference table (header row first).
    pub fn parse(path: &str, text: &str) -> Result<Table> {
        let bad = |m: String| TallyError::Internal(format!("{path}: {m}"));
        let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let columns: Vec<String> = r
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            rows.push(rec.iter().map(str::to_string).collect());
        }
        Ok(Table {
            columns,
            rows,
            indexes: Mutex::default(),
        })
    }

    fn column(&self, name: &str) -> std::result::Result<usize, String> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("no column {name:?}; it has {}", self.columns.join(", ")))
    }

    /// A prepared lookup of `result` by the `keys` columns (their index built once per table).
    pub fn resolve(
        &self,
        result: &str,
        keys: &[&str],
    ) -> std::result::Result<Resolved<'_>, String> {
        let out = self.column(result)?;
        let key_cols = keys
            .iter()
            .map(|k| self.column(k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let index = self
            .indexes
            .lock()
            .expect("lookup index")
            .entry(key_cols.clone())
            .or_insert_with(|| {
                let mut m = HashMap::new();
                for (i, row) in self.rows.iter().enumerate() {
                    let k: Vec<String> = key_cols.iter().map(|c| norm(&row[*c])).collect();
                    m.entry(k).or_insert(i);
                }
                Arc::new(m)
            })
            .clone();
        Ok(Resolved {
            table: self,
            out,
            index,
        })
    }

    /// The value of `result` in the first row whose `keys` columns equal `values`.
    pub fn get(
        &self,
        result: &str,
        keys: &[&str],
        values: &[&str],
    ) -> std::result::Result<Option<&str>, String> {
        Ok(self.resolve(result, keys)?.get(values))
    }
}

/// A lookup of one result column by given key columns, ready to answer many keys.
pub struct Resolved<'t> {
    table: &'t Table,
    out: usize,
    index: Arc<HashMap<Vec<String>, usize>>,
}

impl<'t> Resolved<'t> {
    /// The result for these key values (compared trimmed, case-insensitively), NULL as `None`.
    pub fn get(&self, values: &[&str]) -> Option<&'t str> {
        let k: Vec<String> = values.iter().map(|v| norm(v)).collect();
        self.index
            .get(&k)
            .map(|i| self.table.rows[*i][self.out].as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Every table under `schemas/lookups/`, loaded on first use.
pub fn table(name: &str) -> std::result::Result<&'static Table, String> {
    static TABLES: OnceLock<Mutex<HashMap<String, &'static Table>>> = OnceLock::new();
    let mut t = TABLES
        .get_or_init(Default::default)
        .lock()
        .expect("lookups");
    if let Some(hit) = t.get(name) {
        return Ok(hit);
    }
    let path = format!("schemas/lookups/{name}.csv");
    let text = resources::load(&path).map_err(|_| {
        format!(
            "no lookup table {name:?}; there are: {}",
            resources::list("schemas/lookups/")
                .iter()
                .filter_map(|p| p.strip_prefix("schemas/lookups/")?.strip_suffix(".csv"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let table: &'static Table = Box::leak(Box::new(
        Table::parse(&path, &text).map_err(|e| e.to_string())?,
    ));
    t.insert(name.to_string(), table);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_tables_answer_the_questions_the_mapping_asks() {
        let units = table("azure_pricing_units").unwrap();
        assert_eq!(
            units
                .get("PricingBlockSize", &["UnitOfMeasure"], &["10K"])
                .unwrap(),
            Some("10000")
        );
        assert_eq!(
            units
                .get("DistinctUnits", &["UnitOfMeasure"], &["1 hour"])
                .unwrap(),
            Some("Hours")
        );
        let regions = table("azure_regions").unwrap();
        assert_eq!(
            regions
                .get("RegionId", &["OriginalValue"], &[" CentralUS "])
                .unwrap(),
            Some("centralus")
        );
        let services = table("azure_services").unwrap();
        assert_eq!(
            services
                .get(
                    "ServiceName",
                    &["ConsumedService", "ResourceType"],
                    &["Microsoft.Compute", "microsoft.compute/virtualmachines"]
                )
                .unwrap(),
            Some("Virtual Machines")
        );
        assert_eq!(
            units
                .get("PricingBlockSize", &["UnitOfMeasure"], &["furlongs"])
                .unwrap(),
            None
        );
        assert!(
            units
                .get("Nope", &["UnitOfMeasure"], &["1"])
                .unwrap_err()
                .contains("no column")
        );
        assert!(table("nope").unwrap_err().contains("azure_regions"));
    }
}
