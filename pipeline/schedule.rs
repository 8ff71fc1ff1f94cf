//! `tally schedule <folder>`: one long-lived process that runs the job files of a folder when
//! their `[schedule] cron` falls due (UTC).
//!
//! Jobs run one at a time, so a job never overlaps itself; a run still going when its next time
//! comes is not repeated for the times it missed: the job's next run is its first time after
//! the run ended. Each run is logged with its exit code and the scheduler carries on whatever a
//! run's outcome; the output lock (see [`crate::lock`]) keeps a cron-started run of the same
//! output from overlapping too.
//!
//! Ctrl-C or SIGTERM (what `systemctl stop`, `docker stop` and Kubernetes send) stops the
//! scheduler: at once while it waits, after the run in progress otherwise, so a run is not cut
//! off between its commits.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::error::{Result, TallyError};
use crate::job::Job;
use crate::run::{self, RunOptions, RunRequest};

/// One scheduled job.
struct Entry {
    path: PathBuf,
    cron: croner::Cron,
    next: DateTime<Utc>,
}

fn next_after(cron: &croner::Cron, t: &DateTime<Utc>, path: &Path) -> Result<DateTime<Utc>> {
    cron.find_next_occurrence(t, false)
        .map_err(|e| TallyError::Job {
            path: path.into(),
            message: format!("schedule has no next time: {e}"),
        })
}

/// The job files of a folder that carry a schedule, in name order.
fn load(dir: &Path) -> Result<Vec<Entry>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TallyError::Io {
            path: dir.display().to_string(),
            source: e,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let now = Utc::now();
    let mut out = Vec::new();
    for path in paths {
        let (job, _) = Job::load(&path)?;
        let Some(s) = &job.schedule else {
            info!(job = %path.display(), "no [schedule]: not run by the scheduler");
            continue;
        };
        let cron = s.parsed().map_err(|message| TallyError::Job {
            path: path.clone(),
            message,
        })?;
        let next = next_after(&cron, &now, &path)?;
        info!(job = %path.display(), cron = %s.cron, next = %next.to_rfc3339(), "scheduled");
        out.push(Entry { path, cron, next });
    }
    if out.is_empty() {
        return Err(TallyError::Usage(format!(
            "{}: no job file there has a [schedule] cron",
            dir.display()
        )));
    }
    Ok(out)
}

/// Ctrl-C and, on Unix, SIGTERM: listened for from the start, so one that arrives between two
/// waits is not missed.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

/// A stop signal: its name and the exit code of a process it ends (128 + its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    /// `SIGINT` (Ctrl-C) or `SIGTERM`.
    pub name: &'static str,
    /// 130 or 143, as a shell reports a process the signal killed.
    pub exit_code: i32,
}

const SIGINT: StopSignal = StopSignal {
    name: "SIGINT",
    exit_code: 130,
};
#[cfg(unix)]
const SIGTERM: StopSignal = StopSignal {
    name: "SIGTERM",
    exit_code: 143,
};

impl StopSignals {
    fn listen() -> Result<StopSignals> {
        let failed =
            |e: std::io::Error| TallyError::Internal(format!("cannot listen for signals: {e}"));
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(windows)]
        {
            Ok(StopSignals {
                ctrl_c: tokio::signal::windows::ctrl_c().map_err(failed)?,
            })
        }
    }

    /// Waits for the next stop signal.
    async fn next(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => SIGINT,
                _ = self.terminate.recv() => SIGTERM,
            }
        }
        #[cfg(windows)]
        {
            self.ctrl_c.recv().await;
            SIGINT
        }
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `max_runs` runs were made; this many of them failed.
    MaxRuns {
        /// Runs that failed.
        failed: u64,
    },
    /// A stop signal came while waiting, or during a run, which was let finish.
    Signal(StopSignal),
    /// A second stop signal came during a run: the run was abandoned before its commit (its
    /// staged files stay unreferenced, its lock goes stale and is taken over by the next run).
    Forced(StopSignal),
}

/// Runs the folder's scheduled jobs until stopped (Ctrl-C / SIGTERM), or until `max_runs`
/// runs have been made.
pub async fn serve(dir: &Path, max_runs: Option<u64>) -> Result<Stopped> {
    let mut entries = load(dir)?;
    let mut signals = StopSignals::listen()?;
    let (mut runs, mut failed) = (0u64, 0u64);
    loop {
        if max_runs.is_some_and(|m| runs >= m) {
            return Ok(Stopped::MaxRuns { failed });
        }
        let (i, due) = entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (e.next, e.path.clone()))
            .map(|(i, e)| (i, e.next))
            .expect("at least one entry");
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            signal = signals.next() => {
                info!(signal = signal.name, "stopping: no run was in progress");
                return Ok(Stopped::Signal(signal));
            }
        }
        let path = entries[i].path.clone();
        // Re-read the job file each time: an edit takes effect at the next run.
        let run = async {
            let (job, bytes) = Job::load(&path)?;
            run::run(RunRequest {
                job,
                job_path: path.display().to_string(),
                job_bytes: bytes,
                options: RunOptions::default(),
            })
            .await
        };
        let mut run = std::pin::pin!(run);
        let mut stopping = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                signal = signals.next() => {
                    if stopping.is_some() {
                        error!(signal = signal.name, job = %path.display(), "stopping now: the run in progress is abandoned, nothing of it committed unless it had begun its commits; its lock goes stale");
                        return Ok(Stopped::Forced(signal));
                    }
                    stopping = Some(signal);
                    info!(signal = signal.name, job = %path.display(), "stopping after the run in progress (signal again to stop now)");
                }
            }
        };
        runs += 1;
        match outcome {
            Ok(m) => info!(
                job = %path.display(), run_id = %m.run_id, files_read = m.inputs.len(),
                files_unchanged = m.files_unchanged, exit_code = 0, "scheduled run finished"
            ),
            Err(e) => {
                failed += 1;
                let code = e.exit_code();
                if code == crate::error::exit::BUSY {
                    warn!(job = %path.display(), exit_code = code, error = %e, "scheduled run skipped: the output is busy");
                } else {
                    error!(job = %path.display(), exit_code = code, error = %e, "scheduled run failed");
                }
            }
        }
        if let Some(signal) = stopping {
            info!("stopped");
            return Ok(Stopped::Signal(signal));
        }
        // The next time after the run *ends*: a run longer than its period is not repeated.
        let now = Utc::now();
        entries[i].next = next_after(&entries[i].cron, &now, &path)?;
    }
}
