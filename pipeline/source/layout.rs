//! Layout adapters: bring a provider's raw columns into the one shape its SQL expects.
//!
//! The AWS CUR's three layouts differ in spelling, not meaning: legacy CSV
//! `lineItem/UnblendedCost`, Athena/Parquet `line_item_unblended_cost` (ARN as `a_r_n`) and
//! CUR 2.0 (snake_case plus `product` and `resource_tags` maps). OCI cost reports use the same
//! `group/name` headers with one column per tag (`tags/<namespace>.<key>`). Azure cost details
//! change casing and names between EA, MCA and export versions; GCP's billing export nests
//! records (`usage.amount`). Older names are renamed by the format's `@alias` header.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::formats::{Format, Layout};

/// The column name a raw column has after the layout adapter.
pub fn canonical_name(layout: Layout, name: &str) -> String {
    match layout {
        Layout::Plain => name.to_string(),
        Layout::AwsCur | Layout::OciCost => aws_snake_case(name),
        Layout::Azure => snake_case(name),
        Layout::Nested => name
            .trim()
            .to_ascii_lowercase()
            .replace(['.', ' ', '/'], "_"),
    }
}

/// `CostInBillingCurrency`, `costInBillingCurrency` → `cost_in_billing_currency`;
/// `PayGPrice` → `pay_g_price`; `ResourceID` → `resource_id`; spaces and dots → `_`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.trim().chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' || c == '.' || c == '/' || c == '-' {
            if !out.ends_with('_') {
                out.push('_');
            }
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if (prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower))
                && !out.ends_with('_')
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Finds `path` (`amount`, `effective_price`, `labels`) in a JSON value: as one key, or split at
/// an underscore into a key and a path below it (`adjustment_info` → `adjustment_info`, or
/// `price_unit` → `price` → `unit`).
fn json_path<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let obj = v.as_object()?;
    if let Some(hit) = obj.get(path) {
        return Some(hit);
    }
    path.match_indices('_').find_map(|(i, _)| {
        obj.get(&path[..i])
            .and_then(|inner| json_path(inner, &path[i + 1..]))
    })
}

/// `lineItem/UnblendedCost` → `line_item_unblended_cost`; `reservation/ReservationARN` →
/// `reservation_reservation_a_r_n` (the Athena spelling). Names already in snake_case are kept.
pub fn aws_snake_case(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 8);
    let mut prev_sep = true;
    for c in name.chars() {
        if c == '/' {
            out.push('_');
            prev_sep = true;
        } else if c.is_ascii_uppercase() {
            if !prev_sep {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_sep = false;
        } else {
            out.push(c);
            prev_sep = false;
        }
    }
    out
}

/// How one source column feeds the AWS `tags` JSON.
#[derive(Debug, Clone)]
enum TagSource {
    /// A single tag per column (`resourceTags/user:Env`, `resource_tags_user_env`); the tag key.
    Column(String),
    /// A JSON object of tags (CUR 2.0 `resource_tags`).
    Map,
}

/// FOCUS tag key for an AWS tag key: user tags lose their `user` prefix, AWS-generated
/// tags keep theirs as `aws:`.
fn aws_tag_key(raw: &str) -> String {
    for p in ["user:", "user_"] {
        if let Some(k) = raw.strip_prefix(p) {
            return k.to_string();
        }
    }
    for p in ["aws:", "aws_"] {
        if let Some(k) = raw.strip_prefix(p) {
            return format!("aws:{k}");
        }
    }
    raw.to_string()
}

/// A prepared adapter for one file's header.
pub struct Adapter {
    renamed: Vec<String>,
    tag_sources: Vec<(usize, TagSource)>,
    product_map: Option<usize>,
    /// (column, record column, path): declared columns the file lacks, taken from inside a
    /// map or record column (CUR 2.0 `product`, GCP `usage`).
    fills: Vec<(String, usize, String)>,
}

impl Adapter {
    /// Plans the adaptation of a file with these (original) column names for a format.
    pub fn new(format: &Format, names: &[String]) -> Adapter {
        let mut renamed: Vec<String> = names
            .iter()
            .map(|n| canonical_name(format.layout, n))
            .collect();
        for (canonical, other) in &format.aliases {
            if !renamed.contains(canonical)
                && let Some(i) = renamed.iter().position(|n| n == other)
            {
                renamed[i] = canonical.clone();
            }
        }
        let mut tag_sources = Vec::new();
        let mut product_map = None;
        let mut fills = Vec::new();
        if format.layout == Layout::OciCost {
            for (i, orig) in names.iter().enumerate() {
                if let Some(k) = orig.strip_prefix("tags/") {
                    tag_sources.push((i, TagSource::Column(k.to_string())));
                }
            }
        }
        if format.layout == Layout::AwsCur {
            for (i, (orig, canon)) in names.iter().zip(&renamed).enumerate() {
                if let Some(k) = orig.strip_prefix("resourceTags/") {
                    tag_sources.push((i, TagSource::Column(aws_tag_key(k))));
                } else if canon == "resource_tags" {
                    tag_sources.push((i, TagSource::Map));
                } else if let Some(k) = canon.strip_prefix("resource_tags_") {
                    tag_sources.push((i, TagSource::Column(aws_tag_key(k))));
                } else if canon == "product" {
                    product_map = Some(i);
                }
            }
            if let Some(pm) = product_map {
                for c in format.declared_columns() {
                    if let Some(key) = c.strip_prefix("product_")
                        && !renamed.contains(c)
                    {
                        fills.push((c.clone(), pm, key.to_string()));
                    }
                }
            }
        }
        if format.layout == Layout::Nested {
            for c in format.declared_columns() {
                if renamed.contains(c) {
                    continue;
                }
                // The longest column name that prefixes it: `adjustment_info_id` comes from
                // `adjustment_info`, not from a column `adjustment`.
                let parent = renamed
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| format.records.is_empty() || format.records.contains(p))
                    .filter(|(_, p)| {
                        c.len() > p.len() + 1
                            && c.starts_with(p.as_str())
                            && c.as_bytes()[p.len()] == b'_'
                    })
                    .max_by_key(|(_, p)| p.len());
                if let Some((i, p)) = parent {
                    fills.push((c.clone(), i, c[p.len() + 1..].to_string()));
                }
            }
        }
        Adapter {
            renamed,
            tag_sources,
            product_map,
            fills,
        }
    }

    /// Whether the adapter itself reads column `i` of the file (a tag column, a tag or product map).
    pub fn consumes(&self, i: usize) -> bool {
        self.product_map == Some(i)
            || self.tag_sources.iter().any(|(t, _)| *t == i)
            || self.fills.iter().any(|(_, f, _)| *f == i)
    }

    /// Column names after adaptation, before derived columns are added.
    pub fn names(&self) -> &[String] {
        &self.renamed
    }

    /// Applies the adapter to one batch (text, but for columns the reader kept typed; the
    /// columns the adapter consumes are always text).
    pub fn apply(&self, batch: &RecordBatch) -> RecordBatch {
        // Columns keep the type the reader gave them (text, or Parquet numbers and times it
        // handed over typed).
        let mut fields: Vec<Field> = self
            .renamed
            .iter()
            .zip(batch.columns())
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect();
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        if !self.tag_sources.is_empty() && !self.renamed.iter().any(|n| n == "tags") {
            fields.push(Field::new("tags", DataType::Utf8, true));
            cols.push(Arc::new(self.fold_tags(batch)));
        }
        // Declared columns that live inside a map or record column: parse each source cell
        // once for all the columns taken from it.
        let mut by_source: BTreeMap<usize, Vec<(&String, &String)>> = BTreeMap::new();
        for (col, src, path) in &self.fills {
            by_source.entry(*src).or_default().push((col, path));
        }
        for (src, wanted) in by_source {
            let map = batch
                .column(src)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text");
            let mut builders: Vec<StringBuilder> = wanted
                .iter()
                .map(|_| StringBuilder::with_capacity(map.len(), map.len() * 8))
                .collect();
            for r in 0..map.len() {
                let parsed = (!map.is_null(r))
                    .then(|| serde_json::from_str::<serde_json::Value>(map.value(r)).ok())
                    .flatten();
                for ((_, path), b) in wanted.iter().zip(&mut builders) {
                    let v = parsed
                        .as_ref()
                        .and_then(|v| json_path(v, path))
                        .and_then(json_scalar_text);
                    b.append_option(v.filter(|s| !s.is_empty()));
                }
            }
            for ((col, _), mut b) in wanted.into_iter().zip(builders) {
                fields.push(Field::new(col, DataType::Utf8, true));
                cols.push(Arc::new(b.finish()));
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        RecordBatch::try_new(schema, cols).expect("adapter keeps row counts")
    }

    /// When every tag comes from a column of its own: the keys in sorted order, each with its
    /// columns in header order (a later non-empty cell wins, as a map insert would have it).
    fn tag_columns_by_key(&self) -> Option<Vec<(&str, Vec<usize>)>> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, src) in &self.tag_sources {
            match src {
                TagSource::Column(key) => by_key.entry(key.as_str()).or_default().push(*i),
                TagSource::Map => return None,
            }
        }
        Some(by_key.into_iter().collect())
    }

    fn fold_tags(&self, batch: &RecordBatch) -> StringArray {
        let n = batch.num_rows();
        let mut b = StringBuilder::with_capacity(n, n * 16);
        let text = |i: usize| batch.column(i).as_string::<i32>();
        if let Some(by_key) = self.tag_columns_by_key() {
            // Tags only in columns of their own (CUR CSV and Athena Parquet): the object is
            // written straight from the cells, keys in order, with no map built per row.
            let by_key: Vec<(&str, Vec<&StringArray>)> = by_key
                .into_iter()
                .map(|(k, cols)| (k, cols.into_iter().map(text).collect()))
                .collect();
            let mut json = Vec::with_capacity(256);
            for r in 0..n {
                if tags_object(&by_key, r, &mut json) {
                    b.append_value(std::str::from_utf8(&json).expect("JSON of text is text"));
                } else {
                    b.append_null();
                }
            }
            return b.finish();
        }
        for r in 0..n {
            let mut tags: BTreeMap<String, String> = BTreeMap::new();
            for (i, src) in &self.tag_sources {
                let col = text(*i);
                if col.is_null(r) || col.value(r).is_empty() {
                    continue;
                }
                match src {
                    TagSource::Column(key) => {
                        tags.insert(key.clone(), col.value(r).to_string());
                    }
                    TagSource::Map => {
                        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(col.value(r))
                        {
                            for (k, v) in m {
                                if let Some(v) = json_scalar_text(&v).filter(|v| !v.is_empty()) {
                                    tags.insert(aws_tag_key(&k), v);
                                }
                            }
                        }
                    }
                }
            }
            if tags.is_empty() {
                b.append_null();
            } else {
                b.append_value(serde_json::to_string(&tags).expect("tags serialize"));
            }
        }
        b.finish()
    }
}

/// Writes row `r`'s tags as a JSON object into `out` (keys in the order given, each key's
/// value its last non-empty cell); false when the row has none.
fn tags_object(by_key: &[(&str, Vec<&StringArray>)], r: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    for (key, cols) in by_key {
        let value = cols
            .iter()
            .rev()
            .find(|c| c.is_valid(r) && !c.value(r).is_empty())
            .map(|c| c.value(r));
        if let Some(v) = value {
            out.push(if out.is_empty() { b'{' } else { b',' });
            serde_json::to_writer(&mut *out, key).expect("writes to memory");
            out.push(b':');
            serde_json::to_writer(&mut *out, v).expect("writes to memory");
        }
    }
    if out.is_empty() {
        return false;
    }
    out.push(b'}');
    true
}

fn json_scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_columns_write_the_object_a_sorted_map_would() {
        // Keys out of order, two columns for one key (the later non-empty one wins), NULLs,
        // empty cells and values that need escaping.
        let cells = [
            Some("a\"b"),
            None,
            Some(""),
            Some("x\\y"),
            Some("\u{e9}t\u{e9}"),
            Some("tab\there"),
        ];
        let keys = ["team", "env", "aws:createdBy", "env", "Cost Center", "z\"q"];
        let n = 200;
        let cols: Vec<StringArray> = (0..keys.len())
            .map(|c| StringArray::from_iter((0..n).map(|r| cells[(r * (c + 2) + c) % cells.len()])))
            .collect();
        let mut by_key: BTreeMap<&str, Vec<&StringArray>> = BTreeMap::new();
        for (k, c) in keys.iter().zip(&cols) {
            by_key.entry(k).or_default().push(c);
        }
        let by_key: Vec<(&str, Vec<&StringArray>)> = by_key.into_iter().collect();
        let mut out = Vec::new();
        let mut seen_objects = 0;
        for r in 0..n {
            let mut want: BTreeMap<String, String> = BTreeMap::new();
            for (k, c) in keys.iter().zip(&cols) {
                if c.is_valid(r) && !c.value(r).is_empty() {
                    want.insert(k.to_string(), c.value(r).to_string());
                }
            }
            let wrote = tags_object(&by_key, r, &mut out);
            assert_eq!(wrote, !want.is_empty(), "row {r}");
            if wrote {
                seen_objects += 1;
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    serde_json::to_string(&want).unwrap(),
                    "row {r}"
                );
            }
        }
        assert!(seen_objects > 100, "{seen_objects}");
    }

    #[test]
    fn legacy_cur_names_become_athena_names() {
        assert_eq!(
            aws_snake_case("lineItem/UnblendedCost"),
            "line_item_unblended_cost"
        );
        assert_eq!(
            aws_snake_case("reservation/ReservationARN"),
            "reservation_reservation_a_r_n"
        );
        assert_eq!(
            aws_snake_case("savingsPlan/SavingsPlanARN"),
            "savings_plan_savings_plan_a_r_n"
        );
        assert_eq!(aws_snake_case("product/servicecode"), "product_servicecode");
        assert_eq!(
            aws_snake_case("pricing/publicOnDemandCost"),
            "pricing_public_on_demand_cost"
        );
        assert_eq!(
            aws_snake_case("line_item_unblended_cost"),
            "line_item_unblended_cost"
        );
    }

    #[test]
    fn azure_names_become_snake_case() {
        for (a, b) in [
            ("CostInBillingCurrency", "cost_in_billing_currency"),
            ("costInBillingCurrency", "cost_in_billing_currency"),
            ("PayGPrice", "pay_g_price"),
            ("benefitId", "benefit_id"),
            ("ServiceInfo1", "service_info1"),
            ("ResourceID", "resource_id"),
            ("Date", "date"),
        ] {
            assert_eq!(snake_case(a), b, "{a}");
        }
    }

    #[test]
    fn nested_paths_split_at_underscores() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"effective_price":"0.1","tier":{"start_amount":"5"}}"#)
                .unwrap();
        assert_eq!(json_path(&v, "effective_price").unwrap(), "0.1");
        assert_eq!(json_path(&v, "tier_start_amount").unwrap(), "5");
        assert!(json_path(&v, "unit").is_none());
    }

    #[test]
    fn tag_keys_follow_focus() {
        assert_eq!(aws_tag_key("user:CostCenter"), "CostCenter");
        assert_eq!(aws_tag_key("user_team"), "team");
        assert_eq!(aws_tag_key("aws:createdBy"), "aws:createdBy");
    }
}
