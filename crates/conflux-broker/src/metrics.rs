//! Broker-level measurements: per-topic throughput and the latency of durable appends.
//!
//! Appends are counted in [`crate::Topic::append`], so every front end's produce path is
//! covered; reads are counted by the front ends with [`note_read`] once they know what they
//! return. Everything here is relaxed atomic adds on the topic's own counters.

use std::time::Instant;

use bytes::Bytes;
use conflux_metrics::Histogram;
use conflux_wire::batch::BatchHeader;

use crate::topics::Topic;

/// Time from validation to durable acknowledgement of one partition append (all protocols).
pub static APPEND_DURATION: Histogram = Histogram::new();

pub(crate) fn note_appended(
    throughput: &conflux_metrics::Throughput,
    size_bytes: usize,
    headers: &[BatchHeader],
    started: Instant,
) {
    APPEND_DURATION.observe(started.elapsed());
    let count: u64 = headers
        .iter()
        .map(|h| u64::try_from(h.record_count).unwrap_or(0))
        .sum();
    throughput.bytes_in.add(size_bytes as u64);
    throughput.records_in.add(count);
}

/// Counts the record batches a read returns (a trailing partial batch is not counted). A
/// long-polling Kafka fetch that re-reads after waiting for `min_bytes` counts its first,
/// too-small read as well; with the clients' usual `fetch.min.bytes = 1` that never happens.
pub fn note_read(topic: &Topic, records: &Bytes) {
    if records.is_empty() {
        return;
    }
    topic.metrics.bytes_out.add(records.len() as u64);
    topic.metrics.records_out.add(count_records(records));
}

/// Records in a run of whole batches, from their headers only.
pub fn count_records(records: &Bytes) -> u64 {
    let mut rest = records.clone();
    let mut count = 0u64;
    while let Ok(Some((header, _))) = conflux_wire::batch::split_batch(&mut rest) {
        count += u64::try_from(header.record_count).unwrap_or(0);
    }
    count
}
