//! `tally run`: discover → normalize → check → reconcile → commit → manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::row::{RowConverter, SortField};
use datafusion::datasource::MemTable;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tracing::{info, info_span, warn};

use crate::error::{Result, TallyError};
use crate::formats::{self, Format};
use crate::job::{Job, Severity};
use crate::manifest::{self, Manifest, Reconciliation};
use crate::normalize::{self, FileOutcome, PartitionKey};
use crate::quarantine;
use crate::schema::FocusSchema;
use crate::source::layout::canonical_name;
use crate::source::typing::TotalKey;
use crate::table::{self, names};
use crate::{decimal, progress, resources, storage};

/// How a run was asked for.
pub struct RunRequest {
    /// The job.
    pub job: Job,
    /// Path of the job file, or `<command line>`.
    pub job_path: String,
    /// Bytes of the job file (hashed into the manifest).
    pub job_bytes: Vec<u8>,
}

/// A new run id: UTC start time plus a random suffix.
pub fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let mut h = Sha256::new();
    h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &hex::encode(h.finalize())[..8]
    )
}

/// Runs a job; returns the manifest (also written under `<output>/_tally/manifests/`).
pub async fn run(req: RunRequest) -> Result<Manifest> {
    let started = chrono::Utc::now();
    let run_id = new_run_id(started);
    let span = info_span!("run", run_id = %run_id, job = %req.job.job.name);
    let _g = span.enter();
    let schema = FocusSchema::load()?;
    let mut m = Manifest {
        manifest_version: 1,
        run_id: run_id.clone(),
        status: "running".into(),
        error: None,
        started_at: started.to_rfc3339(),
        finished_at: String::new(),
        tally: manifest::ToolInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("TALLY_GIT_REVISION").into(),
            focus_version: "1.4".into(),
        },
        job: manifest::JobInfo {
            name: req.job.job.name.clone(),
            path: req.job_path.clone(),
            sha256: resources::sha256_hex(&req.job_bytes),
        },
        resources: BTreeMap::new(),
        inputs: Vec::new(),
        tables: BTreeMap::new(),
        quarantined_by_rule: BTreeMap::new(),
        warnings_by_rule: BTreeMap::new(),
        reconciliation: Vec::new(),
        totals: manifest::Totals::default(),
    };
    let out = storage::open(&req.job.output.url)?;
    let result = execute(&req, &schema, &run_id, &mut m).await;
    m.finished_at = chrono::Utc::now().to_rfc3339();
    m.resources = resources::used_hashes();
    match &result {
        Ok(()) => m.status = "ok".into(),
        Err(e) => {
            m.status = "failed".into();
            m.error = Some(e.to_string());
        }
    }
    let path = out
        .path
        .clone()
        .join("_tally")
        .join("manifests")
        .join(format!("{run_id}.json").as_str());
    out.store
        .put(&path, m.to_json().into_bytes().into())
        .await
        .map_err(|e| out.err("put", &path, e))?;
    info!(manifest = %out.url_of(&path), status = %m.status, "manifest written");
    result.map(|_| m)
}

async fn execute(
    req: &RunRequest,
    schema: &FocusSchema,
    run_id: &str,
    m: &mut Manifest,
) -> Result<()> {
    let job = &req.job;
    let all_formats = formats::all()?;
    let mut outcomes: Vec<(String, FileOutcome)> = Vec::new();
    for source in &job.sources {
        let span = info_span!("source", name = %source.name);
        let _g = span.enter();
        let loc = storage::open(&source.url)?;
        let files = storage::discover(&loc).await?;
        if files.is_empty() {
            return Err(TallyError::BadFile {
                file: source.url.clone(),
                message: "no export files (.csv, .csv.gz, .parquet) found here".into(),
            });
        }
        let bar = progress::files_bar(files.len() as u64, &source.name);
        for file in files {
            let t0 = std::time::Instant::now();
            let names = normalize::header(&loc, &file).await?;
            let (format, detected): (Format, bool) = match &source.format {
                Some(name) => (formats::by_name(name)?, false),
                None => {
                    let candidates: Vec<(Format, Vec<String>)> = all_formats
                        .iter()
                        .map(|f| {
                            (
                                f.clone(),
                                names.iter().map(|n| canonical_name(f.layout, n)).collect(),
                            )
                        })
                        .collect();
                    (formats::detect(&candidates, &file.url)?.clone(), true)
                }
            };
            if detected {
                info!(file = %file.url, format = %format.name, "format detected from the header");
            }
            let cost_identity = source.cost_identity.unwrap_or(job.checks.cost_identity);
            let mut outcome = normalize::process_file(
                schema,
                &format,
                detected,
                &loc,
                &file,
                names.clone(),
                "",
                cost_identity,
            )
            .await?;
            set_ingestion_id(&mut outcome, &format, schema);
            info!(
                file = %file.url,
                rows = outcome.source.rows,
                written = outcome.rows_written,
                quarantined = outcome.quarantined.len(),
                ms = t0.elapsed().as_millis() as u64,
                "file normalized"
            );
            let declared: BTreeSet<String> = format.declared_columns().cloned().collect();
            let ignored = names
                .iter()
                .filter(|n| {
                    let c = canonical_name(format.layout, n);
                    !declared.contains(&c) && !is_adapter_input(&format, &c)
                })
                .cloned()
                .collect();
            m.inputs.push(manifest::Input {
                source: source.name.clone(),
                url: file.url.clone(),
                format: format.name.clone(),
                format_detected: detected,
                size: file.size,
                e_tag: file.e_tag.clone(),
                last_modified: file.last_modified.clone(),
                sha256: outcome.digest.sha256.clone(),
                ingestion_id: outcome.ingestion_id.clone(),
                rows_read: outcome.source.rows,
                rows_written: outcome.rows_written,
                rows_quarantined: outcome.quarantined.len() as u64,
                rows_folded: outcome.folded.clone(),
                rows_derived: outcome.derived.clone(),
                ignored_columns: ignored,
            });
            bar.inc(1);
            outcomes.push((source.name.clone(), outcome));
        }
        bar.finish_and_clear();
    }

    // Reconcile before anything is committed: a mismatch publishes nothing.
    let mut source_totals: BTreeMap<TotalKey, i128> = BTreeMap::new();
    let mut written: BTreeMap<TotalKey, i128> = BTreeMap::new();
    let mut quarantined: BTreeMap<TotalKey, i128> = BTreeMap::new();
    for (_, o) in &outcomes {
        for (k, v) in &o.source.totals {
            *source_totals.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.written_totals {
            *written.entry(k.clone()).or_default() += v;
        }
        for q in &o.quarantined {
            if let Some(a) = q.amount {
                *quarantined
                    .entry((q.period_start.clone(), q.currency.clone()))
                    .or_default() += a;
            }
            *m.quarantined_by_rule.entry(q.rule.clone()).or_default() += 1;
        }
        for (r, n) in &o.warnings {
            *m.warnings_by_rule.entry(r.clone()).or_default() += n;
        }
        m.totals.files += 1;
        m.totals.rows_read += o.source.rows;
        m.totals.rows_written += o.rows_written;
        m.totals.rows_quarantined += o.quarantined.len() as u64;
        m.totals.rows_folded += o.folded.values().sum::<u64>();
        m.totals.rows_derived += o.derived.values().sum::<u64>();
        m.totals.unparseable_source_amounts += o.source.unparseable_amounts;
    }
    m.reconciliation = reconcile(&source_totals, &written, &quarantined);
    let t = &m.totals;
    if t.rows_read + t.rows_derived != t.rows_written + t.rows_quarantined + t.rows_folded {
        return Err(TallyError::Integrity(format!(
            "rows read {} + derived {} ≠ written {} + quarantined {} + folded {}",
            t.rows_read, t.rows_derived, t.rows_written, t.rows_quarantined, t.rows_folded
        )));
    }
    let bad: Vec<&Reconciliation> = m
        .reconciliation
        .iter()
        .filter(|r| r.status != "match")
        .collect();
    if !bad.is_empty() {
        let lines: Vec<String> = bad
            .iter()
            .map(|r| {
                format!(
                    "{} {}: source {} ≠ written {} + quarantined {} (difference {})",
                    r.billing_period_start,
                    r.currency,
                    r.source_total,
                    r.billed_cost_written,
                    r.quarantined,
                    r.difference
                )
            })
            .collect();
        return Err(TallyError::Integrity(format!(
            "reconciliation failed; nothing was committed:\n  {}",
            lines.join("\n  ")
        )));
    }
    if m.totals.rows_quarantined > 0 {
        warn!(rows = m.totals.rows_quarantined, by_rule = ?m.quarantined_by_rule, "rows quarantined");
    }

    // Commit: every partition any input touched is replaced as a unit.
    let mut partitions: BTreeSet<PartitionKey> = BTreeSet::new();
    let mut batches = Vec::new();
    let mut q_rows = Vec::new();
    for (_, o) in outcomes {
        partitions.extend(o.partitions.iter().cloned());
        for q in &o.quarantined {
            partitions.insert((q.provider.clone(), q.account.clone(), q.period.clone()));
        }
        batches.extend(o.batches);
        q_rows.extend(o.quarantined);
    }
    let root = &job.output.url;
    let commit =
        |name: &'static str, schema: arrow::datatypes::SchemaRef, batches: Vec<RecordBatch>| {
            let partitions = partitions.clone();
            let run_id = run_id.to_string();
            async move {
                let span = info_span!("commit", table = name);
                let _g = span.enter();
                let url = table::table_url(root, name)?;
                let hashes = content_hashes(&batches)?;
                let t = table::open_or_create(&url, &schema).await?;
                let t = table::replace_partitions(t, batches, &partitions, &run_id).await?;
                let stats = table::partition_stats(&t)?;
                let parts = partitions
                    .iter()
                    .map(|k| {
                        let (files, rows) = stats.get(k).copied().unwrap_or((0, 0));
                        manifest::PartitionInfo {
                            provider: k.0.clone(),
                            billing_account: k.1.clone(),
                            billing_period: k.2.clone(),
                            rows,
                            files,
                            content_sha256: hashes
                                .get(k)
                                .cloned()
                                .unwrap_or_else(|| hex::encode(Sha256::digest(b""))),
                        }
                    })
                    .collect();
                info!(version = ?t.version(), partitions = partitions.len(), "committed");
                Ok::<_, TallyError>(manifest::TableInfo {
                    url: url.to_string(),
                    version: t.version(),
                    partitions: parts,
                })
            }
        };
    let projection = if job.wants_focus_1_2() {
        Some(project_1_2(schema, &batches).await?)
    } else {
        None
    };
    let info = commit(names::COST_AND_USAGE, schema.arrow(), batches).await?;
    m.tables.insert(names::COST_AND_USAGE.into(), info);
    if let Some((s, b)) = projection {
        let info = commit(names::COST_AND_USAGE_1_2, s, b).await?;
        m.tables.insert(names::COST_AND_USAGE_1_2.into(), info);
    }
    let qb = if q_rows.is_empty() {
        vec![]
    } else {
        vec![quarantine::to_batch(&q_rows)]
    };
    let info = commit(names::QUARANTINE, quarantine::schema(), qb).await?;
    m.tables.insert(names::QUARANTINE.into(), info);
    Ok(())
}

/// Whether a raw column feeds the layout adapter (tags, the product map) rather than the SQL.
fn is_adapter_input(format: &Format, canonical: &str) -> bool {
    format.layout == formats::Layout::AwsCur
        && (canonical == "product"
            || canonical == "resource_tags"
            || canonical.starts_with("resource_tags_"))
}

/// The ingestion id: SHA-256 over the file's SHA-256, the format's SQL, the schema files and
/// tally's version. The same inputs and code give the same id, so reruns are identical.
fn set_ingestion_id(o: &mut FileOutcome, format: &Format, schema: &FocusSchema) {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(o.digest.sha256.as_bytes());
    h.update(format.sql.as_bytes());
    for (p, s) in resources::used_hashes() {
        if p.starts_with("schemas/") {
            h.update(p.as_bytes());
            h.update(s.as_bytes());
        }
    }
    let _ = schema;
    let id = hex::encode(h.finalize())[..32].to_string();
    let col = "x_IngestionRunId";
    for b in &mut o.batches {
        let i = b.schema().index_of(col).expect("lineage column");
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols[i] = Arc::new(StringArray::from(vec![id.as_str(); b.num_rows()]));
        *b = RecordBatch::try_new(b.schema(), cols).expect("same schema");
    }
    for q in &mut o.quarantined {
        q.ingestion_id = id.clone();
    }
    o.ingestion_id = id;
}

/// Reconciliation lines for every key seen on either side.
pub fn reconcile(
    source: &BTreeMap<TotalKey, i128>,
    written: &BTreeMap<TotalKey, i128>,
    quarantined: &BTreeMap<TotalKey, i128>,
) -> Vec<Reconciliation> {
    let keys: BTreeSet<&TotalKey> = source
        .keys()
        .chain(written.keys())
        .chain(quarantined.keys())
        .collect();
    keys.into_iter()
        .map(|k| {
            let s = source.get(k).copied().unwrap_or(0);
            let w = written.get(k).copied().unwrap_or(0);
            let q = quarantined.get(k).copied().unwrap_or(0);
            let d = s - w - q;
            Reconciliation {
                billing_period_start: k.0.clone(),
                currency: k.1.clone(),
                source_total: decimal::format(s),
                billed_cost_written: decimal::format(w),
                quarantined: decimal::format(q),
                difference: decimal::format(d),
                status: if d == 0 { "match" } else { "mismatch" }.into(),
            }
        })
        .collect()
}

/// SHA-256 per partition over its rows in order, in Arrow's row format (independent of how the
/// rows are batched or laid out in Parquet files).
pub fn content_hashes(batches: &[RecordBatch]) -> Result<BTreeMap<PartitionKey, String>> {
    let mut hashers: BTreeMap<PartitionKey, Sha256> = BTreeMap::new();
    let Some(first) = batches.first() else {
        return Ok(BTreeMap::new());
    };
    let schema = first.schema();
    let fields = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let idx: Vec<usize> = crate::schema::PARTITION_COLUMNS
        .iter()
        .map(|c| schema.index_of(c).expect("partition column"))
        .collect();
    for b in batches {
        let rows = converter.convert_columns(b.columns())?;
        let part = |c: usize, r: usize| -> String {
            let a = b
                .column(idx[c])
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8 partition column");
            if a.is_null(r) {
                String::new()
            } else {
                a.value(r).to_string()
            }
        };
        for r in 0..b.num_rows() {
            let key = (part(0, r), part(1, r), part(2, r));
            hashers.entry(key).or_default().update(rows.row(r).as_ref());
        }
    }
    Ok(hashers
        .into_iter()
        .map(|(k, h)| (k, hex::encode(h.finalize())))
        .collect())
}

/// Runs `sql/projections/focus_1_2.sql` over the rows to write.
async fn project_1_2(
    schema: &FocusSchema,
    batches: &[RecordBatch],
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let ctx = normalize::session()?;
    let mem = MemTable::try_new(schema.arrow(), vec![batches.to_vec()])?;
    ctx.register_table(names::COST_AND_USAGE, Arc::new(mem))?;
    let sql = resources::load("sql/projections/focus_1_2.sql")?;
    let df = ctx.sql(&sql).await.map_err(|e| TallyError::Sql {
        file: "sql/projections/focus_1_2.sql".into(),
        message: e.to_string(),
    })?;
    let out_schema: arrow::datatypes::SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let out = df.collect().await?;
    Ok((out_schema, out))
}

/// The severity default, re-exported for the CLI's one-off runs.
pub fn default_severity() -> Severity {
    Severity::default()
}
