//! Incremental nightly runs, crash safety and the run lock (issue 4): only new and changed
//! export files are read, a changed period is rebuilt whole, an unchanged one is not touched,
//! a vanished file takes its rows with it, a SIGKILL anywhere leaves the previous tables intact
//! and the next run converges, and two runs of one output cannot both work.

use std::path::{Path, PathBuf};

use crate::common::*;

/// Two monthly CUR exports (November; December = the same rows a month later) in `dir/exports`.
fn two_months(dir: &Path) -> PathBuf {
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    std::fs::write(exports.join("cur-2023-11.csv"), &nov).unwrap();
    std::fs::write(exports.join("cur-2023-12.csv"), december(&nov)).unwrap();
    exports
}

/// A temporary folder with [`two_months`] of exports and the path of an output beside them.
fn two_months_output() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exports = two_months(dir.path());
    let out = dir.path().join("out");
    (dir, out, exports)
}

/// The billing periods in a table.
fn periods_in(table: &str) -> String {
    format!("SELECT DISTINCT x_BillingPeriod FROM {table} ORDER BY 1")
}

fn december(nov: &str) -> String {
    nov.replace("2023-11-", "2023-12-").replace(
        "2023-12-01T00:00:00.000Z,2023-12-01T00:00:00.000Z",
        "2023-12-01T00:00:00.000Z,2024-01-01T00:00:00.000Z",
    )
}

fn delta_versions(out: &Path) -> usize {
    std::fs::read_dir(out.join("cost_and_usage/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

fn files_of(out: &Path, period: &str) -> Vec<String> {
    parquet_files(&out.join("cost_and_usage"))
        .into_iter()
        .filter(|p| p.contains(&format!("x_BillingPeriod={period}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_run_reads_only_what_changed_and_rebuilds_its_period_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exports = two_months(dir.path());
    let job = one_source_job(&exports, &out, Some("aws_cur"));
    let first = run_job(dir.path(), &job).await.unwrap();
    assert_eq!((first.mode.as_str(), first.inputs.len()), ("full", 2));
    let (versions, nov, dec) = (
        delta_versions(&out),
        files_of(&out, "2023-11"),
        files_of(&out, "2023-12"),
    );
    let totals = "SELECT x_BillingPeriod, count(*), sum(BilledCost) FROM cost_and_usage GROUP BY 1 ORDER BY 1";
    let before = lines(&query(&out, totals).await);

    // Nothing new: nothing read, no table version, the state carried over.
    let idle = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(
        (idle.mode.as_str(), idle.inputs.len(), idle.files_unchanged),
        ("incremental", 0, 2)
    );
    assert!(idle.tables.is_empty());
    assert_eq!(idle.state, first.state);
    assert_eq!(delta_versions(&out), versions);

    // AWS re-delivers December, 100 line items fewer: only December is read and replaced;
    // November's data files are the very same files.
    let dec_text = std::fs::read_to_string(exports.join("cur-2023-12.csv")).unwrap();
    let mut l: Vec<&str> = dec_text.lines().collect();
    l.drain(1..101);
    std::fs::write(exports.join("cur-2023-12.csv"), l.join("\n") + "\n").unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(m.inputs.len(), 1, "{:?}", m.inputs);
    assert!(m.inputs[0].url.ends_with("cur-2023-12.csv"));
    // The manifest says what the replacement removed as well as what it wrote: December only.
    let cost = &m.tables["cost_and_usage"].partitions;
    assert_eq!(cost.len(), 1, "{cost:?}");
    let dec_before: u64 = before[1].split(" | ").nth(1).unwrap().parse().unwrap();
    assert_eq!(
        (cost[0].billing_period.as_str(), cost[0].replaced_rows),
        ("2023-12", dec_before)
    );
    assert!(cost[0].rows < dec_before, "{cost:?}");
    assert_eq!(m.files_unchanged, 1);
    assert_eq!(delta_versions(&out), versions + 1);
    assert_eq!(files_of(&out, "2023-11"), nov, "November untouched");
    assert_ne!(files_of(&out, "2023-12"), dec);
    let after = lines(&query(&out, totals).await);
    assert_eq!(after[0], before[0]);
    let dec_rows: u64 = after[1].split(" | ").nth(1).unwrap().parse().unwrap();
    let dec_q = count_q(&out, "2023-12").await;
    assert_eq!(
        dec_rows + dec_q,
        1181,
        "December holds exactly the restated export"
    );

    // A second file for December arrives: the whole period is rebuilt from both files.
    std::fs::write(exports.join("cur-2023-12-part2.csv"), &dec_text).unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    let read: Vec<&str> = m
        .inputs
        .iter()
        .map(|i| i.url.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        read,
        vec!["cur-2023-12-part2.csv", "cur-2023-12.csv"],
        "new file first, then its period's other file"
    );
    assert_eq!(files_of(&out, "2023-11"), nov);

    // The extra file is withdrawn: December is rebuilt without it.
    std::fs::remove_file(exports.join("cur-2023-12-part2.csv")).unwrap();
    run_job(dir.path(), &job).await.unwrap();
    let again = lines(&query(&out, totals).await);
    assert_eq!(again, after, "back to the restated December alone");

    // --full reads everything again and writes the same data.
    let full = run_job_full(dir.path(), &job).await.unwrap();
    assert_eq!((full.mode.as_str(), full.inputs.len()), ("full", 2));
    assert_eq!(lines(&query(&out, totals).await), after);

    // December's export is withdrawn and the next run is a --full one: December goes with it
    // (a full run replaces every partition the last run recorded, not only those it writes),
    // and the state forgets the file, so no later run brings its rows back.
    std::fs::remove_file(exports.join("cur-2023-12.csv")).unwrap();
    let full = run_job_full(dir.path(), &job).await.unwrap();
    assert_eq!(full.inputs.len(), 1);
    assert_eq!(lines(&query(&out, totals).await), after[..1]);
    assert_eq!(count_q(&out, "2023-12").await, 0);
    assert_eq!(full.state.len(), 1);
    assert!(full.state[0].url.ends_with("cur-2023-11.csv"));
}

async fn count_q(out: &Path, period: &str) -> u64 {
    scalar(
        &query(
            out,
            &format!("SELECT count(*) FROM quarantine WHERE x_BillingPeriod = '{period}'"),
        )
        .await,
    )
    .parse()
    .unwrap()
}

#[test]
fn a_changed_mapping_rebuilds_what_it_reads_and_a_no_op_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur-athena");
    assert_eq!(run_one_off(&src, &out).status.code(), Some(0));
    let o = run_one_off(&src, &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("nothing new — 1 files unchanged"),
        "{stdout}"
    );
    // The same export under a changed mapping (a comment is enough): read again.
    let res = dir.path().join("res");
    copy_resources(&res);
    let sql = res.join("sql/normalize/aws_cur.sql");
    let text = std::fs::read_to_string(&sql).unwrap();
    std::fs::write(&sql, text + "\n-- reviewed\n").unwrap();
    let o = one_off_cmd(&src, &out)
        .env("TALLY_RESOURCES", &res)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("1 files, "),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs tally on `job` with a crash point; it must die by SIGKILL.
fn run_killed_at(job: &Path, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let o = tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .env("TALLY_FAULT_KILL_AT", point)
        .env("TALLY_LOCK_STALE_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(
        o.status.signal(),
        Some(9),
        "{point}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn table_state(out: &Path) -> String {
    query_csv(
        out,
        "SELECT x_BillingPeriod, count(*) n, count(DISTINCT x_SourceFile || ':' || x_SourceRow) d, sum(BilledCost) s \
         FROM cost_and_usage GROUP BY 1 ORDER BY 1",
    )
}

#[test]
fn a_run_killed_anywhere_leaves_the_tables_as_they_were_and_the_next_run_converges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exports = two_months(dir.path());
    let job = dir.path().join("job.toml");
    std::fs::write(&job, one_source_job(&exports, &out, Some("aws_cur"))).unwrap();
    let ok = |extra: &[&str]| {
        let o = tally_cmd()
            .args(["run", job.to_str().unwrap()])
            .args(extra)
            // The killed run's lock is left behind; a real deployment waits for it to go stale.
            .env("TALLY_LOCK_STALE_SECS", "0")
            .output()
            .unwrap();
        assert_exit_0(&o);
    };
    ok(&[]);
    let before = table_state(&out);
    // A restated December the killed runs are in the middle of publishing.
    let dec = exports.join("cur-2023-12.csv");
    let text = std::fs::read_to_string(&dec).unwrap();
    let mut l: Vec<&str> = text.lines().collect();
    l.drain(1..201);
    std::fs::write(&dec, l.join("\n") + "\n").unwrap();
    for point in ["after-file", "before-commit", "between-commits"] {
        run_killed_at(&job, point);
        let now = table_state(&out);
        if point == "between-commits" {
            // cost_and_usage committed, the 1.2/quarantine tables not yet: the main table is
            // already the new one, whole (never half), and no row is there twice.
            assert!(
                now.lines().all(|r| {
                    let f: Vec<&str> = r.split(',').collect();
                    f[0] == "x_BillingPeriod" || f[1] == f[2]
                }),
                "{now}"
            );
        } else {
            assert_eq!(
                now, before,
                "killed at {point}: the previous tables are intact"
            );
        }
    }
    // The next run sees that the last *successful* run did not read the restated file, reads
    // it, and ends exactly where a clean full run from scratch ends.
    ok(&[]);
    let converged = table_state(&out);
    let fresh = dir.path().join("fresh");
    let job2 = dir.path().join("job2.toml");
    std::fs::write(&job2, one_source_job(&exports, &fresh, Some("aws_cur"))).unwrap();
    let o = tally_cmd()
        .args(["run", job2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(converged, table_state(&fresh));
    assert_ne!(converged, before);
}

/// A run killed between two tables' commits leaves its intent: the state the tables were about
/// to reflect and the partitions it was replacing. The next run finishes the job from it, even
/// when the file that run read for the first time is gone: its rows, already in
/// `cost_and_usage`, go with it (comparing with the last successful run, the file was never
/// known and its rows stayed for ever, through `--full` too).
#[test]
fn a_run_killed_between_its_commits_is_finished_by_the_next_from_its_intent() {
    let (dir, out, exports) = two_months_output();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, one_source_job(&exports, &out, Some("aws_cur"))).unwrap();
    let run = |job: &Path| {
        let o = tally_cmd()
            .args(["run", job.to_str().unwrap()])
            .env("TALLY_LOCK_STALE_SECS", "0")
            .output()
            .unwrap();
        assert_exit_0(&o);
    };
    run(&job);
    // Every table: the first commits, the others do not before the kill.
    let tables = |out: &Path| {
        let by_period = |table: &str| {
            format!("SELECT x_BillingPeriod, count(*) n FROM {table} GROUP BY 1 ORDER BY 1")
        };
        (
            table_state(out),
            query_csv(out, &by_period("cost_and_usage_1_2")),
            query_csv(out, &by_period("quarantine")),
        )
    };
    let before = tables(&out);
    assert!(
        before.2.contains("2023-12,"),
        "rows quarantined: {}",
        before.2
    );
    // January arrives; the run reading it is killed once cost_and_usage has it.
    let dec = std::fs::read_to_string(exports.join("cur-2023-12.csv")).unwrap();
    let jan = exports.join("cur-2024-01.csv");
    std::fs::write(
        &jan,
        dec.replace("2023-12-", "2024-01-").replace(
            "2024-01-01T00:00:00.000Z,2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:00.000Z,2024-02-01T00:00:00.000Z",
        ),
    )
    .unwrap();
    run_killed_at(&job, "between-commits");
    assert!(
        table_state(&out).contains("2024-01"),
        "cost_and_usage committed"
    );
    let intent = last_manifest(&out);
    assert_eq!(intent["status"], "committing", "{intent:#}");
    assert_eq!(intent["tables_committed"], false);
    let replaces: Vec<&str> = intent["replaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[2].as_str().unwrap())
        .collect();
    assert_eq!(replaces, ["2024-01"], "{intent:#}");
    assert!(
        intent["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["url"].as_str().unwrap().ends_with("cur-2024-01.csv")),
        "{intent:#}"
    );

    // A run that fails before it commits (a file that is not gzip) does not hide the intent.
    let bad = exports.join("cur-2024-01-zz.csv.gz");
    std::fs::write(&bad, "not gzip").unwrap();
    let o = tally_cmd()
        .args(["run", job.to_str().unwrap()])
        .env("TALLY_LOCK_STALE_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let failed = last_manifest(&out);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["replaces"], serde_json::json!([]));
    std::fs::remove_file(&bad).unwrap();

    // January was a mistake and goes before the next run, which removes its rows.
    std::fs::remove_file(&jan).unwrap();
    run(&job);
    assert_eq!(tables(&out), before);
    let last = last_manifest(&out);
    assert_eq!(last["status"], "ok");
    assert_eq!(
        last["tables"]["cost_and_usage"]["partitions"][0]["billing_period"],
        "2024-01"
    );
    assert_eq!(last["tables"]["cost_and_usage"]["partitions"][0]["rows"], 0);

    // A run killed between its commits whose files are all still there is finished the same
    // way: the tables end as a clean run from scratch leaves them.
    std::fs::write(&jan, dec.replace("2023-12-", "2024-01-")).unwrap();
    run_killed_at(&job, "between-commits");
    run(&job);
    let fresh = dir.path().join("fresh");
    let job2 = dir.path().join("job2.toml");
    std::fs::write(&job2, one_source_job(&exports, &fresh, Some("aws_cur"))).unwrap();
    run(&job2);
    assert_eq!(tables(&out), tables(&fresh));
}

/// SHA-256 of the data files the last commit of `table` under `out` added to `period`, sorted.
fn files_added_last(out: &Path, table: &str, period: &str) -> Vec<String> {
    use sha2::Digest;
    let dir = out.join(table);
    let log = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    let mut hashes: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let a: serde_json::Value = serde_json::from_str(l).unwrap();
            let add = a.get("add")?;
            (add["partitionValues"]["x_BillingPeriod"] == period).then(|| {
                let bytes = std::fs::read(dir.join(add["path"].as_str().unwrap())).unwrap();
                hex::encode(sha2::Sha256::digest(bytes))
            })
        })
        .collect();
    hashes.sort();
    hashes
}

/// Every data file any commit of `table` under `out` added (full paths).
fn files_ever_added(out: &Path, table: &str) -> std::collections::BTreeSet<String> {
    let dir = out.join(table);
    std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .flat_map(|log| {
            let text = std::fs::read_to_string(log).unwrap();
            text.lines()
                .filter_map(|l| {
                    let a: serde_json::Value = serde_json::from_str(l).unwrap();
                    let path = a.get("add")?["path"].as_str()?.to_string();
                    Some(dir.join(path).display().to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The content hash the manifest gives `table`'s `period` partition.
fn content_hash(m: &tally::manifest::Manifest, table: &str, period: &str) -> String {
    m.tables[table]
        .partitions
        .iter()
        .find(|p| p.billing_period == period)
        .map(|p| p.content_sha256.clone())
        .unwrap()
}

/// A partition's rows come out in path order, as a full run writes them, whatever history led
/// to the run: a new file that turns out to feed a partition an older file feeds, and a
/// restated file read with the unchanged file before it, give the content hashes and the
/// Parquet bytes of a clean run from scratch. (Reading the new or changed file first, as runs
/// did, put its rows before the others': same rows, another order, another hash.)
#[tokio::test(flavor = "multi_thread")]
async fn a_partitions_rows_come_out_as_a_full_run_writes_them_whatever_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exports = two_months(dir.path());
    // December in two parts: a, and later b beside it.
    let dec = std::fs::read_to_string(exports.join("cur-2023-12.csv")).unwrap();
    std::fs::remove_file(exports.join("cur-2023-12.csv")).unwrap();
    let lines: Vec<&str> = dec.lines().collect();
    let half = lines.len() / 2;
    let part = |rows: &[&str]| format!("{}\n{}\n", lines[0], rows.join("\n"));
    let (a, b) = (
        exports.join("cur-2023-12-a.csv"),
        exports.join("cur-2023-12-b.csv"),
    );
    std::fs::write(&a, part(&lines[1..half])).unwrap();
    let job = one_source_job(&exports, &out, Some("aws_cur"));
    run_job(dir.path(), &job).await.unwrap();

    let compare_with_a_clean_run = |m: tally::manifest::Manifest, step: &'static str| {
        let (dir, out, exports) = (dir.path(), out.clone(), exports.clone());
        async move {
            let fresh_dir = dir.join(format!("fresh-{step}"));
            std::fs::create_dir_all(&fresh_dir).unwrap();
            let fresh_out = fresh_dir.join("out");
            let job = one_source_job(&exports, &fresh_out, Some("aws_cur"));
            let fresh = run_job(&fresh_dir, &job).await.unwrap();
            for table in ["cost_and_usage", "cost_and_usage_1_2", "quarantine"] {
                assert_eq!(
                    content_hash(&m, table, "2023-12"),
                    content_hash(&fresh, table, "2023-12"),
                    "{step}: {table}"
                );
                let files = files_added_last(&out, table, "2023-12");
                assert!(!files.is_empty());
                assert_eq!(
                    files,
                    files_added_last(&fresh_out, table, "2023-12"),
                    "{step}: {table}"
                );
                // What a run staged and then read again is removed, not left beside the table.
                let referenced = files_ever_added(&out, table);
                for f in parquet_files(&out.join(table))
                    .into_iter()
                    .filter(|f| !f.contains("_delta_log"))
                {
                    assert!(referenced.contains(&f), "{step}: {f} is in no commit");
                }
            }
        }
    };

    // b arrives: its partition is a's, which the run learns only once it has read b. It reads
    // again, a then b; the manifest counts each file once.
    std::fs::write(&b, part(&lines[half..])).unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!((m.totals.files, m.inputs.len()), (2, 2), "{:?}", m.inputs);
    assert!(m.inputs[0].url.ends_with("cur-2023-12-a.csv"));
    assert_eq!(m.totals.rows_read, (lines.len() - 1) as u64);
    compare_with_a_clean_run(m, "new").await;

    // b is restated: a is read with it, first.
    std::fs::write(&b, part(&lines[half + 10..])).unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(m.inputs.len(), 2);
    compare_with_a_clean_run(m, "restated").await;
}

#[test]
fn a_second_run_of_an_output_waits_or_exits_6_and_a_dead_runs_lock_goes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur-athena");
    let lock = out.join("_tally/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = |at: chrono::DateTime<chrono::Utc>| {
        serde_json::json!({"run_id": "20261128T000000Z-deadbeef", "job": "nightly", "owner": "host-a:4242", "heartbeat_at": at.to_rfc3339()})
            .to_string()
    };
    std::fs::write(&lock, held(chrono::Utc::now())).unwrap();
    let o = run_one_off(&src, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains("locked by another run") && err.contains("20261128T000000Z-deadbeef"),
        "{err}"
    );
    assert!(!out.join("cost_and_usage").exists(), "nothing was done");
    // --wait-lock: the holder finishes (its lock disappears) while the second run waits.
    let remover = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            std::fs::remove_file(lock).unwrap();
        })
    };
    let o = one_off_cmd(&src, &out)
        .args(["--wait-lock", "30"])
        .output()
        .unwrap();
    remover.join().unwrap();
    assert_exit_0(&o);
    assert!(!lock.exists(), "released");
    // A lock whose holder stopped sending heartbeats long ago is taken over.
    std::fs::write(&lock, held(chrono::Utc::now() - chrono::Duration::hours(3))).unwrap();
    let o = one_off_cmd(&src, &out).arg("--full").output().unwrap();
    assert_exit_0(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("stale lock"));
}

#[test]
fn a_run_that_loses_its_lock_before_committing_exits_6_or_with_wait_lock_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = root().join("sample-data/aws/cur-athena");
    // The lock is rewritten to name another run just before this run's first confirmation,
    // as a racing create or a takeover would leave it.
    let o = one_off_cmd(&src, &out)
        .env("TALLY_FAULT_LOSE_LOCK", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains("lost the output's lock") && err.contains("fault-intruder"),
        "{err}"
    );
    for table in ["cost_and_usage", "quarantine"] {
        assert!(
            !out.join(table).join("_delta_log").exists(),
            "no {table} table"
        );
    }
    assert_eq!(
        parquet_files(&out),
        Vec::<String>::new(),
        "staged files removed"
    );
    assert!(!out.join("_tally/manifests").exists(), "no manifest");
    let lock = std::fs::read_to_string(out.join("_tally/lock")).unwrap();
    assert!(
        lock.contains("fault-intruder"),
        "the other run's lock is left alone: {lock}"
    );

    // With --wait-lock the run waits for that holder (here: until its lock goes stale), takes
    // the lock and runs again from the start: one manifest, every row once.
    std::fs::remove_file(out.join("_tally/lock")).unwrap();
    let o = one_off_cmd(&src, &out)
        .env("TALLY_FAULT_LOSE_LOCK", "1")
        .env("TALLY_LOCK_STALE_SECS", "1")
        .args(["--wait-lock", "60"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("taking over a stale lock"), "{err}");
    let manifests = std::fs::read_dir(out.join("_tally/manifests"))
        .unwrap()
        .count();
    assert_eq!(manifests, 1, "the lost attempt wrote no manifest");
    assert!(!out.join("_tally/lock").exists(), "released");
    let counts = |out: &Path| {
        query_csv(
            out,
            "SELECT count(*) AS n, count(DISTINCT x_SourceRow) AS d FROM cost_and_usage",
        )
    };
    let fresh = dir.path().join("fresh");
    assert!(run_one_off(&src, &fresh).status.success());
    assert_eq!(
        counts(&out),
        counts(&fresh),
        "the same rows as an undisturbed run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_cur_month_in_a_new_assembly_folder_replaces_the_old_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let report = dir.path().join("cur/finops");
    let month = report.join("20231101-20231201");
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    std::fs::create_dir_all(month.join("0a1b-first")).unwrap();
    std::fs::write(month.join("0a1b-first/finops-00001.csv"), &nov).unwrap();
    let job = one_source_job(&report, &out, Some("aws_cur"));
    run_job(dir.path(), &job).await.unwrap();
    let totals = "SELECT count(*), sum(BilledCost) FROM cost_and_usage";
    let first = lines(&query(&out, totals).await);

    // AWS re-delivers the closed month into a new assembly folder and keeps the old one:
    // 50 line items fewer. Only the new delivery counts; the old one is superseded.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::create_dir_all(month.join("9f8e-second")).unwrap();
    let mut l: Vec<&str> = nov.lines().collect();
    l.drain(1..51);
    std::fs::write(
        month.join("9f8e-second/finops-00001.csv"),
        l.join("\n") + "\n",
    )
    .unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(m.inputs.len(), 1);
    assert!(m.inputs[0].url.contains("9f8e-second"));
    let skipped: Vec<(&str, &str)> = m
        .skipped
        .iter()
        .map(|s| (s.url.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].0.ends_with("/20231101-20231201/0a1b-first/"));
    assert_eq!(skipped[0].1, "superseded");
    assert_eq!(m.skipped[0].files, 1);
    let rows = lines(
        &query(
            &out,
            "SELECT count(DISTINCT x_SourceFile) FROM cost_and_usage",
        )
        .await,
    );
    assert_eq!(rows, vec!["1"], "the old delivery's rows are gone");
    let after = lines(&query(&out, totals).await);
    assert_ne!(after, first);
    let n: u64 = after[0].split(" | ").next().unwrap().parse().unwrap();
    let q: u64 = scalar(&query(&out, "SELECT count(*) FROM quarantine").await)
        .parse()
        .unwrap();
    assert_eq!(n + q, 1231, "exactly the re-delivered month");
}

/// With a billing period manifest (`<report>/<period>/<report>-Manifest.json`), the delivery it
/// names is the current one (AWS's guidance): a newer assembly folder is a delivery still being
/// written and is not read; a manifest listing report files that are not there yet stops the
/// run (exit 4) before anything is replaced; once they are, the new delivery replaces the old.
#[test]
fn a_cur_delivery_counts_once_its_billing_period_manifest_names_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let report = dir.path().join("cur/finops");
    let month = report.join("20231101-20231201");
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let key = |assembly: &str, n: u32| {
        format!("cur/finops/20231101-20231201/{assembly}/finops-0000{n}.csv")
    };
    let manifest = |assembly: &str, parts: u32| {
        let keys: Vec<String> = (1..=parts).map(|n| key(assembly, n)).collect();
        std::fs::write(
            month.join("finops-Manifest.json"),
            serde_json::json!({"assemblyId": assembly, "reportKeys": keys, "bucket": "b"})
                .to_string(),
        )
        .unwrap();
    };
    std::fs::create_dir_all(month.join("0a1b-first")).unwrap();
    std::fs::write(dir.path().join(key("0a1b-first", 1)), &nov).unwrap();
    manifest("0a1b-first", 1);
    let job = dir.path().join("job.toml");
    std::fs::write(&job, one_source_job(&report, &out, Some("aws_cur"))).unwrap();
    let run = || {
        tally_cmd()
            .args(["run", job.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert_exit_0(&run());
    let sources = "SELECT DISTINCT x_SourceFile FROM cost_and_usage";
    assert!(query_csv(&out, sources).contains("0a1b-first"));

    // A second delivery is being written: its first part is there, the manifest is not updated.
    let mut fewer: Vec<&str> = nov.lines().collect();
    fewer.drain(1..51);
    let half = fewer.len() / 2;
    let part = |rows: &[&str]| format!("{}\n{}\n", fewer[0], rows.join("\n"));
    std::fs::create_dir_all(month.join("9f8e-second")).unwrap();
    std::fs::write(
        dir.path().join(key("9f8e-second", 1)),
        part(&fewer[1..half]),
    )
    .unwrap();
    let o = run();
    assert_exit_0(&o);
    let m = last_manifest(&out);
    assert_eq!(m["inputs"], serde_json::json!([]), "nothing new is read");
    assert_eq!(m["skipped"][0]["reason"], "in_progress", "{m:#}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("still being written"));

    // The manifest names it, with two parts, before the second is there: exit 4, no change.
    manifest("9f8e-second", 2);
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("finops-Manifest.json lists 1 report file(s) that are not there"),
        "{err}"
    );
    assert!(err.contains("9f8e-second/finops-00002.csv"), "{err}");
    assert!(query_csv(&out, sources).contains("0a1b-first"));

    // The delivery is whole: it replaces the first one.
    std::fs::write(dir.path().join(key("9f8e-second", 2)), part(&fewer[half..])).unwrap();
    let o = run();
    assert_exit_0(&o);
    // The first delivery's file is not "gone": it is in a superseded delivery.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("is gone") && err.contains("not its month's current one"),
        "{err}"
    );
    let m = last_manifest(&out);
    assert_eq!(m["inputs"].as_array().unwrap().len(), 2, "{m:#}");
    assert_eq!(m["skipped"][0]["reason"], "superseded", "{m:#}");
    let files = query_csv(&out, sources);
    assert!(
        !files.contains("0a1b-first") && files.contains("9f8e-second"),
        "{files}"
    );
    let n: u64 = query_csv(
        &out,
        "SELECT (SELECT count(*) FROM cost_and_usage) + (SELECT count(*) FROM quarantine) n",
    )
    .lines()
    .nth(1)
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(n, 1231, "exactly the re-delivered month");
}

/// A `--period` run rebuilds only its periods, and does not forget a file that vanished from
/// another: the next plain run still removes that file's rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_gone_outside_a_period_run_is_still_removed_by_the_next_run() {
    let (dir, out, exports) = two_months_output();
    let job = one_source_job(&exports, &out, Some("aws_cur"));
    run_job(dir.path(), &job).await.unwrap();
    let periods = &periods_in("cost_and_usage");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11", "2023-12"]);

    // November's export is withdrawn and a second December file arrives; the run rebuilds
    // December only.
    std::fs::remove_file(exports.join("cur-2023-11.csv")).unwrap();
    let dec = std::fs::read_to_string(exports.join("cur-2023-12.csv")).unwrap();
    std::fs::write(exports.join("cur-2023-12-part2.csv"), dec).unwrap();
    let options = tally::run::RunOptions {
        periods: vec!["2023-12".into()],
        ..Default::default()
    };
    let m = run_job_with(dir.path(), &job, options).await.unwrap();
    assert_eq!(m.inputs.len(), 2);
    assert_eq!(lines(&query(&out, periods).await), ["2023-11", "2023-12"]);
    assert!(
        m.state.iter().any(|f| f.url.ends_with("cur-2023-11.csv")),
        "the withdrawn file is remembered"
    );

    // The next plain run takes November's rows away with its file.
    run_job(dir.path(), &job).await.unwrap();
    assert_eq!(lines(&query(&out, periods).await), ["2023-12"]);
    assert_eq!(count_q(&out, "2023-11").await, 0);
}

/// A changed file that a run reads only because it shares a rebuilt partition (here one that
/// `--since` leaves out as changed too early) has its old partitions rebuilt as well: rows it no
/// longer has go. (Only the partitions it wrote now were rebuilt, so its old December stayed.)
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_file_read_for_a_shared_partition_takes_its_old_rows_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let nov = std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let dec = december(&nov);
    let both = format!("{nov}{}", dec.split_once('\n').unwrap().1);
    let (f, g) = (exports.join("a-both.csv"), exports.join("b-nov.csv"));
    std::fs::write(&f, &both).unwrap();
    std::fs::write(&g, &nov).unwrap();
    let job = one_source_job(&exports, &out, Some("aws_cur"));
    run_job(dir.path(), &job).await.unwrap();
    let periods = &periods_in("cost_and_usage");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11", "2023-12"]);

    // F is restated to November alone, two hours ago; G changes now.
    std::fs::write(&f, &nov).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let mut g_lines: Vec<&str> = nov.lines().collect();
    g_lines.truncate(g_lines.len() - 5);
    std::fs::write(&g, g_lines.join("\n") + "\n").unwrap();
    let options = tally::run::RunOptions {
        since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        ..Default::default()
    };
    let m = run_job_with(dir.path(), &job, options).await.unwrap();
    assert_eq!(m.inputs.len(), 2, "F is read for November");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11"]);
    assert_eq!(count_q(&out, "2023-12").await, 0);
}

/// A run that commits its tables and then fails (here in a stage, on a bad input file) leaves
/// the tables as it committed them; the next run compares with that run's state, so a file it
/// read that is gone since takes its rows with it.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_run_compares_with_a_run_that_failed_after_its_commits() {
    let (dir, out, exports) = two_months_output();
    let december = exports.join("cur-2023-12.csv");
    let dec_text = std::fs::read_to_string(&december).unwrap();
    std::fs::remove_file(&december).unwrap();
    let invoices = dir.path().join("invoices.csv");
    let good = std::fs::read_to_string(root().join("sample-data/invoices/invoices.csv")).unwrap();
    std::fs::write(&invoices, &good).unwrap();
    let job = format!(
        "{}[inputs]\ninvoices = \"file://{}\"\n",
        one_source_job(&exports, &out, Some("aws_cur")),
        invoices.display()
    );
    run_job(dir.path(), &job).await.unwrap();
    let periods = &periods_in("cost_and_usage");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11"]);

    // December arrives, but the invoice file is broken: the tables commit December, then the
    // invoice stage fails the run.
    std::fs::write(&december, &dec_text).unwrap();
    std::fs::write(&invoices, "InvoiceId\nX\n").unwrap();
    let e = run_job(dir.path(), &job).await.unwrap_err();
    assert_eq!(e.exit_code(), tally::error::exit::BAD_INPUT, "{e}");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11", "2023-12"]);

    // December's file was a mistake and goes; the invoices are fixed. December's rows go with
    // the file: the failed run's state, not the last successful one's, is what this run
    // compares with.
    std::fs::remove_file(&december).unwrap();
    std::fs::write(&invoices, &good).unwrap();
    let m = run_job(dir.path(), &job).await.unwrap();
    assert_eq!(
        lines(&query(&out, periods).await),
        ["2023-11"],
        "{:?}",
        m.state
    );
    assert_eq!(count_q(&out, "2023-12").await, 0);
}

/// Settings that change the rows a file becomes are part of its ingestion id: adding the FOCUS
/// 1.2 table later fills it with every partition, and switching the cost identity rule between
/// quarantine and warn reads the files again.
#[tokio::test(flavor = "multi_thread")]
async fn changing_what_a_job_writes_reads_its_files_again() {
    let (dir, out, exports) = two_months_output();
    let with_1_2 = one_source_job(&exports, &out, Some("aws_cur"));
    let only_1_4 = with_1_2.replace("[\"1.4\", \"1.2\"]", "[\"1.4\"]");
    assert_ne!(only_1_4, with_1_2);
    run_job(dir.path(), &only_1_4).await.unwrap();
    assert!(!out.join("cost_and_usage_1_2").exists());

    let m = run_job(dir.path(), &with_1_2).await.unwrap();
    assert_eq!(m.inputs.len(), 2, "both files read again for the 1.2 table");
    let periods = &periods_in("cost_and_usage_1_2");
    assert_eq!(lines(&query(&out, periods).await), ["2023-11", "2023-12"]);
    assert_eq!(
        run_job(dir.path(), &with_1_2).await.unwrap().inputs.len(),
        0
    );

    let warn = with_1_2.replace(
        "[[source]]",
        "[checks]\ncost_identity = \"warn\"\n[[source]]",
    );
    let m = run_job(dir.path(), &warn).await.unwrap();
    assert_eq!(
        m.inputs.len(),
        2,
        "both files read again under the other rule"
    );
}
