//! NATS client-protocol front end: core pub/sub (in-memory fan-out) and JetStream on the log.

pub mod jetstream;
pub mod parser;
pub mod server;
pub mod sublist;

pub use server::{serve, NatsConfig, Shared};

/// Opens JetStream on the broker's log and attaches it to the listener's shared state.
pub fn start_jetstream(
    shared: &std::sync::Arc<Shared>,
    broker: std::sync::Arc<conflux_broker::Broker>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    jetstream::start(shared, broker, shutdown).map(|_| ())
}
