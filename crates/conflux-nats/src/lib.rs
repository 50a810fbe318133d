//! NATS client-protocol front end: core pub/sub (in-memory fan-out) and JetStream on the log.

pub mod jetstream;
pub mod parser;
pub mod server;
pub mod sublist;

pub use jetstream::{ConsumerStats, JetStream, StreamStats};
pub use server::{serve, NatsConfig, Shared};

/// Core NATS counts of one listener, for `/metrics`, the admin API and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CoreStats {
    pub connections: u64,
    pub subscriptions: u64,
    pub slow_consumers: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
}

/// Reads the core counters of `shared` (relaxed loads; they are approximate by nature).
pub fn core_stats(shared: &Shared) -> CoreStats {
    use std::sync::atomic::Ordering::Relaxed;
    CoreStats {
        connections: shared.connection_count() as u64,
        subscriptions: shared.subscription_count() as u64,
        slow_consumers: shared.stats.slow_consumers.load(Relaxed),
        msgs_in: shared.stats.msgs_in.load(Relaxed),
        msgs_out: shared.stats.msgs_out.load(Relaxed),
    }
}

/// Opens JetStream on the broker's log and attaches it to the listener's shared state.
pub fn start_jetstream(
    shared: &std::sync::Arc<Shared>,
    broker: std::sync::Arc<conflux_broker::Broker>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<std::sync::Arc<JetStream>, Box<dyn std::error::Error + Send + Sync>> {
    jetstream::start(shared, broker, shutdown)
}
