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

/// SIGTERM (what `systemctl stop`, `docker stop` and Kubernetes send) during a run lets that run
/// finish and commit, then stops the scheduler: the run is not cut off between its commits.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_scheduler_after_the_run_in_progress() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (jobs, src, out) = (
        dir.path().join("jobs"),
        dir.path().join("src"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    // Big enough that the run is still going when the signal comes.
    let o = tally_cmd()
        .current_dir(root())
        .args(["generate", "aws_cur", "--rows", "50000", "--output"])
        .arg(src.join("cur.csv"))
        .output()
        .unwrap();
    assert_exit_0(&o);
    std::fs::write(
        jobs.join("nightly.toml"),
        format!(
            "{}[schedule]\ncron = \"* * * * * *\"\n",
            one_source_job(&src, &out, Some("aws_cur"))
        ),
    )
    .unwrap();
    let mut child = tally_cmd()
        .args(["schedule", jobs.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // The first line logged inside the run's span: the run has started.
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("run{") {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("stopping after the run in progress") && log.contains("SIGTERM"),
        "{log}"
    );
    assert_eq!(log.matches("scheduled run finished").count(), 1, "{log}");
    let manifest = manifests(&out).pop().expect("the run's manifest");
    assert!(
        std::fs::read_to_string(manifest)
            .unwrap()
            .contains("\"status\": \"ok\""),
        "the run committed"
    );
}
