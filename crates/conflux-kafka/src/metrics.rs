//! Per-API request counts, errors and latency of the Kafka listener, and their rendering for
//! `/metrics`.
//!
//! Stats live in a fixed array indexed by API key, so recording a request is three relaxed
//! atomic adds with no lookup and no lock; only APIs that saw traffic are rendered.

use std::time::Duration;

use conflux_metrics::{Counter, Exposition, Histogram, Kind};
use conflux_wire::generated::ApiKey;

use crate::KafkaMetrics;

/// API keys at or above this are counted under the last slot (`api="unknown"`).
const API_SLOTS: usize = 96;

#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: Counter,
    pub errors: Counter,
    pub duration: Histogram,
}

/// One [`ApiStats`] per API key.
#[derive(Debug)]
pub struct ApiMetrics {
    slots: Box<[ApiStats]>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            slots: (0..API_SLOTS).map(|_| ApiStats::default()).collect(),
        }
    }
}

impl ApiMetrics {
    fn slot(&self, api_key: i16) -> &ApiStats {
        let last = API_SLOTS - 1;
        let index = usize::try_from(api_key).map_or(last, |k| k.min(last));
        &self.slots[index]
    }

    /// Records one handled request: its API (from the frame, before decoding), how long it
    /// took, and whether it failed as a whole.
    pub fn observe(&self, api_key: i16, elapsed: Duration, failed: bool) {
        let stats = self.slot(api_key);
        stats.requests.inc();
        stats.duration.observe(elapsed);
        if failed {
            stats.errors.inc();
        }
    }

    /// Counts an error reported inside an otherwise answered request (e.g. one partition of a
    /// produce refused).
    pub fn error(&self, api_key: ApiKey) {
        self.slot(api_key.as_i16()).errors.inc();
    }
}

/// The API key a request frame starts with, read without decoding it.
pub fn frame_api_key(frame: &[u8]) -> i16 {
    match frame {
        [a, b, ..] => i16::from_be_bytes([*a, *b]),
        _ => -1,
    }
}

impl KafkaMetrics {
    /// Appends the Kafka listener's families to a `/metrics` exposition.
    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "conflux_kafka_connections_active",
            Kind::Gauge,
            "Open Kafka client connections.",
        );
        let active = self
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed);
        out.sample_int("conflux_kafka_connections_active", &[], i128::from(active));
        let used: Vec<(String, &ApiStats)> = self
            .apis
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.requests.get() > 0 || s.errors.get() > 0)
            .map(|(key, s)| (api_name(key), s))
            .collect();
        let families = [
            (
                "conflux_kafka_requests_total",
                "Kafka requests handled, by API.",
            ),
            (
                "conflux_kafka_request_errors_total",
                "Kafka requests (or partitions of a produce) that failed, by API.",
            ),
        ];
        for (index, (name, help)) in families.iter().enumerate() {
            out.family(name, Kind::Counter, help);
            for (api, s) in &used {
                let value = if index == 0 { &s.requests } else { &s.errors };
                out.sample_int(name, &[("api", api)], i128::from(value.get()));
            }
        }
        let name = "conflux_kafka_request_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "Time from a request frame's arrival to its response, by API (Produce includes the fsync wait, Fetch the long-poll wait).",
        );
        for (api, s) in &used {
            out.histogram(name, &[("api", api)], &s.duration);
        }
    }
}

fn api_name(slot: usize) -> String {
    let known = i16::try_from(slot).ok().and_then(ApiKey::from_i16);
    match known {
        Some(key) if slot < API_SLOTS - 1 => key.name().to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_api_and_rendered() {
        let metrics = KafkaMetrics::default();
        metrics.apis.observe(0, Duration::from_millis(2), false);
        metrics.apis.observe(0, Duration::from_millis(2), true);
        metrics
            .apis
            .observe(i16::MAX, Duration::from_millis(1), true);
        let mut out = Exposition::new();
        metrics.render(&mut out);
        let text = out.finish();
        assert!(text.contains("conflux_kafka_requests_total{api=\"Produce\"} 2\n"));
        assert!(text.contains("conflux_kafka_request_errors_total{api=\"Produce\"} 1\n"));
        assert!(text.contains("conflux_kafka_requests_total{api=\"unknown\"} 1\n"));
        assert!(
            !text.contains("api=\"Fetch\""),
            "unused APIs are not rendered"
        );
    }

    #[test]
    fn api_key_is_read_from_the_frame_head() {
        assert_eq!(frame_api_key(&[0, 1, 0, 4]), 1);
        assert_eq!(frame_api_key(&[0]), -1);
    }
}
