//! The run manifest: what an auditor reproduces a run from.
//!
//! One JSON document per run, written after the tables are committed (a failed run writes one
//! too, with `status: "failed"` and the versions of the tables it committed, if any). Amounts
//! are decimal strings, exact.
//!
//! A run that commits writes its manifest twice: first as an intent (`status: "committing"`,
//! with the state the tables are about to reflect and the partitions about to be replaced),
//! just before its first commit, then whole at the end, over the intent. A run that stops in
//! between (killed between two tables' commits, or unable to write its manifest) leaves the
//! intent, and the next run rebuilds those partitions in every table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Format version of this document.
    pub manifest_version: u32,
    /// Unique id of the run (UTC start time + random suffix).
    pub run_id: String,
    /// `ok` or `failed`; `committing` in the intent written before the first commit (a run
    /// that stopped before it finished committing leaves it).
    pub status: String,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// tally's version and the git revision it was built from.
    pub tally: ToolInfo,
    /// The job.
    pub job: JobInfo,
    /// SHA-256 of every SQL and schema file used, by path.
    pub resources: BTreeMap<String, String>,
    /// Every input file.
    pub inputs: Vec<Input>,
    /// What the run passed over under its sources, and why: objects that are not exports tally
    /// reads, and CUR deliveries that are not their month's current one (sorted by URL).
    pub skipped: Vec<Skipped>,
    /// Every table written.
    pub tables: BTreeMap<String, TableInfo>,
    /// Quarantined rows by rule id.
    pub quarantined_by_rule: BTreeMap<String, u64>,
    /// Rule violations kept as warnings (rows written), by rule id.
    pub warnings_by_rule: BTreeMap<String, u64>,
    /// Per billing period and currency: source total vs written + quarantined.
    pub reconciliation: Vec<Reconciliation>,
    /// Totals over all inputs.
    pub totals: Totals,
    /// `full` (every file read) or `incremental` (only new and changed files, and the files that
    /// share a billing period with them).
    pub mode: String,
    /// Files left alone because they had not changed since the run that last read them.
    pub files_unchanged: u64,
    /// Every export file the output now reflects, with the identity it had when read and the
    /// partitions its rows went to: the state the next incremental run compares against.
    pub state: Vec<FileState>,
    /// The partitions this run replaces in every table, recorded before its first commit. If
    /// the run stops before every table is committed, the next run rebuilds all of them, so no
    /// table is left with another's version of a partition.
    pub replaces: Vec<(String, String, String)>,
    /// Whether every table this run staged was committed: then `state` is what the tables
    /// reflect even if the run failed afterwards (in a stage), and the next run compares with it.
    pub tables_committed: bool,
    /// The SQL stages (curated tables) this run ran or found unchanged.
    pub stages: Vec<crate::stages::StageRecord>,
}

/// One export file as the tables reflect it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileState {
    /// Source name from the job.
    pub source: String,
    /// URL.
    pub url: String,
    /// Size in bytes when read.
    pub size: u64,
    /// ETag when read.
    pub e_tag: Option<String>,
    /// Last modified when read.
    pub last_modified: String,
    /// Format it was read as.
    pub format: String,
    /// Its ingestion id: changes with the file and with the code (SQL, schemas, tally version)
    /// that read it, so a new mapping rebuilds what it would write differently.
    pub ingestion_id: String,
    /// Partitions (provider, billing account, billing period) its rows were written to,
    /// quarantined rows included.
    pub partitions: Vec<(String, String, String)>,
}

/// What a later run needs from an earlier run's manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct PriorRun {
    /// Run id.
    pub run_id: String,
    /// `ok`, `failed` or `committing`.
    pub status: String,
    /// The job.
    pub job: PriorJob,
    /// The state after the run (absent in manifests written before incremental runs).
    #[serde(default)]
    pub state: Option<Vec<FileState>>,
    /// Whether the run committed every table it staged (absent before tally recorded it).
    #[serde(default)]
    pub tables_committed: bool,
    /// The partitions it set out to replace (absent before tally recorded them).
    #[serde(default)]
    pub replaces: Vec<(String, String, String)>,
    /// Its stage records.
    #[serde(default)]
    pub stages: Vec<crate::stages::StageRecord>,
}

/// The job part of [`PriorRun`].
#[derive(Debug, Clone, Deserialize)]
pub struct PriorJob {
    /// Job name.
    pub name: String,
}

/// Build information.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// Cargo package version.
    pub version: String,
    /// `git rev-parse HEAD` at build time (`unknown` outside a checkout).
    pub git_revision: String,
    /// FOCUS version of the main table.
    pub focus_version: String,
}

/// The job that ran.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// Name from the job file.
    pub name: String,
    /// Path of the job file (or `<command line>`).
    pub path: String,
    /// SHA-256 of the job file's bytes.
    pub sha256: String,
}

/// One input file.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// Source name from the job.
    pub source: String,
    /// URL.
    pub url: String,
    /// Format used.
    pub format: String,
    /// Whether the format was detected from the header.
    pub format_detected: bool,
    /// Size in bytes.
    pub size: u64,
    /// ETag, when the store gives one.
    pub e_tag: Option<String>,
    /// Last modified.
    pub last_modified: String,
    /// SHA-256 of the bytes read.
    pub sha256: String,
    /// The `x_IngestionRunId` its rows carry.
    pub ingestion_id: String,
    /// Rows read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows quarantined.
    pub rows_quarantined: u64,
    /// Rows folded by the mapping into other rows, by reason.
    pub rows_folded: BTreeMap<String, u64>,
    /// Extra rows the mapping derived from source rows, by reason (e.g. explicit Unused
    /// commitment rows); rows_read + rows_derived = rows_written + rows_quarantined + rows_folded.
    pub rows_derived: BTreeMap<String, u64>,
    /// Columns of the file that the mapping does not read.
    pub ignored_columns: Vec<String>,
    /// Generative AI usage rows whose meter string no rule parsed (written with null x_Ai* columns).
    pub ai_meters_unparsed: u64,
}

/// An object under a source that a run did not read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// Source name from the job.
    pub source: String,
    /// URL.
    pub url: String,
    /// `not_an_export` (an object that is not a format tally reads: `.zip`, `.txt`, ...),
    /// `superseded` (the folder of an older CUR delivery of a billing period whose current
    /// delivery is read) or `in_progress` (the folder of a delivery newer than the one the
    /// period's manifest names).
    pub reason: String,
    /// Files it holds (1 for an object).
    pub files: u64,
}

/// One table written by the run.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// Table URL.
    pub url: String,
    /// Delta version after this run's commit (read it back "as of" this version).
    pub version: Option<u64>,
    /// Partitions this run replaced.
    pub partitions: Vec<PartitionInfo>,
}

/// One replaced partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// Provider slug.
    pub provider: String,
    /// Billing account.
    pub billing_account: String,
    /// Billing period `YYYY-MM`.
    pub billing_period: String,
    /// Rows now in the partition.
    pub rows: u64,
    /// Data files now in the partition.
    pub files: u64,
    /// Rows the partition held before this run replaced it (all of them were removed: a
    /// partition is replaced whole).
    pub replaced_rows: u64,
    /// SHA-256 over the partition's rows in order (Arrow row format): equal across reruns of
    /// the same inputs.
    pub content_sha256: String,
}

/// One reconciliation line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reconciliation {
    /// Provider slug (`x_SourceProvider`).
    pub provider: String,
    /// BillingPeriodStart, RFC 3339.
    pub billing_period_start: String,
    /// Currency.
    pub currency: String,
    /// The FOCUS cost compared: `BilledCost`, or `EffectiveCost` for sources whose own total is
    /// amortized (Azure's amortized cost file).
    pub measure: crate::formats::Measure,
    /// Σ of the source's own cost column (e.g. `lineItem/UnblendedCost`).
    pub source_total: String,
    /// Σ of the measure over the rows written.
    pub written: String,
    /// Σ of the measure over the quarantined rows.
    pub quarantined: String,
    /// source_total − written − quarantined.
    pub difference: String,
    /// `match` or `mismatch`.
    pub status: String,
}

/// Totals over the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    /// Files read.
    pub files: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows quarantined.
    pub rows_quarantined: u64,
    /// Rows folded.
    pub rows_folded: u64,
    /// Rows derived.
    pub rows_derived: u64,
    /// Generative AI usage rows whose meter string no rule parsed.
    pub ai_meters_unparsed: u64,
    /// Rows whose source amount could not be parsed (quarantined; not in the source total).
    pub unparseable_source_amounts: u64,
}

impl PriorRun {
    /// Whether this run's tables are as it left them: it succeeded, or committed every table.
    pub fn complete(&self) -> bool {
        self.status == "ok" || self.tables_committed
    }

    /// The partitions a run that stopped while committing may have left replaced in some tables
    /// and not in others (none for a complete run). Its `state` is what the tables reflect
    /// once these partitions are rebuilt.
    pub fn unfinished(&self) -> &[(String, String, String)] {
        if self.complete() { &[] } else { &self.replaces }
    }
}

impl Manifest {
    /// Pretty JSON, keys in a stable order.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }
}
