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
