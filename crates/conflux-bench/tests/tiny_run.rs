//! Runs a tiny workload (1 s at a low rate) against a real `conflux serve` started by the test
//! and checks that the report is consistent: every message produced was consumed, no errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use conflux_bench::runner::{run, RunOptions};
use conflux_bench::server::{Durability, Server};
use conflux_bench::workload::Workload;

/// `$CONFLUX_BIN`, else a built `conflux` in this workspace's target dir, else a debug build.
fn conflux_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONFLUX_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("conflux");
        if bin.exists() {
            return bin;
        }
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-j2", "-p", "conflux"])
        .current_dir(&root)
        .status()
        .expect("running cargo build -p conflux");
    assert!(status.success(), "cargo build -p conflux failed");
    target.join("debug").join("conflux")
}

fn tiny_workload(acks: &str) -> Workload {
    Workload::parse(
        &format!(
            r#"
            topics = 1
            partitions_per_topic = 3
            message_size = 200
            producers_per_topic = 2
            consumer_per_subscription = 2
            producer_rate = 300
            warmup_duration_s = 0.5
            test_duration_s = 1
            acks = "{acks}"
            linger_ms = 2
            batch_size = 4096
            "#
        ),
        "tiny",
    )
    .unwrap()
}

#[test]
fn tiny_workload_produces_and_consumes_everything() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&conflux_binary(), data.path(), Durability::Always).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (i, acks) in ["all", "1"].into_iter().enumerate() {
        let workload = tiny_workload(acks);
        let opts = RunOptions {
            bootstrap: server.kafka,
            topic_prefix: format!("tiny-{i}"),
            progress: false,
        };
        let report = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), run(&workload, &opts)).await
            })
            .expect("run finished within 60 s")
            .expect("run succeeded");
        let t = report.totals;
        assert_eq!(t.send_errors, 0, "acks={acks}: {report:#?}");
        assert_eq!(t.receive_errors, 0, "acks={acks}: {report:#?}");
        // 300 msg/s for 1.5 s: a few hundred messages, all of them consumed exactly once.
        assert!(
            t.sent_messages >= 100,
            "acks={acks}: sent {}",
            t.sent_messages
        );
        assert_eq!(t.received_messages, t.sent_messages, "acks={acks}");
        assert!(report.measured_sent_messages <= t.sent_messages);
        assert!(report.measured_sent_messages > 0);
        assert!(report.publish_latency.count > 0);
        assert!(report.end_to_end_latency.count > 0);
        assert!(report.end_to_end_latency.max_ms >= report.end_to_end_latency.p50_ms);
        assert!(!report.samples.is_empty());
        // The chart renders from the same report.
        let png = data.path().join(format!("tiny-{i}.png"));
        conflux_bench::chart::draw(&report, &png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
    server.stop();
}
