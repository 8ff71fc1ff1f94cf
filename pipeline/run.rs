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
    /// How much to read.
    pub options: RunOptions,
}

/// How much a run reads. By default a run is incremental: it reads the export files that are
/// new or changed (size, ETag or last-modified) since the run the tables reflect (see
/// `prior_state`), plus
/// every file that shares a billing-period partition with them, and leaves the rest alone.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Read every file, whatever the last run saw (`--full`).
    pub full: bool,
    /// Only files modified at or after this instant count as new or changed (`--since`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only changed files with rows in these billing periods (`YYYY-MM`) are read (`--period`),
    /// with the files that share their partitions, whose other periods are then rebuilt too;
    /// new files are always read.
    pub periods: Vec<String>,
    /// How long to wait for another run's lock on the output before giving up (`--wait-lock`).
    pub wait_lock: std::time::Duration,
}

/// A new run id: UTC start time to the microsecond plus a random suffix
/// (`20261129T182453.123456Z-d4efe2a1`). Ids sort as the runs started: the next run finds the
/// newest manifest by name, and two runs a second apart (a killed run and its rerun) must not
/// sort by their suffixes.
pub fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let mut h = Sha256::new();
    h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        &hex::encode(h.finalize())[..8]
    )
}

/// Runs a job; returns the manifest (also written under `<output>/_tally/manifests/`).
pub async fn run(req: RunRequest) -> Result<Manifest> {
    let deadline = tokio::time::Instant::now() + req.options.wait_lock;
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match run_once(&req, wait).await {
            // Another run's lock replaced this one's before it committed: with `--wait-lock`,
            // wait for that run as if its lock had been found first, then run again.
            Err(TallyError::LockLost { holder, .. })
                if !req.options.wait_lock.is_zero() && tokio::time::Instant::now() < deadline =>
            {
                info!(%holder, "lost the output's lock before committing; waiting for its holder, then running again");
            }
            other => return other,
        }
    }
}

/// One attempt at a run, waiting up to `wait` for the output's lock.
async fn run_once(req: &RunRequest, wait: std::time::Duration) -> Result<Manifest> {
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
        skipped: Vec::new(),
        tables: BTreeMap::new(),
        quarantined_by_rule: BTreeMap::new(),
        warnings_by_rule: BTreeMap::new(),
        reconciliation: Vec::new(),
        totals: manifest::Totals::default(),
        mode: "full".into(),
        files_unchanged: 0,
        state: Vec::new(),
        replaces: Vec::new(),
        tables_committed: false,
        stages: Vec::new(),
    };
    let out = storage::open(&req.job.output.url)?;
    // Settings read later in the run are checked before it starts.
    crate::stages::memory_limit()?;
    crate::stages::period_split_rows()?;
    // One run at a time per output; a run that cannot get the lock, or loses it before it
    // commits, writes no manifest.
    let lock = crate::lock::acquire(&out, &run_id, &req.job.job.name, wait).await?;
    let result = execute(req, &schema, &run_id, &lock, &mut m).await;
    if let Err(e @ TallyError::LockLost { .. }) = result {
        lock.release().await;
        return Err(e);
    }
    m.finished_at = chrono::Utc::now().to_rfc3339();
    m.resources = resources::used_hashes();
    match &result {
        Ok(()) => m.status = "ok".into(),
        Err(e) => {
            m.status = "failed".into();
            m.error = Some(e.to_string());
        }
    }
    let written = write_manifest(&out, &m).await;
    lock.release().await;
    let path = written?;
    info!(manifest = %out.url_of(&path), status = %m.status, "manifest written");
    result.map(|_| m)
}

/// Writes `m` as `<output>/_tally/manifests/<run id>.json` (over the run's intent, if it wrote
/// one); returns its path.
async fn write_manifest(out: &storage::Location, m: &Manifest) -> Result<object_store::path::Path> {
    let path = out
        .path
        .clone()
        .join("_tally")
        .join("manifests")
        .join(format!("{}.json", m.run_id).as_str());
    out.store
        .put(&path, m.to_json().into_bytes().into())
        .await
        .map_err(|e| out.err("put", &path, e))?;
    Ok(path)
}

/// The run's staged tables, fed row batch by row batch.
struct Sinks {
    cost: Staged,
    focus_1_2: Option<(Staged, Projection)>,
    quarantine: Staged,
}

impl Sinks {
    /// Starts staging every table the job writes.
    async fn open(root: &str, schema: &FocusSchema, job: &Job) -> Result<Sinks> {
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
        Ok(sinks)
    }

    /// The staged tables, in the order they are committed.
    fn into_staged(self) -> Vec<Staged> {
        let mut staged = vec![self.cost];
        if let Some((s, _)) = self.focus_1_2 {
            staged.push(s);
        }
        staged.push(self.quarantine);
        staged
    }
}

/// The candidates a run must read, given that it reads `seed`, so that every partition in
/// `touched` is rebuilt whole: every file the tables reflect with rows in a touched partition,
/// and, as such a file's rows are rewritten in all its partitions, every file sharing one of
/// those, until nothing new comes up (`touched` grows with them). An unchanged file writes the
/// partitions it wrote before: its bytes and the code reading them are the same.
fn closure(
    plan: &Plan,
    seed: &BTreeSet<usize>,
    touched: &mut BTreeSet<PartitionKey>,
) -> BTreeSet<usize> {
    let mut files = seed.clone();
    loop {
        let more: Vec<(usize, &manifest::FileState)> = (0..plan.candidates.len())
            .filter(|i| !files.contains(i))
            .filter_map(|i| Some((i, plan.prior.get(&plan.candidates[i].file.url)?)))
            .filter(|(_, p)| p.partitions.iter().any(|k| touched.contains(k)))
            .collect();
        if more.is_empty() {
            return files;
        }
        for (i, p) in more {
            files.insert(i);
            touched.extend(p.partitions.iter().cloned());
        }
    }
}

/// Reads `files` (candidate indexes) in order into the sinks. The next file's reader starts
/// while one is mapped and written (an error starting it is reported when its turn comes,
/// after the files before it).
async fn read_files<'a>(
    plan: &'a Plan,
    files: &BTreeSet<usize>,
    ingest: &mut Ingest<'a>,
    sinks: &mut Sinks,
    m: &mut Manifest,
) -> Result<()> {
    let job = ingest.job;
    let order: Vec<usize> = files.iter().copied().collect();
    let bar = progress::files_bar(order.len() as u64, "files");
    let mut next: Option<Result<Started>> = None;
    for (k, &i) in order.iter().enumerate() {
        let c = &plan.candidates[i];
        let current = match next.take() {
            Some(started) => started?,
            None => {
                ingest
                    .start(&job.sources[c.source], &c.loc, &c.file)
                    .await?
            }
        };
        if let Some(&j) = order.get(k + 1) {
            let n = &plan.candidates[j];
            next = Some(ingest.start(&job.sources[n.source], &n.loc, &n.file).await);
        }
        ingest.finish_file(current, sinks, m).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Forgets what reading added to the manifest, before the run reads again.
fn forget_reads(m: &mut Manifest) {
    m.inputs.clear();
    m.quarantined_by_rule.clear();
    m.warnings_by_rule.clear();
    m.totals = manifest::Totals::default();
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

/// One export file found under one of the job's sources.
struct Candidate {
    source: usize,
    loc: storage::Location,
    file: storage::DiscoveredFile,
}

/// What a run will read, decided before anything is read.
struct Plan {
    candidates: Vec<Candidate>,
    /// Objects under the sources that are not read, and why (for the manifest).
    skipped: Vec<manifest::Skipped>,
    /// What the files' ingestion ids are built on, for this run.
    ids: IdBasis,
    /// Indexes of the candidates that are new or changed (all of them in a full run); the run
    /// reads them and every file sharing a partition with them (see [`closure`]).
    work: BTreeSet<usize>,
    /// Partitions that must be rebuilt whatever is read: those of changed and vanished files.
    touched: BTreeSet<PartitionKey>,
    /// The state of the run the tables reflect (see [`prior_state`]; empty for a first run).
    prior: BTreeMap<String, manifest::FileState>,
    /// Files in that state that are no longer there.
    vanished: Vec<String>,
    /// Entries of that state this run neither reads nor rebuilds without (files gone outside
    /// the `--period`s it rebuilds): kept in the new state, so a later run still removes their
    /// rows.
    carried: Vec<manifest::FileState>,
    /// The stage records of that run.
    prior_stages: Vec<crate::stages::StageRecord>,
}

/// The latest run of `job` whose manifest records the state its tables reflect: a successful
/// run, or one that committed every table and then failed (in a stage): the tables are as that
/// run left them, and comparing with an older run would miss what it committed (a file it read
/// that is gone since would keep its rows). Its stage records are those it got to (none, when a
/// stage failed), so every stage runs again.
///
/// Or a run that stopped while committing (killed between two tables' commits, a commit that
/// failed, a manifest it could not write): its intent records the state the tables were about
/// to reflect and the partitions it was replacing. Some tables may hold its rows and others
/// not; with those partitions rebuilt (see [`manifest::PriorRun::unfinished`]) its state is
/// what they reflect.
async fn prior_state(out: &storage::Location, job: &str) -> Result<Option<manifest::PriorRun>> {
    use futures::TryStreamExt;
    let dir = out.path.clone().join("_tally").join("manifests");
    let mut metas: Vec<object_store::ObjectMeta> =
        match out.store.list(Some(&dir)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(out.err("list", &dir, e)),
        };
    // Run ids start with their UTC start time: newest first.
    metas.sort_by(|a, b| b.location.cmp(&a.location));
    for meta in metas {
        let bytes = out.get_bytes(&meta.location).await?;
        let Ok(prior) = serde_json::from_slice::<manifest::PriorRun>(&bytes) else {
            warn!(manifest = %out.url_of(&meta.location), "unreadable manifest skipped");
            continue;
        };
        if prior.job.name == job && (prior.complete() || !prior.unfinished().is_empty()) {
            return Ok(Some(prior));
        }
    }
    Ok(None)
}

/// Whether a file must be read again: its bytes changed (size, ETag or last-modified), or the
/// code that would read it did (its ingestion id covers the SQL, the schemas and tally's version).
fn file_changed(
    prior: &manifest::FileState,
    f: &storage::DiscoveredFile,
    job: &Job,
    source: &crate::job::Source,
    ids: &IdBasis,
) -> bool {
    let bytes_changed = prior.size != f.size
        || match (&prior.e_tag, &f.e_tag) {
            (Some(a), Some(b)) => a != b,
            _ => prior.last_modified != f.last_modified,
        };
    let name = source.format.as_deref().unwrap_or(&prior.format);
    let code_changed = formats::by_name(name)
        .and_then(|f| f.with_params(&source.params))
        .map(|format| ids.id(job, source, f, &format) != prior.ingestion_id)
        .unwrap_or(true);
    bytes_changed || code_changed
}

/// Lists every source and decides what to read.
async fn plan(job: &Job, options: &RunOptions, out: &storage::Location) -> Result<Plan> {
    let ids = IdBasis::of(job);
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, source) in job.sources.iter().enumerate() {
        let loc = storage::open(&source.url)?;
        let found = storage::discover_all(&loc).await?;
        let current =
            storage::current_deliveries(&loc, &found.export_manifests, &found.listed).await?;
        let (files, not_current) = storage::latest_deliveries(found.files, &current);
        let skip = |url: String, reason: &str, files: u64| manifest::Skipped {
            source: source.name.clone(),
            url,
            reason: reason.into(),
            files,
        };
        skipped.extend(
            found
                .not_exports
                .into_iter()
                .map(|u| skip(u, "not_an_export", 1)),
        );
        // A delivery that is not read is one entry: its folder and how many files it holds.
        let mut deliveries: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for (f, why) in not_current {
            let reason = match why {
                storage::NotCurrent::Superseded => {
                    info!(file = %f.url, "skipped: a later delivery of the same billing period supersedes it");
                    "superseded"
                }
                storage::NotCurrent::InProgress => {
                    warn!(file = %f.url, "skipped: a delivery newer than the one its billing period's manifest names, still being written");
                    "in_progress"
                }
            };
            let folder = f.url.rsplit_once('/').map_or(f.url.as_str(), |(d, _)| d);
            *deliveries
                .entry((format!("{folder}/"), reason))
                .or_default() += 1;
        }
        skipped.extend(
            deliveries
                .into_iter()
                .map(|((url, reason), n)| skip(url, reason, n)),
        );
        if files.is_empty() {
            return Err(TallyError::BadFile {
                file: source.url.clone(),
                message: "no export files (.csv, .csv.gz, .parquet, .jsonl, .json) found here"
                    .into(),
            });
        }
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
            candidates.push(Candidate {
                source: i,
                loc: loc.clone(),
                file,
            });
        }
    }
    // URL order, whatever the order of the sources in the job: the order a full run reads in,
    // so a partition fed by two sources comes out the same after the job lists them otherwise.
    candidates.sort_by(|a, b| a.file.url.cmp(&b.file.url));
    skipped.sort_by(|a: &manifest::Skipped, b| (&a.url, &a.source).cmp(&(&b.url, &b.source)));
    let last = prior_state(out, &job.job.name).await?;
    let prior_stages = last.as_ref().map(|p| p.stages.clone()).unwrap_or_default();
    // A run that stopped while committing: every partition it was replacing is rebuilt, in
    // every table, whatever else this run reads (`--period` does not narrow this).
    let mut touched: BTreeSet<PartitionKey> = BTreeSet::new();
    if let Some(p) = last.as_ref().filter(|p| !p.unfinished().is_empty()) {
        warn!(
            run_id = %p.run_id,
            partitions = p.unfinished().len(),
            "the last run stopped while committing: the partitions it was replacing are rebuilt in every table"
        );
        touched.extend(p.unfinished().iter().cloned());
    }
    let Some((prior_run, prior)) = last.and_then(|p| p.state.map(|s| (p.run_id, s))) else {
        return Ok(Plan {
            ids,
            work: (0..candidates.len()).collect(),
            candidates,
            skipped,
            touched,
            prior: BTreeMap::new(),
            vanished: Vec::new(),
            carried: Vec::new(),
            prior_stages,
        });
    };
    let prior: BTreeMap<String, manifest::FileState> =
        prior.into_iter().map(|f| (f.url.clone(), f)).collect();
    let in_scope = |parts: &[(String, String, String)]| {
        options.periods.is_empty() || parts.iter().any(|p| options.periods.contains(&p.2))
    };
    let mut work = BTreeSet::new();
    if options.full {
        // Every file is read again, and every partition the last run recorded is replaced: one
        // that no file feeds any more (its files deleted, or restated into other periods) is
        // emptied, not left as it was.
        info!(since_run = %prior_run, files = prior.len(), "full: every file is read, every recorded partition rebuilt");
        work.extend(0..candidates.len());
        touched.extend(
            prior
                .values()
                .filter(|p| in_scope(&p.partitions))
                .flat_map(|p| p.partitions.iter().cloned()),
        );
    } else {
        info!(since_run = %prior_run, files = prior.len(), "incremental: comparing with the run the tables reflect");
    }
    for (i, c) in candidates.iter().enumerate().filter(|_| !options.full) {
        let recent = options
            .since
            .is_none_or(|t| c.file.last_modified.as_str() >= t.to_rfc3339().as_str());
        match prior.get(&c.file.url) {
            None if recent => {
                work.insert(i);
            }
            Some(p)
                if recent
                    && file_changed(p, &c.file, job, &job.sources[c.source], &ids)
                    && in_scope(&p.partitions) =>
            {
                work.insert(i);
                touched.extend(p.partitions.iter().cloned());
            }
            _ => {}
        }
    }
    // Gone: a file the last run read under one of this job's source URLs (whatever the source
    // is called now) that is not there now.
    let under_a_source = |p: &manifest::FileState| {
        job.sources.iter().any(|s| {
            let base = s.url.trim_end_matches('/');
            p.url == base || p.url.starts_with(&format!("{base}/"))
        })
    };
    let (vanished, carried): (Vec<&manifest::FileState>, Vec<&manifest::FileState>) = prior
        .values()
        .filter(|p| under_a_source(p) && !seen.contains_key(&p.url))
        .partition(|p| in_scope(&p.partitions));
    let vanished: Vec<String> = vanished.into_iter().map(|p| p.url.clone()).collect();
    let carried: Vec<manifest::FileState> = carried.into_iter().cloned().collect();
    for url in &vanished {
        // A file of a CUR delivery that is no longer its month's current one is not gone.
        let not_current = skipped
            .iter()
            .find(|s| s.reason != "not_an_export" && url.starts_with(&s.url));
        match not_current {
            Some(s) => {
                info!(file = %url, delivery = %s.url, reason = %s.reason, "a file the tables reflect is in a delivery that is not its month's current one: its partitions are rebuilt from the current one")
            }
            None => {
                warn!(file = %url, "an export file the tables reflect is gone: its partitions are rebuilt without it")
            }
        }
        touched.extend(prior[url].partitions.iter().cloned());
    }
    Ok(Plan {
        ids,
        candidates,
        skipped,
        work,
        touched,
        prior,
        vanished,
        carried,
        prior_stages,
    })
}

async fn execute(
    req: &RunRequest,
    schema: &FocusSchema,
    run_id: &str,
    lock: &crate::lock::RunLock,
    m: &mut Manifest,
) -> Result<()> {
    let job = &req.job;
    let root = &job.output.url;
    let out = storage::open(root)?;
    let plan = plan(job, &req.options, &out).await?;
    m.skipped = plan.skipped.clone();
    m.mode = if plan.prior.is_empty() || req.options.full {
        "full"
    } else {
        "incremental"
    }
    .into();
    if plan.work.is_empty() && plan.vanished.is_empty() && plan.touched.is_empty() {
        m.files_unchanged = plan.candidates.len() as u64;
        m.state = plan.prior.into_values().collect();
        info!(
            files = m.files_unchanged,
            "nothing new since the run the tables reflect: no table changed"
        );
        lock.confirm().await?;
        m.stages = crate::stages::run_all(root, &job.inputs, &plan.prior_stages).await?;
        return Ok(());
    }
    let all_formats = formats::all()?;
    // Exports are full snapshots of their billing periods: a partition that is rebuilt is
    // rebuilt from every file that feeds it. The files are read in URL order, as a full run
    // reads them, so a partition's rows come out in the same order (and with the same content
    // hash) whatever history led to the run. A new or changed file's partitions are known only
    // once it is read; if they turn out to be fed by files not read, the run starts its reading
    // again with those files, in URL order.
    let mut touched = plan.touched.clone();
    let mut seed = plan.work.clone();
    let (sinks, ingest, done) = loop {
        let files = closure(&plan, &seed, &mut touched);
        let sharing = files.len() - seed.len();
        if sharing > 0 && !plan.prior.is_empty() {
            info!(
                files = sharing,
                "reading unchanged files that share a rebuilt partition"
            );
        }
        let mut sinks = Sinks::open(root, schema, job).await?;
        let mut ingest = Ingest::new(job, &plan.ids, schema, &all_formats);
        let read = read_files(&plan, &files, &mut ingest, &mut sinks, m).await;
        if let Err(e) = read {
            // Nothing was committed: remove the files staged so far, and report the run's own
            // error.
            abandon_all(sinks.into_staged()).await;
            return Err(e);
        }
        touched.extend(ingest.partitions.iter().cloned());
        let all = closure(&plan, &files, &mut touched);
        if all.len() == files.len() {
            break (sinks, ingest, files);
        }
        info!(
            files = all.len() - files.len(),
            "new or changed files wrote to partitions that unchanged files feed: reading again, in URL order"
        );
        abandon_all(sinks.into_staged()).await;
        forget_reads(m);
        seed = all;
    };
    let mut staged = sinks.into_staged();
    if let Err(e) = ingest.finish(m) {
        abandon_all(staged).await;
        return Err(e);
    }
    let partitions = touched;
    m.files_unchanged = (plan.candidates.len() - done.len()) as u64;
    m.state = plan
        .candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if done.contains(&i) {
                Some(manifest::FileState {
                    source: job.sources[c.source].name.clone(),
                    url: c.file.url.clone(),
                    size: c.file.size,
                    e_tag: c.file.e_tag.clone(),
                    last_modified: c.file.last_modified.clone(),
                    format: ingest
                        .formats
                        .get(&c.file.url)
                        .cloned()
                        .unwrap_or_default()
                        .0,
                    ingestion_id: ingest
                        .formats
                        .get(&c.file.url)
                        .cloned()
                        .unwrap_or_default()
                        .1,
                    partitions: ingest
                        .per_file
                        .get(&c.file.url)
                        .map(|p| p.iter().cloned().collect())
                        .unwrap_or_default(),
                })
            } else {
                plan.prior.get(&c.file.url).cloned()
            }
        })
        // A file gone outside the `--period`s is carried until a run rebuilds all its partitions
        // (this one may have, for the files sharing them).
        .chain(
            plan.carried
                .iter()
                .filter(|c| !c.partitions.iter().all(|k| partitions.contains(k)))
                .cloned(),
        )
        .collect();
    crate::fault::point("before-commit");
    crate::fault::pause("before-commit").await;
    // Only the run that still holds the output's lock publishes. A new output's tables are
    // created first, all of them, so the run cannot stop between its commits over one.
    let mut ready = lock.confirm().await;
    for s in &mut staged {
        if ready.is_ok() {
            ready = s.create_if_missing().await;
        }
    }
    // The intent: before anything is published, the manifest records the state the tables are
    // about to reflect and the partitions about to be replaced. A run that stops before its
    // last commit leaves it, and the next run rebuilds those partitions in every table.
    if ready.is_ok() && !partitions.is_empty() {
        m.status = "committing".into();
        m.replaces = partitions.iter().cloned().collect();
        ready = write_manifest(&out, m).await.map(|_| ());
    }
    if let Err(e) = ready {
        // Nothing was committed: the run's manifest does not ask for a rebuild (it overwrites
        // the intent, if that was written).
        m.replaces.clear();
        abandon_all(staged).await;
        return Err(e);
    }

    // Commit: every partition any input touched is replaced as a unit, table by table. The
    // manifest records each table as it commits, so a failure part-way says which did.
    let mut pending = staged.into_iter();
    while let Some(s) = pending.next() {
        let name = s.name();
        let span = info_span!("commit", table = name);
        let _g = span.enter();
        let rows = s.rows();
        let before = s.partition_stats_before();
        let (t, hashes) = match s.commit(&partitions, run_id).await {
            Ok(done) => done,
            Err(e) => {
                abandon_all(pending.collect()).await;
                return Err(e);
            }
        };
        crate::fault::point("between-commits");
        let stats = table::partition_stats(&t);
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
                    replaced_rows: before.get(k).map_or(0, |b| b.1),
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
    m.tables_committed = true;
    // The curated tables, on the committed data.
    m.stages = crate::stages::run_all(root, &job.inputs, &plan.prior_stages).await?;
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

/// A file whose reader has started (see [`normalize::StartedFile`]), with what the run needs
/// to account for it.
struct Started<'a> {
    source: &'a crate::job::Source,
    file: storage::DiscoveredFile,
    format: Format,
    detected: bool,
    cost_identity: crate::job::Severity,
    t0: std::time::Instant,
    started: normalize::StartedFile,
}

/// Reads files into the staged tables and keeps the sums the reconciliation compares.
struct Ingest<'a> {
    job: &'a Job,
    /// What every file's ingestion id is built on (the plan's).
    ids: &'a IdBasis,
    schema: &'a FocusSchema,
    all_formats: &'a [Format],
    source_totals: BTreeMap<TotalKey, i128>,
    written: BTreeMap<TotalKey, i128>,
    quarantined: BTreeMap<TotalKey, i128>,
    measures: BTreeSet<(String, Measure)>,
    /// Every partition a file read so far wrote to.
    partitions: BTreeSet<PartitionKey>,
    /// The same, per file URL.
    per_file: BTreeMap<String, BTreeSet<PartitionKey>>,
    /// Format name and ingestion id, per file URL.
    formats: BTreeMap<String, (String, String)>,
    /// Mapping plans, reused across files of the same format and columns.
    plans: normalize::MappingPlans,
}

impl<'a> Ingest<'a> {
    fn new(
        job: &'a Job,
        ids: &'a IdBasis,
        schema: &'a FocusSchema,
        all_formats: &'a [Format],
    ) -> Self {
        Ingest {
            job,
            ids,
            schema,
            all_formats,
            source_totals: BTreeMap::new(),
            written: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            measures: BTreeSet::new(),
            partitions: BTreeSet::new(),
            per_file: BTreeMap::new(),
            formats: BTreeMap::new(),
            plans: normalize::MappingPlans::default(),
        }
    }

    /// Reads the header of one file, settles its format and starts its reader.
    async fn start(
        &mut self,
        source: &'a crate::job::Source,
        loc: &storage::Location,
        file: &storage::DiscoveredFile,
    ) -> Result<Started<'a>> {
        let job = self.job;
        let span = info_span!("source", name = %source.name);
        let _g = span.enter();
        let t0 = std::time::Instant::now();
        let names = normalize::header(loc, file).await?;
        let (format, detected): (Format, bool) = match &source.format {
            Some(name) => (formats::by_name(name)?, false),
            None => {
                let candidates: Vec<(Format, Vec<String>)> = self
                    .all_formats
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
        self.measures
            .insert((format.provider.clone(), format.measure));
        let cost_identity = source.cost_identity.unwrap_or(job.checks.cost_identity);
        let ingestion_id = self.ids.id(job, source, file, &format);
        self.formats.insert(
            file.url.clone(),
            (format.name.clone(), ingestion_id.clone()),
        );
        let started = normalize::start_file(&format, detected, loc, file, names, &ingestion_id);
        Ok(Started {
            source,
            file: file.clone(),
            format,
            detected,
            cost_identity,
            t0,
            started,
        })
    }

    /// Maps a started file into the sinks and adds up what it read and wrote.
    async fn finish_file(
        &mut self,
        started: Started<'a>,
        sinks: &mut Sinks,
        m: &mut Manifest,
    ) -> Result<()> {
        let Started {
            source,
            file,
            format,
            detected,
            cost_identity,
            t0,
            started,
        } = started;
        let file = &file;
        let span = info_span!("source", name = %source.name);
        let _g = span.enter();
        let o = normalize::finish_file(started, self.schema, cost_identity, &mut self.plans, sinks)
            .await?;
        crate::fault::point("after-file");
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
            (&mut self.source_totals, &o.source.totals),
            (&mut self.written, &o.written_totals),
            (&mut self.quarantined, &o.quarantine.amounts),
        ] {
            for (k, v) in part {
                decimal::accumulate(sums, k.clone(), *v).map_err(|_| overflow())?;
            }
        }
        for (r, n) in &o.quarantine.by_rule {
            *m.quarantined_by_rule.entry(r.clone()).or_default() += n;
        }
        let mine = self.per_file.entry(file.url.clone()).or_default();
        mine.extend(o.quarantine.partitions.iter().cloned());
        mine.extend(o.partitions.iter().cloned());
        self.partitions.extend(mine.iter().cloned());
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
        Ok(())
    }

    /// Reconciles what was read, before anything is committed: a mismatch publishes nothing.
    fn finish(&self, m: &mut Manifest) -> Result<()> {
        m.reconciliation = reconcile(
            &self.measures,
            &self.source_totals,
            &self.written,
            &self.quarantined,
        );
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
        Ok(())
    }
}

/// What goes into every file's ingestion id besides the file and its mapping, read once per
/// run (not once per file, as planning compares thousands): the FOCUS 1.2 projection's SQL when
/// the job writes that table, and every schema file.
struct IdBasis {
    /// The projection's SQL, or empty when the job writes no 1.2 table.
    focus_1_2: String,
    /// Every schema file's path and text, in order, whether or not this run loads it: the id
    /// must not depend on the order files and options make tally load them.
    schemas: Vec<u8>,
}

impl IdBasis {
    fn of(job: &Job) -> IdBasis {
        let focus_1_2 = if job.wants_focus_1_2() {
            resources::load("sql/projections/focus_1_2.sql").unwrap_or_default()
        } else {
            String::new()
        };
        let mut schemas = Vec::new();
        for path in resources::list("schemas/") {
            schemas.extend_from_slice(path.as_bytes());
            schemas.extend_from_slice(resources::load(path).unwrap_or_default().as_bytes());
        }
        IdBasis { focus_1_2, schemas }
    }

    /// The ingestion id written to `x_IngestionRunId`: SHA-256 over the stored object's identity
    /// (URL, size, ETag or last-modified), the format's SQL, what the job says about how the
    /// source's files become rows (the cost identity rule's severity, and whether the FOCUS 1.2
    /// table is written, with its projection's SQL: changing either reads the files again, so a
    /// 1.2 table added later gets every partition), the schema files and tally's version. Known
    /// before the file is read, so rows stream straight to the table; the same object, settings
    /// and code give the same id, so reruns are identical. The file's full SHA-256 is in the
    /// manifest.
    fn id(
        &self,
        job: &Job,
        source: &crate::job::Source,
        file: &storage::DiscoveredFile,
        format: &Format,
    ) -> String {
        let cost_identity = source.cost_identity.unwrap_or(job.checks.cost_identity);
        let settings = format!(
            "cost_identity={cost_identity:?}\0focus_1_2={}",
            self.focus_1_2
        );
        let mut h = Sha256::new();
        for part in [
            env!("CARGO_PKG_VERSION"),
            &file.url,
            &file.size.to_string(),
            file.e_tag.as_deref().unwrap_or(&file.last_modified),
            &format.sql,
            &settings,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(&self.schemas);
        hex::encode(h.finalize())[..32].to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Run ids sort as their runs started, within one second too (the next run takes the
    /// newest manifest by name; the random suffix must not decide).
    #[test]
    fn run_ids_sort_by_start_to_the_microsecond() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-29T18:24:53.999998Z")
            .unwrap()
            .to_utc();
        let ids: Vec<String> = [0, 1, 2, 1_000_000]
            .into_iter()
            .map(|us| new_run_id(t + chrono::Duration::microseconds(us)))
            .collect();
        assert!(ids[0].starts_with("20261129T182453.999998Z-"), "{ids:?}");
        assert!(ids[2].starts_with("20261129T182454.000000Z-"), "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}
