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

/// Whether `TALLY_FAULT_SKIP` names this safeguard (see the module docs).
pub fn skipped(check: &str) -> bool {
    std::env::var("TALLY_FAULT_SKIP").is_ok_and(|p| p == check)
}
