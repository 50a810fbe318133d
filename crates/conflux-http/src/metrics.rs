//! `GET /metrics`: the node's state and counters in Prometheus text format (0.0.4).
//!
//! Counters are read from the atomics the hot paths update; offsets, sizes and consumer lag
//! are computed at scrape time from the broker (lag = high watermark − committed offset, the
//! same figure as the admin API's group description).

use conflux_metrics::{Exposition, Kind};

use crate::groups::{all_group_ids, lag_rows};
use crate::HttpContext;

/// A metric family read from one object: name, help, and how to read the value.
type Family<T> = (&'static str, &'static str, fn(&T) -> i128);

pub fn render(ctx: &HttpContext) -> String {
    let mut out = Exposition::new();
    out.family(
        "conflux_build_info",
        Kind::Gauge,
        "Always 1; labelled with the Conflux version.",
    );
    out.sample_int(
        "conflux_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    process(&mut out);
    out.family(
        "conflux_http_connections_active",
        Kind::Gauge,
        "Open connections to the HTTP listener.",
    );
    out.sample_int(
        "conflux_http_connections_active",
        &[],
        i128::from(ctx.connections_active.get()),
    );
    topics(ctx, &mut out);
    partitions(ctx, &mut out);
    groups(ctx, &mut out);
    storage(&mut out);
    alarms(ctx, &mut out);
    for extra in &ctx.extra_metrics {
        extra(&mut out);
    }
    out.finish()
}

fn topics(ctx: &HttpContext, out: &mut Exposition) {
    let topics = ctx.broker.topics();
    let families: [Family<conflux_metrics::Throughput>; 4] = [
        (
            "conflux_topic_bytes_in_total",
            "Bytes of record batches appended to the topic.",
            |t| t.bytes_in.get().into(),
        ),
        (
            "conflux_topic_records_in_total",
            "Records appended to the topic.",
            |t| t.records_in.get().into(),
        ),
        (
            "conflux_topic_bytes_out_total",
            "Bytes of record batches read from the topic by consumers.",
            |t| t.bytes_out.get().into(),
        ),
        (
            "conflux_topic_records_out_total",
            "Records read from the topic by consumers.",
            |t| t.records_out.get().into(),
        ),
    ];
    for (name, help, get) in families {
        out.family(name, Kind::Counter, help);
        for t in &topics {
            out.sample_int(name, &[("topic", &t.name)], get(&t.metrics));
        }
    }
}

fn partitions(ctx: &HttpContext, out: &mut Exposition) {
    let parts: Vec<_> = ctx
        .broker
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .collect();
    let families: [Family<conflux_log::PartitionLog>; 5] = [
        (
            "conflux_partition_log_start_offset",
            "First offset still stored in the partition.",
            |l| l.log_start_offset().into(),
        ),
        (
            "conflux_partition_log_end_offset",
            "Offset the next appended record will get.",
            |l| l.log_end_offset().into(),
        ),
        (
            "conflux_partition_high_watermark",
            "Offset up to which records are readable by consumers.",
            |l| l.high_watermark().into(),
        ),
        (
            "conflux_partition_size_bytes",
            "Bytes of segment files of the partition.",
            |l| l.size_bytes().into(),
        ),
        (
            "conflux_partition_poisoned",
            "1 when an fsync failed and the partition refuses appends until an operator acts.",
            |l| i128::from(l.is_poisoned()),
        ),
    ];
    for (name, help, get) in families {
        out.family(name, Kind::Gauge, help);
        for p in &parts {
            let index = p.index.to_string();
            let labels = [("topic", p.topic.as_str()), ("partition", index.as_str())];
            out.sample_int(name, &labels, get(&p.log));
        }
    }
}

fn groups(ctx: &HttpContext, out: &mut Exposition) {
    let b = &ctx.broker;
    let per_group: Vec<_> = all_group_ids(b)
        .into_iter()
        .map(|g| {
            let d = b.groups.describe(&g);
            let rows = lag_rows(b, &d.members, &g);
            (g, d.members.len(), rows)
        })
        .collect();
    let name = "conflux_consumer_group_lag_records";
    out.family(
        name,
        Kind::Gauge,
        "Records between a group's committed offset and the partition's high watermark.",
    );
    for (g, _, rows) in &per_group {
        for r in rows {
            if let Some(lag) = r.lag {
                let index = r.partition.to_string();
                let labels = [
                    ("group", g.as_str()),
                    ("topic", r.topic.as_str()),
                    ("partition", index.as_str()),
                ];
                out.sample_int(name, &labels, i128::from(lag));
            }
        }
    }
    let name = "conflux_consumer_group_total_lag_records";
    out.family(
        name,
        Kind::Gauge,
        "Sum of a group's lag over all its partitions.",
    );
    for (g, _, rows) in &per_group {
        let total: i64 = rows.iter().filter_map(|r| r.lag).sum();
        out.sample_int(name, &[("group", g)], i128::from(total));
    }
    let name = "conflux_consumer_group_committed_offset";
    out.family(
        name,
        Kind::Gauge,
        "A group's committed offset per partition.",
    );
    for (g, _, rows) in &per_group {
        for r in rows {
            if let Some(current) = r.current_offset {
                let index = r.partition.to_string();
                let labels = [
                    ("group", g.as_str()),
                    ("topic", r.topic.as_str()),
                    ("partition", index.as_str()),
                ];
                out.sample_int(name, &labels, i128::from(current));
            }
        }
    }
    let name = "conflux_consumer_group_members";
    out.family(name, Kind::Gauge, "Active members of a consumer group.");
    for (g, members, _) in &per_group {
        out.sample_int(name, &[("group", g)], *members as i128);
    }
}

fn storage(out: &mut Exposition) {
    let name = "conflux_log_fsync_duration_seconds";
    out.family(name, Kind::Histogram, "Duration of each segment fdatasync.");
    out.histogram(name, &[], &conflux_log::FSYNC_DURATION);
    let name = "conflux_produce_append_duration_seconds";
    out.family(
        name,
        Kind::Histogram,
        "Time from validation to durable acknowledgement of one partition append, any protocol.",
    );
    out.histogram(name, &[], &conflux_broker::metrics::APPEND_DURATION);
    let name = "conflux_log_partitions_opened_total";
    out.family(
        name,
        Kind::Counter,
        "Partition logs opened since start, after a clean shutdown (no scan) or recovered (tail scanned).",
    );
    out.sample_int(
        name,
        &[("mode", "clean")],
        i128::from(conflux_log::OPENED_CLEAN.get()),
    );
    out.sample_int(
        name,
        &[("mode", "recovered")],
        i128::from(conflux_log::OPENED_RECOVERED.get()),
    );
}

/// The broker's resource alarms and what they compare.
fn alarms(ctx: &HttpContext, out: &mut Exposition) {
    let s = ctx.broker.alarms.status();
    let name = "conflux_resource_alarm";
    out.family(
        name,
        Kind::Gauge,
        "1 while the resource alarm is raised (publishing connections are blocked).",
    );
    out.sample_int(name, &[("resource", "memory")], i128::from(s.active.memory));
    out.sample_int(name, &[("resource", "disk")], i128::from(s.active.disk));
    let gauges = [
        (
            "conflux_memory_accounted_bytes",
            "Bytes held by queue engines and front-end buffers (what the memory alarm compares).",
            Some(s.memory_used_bytes),
        ),
        (
            "conflux_memory_high_watermark_bytes",
            "Accounted memory at which the memory alarm is raised.",
            Some(s.memory_high_watermark_bytes),
        ),
        (
            "conflux_disk_free_bytes",
            "Free space on the data directory's file system at the last check.",
            s.disk_free_bytes,
        ),
        (
            "conflux_disk_free_limit_bytes",
            "Free space below which the disk alarm is raised (0: off).",
            Some(s.disk_free_limit_bytes),
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, Kind::Gauge, help);
        if let Some(v) = value {
            out.sample_int(name, &[], i128::from(v));
        }
    }
}

/// Resident and virtual memory and open file descriptors, from `/proc/self` (Linux only;
/// elsewhere these families are empty).
fn process(out: &mut Exposition) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> Option<i128> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        let value: i128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(value * 1024)
    };
    let families = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            kib("VmRSS:"),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            kib("VmSize:"),
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Gauge, help);
        if let Some(v) = value {
            out.sample_int(name, &[], v);
        }
    }
    out.family(
        "process_open_fds",
        Kind::Gauge,
        "Number of open file descriptors.",
    );
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.sample_int("process_open_fds", &[], entries.count() as i128);
    }
}
