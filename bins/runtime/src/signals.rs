//! Shutdown signals: one token every part of a program watches.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal sent as soon as a program says it is ready is never lost to the
/// default action (exit without cleanup). Must be called inside a tokio runtime.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let signal = first_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown signal received; finishing work in hand");
        trigger.cancel();
    });
    token
}

/// Installs the handlers now; the future completes on the first signal.
fn first_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
