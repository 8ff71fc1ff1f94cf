//! DataFusion functions the SQL files and row rules call.
//!
//! | function | returns |
//! |---|---|
//! | `tally_identity_holds(cost, price, quantity)` | whether cost = price × quantity within the precision the provider printed (see [`crate::decimal::identity_holds`]) |
//! | `tally_is_kv_json(text)` | whether text is a flat JSON object: unique keys, scalar values |
//! | `tally_is_json_object(text)` | whether text is a JSON object |
//! | `tally_subcategory_parent(subcategory)` | the FOCUS ServiceCategory a ServiceSubcategory belongs to |
//! | `tally_kv_object(array)` | `[{"key":"env","value":"prod"}, ...]` (GCP labels) → `{"env":"prod"}`; NULL when empty |
//! | `tally_json_merge(low, high)` | two JSON objects merged, keys of `high` winning (NULLs skipped) |
//! | `tally_json_sum(array, key)` | Σ of `key` over an array of objects (GCP `credits[].amount`), exact; NULL when a value is not a number |
//! | `tally_tag(tags, 'Key\|alias\|...')` | the trimmed value of the first of those keys a Tags object carries, keys compared trimmed and case-insensitively; NULL when none or empty |
//! | `tally_share(amount, weight, total)` | amount × weight / total at scale 18, truncated toward zero (see [`crate::decimal::share`]); NULL when total is 0 |
//! | `tally_mul(a, b)` | a × b at scale 18, rounded half to even (derived figures only, e.g. a list cost) |
//! | `tally_lookup(table, result, key_column, key)`, `tally_lookup2(table, result, key_column, key, key_column2, key2)` | a value from `schemas/lookups/<table>.csv` (see [`crate::lookup`]) |
//! | `tally_year_month(timestamp)` | `YYYY-MM` of a UTC instant (the billing period's partition value) |
//! | `tally_ai_model(provider, meter)`, `tally_ai_token_class(provider, meter)`, `tally_ai_tier(provider, meter)` | model, token class and service tier from an AI meter string (`schemas/ai_token_meters.psv`), NULL when no rule matches |

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Decimal128Array, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use crate::decimal;
use crate::error::Result;
use crate::resources;

fn arrays(args: &[ColumnarValue]) -> datafusion::error::Result<Vec<ArrayRef>> {
    let n = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            _ => None,
        })
        .unwrap_or(1);
    args.iter().map(|a| a.clone().into_array(n)).collect()
}

fn as_dec(a: &ArrayRef) -> datafusion::error::Result<Decimal128Array> {
    let c = arrow::compute::cast(a, &decimal::data_type())?;
    Ok(c.as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("decimal")
        .clone())
}

fn as_str(a: &ArrayRef) -> datafusion::error::Result<StringArray> {
    let c = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(c.as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8")
        .clone())
}

/// Whether text is a flat JSON object with unique keys and scalar values (FOCUS KeyValueFormat).
///
/// One pass of serde_json over the entries as they come (its own maps would keep the last of a
/// duplicate key silently); duplicates are found by sorting the keys. Nothing is built: keys
/// are borrowed from `text` unless they hold escapes, values are only classified.
pub fn is_kv_json(text: &str) -> bool {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;

    /// A key as written, or decoded when it has escapes.
    struct Key<'de>(Cow<'de, str>);
    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// Whether a value is a scalar (not an object or array); the value is skipped, not kept.
    struct Scalar(bool);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a value")
                }
                fn visit_bool<E>(self, _: bool) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_i64<E>(self, _: i64) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_u64<E>(self, _: u64) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_f64<E>(self, _: f64) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_str<E>(self, _: &str) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_unit<E>(self) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_none<E>(self) -> std::result::Result<Scalar, E> {
                    Ok(Scalar(true))
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut s: A,
                ) -> std::result::Result<Scalar, A::Error> {
                    while s.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Scalar(false))
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> std::result::Result<Scalar, A::Error> {
                    while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Scalar(false))
                }
            }
            d.deserialize_any(V)
        }
    }

    struct Flat;
    impl<'de> Visitor<'de> for Flat {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<bool, A::Error> {
            let mut keys: Vec<Cow<'de, str>> = Vec::new();
            let mut flat = true;
            while let Some((k, v)) = m.next_entry::<Key<'de>, Scalar>()? {
                flat &= v.0;
                keys.push(k.0);
            }
            keys.sort_unstable();
            Ok(flat && !keys.windows(2).any(|w| w[0] == w[1]))
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    d.deserialize_map(Flat).is_ok_and(|flat| flat) && d.end().is_ok()
}

/// `[{"key":"env","value":"prod"}]` → `{"env":"prod"}` (keys sorted; a later duplicate wins).
pub fn kv_object(text: &str) -> Option<String> {
    let serde_json::Value::Array(items) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let mut m = std::collections::BTreeMap::new();
    for it in items {
        let k = it.get("key").and_then(|k| k.as_str())?;
        let v = match it.get("value") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        m.insert(k.to_string(), v);
    }
    (!m.is_empty()).then(|| serde_json::to_string(&m).expect("tags serialize"))
}

/// Merges two JSON objects (`high`'s keys win); either may be NULL. Keys come out sorted.
pub fn json_merge(low: Option<&str>, high: Option<&str>) -> Option<String> {
    let mut m: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for part in [low, high].into_iter().flatten() {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(part) {
            m.extend(o);
        }
    }
    (!m.is_empty()).then(|| serde_json::to_string(&m).expect("json serialize"))
}

/// Σ `key` over a JSON array of objects, exactly; `Some(0)` for an empty array, `None` when the
/// text is not such an array or a value is not a number.
pub fn json_sum(text: &str, key: &str) -> Option<i128> {
    let serde_json::Value::Array(items) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let mut sum: i128 = 0;
    for it in items {
        let v = match it.get(key)? {
            serde_json::Value::String(s) => decimal::parse(s).ok()?,
            serde_json::Value::Number(n) => decimal::parse(&n.to_string()).ok()?,
            serde_json::Value::Null => 0,
            _ => return None,
        };
        sum = sum.checked_add(v)?;
    }
    Some(sum)
}

/// The trimmed value of the first key of `keys` (`|`-separated, compared trimmed and
/// case-insensitively) that a JSON object of tags carries.
pub fn tag_value(tags: &str, keys: &str) -> Option<String> {
    let serde_json::Value::Object(m) = serde_json::from_str(tags).ok()? else {
        return None;
    };
    let norm = |k: &str| k.trim().to_lowercase();
    for want in keys.split('|').map(norm).filter(|k| !k.is_empty()) {
        for (k, v) in &m {
            if norm(k) == want {
                let v = match v {
                    serde_json::Value::String(s) => s.trim().to_string(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// Loads `schemas/focus_1_4_service_subcategories.psv` into subcategory → category.
pub fn subcategory_parents() -> Result<HashMap<String, String>> {
    let text = resources::load("schemas/focus_1_4_service_subcategories.psv")?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('|'))
        .map(|(s, c)| (s.to_string(), c.to_string()))
        .collect())
}

/// `f` of each of `n` rows' keys (`None`: the row is NULL), computed once per distinct key in
/// the batch, the previous row's key checked first (keys repeat: one meter string per SKU).
fn per_distinct<K: Copy + Eq + std::hash::Hash>(
    n: usize,
    key: impl Fn(usize) -> Option<K>,
    f: impl Fn(K) -> Option<String>,
) -> StringArray {
    let mut b = StringBuilder::with_capacity(n, n * 8);
    let mut results: Vec<Option<String>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut prev: Option<(K, usize)> = None;
    for i in 0..n {
        let Some(k) = key(i) else {
            b.append_null();
            continue;
        };
        let slot = match prev {
            Some((p, slot)) if p == k => slot,
            _ => *index.entry(k).or_insert_with(|| {
                results.push(f(k));
                results.len() - 1
            }),
        };
        prev = Some((k, slot));
        b.append_option(results[slot].as_deref());
    }
    b.finish()
}

/// Registers every tally function in a session.
pub fn register(ctx: &SessionContext) -> Result<()> {
    let d = decimal::data_type();
    ctx.register_udf(create_udf(
        "tally_identity_holds",
        vec![d.clone(), d.clone(), d],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (c, p, q) = (as_dec(&a[0])?, as_dec(&a[1])?, as_dec(&a[2])?);
            let out: BooleanArray = (0..c.len())
                .map(|i| {
                    if c.is_null(i) || p.is_null(i) || q.is_null(i) {
                        None
                    } else {
                        Some(decimal::identity_holds(c.value(i), p.value(i), q.value(i)))
                    }
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    for (name, f) in [
        ("tally_is_kv_json", is_kv_json as fn(&str) -> bool),
        ("tally_is_json_object", |t: &str| {
            matches!(
                serde_json::from_str::<serde_json::Value>(t),
                Ok(serde_json::Value::Object(_))
            )
        }),
    ] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let s = as_str(&arrays(args)?[0])?;
                // Exports repeat a row's tags on the rows that follow: check each run once.
                let mut last: Option<(&str, bool)> = None;
                let out: BooleanArray = s
                    .iter()
                    .map(|v| {
                        v.map(|t| match last {
                            Some((lt, ok)) if lt == t => ok,
                            _ => {
                                let ok = f(t);
                                last = Some((t, ok));
                                ok
                            }
                        })
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        ));
    }
    let meters = crate::ai_meters::Meters::shared()?;
    type Pick = fn(crate::ai_meters::TokenMeter) -> Option<String>;
    let picks: [(&str, Pick); 3] = [
        ("tally_ai_model", |m| m.model),
        ("tally_ai_token_class", |m| Some(m.token_class)),
        ("tally_ai_tier", |m| m.tier),
    ];
    for (name, pick) in picks {
        let meters = meters.clone();
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                // The provider is a literal in every mapping: read it once rather than as an
                // array of copies.
                // (Any other scalar type takes the general path below, which casts it.)
                let literal = match &args[0] {
                    ColumnarValue::Scalar(
                        datafusion::scalar::ScalarValue::Utf8(v)
                        | datafusion::scalar::ScalarValue::LargeUtf8(v)
                        | datafusion::scalar::ScalarValue::Utf8View(v),
                    ) => Some(v.clone()),
                    _ => None,
                };
                let out = if let (Some(provider), ColumnarValue::Array(m)) = (literal, &args[1]) {
                    let meter = as_str(m)?;
                    per_distinct(
                        meter.len(),
                        |i| (provider.is_some() && meter.is_valid(i)).then(|| meter.value(i)),
                        |m| meters.parse(provider.as_deref()?, m).and_then(pick),
                    )
                } else {
                    let a = arrays(args)?;
                    let (provider, meter) = (as_str(&a[0])?, as_str(&a[1])?);
                    per_distinct(
                        meter.len(),
                        |i| {
                            (provider.is_valid(i) && meter.is_valid(i))
                                .then(|| (provider.value(i), meter.value(i)))
                        },
                        |(p, m)| meters.parse(p, m).and_then(pick),
                    )
                };
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        ));
    }
    ctx.register_udf(create_udf(
        "tally_year_month",
        vec![crate::schema::FocusType::DateTime.arrow()],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let ts = a[0]
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Execution(
                        "tally_year_month takes a timestamp in µs".into(),
                    )
                })?;
            Ok(ColumnarValue::Array(Arc::new(
                crate::timestamp::format_runs(ts, crate::timestamp::year_month),
            )))
        }),
    ));
    let d = decimal::data_type();
    ctx.register_udf(create_udf(
        "tally_mul",
        vec![d.clone(), d.clone()],
        d,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (x, y) = (as_dec(&a[0])?, as_dec(&a[1])?);
            let mut out = Vec::with_capacity(x.len());
            for i in 0..x.len() {
                out.push(if x.is_null(i) || y.is_null(i) {
                    None
                } else {
                    Some(decimal::mul(x.value(i), y.value(i)).ok_or_else(|| {
                        datafusion::error::DataFusionError::Execution(format!(
                            "tally_mul: {} × {} overflows Decimal128(38,18)",
                            decimal::format(x.value(i)),
                            decimal::format(y.value(i))
                        ))
                    })?)
                });
            }
            let out = Decimal128Array::from(out)
                .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?;
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    for (name, keys) in [("tally_lookup", 1usize), ("tally_lookup2", 2)] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Utf8; 2 + 2 * keys],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let a = arrays(args)?;
                let s = a
                    .iter()
                    .map(as_str)
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let mut b = StringBuilder::new();
                // Table, result and key columns are literals in the SQL: resolve them once
                // per batch (again only if a row names others), not per row.
                let mut resolved: Option<(Vec<&str>, crate::lookup::Resolved)> = None;
                for i in 0..s[0].len() {
                    if s.iter().any(|c| c.is_null(i)) {
                        b.append_null();
                        continue;
                    }
                    let names: Vec<&str> = std::iter::once(s[0].value(i))
                        .chain(std::iter::once(s[1].value(i)))
                        .chain((0..keys).map(|k| s[2 + 2 * k].value(i)))
                        .collect();
                    if resolved.as_ref().is_none_or(|(n, _)| *n != names) {
                        let err = |e: String| {
                            datafusion::error::DataFusionError::Execution(format!(
                                "{}: {e}",
                                names[0]
                            ))
                        };
                        let table = crate::lookup::table(names[0])
                            .map_err(datafusion::error::DataFusionError::Execution)?;
                        let r = table.resolve(names[1], &names[2..]).map_err(err)?;
                        resolved = Some((names, r));
                    }
                    let vals: Vec<&str> = (0..keys).map(|k| s[3 + 2 * k].value(i)).collect();
                    b.append_option(resolved.as_ref().expect("resolved").1.get(&vals));
                }
                Ok(ColumnarValue::Array(Arc::new(b.finish())))
            }),
        ));
    }
    ctx.register_udf(create_udf(
        "tally_kv_object",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let s = as_str(&arrays(args)?[0])?;
            let mut b = StringBuilder::new();
            for v in s.iter() {
                b.append_option(v.and_then(kv_object));
            }
            Ok(ColumnarValue::Array(Arc::new(b.finish())))
        }),
    ));
    ctx.register_udf(create_udf(
        "tally_json_merge",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (low, high) = (as_str(&a[0])?, as_str(&a[1])?);
            let mut b = StringBuilder::new();
            for i in 0..low.len() {
                let l = (!low.is_null(i)).then(|| low.value(i));
                let h = (!high.is_null(i)).then(|| high.value(i));
                b.append_option(json_merge(l, h));
            }
            Ok(ColumnarValue::Array(Arc::new(b.finish())))
        }),
    ));
    ctx.register_udf(create_udf(
        "tally_json_sum",
        vec![DataType::Utf8, DataType::Utf8],
        decimal::data_type(),
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (arr, key) = (as_str(&a[0])?, as_str(&a[1])?);
            let out: Decimal128Array = (0..arr.len())
                .map(|i| {
                    if key.is_null(i) {
                        return None;
                    }
                    if arr.is_null(i) {
                        return Some(0);
                    }
                    json_sum(arr.value(i), key.value(i))
                })
                .collect();
            let out = out.with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?;
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    ctx.register_udf(create_udf(
        "tally_tag",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (tags, keys) = (as_str(&a[0])?, as_str(&a[1])?);
            // A resource's tags repeat on every one of its charges: each distinct object is
            // parsed once per batch.
            let out = per_distinct(
                tags.len(),
                |i| (tags.is_valid(i) && keys.is_valid(i)).then(|| (tags.value(i), keys.value(i))),
                |(t, k)| tag_value(t, k),
            );
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    let d = decimal::data_type();
    ctx.register_udf(create_udf(
        "tally_share",
        vec![d.clone(), d.clone(), d.clone()],
        d,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let a = arrays(args)?;
            let (x, w, t) = (as_dec(&a[0])?, as_dec(&a[1])?, as_dec(&a[2])?);
            let out: Decimal128Array = (0..x.len())
                .map(|i| {
                    if x.is_null(i) || w.is_null(i) || t.is_null(i) {
                        None
                    } else {
                        decimal::share(x.value(i), w.value(i), t.value(i))
                    }
                })
                .collect();
            let out = out.with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?;
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    let parents = Arc::new(subcategory_parents()?);
    ctx.register_udf(create_udf(
        "tally_subcategory_parent",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let s = as_str(&arrays(args)?[0])?;
            let mut b = StringBuilder::new();
            for v in s.iter() {
                b.append_option(v.and_then(|v| parents.get(v)));
            }
            Ok(ColumnarValue::Array(Arc::new(b.finish())))
        }),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_distinct_computes_each_value_once_and_keeps_nulls() {
        let text = StringArray::from(vec![
            Some("a"),
            Some("a"),
            None,
            Some("bb"),
            Some("a"),
            Some("bb"),
            Some("ccc"),
            None,
            Some("ccc"),
        ]);
        let calls = std::cell::RefCell::new(Vec::new());
        let out = per_distinct(
            text.len(),
            |i| text.is_valid(i).then(|| text.value(i)),
            |v| {
                calls.borrow_mut().push(v.to_string());
                (v != "bb").then(|| format!("<{v}>"))
            },
        );
        assert_eq!(*calls.borrow(), vec!["a", "bb", "ccc"]);
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(
            got,
            vec![
                Some("<a>"),
                Some("<a>"),
                None,
                None,
                Some("<a>"),
                None,
                Some("<ccc>"),
                None,
                Some("<ccc>")
            ]
        );
    }

    #[tokio::test]
    async fn ai_functions_give_the_same_with_a_literal_or_a_column_provider() {
        let ctx = crate::normalize::session().unwrap();
        let meters = StringArray::from(vec![
            Some("USE1-Claude4.6Sonnet-input-tokens"),
            None,
            Some("USE1-BoxUsage:t3.micro"),
            Some("USE1-Claude4.6Sonnet-input-tokens"),
            Some("USE1-Claude4.6Sonnet-output-tokens"),
        ]);
        let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![
            ("m", Arc::new(meters) as ArrayRef),
            ("p", Arc::new(StringArray::from(vec!["aws"; 5])) as ArrayRef),
        ])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let text = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&b)
                    .unwrap()
                    .to_string()
            }
        };
        let literal = text(
            "SELECT tally_ai_model('aws', m) AS a, tally_ai_token_class('aws', m) AS b, \
             tally_ai_tier('aws', m) AS c FROM t",
        )
        .await;
        let column = text(
            "SELECT tally_ai_model(p, m) AS a, tally_ai_token_class(p, m) AS b, \
             tally_ai_tier(p, m) AS c FROM t",
        )
        .await;
        assert_eq!(literal, column);
        assert!(literal.contains("input"), "{literal}");
        assert!(literal.contains("output"), "{literal}");
    }

    #[test]
    fn key_value_json_is_flat_with_unique_keys() {
        assert!(is_kv_json(r#"{"env":"prod","n":3,"ok":true,"x":null}"#));
        assert!(!is_kv_json(r#"{"a":{"b":1}}"#));
        assert!(!is_kv_json(r#"{"a":[1]}"#));
        assert!(!is_kv_json(r#"{"a":1,"a":2}"#));
        assert!(!is_kv_json("[1]"));
        assert!(!is_kv_json("not json"));
        assert!(!is_kv_json(r#"{"a":1} trailing"#));
        // Keys compare decoded: an escaped spelling of a key is the same key.
        assert!(!is_kv_json(r#"{"a":1,"\u0061":2}"#));
        assert!(is_kv_json(r#"{"a\"b":1,"a":2,"e":1.5e300,"n":-3}"#));
        assert!(!is_kv_json(r#"{"a":1,"b":[]}"#));
        assert!(!is_kv_json(r#"{"a":{},"b":1}"#));
        assert!(is_kv_json("{}"));
        assert!(!is_kv_json(r#"{"a":1,}"#));
        assert!(!is_kv_json(r#"{"a":[1,}"#));
        assert!(!is_kv_json(r#""just a string""#));
        assert!(is_kv_json("{}"));
        // The same key spelled with an escape is still a duplicate; distinct escaped keys are fine.
        assert!(!is_kv_json(r#"{"a":1,"\u0061":2}"#));
        assert!(is_kv_json(r#"{"a\"b":"x","a":"y","cost \u20ac":1.5e3}"#));
    }

    #[test]
    fn tag_values_by_key_and_alias() {
        let t = r#"{"cost-center":" 4711 ","Team":"web","empty":""}"#;
        assert_eq!(
            tag_value(t, "CostCenter|cost-center").as_deref(),
            Some("4711")
        );
        assert_eq!(tag_value(t, "team").as_deref(), Some("web"));
        assert_eq!(tag_value(t, "empty|team").as_deref(), Some("web"));
        assert_eq!(tag_value(t, "owner"), None);
        assert_eq!(tag_value("not json", "team"), None);
    }

    #[test]
    fn nested_json_helpers() {
        assert_eq!(
            kv_object(r#"[{"key":"env","value":"prod"},{"key":"app","value":"web"}]"#).as_deref(),
            Some(r#"{"app":"web","env":"prod"}"#)
        );
        assert_eq!(kv_object("[]"), None);
        assert_eq!(
            json_merge(
                Some(r#"{"env":"dev","team":"a"}"#),
                Some(r#"{"env":"prod"}"#)
            )
            .as_deref(),
            Some(r#"{"env":"prod","team":"a"}"#)
        );
        assert_eq!(json_merge(None, None), None);
        let credits =
            r#"[{"name":"SUD","amount":"-0.1"},{"name":"Promo","amount":"-0.000000000000000001"}]"#;
        assert_eq!(json_sum(credits, "amount"), Some(-100_000_000_000_000_001));
        assert_eq!(json_sum("[]", "amount"), Some(0));
        assert_eq!(json_sum(r#"[{"amount":"x"}]"#, "amount"), None);
    }

    #[test]
    fn every_subcategory_has_a_parent() {
        let p = subcategory_parents().unwrap();
        assert_eq!(p.len(), 82);
        assert_eq!(p["Generative AI"], "AI and Machine Learning");
        assert_eq!(p["Other (Other)"], "Other");
    }
}
