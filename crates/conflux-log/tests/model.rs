//! Property test: random appends, reads, segment rolls (tiny segments), retention,
//! DeleteRecords, compaction, truncation and clean/unclean reopen, checked after every step
//! against an in-memory model of what the log must contain.

use std::collections::BTreeMap;
use std::path::Path;

use conflux_log::test_support::{build_batch, decode_all, TestRecord};
use conflux_log::{CleanupPolicy, FlushPolicy, LogConfig, PartitionLog};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// (key, value length or None for a tombstone) per record.
    Append(Vec<(u8, Option<u8>)>),
    Read {
        at: u16,
        max_bytes: u16,
    },
    Retention {
        bytes: u16,
        min_needed: Option<u16>,
    },
    DeleteRecords(u16),
    Compact,
    Truncate(u16),
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((0u8..6, prop::option::weighted(0.9, 0u8..80)), 1..4).prop_map(Op::Append),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (any::<u16>(), prop::option::of(any::<u16>())).prop_map(|(bytes, min_needed)| Op::Retention { bytes, min_needed }),
        1 => any::<u16>().prop_map(Op::DeleteRecords),
        2 => Just(Op::Compact),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    batch_last: i64,
}

#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<i64, Rec>,
    log_start: i64,
    log_end: i64,
}

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::None,
        segment_size_bytes_max: 400,
        index_interval_bytes: 64,
        cleanup_policy: CleanupPolicy::CompactDelete,
        retention_ms: None,
        delete_retention_ms: 1,
        min_cleanable_dirty_ratio: 0.0,
        ..Default::default()
    }
}

/// Picks an offset in `[log_start, log_end]` from a random u16.
fn pick(m: &Model, x: u16) -> i64 {
    m.log_start + i64::from(x) % (m.log_end - m.log_start + 1)
}

fn stored(log: &PartitionLog) -> BTreeMap<i64, Rec> {
    let mut out = BTreeMap::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 16).unwrap();
        let batches = decode_all(&r.records);
        if batches.is_empty() {
            break;
        }
        for (h, recs) in batches {
            for r in recs
                .into_iter()
                .filter(|r| r.offset >= log.log_start_offset())
            {
                out.insert(
                    r.offset,
                    Rec {
                        key: r.key.unwrap(),
                        value: r.value,
                        batch_last: h.last_offset(),
                    },
                );
            }
            next = h.last_offset() + 1;
        }
    }
    out
}

fn check(log: &PartitionLog, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), m.log_start);
    prop_assert_eq!(log.log_end_offset(), m.log_end);
    prop_assert_eq!(log.high_watermark(), m.log_end);
    prop_assert_eq!(stored(log), m.records.clone());
    Ok(())
}

fn step(dir: &Path, log: &mut PartitionLog, m: &mut Model, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Append(recs) => {
            let batch: Vec<TestRecord> = recs
                .iter()
                .map(|&(k, v)| TestRecord {
                    key: Some(vec![b'k', k]),
                    value: v.map(|n| vec![k; n as usize]),
                    timestamp_ms: 5,
                })
                .collect();
            let info = log.append_blocking(build_batch(&batch), 0).unwrap();
            prop_assert_eq!(info.base_offset, m.log_end);
            let last = m.log_end + recs.len() as i64 - 1;
            for (i, r) in batch.into_iter().enumerate() {
                m.records.insert(
                    m.log_end + i as i64,
                    Rec {
                        key: r.key.unwrap(),
                        value: r.value,
                        batch_last: last,
                    },
                );
            }
            m.log_end = last + 1;
        }
        Op::Read { at, max_bytes } => {
            // A consumer's view: batches emptied at their end by compaction keep their last
            // offset, so a read may return only records below `offset`; it then moves past them.
            let offset = pick(m, at);
            let mut next = offset;
            let mut got: Vec<i64> = Vec::new();
            while got.is_empty() && next < m.log_end {
                let r = log.read(next, usize::from(max_bytes)).unwrap();
                let batches = decode_all(&r.records);
                if batches.is_empty() {
                    // Compaction can leave a gap at the end (an emptied segment made active by a
                    // truncation): nothing to return, but only if nothing is there.
                    prop_assert!(
                        m.records.range(next..).next().is_none(),
                        "at least one batch when data exists at {}",
                        next
                    );
                    break;
                }
                got = batches
                    .iter()
                    .flat_map(|(_, rs)| rs.iter().map(|r| r.offset))
                    .filter(|&o| o >= offset)
                    .collect();
                next = batches.last().unwrap().0.last_offset() + 1;
            }
            let want: Vec<i64> = m
                .records
                .range(offset..)
                .map(|(&o, _)| o)
                .take(got.len())
                .collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(got.is_empty(), m.records.range(offset..).next().is_none());
        }
        Op::Retention { bytes, min_needed } => {
            log.set_config(LogConfig {
                retention_bytes: Some(u64::from(bytes) % 3000),
                ..config()
            });
            let min_needed = min_needed.map(|x| pick(m, x));
            let before = log.log_start_offset();
            let r = log.enforce_retention(0, min_needed).unwrap();
            log.set_config(config());
            prop_assert!(r.log_start_offset >= before);
            let needed_from = min_needed.unwrap_or(i64::MAX).max(before);
            prop_assert!(
                m.records
                    .range(needed_from..)
                    .all(|(&o, _)| o >= r.log_start_offset),
                "retention removed a needed record"
            );
            prop_assert!(r.log_start_offset <= log.active_segment_base_offset().max(before));
            m.log_start = r.log_start_offset;
            m.records = m.records.split_off(&m.log_start);
        }
        Op::DeleteRecords(x) => {
            let offset = pick(m, x);
            let start = log.delete_records_before(offset).unwrap();
            prop_assert!(start >= offset.max(m.log_start));
            prop_assert!(
                m.records.range(offset..start).next().is_none(),
                "only absent offsets skipped"
            );
            m.log_start = start;
            m.records = m.records.split_off(&start);
        }
        Op::Compact => {
            let active = log.active_segment_base_offset();
            log.compact(0).unwrap();
            let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for (&o, r) in m.records.range(..active) {
                latest.insert(r.key.clone(), o);
            }
            m.records.retain(|&o, r| o >= active || latest[&r.key] == o);
        }
        Op::Truncate(x) => {
            let offset = pick(m, x);
            log.truncate_to(offset).unwrap();
            m.records.retain(|_, r| r.batch_last < offset);
            prop_assert!(log.log_end_offset() <= offset.max(m.log_start));
            m.log_end = log.log_end_offset();
            m.log_start = m.log_start.min(m.log_end);
            prop_assert!(m.records.keys().all(|&o| o < m.log_end));
        }
        Op::Reopen { clean } => {
            if clean {
                log.close().unwrap();
            }
            let old = std::mem::replace(log, PartitionLog::open(dir, config()).unwrap());
            drop(old);
        }
    }
    check(log, m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), config()).unwrap();
        let mut model = Model::default();
        for op in ops {
            step(dir.path(), &mut log, &mut model, op)?;
        }
    }
}

/// Runs a fixed sequence (shrunk failures found by the property test are kept here).
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config()).unwrap();
    let mut model = Model::default();
    for op in ops {
        step(dir.path(), &mut log, &mut model, op)?;
    }
    Ok(())
}

#[test]
fn regression_truncate_after_compaction() {
    use Op::*;
    let a = |v: &[(u8, Option<u8>)]| Append(v.to_vec());
    run(vec![
        a(&[(0, None)]),
        a(&[(0, None)]),
        a(&[(0, Some(6))]),
        a(&[(0, Some(35)), (0, Some(69))]),
        a(&[(0, None), (0, None), (0, None)]),
        a(&[(0, None), (0, None)]),
        a(&[(0, None)]),
        a(&[(0, None), (0, None), (0, Some(18))]),
        a(&[(3, Some(39)), (5, Some(1)), (0, None)]),
        Truncate(57937),
        a(&[(5, Some(53))]),
        a(&[(3, Some(15))]),
        a(&[(3, Some(27))]),
        a(&[(3, Some(54)), (4, Some(68))]),
        a(&[(1, None), (2, Some(34))]),
        Compact,
        a(&[(0, Some(74)), (5, None), (4, Some(37))]),
        Truncate(8457),
        Read {
            at: 50862,
            max_bytes: 5220,
        },
    ])
    .unwrap();
}
