//! The started clients that share a database, as the processes table lists them, and the
//! local side of a cancel.

use crate::client::Client;
use crate::error::Result;
use crate::storage::ProcessInfo;
use crate::task::TaskId;

impl Client {
    /// The started clients on this database (on every host), oldest start first: each
    /// started client registers itself, renews its row every third of `release_after`, and
    /// removes it when it stops. A client that has not renewed within `release_after` (a
    /// process that was killed or froze) is not listed, and its row is deleted by the next
    /// live client's renewal.
    ///
    /// ```no_run
    /// # async fn run(client: backlite::Client) -> backlite::Result<()> {
    /// for process in client.processes().await? {
    ///     println!("{} pid {} on {}: {:?}", process.id, process.pid, process.host, process.queues);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let live_within = self.inner.settings.release_after;
        let records = self
            .driver()
            .process_list(live_within, self.test_now())
            .await?;
        Ok(records.into_iter().map(ProcessInfo::from).collect())
    }

    /// Fires the cancellation of task `id` here, at once, when this client holds it (it
    /// runs, or waits for a worker): its `Context` reports it cancelled, and the task ends
    /// as cancelled once its processor returns (at once, if it had not started). Returns
    /// whether this client holds the task. Elsewhere the request reaches the task's holder
    /// with its next lease renewal, from `cancel_requested_at`.
    pub(crate) fn cancel_running_here(&self, id: TaskId) -> bool {
        let running = self.inner.running.lock();
        running
            .ok()
            .and_then(|running| running.as_ref().map(|r| r.cancel_here(id)))
            .unwrap_or(false)
    }
}
