//! `backlite ui`: the web UI's router served on its own, until Ctrl-C (or SIGTERM).

use std::net::SocketAddr;

use crate::client::Client;

use super::error::{CliError, exit};
use super::output::print;

pub(crate) async fn serve(
    client: &Client,
    listen: SocketAddr,
    actions: bool,
    shown: &str,
) -> Result<u8, CliError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        CliError::usage(format!("cannot listen on {listen}: {e}"))
            .hint("pick another address or port with --listen, e.g. 127.0.0.1:3001")
    })?;
    let local = listener.local_addr().unwrap_or(listen);
    // The first line says where the UI is; with port 0 it is the only way to know.
    print(&format!("serving the UI of `{shown}` on http://{local}/\n"));
    if !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "the UI has no authentication of its own and listens beyond this host"
        );
    }
    // Read-only unless asked: a command that serves pages should not open a way to change
    // tasks that nobody asked for.
    let app: axum::Router = if actions {
        crate::ui::router_with_actions(client)
    } else {
        crate::ui::router_read_only(client)
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| CliError::new(exit::DATABASE, format!("the UI's server stopped: {e}")))?;
    Ok(exit::OK)
}

/// Ctrl-C, or SIGTERM on Unix (a service manager's stop).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
