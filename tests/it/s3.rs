//! Object storage for real: a job reads exports from, and writes its Delta tables to, an
//! S3-compatible server (s3s-fs, started here on 127.0.0.1) through the same code paths as AWS S3.
//!
//! s3s-fs is installed by `.ci/run` (`cargo install s3s-fs --version 0.14.1 --features binary`);
//! it checks request signatures and enforces `If-None-Match: *`, which Delta commits rely on.
//! Without it these tests fail and say how to install it; `TALLY_SKIP_S3=1` skips them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const KEY: &str = "tally-test-access";
const SECRET: &str = "tally-test-secret-0123456789";

struct Server {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Server {
    /// The folder the server keeps its buckets in.
    fn root(&self) -> &std::path::Path {
        self._root.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    if std::env::var_os("TALLY_SKIP_S3").is_some() {
        eprintln!("TALLY_SKIP_S3 is set: S3 tests skipped");
        return None;
    }
    let bin = std::env::var_os("TALLY_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo/bin/s3s-fs"));
    assert!(
        bin.exists(),
        "{} not found: cargo install s3s-fs --version 0.14.1 --features binary --locked (or set TALLY_SKIP_S3=1)",
        bin.display()
    );
    Some(bin)
}

/// Starts s3s-fs on a free loopback port with the given buckets (folders of its root).
fn start(buckets: &[&str]) -> Option<Server> {
    let bin = s3s_fs()?;
    let root = tempfile::tempdir().unwrap();
    for b in buckets {
        std::fs::create_dir_all(root.path().join(b)).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server {
        child,
        port,
        _root: root,
    })
}

fn env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false")
}

/// A job reading `s3://exports/cur/` (AWS CUR) into `s3://lake/focus`.
fn cur_job(dir: &std::path::Path, name: &str) -> PathBuf {
    let job = dir.join(format!("{name}.toml"));
    std::fs::write(
        &job,
        format!(
            "[job]\nname = \"{name}\"\n[output]\nurl = \"s3://lake/focus\"\n[checks]\ncost_identity = \"warn\"\n\
             [[source]]\nname = \"cur\"\nurl = \"s3://exports/cur/\"\nformat = \"aws_cur\"\n"
        ),
    )
    .unwrap();
    job
}

/// Puts local files into `s3://bucket/prefix/` through the S3 API.
async fn upload(port: u16, bucket: &str, prefix: &str, files: &[PathBuf]) {
    use object_store::ObjectStoreExt;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_access_key_id(KEY)
        .with_secret_access_key(SECRET)
        .with_region("us-east-1")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .build()
        .unwrap();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        let path = object_store::path::Path::from(format!("{prefix}/{name}"));
        store
            .put(&path, std::fs::read(f).unwrap().into())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_reads_and_writes_s3_and_reruns_idempotently() {
    let Some(server) = start(&["exports", "lake"]) else {
        return;
    };
    let port = server.port;
    upload(
        port,
        "exports",
        "cur/2023-12",
        &[root().join("sample-data/aws/cur-athena/cur_athena_2023-12.parquet")],
    )
    .await;
    upload(
        port,
        "exports",
        "cur/2023-11",
        &[root().join("sample-data/aws/cur1/cur1_sample.csv")],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let job = cur_job(dir.path(), "s3");
    // `tally query -t s3://lake/focus <args>`, which must succeed; its standard output.
    let query = |args: &[&str]| {
        let o = env(&mut tally_cmd(), port)
            .args(["query", "-t", "s3://lake/focus"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let count = || {
        query(&[
            "--format",
            "csv",
            "SELECT count(*) AS n, sum(BilledCost) AS billed FROM cost_and_usage",
        ])
    };
    for attempt in 0..3 {
        // The first run, a forced full rerun, then an incremental run with nothing new.
        let mut cmd = tally_cmd();
        env(&mut cmd, port).args(["run", job.to_str().unwrap()]);
        if attempt == 1 {
            cmd.arg("--full");
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "run {attempt}: {err}");
        assert!(!err.contains(SECRET), "no secret in the logs");
        let stdout = String::from_utf8_lossy(&o.stdout);
        if attempt < 2 {
            assert!(stdout.contains("2 files, 1313 rows read"), "{stdout}");
        } else {
            assert!(
                stdout.contains("nothing new — 2 files unchanged"),
                "{stdout}"
            );
        }
        // 1281 + 28 rows (4 SavingsPlanNegation lines folded), the same after the rerun.
        assert_eq!(
            count(),
            "n,billed\n1309,378.102858697400000000\n",
            "after run {attempt}"
        );
    }
    // An analyst's export of the table to the store: uploaded as it is written.
    query(&[
        "--format",
        "parquet",
        "--out",
        "s3://lake/exports/cost_and_usage.parquet",
        "SELECT * FROM cost_and_usage",
    ]);
    let exported = server.root().join("lake/exports/cost_and_usage.parquet");
    let (_, rows) = parquet_columns_and_rows(&exported);
    assert_eq!(rows, 1309);
}

/// A Parquet export in a remote store is fetched into an unnamed spool file in the temp
/// directory: the manifest's SHA-256 is that of the uploaded bytes, and a temp directory tally
/// cannot write to is an infrastructure error (exit 4) that names it. (One GET, and a
/// restatement while reading, are unit-tested in `source::read`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_export_is_spooled_once_and_its_manifest_hash_is_the_uploaded_bytes() {
    let Some(server) = start(&["exports", "lake"]) else {
        return;
    };
    let port = server.port;
    let parquet = root().join("sample-data/aws/cur-athena/cur_athena_2023-12.parquet");
    upload(
        port,
        "exports",
        "cur/2023-12",
        std::slice::from_ref(&parquet),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let job = cur_job(dir.path(), "spool");

    let no_tmp = dir.path().join("no-such-tmp");
    let o = env(&mut tally_cmd(), port)
        .env("TMPDIR", &no_tmp)
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(no_tmp.to_str().unwrap()) && err.contains("spool"),
        "the error names the temp directory: {err}"
    );

    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let o = env(&mut tally_cmd(), port)
        .env("TMPDIR", &tmp)
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit_0(&o);
    // The successful run's manifest (the failed run before it wrote one too).
    let m: serde_json::Value = manifests(&server.root().join("lake/focus"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .find(|m: &serde_json::Value| m["status"] == "ok")
        .expect("the successful run's manifest");
    let input = &m["inputs"][0];
    assert_eq!(
        input["url"], "s3://exports/cur/2023-12/cur_athena_2023-12.parquet",
        "{input}"
    );
    use sha2::Digest;
    let bytes = std::fs::read(&parquet).unwrap();
    assert_eq!(
        input["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(input["size"].as_u64().unwrap(), bytes.len() as u64);
}

#[test]
fn missing_credentials_fail_with_the_store_named_and_exit_4() {
    let Some(server) = start(&["exports"]) else {
        return;
    };
    let o = tally_cmd()
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", server.port))
        .env("AWS_ALLOW_HTTP", "true")
        .args([
            "run",
            "--source",
            "s3://exports/cur/",
            "--output",
            "s3://exports/out",
            "--format",
            "aws_cur",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("s3://exports"), "{err}");
    assert!(
        !err.contains("wrong-secret"),
        "the secret is not echoed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_racing_for_the_same_partition_never_both_commit_it() {
    let Some(server) = start(&["exports", "lake"]) else {
        return;
    };
    let port = server.port;
    upload(
        port,
        "exports",
        "cur",
        &[root().join("sample-data/aws/cur1/cur1_sample.csv")],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let job = cur_job(dir.path(), "race");
    // One run first so the tables exist; then two runs of the same job at once.
    let first = env(&mut tally_cmd(), port)
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit_0(&first);
    let spawn = |stale: &str, skip: &str| {
        let mut cmd = tally_cmd();
        env(&mut cmd, port)
            .env("TALLY_FAULT_SKIP", skip)
            .args(["run", job.to_str().unwrap(), "--full"])
            .env("TALLY_LOCK_STALE_SECS", stale)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First with the run lock: a second run of the job exits 6 and commits nothing (or, if the
    // first already finished, runs after it). It finds the lock taken, or (this server checks
    // `If-None-Match` in two steps, so both creates can succeed) finds another run's id in it
    // when it confirms the lock before committing. Then with every lock counting as stale, so each
    // run takes the other's over: the run whose lock was taken finds it out before committing
    // and exits 6. Then with that confirmation skipped as well, so both reach Delta's commit:
    // its create-only put lets one commit win.
    // What a losing run may exit with, and what its error must say: 6 when the lock stopped
    // it, 4 when Delta's commit check did (with every lock stale, a takeover can land after the
    // first run confirmed its lock: then both reach the commit).
    let lock = (6, &["locked by another run", "lost the output's lock"][..]);
    let delta = (4, &["conflict", "version"][..]);
    for (stale, skip, losers) in [
        ("120", "", vec![lock]),
        ("0", "", vec![lock, delta]),
        ("0", "lock-confirm", vec![delta]),
    ] {
        let (a, b) = (spawn(stale, skip), spawn(stale, skip));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        eprintln!("racing runs (stale after {stale} s, skipping {skip:?}) exited {codes:?}");
        assert!(codes.contains(&Some(0)), "one run commits: {codes:?}");
        for o in [&a, &b] {
            if o.status.code() != Some(0) {
                let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
                assert!(
                    losers
                        .iter()
                        .any(|(code, says)| o.status.code() == Some(*code)
                            && says.iter().any(|s| err.contains(s))),
                    "expected one of {losers:?}: {err}"
                );
            }
        }
    }
    // Whatever the interleaving, the partition holds the export exactly once.
    let o = env(&mut tally_cmd(), port)
        .args([
            "query",
            "-t",
            "s3://lake/focus",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT x_SourceRow) AS d FROM cost_and_usage",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n,d\n1281,1281\n");
}

/// A store that answers every request with 503 SlowDown (S3's throttling), counting requests.
fn throttling_store() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let _ = write!(
                s,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn a_throttling_store_is_retried_with_backoff_then_the_run_exits_4_naming_it() {
    if std::env::var_os("TALLY_SKIP_S3").is_some() {
        return;
    }
    let (port, hits) = throttling_store();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut cmd = tally_cmd();
    env(&mut cmd, port).env("TALLY_STORE_RETRIES", "3").args([
        "run",
        "--source",
        "s3://exports/cur/2024-05/",
        "--output",
        dir.path().join("out").to_str().unwrap(),
        "--format",
        "aws_cur",
    ]);
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("s3://exports") && err.contains("cur/2024-05"),
        "{err}"
    );
    let n = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n >= 4,
        "the first request and 3 retries reached the store: {n}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100 + 200 + 400) / 2,
        "retries back off (jittered): {:?}",
        started.elapsed()
    );
}

/// Every byte a job leaves behind: the S3 server's files (tables, manifests, quarantine), the
/// run's logs at the most verbose level, and a failing run's error.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_manifests_errors_or_tables() {
    // s3s-fs keeps each upload in a temporary file named after the whole key, so keys near 200
    // characters fail there with "File name too long" (real S3 takes 1,024): a short bucket
    // and prefix keep the quarantine's unknown-period partition under that limit.
    let Some(server) = start(&["exports", "lak"]) else {
        return;
    };
    let port = server.port;
    // An export with a bad row, so the quarantine table has content to check too.
    let bad = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("sample-data/aws/cur1/cur1_sample.csv")).unwrap();
    let text = text.replacen(
        ",2023-11-01T00:00:00.000Z,2023-12-01T00:00:00.000Z,",
        ",soon,2023-12-01T00:00:00.000Z,",
        1,
    );
    std::fs::write(bad.path().join("cur.csv"), text).unwrap();
    upload(port, "exports", "cur", &[bad.path().join("cur.csv")]).await;
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("secrets.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"secrets\"\n[output]\nurl = \"s3://lak/f\"\n[[source]]\nname = \"cur\"\nurl = \"s3://exports/cur/\"\nformat = \"aws_cur\"\n",
    )
    .unwrap();
    let mut seen = String::new();
    let mut cmd = tally_cmd();
    env(&mut cmd, port)
        .env(
            "RUST_LOG",
            "trace,datafusion=info,sqlparser=info,datafusion_sql=info,datafusion_optimizer=info",
        )
        .args(["run", job.to_str().unwrap()]);
    let o = cmd.output().unwrap();
    let tail: String = String::from_utf8_lossy(&o.stderr)
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(o.status.code(), Some(0), "{tail}");
    seen.push_str(&String::from_utf8_lossy(&o.stdout));
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    // A failing run: a bucket that does not exist.
    let mut cmd = tally_cmd();
    env(&mut cmd, port)
        .env(
            "RUST_LOG",
            "trace,datafusion=info,sqlparser=info,datafusion_sql=info,datafusion_optimizer=info",
        )
        .args([
            "run",
            "--source",
            "s3://nope/x/",
            "--output",
            "s3://lak/o",
            "--format",
            "aws_cur",
        ]);
    let o = cmd.output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    assert!(
        seen.len() > 10_000,
        "trace logging really ran: {} bytes",
        seen.len()
    );
    assert!(!seen.contains(SECRET), "a secret in the logs or errors");
    fn walk(p: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(server._root.path(), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("manifests"))
    );
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("quarantine"))
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
}
