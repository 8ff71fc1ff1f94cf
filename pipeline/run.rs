//! `tally run`: discover → normalize → check → reconcile → commit → manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tracing::{info, info_span, warn};

use crate::error::{Result, TallyError};
use crate::formats::{self, Format, Measure};
use crate::job::Job;
use crate::manifest::{self, Manifest, Reconciliation};
use crate::normalize::{self, PartitionKey, RowSink};
use crate::quarantine::{self, QuarantineRow};
use crate::schema::FocusSchema;
use crate::source::layout::Adapter;
use crate::source::typing::TotalKey;
use crate::table::{self, Staged, names};
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

/// The run's staged tables, fed row batch by row batch.
struct Sinks {
    cost: Staged,
    focus_1_2: Option<(Staged, Projection)>,
    quarantine: Staged,
}

impl RowSink for Sinks {
    async fn accept(&mut self, batch: RecordBatch) -> Result<()> {
        if let Some((staged, projection)) = &mut self.focus_1_2 {
            for b in projection.apply(&batch).await? {
                staged.write(b).await?;
            }
        }
        self.cost.write(batch).await
    }

    async fn quarantine(&mut self, rows: Vec<QuarantineRow>) -> Result<()> {
        self.quarantine.write(quarantine::to_batch(&rows)).await
    }
}

/// `sql/projections/focus_1_2.sql`, applied batch by batch.
struct Projection {
    ctx: datafusion::prelude::SessionContext,
    sql: String,
    schema: arrow::datatypes::SchemaRef,
}

impl Projection {
    async fn new(schema: &FocusSchema) -> Result<Projection> {
        let path = "sql/projections/focus_1_2.sql";
        let ctx = normalize::session()?;
        let sql = resources::load(path)?;
        ctx.register_batch(
            names::COST_AND_USAGE,
            RecordBatch::new_empty(schema.arrow()),
        )?;
        let df = ctx.sql(&sql).await.map_err(|e| TallyError::Sql {
            file: path.into(),
            message: e.to_string(),
        })?;
        let out: arrow::datatypes::SchemaRef = Arc::new(df.schema().as_arrow().clone());
        Ok(Projection {
            ctx,
            sql,
            schema: out,
        })
    }

    async fn apply(&self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        self.ctx.deregister_table(names::COST_AND_USAGE)?;
        self.ctx
            .register_batch(names::COST_AND_USAGE, batch.clone())?;
        Ok(self.ctx.sql(&self.sql).await?.collect().await?)
    }
}

async fn execute(
    req: &RunRequest,
    schema: &FocusSchema,
    run_id: &str,
    m: &mut Manifest,
) -> Result<()> {
    let job = &req.job;
    let root = &job.output.url;
    let all_formats = formats::all()?;
    let mut sinks = Sinks {
        cost: Staged::open(root, names::COST_AND_USAGE, &schema.arrow()).await?,
        focus_1_2: None,
        quarantine: Staged::open(root, names::QUARANTINE, &quarantine::schema()).await?,
    };
    if job.wants_focus_1_2() {
        let projection = Projection::new(schema).await?;
        let staged = Staged::open(root, names::COST_AND_USAGE_1_2, &projection.schema).await?;
        sinks.focus_1_2 = Some((staged, projection));
    }
    let result = ingest(job, schema, &all_formats, &mut sinks, m).await;
    let mut staged = vec![sinks.cost];
    if let Some((s, _)) = sinks.focus_1_2 {
        staged.push(s);
    }
    staged.push(sinks.quarantine);
    let partitions = match result {
        Ok(p) => p,
        Err(e) => {
            // Nothing was committed: remove the files staged so far, and report the run's own error.
            abandon_all(staged).await;
            return Err(e);
        }
    };

    // Commit: every partition any input touched is replaced as a unit, table by table. The
    // manifest records each table as it commits, so a failure part-way says which did.
    let mut pending = staged.into_iter();
    while let Some(s) = pending.next() {
        let name = s.name();
        let span = info_span!("commit", table = name);
        let _g = span.enter();
        let rows = s.rows();
        let (t, hashes) = match s.commit(&partitions, run_id).await {
            Ok(done) => done,
            Err(e) => {
                abandon_all(pending.collect()).await;
                return Err(e);
            }
        };
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
        info!(version = ?t.version(), partitions = partitions.len(), rows, "committed");
        m.tables.insert(
            name.into(),
            manifest::TableInfo {
                url: t.table_url().to_string(),
                version: t.version(),
                partitions: parts,
            },
        );
    }
    Ok(())
}

/// Deletes what the given tables staged; failures to clean up are logged, not returned, so the
/// error that stopped the run is the one reported.
async fn abandon_all(staged: Vec<Staged>) {
    for s in staged {
        let name = s.name();
        if let Err(e) = s.abandon().await {
            warn!(table = name, error = %e, "could not remove staged files (VACUUM will)");
        }
    }
}

/// Reads every input into the staged tables and reconciles; returns the partitions touched.
async fn ingest(
    job: &Job,
    schema: &FocusSchema,
    all_formats: &[Format],
    sinks: &mut Sinks,
    m: &mut Manifest,
) -> Result<BTreeSet<PartitionKey>> {
    let mut source_totals: BTreeMap<TotalKey, i128> = BTreeMap::new();
    let mut written: BTreeMap<TotalKey, i128> = BTreeMap::new();
    let mut quarantined: BTreeMap<TotalKey, i128> = BTreeMap::new();
    let mut partitions: BTreeSet<PartitionKey> = BTreeSet::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut measures: BTreeSet<(String, Measure)> = BTreeSet::new();
    for source in &job.sources {
        let span = info_span!("source", name = %source.name);
        let _g = span.enter();
        let loc = storage::open(&source.url)?;
        let files = storage::discover(&loc).await?;
        if files.is_empty() {
            return Err(TallyError::BadFile {
                file: source.url.clone(),
                message: "no export files (.csv, .csv.gz, .parquet, .jsonl, .json) found here"
                    .into(),
            });
        }
        let bar = progress::files_bar(files.len() as u64, &source.name);
        for file in files {
            if let Some(other) = seen.insert(file.url.clone(), source.name.clone()) {
                return Err(TallyError::Job {
                    path: job.job.name.clone().into(),
                    message: format!(
                        "{} is read by both source {other:?} and source {:?}; a file may be ingested once per run",
                        file.url, source.name
                    ),
                });
            }
            let t0 = std::time::Instant::now();
            let names = normalize::header(&loc, &file).await?;
            let (format, detected): (Format, bool) = match &source.format {
                Some(name) => (formats::by_name(name)?, false),
                None => {
                    let candidates: Vec<(Format, Vec<String>)> = all_formats
                        .iter()
                        .map(|f| (f.clone(), Adapter::new(f, &names).names().to_vec()))
                        .collect();
                    (formats::detect(&candidates, &file.url)?.clone(), true)
                }
            };
            if detected {
                info!(file = %file.url, format = %format.name, "format detected from the header");
            }
            let format = format
                .with_params(&source.params)
                .map_err(|e| TallyError::Job {
                    path: job.job.name.clone().into(),
                    message: format!("source {:?}: {e}", source.name),
                })?;
            measures.insert((format.provider.clone(), format.measure));
            let cost_identity = source.cost_identity.unwrap_or(job.checks.cost_identity);
            let ingestion_id = ingestion_id(&file, &format);
            let o = normalize::process_file(
                schema,
                &format,
                detected,
                &loc,
                &file,
                names.clone(),
                &ingestion_id,
                cost_identity,
                sinks,
            )
            .await?;
            info!(
                file = %file.url,
                rows = o.source.rows,
                written = o.rows_written,
                quarantined = o.quarantine.rows,
                ms = t0.elapsed().as_millis() as u64,
                "file normalized"
            );
            m.inputs.push(manifest::Input {
                source: source.name.clone(),
                url: file.url.clone(),
                format: format.name.clone(),
                format_detected: detected,
                size: file.size,
                e_tag: file.e_tag.clone(),
                last_modified: file.last_modified.clone(),
                sha256: o.digest.sha256.clone(),
                ingestion_id: o.ingestion_id.clone(),
                rows_read: o.source.rows,
                rows_written: o.rows_written,
                rows_quarantined: o.quarantine.rows,
                rows_folded: o.folded.clone(),
                rows_derived: o.derived.clone(),
                ignored_columns: o.ignored_columns.clone(),
                ai_meters_unparsed: o.ai_meters_unparsed,
            });
            let overflow = || {
                TallyError::Integrity(format!(
                    "{}: a money sum overflowed Decimal128(38,18)",
                    file.url
                ))
            };
            if o.source.overflowed || o.quarantine.overflowed {
                return Err(overflow());
            }
            for (sums, part) in [
                (&mut source_totals, &o.source.totals),
                (&mut written, &o.written_totals),
                (&mut quarantined, &o.quarantine.amounts),
            ] {
                for (k, v) in part {
                    decimal::accumulate(sums, k.clone(), *v).map_err(|_| overflow())?;
                }
            }
            for (r, n) in &o.quarantine.by_rule {
                *m.quarantined_by_rule.entry(r.clone()).or_default() += n;
            }
            partitions.extend(o.quarantine.partitions.iter().cloned());
            partitions.extend(o.partitions.iter().cloned());
            for (r, n) in &o.warnings {
                *m.warnings_by_rule.entry(r.clone()).or_default() += n;
            }
            m.totals.files += 1;
            m.totals.rows_read += o.source.rows;
            m.totals.rows_written += o.rows_written;
            m.totals.rows_quarantined += o.quarantine.rows;
            m.totals.rows_folded += o.folded.values().sum::<u64>();
            m.totals.rows_derived += o.derived.values().sum::<u64>();
            m.totals.ai_meters_unparsed += o.ai_meters_unparsed;
            m.totals.unparseable_source_amounts += o.source.unparseable_amounts;
            bar.inc(1);
        }
        bar.finish_and_clear();
    }

    // Reconcile before anything is committed: a mismatch publishes nothing.
    m.reconciliation = reconcile(&measures, &source_totals, &written, &quarantined);
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
                    "{} {} {} {:?}: source {} ≠ written {} + quarantined {} (difference {})",
                    r.provider,
                    r.billing_period_start,
                    r.currency,
                    r.measure,
                    r.source_total,
                    r.written,
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
    Ok(partitions)
}

/// The ingestion id written to `x_IngestionRunId`: SHA-256 over the stored object's identity
/// (URL, size, ETag or last-modified), the format's SQL, the schema files and tally's version.
/// Known before the file is read, so rows stream straight to the table; the same object and code
/// give the same id, so reruns are identical. The file's full SHA-256 is in the manifest.
fn ingestion_id(file: &storage::DiscoveredFile, format: &Format) -> String {
    let mut h = Sha256::new();
    for part in [
        env!("CARGO_PKG_VERSION"),
        &file.url,
        &file.size.to_string(),
        file.e_tag.as_deref().unwrap_or(&file.last_modified),
        &format.sql,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // Every schema file, whether or not this run has loaded it yet: the id must not depend on
    // the order files and options make tally load them.
    for path in resources::list("schemas/") {
        h.update(path.as_bytes());
        h.update(resources::load(path).unwrap_or_default().as_bytes());
    }
    hex::encode(h.finalize())[..32].to_string()
}

/// Reconciliation lines for every key seen on either side.
pub fn reconcile(
    measures: &BTreeSet<(String, Measure)>,
    source: &BTreeMap<TotalKey, i128>,
    written: &BTreeMap<TotalKey, i128>,
    quarantined: &BTreeMap<TotalKey, i128>,
) -> Vec<Reconciliation> {
    // A measure is reconciled for a provider when a source of it declares that measure, and
    // for a (period, currency) when a source of that measure has rows there — or when no
    // source of another measure has (then the written money came from nowhere, a mismatch).
    let sourced = |k: &TotalKey| {
        source
            .keys()
            .any(|s| s.0 == k.0 && s.1 == k.1 && s.2 == k.2 && s.3 == k.3)
    };
    let other_sourced = |k: &TotalKey| {
        source
            .keys()
            .any(|s| s.0 == k.0 && s.1 == k.1 && s.2 == k.2 && s.3 != k.3)
    };
    let keys: BTreeSet<&TotalKey> = source
        .keys()
        .chain(written.keys())
        .chain(quarantined.keys())
        .filter(|k| measures.contains(&(k.0.clone(), k.3)))
        .filter(|k| sourced(k) || !other_sourced(k))
        .collect();
    keys.into_iter()
        .map(|k| {
            let s = source.get(k).copied().unwrap_or(0);
            let w = written.get(k).copied().unwrap_or(0);
            let q = quarantined.get(k).copied().unwrap_or(0);
            let d = s - w - q;
            Reconciliation {
                provider: k.0.clone(),
                billing_period_start: k.1.clone(),
                currency: k.2.clone(),
                measure: k.3,
                source_total: decimal::format(s),
                written: decimal::format(w),
                quarantined: decimal::format(q),
                difference: decimal::format(d),
                status: if d == 0 { "match" } else { "mismatch" }.into(),
            }
        })
        .collect()
}
