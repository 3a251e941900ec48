//! Every statement of the SQLite driver, as functions of a connection. The writer thread runs
//! the writes inside its group transactions; readers and `save_in` call the rest directly.

use rusqlite::types::ToSql;
use rusqlite::{CachedStatement, Connection, OptionalExtension, Statement, params};

use crate::storage::{
    ClaimToken, ClaimedTask, Completion, Millis, NewTask, Next, QueueStats, queue_room,
};
use crate::task::{TaskId, TaskStatus};

/// Inserts one waiting task: `?1` id, `?2` queue, `?3` payload, `?4` run_at, `?5` created_at,
/// `?6` priority, `?7` expires_at, `?8` unique_key, `?9` unique_for.
pub(crate) const TASK_INSERT: &str = "INSERT INTO backlite_tasks \
     (id, queue, task, run_at, created_at, priority, expires_at, unique_key, unique_for) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// The file of a connection's main database; empty for a temporary or in-memory one.
#[cfg(feature = "sqlx-sqlite")]
pub(crate) const MAIN_FILE: &str = "SELECT file FROM pragma_database_list WHERE name = 'main'";

/// Inserts a waiting task unless its unique key is held: [`TASK_INSERT`] with the conflict
/// on the unique index (`unique_key` of a waiting, running or succeeded task) doing nothing.
/// The target names the partial index by its predicate, so a conflict on the id still fails.
pub(crate) const TASK_INSERT_UNIQUE: &str = "INSERT INTO backlite_tasks \
     (id, queue, task, run_at, created_at, priority, expires_at, unique_key, unique_for) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state <= 2 DO NOTHING";

/// The task that holds the key `?1`, and whether it lets go of it for a task added at `?2`:
/// it succeeded, and its window (`finished_at + unique_for`) has ended by then. One lookup of
/// the unique index.
pub(crate) const UNIQUE_HOLDER: &str = "SELECT id, \
     state = 2 AND finished_at + COALESCE(unique_for, 0) <= ?2 \
     FROM backlite_tasks WHERE unique_key = ?1 AND unique_key IS NOT NULL AND state <= 2";

/// A succeeded holder past its window lets go of its key, so that an equal task can take it.
/// The row stays (retained, or a tombstone that the retention sweep deletes at its expiry).
pub(crate) const UNIQUE_RELEASE: &str = "UPDATE backlite_tasks SET unique_key = NULL WHERE id = ?1";

/// Inserts the tasks, in order, and returns for each the id stored: its own, or, for a task
/// whose unique key is held (by a task already stored or one earlier in `tasks`), the
/// holder's. A holder that succeeded and whose window ended by the new task's `created_at`
/// lets go of the key, and the task is inserted. Run in one transaction that holds SQLite's
/// write lock (the writer's, or the application's for `save_in`), so nothing changes between
/// a conflict and its lookup. A new key costs the insert alone; only a conflict reads more.
pub(crate) fn task_insert_many(
    conn: &Connection,
    tasks: &[NewTask],
) -> rusqlite::Result<Vec<TaskId>> {
    let mut ids = Vec::with_capacity(tasks.len());
    let (mut insert, mut insert_unique, mut holder, mut release) = (None, None, None, None);
    for task in tasks {
        let row = params![
            &task.id.as_bytes()[..],
            task.queue,
            task.payload,
            task.run_at,
            task.created_at,
            task.priority,
            task.expires_at,
            task.unique_key,
            task.unique_for,
        ];
        let Some(key) = &task.unique_key else {
            cached(conn, &mut insert, TASK_INSERT)?.execute(row)?;
            ids.push(task.id);
            continue;
        };
        if cached(conn, &mut insert_unique, TASK_INSERT_UNIQUE)?.execute(row)? == 1 {
            ids.push(task.id);
            continue;
        }
        let (held, expired): (Vec<u8>, bool) = cached(conn, &mut holder, UNIQUE_HOLDER)?
            .query_row(params![key, task.created_at], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if !expired {
            ids.push(task_id(&held)?);
            continue;
        }
        cached(conn, &mut release, UNIQUE_RELEASE)?.execute([&held])?;
        // The key is free now, and the write lock keeps it so: this insert stores the task
        // (a failure here is a constraint the key does not explain, and is reported).
        cached(conn, &mut insert, TASK_INSERT)?.execute(row)?;
        ids.push(task.id);
    }
    Ok(ids)
}

/// The distinct priorities of the waiting tasks of each queue, highest first: `?1..` are the
/// queue names, and each row is (the queue's position among them, a priority). A paused
/// queue yields none: its test does not depend on the row, so SQLite evaluates it once, by
/// one lookup of the queues table's key. Each step of the walk is one seek in the due index
/// (`MAX` of the priorities below the last), so a queue costs a seek per priority it holds.
pub(crate) fn claim_sql(queue_count: usize) -> String {
    let arms: Vec<String> = (1..=queue_count)
        .map(|n| {
            format!(
                "SELECT {n} AS q, p FROM ({levels}) WHERE {running}",
                levels = priority_levels(&format!("?{n}")),
                running = queue_running(&format!("?{n}")),
            )
        })
        .collect();
    arms.join(" UNION ALL ")
}

/// The distinct priorities of the waiting tasks of the queue named by the SQL expression
/// `queue`, as rows of `p`, highest first.
fn priority_levels(queue: &str) -> String {
    let waiting = format!("FROM backlite_tasks WHERE state = 0 AND queue = {queue}");
    format!(
        "WITH RECURSIVE level(p) AS ( \
             SELECT MAX(priority) {waiting} \
             UNION ALL \
             SELECT (SELECT MAX(priority) {waiting} AND priority < level.p) \
             FROM level WHERE level.p IS NOT NULL) \
         SELECT p FROM level WHERE p IS NOT NULL"
    )
}

/// `queues(name)`, a recursive table of every queue with a row in the index partial on
/// `states` (`state = 0`: the due index; `state >= 2`: the ended index), one seek of that
/// index per queue. Those indexes are keyed by queue first, so a list across queues reads each
/// queue's first page from them and merges those pages only, never sorting the whole state.
pub(crate) fn queues_of(states: &str) -> String {
    format!(
        "WITH RECURSIVE queues(name) AS ( \
             SELECT MIN(queue) FROM backlite_tasks WHERE {states} \
             UNION ALL \
             SELECT (SELECT MIN(queue) FROM backlite_tasks \
                     WHERE {states} AND queue > queues.name) \
             FROM queues WHERE queues.name IS NOT NULL)"
    )
}

/// The due, unexpired tasks of one queue (`?1`) and one priority (`?2`) at `?3`, in claim
/// order, up to `?4`: a range of the due index read in order, which ends at the first task
/// not yet due.
pub(crate) const CLAIM_LEVEL: &str = "SELECT rowid, id, queue, task, attempts, fence, run_at \
     FROM backlite_tasks \
     WHERE state = 0 AND queue = ?1 AND priority = ?2 AND run_at <= ?3 \
       AND (expires_at IS NULL OR expires_at > ?3) \
     ORDER BY run_at, rowid LIMIT ?4";

/// Claims up to `limit` due tasks in claim order (priority descending, due time,
/// insertion), then marks each claimed by its rowid, with its lease's end, its claimer (a
/// process id) and the next fencing number. The writer runs this inside its
/// `BEGIN IMMEDIATE` transaction, which no other connection can write during, so the reads
/// and the marks are one atomic claim; the `state = 0` guard keeps it so on any
/// connection (a claim moves a row from state 0, waiting, to 1, running).
///
/// The due index is ordered by priority first, and one ordered read of it would walk past
/// every task not yet due of a priority before reaching the next priority's due ones (a
/// queue of a million scheduled tasks would be read whole by every claim). So the claim
/// reads, for each queue, its priorities (`levels_sql`, from [`claim_sql`]), then each
/// priority's due range from its start, highest first, until the queue has given `limit`
/// tasks; the candidates of all queues are merged in claim order. A due task of high priority
/// is thus the first one read, however long the backlog of lower ones.
///
/// Plain statements rather than one `UPDATE .. WHERE rowid IN (..) RETURNING`: that one
/// builds two ephemeral tables per call (the IN list and the RETURNING rows), which made a
/// one-task claim cost about 200 us against 70 us this way, and a 1,000-task claim 15% more.
pub(crate) fn task_claim(
    conn: &Connection,
    levels_sql: &str,
    queues: &[&'static str],
    (limit, room, claimer): (usize, &[(&'static str, usize)], Option<&str>),
    lease_until: Millis,
    now: Millis,
) -> rusqlite::Result<Vec<ClaimedTask>> {
    let mut levels: Vec<(usize, i16)> = Vec::new();
    {
        let mut read = conn.prepare_cached(levels_sql)?;
        for (i, queue) in queues.iter().enumerate() {
            read.raw_bind_parameter(i + 1, queue)?;
        }
        let mut rows = read.raw_query();
        while let Some(row) = rows.next()? {
            let position: i64 = row.get(0)?;
            let queue = usize::try_from(position - 1).unwrap_or(usize::MAX);
            levels.push((queue, row.get(1)?));
        }
    }
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    // Each candidate with its place in the claim order: (priority, run_at, rowid).
    let mut picked: Vec<((i16, Millis, i64), ClaimedTask)> = Vec::new();
    {
        let mut read = conn.prepare_cached(CLAIM_LEVEL)?;
        let mut taken = vec![0usize; queues.len()];
        for (queue, priority) in levels {
            let Some(name) = queues.get(queue) else {
                continue;
            };
            // A queue under a concurrency limit gives no more than the room it has left.
            let most = queue_room(room, name, limit);
            if taken[queue] >= most {
                continue;
            }
            let left = i64::try_from(most - taken[queue]).unwrap_or(limit_sql);
            let mut rows = read.query(params![name, priority, now, left])?;
            while let Some(row) = rows.next()? {
                let rowid: i64 = row.get(0)?;
                let fence: i64 = row.get(5)?;
                let run_at: Millis = row.get(6)?;
                taken[queue] += 1;
                picked.push((
                    (priority, run_at, rowid),
                    ClaimedTask {
                        id: task_id(row.get_ref(1)?.as_blob()?)?,
                        queue: row.get(2)?,
                        payload: row.get(3)?,
                        attempts: row.get(4)?,
                        token: ClaimToken {
                            fence: fence.wrapping_add(1),
                            row: Some(rowid),
                        },
                        run_at,
                    },
                ));
            }
        }
    }
    // One queue's candidates are in claim order already, and at most `limit`.
    if queues.len() > 1 {
        picked.sort_by(|(a, _), (b, _)| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        picked.truncate(limit);
    }
    let mut mark = conn.prepare_cached(CLAIM_MARK)?;
    let mut claimed = Vec::with_capacity(picked.len());
    for ((_, _, rowid), task) in picked {
        if mark.execute(params![now, lease_until, task.token.fence, rowid, claimer])? == 1 {
            claimed.push(task);
        }
    }
    Ok(claimed)
}

/// Marks one candidate running under its claim: `?1` now, `?2` lease end, `?3` fencing
/// number, `?4` rowid, `?5` claimer.
pub(crate) const CLAIM_MARK: &str = "UPDATE backlite_tasks SET state = 1, claimed_at = ?1, \
     lease_until = ?2, fence = ?3, claimed_by = ?5, lease_renewed_at = ?1 \
     WHERE rowid = ?4 AND state = 0";

pub(crate) fn task_id(bytes: &[u8]) -> rusqlite::Result<TaskId> {
    <[u8; 16]>::try_from(bytes)
        .map(TaskId::from_bytes)
        .map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob)
        })
}

pub(crate) fn task_complete_many(
    conn: &Connection,
    completions: &[Completion],
) -> rusqlite::Result<()> {
    // Each statement is taken from the cache once per batch, not once per completion: the
    // lookup hashes the whole SQL text.
    let mut retry = ClaimWrite::new(conn, RETRY_BY_ROW, RETRY);
    let mut snooze = ClaimWrite::new(
        conn,
        super::dispatch::SNOOZE_BY_ROW,
        super::dispatch::SNOOZE,
    );
    let mut retain = ClaimWrite::new(conn, RETAIN_BY_ROW, RETAIN);
    let mut tombstone = ClaimWrite::new(conn, TOMBSTONE_BY_ROW, TOMBSTONE);
    let mut delete = None;
    for c in completions {
        let id = &c.id.as_bytes()[..];
        let duration_us = i64::try_from(c.duration.as_micros()).unwrap_or(i64::MAX);
        match c.next {
            Next::Retry { run_at } => {
                retry.execute(
                    c.token,
                    &[
                        &id,
                        &c.token.fence,
                        &run_at,
                        &c.executed_at,
                        &duration_us,
                        &c.error,
                    ],
                )?;
            }
            Next::Snooze { run_at } => {
                snooze.execute(
                    c.token,
                    &[&id, &c.token.fence, &run_at, &c.executed_at, &duration_us],
                )?;
            }
            Next::Done {
                retain: Some(kept),
                cancelled,
            } => {
                retain.execute(
                    c.token,
                    &[
                        &id,
                        &c.token.fence,
                        &kept.payload,
                        &ended_state(c.error.is_none(), cancelled),
                        &duration_us,
                        &c.error,
                        &c.executed_at,
                        &kept.expires_at,
                    ],
                )?;
            }
            Next::Done {
                retain: None,
                cancelled,
            } => {
                // By id, never by row: the delete removes the primary-key entry anyway, so
                // the hint would save nothing (measured).
                let succeeded = c.error.is_none() && !cancelled;
                let deleted = cached(conn, &mut delete, DELETE)?.execute(params![
                    id,
                    c.token.fence,
                    succeeded
                ])?;
                if deleted == 0 && succeeded {
                    tombstone.execute(
                        c.token,
                        &[&id, &c.token.fence, &c.executed_at, &duration_us],
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The task's `errors` with this attempt's error appended when it failed, keeping the last
/// [`ERRORS_KEPT`](crate::storage::inspect::ERRORS_KEPT): `$executed_at`, `$duration_us`
/// and `$error` name the statement's parameters. A success (`$error` NULL) leaves the array
/// as it is, at the cost of one NULL test. Each append keeps at most ten, so dropping the
/// first entry of a full array is enough.
macro_rules! errors_appended {
    ($executed_at:literal, $duration_us:literal, $error:literal) => {
        concat!(
            "CASE WHEN ",
            $error,
            " IS NULL THEN errors ELSE json_insert(",
            "CASE WHEN json_array_length(errors) >= 10 THEN json_remove(errors, '$[0]') ",
            "ELSE COALESCE(errors, '[]') END, '$[#]', json_object('attempt', attempts + 1, ",
            "'at', ",
            $executed_at,
            ", 'duration_us', ",
            $duration_us,
            ", 'error', ",
            $error,
            ")) END"
        )
    };
}

/// The state a task ends in: 2 succeeded, 3 failed, 4 cancelled.
pub(crate) fn ended_state(succeeded: bool, cancelled: bool) -> i64 {
    match (cancelled, succeeded) {
        (true, _) => 4,
        (false, true) => 2,
        (false, false) => 3,
    }
}

/// A write about a claimed task in its two forms, `$by_id` and `$by_row`, from the SQL text
/// before (`[..]`) and after (`[..]`, optional) its guard. Both are guarded by the claim: the
/// task `?1` still running under the fencing number `?2`. The by-row form also names the
/// claimed row's rowid (`$row`, the parameter after the statement's own), so SQLite finds
/// the row in the table's b-tree at once instead of through the primary-key index first;
/// since it guards on the id too, it reaches the claimed task or nothing. Run the pair with
/// [`ClaimWrite`].
macro_rules! claim_guarded {
    (
        $(#[$doc:meta])*
        $by_id:ident, $by_row:ident, row = $row:literal,
        [$($head:tt)*] $([$($tail:tt)*])?
    ) => {
        $(#[$doc])*
        pub(crate) const $by_id: &str =
            concat!($($head)*, " WHERE id = ?1 AND fence = ?2 AND state = 1" $(, $($tail)*)?);
        #[doc = concat!("[`", stringify!($by_id), "`] found by the claimed row's rowid `",
            $row, "`.")]
        pub(crate) const $by_row: &str = concat!(
            $($head)*,
            " WHERE rowid = ",
            $row,
            " AND id = ?1 AND fence = ?2 AND state = 1"
            $(, $($tail)*)?
        );
    };
}
pub(crate) use claim_guarded;

claim_guarded! {
    /// Every write about a claimed task is guarded by its claim: still running, under that
    /// claim.
    RETRY, RETRY_BY_ROW, row = "?7",
    [
        "UPDATE backlite_tasks SET state = 0, claimed_at = NULL, lease_until = NULL, \
         claimed_by = NULL, lease_renewed_at = NULL, attempts = attempts + 1, run_at = ?3, \
         last_executed_at = ?4, last_duration_us = ?5, last_error = ?6, errors = ",
        errors_appended!("?4", "?5", "?6")
    ]
}

claim_guarded! {
    /// A retained task ends in place: its row takes its ended state (`?4`), keeps its payload
    /// only when `?3` says so, and the retention expiry `?8` (a succeeded unique task is kept
    /// at least until its window ends); its claim is cleared. `?7`, the attempt's time, is
    /// when it ended.
    RETAIN, RETAIN_BY_ROW, row = "?9",
    [
        "UPDATE backlite_tasks SET state = ?4, task = CASE WHEN ?3 THEN task END, \
         attempts = attempts + 1, claimed_at = NULL, lease_until = NULL, claimed_by = NULL, \
         lease_renewed_at = NULL, cancel_requested_at = NULL, last_executed_at = ?7, \
         last_duration_us = ?5, last_error = ?6, finished_at = ?7, \
         expires_at = CASE WHEN ?4 = 2 AND ?8 IS NOT NULL AND unique_key IS NOT NULL \
             AND COALESCE(unique_for, 0) > 0 THEN MAX(?8, ?7 + unique_for) ELSE ?8 END, \
         errors = ",
        errors_appended!("?7", "?5", "?6")
    ]
}

/// A task that is not retained leaves the table when it ends, unless it succeeded (`?3`)
/// with a unique key that blocks for a window after: that one becomes a [`TOMBSTONE`].
pub(crate) const DELETE: &str = "DELETE FROM backlite_tasks WHERE id = ?1 AND fence = ?2 AND state = 1 \
     AND NOT (?3 AND unique_key IS NOT NULL AND COALESCE(unique_for, 0) > 0)";

claim_guarded! {
    /// A succeeded task whose queue retains nothing, kept for its unique key's window only:
    /// state succeeded, no payload, deleted by the retention sweep at
    /// `finished_at + unique_for`. So an equal task added within the window finds its key
    /// held, as it would a retained one's. `?3` is when the attempt ended, `?4` its duration.
    TOMBSTONE, TOMBSTONE_BY_ROW, row = "?5",
    [
        "UPDATE backlite_tasks SET state = 2, task = NULL, \
         attempts = attempts + 1, claimed_at = NULL, lease_until = NULL, claimed_by = NULL, \
         lease_renewed_at = NULL, cancel_requested_at = NULL, last_executed_at = ?3, \
         last_duration_us = ?4, last_error = NULL, finished_at = ?3, \
         expires_at = ?3 + unique_for"
    ]
    [" AND unique_key IS NOT NULL AND COALESCE(unique_for, 0) > 0"]
}

/// The statement in `slot`, taken from the connection's cache the first time.
fn cached<'c, 's>(
    conn: &'c Connection,
    slot: &'s mut Option<CachedStatement<'c>>,
    sql: &str,
) -> rusqlite::Result<&'s mut CachedStatement<'c>> {
    if slot.is_none() {
        *slot = Some(conn.prepare_cached(sql)?);
    }
    Ok(slot.as_mut().expect("just filled"))
}

/// A write about one claim, [`claim_guarded`]'s pair of statements, each taken from the
/// connection's cache when first needed.
pub(crate) struct ClaimWrite<'c> {
    conn: &'c Connection,
    by_row: (&'static str, Option<CachedStatement<'c>>),
    by_id: (&'static str, Option<CachedStatement<'c>>),
}

impl<'c> ClaimWrite<'c> {
    pub(crate) fn new(conn: &'c Connection, by_row: &'static str, by_id: &'static str) -> Self {
        ClaimWrite {
            conn,
            by_row: (by_row, None),
            by_id: (by_id, None),
        }
    }

    /// Binds `args` (`?1` id, `?2` fencing number, then the statement's own) and runs the
    /// write with `step`, whose `None` means it reached no row: first by the token's row
    /// hint, then, when there is none or it reached no row, by id. The rowid of a row can
    /// change (a `VACUUM` renumbers those of a table without an `INTEGER PRIMARY KEY`), so a
    /// hint that misses is retried by id, and the outcome is always the by-id form's; a
    /// stale claim costs both lookups, and changes nothing in either.
    pub(crate) fn run<T>(
        &mut self,
        token: ClaimToken,
        args: &[&dyn ToSql],
        step: impl Fn(&mut Statement<'_>) -> rusqlite::Result<Option<T>>,
    ) -> rusqlite::Result<Option<T>> {
        if let Some(rowid) = token.row {
            let (sql, slot) = &mut self.by_row;
            let by_row = cached(self.conn, slot, sql)?;
            bind(by_row, args)?;
            by_row.raw_bind_parameter(args.len() + 1, rowid)?;
            if let Some(done) = step(by_row)? {
                return Ok(Some(done));
            }
        }
        let (sql, slot) = &mut self.by_id;
        let by_id = cached(self.conn, slot, sql)?;
        bind(by_id, args)?;
        step(by_id)
    }

    /// [`run`](Self::run) for a write that returns nothing: the rows it changed.
    pub(crate) fn execute(
        &mut self,
        token: ClaimToken,
        args: &[&dyn ToSql],
    ) -> rusqlite::Result<usize> {
        let changed = self.run(token, args, |write| {
            Ok(Some(write.raw_execute()?).filter(|&changed| changed > 0))
        })?;
        Ok(changed.unwrap_or(0))
    }
}

fn bind(statement: &mut Statement<'_>, args: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for (i, arg) in args.iter().enumerate() {
        statement.raw_bind_parameter(i + 1, arg)?;
    }
    Ok(())
}

/// Hands a claim back: `?1` id, `?2` fencing number.
pub(crate) const UNCLAIM: &str = "UPDATE backlite_tasks SET state = 0, claimed_at = NULL, \
     lease_until = NULL, claimed_by = NULL, lease_renewed_at = NULL \
     WHERE id = ?1 AND fence = ?2 AND state = 1";

pub(crate) fn task_unclaim_many(
    conn: &Connection,
    tasks: &[(TaskId, ClaimToken)],
) -> rusqlite::Result<()> {
    let mut unclaim = conn.prepare_cached(UNCLAIM)?;
    for (id, token) in tasks {
        unclaim.execute(params![&id.as_bytes()[..], token.fence])?;
    }
    Ok(())
}

/// Running rows are few (the workers and prefetch of each live process), and the running
/// index holds only them, so checking each one's lease costs no scan of other tasks.
pub(crate) const RELEASE: &str = "UPDATE backlite_tasks SET state = 0, claimed_at = NULL, \
     lease_until = NULL, claimed_by = NULL, lease_renewed_at = NULL \
     WHERE state = 1 AND lease_until <= ?1";

pub(crate) fn task_release_stuck(conn: &Connection, now: Millis) -> rusqlite::Result<u64> {
    let released = conn.prepare_cached(RELEASE)?.execute([now])?;
    Ok(released as u64)
}

/// Ended tasks whose retention has expired: the expires index, whose range also holds the
/// waiting tasks past their own expiry (the expiry sweep's).
pub(crate) const DELETE_EXPIRED: &str =
    "DELETE FROM backlite_tasks WHERE state >= 2 AND finished_at IS NOT NULL AND expires_at <= ?1";

pub(crate) fn completed_delete_expired(conn: &Connection, now: Millis) -> rusqlite::Result<u64> {
    let deleted = conn.prepare_cached(DELETE_EXPIRED)?.execute([now])?;
    Ok(deleted as u64)
}

/// Whether the queue named by the SQL expression `name` runs: it has no row in the queues
/// table, or one that is not paused.
fn queue_running(name: &str) -> String {
    format!("(SELECT paused_at FROM backlite_queues WHERE name = {name}) IS NULL")
}

/// The earliest due time of the unexpired waiting tasks per queue (`?1` now, `?2..` the
/// queues); none for a paused queue. The due index is ordered by priority first, so each
/// queue's arm walks its distinct priorities (one seek each) and takes the top of each one's
/// run: a queue holds few distinct priorities. Expired tasks waiting for the sweep are
/// skipped, or they would look due forever.
pub(crate) fn next_due_sql(queue_count: usize) -> String {
    let arms: Vec<String> = (2..=queue_count + 1)
        .map(|n| {
            format!(
                "SELECT CASE WHEN {running} THEN (SELECT MIN((SELECT run_at \
                     FROM backlite_tasks WHERE state = 0 AND queue = ?{n} \
                       AND priority = levels.p AND (expires_at IS NULL OR expires_at > ?1) \
                     ORDER BY run_at LIMIT 1)) FROM ({levels}) AS levels) END AS due",
                running = queue_running(&format!("?{n}")),
                levels = priority_levels(&format!("?{n}")),
            )
        })
        .collect();
    format!("SELECT MIN(due) FROM ({})", arms.join(" UNION ALL "))
}

/// The earliest due time over `queues` but those in `full`: a left-out queue's arm is bound
/// to NULL, which matches no row, so one prepared statement serves every set.
pub(crate) fn task_next_due(
    conn: &Connection,
    sql: &str,
    queues: &[&'static str],
    full: &[&'static str],
    now: Millis,
) -> rusqlite::Result<Option<Millis>> {
    let mut next = conn.prepare_cached(sql)?;
    next.raw_bind_parameter(1, now)?;
    // A queue at its concurrency limit is bound as NULL, which no row's queue equals.
    for (i, queue) in queues.iter().enumerate() {
        next.raw_bind_parameter(i + 2, (!full.contains(queue)).then_some(*queue))?;
    }
    let mut rows = next.raw_query();
    match rows.next()? {
        Some(row) => row.get(0),
        None => Ok(None),
    }
}

pub(crate) const STATUS: &str = "SELECT state FROM backlite_tasks WHERE id = ?1";

/// The task's state is its row's: one lookup of the primary key.
pub(crate) fn task_status(conn: &Connection, id: TaskId) -> rusqlite::Result<TaskStatus> {
    let state: Option<i64> = conn
        .prepare_cached(STATUS)?
        .query_row([&id.as_bytes()[..]], |row| row.get(0))
        .optional()?;
    Ok(state.map_or(TaskStatus::NotFound, status_of))
}

/// The status a stored state stands for.
pub(crate) fn status_of(state: i64) -> TaskStatus {
    match state {
        0 => TaskStatus::Pending,
        1 => TaskStatus::Running,
        2 => TaskStatus::Succeeded,
        4 => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    }
}

/// Task counts per queue in one statement, so that they come from one snapshot (a task that
/// completes meanwhile is counted once), and from indexes: waiting tasks from the due index,
/// running ones from the running index, ended ones from the ended index (queue, state,
/// finished_at), read in queue order.
pub(crate) const QUEUE_STATS_SQL: &str = "\
    SELECT queue, 0, COALESCE(SUM(run_at <= ?1), 0), COALESCE(SUM(run_at > ?1), 0), 0 \
        FROM backlite_tasks WHERE state = 0 GROUP BY queue \
    UNION ALL \
    SELECT queue, 1, COUNT(*), 0, 0 \
        FROM backlite_tasks WHERE state = 1 GROUP BY queue \
    UNION ALL \
    SELECT queue, 2, COALESCE(SUM(state = 2), 0), COALESCE(SUM(state = 3), 0), \
        COALESCE(SUM(state = 4), 0) \
        FROM backlite_tasks WHERE state >= 2 GROUP BY queue";

pub(crate) fn queue_stats(conn: &Connection, now: Millis) -> rusqlite::Result<Vec<QueueStats>> {
    let mut stats: std::collections::BTreeMap<String, QueueStats> = Default::default();
    let mut counts = conn.prepare_cached(QUEUE_STATS_SQL)?;
    let mut rows = counts.query([now])?;
    while let Some(row) = rows.next()? {
        let queue: String = row.get(0)?;
        let entry = stats.entry(queue.clone()).or_default();
        entry.queue = queue;
        match row.get::<_, i64>(1)? {
            0 => (entry.pending, entry.scheduled) = (count(row, 2)?, count(row, 3)?),
            1 => entry.running = count(row, 2)?,
            _ => {
                (entry.succeeded, entry.failed, entry.cancelled) =
                    (count(row, 2)?, count(row, 3)?, count(row, 4)?)
            }
        }
    }
    Ok(stats.into_values().collect())
}

fn count(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(column)?).unwrap_or(0))
}

#[cfg(test)]
mod unique_plans {
    use rusqlite::Connection;

    use super::super::plans::plan;

    /// Every statement about unique keys finds its rows through the unique index or the
    /// primary key: a held key costs a lookup, however many tasks are retained.
    #[test]
    fn unique_statements_read_the_unique_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        for sql in [
            super::UNIQUE_HOLDER,
            super::UNIQUE_RELEASE,
            super::TOMBSTONE,
            super::DELETE,
        ] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("backlite_tasks_unique")
                    || plan.contains("sqlite_autoindex_backlite_tasks_1 (id=?)"),
                "{sql}\n{plan}"
            );
            assert!(!plan.contains("SCAN backlite_tasks"), "{sql}\n{plan}");
        }
        let plan = plan(&conn, super::UNIQUE_HOLDER);
        assert!(plan.contains("backlite_tasks_unique"), "{plan}");
    }
}

#[cfg(test)]
mod row_hint {
    use rusqlite::{Connection, params};

    use crate::storage::conformance::{done, new_task};
    use crate::storage::{ClaimToken, Retain};
    use crate::task::TaskId;

    fn state_and_rowid(conn: &Connection, id: TaskId) -> (i64, i64) {
        conn.query_row(
            "SELECT state, rowid FROM backlite_tasks WHERE id = ?1",
            [&id.as_bytes()[..]],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    }

    /// A claimed task whose row moved to another rowid after its claim (as a `VACUUM` may
    /// move it), and whose old rowid another task's row took, still ends by its token: the
    /// hint misses, the write by id reaches it, and the other task is untouched. A stale
    /// token, even one that names the row where it now lies, changes nothing.
    #[test]
    fn a_moved_row_still_ends_by_its_claim_and_a_stale_token_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let (claimed, other) = (new_task("q", 0, "{}"), new_task("q", 10, "{}"));
        super::task_insert_many(&conn, &[claimed.clone(), other.clone()]).unwrap();
        let levels = super::claim_sql(1);
        let tasks = super::task_claim(&conn, &levels, &["q"], (1, &[], None), 60_000, 5).unwrap();
        assert_eq!(tasks.len(), 1);
        let token = tasks[0].token;
        let (_, hinted) = state_and_rowid(&conn, claimed.id);
        assert_eq!(token.row, Some(hinted));

        // The claimed row moves away, and the waiting task's row takes its old rowid.
        let move_to = "UPDATE backlite_tasks SET rowid = ?2 WHERE id = ?1";
        conn.execute(move_to, params![&claimed.id.as_bytes()[..], hinted + 1000])
            .unwrap();
        conn.execute(move_to, params![&other.id.as_bytes()[..], hinted])
            .unwrap();

        let kept = || {
            Some(Retain {
                payload: true,
                expires_at: Some(100_000),
            })
        };
        let stale = ClaimToken {
            fence: token.fence - 1,
            row: Some(hinted + 1000),
        };
        super::task_complete_many(&conn, &[done(claimed.id, stale, None, kept())]).unwrap();
        assert_eq!(state_and_rowid(&conn, claimed.id), (1, hinted + 1000));

        super::task_complete_many(&conn, &[done(claimed.id, token, None, kept())]).unwrap();
        assert_eq!(state_and_rowid(&conn, claimed.id), (2, hinted + 1000));
        assert_eq!(state_and_rowid(&conn, other.id), (0, hinted));
        let (attempts, payload_kept): (i64, bool) = conn
            .query_row(
                "SELECT attempts, task IS NOT NULL FROM backlite_tasks WHERE id = ?1",
                [&claimed.id.as_bytes()[..]],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((attempts, payload_kept), (1, true));

        // Once ended, the token it ended by changes nothing either.
        super::task_complete_many(&conn, &[done(claimed.id, token, Some("late"), kept())]).unwrap();
        assert_eq!(state_and_rowid(&conn, claimed.id), (2, hinted + 1000));
    }
}
