//! NATS client-protocol front end: core pub/sub (in-memory fan-out) and JetStream on the log.

pub mod parser;
pub mod server;
pub mod sublist;

pub use server::{serve, NatsConfig, Shared};
