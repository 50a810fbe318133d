//! Accepting HTTP/1.1 connections and serving them until shutdown.
//!
//! At most [`CONNECTIONS_MAX`] connections are served at once (more wait in the accept queue);
//! a client that does not send its headers within [`HEADER_READ_TIMEOUT`] is dropped. On
//! shutdown the listener is closed, each connection finishes its request in flight and closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{router, HttpContext};

/// Open HTTP connections beyond this wait in the accept queue.
const CONNECTIONS_MAX: usize = 1024;
/// A client that has not sent complete headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `listener` until `shutdown` is cancelled, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            ctx.connections_active.add(1);
            serve_connection(stream, ctx.clone(), shutdown).await;
            ctx.connections_active.add(-1);
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(stream: TcpStream, ctx: Arc<HttpContext>, shutdown: CancellationToken) {
    let service = service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(router::route(&ctx, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close instead of keeping the connection alive.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http: connection ended with an error");
    }
}
