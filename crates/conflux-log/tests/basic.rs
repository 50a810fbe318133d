//! Black-box tests of the partition log API: append, read, rolls, reopen, offsets by time,
//! epochs, retention, DeleteRecords, truncation, compaction, long-poll notification.

use std::time::Duration;

use bytes::Bytes;
use conflux_log::test_support::{batch_of, build_batch, decode_all, TestRecord};
use conflux_log::{CleanupPolicy, FlushPolicy, LogConfig, LogError, PartitionLog, TimestampType};

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::None,
        segment_size_bytes_max: 1024,
        index_interval_bytes: 128,
        ..Default::default()
    }
}

fn keyed(key: &str, value: Option<&str>, ts: i64) -> TestRecord {
    TestRecord {
        key: Some(key.into()),
        value: value.map(|v| v.as_bytes().to_vec()),
        timestamp_ms: ts,
    }
}

fn all_offsets(log: &PartitionLog) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read_to_log_end(next, 1 << 20).unwrap();
        let batches = decode_all(&r.records);
        if batches.is_empty() {
            break;
        }
        for (h, recs) in batches {
            out.extend(recs.iter().map(|r| r.offset).filter(|&o| o >= next));
            next = h.last_offset() + 1;
        }
    }
    out
}

#[test]
fn append_read_roll_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for i in 0..50 {
        let info = log.append_blocking(batch_of(3, 50, 1000 + i), 7).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (i * 3, i * 3 + 2));
    }
    assert_eq!(log.log_end_offset(), 150);
    assert_eq!(log.high_watermark(), 150);
    assert!(log.segment_count() > 5, "tiny segments roll");
    // A read from the middle of a batch returns that whole batch first.
    let r = log.read(64, 1).unwrap();
    let batches = decode_all(&r.records);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0.base_offset, 63);
    assert_eq!(batches[0].0.partition_leader_epoch, 7);
    assert!(log.read(150, 100).unwrap().records.is_empty());
    assert!(matches!(
        log.read(151, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(all_offsets(&log), (0..150).collect::<Vec<_>>());
    log.close().unwrap();
    assert!(matches!(log.read(0, 10), Err(LogError::Closed)));
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 150);
    assert_eq!(all_offsets(&log), (0..150).collect::<Vec<_>>());
    drop(log); // unclean: next open scans the tail
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(all_offsets(&log), (0..150).collect::<Vec<_>>());
    assert_eq!(log.offset_for_timestamp(1010).unwrap(), Some((30, 1010)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((147, 1049)));
}

#[test]
fn timestamps_within_a_batch_and_log_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let b = build_batch(&[
        keyed("a", Some("1"), 10),
        keyed("b", Some("2"), 30),
        keyed("c", Some("3"), 20),
    ]);
    log.append_blocking(b.clone(), 0).unwrap();
    assert_eq!(log.offset_for_timestamp(25).unwrap(), Some((1, 30)));
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((0, 10)));
    log.set_config(LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..config()
    });
    let info = log.append_blocking(b, 0).unwrap();
    assert!(info.log_append_time_ms > 0);
    let (h, _) = &decode_all(&log.read(3, 1000).unwrap().records)[0];
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, info.log_append_time_ms);
    assert_eq!(
        log.offset_for_timestamp(31).unwrap(),
        Some((3, info.log_append_time_ms))
    );
    assert_eq!(
        log.max_timestamp().unwrap(),
        Some((3, info.log_append_time_ms))
    );
}

#[test]
fn invalid_batches_are_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let good = batch_of(1, 10, 1);
    let mut bad = good.to_vec();
    bad[40] ^= 1;
    let both = Bytes::from([good.to_vec(), bad].concat());
    assert!(matches!(
        log.append_blocking(both, 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append_blocking(Bytes::new(), 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append_blocking(good.slice(..30), 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn epochs_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for (epoch, n) in [(1, 10), (3, 10), (4, 5)] {
        for _ in 0..n {
            log.append_blocking(batch_of(2, 40, 1), epoch).unwrap();
        }
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 20)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 20)));
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 50)));
    assert_eq!(log.end_offset_for_epoch(9), None);
    log.truncate_to(31).unwrap(); // batch 30..31 goes whole
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.high_watermark(), 30);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 30)));
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(
        log.append_blocking(batch_of(1, 10, 1), 5)
            .unwrap()
            .base_offset,
        30
    );
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 30)));
    assert_eq!(all_offsets(&log), (0..31).collect::<Vec<_>>());
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(
        log.append_blocking(batch_of(1, 10, 1), 6)
            .unwrap()
            .base_offset,
        0
    );
}

#[test]
fn retention_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        dir.path(),
        LogConfig {
            retention_ms: Some(1000),
            ..config()
        },
    )
    .unwrap();
    for i in 0..60 {
        log.append_blocking(batch_of(1, 100, i * 100), 0).unwrap();
    }
    let segments = log.segment_count();
    // Held back by a subscription still needing offset 5.
    let r = log.enforce_retention(4000, Some(5)).unwrap();
    assert!(r.log_start_offset <= 5);
    let r = log.enforce_retention(4000, None).unwrap();
    assert!(r.segments_deleted > 0 && log.segment_count() < segments);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 30);
    let start = log.delete_records_before(40).unwrap();
    assert_eq!(start, 40);
    assert!(matches!(
        log.read(39, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(all_offsets(&log), (40..60).collect::<Vec<_>>());
    assert!(matches!(
        log.delete_records_before(61),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.set_config(LogConfig {
        retention_ms: None,
        retention_bytes: Some(300),
        ..config()
    });
    log.enforce_retention(0, None).unwrap();
    assert!(log.size_bytes() <= 300 + 1024);
    let start = log.log_start_offset();
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(all_offsets(&log), (start..60).collect::<Vec<_>>());
}

#[test]
fn compaction_keeps_latest_per_key_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1000,
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    for i in 0..40i64 {
        let k = format!("k{}", i % 4);
        let v = if i == 33 { None } else { Some(format!("v{i}")) };
        let b = build_batch(&[keyed(&k, v.as_deref(), i), keyed("other", Some("x"), i)]);
        log.append_blocking(b, 0).unwrap();
    }
    let active_base = log.active_segment_base_offset();
    let report = log.compact(10).unwrap();
    assert!(report.ran && report.records_removed > 0);
    let mut records = Vec::new();
    let mut next = 0;
    while next < log.log_end_offset() {
        let batches = decode_all(&log.read(next, 1 << 20).unwrap().records);
        for (h, recs) in batches {
            records.extend(recs);
            next = h.last_offset() + 1;
        }
    }
    let closed: Vec<_> = records.iter().filter(|r| r.offset < active_base).collect();
    let mut keys: Vec<_> = closed.iter().map(|r| r.key.clone()).collect();
    let n = keys.len();
    keys.dedup();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        n,
        "one record per key in closed segments: {closed:?}"
    );
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    // Tombstone (offset 66) survives while young, goes once older than delete.retention.ms.
    if active_base > 66 {
        assert!(records.iter().any(|r| r.offset == 66 && r.value.is_none()));
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..log.config()
        });
        log.compact(100_000).unwrap();
        let r = log.read(66, 1 << 20).unwrap();
        assert!(decode_all(&r.records)
            .iter()
            .flat_map(|(_, rs)| rs)
            .all(|r| r.offset != 66));
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appends_group_commit_and_wake_fetchers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..Default::default()
    };
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    let mut hw = log.watch_high_watermark();
    let waiter = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(10), hw.wait_for(|&v| v >= 64))
            .await
            .unwrap()
            .unwrap();
    });
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                log.append(batch_of(1, 100, 1), 0).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    waiter.await.unwrap();
    assert_eq!(log.log_end_offset(), 64);
    assert_eq!(all_offsets(&log), (0..64).collect::<Vec<_>>());
}

#[test]
fn interval_flush_acks_before_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Interval {
            interval_ms: Some(5),
            messages: Some(10),
        },
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    for _ in 0..25 {
        log.append_blocking(batch_of(1, 10, 1), 0).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(log.high_watermark(), 25);
}

#[test]
fn fsync_failure_poisons_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        dir.path(),
        LogConfig {
            flush: FlushPolicy::Always,
            ..Default::default()
        },
    )
    .unwrap();
    log.append_blocking(batch_of(1, 10, 1), 0).unwrap();
    log.inject_fsync_failure();
    assert!(matches!(
        log.append_blocking(batch_of(1, 10, 1), 0),
        Err(LogError::Poisoned)
    ));
    assert!(log.is_poisoned());
    assert_eq!(
        log.high_watermark(),
        1,
        "the unsynced append is never visible to consumers"
    );
    assert!(matches!(
        log.append_blocking(batch_of(1, 10, 1), 0),
        Err(LogError::Poisoned)
    ));
    assert_eq!(
        decode_all(&log.read(0, 1 << 20).unwrap().records).len(),
        1,
        "reads still work"
    );
    drop(log);
    // Reopening (the operator's action) recovers whatever is valid on disk.
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert!(!log.is_poisoned());
    assert!(log.log_end_offset() >= 1);
}

#[test]
fn compaction_runs_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..1500i64 {
                let v = format!("v{i}");
                log.append_blocking(
                    build_batch(&[keyed(&format!("k{}", i % 10), Some(&v), i)]),
                    0,
                )
                .unwrap();
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !writer.is_finished() {
        assert!(std::time::Instant::now() < deadline);
        log.compact(0).unwrap();
        let r = log.read(log.log_start_offset(), 1 << 20).unwrap();
        let offsets: Vec<i64> = decode_all(&r.records)
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|r| r.offset))
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }
    writer.join().unwrap();
    log.compact(0).unwrap();
    let active = log.active_segment_base_offset();
    let mut latest = std::collections::HashMap::new();
    let mut next = 0;
    while next < log.log_end_offset() {
        for (h, recs) in decode_all(&log.read(next, 1 << 20).unwrap().records) {
            for r in recs {
                assert!(
                    r.offset >= active || !latest.contains_key(&r.key),
                    "duplicate key in closed segments"
                );
                latest.insert(r.key.clone(), r.offset);
            }
            next = h.last_offset() + 1;
        }
    }
    for k in 0..10 {
        let key = Some(format!("k{k}").into_bytes());
        assert_eq!(
            latest[&key] % 10,
            k,
            "the latest value of every key survives"
        );
        assert!(latest[&key] >= 1490);
    }
}

#[test]
fn age_rolls_and_clean_shutdown_marker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_age_ms_max: Some(0),
        segment_size_bytes_max: 1 << 30,
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..4 {
        log.append_blocking(batch_of(1, 10, 1), 0).unwrap();
    }
    assert_eq!(
        log.segment_count(),
        4,
        "every append finds a segment already too old"
    );
    log.close().unwrap();
    assert!(dir.path().join("clean-shutdown").exists());
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert!(
        !dir.path().join("clean-shutdown").exists(),
        "a crash after this open must rescan"
    );
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn handle_is_send_sync_and_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<PartitionLog>();
}
