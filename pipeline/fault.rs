//! Named crash points for the crash-safety tests.
//!
//! When `TALLY_FAULT_KILL_AT` names a point, the process sends itself SIGKILL there: no
//! destructor, flush or cleanup runs, exactly like an OOM kill or a lost machine. Points:
//! `after-file` (an input was read and staged), `before-commit` (everything staged, nothing
//! committed), `between-commits` (one table committed, the next not yet). Unset, a point costs
//! one environment lookup.
//!
//! `TALLY_FAULT_SKIP` names a safeguard to leave out, so a test can prove the one behind it:
//! `lock-confirm` (a run does not check that it still holds the output's lock before it
//! commits, so two runs whose lock is defeated both reach Delta's commit check).
//!
//! `TALLY_FAULT_LOSE_LOCK` (any value) makes the process lose its run lock once: just before its
//! first confirmation, the lock is rewritten to name another run, as a racing create or a
//! takeover would leave it, so a test can drive what a run that lost its lock does.

//! `TALLY_FAULT_PAUSE_AT` names a point where the run waits, logging that it paused, until the
//! file `TALLY_FAULT_PAUSE_UNTIL` exists: a test can act (send a signal) at a known place in a
//! run. The wait is asynchronous, so the rest of the process (the scheduler's signal
//! handling) goes on meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};

/// Dies here (SIGKILL) if `TALLY_FAULT_KILL_AT` names this point.
pub fn point(name: &str) {
    if std::env::var("TALLY_FAULT_KILL_AT").is_ok_and(|p| p == name) {
        tracing::warn!(point = name, "TALLY_FAULT_KILL_AT: killing the process");
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // `kill` is gone or failed: abort is the next best thing to a hard crash.
        std::process::abort();
    }
}

/// Waits here until `TALLY_FAULT_PAUSE_UNTIL` exists if `TALLY_FAULT_PAUSE_AT` names this point.
pub async fn pause(name: &str) {
    if !std::env::var("TALLY_FAULT_PAUSE_AT").is_ok_and(|p| p == name) {
        return;
    }
    let until = std::env::var_os("TALLY_FAULT_PAUSE_UNTIL").unwrap_or_default();
    tracing::warn!(point = name, "TALLY_FAULT_PAUSE_AT: paused");
    while !std::path::Path::new(&until).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether `TALLY_FAULT_SKIP` names this safeguard (see the module docs).
pub fn skipped(check: &str) -> bool {
    std::env::var("TALLY_FAULT_SKIP").is_ok_and(|p| p == check)
}

/// Whether the run lock is to be lost now: `TALLY_FAULT_LOSE_LOCK` is set and this is the
/// first time the process asks (see the module docs).
pub fn lose_lock_once() -> bool {
    static FIRED: AtomicBool = AtomicBool::new(false);
    std::env::var_os("TALLY_FAULT_LOSE_LOCK").is_some() && !FIRED.swap(true, Ordering::SeqCst)
}
