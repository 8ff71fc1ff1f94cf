//! One run at a time per output: a lock object at `<output>/_tally/lock`.
//!
//! Taken with a conditional create (`If-None-Match: *` on S3, an exclusive create on a file
//! system) and read back after 200 ms (for servers whose conditional create is not atomic), so of
//! two runs starting together exactly one gets it. The holder rewrites it every
//! [`HEARTBEAT`] with the time; a lock whose last heartbeat is older than the stale limit
//! (`TALLY_LOCK_STALE_SECS`, default 120) belonged to a run that died (SIGKILL, lost machine) and
//! is taken over. Delta's own optimistic commit check still guards the tables underneath; the
//! lock makes the second run wait or stop with exit code 6 instead of doing the work twice.

use std::time::Duration;

use object_store::{ObjectStoreExt as _, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{Result, TallyError};
use crate::storage::Location;

/// How often the holder refreshes the lock.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// What the lock object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Run holding it.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// Host name and process id.
    pub owner: String,
    /// Last heartbeat, RFC 3339.
    pub heartbeat_at: String,
}

fn stale_after() -> Duration {
    Duration::from_secs(
        std::env::var("TALLY_LOCK_STALE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    )
}

/// A held lock; [`RunLock::release`] removes it (a crash leaves it to go stale).
pub struct RunLock {
    loc: Location,
    path: object_store::path::Path,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Whether the lock still names `run_id` a moment after it was written.
async fn still_ours(out: &Location, path: &object_store::path::Path, run_id: &str) -> Result<bool> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(read(out, path)
        .await?
        .and_then(|(holder, _)| holder)
        .is_some_and(|h| h.run_id == run_id))
}

/// The lock as it is now: its content (`None` while unreadable, e.g. mid-write) and when the
/// store last wrote it; `None` when there is no lock.
async fn read(
    out: &Location,
    path: &object_store::path::Path,
) -> Result<Option<(Option<LockInfo>, chrono::DateTime<chrono::Utc>)>> {
    match out.store.get(path).await {
        Ok(g) => {
            let written = g.meta.last_modified;
            let holder = g
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
            Ok(Some((holder, written)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(out.err("read lock", path, e)),
    }
}

fn body(run_id: &str, job: &str) -> Vec<u8> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    serde_json::to_vec(&LockInfo {
        run_id: run_id.into(),
        job: job.into(),
        owner: format!("{host}:{}", std::process::id()),
        heartbeat_at: chrono::Utc::now().to_rfc3339(),
    })
    .expect("lock serializes")
}

/// Takes the output's lock, waiting up to `wait` for a live holder to finish.
pub async fn acquire(out: &Location, run_id: &str, job: &str, wait: Duration) -> Result<RunLock> {
    let path = out.path.clone().join("_tally").join("lock");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let put = out
            .store
            .put_opts(
                &path,
                body(run_id, job).into(),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            // Some S3-compatible servers check `If-None-Match` and write in two steps, so two
            // simultaneous creates can both succeed. The last write is what stays: read it back
            // after a moment, and only the run that finds its own id goes on.
            Ok(_) if still_ours(out, &path, run_id).await? => break,
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(out.err("lock", &path, e)),
        }
        let Some((holder, written)) = read(out, &path).await? else {
            continue; // released meanwhile
        };
        // The holder's own heartbeat time; while its first write is still in flight (content
        // not readable yet), the time the store gives the object. Never "no time, so stale".
        let beat = holder
            .as_ref()
            .and_then(|h| chrono::DateTime::parse_from_rfc3339(&h.heartbeat_at).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(written);
        let age = (chrono::Utc::now() - beat).to_std().unwrap_or_default();
        if age > stale_after() {
            warn!(holder = ?holder, "taking over a stale lock (its run stopped sending heartbeats)");
            match out.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(out.err("remove stale lock", &path, e)),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TallyError::Busy {
                output: out.url_of(&out.path),
                holder: match holder {
                    Some(h) => format!(
                        "run {} of job {:?} on {}, last heartbeat {}",
                        h.run_id, h.job, h.owner, h.heartbeat_at
                    ),
                    None => format!("a run whose lock was written at {}", written.to_rfc3339()),
                },
                stale_after_secs: stale_after().as_secs(),
            });
        }
        info!("waiting for the run that holds the output's lock");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (store, hb_path, run, jobname) = (
        out.store.clone(),
        path.clone(),
        run_id.to_string(),
        job.to_string(),
    );
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = store.put(&hb_path, body(&run, &jobname).into()).await {
                warn!(error = %e, "could not refresh the run lock");
            }
        }
    });
    Ok(RunLock {
        loc: out.clone(),
        path,
        heartbeat,
    })
}

impl RunLock {
    /// Stops the heartbeat and removes the lock.
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.loc.store.delete(&self.path).await {
            warn!(error = %e, "could not remove the run lock; it goes stale on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_output() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::storage::open(&format!("file://{}", dir.path().display())).unwrap();
        (dir, out)
    }

    /// Eight runs that start at once, all with `--wait-lock 0`: exactly one takes the lock.
    async fn race(out: &Location) -> Vec<RunLock> {
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let out = out.clone();
                tokio::spawn(async move {
                    acquire(&out, &format!("run-{i}"), "job", Duration::ZERO).await
                })
            })
            .collect();
        let mut held = Vec::new();
        for t in tries {
            match t.await.unwrap() {
                Ok(lock) => held.push(lock),
                Err(TallyError::Busy { holder, .. }) => {
                    assert!(holder.contains("run-"), "{holder}")
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        held
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_simultaneous_runs_exactly_one_takes_the_lock() {
        let (_dir, out) = local_output();
        let mut held = race(&out).await;
        assert_eq!(held.len(), 1);
        let holder = read(&out, &held[0].path).await.unwrap().unwrap().0.unwrap();
        assert!(holder.run_id.starts_with("run-"));
        held.pop().unwrap().release().await;
        // Released: the next run takes it at once.
        acquire(&out, "run-next", "job", Duration::ZERO)
            .await
            .unwrap()
            .release()
            .await;
    }

    /// Runs that all find a dead run's lock each remove it and create their own, so one may
    /// remove the lock another has just created; the read-back still lets exactly one go on.
    /// (Skipping the read-back on local outputs, as a49ff10 did, let two to five runs go on in
    /// each of six trials.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_simultaneous_takeovers_of_a_stale_lock_exactly_one_holds_it() {
        let (_dir, out) = local_output();
        let path = out.path.clone().join("_tally").join("lock");
        let dead = LockInfo {
            run_id: "dead".into(),
            job: "job".into(),
            owner: "elsewhere:1".into(),
            heartbeat_at: (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339(),
        };
        out.store
            .put(&path, serde_json::to_vec(&dead).unwrap().into())
            .await
            .unwrap();
        let mut held = race(&out).await;
        assert_eq!(held.len(), 1, "exactly one run holds the lock");
        let holder = read(&out, &path).await.unwrap().unwrap().0.unwrap();
        assert_ne!(holder.run_id, "dead");
        held.pop().unwrap().release().await;
        assert!(read(&out, &path).await.unwrap().is_none(), "released");
    }
}
