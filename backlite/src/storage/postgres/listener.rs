//! Wake-ups without polling: one connection per client LISTENs on the schema's channel, and
//! every commit that makes work available (an insert, a retry, a release, an unclaim) sends a
//! NOTIFY in its own transaction, so a commit on any host wakes every client and a rollback
//! wakes none.
//!
//! Notifications sent while the listener is disconnected are lost, so after every (re)connect
//! the dispatcher is woken once to claim straight away; a timer still covers the next task due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// The first pause before reconnecting; it doubles while connecting fails.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Runs until `stop` is cancelled, reconnecting after any failure.
pub(super) async fn run(
    config: tokio_postgres::Config,
    channel: String,
    shown_url: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        let mut listened = false;
        let session = listen(&config, &channel, &wake, &mut listened);
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session => ended,
        };
        // A session that listened ended by a fault of its own (a terminated backend, a
        // restart): reconnect at once rather than after the pauses of earlier faults, since
        // notifications are missed until then.
        if listened {
            pause = FIRST_PAUSE;
        }
        match ended {
            Ok(()) => {
                tracing::warn!(database = %shown_url, retry_in = ?pause, "backlite listener connection closed; reconnecting")
            }
            Err(error) => {
                tracing::warn!(database = %shown_url, %error, retry_in = ?pause, "backlite listener lost its connection; reconnecting")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One listening session: connects, LISTENs (then sets `listened`), wakes the dispatcher
/// once, then forwards every notification until the connection ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    wake: &Notify,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (ready_tx, mut ready_rx) = tokio::sync::oneshot::channel::<()>();
    let listen = async {
        let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
        client.batch_execute(&format!("LISTEN {quoted}")).await?;
        let _ = ready_tx.send(());
        // Keep the client (and so the session) alive while messages are read.
        std::future::pending::<()>().await;
        Ok::<(), tokio_postgres::Error>(())
    };
    tokio::pin!(listen);
    loop {
        tokio::select! {
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            result = &mut listen => result?,
            _ = &mut ready_rx, if !*listened => {
                *listened = true;
                // Whatever was notified while no one listened is found by one claim now.
                wake.notify_one();
            }
        }
    }
}
