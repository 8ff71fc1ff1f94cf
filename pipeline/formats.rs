//! Source formats: one SQL file per provider format in `sql/normalize/`.
//!
//! Each file starts with a header of `-- @key: value` lines that tells the reader how to
//! prepare the raw table the SQL runs over:
//!
//! | key | meaning |
//! |---|---|
//! | `@format` | the format's name (what `format = "..."` in a job names) |
//! | `@provider` | provider slug for partitioning and `x_SourceProvider` |
//! | `@layout` | `plain`, or `aws_cur` (snake_case column names, `product` map flattened, tags folded) |
//! | `@detect` | columns whose presence identifies the format (all must be present) |
//! | `@text` | text columns the SQL reads (added as NULL when a file lacks them) |
//! | `@decimal` | columns parsed exactly into Decimal128(38,18); a bad value quarantines the row |
//! | `@timestamp` | columns parsed into UTC microseconds; a bad value quarantines the row |
//! | `@null_values` | extra spellings of NULL besides the empty string (e.g. `NULL`) |
//! | `@source_total` | the source's own cost column, summed for the reconciliation |
//! | `@source_currency`, `@source_period`, `@source_account` | how the source groups that total |
//! | `@source_period_grain` | `month` when `@source_period` is a usage time, not a billing period start |
//! | `@source_measure` | which FOCUS cost the source total equals: `BilledCost` (default) or `EffectiveCost`, optionally per parameter value (`BilledCost, EffectiveCost when cost_view = amortized`) |
//! | `@param` | a setting a job passes per source (`cost_view = actual, amortized`: name, allowed values, the first the default); the SQL reads it as `{{cost_view}}` |
//! | `@record` | columns that hold nested records or arrays (GCP `usage`, `credits`): a declared column `usage_amount` is taken from `usage`'s `amount`; JSON-lines files always get these columns, even when their first lines lack them |
//! | `@alias` | `canonical=other`: a column the file may spell differently (older export versions); renamed when the canonical one is absent |

use std::collections::BTreeMap;

use crate::error::{Result, TallyError};
use crate::resources;

/// The FOCUS cost column a source's own total is reconciled against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Measure {
    /// What the invoice charges (cash basis).
    BilledCost,
    /// Amortized cost after discounts and commitment purchases are spread.
    EffectiveCost,
}

impl Measure {
    /// The FOCUS column name.
    pub fn column(self) -> &'static str {
        match self {
            Measure::BilledCost => "BilledCost",
            Measure::EffectiveCost => "EffectiveCost",
        }
    }

    fn parse(s: &str) -> Option<Measure> {
        match s.trim() {
            "BilledCost" => Some(Measure::BilledCost),
            "EffectiveCost" => Some(Measure::EffectiveCost),
            _ => None,
        }
    }
}

/// A setting a job passes to a format per source (`[sources.params]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name, as the SQL reads it: `{{name}}`.
    pub name: String,
    /// Allowed values; the first is the default.
    pub values: Vec<String>,
}

/// How a format's raw columns are laid out before the SQL sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Columns as in the file.
    Plain,
    /// OCI cost reports: `lineItem/referenceNo` headers become `line_item_reference_no`, and
    /// the `tags/<namespace>.<key>` columns fold into a `tags` JSON column (keys as OCI writes them).
    OciCost,
    /// Azure cost details: EA/MCA headers in any casing (`CostInBillingCurrency`,
    /// `costInBillingCurrency`) become snake_case (`cost_in_billing_currency`).
    Azure,
    /// Exports with nested records (GCP billing export: `service`, `sku`, `usage`, `credits[]`):
    /// a declared column `usage_amount` the file lacks is taken from the `usage` record's
    /// `amount`; CSV headers spelled `usage.amount` become `usage_amount`.
    Nested,
    /// AWS CUR: legacy `lineItem/UnblendedCost` headers become `line_item_unblended_cost`
    /// (the Athena/CUR 2.0 spelling, ARN → `a_r_n`), CUR 2.0's `product` map is flattened into
    /// `product_<key>` columns and resource tags (columns or map) are folded into a `tags`
    /// JSON column.
    AwsCur,
}

/// One source format: its SQL and how to read the raw table for it.
#[derive(Debug, Clone)]
pub struct Format {
    /// Name.
    pub name: String,
    /// Provider slug.
    pub provider: String,
    /// Path of the SQL file.
    pub sql_path: String,
    /// SQL text.
    pub sql: String,
    /// Raw layout.
    pub layout: Layout,
    /// Columns that identify the format.
    pub detect: Vec<String>,
    /// Text columns used by the SQL.
    pub text: Vec<String>,
    /// Decimal columns.
    pub decimal: Vec<String>,
    /// Timestamp columns.
    pub timestamp: Vec<String>,
    /// Extra NULL spellings.
    pub null_values: Vec<String>,
    /// Reconciliation: source cost column.
    pub source_total: String,
    /// Reconciliation: currency column.
    pub source_currency: String,
    /// Reconciliation: billing period column (a timestamp column).
    pub source_period: String,
    /// Partition of pre-SQL quarantined rows: billing account column.
    pub source_account: String,
    /// When the source has no billing period column: `month` keys the source total by the
    /// calendar month of `source_period` (the mapping must derive BillingPeriodStart the same way).
    pub source_period_grain: Option<String>,
    /// Parameters the job may set per source.
    pub params: Vec<Param>,
    /// The `@source_measure` header: the default measure and overrides by parameter value.
    #[allow(clippy::type_complexity)]
    pub measure_spec: (Measure, Vec<(String, String, Measure)>),
    /// Which FOCUS cost the source total is reconciled against (after [`Format::with_params`]).
    pub measure: Measure,
    /// `canonical=other` column aliases, in header order.
    pub aliases: Vec<(String, String)>,
    /// Columns holding nested records (`@record`).
    pub records: Vec<String>,
    /// The SQL as written, `{{param}}` placeholders and all.
    pub template: String,
}

impl Format {
    /// Parses a normalize SQL file's header.
    pub fn parse(sql_path: &str, sql: String) -> Result<Format> {
        let h = Header::parse(&sql);
        let bad = |m: String| TallyError::Sql {
            file: sql_path.to_string(),
            message: m,
        };
        let one = |k: &str| {
            h.one(k)
                .ok_or_else(|| bad(format!("header lacks `-- @{k}:`")))
        };
        let list = |k: &str| h.list(k);
        let layout = match one("layout")?.as_str() {
            "plain" => Layout::Plain,
            "aws_cur" => Layout::AwsCur,
            "oci_cost" => Layout::OciCost,
            "azure" => Layout::Azure,
            "nested" => Layout::Nested,
            other => return Err(bad(format!("unknown @layout {other:?}"))),
        };
        let f = Format {
            name: one("format")?,
            provider: one("provider")?,
            sql_path: sql_path.to_string(),
            layout,
            detect: list("detect"),
            text: list("text"),
            decimal: list("decimal"),
            timestamp: list("timestamp"),
            null_values: list("null_values"),
            source_total: one("source_total")?,
            source_currency: one("source_currency")?,
            source_period: one("source_period")?,
            source_account: one("source_account")?,
            source_period_grain: h.one("source_period_grain"),
            params: h
                .lines("param")
                .iter()
                .map(|p| parse_param(p).ok_or_else(|| bad(format!("bad @param {p:?}; expected `name = value, value`"))))
                .collect::<Result<_>>()?,
            measure_spec: parse_measure(h.one("source_measure").as_deref())
                .ok_or_else(|| bad("bad @source_measure; expected `BilledCost` or `EffectiveCost`, optionally `, <M> when <param> = <value>`".into()))?,
            measure: Measure::BilledCost,
            aliases: list("alias")
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .map(|(c, o)| (c.trim().to_string(), o.trim().to_string()))
                        .ok_or_else(|| bad(format!("bad @alias {a:?}; expected canonical=other")))
                })
                .collect::<Result<_>>()?,
            records: list("record"),
            template: sql.clone(),
            sql,
        };
        if f.detect.is_empty() {
            return Err(bad("header needs `-- @detect:` columns".into()));
        }
        if !f.decimal.contains(&f.source_total) {
            return Err(bad(format!(
                "@source_total {} must be listed in @decimal",
                f.source_total
            )));
        }
        if !f.timestamp.contains(&f.source_period) {
            return Err(bad(format!(
                "@source_period {} must be listed in @timestamp",
                f.source_period
            )));
        }
        for (p, v, _) in &f.measure_spec.1 {
            if !f
                .params
                .iter()
                .any(|d| &d.name == p && d.values.contains(v))
            {
                return Err(bad(format!(
                    "@source_measure names {p} = {v}, which no @param allows"
                )));
            }
        }
        f.with_params(&BTreeMap::new())
            .map_err(|e| bad(format!("the defaults do not instantiate: {e}")))
    }

    /// The format with a source's parameters applied: `{{name}}` in the SQL replaced by the
    /// value (a job may only choose among the values the header allows, so nothing but those
    /// words reaches the SQL) and the measure chosen. Unknown names and values are refused.
    pub fn with_params(&self, given: &BTreeMap<String, String>) -> Result<Format> {
        let mut f = self.clone();
        f.sql = self.template.clone();
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                return Err(TallyError::Usage(format!(
                    "format {} has no parameter {name:?}; it takes: {}",
                    self.name,
                    if self.params.is_empty() {
                        "none".to_string()
                    } else {
                        self.params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
        }
        let mut chosen = BTreeMap::new();
        for p in &self.params {
            let v = given.get(&p.name).unwrap_or(&p.values[0]);
            if !p.values.contains(v) {
                return Err(TallyError::Usage(format!(
                    "format {}: {} = {v:?} is not one of {}",
                    self.name,
                    p.name,
                    p.values.join(", ")
                )));
            }
            f.sql = f.sql.replace(&format!("{{{{{}}}}}", p.name), v);
            f.template = self.template.clone();
            chosen.insert(p.name.clone(), v.clone());
        }
        f.measure = self.measure_spec.0;
        for (p, v, m) in &self.measure_spec.1 {
            if chosen.get(p) == Some(v) {
                f.measure = *m;
            }
        }
        Ok(f)
    }

    /// Every raw column the SQL may reference.
    pub fn declared_columns(&self) -> impl Iterator<Item = &String> {
        self.text.iter().chain(&self.decimal).chain(&self.timestamp)
    }

    /// The top-level fields a JSON-lines reader must always make columns of: the records and
    /// the declared columns that are not inside one.
    pub fn top_level_fields(&self) -> Vec<String> {
        let inside = |c: &String| {
            self.records.iter().any(|r| {
                c.len() > r.len() && c.starts_with(r.as_str()) && c.as_bytes()[r.len()] == b'_'
            })
        };
        self.records
            .iter()
            .chain(self.declared_columns().filter(|c| !inside(c)))
            .cloned()
            .collect()
    }
}

/// The `-- @key: value` lines at the head of a SQL file (a normalize mapping or a stage). A key
/// may be given on several lines; [`Header::list`] and [`Header::one`] read them together.
#[derive(Debug, Default)]
pub struct Header {
    lines: BTreeMap<String, Vec<String>>,
}

impl Header {
    /// Collects every `-- @key: value` line of `sql`.
    pub fn parse(sql: &str) -> Header {
        let mut h = Header::default();
        for line in sql.lines() {
            if let Some((k, v)) = line
                .trim()
                .strip_prefix("-- @")
                .and_then(|r| r.split_once(':'))
            {
                h.lines
                    .entry(k.trim().to_string())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
        h
    }

    /// The value of `key`, its lines joined with `,`; `None` when absent.
    pub fn one(&self, key: &str) -> Option<String> {
        self.lines.get(key).map(|v| v.join(","))
    }

    /// The comma-separated items of every `key` line, trimmed, empty ones dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.lines(key)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Each `key` line's value whole (for values that contain commas, like `@param`).
    pub fn lines(&self, key: &str) -> Vec<String> {
        self.lines
            .get(key)
            .map(|v| v.iter().filter(|s| !s.is_empty()).cloned().collect())
            .unwrap_or_default()
    }
}

/// `cost_view = actual, amortized` → a parameter.
fn parse_param(text: &str) -> Option<Param> {
    let (name, values) = text.split_once('=')?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let name = name.trim();
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (word(name) && !values.is_empty() && values.iter().all(|v| word(v))).then(|| Param {
        name: name.to_string(),
        values,
    })
}

/// `BilledCost` or `BilledCost, EffectiveCost when cost_view = amortized`.
#[allow(clippy::type_complexity)]
fn parse_measure(text: Option<&str>) -> Option<(Measure, Vec<(String, String, Measure)>)> {
    let Some(text) = text else {
        return Some((Measure::BilledCost, vec![]));
    };
    let mut parts = text.split(',');
    let default = Measure::parse(parts.next()?)?;
    let mut overrides = Vec::new();
    for part in parts {
        let (m, cond) = part.split_once(" when ")?;
        let (p, v) = cond.split_once('=')?;
        overrides.push((
            p.trim().to_string(),
            v.trim().to_string(),
            Measure::parse(m)?,
        ));
    }
    Some((default, overrides))
}

/// All known formats, in a stable order.
pub fn all() -> Result<Vec<Format>> {
    let mut out = Vec::new();
    for path in resources::list("sql/normalize/") {
        out.push(Format::parse(path, resources::load(path)?)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds a format by name.
pub fn by_name(name: &str) -> Result<Format> {
    let all = all()?;
    let names: Vec<_> = all.iter().map(|f| f.name.clone()).collect();
    all.into_iter().find(|f| f.name == name).ok_or_else(|| {
        TallyError::Usage(format!(
            "unknown format {name:?}; known: {}",
            names.join(", ")
        ))
    })
}

/// Picks the format whose `@detect` columns are all in `columns` (already in that format's layout).
/// Refuses a file that matches none, or more than one.
pub fn detect<'a>(candidates: &'a [(Format, Vec<String>)], file: &str) -> Result<&'a Format> {
    let hits: Vec<&Format> = candidates
        .iter()
        .filter(|(f, cols)| f.detect.iter().all(|d| cols.contains(d)))
        .map(|(f, _)| f)
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(TallyError::BadFile {
            file: file.to_string(),
            message: format!(
                "cannot tell which export format this is: its header matches none of {}; name one with `format = \"...\"`",
                candidates
                    .iter()
                    .map(|(f, _)| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        many => Err(TallyError::BadFile {
            file: file.to_string(),
            message: format!(
                "header matches several formats ({}); name one with `format = \"...\"`",
                many.iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_format_parses() {
        let all = all().unwrap();
        assert!(all.iter().any(|f| f.name == "aws_cur"));
        assert!(all.iter().any(|f| f.name == "focus"));
    }

    #[test]
    fn every_declared_column_is_read_and_every_alias_names_one() {
        // A declared column is read, typed and held to its type on every row (a value that does
        // not parse quarantines the row), so one the SQL never reads would only cost time and
        // refuse rows for data nobody uses.
        for f in all().unwrap() {
            let body: String = f
                .sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            let unread: Vec<&String> = f
                .declared_columns()
                .filter(|c| {
                    !regex::Regex::new(&format!(r"\b{}\b", regex::escape(c)))
                        .unwrap()
                        .is_match(&body)
                })
                .collect();
            assert!(
                unread.is_empty(),
                "{}: declared but never read: {unread:?}",
                f.sql_path
            );
            // An alias only renames a file's column to a declared one; any other is dead.
            let declared: Vec<&String> = f.declared_columns().collect();
            let dead: Vec<&String> = f
                .aliases
                .iter()
                .map(|(canonical, _)| canonical)
                .filter(|c| !declared.contains(c))
                .collect();
            assert!(
                dead.is_empty(),
                "{}: aliases to undeclared columns: {dead:?}",
                f.sql_path
            );
        }
    }

    #[test]
    fn params_choose_the_sql_and_the_measure() {
        let azure = by_name("azure_cost_details").unwrap();
        assert_eq!(azure.measure, Measure::BilledCost);
        assert!(
            !azure.sql.contains("{{cost_view}}") && azure.sql.contains("'actual' = 'amortized'")
        );
        let given = BTreeMap::from([("cost_view".to_string(), "amortized".to_string())]);
        let am = azure.with_params(&given).unwrap();
        assert_eq!(am.measure, Measure::EffectiveCost);
        assert!(am.sql.contains("'amortized' = 'amortized'"));
        // Back to the default from an instantiated format: the template is kept.
        assert_eq!(
            am.with_params(&BTreeMap::new()).unwrap().measure,
            Measure::BilledCost
        );
        let bad = BTreeMap::from([("cost_view".to_string(), "x' OR '1".to_string())]);
        assert!(
            azure
                .with_params(&bad)
                .unwrap_err()
                .to_string()
                .contains("not one of")
        );
        let unknown = BTreeMap::from([("view".to_string(), "actual".to_string())]);
        assert!(
            azure
                .with_params(&unknown)
                .unwrap_err()
                .to_string()
                .contains("no parameter")
        );
        assert!(
            by_name("aws_cur")
                .unwrap()
                .with_params(&given)
                .unwrap_err()
                .to_string()
                .contains("none")
        );
    }

    #[test]
    fn header_errors_name_the_key() {
        let e = Format::parse("x.sql", "-- @format: x\nSELECT 1".into()).unwrap_err();
        assert!(
            e.to_string().contains("@layout") || e.to_string().contains("@provider"),
            "{e}"
        );
    }
}
