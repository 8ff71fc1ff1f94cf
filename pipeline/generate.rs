//! `tally generate`: deterministic synthetic billing exports of any size, for benchmarks.
//!
//! Rows are drawn in turn from a small template export (a bundled sample, whose rows pass
//! tally's checks), and each pass over the template (a *cycle*) becomes another slice of a
//! realistic estate: unique line item ids, another linked account (12 digits, leading zeros),
//! commitments and resources of its own, sparse tags, and amounts scaled by a small whole factor
//! (exactly, as decimals, so `cost = rate × quantity` still holds and totals stay checkable).
//! For AWS CUR the template has every line item type (usage, RI and Savings Plans with their
//! fees and negations, tax, credit, refund, EDP discount), some usage becomes Bedrock token
//! lines, and 27 product attribute columns bring it to the 100 columns of a typical CUR.
//! Same arguments, same bytes.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{Result, TallyError};

/// Rows generated per batch.
const BATCH: usize = 16 * 1024;

/// How one format's template is turned into an estate.
struct Spec {
    format: &'static str,
    template: &'static str,
    /// Made unique per row (`gen000000000042`).
    unique: &'static [&'static str],
    /// Replaced per cycle by one of 50 zero-padded 12-digit account ids.
    accounts: &'static [&'static str],
    /// Suffixed with the cycle (commitment ARNs, resource ids).
    per_cycle: &'static [&'static str],
    /// Kept on about a third of rows, values rotated per cycle.
    tags: &'static [&'static str],
    /// AWS only: Bedrock token lines and the extra product columns.
    aws_extras: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        format: "aws_cur",
        template: "sample-data/aws/cur-athena/cur_athena_2023-12.parquet",
        unique: &["identity_line_item_id"],
        accounts: &["line_item_usage_account_id"],
        per_cycle: &[
            "reservation_reservation_a_r_n",
            "savings_plan_savings_plan_a_r_n",
            "line_item_resource_id",
        ],
        tags: &[
            "resource_tags_user_cost_center",
            "resource_tags_user_environment",
        ],
        aws_extras: true,
    },
    Spec {
        format: "azure_cost_details",
        template: "sample-data/azure/mca/mca_actual_2024-05.csv",
        unique: &[],
        accounts: &[],
        per_cycle: &["ResourceId"],
        tags: &[],
        aws_extras: false,
    },
    Spec {
        format: "oci_cost",
        template: "sample-data/oci/cost_report_sample.csv",
        unique: &["lineItem/referenceNo"],
        accounts: &[],
        per_cycle: &["product/resourceId"],
        tags: &[],
        aws_extras: false,
    },
    Spec {
        format: "focus",
        template: "sample-data/focus/focus_1_2_aws_generated.csv",
        unique: &[],
        accounts: &["SubAccountId"],
        per_cycle: &["ResourceId"],
        tags: &[],
        aws_extras: false,
    },
    Spec {
        format: "gcp_billing",
        template: "sample-data/gcp/jsonl/gcp_billing_2024-03.jsonl",
        unique: &[],
        accounts: &[],
        per_cycle: &[],
        tags: &[],
        aws_extras: false,
    },
];

/// The formats `tally generate` can write.
pub fn formats() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.format).collect()
}

/// What was written.
#[derive(Debug)]
pub struct Generated {
    /// Rows written.
    pub rows: u64,
    /// Columns per row.
    pub columns: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes `rows` rows of `format` to `output` (`.csv`, `.parquet` or `.jsonl`, by extension),
/// from `template` or the format's bundled sample (paths relative to `root`).
pub fn generate(
    format: &str,
    rows: u64,
    output: &Path,
    template: Option<&Path>,
    root: &Path,
) -> Result<Generated> {
    let spec = SPECS.iter().find(|s| s.format == format).ok_or_else(|| {
        TallyError::Usage(format!(
            "tally generate knows the formats {}; not {format:?}",
            formats().join(", ")
        ))
    })?;
    let template = template
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join(spec.template));
    let out = output.to_string_lossy().to_string();
    let io = |e: std::io::Error| TallyError::Usage(format!("{out}: {e}"));
    if out.ends_with(".jsonl") {
        return generate_json_lines(spec, rows, &template, output);
    }
    let tpl = read_template(&template)?;
    let mut columns = 0;
    let file = std::fs::File::create(output).map_err(io)?;
    if out.ends_with(".parquet") {
        let schema = expand(spec, &tpl, 0, 1)?.schema();
        columns = schema.fields().len();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(128 * 1024))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|e| TallyError::Usage(format!("{out}: {e}")))?;
        for_each_batch(spec, &tpl, rows, |b| {
            w.write(&b)
                .map_err(|e| TallyError::Usage(format!("{out}: {e}")))
        })?;
        w.close()
            .map_err(|e| TallyError::Usage(format!("{out}: {e}")))?;
    } else if out.ends_with(".csv") {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(std::io::BufWriter::with_capacity(1 << 20, file));
        let mut header_done = false;
        for_each_batch(spec, &tpl, rows, |b| {
            let err = |e: csv::Error| TallyError::Usage(format!("{out}: {e}"));
            if !header_done {
                columns = b.num_columns();
                // A CUR CSV is the legacy export: `lineItem/UnblendedCost` headers.
                let legacy = spec.format == "aws_cur";
                w.write_record(b.schema().fields().iter().map(|f| {
                    if legacy {
                        legacy_cur_name(f.name())
                    } else {
                        f.name().clone()
                    }
                }))
                .map_err(err)?;
                header_done = true;
            }
            let text: Vec<StringArray> = b.columns().iter().map(as_text).collect();
            for r in 0..b.num_rows() {
                for c in &text {
                    w.write_field(if c.is_null(r) { "" } else { c.value(r) })
                        .map_err(err)?;
                }
                w.write_record(None::<&[u8]>).map_err(err)?;
            }
            Ok(())
        })?;
        w.flush().map_err(io)?;
    } else {
        return Err(TallyError::Usage(format!(
            "{out}: name the output .csv, .parquet or .jsonl"
        )));
    }
    Ok(Generated {
        rows,
        columns,
        bytes: std::fs::metadata(output).map_err(io)?.len(),
    })
}

/// The template as one batch (CSV: every column text, empty = NULL).
fn read_template(path: &Path) -> Result<RecordBatch> {
    let shown = path.display().to_string();
    let bad = |m: String| TallyError::Usage(format!("template {shown}: {m}"));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let batches: Vec<RecordBatch> = if shown.ends_with(".parquet") {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?
    } else {
        let mut r = csv::Reader::from_reader(file);
        let header: Vec<String> = r
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        let records: Vec<csv::StringRecord> = r
            .records()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let schema = Arc::new(Schema::new(
            header
                .iter()
                .map(|h| Field::new(h, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let cols: Vec<ArrayRef> = (0..header.len())
            .map(|i| {
                Arc::new(StringArray::from_iter(records.iter().map(|rec| {
                    rec.get(i).filter(|v| !v.is_empty()).map(str::to_string)
                }))) as ArrayRef
            })
            .collect();
        vec![RecordBatch::try_new(schema, cols).map_err(|e| bad(e.to_string()))?]
    };
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| bad("empty".into()))?;
    let tpl = arrow::compute::concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))?;
    if tpl.num_rows() == 0 {
        return Err(bad("has no rows".into()));
    }
    Ok(tpl)
}

/// Calls `f` with every generated batch, in order.
fn for_each_batch(
    spec: &Spec,
    tpl: &RecordBatch,
    rows: u64,
    mut f: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut start = 0u64;
    while start < rows {
        let n = (rows - start).min(BATCH as u64) as usize;
        f(expand(spec, tpl, start, n)?)?;
        start += n as u64;
    }
    Ok(())
}

/// The legacy CUR header of a CUR 2.0 / Athena column (`line_item_usage_account_id` →
/// `lineItem/UsageAccountId`, `reservation_reservation_a_r_n` → `reservation/ReservationARN`,
/// `resource_tags_user_team` → `resourceTags/user:team`): tally reads both back to the same name.
pub fn legacy_cur_name(snake: &str) -> String {
    const PREFIXES: &[(&str, &str, bool)] = &[
        ("identity_", "identity/", true),
        ("bill_", "bill/", true),
        ("line_item_", "lineItem/", true),
        ("reservation_", "reservation/", true),
        ("savings_plan_", "savingsPlan/", true),
        ("resource_tags_user_", "resourceTags/user:", false),
        ("resource_tags_aws_", "resourceTags/aws:", false),
        ("product_", "product/", false),
        ("pricing_", "pricing/", false),
    ];
    let Some((prefix, head, pascal)) = PREFIXES.iter().find(|(p, _, _)| snake.starts_with(p))
    else {
        return snake.to_string();
    };
    let rest = &snake[prefix.len()..];
    if head.starts_with("resourceTags/user:") {
        return format!("{head}{rest}");
    }
    // Product attributes are camelCase in the legacy CUR, but for a few PascalCase ones.
    let pascal = *pascal
        || matches!(
            rest,
            "purchase_option" | "product_name" | "rate_code" | "rate_id"
        );
    let mut out = head.to_string();
    for (i, word) in rest.split('_').enumerate() {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            if pascal || i > 0 {
                out.push(first.to_ascii_uppercase());
            } else {
                out.push(first);
            }
            out.extend(chars);
        }
    }
    out
}

/// The 12-digit account of a cycle: 50 accounts, most with leading zeros.
fn account(cycle: u64) -> String {
    format!("{:012}", 4_000 + (cycle % 50) * 7_919_011)
}

/// The whole factor a cycle's amounts are scaled by.
fn scale(cycle: u64) -> i128 {
    1 + (cycle % 7) as i128
}

/// Rows `start..start + n` of the estate.
fn expand(spec: &Spec, tpl: &RecordBatch, start: u64, n: usize) -> Result<RecordBatch> {
    let t = tpl.num_rows() as u64;
    let idx = UInt32Array::from_iter_values((0..n as u64).map(|j| ((start + j) % t) as u32));
    let base = arrow::compute::take_record_batch(tpl, &idx)?;
    let row = |j: usize| start + j as u64;
    let cycle = |j: usize| row(j) / t;
    let schema = base.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = base.columns().to_vec();
    let text = |name: &str| -> Option<StringArray> {
        let i = schema.index_of(name).ok()?;
        let c = arrow::compute::cast(base.column(i), &DataType::Utf8).ok()?;
        c.as_any().downcast_ref::<StringArray>().cloned()
    };
    let mut set_text = |name: &str, f: &dyn Fn(usize, Option<&str>) -> Option<String>| {
        if let (Ok(i), Some(old)) = (schema.index_of(name), text(name)) {
            cols[i] = Arc::new(StringArray::from_iter(
                (0..n).map(|j| f(j, (!old.is_null(j)).then(|| old.value(j)))),
            ));
            fields[i] = Field::new(name, DataType::Utf8, true);
        }
    };
    for c in spec.unique {
        set_text(c, &|j, _| Some(format!("gen{:012}", row(j))));
    }
    for c in spec.accounts {
        set_text(c, &|j, v| v.map(|_| account(cycle(j))));
    }
    for c in spec.per_cycle {
        set_text(c, &|j, v| v.map(|v| format!("{v}-{}", cycle(j) % 5_000)));
    }
    for (k, c) in spec.tags.iter().enumerate() {
        let pools: [&[&str]; 2] = [
            &["cc-1001", "cc-1002", "cc-2001", "cc-3001", "cc-4001"],
            &["prod", "staging", "dev"],
        ];
        let pool = pools[k % 2];
        set_text(c, &|j, _| {
            row(j)
                .wrapping_mul(2_654_435_761)
                .is_multiple_of(3)
                .then(|| pool[(cycle(j) as usize + j) % pool.len()].to_string())
        });
    }
    if spec.aws_extras {
        bedrock_lines(&schema, &base, &mut cols, start, t);
    }
    // Amounts scale by the cycle's factor, exactly; rates and prices stay.
    for (i, f) in schema.fields().iter().enumerate() {
        let name = f.name();
        let amount = f.data_type() == &DataType::Float64
            && !name.contains("rate")
            && !name.contains("number_of");
        if amount {
            let a = cols[i]
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("f64")
                .clone();
            cols[i] =
                Arc::new(Float64Array::from_iter((0..n).map(|j| {
                    a.is_valid(j).then(|| scaled(a.value(j), scale(cycle(j))))
                })));
        }
    }
    if spec.aws_extras {
        for (name, pool) in PRODUCT_COLUMNS {
            fields.push(Field::new(*name, DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from_iter((0..n).map(|j| {
                let r = row(j) as usize;
                (!r.is_multiple_of(5)).then(|| pool[(r / 7 + name.len()) % pool.len()].to_string())
            }))));
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// `v × k` computed on the decimal text of `v`, so the result's text is exact.
fn scaled(v: f64, k: i128) -> f64 {
    match crate::decimal::parse(&v.to_string()) {
        Ok(d) => crate::decimal::format(d * k)
            .parse()
            .unwrap_or(v * k as f64),
        Err(_) => v * k as f64,
    }
}

/// Lambda request lines of every other cycle become Bedrock token lines (input or output).
fn bedrock_lines(schema: &Schema, base: &RecordBatch, cols: &mut [ArrayRef], start: u64, t: u64) {
    let cycle = |j: usize| (start + j as u64) / t;
    let column = |name: &str| {
        schema.index_of(name).ok().map(|i| {
            (
                i,
                base.column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned(),
            )
        })
    };
    let Some((_, Some(product))) = column("line_item_product_code") else {
        return;
    };
    let n = base.num_rows();
    let is_ai: Vec<bool> = (0..n)
        .map(|j| {
            !product.is_null(j) && product.value(j) == "AWSLambda" && cycle(j).is_multiple_of(2)
        })
        .collect();
    if !is_ai.iter().any(|b| *b) {
        return;
    }
    let set = |cols: &mut [ArrayRef], name: &str, v: &dyn Fn(usize) -> String| {
        if let Some((i, Some(old))) = column(name) {
            cols[i] = Arc::new(StringArray::from_iter((0..n).map(|j| {
                if is_ai[j] {
                    Some(v(j))
                } else {
                    (!old.is_null(j)).then(|| old.value(j).to_string())
                }
            })));
        }
    };
    let class = |j: usize| {
        if cycle(j).is_multiple_of(4) {
            "input"
        } else {
            "output"
        }
    };
    set(cols, "line_item_product_code", &|_| "AmazonBedrock".into());
    set(cols, "line_item_usage_type", &|j| {
        format!("EUC1-Claude4.6Sonnet-{}-tokens", class(j))
    });
    set(cols, "line_item_operation", &|_| {
        "InvokeModelInference".into()
    });
    set(cols, "product_product_name", &|_| "Amazon Bedrock".into());
    set(cols, "product_servicecode", &|_| "AmazonBedrock".into());
    set(cols, "product_servicename", &|_| "Amazon Bedrock".into());
    set(cols, "line_item_line_item_description", &|j| {
        format!("Claude 4.6 Sonnet {} tokens", class(j))
    });
}

/// Product and pricing columns a CUR carries and mappings do not read, with realistic values.
const PRODUCT_COLUMNS: &[(&str, &[&str])] = &[
    ("product_vcpu", &["2", "4", "8", "16", "48"]),
    ("product_memory", &["4 GiB", "8 GiB", "16 GiB", "64 GiB"]),
    ("product_operating_system", &["Linux", "Windows", "RHEL"]),
    ("product_tenancy", &["Shared", "Dedicated", "Host"]),
    (
        "product_storage",
        &["EBS only", "1 x 75 NVMe SSD", "2 x 300 NVMe SSD"],
    ),
    (
        "product_network_performance",
        &["Up to 10 Gigabit", "25 Gigabit", "Moderate"],
    ),
    (
        "product_physical_processor",
        &["Intel Xeon Platinum 8175", "AMD EPYC 7R32", "AWS Graviton2"],
    ),
    ("product_clock_speed", &["2.5 GHz", "3.1 GHz", "3.5 GHz"]),
    ("product_current_generation", &["Yes", "No"]),
    (
        "product_instance_family",
        &["General purpose", "Compute optimized", "Memory optimized"],
    ),
    (
        "product_license_model",
        &["No License required", "Bring your own license"],
    ),
    ("product_pre_installed_sw", &["NA", "SQL Std", "SQL Web"]),
    ("product_processor_architecture", &["64-bit", "ARM"]),
    (
        "pricing_rate_code",
        &[
            "XJ8A2QK7M3.JRTCKXETXF.6YS6EN2CT7",
            "QC4RUXJ9ZP.JRTCKXETXF.6YS6EN2CT7",
            "9ZBX3TQ2NW.4NA7Y494T4.KCAKZHGHG2",
        ],
    ),
    (
        "product_dedicated_ebs_throughput",
        &["Up to 2085 Mbps", "4750 Mbps", "10 Gbps"],
    ),
    ("product_enhanced_networking_supported", &["Yes", "No"]),
    (
        "product_storage_class",
        &["General Purpose", "Infrequent Access", "Archive"],
    ),
    (
        "product_volume_type",
        &["General Purpose", "Provisioned IOPS", "Magnetic"],
    ),
    (
        "product_transfer_type",
        &["AWS Outbound", "InterRegion Outbound", "IntraRegion"],
    ),
    (
        "product_from_location",
        &[
            "EU (Frankfurt)",
            "US East (N. Virginia)",
            "Asia Pacific (Tokyo)",
        ],
    ),
    (
        "product_to_location",
        &["External", "EU (Ireland)", "US West (Oregon)"],
    ),
    (
        "product_group",
        &["EBS IOPS", "ELB:Balancer", "S3-API-Tier1"],
    ),
    (
        "product_group_description",
        &[
            "IOPS",
            "Standard Elastic Load Balancer",
            "PUT/COPY/POST or LIST requests",
        ],
    ),
    (
        "product_capacitystatus",
        &[
            "Used",
            "UnusedCapacityReservation",
            "AllocatedCapacityReservation",
        ],
    ),
    (
        "pricing_rate_id",
        &["4738209311", "4738209312", "5120018834", "6011928374"],
    ),
    (
        "product_normalization_size_factor",
        &["1", "2", "4", "8", "16"],
    ),
    (
        "product_purchase_option",
        &["No Upfront", "Partial Upfront", "All Upfront"],
    ),
];

/// A column as text for CSV: timestamps RFC 3339, floats in their shortest exact form.
fn as_text(c: &ArrayRef) -> StringArray {
    let n = c.len();
    match c.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let micros = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .expect("ms to µs");
            crate::timestamp::format_runs(
                micros
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                    .expect("µs"),
                crate::timestamp::format_micros,
            )
        }
        DataType::Float64 => {
            let a = c.as_any().downcast_ref::<Float64Array>().expect("f64");
            StringArray::from_iter((0..n).map(|j| a.is_valid(j).then(|| a.value(j).to_string())))
        }
        _ => arrow::compute::cast(c, &DataType::Utf8)
            .expect("to text")
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8")
            .clone(),
    }
}

/// JSON lines templates (GCP): whole objects cycled, with the same per-row changes.
fn generate_json_lines(
    spec: &Spec,
    rows: u64,
    template: &Path,
    output: &Path,
) -> Result<Generated> {
    let shown = template.display().to_string();
    let bad = |m: String| TallyError::Usage(format!("template {shown}: {m}"));
    let f = std::fs::File::open(template).map_err(|e| bad(e.to_string()))?;
    let mut tpl = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        if !line.trim().is_empty() {
            tpl.push(line);
        }
    }
    if tpl.is_empty() {
        return Err(bad("has no rows".into()));
    }
    let out = output.display().to_string();
    let io = |e: std::io::Error| TallyError::Usage(format!("{out}: {e}"));
    let mut w =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(output).map_err(io)?);
    let t = tpl.len() as u64;
    for i in 0..rows {
        let line = &tpl[(i % t) as usize];
        // Distinct resources per cycle: the project id gets the cycle as a suffix.
        let cycle = i / t;
        let line = if cycle == 0 || spec.format != "gcp_billing" {
            line.clone()
        } else {
            line.replacen(
                "\"project\":{\"id\":\"",
                &format!("\"project\":{{\"id\":\"c{cycle}-"),
                1,
            )
        };
        w.write_all(line.as_bytes()).map_err(io)?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(Generated {
        rows,
        columns: 0,
        bytes: std::fs::metadata(output).map_err(io)?.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_same_arguments_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let ga = generate("aws_cur", 5_000, &a, None, &root()).unwrap();
        generate("aws_cur", 5_000, &b, None, &root()).unwrap();
        assert_eq!(ga.columns, 100);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text.lines().count(), 5_001);
        assert!(text.contains("gen000000004999"));
        assert!(text.contains("EUC1-Claude4.6Sonnet-input-tokens"));
        for kind in ["SavingsPlanNegation", "RIFee", "Tax", "Credit", "Refund"] {
            assert!(text.contains(kind), "{kind}");
        }
    }

    #[test]
    fn legacy_headers_read_back_to_the_same_columns() {
        for (snake, legacy) in [
            ("line_item_usage_account_id", "lineItem/UsageAccountId"),
            (
                "reservation_reservation_a_r_n",
                "reservation/ReservationARN",
            ),
            (
                "pricing_public_on_demand_rate",
                "pricing/publicOnDemandRate",
            ),
            ("product_purchase_option", "product/PurchaseOption"),
            ("product_region", "product/region"),
            (
                "resource_tags_user_cost_center",
                "resourceTags/user:cost_center",
            ),
        ] {
            assert_eq!(legacy_cur_name(snake), legacy);
        }
        for snake in [
            "savings_plan_savings_plan_a_r_n",
            "product_region_code",
            "bill_bill_type",
        ] {
            assert_eq!(
                crate::source::layout::aws_snake_case(&legacy_cur_name(snake)),
                snake
            );
        }
    }

    #[test]
    fn amounts_scale_exactly_and_accounts_keep_their_zeros() {
        assert_eq!(scaled(0.1, 3), 0.3);
        assert_eq!(scaled(35.712, 3).to_string(), "107.136");
        assert_eq!(account(0), "000000004000");
        assert_eq!(account(1).len(), 12);
    }
}
