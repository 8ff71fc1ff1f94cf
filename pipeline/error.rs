//! Error types and the exit codes a scheduler can act on.

use std::path::PathBuf;

/// Process exit codes. Stable: schedulers alert on them.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A bug or an unexpected internal failure.
    pub const INTERNAL: i32 = 1;
    /// Bad command line or job file (clap also uses 2 for usage errors).
    pub const USAGE: i32 = 2;
    /// Bad input data: an export that cannot be read, placed or parsed.
    pub const BAD_INPUT: i32 = 3;
    /// Infrastructure: object store, file system or network failure. Retrying may help.
    pub const INFRASTRUCTURE: i32 = 4;
    /// The data failed an integrity check: reconciliation mismatch or dataset-level rule.
    pub const INTEGRITY: i32 = 5;
    /// Another run holds the output's lock: nothing was done. Not an incident; the next
    /// scheduled run (or `--wait-lock`) picks the work up.
    pub const BUSY: i32 = 6;
}

/// Everything that can stop a tally command.
#[derive(Debug, thiserror::Error)]
pub enum TallyError {
    /// The job file is missing, unreadable or invalid.
    #[error("job file {path}: {message}")]
    Job { path: PathBuf, message: String },

    /// A command-line argument or option is wrong.
    #[error("{0}")]
    Usage(String),

    /// A file's content is wrong as a whole (its header, its format).
    #[error("{file}: {message}")]
    BadFile { file: String, message: String },

    /// One value in one row is wrong and the row could not be quarantined.
    #[error("{file}, row {row}, column {column}: {message}")]
    BadValue {
        file: String,
        row: u64,
        column: String,
        message: String,
    },

    /// The object store failed (after retries).
    #[error("object store {store}: {operation} {object}: {source}")]
    Storage {
        store: String,
        operation: &'static str,
        object: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// An export changed while the run read it (restated mid-run): the rows read and the bytes
    /// hashed could differ, so nothing of it is used. The next run reads the new version.
    #[error("{file} changed while the run read it ({what}); run again")]
    Changed { file: String, what: String },

    /// An export's own manifest lists report files that are not there: a delivery still being
    /// written, or parts of it removed. Nothing of it is read; the next run looks again.
    #[error(
        "{manifest} lists {count} report file(s) that are not there ({missing} first): the delivery is still being written (run again later) or some of its files were removed"
    )]
    Incomplete {
        manifest: String,
        missing: String,
        count: usize,
    },

    /// The Delta table could not be read or committed.
    #[error("table {table}: {message}")]
    Table { table: String, message: String },

    /// Reconciliation or a dataset-level rule failed: the run's output would not be trustworthy.
    #[error("{0}")]
    Integrity(String),

    /// A SQL file failed to plan or run (a mapping bug, or a source shape the mapping cannot take).
    #[error("SQL {file}: {message}")]
    Sql { file: String, message: String },

    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Another run holds the lock on the output.
    #[error(
        "{output} is locked by another run ({holder}); nothing was done. Wait for it (--wait-lock SECONDS), or if it died, its lock goes stale {stale_after_secs} s after its last heartbeat"
    )]
    Busy {
        output: String,
        holder: String,
        stale_after_secs: u64,
    },

    /// Another run's lock replaced this run's before it published anything (two runs' creates
    /// or takeovers raced, or this run's heartbeats looked stale).
    #[error(
        "{output}: this run lost the output's lock before publishing anything ({holder}): two runs' lock creates or takeovers raced, or this run's heartbeats looked stale. Nothing was committed; the run that holds the lock does the work. If runs keep losing their lock, raise TALLY_LOCK_STALE_SECS above the longest pause a run can have"
    )]
    LockLost { output: String, holder: String },

    /// Anything else (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TallyError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            TallyError::Job { .. } | TallyError::Usage(_) => exit::USAGE,
            TallyError::BadFile { .. } | TallyError::BadValue { .. } => exit::BAD_INPUT,
            TallyError::Storage { .. }
            | TallyError::Io { .. }
            | TallyError::Table { .. }
            | TallyError::Changed { .. }
            | TallyError::Incomplete { .. } => exit::INFRASTRUCTURE,
            TallyError::Integrity(_) => exit::INTEGRITY,
            TallyError::Busy { .. } | TallyError::LockLost { .. } => exit::BUSY,
            TallyError::Sql { .. } | TallyError::Internal(_) => exit::INTERNAL,
        }
    }
}

impl From<datafusion::error::DataFusionError> for TallyError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        TallyError::Internal(format!("DataFusion: {e}"))
    }
}

impl From<arrow::error::ArrowError> for TallyError {
    fn from(e: arrow::error::ArrowError) -> Self {
        TallyError::Internal(format!("Arrow: {e}"))
    }
}

/// Shorthand result type.
pub type Result<T, E = TallyError> = std::result::Result<T, E>;
