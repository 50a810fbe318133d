//! The partition log: append-only segments of Kafka v2 record batches on local disk.
//!
//! A [`PartitionLog`] is a directory of segments `{base_offset:020}.log`, each holding record
//! batches byte for byte as produced (only base offset, leader epoch and — for LogAppendTime
//! topics — the max timestamp are rewritten), with a sparse offset index (`.index`) and time
//! index (`.timeindex`) beside it. The log knows nothing of protocols beyond the batch header.
//!
//! Invariants:
//! - every append acknowledged under [`FlushPolicy::Always`] was fdatasync'd first and survives
//!   `kill -9` and power loss; concurrent appends share one fsync (group commit);
//! - the high watermark (what consumers can read) never passes durable data under `Always`;
//! - recovery truncates only a torn tail of the active segment; damage anywhere else is
//!   reported as [`LogError::Corrupt`], never dropped;
//! - an fsync or write failure poisons the partition: nothing is acknowledged afterwards;
//! - async callers never block a runtime worker: appends run on a small shared pool of I/O
//!   threads ([`IO_THREADS`]); reads are `pread`s the caller runs on a blocking thread.
//!
//! On disk, beside the segments: `log-start-offset.checkpoint` (DeleteRecords/retention),
//! `recovery-point.checkpoint` (segments below it were fsync'd at roll and are not rescanned),
//! `leader-epoch.checkpoint` (epoch → start offset), and `clean-shutdown` (written by `close`,
//! removed by `open`). Compaction leaves `X.log.cleaned` / `X.log.swap` only while it runs.
//!
//! Known limits, on purpose for now:
//! - the CRC does not cover base offset and leader epoch; recovery checks them by order
//!   (offsets increase, epochs never decrease), so damage to them is caught unless it is in the
//!   very last batch, which then looks like a torn tail (as does any damage to the last batch);
//! - closed segments below the recovery point are not CRC-scanned at open (only their indexes
//!   and tail structure are checked); a bit flip in their payload is left for the client's CRC
//!   check, as in Kafka;
//! - `segment.ms` counts from when the segment was created or last opened;
//! - compaction keeps compressed and control batches whole, keeps its key map in memory, and
//!   forgets its clean point on restart (one extra pass); transactions are not modelled yet, so
//!   the last stable offset equals the high watermark.
//!
//! Tests: `cargo test -j2 -p conflux-log` runs unit, property, torn-tail and a short crash test
//! (20 kill -9 cycles). The long crash run:
//! `CONFLUX_CRASH_CYCLES=300 cargo test -j2 -p conflux-log --release --test crash -- --nocapture`.
//! Benchmark: `cargo run --release -p conflux-log --example log_bench -- [size_mib_per_case]`.

mod append;
mod checkpoint;
mod compaction;
mod config;
mod epoch;
mod error;
mod index;
mod log;
mod maintenance;
mod records;
mod recovery;
mod segment;
#[doc(hidden)]
pub mod test_support;

pub use append::{FSYNC_DURATION, IO_THREADS};
pub use compaction::CompactionReport;
pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType, SEGMENT_SIZE_BYTES_LIMIT};
pub use error::LogError;
pub use log::{AppendInfo, PartitionLog, ReadResult};
pub use maintenance::RetentionReport;
pub use recovery::{OPENED_CLEAN, OPENED_RECOVERED};
