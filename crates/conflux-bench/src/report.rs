//! The result of one run: rates, counts and latency percentiles over the measured window, the
//! per-second time series, and the machine it ran on; printed as a table and saved as JSON.

use serde::Serialize;

use crate::stats::{Counts, Percentiles, Rates};
use crate::workload::Workload;

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSample {
    /// Seconds since producers started (warm-up included).
    pub t_s: f64,
    pub rates: Rates,
    pub publish: Percentiles,
    pub end_to_end: Percentiles,
}

/// What the machine is, so figures can be compared.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            memory_gib,
        }
    }
}

/// Counts over the whole run (warm-up and drain included), for consistency checks.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RunCounts {
    pub sent_messages: u64,
    pub received_messages: u64,
    pub send_errors: u64,
    pub receive_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Free text naming the broker set-up (e.g. `fsync` or `interval`).
    pub label: String,
    pub workload: Workload,
    pub machine: Machine,
    /// Length of the measured window (after warm-up).
    pub duration_s: f64,
    pub rates: Rates,
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
    /// Messages and errors within the measured window.
    pub measured_sent_messages: u64,
    pub measured_received_messages: u64,
    pub totals: RunCounts,
    pub samples: Vec<IntervalSample>,
}

impl Report {
    pub fn new(
        workload: &Workload,
        duration_s: f64,
        measured: Counts,
        all: Counts,
        publish_latency: Percentiles,
        end_to_end_latency: Percentiles,
        samples: Vec<IntervalSample>,
    ) -> Report {
        Report {
            label: String::new(),
            workload: workload.clone(),
            machine: Machine::detect(),
            duration_s,
            rates: Rates::of(&measured, duration_s),
            publish_latency,
            end_to_end_latency,
            measured_sent_messages: measured.sent_messages,
            measured_received_messages: measured.received_messages,
            totals: RunCounts {
                sent_messages: all.sent_messages,
                received_messages: all.received_messages,
                send_errors: all.send_errors,
                receive_errors: all.receive_errors,
            },
            samples,
        }
    }

    /// A plain-text table of the headline figures.
    pub fn table(&self) -> String {
        let r = &self.rates;
        let mut out = String::new();
        out.push_str(&format!(
            "workload {}  ({} topic(s) x {} partitions, {} B, rate {}, acks {}, {:.1} s measured, {} cores)\n",
            self.workload.name,
            self.workload.topics,
            self.workload.partitions_per_topic,
            self.workload.message_size,
            if self.workload.producer_rate == 0 {
                "max".to_string()
            } else {
                format!("{} msg/s", self.workload.producer_rate)
            },
            self.workload.acks.wire(),
            self.duration_s,
            self.machine.cores,
        ));
        out.push_str(&format!(
            "  publish  {:>12.0} msg/s {:>9.1} MB/s\n  consume  {:>12.0} msg/s {:>9.1} MB/s\n",
            r.publish_msgs_per_s, r.publish_mb_per_s, r.consume_msgs_per_s, r.consume_mb_per_s
        ));
        out.push_str(&format!(
            "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency ms", "mean", "p50", "p99", "p99.9", "p99.99", "max"
        ));
        for (name, p) in [
            ("publish", &self.publish_latency),
            ("end-to-end", &self.end_to_end_latency),
        ] {
            out.push_str(&format!(
                "  {:<12} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                name, p.mean_ms, p.p50_ms, p.p99_ms, p.p99_9_ms, p.p99_99_ms, p.max_ms
            ));
        }
        out.push_str(&format!(
            "  run totals: sent {} received {} send errors {} receive errors {}\n",
            self.totals.sent_messages,
            self.totals.received_messages,
            self.totals.send_errors,
            self.totals.receive_errors
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rates_come_from_the_measured_window() {
        let w = Workload::parse("message_size = 1000\nproducer_rate = 10", "w").unwrap();
        let measured = Counts {
            sent_messages: 1_000,
            sent_bytes: 1_000_000,
            received_messages: 1_000,
            received_bytes: 1_000_000,
            ..Default::default()
        };
        let all = Counts {
            sent_messages: 1_200,
            received_messages: 1_200,
            ..measured
        };
        let r = Report::new(
            &w,
            4.0,
            measured,
            all,
            Percentiles::default(),
            Percentiles::default(),
            vec![],
        );
        assert_eq!(r.rates.publish_msgs_per_s, 250.0);
        assert_eq!(r.rates.consume_mb_per_s, 0.25);
        assert_eq!(r.totals.sent_messages, 1_200);
        let table = r.table();
        assert!(table.contains("250 msg/s"), "{table}");
        assert!(table.contains("rate 10 msg/s"), "{table}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rates"]["publish_msgs_per_s"], 250.0);
        assert_eq!(json["workload"]["name"], "w");
        assert!(r.machine.cores >= 1);
    }
}
