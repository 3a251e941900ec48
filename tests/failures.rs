//! Failure behaviour on real files: a database locked by another connection, a full disk, a
//! read-only file, rows nobody can run, and a stop under load. Each must give a typed error
//! at the call that hit it, leave what was stored intact, and let the dispatcher go on.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use backlite::{Client, Context, Error, Task, TaskId, processor, processors};
use common::{count, eventually, temp_db};
use serde::{Deserialize, Serialize};

const SHORT: Duration = Duration::from_secs(10);

/// Runs per task id, started and finished, across the tests of this file (ids are unique).
static STARTS: LazyLock<Mutex<HashMap<TaskId, u32>>> = LazyLock::new(Default::default);
static ENDS: LazyLock<Mutex<HashMap<TaskId, u32>>> = LazyLock::new(Default::default);

fn starts(id: &TaskId) -> u32 {
    STARTS.lock().unwrap().get(id).copied().unwrap_or(0)
}

fn ends(id: &TaskId) -> u32 {
    ENDS.lock().unwrap().get(id).copied().unwrap_or(0)
}

fn all_ran_once(ids: &[TaskId]) -> bool {
    ids.iter().all(|id| ends(id) == 1)
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "job", max_attempts = 3, retention(data))]
struct Job {
    millis: u64,
}

#[processor]
async fn run_job(ctx: Context, job: Job) -> anyhow::Result<()> {
    *STARTS.lock().unwrap().entry(ctx.task_id()).or_default() += 1;
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    *ENDS.lock().unwrap().entry(ctx.task_id()).or_default() += 1;
    Ok(())
}

async fn add_jobs(client: &Client, n: usize, millis: u64) -> Vec<TaskId> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.extend(client.add(Job { millis }).save().await.expect("save"));
    }
    ids
}

// ---------------------------------------------------------------- busy database

/// Holds the write lock on `path` from another connection until `release` is set.
fn hold_write_lock(
    path: &std::path::Path,
    release: &'static AtomicBool,
) -> std::thread::JoinHandle<()> {
    let conn = backlite::rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::spawn(move || {
        while !release.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.execute_batch("COMMIT").unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_gives_busy_within_the_timeout_and_the_dispatcher_recovers() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let busy_timeout = Duration::from_millis(200);
    let db = temp_db();
    let client = Client::builder()
        .database(&db.path)
        .workers(4)
        .busy_timeout(busy_timeout)
        .processors(processors![run_job])
        .build()
        .await
        .unwrap();
    client.start();
    let before = add_jobs(&client, 20, 5).await;
    assert!(eventually(SHORT, || all_ran_once(&before)).await);

    // Queued while the dispatcher is busy, so that some are claimed or completing when the
    // lock is taken.
    let mut during = add_jobs(&client, 50, 20).await;
    let holder = hold_write_lock(&db.path, &RELEASE);
    let locked_at = Instant::now();
    for _ in 0..5 {
        let asked = Instant::now();
        let result = client.add(Job { millis: 1 }).save().await;
        let waited = asked.elapsed();
        assert!(
            matches!(result, Err(Error::Busy(t)) if t == busy_timeout),
            "{result:?}"
        );
        assert!(waited >= busy_timeout, "gave up after {waited:?}");
        // Not twice the timeout, as when it queued behind a claim that waited for the lock.
        assert!(
            waited < busy_timeout + Duration::from_millis(150),
            "waited {waited:?} for a {busy_timeout:?} timeout"
        );
    }
    // Longer than the timeout, so that claims and completions fail too.
    tokio::time::sleep(Duration::from_millis(700).saturating_sub(locked_at.elapsed())).await;
    RELEASE.store(true, Ordering::SeqCst);
    holder.join().unwrap();

    during.extend(add_jobs(&client, 20, 1).await);
    assert!(
        eventually(SHORT, || all_ran_once(&during)).await,
        "not recovered: {} of {} ran",
        during.iter().filter(|id| ends(id) > 0).count(),
        during.len()
    );
    assert!(client.stop(SHORT).await);
    let conn = db.conn();
    assert_eq!(count(&conn, "backlite_tasks"), 0);
    assert_eq!(
        count(&conn, "backlite_tasks_completed"),
        90,
        "lost or doubled"
    );
    for id in before.iter().chain(&during) {
        assert_eq!((starts(id), ends(id)), (1, 1), "task {id}");
    }
}

// ---------------------------------------------------------------- full disk

/// A small tmpfs mounted on a temporary directory, unmounted when dropped: a real disk that
/// fills up. Needs the right to mount (root, as in CI); `None` where that is refused.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => Some(SmallDisk { dir }),
            _ => None,
        }
    }

    /// Writes a file until the disk refuses more; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0xa5u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_full_keeps_what_is_stored_and_recovers_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let path = disk.dir.path().join("backlite.db");
    let client = Client::builder()
        .database(&path)
        .workers(4)
        .processors(processors![run_job])
        .build()
        .await
        .unwrap();
    client.start();
    let done_before = add_jobs(&client, 30, 1).await;
    assert!(eventually(SHORT, || all_ran_once(&done_before)).await);
    // Stored before the disk fills, due while it is full.
    let mut stored = client
        .add(Job { millis: 1 })
        .add(Job { millis: 1 })
        .add(Job { millis: 1 })
        .wait(Duration::from_millis(300))
        .save()
        .await
        .unwrap();

    // Running when the disk fills: their outcomes meet the full disk.
    let running = add_jobs(&client, 4, 400).await;
    assert!(eventually(SHORT, || running.iter().all(|id| starts(id) == 1)).await);
    stored.extend(&running);

    let filler = disk.fill();
    let mut full = 0;
    for _ in 0..5_000 {
        match client.add(Job { millis: 1 }).save().await {
            Ok(ids) => stored.extend(ids),
            Err(Error::Full) => {
                full += 1;
                if full == 3 {
                    break;
                }
            }
            Err(e) => panic!("a full disk gave {e:?}, not Error::Full"),
        }
    }
    assert_eq!(full, 3, "the disk never filled");
    // The dispatcher meets the full disk too, claiming the scheduled tasks.
    tokio::time::sleep(Duration::from_millis(600)).await;

    std::fs::remove_file(filler).unwrap();
    stored.extend(add_jobs(&client, 10, 1).await);
    assert!(
        eventually(SHORT, || all_ran_once(&stored)).await,
        "{} of {} ran",
        stored.iter().filter(|id| ends(id) > 0).count(),
        stored.len()
    );
    assert!(client.stop(SHORT).await);
    let conn = backlite::rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&conn, "backlite_tasks"), 0);
    assert_eq!(
        count(&conn, "backlite_tasks_completed") as usize,
        done_before.len() + stored.len(),
        "lost or doubled"
    );
    for id in done_before.iter().chain(&stored) {
        assert_eq!((starts(id), ends(id)), (1, 1), "task {id}");
    }
    drop(conn);
    drop(client);
}

// ---------------------------------------------------------------- read-only file

/// Makes a file read-only for this process until dropped. Root ignores permission bits, so
/// there (as in CI) the file is marked immutable with `chattr +i`, which binds root too.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn set(path: &std::path::Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let writable = std::fs::OpenOptions::new().write(true).open(path).is_ok();
        if writable {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr");
            assert!(status.success(), "chattr +i failed");
        }
        assert!(std::fs::OpenOptions::new().write(true).open(path).is_err());
        ReadOnly(path.to_owned())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o644));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_is_refused_at_build_and_keeps_its_tasks() {
    let db = temp_db();
    let ids = {
        let client = Client::builder().database(&db.path).build().await.unwrap();
        add_jobs(&client, 3, 1).await
    };
    // The last connection folds the WAL into the file and deletes it as the writer ends.
    let wal = db.path.with_extension("db-wal");
    assert!(eventually(SHORT, || !wal.exists()).await, "WAL left behind");
    let bytes = std::fs::read(&db.path).unwrap();

    let read_only = ReadOnly::set(&db.path);
    let result = Client::builder()
        .database(&db.path)
        .processors(processors![run_job])
        .build()
        .await;
    assert!(
        matches!(result, Err(Error::ReadOnly)),
        "{:?}",
        result.map(|_| ())
    );
    assert_eq!(
        std::fs::read(&db.path).unwrap(),
        bytes,
        "the file was changed"
    );
    drop(read_only);

    let client = Client::builder()
        .database(&db.path)
        .processors(processors![run_job])
        .build()
        .await
        .unwrap();
    client.start();
    assert!(
        eventually(SHORT, || all_ran_once(&ids)).await,
        "stored tasks lost"
    );
    assert!(client.stop(SHORT).await);
}
