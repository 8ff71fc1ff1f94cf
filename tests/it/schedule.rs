//! `tally schedule <folder>`: due jobs run one at a time in one process, each run logged.

use crate::common::*;

#[test]
fn due_jobs_run_one_at_a_time_and_each_run_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur-athena");
    // Every second (six fields: seconds first), so the test does not wait for a minute.
    std::fs::write(
        jobs.join("nightly.toml"),
        format!(
            "{}[schedule]\ncron = \"* * * * * *\"\n",
            one_source_job(&src, &out, None).replace("name = \"test\"", "name = \"nightly\"")
        ),
    )
    .unwrap();
    // A job without a schedule is not the scheduler's business.
    std::fs::write(
        jobs.join("adhoc.toml"),
        one_source_job(&src, &dir.path().join("adhoc"), None),
    )
    .unwrap();
    let o = tally_cmd()
        .args(["schedule", jobs.to_str().unwrap(), "--max-runs", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("scheduled run finished").count(), 2, "{err}");
    assert!(err.contains("no [schedule]"), "{err}");
    // The first run read the export, the second found nothing new.
    let manifests = std::fs::read_dir(out.join("_tally/manifests"))
        .unwrap()
        .count();
    assert_eq!(manifests, 2);
    assert!(
        err.contains("files_read=1") && err.contains("files_read=0"),
        "{err}"
    );
    assert!(!dir.path().join("adhoc").exists());
}

#[test]
fn a_bad_cron_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("sample-data/aws/cur-athena");
    std::fs::write(
        dir.path().join("bad.toml"),
        format!(
            "{}[schedule]\ncron = \"at dawn\"\n",
            one_source_job(&src, &dir.path().join("o"), None)
        ),
    )
    .unwrap();
    let o = tally_cmd()
        .args(["schedule", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("at dawn"), "{err}");
}

/// A `tally schedule` whose one job (due every second) pauses its first run just before the
/// commit, until `release` is created; its stderr, line by line, and a watchdog that kills it
/// if a test outlives two minutes (a broken stop would otherwise hang the suite).
#[cfg(unix)]
struct PausedScheduler {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    log: String,
    release: std::path::PathBuf,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
    watchdog: Option<std::sync::mpsc::Sender<()>>,
}

#[cfg(unix)]
impl PausedScheduler {
    fn start() -> PausedScheduler {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let (jobs, out) = (dir.path().join("jobs"), dir.path().join("out"));
        std::fs::create_dir_all(&jobs).unwrap();
        let src = root().join("sample-data/aws/cur-athena");
        std::fs::write(
            jobs.join("nightly.toml"),
            format!(
                "{}[schedule]\ncron = \"* * * * * *\"\n",
                one_source_job(&src, &out, None)
            ),
        )
        .unwrap();
        let release = dir.path().join("release");
        let mut child = tally_cmd()
            .args(["schedule", jobs.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env("TALLY_FAULT_PAUSE_AT", "before-commit")
            .env("TALLY_FAULT_PAUSE_UNTIL", &release)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let pid = child.id().to_string();
        std::thread::spawn(move || {
            let waited = rx.recv_timeout(std::time::Duration::from_secs(120));
            if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        });
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut s = PausedScheduler {
            child,
            lines,
            log: String::new(),
            release,
            out,
            _dir: dir,
            watchdog: Some(tx),
        };
        s.read_until("TALLY_FAULT_PAUSE_AT: paused");
        s
    }

    /// Reads stderr until a line holds `text` (panics, showing the log, at its end).
    fn read_until(&mut self, text: &str) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.log.push_str(&line);
            self.log.push('\n');
            if line.contains(text) {
                return;
            }
        }
        panic!("no {text:?} in:\n{}", self.log);
    }

    fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Reads the rest of stderr and waits for the exit code.
    fn finish(&mut self) -> Option<i32> {
        for line in self.lines.by_ref() {
            self.log.push_str(&line.unwrap());
            self.log.push('\n');
        }
        let code = self.child.wait().unwrap().code();
        drop(self.watchdog.take());
        code
    }
}

/// SIGTERM (what `systemctl stop`, `docker stop` and Kubernetes send) during a run lets that run
/// finish and commit, then stops the scheduler (exit 0): the run is not cut off between its
/// commits.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_scheduler_after_the_run_in_progress() {
    let mut s = PausedScheduler::start();
    s.signal("TERM");
    s.read_until("stopping after the run in progress");
    std::fs::write(&s.release, "").unwrap();
    let code = s.finish();
    let (log, out) = (&s.log, &s.out);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"),
        "{log}"
    );
    assert_eq!(log.matches("scheduled run finished").count(), 1, "{log}");
    let manifest = manifests(out).pop().expect("the run's manifest");
    assert!(
        std::fs::read_to_string(manifest)
            .unwrap()
            .contains("\"status\": \"ok\""),
        "the run committed"
    );
}

/// A second signal during the run stops the scheduler at once (exit 128 + the signal): a stuck
/// run can be stopped without SIGKILL. The run, paused before its commit, committed nothing.
#[cfg(unix)]
#[test]
fn a_second_signal_stops_the_scheduler_at_once() {
    let mut s = PausedScheduler::start();
    s.signal("INT");
    s.read_until("stopping after the run in progress");
    s.signal("INT");
    let code = s.finish();
    let (log, out) = (&s.log, &s.out);
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("the run in progress is abandoned"), "{log}");
    assert!(!log.contains("scheduled run finished"), "{log}");
    assert!(
        !out.join("cost_and_usage/_delta_log").exists(),
        "nothing committed"
    );
}
