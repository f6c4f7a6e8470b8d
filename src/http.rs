//! Serving a router on a listener with the limits a public endpoint needs.
//!
//! axum's `serve` has no header-read timeout, so connections are driven by hyper directly: a
//! client that trickles its headers is cut off after `header_read_timeout` (body reads are bounded
//! by the routes themselves), and on shutdown the listener closes first, then in-flight requests
//! get `grace` to finish.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// How long a client may take to send a request's headers (also bounds idle keep-alive).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run once shutdown began.
    pub grace: Duration,
}

/// Accepts connections until `cancel` fires, then lets in-flight requests finish within the
/// grace period. Returns whether they all finished in time.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    cancel: CancellationToken,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: the condition clears as other
                        // connections close, so wait a moment instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    match tokio::time::timeout(settings.grace, graceful.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            // They go on in their tasks until the process exits; none can be acknowledged
            // wrongly, since the store refuses durable writes once it is closed (503).
            tracing::warn!(grace = ?settings.grace, "requests still running after the grace period are abandoned");
            false
        }
    }
}
