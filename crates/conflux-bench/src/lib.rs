//! The benchmark harness behind `conflux bench`: workload files, a lean pipelining Kafka client
//! on `conflux-wire`, the runner, HDR-histogram reports (table, JSON, PNG chart) and the
//! machine's disk and network limits.

pub mod chart;
pub mod cli;
pub mod client;
pub mod limits;
pub mod report;
pub mod runner;
pub mod server;
pub mod stats;
pub mod workload;
