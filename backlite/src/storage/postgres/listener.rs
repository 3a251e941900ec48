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

/// Runs until `stop` is cancelled, reconnecting after any failure.
pub(super) async fn run(
    config: tokio_postgres::Config,
    channel: String,
    shown_url: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let session = listen(&config, &channel, &wake);
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session => ended,
        };
        match ended {
            Ok(()) => {
                tracing::warn!(database = %shown_url, "backlite listener connection closed; reconnecting")
            }
            Err(error) => {
                tracing::warn!(database = %shown_url, %error, retry_in = ?pause, "backlite listener lost its connection; reconnecting")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One listening session: connects, LISTENs, wakes the dispatcher once, then forwards every
/// notification until the connection ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    wake: &Notify,
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
    let mut listening = false;
    loop {
        tokio::select! {
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            result = &mut listen => result?,
            _ = &mut ready_rx, if !listening => {
                listening = true;
                // Whatever was notified while no one listened is found by one claim now.
                wake.notify_one();
            }
        }
    }
}
