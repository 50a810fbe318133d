//! AMQP 0-9-1 front end: serves RabbitMQ clients (pika, aio-pika, amqplib, lapin, …) from the
//! broker core. Queues are broker topics read through the broker's subscription engine;
//! exchanges, bindings and queue definitions are routing metadata in the broker's metadata
//! log. See `server` for the virtual host and `connection` for the protocol state machine.

pub mod batch;
pub mod connection;
pub mod frame;
pub mod management;
pub mod message;
pub mod redrive;
pub mod server;
pub mod stream_offset;

use std::sync::Arc;

use conflux_broker::Broker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use server::{QueueStats, Server, VHostCounts};

/// Listener settings (the `[amqp]` config section).
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame accepted and offered in connection.tune (DESIGN §5: 128 KiB).
    pub frame_max: u32,
    pub channel_max: u16,
    /// Heartbeat interval offered, in seconds; 0 disables.
    pub heartbeat_s: u16,
    /// Largest message body accepted (DESIGN §5: 128 MiB).
    pub body_size_max: u64,
    /// Users allowed to connect (name, password).
    pub users: Vec<(String, String)>,
    /// Whether `guest`/`guest` may log in (from localhost only unless `guest_remote`).
    pub guest_enabled: bool,
    pub guest_remote: bool,
    pub connections_max: usize,
    /// Redelivery backoff after a nack with requeue: 0 requeues at once (RabbitMQ's
    /// behaviour); otherwise `min(base * 2^(n-1), max)` ms.
    pub redelivery_backoff_base_ms: u64,
    pub redelivery_backoff_max_ms: u64,
    /// Per queue: messages and bytes held in memory (beyond them the log is the spill) and
    /// deliveries unacked at once.
    pub queue_limits: conflux_broker::subscription::ResidentLimits,
    /// Bytes of publishes one connection may have read but not yet stored; the connection
    /// stops reading until its pipeline drains below it (backpressure, not buffering).
    pub publish_in_flight_bytes_max: u64,
    /// Virtual hosts besides `/` opened at start (more come from the management API).
    pub vhosts: Vec<String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 128 * 1024,
            channel_max: 2047,
            heartbeat_s: 60,
            body_size_max: 128 * 1024 * 1024,
            users: Vec::new(),
            guest_enabled: true,
            guest_remote: false,
            connections_max: 10_000,
            redelivery_backoff_base_ms: 0,
            redelivery_backoff_max_ms: 60_000,
            queue_limits: Default::default(),
            publish_in_flight_bytes_max: 16 * 1024 * 1024,
            vhosts: Vec::new(),
        }
    }
}

/// Accepts AMQP connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, server: Arc<Server>, shutdown: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(server.config.connections_max));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "amqp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "amqp connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let server = server.clone();
        let shutdown = shutdown.clone();
        let live = server::LiveGuard::connection(&server.live);
        tracker.spawn(async move {
            let _live = live;
            connection::handle(server, stream, peer, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Opens the AMQP virtual host over `broker` and serves it.
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: AmqpConfig,
    shutdown: CancellationToken,
) {
    serve_and_checkpoint(listener, Server::open(broker, config), shutdown).await;
}

/// Serves an opened [`Server`] (the caller keeps a handle for metrics and management), then
/// writes its final ack state.
pub async fn serve_and_checkpoint(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    serve(listener, server.clone(), shutdown).await;
    // Connections are closed (their unacked deliveries requeued): write the final ack state.
    let _ = tokio::task::spawn_blocking(move || server.checkpoint_all()).await;
}
