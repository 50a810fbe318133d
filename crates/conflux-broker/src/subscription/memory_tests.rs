//! Tests of the subscription engine's memory bounds: settled ranges behind a never-acked
//! message, the resident cap with the log as spill, the in-flight cap, the state file's
//! formats, and a model-based test of publish / deliver / ack / nack / restart under tiny caps.

use super::*;
use conflux_log::{FlushPolicy, LogConfig, PartitionLog};
use conflux_wire::records::BatchBuilder;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn msg(offset: i64, body: &str) -> Message {
    Message {
        offset,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(body.to_string())),
        headers: Vec::new(),
    }
}

fn scratch_log(dir: &Path) -> PartitionLog {
    let config = LogConfig {
        flush: FlushPolicy::None,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, config).unwrap()
}

/// Appends `n` records with bodies `b{offset}` and returns the messages as a publisher
/// would offer them.
fn publish(log: &PartitionLog, n: usize) -> Vec<Message> {
    let base = log.log_end_offset();
    let mut b = BatchBuilder::new(0);
    for i in 0..n {
        let body = format!("b{}", base + i as i64);
        b.append(0, None, Some(Bytes::from(body)), vec![]);
    }
    let info = log.append_blocking(b.build().unwrap(), 0).unwrap();
    assert_eq!(info.base_offset, base);
    (0..n as i64)
        .map(|i| msg(base + i, &format!("b{}", base + i)))
        .collect()
}

fn limits(messages_max: u64, bytes_max: u64, unacked_max: u64) -> ResidentLimits {
    ResidentLimits {
        messages_max,
        bytes_max,
        unacked_max,
    }
}

/// What a front end's pump does: read the log when the engine asks for it.
fn pump(s: &mut Subscription, log: &PartitionLog) {
    while s.needs_log_read(log.high_watermark()) {
        if s.load_from_log(log, 64 * 1024, 0).unwrap() == 0 {
            break;
        }
    }
}

/// Consumes everything (acking each), reading the log as needed; returns the offsets.
fn drain(s: &mut Subscription, log: &PartitionLog) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    loop {
        pump(s, log);
        let Some(d) = s.next(1, 0) else { break };
        out.push((d.message.offset, d.redelivered));
        assert_eq!(
            d.message.value.as_deref(),
            Some(format!("b{}", d.message.offset).as_bytes())
        );
        assert!(s.ack(d.message.offset, 0));
    }
    out
}

#[test]
fn a_never_acked_message_keeps_a_million_later_acks_in_one_range() {
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.offer(msg(0, ""), 0);
    let stuck = s.next(1, 0).unwrap();
    assert_eq!(stuck.message.offset, 0);
    let mut max_ranges = 0;
    for o in 1..=1_000_000i64 {
        s.offer(
            Message {
                offset: o,
                timestamp: 0,
                key: None,
                value: None,
                headers: Vec::new(),
            },
            0,
        );
        let d = s.next(1, 0).unwrap();
        assert!(s.ack(d.message.offset, 0));
        max_ranges = max_ranges.max(s.settled_ranges().range_count());
    }
    assert_eq!(max_ranges, 1, "contiguous acks stay one range");
    assert_eq!(s.ack_floor(), 0, "offset 0 holds the floor");
    assert_eq!((s.len(), s.resident_len()), (1, 1));
    // The state file stays small too, and a restart keeps the million acks.
    let dir = tempfile::tempdir().unwrap();
    s.state_path = Some(dir.path().join("s.json"));
    s.dirty = true;
    let (path, bytes) = s.checkpoint().unwrap();
    assert!(bytes.len() < 200, "checkpoint is {} bytes", bytes.len());
    write_state(&path, &bytes).unwrap();
    let r = Subscription::open(SubscriptionConfig::default(), Some(path), 0).unwrap();
    assert_eq!(
        r.settled_ranges().iter().collect::<Vec<_>>(),
        [(1, 1_000_001)]
    );
    assert!(s.ack(0, 0));
    assert_eq!(s.ack_floor(), 1_000_001);
    assert!(s.settled_ranges().is_empty());
}

#[test]
fn resident_message_cap_spills_to_the_log_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(dir.path());
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.set_limits(limits(100, u64::MAX, 1_000));
    for _ in 0..100 {
        for m in publish(&log, 10) {
            s.offer(m, 0);
            assert!(s.resident_len() <= 100);
        }
        // The length counts what is not loaded; the ready total too.
        assert_eq!(s.len() as i64, log.log_end_offset());
    }
    assert!(s.spilled());
    assert_eq!(s.ready_total(), 1_000);
    assert_eq!(s.stats().not_loaded, 900);
    let mut got = Vec::new();
    loop {
        pump(&mut s, &log);
        assert!(s.resident_len() <= 100);
        let Some(d) = s.next(1, 0) else { break };
        got.push(d.message.offset);
        assert_eq!(
            d.message.value.as_deref(),
            Some(format!("b{}", d.message.offset).as_bytes())
        );
        s.ack(d.message.offset, 0);
        assert_eq!(s.len() as usize, 1_000 - got.len());
    }
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
    assert!(s.is_empty() && !s.spilled());
    assert_eq!(s.ack_floor(), 1_000);
}

#[test]
fn resident_byte_cap_holds_and_an_oversized_message_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(dir.path());
    let one = msg(0, "b0").memory_bytes();
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.set_limits(limits(u64::MAX, one * 5, 1_000));
    for m in publish(&log, 50) {
        s.offer(m, 0);
        assert!(s.resident_bytes() <= one * 5 + 16);
    }
    assert_eq!(s.resident_len(), 5);
    let got = drain(&mut s, &log);
    assert_eq!(got.len(), 50);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    // A cap smaller than one message still admits one at a time.
    let mut tiny = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    tiny.set_limits(limits(u64::MAX, 1, 1_000));
    pump(&mut tiny, &log);
    assert_eq!(tiny.resident_len(), 1);
    assert_eq!(drain(&mut tiny, &log).len(), 50);
}

#[test]
fn the_unacked_cap_stops_deliveries_until_one_settles() {
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.set_limits(limits(100, u64::MAX, 3));
    for o in 0..10 {
        s.offer(msg(o, "x"), 0);
    }
    let taken: Vec<i64> = std::iter::from_fn(|| s.next(1, 0))
        .map(|d| d.message.offset)
        .collect();
    assert_eq!(taken, [0, 1, 2]);
    assert!(s.next_where(1, 0, None, 10, |_| true).is_none());
    assert!(s.ack(1, 0));
    assert_eq!(s.next(1, 0).unwrap().message.offset, 3);
    assert!(s.next(1, 0).is_none());
    assert!(s.nack(0, true, 0));
    assert_eq!(s.next(1, 0).unwrap().message.offset, 0);
}

#[test]
fn max_length_counts_messages_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(dir.path());
    let mut s = Subscription::open(
        SubscriptionConfig {
            max_length: Some(150),
            overflow: Overflow::RejectPublish,
            ..Default::default()
        },
        None,
        0,
    )
    .unwrap();
    s.set_limits(limits(50, u64::MAX, 1_000));
    for m in publish(&log, 149) {
        s.offer(m, 0);
    }
    assert_eq!(s.admission(2), Admission::Accept);
    for m in publish(&log, 1) {
        s.offer(m, 0);
    }
    assert_eq!(s.len(), 150);
    assert_eq!(s.admission(2), Admission::Reject { dead_letter: false });
    // Loading the spilled messages does not refuse them: they were admitted at publish.
    let got = drain(&mut s, &log);
    assert_eq!(got.len(), 150);
    assert_eq!(s.admission(2), Admission::Accept);
}

#[test]
fn drop_head_with_spill_drops_the_oldest_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(dir.path());
    let mut s = Subscription::open(
        SubscriptionConfig {
            max_length: Some(100),
            dead_letter: true,
            ..Default::default()
        },
        None,
        0,
    )
    .unwrap();
    s.set_limits(limits(30, u64::MAX, 1_000));
    for m in publish(&log, 130) {
        s.offer(m, 0);
    }
    let dead: Vec<i64> = s
        .take_dead_letters()
        .iter()
        .map(|d| d.message.offset)
        .collect();
    assert_eq!(dead, (0..30).collect::<Vec<_>>(), "the oldest go first");
    assert_eq!(s.len(), 100);
    let got: Vec<i64> = drain(&mut s, &log).iter().map(|d| d.0).collect();
    assert_eq!(got, (30..130).collect::<Vec<_>>());
    assert!(s.take_dead_letters().is_empty());
}

#[test]
fn purge_includes_messages_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(dir.path());
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.set_limits(limits(10, u64::MAX, 1_000));
    for m in publish(&log, 40) {
        s.offer(m, 0);
    }
    s.next(1, 0).unwrap();
    assert_eq!(s.purge(), 39);
    assert_eq!((s.len(), s.unacked_len()), (1, 1));
    assert!(!s.needs_log_read(log.high_watermark()));
    assert!(s.ack(0, 0));
    assert_eq!(s.ack_floor(), 40);
    for m in publish(&log, 2) {
        s.offer(m, 0);
    }
    assert_eq!(drain(&mut s, &log), [(40, false), (41, false)]);
}

#[test]
fn restart_with_spill_redelivers_exactly_the_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let log = scratch_log(&dir.path().join("log"));
    let path = dir.path().join("state.json");
    let mut s = Subscription::open(SubscriptionConfig::default(), Some(path.clone()), 0).unwrap();
    s.set_limits(limits(20, u64::MAX, 1_000));
    for m in publish(&log, 300) {
        s.offer(m, 0);
    }
    // 200 deliveries, acking all but every 7th offset; channels close now and then.
    let mut acked = BTreeSet::new();
    let mut delivered = BTreeSet::new();
    for _ in 0..200 {
        pump(&mut s, &log);
        let d = s.next(1, 0).unwrap();
        let o = d.message.offset;
        assert_eq!(d.redelivered, delivered.contains(&o));
        delivered.insert(o);
        if o % 7 != 0 {
            assert!(s.ack(o, 0));
            acked.insert(o);
        }
        if s.unacked_len() >= 15 {
            assert!(!s.release_consumer(1, 0).is_empty());
        }
    }
    assert!(s.settled_ranges().range_count() <= s.resident_len() as usize + 1);
    let (p, bytes) = s.checkpoint().unwrap();
    write_state(&p, &bytes).unwrap();
    drop(s);

    let mut r = Subscription::open(SubscriptionConfig::default(), Some(path), 0).unwrap();
    r.set_limits(limits(20, u64::MAX, 1_000));
    assert!(r.needs_log_read(log.high_watermark()));
    assert_eq!(r.len(), 300 - acked.len() as u64);
    let got = drain(&mut r, &log);
    let offsets: Vec<i64> = got.iter().map(|g| g.0).collect();
    let expected: Vec<i64> = (0..300).filter(|o| !acked.contains(o)).collect();
    assert_eq!(offsets, expected);
    for (o, redelivered) in got {
        assert_eq!(redelivered, delivered.contains(&o), "offset {o}");
    }
}

#[test]
fn reads_version_1_state_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    std::fs::write(
        &path,
        br#"{"floor":2,"settled":[4,5,7],"deliveries":[[3,1]]}"#,
    )
    .unwrap();
    let mut s = Subscription::open(SubscriptionConfig::default(), Some(path.clone()), 0).unwrap();
    assert_eq!(s.ack_floor(), 2);
    assert_eq!(
        s.settled_ranges().iter().collect::<Vec<_>>(),
        [(4, 6), (7, 8)]
    );
    for o in 0..9 {
        s.offer(msg(o, "x"), 0);
    }
    let got: Vec<(i64, bool)> = std::iter::from_fn(|| s.next(1, 0))
        .map(|d| (d.message.offset, d.redelivered))
        .collect();
    assert_eq!(got, [(2, false), (3, true), (6, false), (8, false)]);
    // Written back in the ranged format, which an older file name does not change.
    s.dirty = true;
    let (_, bytes) = s.checkpoint().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["version"], 2);
    assert!(v.get("settled").is_none());
    // A newer format is refused rather than misread.
    std::fs::write(&path, br#"{"version":99,"floor":0}"#).unwrap();
    assert!(Subscription::open(SubscriptionConfig::default(), Some(path), 0).is_err());
}

#[test]
fn held_bytes_follow_admits_and_settles() {
    // Other tests run concurrently and move the global; this one only checks its own
    // subscription's accounting, which feeds the global by the same amounts.
    let mut s = Subscription::open(SubscriptionConfig::default(), None, 0).unwrap();
    s.offer(msg(1, "later"), 0);
    assert_eq!(s.resident_bytes(), msg(1, "later").memory_bytes());
    s.offer(msg(0, "first"), 0);
    assert_eq!(s.resident_len(), 2);
    let d = s.next(1, 0).unwrap();
    s.ack(d.message.offset, 0);
    assert_eq!(s.resident_bytes(), msg(1, "later").memory_bytes());
    s.purge();
    assert_eq!(s.resident_bytes(), 0);
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    /// Append n records; offer them unless `silent` (another protocol wrote them).
    Publish {
        n: usize,
        silent: bool,
    },
    Pump,
    Deliver,
    /// Ack the i-th in-flight message (mod the count).
    Ack(usize),
    /// Nack with requeue the i-th in-flight message.
    Nack(usize),
    /// Checkpoint, drop, reopen from the state file.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..6, proptest::bool::weighted(0.2))
            .prop_map(|(n, silent)| Op::Publish { n, silent }),
        2 => Just(Op::Pump),
        4 => Just(Op::Deliver),
        3 => (0usize..8).prop_map(Op::Ack),
        1 => (0usize..8).prop_map(Op::Nack),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Under tiny caps, whatever the interleaving: the caps hold, the length is exact, the
    /// settled ranges stay bounded by what is resident, and in the end every message not
    /// acked is delivered once more, in offset order, redelivered iff delivered before.
    #[test]
    fn engine_matches_a_model(
        ops in proptest::collection::vec(op(), 1..60),
        messages_max in 1u64..6,
        unacked_max in 1u64..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = scratch_log(&dir.path().join("log"));
        let path = dir.path().join("state.json");
        let caps = limits(messages_max, u64::MAX, unacked_max);
        let mut s = Subscription::open(SubscriptionConfig::default(), Some(path.clone()), 0).unwrap();
        s.set_limits(caps);
        // Model: messages published and not acked; those delivered at least once.
        let mut outstanding = BTreeSet::new();
        let mut delivered = BTreeSet::new();
        let mut in_flight: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::Publish { n, silent } => {
                    for m in publish(&log, n) {
                        outstanding.insert(m.offset);
                        if !silent {
                            s.offer(m, 0);
                        }
                    }
                }
                Op::Pump => pump(&mut s, &log),
                Op::Deliver => {
                    if let Some(d) = s.next(1, 0) {
                        let o = d.message.offset;
                        prop_assert!(outstanding.contains(&o));
                        prop_assert!(!in_flight.contains(&o));
                        prop_assert_eq!(d.redelivered, delivered.contains(&o));
                        delivered.insert(o);
                        in_flight.push(o);
                    }
                }
                Op::Ack(i) if !in_flight.is_empty() => {
                    let o = in_flight.remove(i % in_flight.len());
                    prop_assert!(s.ack(o, 0));
                    outstanding.remove(&o);
                }
                Op::Nack(i) if !in_flight.is_empty() => {
                    let o = in_flight.remove(i % in_flight.len());
                    prop_assert!(s.nack(o, true, 0));
                }
                Op::Ack(_) | Op::Nack(_) => {}
                Op::Restart => {
                    s.dirty = true;
                    let (p, bytes) = s.checkpoint().unwrap();
                    write_state(&p, &bytes).unwrap();
                    drop(s);
                    s = Subscription::open(SubscriptionConfig::default(), Some(path.clone()), 0).unwrap();
                    s.set_limits(caps);
                    in_flight.clear();
                }
            }
            prop_assert!(s.resident_len() <= messages_max);
            prop_assert!(s.unacked_len() <= unacked_max);
            prop_assert_eq!(s.unacked_len() as usize, in_flight.len());
            s.needs_log_read(log.high_watermark());
            prop_assert_eq!(s.len(), outstanding.len() as u64);
            let below_cursor = s.settled_ranges().iter().filter(|r| r.0 < s.cursor()).count();
            prop_assert!(below_cursor as u64 <= s.resident_len() + 1);
            prop_assert!(s.ack_floor() <= outstanding.first().copied().unwrap_or(i64::MAX));
        }
        for o in in_flight.drain(..) {
            prop_assert!(s.nack(o, true, 0));
        }
        let got = drain(&mut s, &log);
        let offsets: Vec<i64> = got.iter().map(|g| g.0).collect();
        prop_assert_eq!(offsets, outstanding.iter().copied().collect::<Vec<_>>());
        for (o, redelivered) in got {
            prop_assert_eq!(redelivered, delivered.contains(&o));
        }
        prop_assert_eq!(s.ack_floor(), log.log_end_offset());
    }
}

#[test]
fn drop_head_with_priorities_drops_the_oldest_not_the_lowest() {
    let mut s = Subscription::open(
        SubscriptionConfig {
            max_length: Some(2),
            max_priority: Some(9),
            dead_letter: true,
            ..Default::default()
        },
        None,
        0,
    )
    .unwrap();
    for (o, p) in [(0, "5"), (1, "0"), (2, "9"), (3, "3")] {
        let mut m = msg(o, "x");
        m.headers.push(RecordHeader {
            key: headers::PRIORITY.to_string(),
            value: Some(Bytes::from(p)),
        });
        s.offer(m, 0);
    }
    let dead: Vec<i64> = s
        .take_dead_letters()
        .iter()
        .map(|d| d.message.offset)
        .collect();
    assert_eq!(dead, [0, 1]);
    let order: Vec<i64> = std::iter::from_fn(|| s.next(1, 0))
        .map(|d| d.message.offset)
        .collect();
    assert_eq!(order, [2, 3]);
}
