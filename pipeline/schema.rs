//! The FOCUS schema tally writes, loaded from `schemas/` (data, not code).
//!
//! * `focus_1_4_cost_and_usage.psv`: the 65 FOCUS 1.4 CostAndUsage columns with type, level,
//!   nullability and allowed values.
//! * `tally_columns.psv`: the `x_` columns tally adds (lineage and provider detail).
//! * `focus_1_4_row_rules.toml`: per-row rules beyond type/null/enum, as SQL predicates.
//!
//! Arrow mapping: Decimal → Decimal128(38,18); Date/Time → Timestamp(µs, "UTC");
//! String and JSON → Utf8; Integer → Int64.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use crate::decimal;
use crate::error::{Result, TallyError};
use crate::job::Severity;
use crate::resources;
use crate::source::typing::timestamp_type;

/// A column's FOCUS data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FocusType {
    /// String.
    String,
    /// Decimal.
    Decimal,
    /// Date/Time.
    DateTime,
    /// JSON (serialized).
    Json,
    /// Integer (tally columns only).
    Integer,
}

impl FocusType {
    /// The Arrow type tally writes.
    pub fn arrow(self) -> DataType {
        match self {
            FocusType::String | FocusType::Json => DataType::Utf8,
            FocusType::Decimal => decimal::data_type(),
            FocusType::DateTime => timestamp_type(),
            FocusType::Integer => DataType::Int64,
        }
    }

    /// The SQL type name for a CAST.
    pub fn sql(self) -> &'static str {
        match self {
            FocusType::String | FocusType::Json => "VARCHAR",
            FocusType::Decimal => "DECIMAL(38, 18)",
            FocusType::DateTime => "TIMESTAMP",
            FocusType::Integer => "BIGINT",
        }
    }
}

/// One column of the output schema.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: FocusType,
    /// Mandatory / Conditional / Recommended (FOCUS), or `tally`.
    pub level: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Allowed values (empty: any).
    pub allowed: Vec<String>,
    /// FOCUS version that introduced it.
    pub introduced: String,
}

/// A per-row rule.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Rule {
    /// Stable id, reported in the quarantine table and the manifest.
    pub id: String,
    /// The column a violation is reported against.
    pub column: String,
    /// Why it matters.
    pub reason: String,
    /// SQL predicate that must be TRUE.
    pub sql: String,
    /// `quarantine` (default) or `cost_identity`.
    #[serde(default)]
    pub severity: Option<String>,
}

impl Rule {
    /// The severity in force for this rule under a job's settings.
    pub fn effective_severity(&self, cost_identity: Severity) -> Severity {
        match self.severity.as_deref() {
            Some("cost_identity") => cost_identity,
            Some("warn") => Severity::Warn,
            _ => Severity::Quarantine,
        }
    }
}

#[derive(Deserialize)]
struct RulesFile {
    rule: Vec<Rule>,
}

/// The FOCUS 1.4 CostAndUsage schema plus tally's columns and the row rules.
#[derive(Debug, Clone)]
pub struct FocusSchema {
    /// The 65 FOCUS columns, in the model's order.
    pub focus: Vec<Column>,
    /// tally's `x_` columns.
    pub extensions: Vec<Column>,
    /// Every per-row rule: generated from the columns, then the rules file.
    pub rules: Vec<Rule>,
}

/// Partition columns of the cost table (and the quarantine table).
pub const PARTITION_COLUMNS: [&str; 3] =
    ["x_SourceProvider", "BillingAccountId", "x_BillingPeriod"];

fn psv_rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('|').collect())
}

fn parse_type(t: &str) -> Result<FocusType> {
    Ok(match t {
        "String" => FocusType::String,
        "Decimal" => FocusType::Decimal,
        "Date/Time" | "DateTime" => FocusType::DateTime,
        "JSON" => FocusType::Json,
        "Integer" => FocusType::Integer,
        other => {
            return Err(TallyError::Internal(format!(
                "schema: unknown data type {other:?}"
            )));
        }
    })
}

/// SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl FocusSchema {
    /// Loads the schema files.
    pub fn load() -> Result<FocusSchema> {
        let mut focus = Vec::new();
        for r in psv_rows(&resources::load("schemas/focus_1_4_cost_and_usage.psv")?) {
            let allowed = if r[8] == "None" {
                vec![]
            } else {
                r[8].split(',').map(str::to_string).collect()
            };
            focus.push(Column {
                name: r[0].to_string(),
                ty: parse_type(r[1])?,
                level: r[2].to_string(),
                // A Conditional column is absent when a provider lacks the feature; in one table of
                // many providers that absence is NULL, so only Mandatory and Recommended columns
                // are NOT NULL here.
                nullable: r[3] != "NOTNULL" || r[2] == "Conditional",
                allowed,
                introduced: r[5].to_string(),
            });
        }
        let mut extensions = Vec::new();
        for r in psv_rows(&resources::load("schemas/tally_columns.psv")?) {
            if !r[0].starts_with("x_") {
                return Err(TallyError::Internal(format!(
                    "tally column {} must start with x_",
                    r[0]
                )));
            }
            extensions.push(Column {
                name: r[0].to_string(),
                ty: parse_type(r[1])?,
                level: "tally".into(),
                nullable: r[2] != "NOTNULL",
                allowed: vec![],
                introduced: String::new(),
            });
        }
        let file: RulesFile = toml::from_str(&resources::load("schemas/focus_1_4_row_rules.toml")?)
            .map_err(|e| TallyError::Internal(format!("schemas/focus_1_4_row_rules.toml: {e}")))?;
        let mut rules = Vec::new();
        for c in &focus {
            if !c.nullable {
                rules.push(Rule {
                    id: format!("{}-not-null", c.name),
                    column: c.name.clone(),
                    reason: format!("{} must not be null", c.name),
                    sql: format!("{} IS NOT NULL", c.name),
                    severity: None,
                });
            }
            if !c.allowed.is_empty() {
                let list: Vec<String> = c.allowed.iter().map(|v| sql_str(v)).collect();
                rules.push(Rule {
                    id: format!("{}-allowed-values", c.name),
                    column: c.name.clone(),
                    reason: format!("{} must be one of: {}", c.name, c.allowed.join(", ")),
                    sql: format!("{n} IS NULL OR {n} IN ({})", list.join(", "), n = c.name),
                    severity: None,
                });
            }
        }
        rules.push(Rule {
            id: "BillingCurrency-format".into(),
            column: "BillingCurrency".into(),
            reason: "BillingCurrency must be an ISO 4217 code (three capital letters)".into(),
            sql: "regexp_like(BillingCurrency, '^[A-Z]{3}$')".into(),
            severity: None,
        });
        rules.extend(file.rule);
        Ok(FocusSchema {
            focus,
            extensions,
            rules,
        })
    }

    /// All output columns: FOCUS first, then tally's.
    pub fn columns(&self) -> impl Iterator<Item = &Column> {
        self.focus.iter().chain(&self.extensions)
    }

    /// The Arrow schema of the cost table.
    pub fn arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .map(|c| Field::new(&c.name, c.ty.arrow(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// Looks a column up by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_all_65_focus_columns_and_x_prefixed_extensions() {
        let s = FocusSchema::load().unwrap();
        assert_eq!(s.focus.len(), 65);
        assert!(s.extensions.iter().all(|c| c.name.starts_with("x_")));
        assert_eq!(s.column("BilledCost").unwrap().ty, FocusType::Decimal);
        assert!(!s.column("BilledCost").unwrap().nullable);
        assert!(
            s.column("ChargeCategory")
                .unwrap()
                .allowed
                .contains(&"Purchase".to_string())
        );
        assert!(s.rules.iter().any(|r| r.id == "ListCost-identity"));
        let ids: std::collections::HashSet<_> = s.rules.iter().map(|r| &r.id).collect();
        assert_eq!(ids.len(), s.rules.len(), "rule ids are unique");
    }
}
