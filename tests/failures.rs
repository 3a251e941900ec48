//! Failure behaviour on real files: a database locked by another connection, a full disk, a
//! read-only file, rows nobody can run, and a stop under load. Each must give a typed error
//! at the call that hit it, leave what was stored intact, and let the dispatcher go on.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use backlite::{Client, Context, Error, Task, TaskId, TaskStatus, processor, processors};
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

/// Waits until every task of `ids` has run exactly once; otherwise fails saying how many ran.
async fn assert_all_run_once(ids: &[TaskId], context: &str) {
    let done = eventually(SHORT, || all_ran_once(ids)).await;
    let ran = ids.iter().filter(|id| ends(id) > 0).count();
    assert!(done, "{context}: {ran} of {} ran", ids.len());
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
    assert_all_run_once(&during, "not recovered after the lock").await;
    assert!(client.stop(SHORT).await);
    let conn = db.conn();
    assert_eq!(count(&conn, "backlite_tasks WHERE state <= 1"), 0);
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state >= 2"),
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
    assert_all_run_once(&stored, "not recovered after space was freed").await;
    assert!(client.stop(SHORT).await);
    let conn = backlite::rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&conn, "backlite_tasks WHERE state <= 1"), 0);
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state >= 2") as usize,
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
    match result {
        Err(Error::ReadOnly { path }) => assert_eq!(path, db.path.to_string_lossy()),
        other => panic!("{:?}", other.map(|_| ())),
    }
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

// ---------------------------------------------------------------- rows nobody can run

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "nobody_serves")]
struct Unserved {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_unserved_rows_among_many_do_not_stop_the_dispatcher() {
    let db = temp_db();
    let client = Client::builder()
        .database(&db.path)
        .workers(4)
        .processors(processors![run_job])
        .build()
        .await
        .unwrap();
    let (mut good, mut corrupt, mut unserved) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..300u64 {
        match n % 10 {
            3 => unserved.extend(client.add(Unserved { n }).save().await.unwrap()),
            7 => corrupt.extend(client.add(Job { millis: 1 }).save().await.unwrap()),
            _ => good.extend(client.add(Job { millis: 1 }).save().await.unwrap()),
        }
    }
    let conn = db.conn();
    for id in &corrupt {
        conn.execute(
            "UPDATE backlite_tasks SET task = X'00ff' WHERE id = ?1",
            [&common::uuid_bytes(id)[..]],
        )
        .unwrap();
    }
    client.start();
    assert!(eventually(SHORT, || all_ran_once(&good)).await);
    assert!(client.stop(SHORT).await);
    for id in &corrupt {
        assert_eq!(starts(id), 0);
        let row = common::completed_row(&conn, id).expect("corrupt row kept");
        assert_eq!(
            (row.succeeded, row.payload.as_deref()),
            (false, Some(&[0, 0xff][..]))
        );
    }
    for id in &unserved {
        assert_eq!(client.status(id).await.unwrap(), TaskStatus::Pending);
    }
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state <= 1") as usize,
        unserved.len()
    );
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state >= 2") as usize,
        good.len() + corrupt.len()
    );
}

// ---------------------------------------------------------------- stop under load

fn claimed(conn: &backlite::rusqlite::Connection) -> i64 {
    conn.query_row(
        "SELECT COUNT(*) FROM backlite_tasks WHERE claimed_at IS NOT NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Sleeps `millis` on its first run only, ignoring cancellation: a stop that times out has to
/// drop it.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "stubborn", retention)]
struct Stubborn {
    millis: u64,
}

#[processor]
async fn run_stubborn(ctx: Context, task: Stubborn) -> anyhow::Result<()> {
    let first = {
        let mut starts = STARTS.lock().unwrap();
        let n = starts.entry(ctx.task_id()).or_default();
        *n += 1;
        *n == 1
    };
    if first {
        tokio::time::sleep(Duration::from_millis(task.millis)).await;
    }
    *ENDS.lock().unwrap().entry(ctx.task_id()).or_default() += 1;
    Ok(())
}

async fn loaded_client(path: &std::path::Path) -> Client {
    let client = Client::builder()
        .database(path)
        .workers(8)
        .processors(processors![run_job, run_stubborn])
        .build()
        .await
        .unwrap();
    client.start();
    client
}

async fn add_many(client: &Client, n: usize, millis: u64) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for _ in 0..n / 100 {
        let mut batch = client.add(Job { millis });
        for _ in 1..100 {
            batch = batch.add(Job { millis });
        }
        ids.extend(batch.save().await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_loses_nothing_and_leaves_nothing_claimed() {
    let db = temp_db();
    let client = loaded_client(&db.path).await;
    let ids = add_many(&client, 3_000, 3).await;
    assert!(
        eventually(SHORT, || ids.iter().filter(|id| ends(id) > 0).count()
            >= 300)
        .await
    );
    // Still adding while it stops.
    let late = add_many(&client, 200, 3).await;
    assert!(client.stop(SHORT).await, "running tasks did not finish");
    let conn = db.conn();
    assert_eq!(claimed(&conn), 0, "tasks left claimed");
    let ran = ids.iter().chain(&late).filter(|id| ends(id) > 0).count();
    assert!(
        ran < ids.len(),
        "everything ran before the stop: no load left to test"
    );
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state <= 1") as usize,
        ids.len() + late.len() - ran
    );
    for id in ids.iter().chain(&late) {
        assert_eq!(starts(id), ends(id), "task {id} was cut by a graceful stop");
    }

    // A client started right after runs what was left, each task once.
    let next = loaded_client(&db.path).await;
    assert!(
        eventually(Duration::from_secs(60), || all_ran_once(&ids)
            && all_ran_once(&late))
        .await
    );
    assert!(next.stop(SHORT).await);
    assert_eq!(count(&conn, "backlite_tasks WHERE state <= 1"), 0);
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state >= 2") as usize,
        ids.len() + late.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_times_out_under_load_hands_everything_back() {
    let db = temp_db();
    let client = loaded_client(&db.path).await;
    let stubborn = client
        .add(Stubborn { millis: 60_000 })
        .add(Stubborn { millis: 60_000 })
        .save()
        .await
        .unwrap();
    let ids = add_many(&client, 3_000, 3).await;
    assert!(
        eventually(SHORT, || ids.iter().filter(|id| ends(id) > 0).count()
            >= 300)
        .await
    );
    let stopping = Instant::now();
    assert!(!client.stop(Duration::from_millis(300)).await);
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    let conn = db.conn();
    assert_eq!(claimed(&conn), 0, "tasks left claimed");
    for id in &stubborn {
        assert_eq!((starts(id), ends(id)), (1, 0));
        assert_eq!(client.status(id).await.unwrap(), TaskStatus::Pending);
    }

    let next = loaded_client(&db.path).await;
    assert!(
        eventually(Duration::from_secs(60), || all_ran_once(&ids)
            && all_ran_once(&stubborn))
        .await
    );
    assert!(next.stop(SHORT).await);
    for id in &ids {
        assert_eq!(starts(id), 1, "task {id}: run twice");
    }
    for id in &stubborn {
        assert_eq!(starts(id), 2, "the dropped run is the only one repeated");
    }
    assert_eq!(count(&conn, "backlite_tasks WHERE state <= 1"), 0);
}

// ---------------------------------------------------------------- files backlite must not open

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_before_anything_runs_and_its_tasks_stay() {
    let db = temp_db();
    let ids = {
        let client = Client::builder().database(&db.path).build().await.unwrap();
        add_jobs(&client, 3, 1).await
    };
    db.conn()
        .execute("INSERT INTO backlite_schema VALUES (99, 0)", [])
        .unwrap();
    let result = Client::builder()
        .database(&db.path)
        .processors(processors![run_job])
        .build()
        .await;
    assert!(
        matches!(result, Err(Error::SchemaTooNew { found: 99, .. })),
        "{:?}",
        result.map(|_| ())
    );
    let conn = db.conn();
    assert_eq!(
        count(&conn, "backlite_tasks WHERE state <= 1"),
        3,
        "stored tasks lost"
    );
    assert!(ids.iter().all(|id| starts(id) == 0), "a task ran");
    let newest: i64 = conn
        .query_row("SELECT MAX(version) FROM backlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(newest, 99, "the schema was touched");
}
