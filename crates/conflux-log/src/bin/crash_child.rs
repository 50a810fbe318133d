//! Crash-test helper: appends numbered batches with `flush=always` from several threads and
//! prints `ack <seq> <base_offset>` for each acknowledged one, until killed (by tests/crash.rs).
//!
//! Batch `seq` holds `1 + seq % 3` records whose values are [`payload`]`(seq, i)`; the parent
//! uses that to check every batch it finds is intact.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use conflux_log::test_support::{build_batch, decode_all, TestRecord};
use conflux_log::{FlushPolicy, LogConfig, PartitionLog};

const WRITER_THREADS: usize = 4;

fn payload(seq: u64, record: usize) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend((0..(seq % 700) as usize + record).map(|i| (seq as usize + i) as u8));
    v
}

fn batch(seq: u64) -> bytes::Bytes {
    let records: Vec<TestRecord> = (0..1 + (seq % 3) as usize)
        .map(|i| TestRecord {
            key: Some(seq.to_string().into_bytes()),
            value: Some(payload(seq, i)),
            timestamp_ms: seq as i64,
        })
        .collect();
    build_batch(&records)
}

/// The highest sequence number stored in the log, from the last batch's first record.
fn highest_seq(log: &PartitionLog) -> Option<u64> {
    let mut next = log.log_start_offset();
    let mut highest = None;
    while next < log.log_end_offset() {
        let read = log.read(next, 4 << 20).expect("read");
        for (h, records) in decode_all(&read.records) {
            let value = records[0].value.as_ref().expect("value");
            let seq = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
            highest = highest.max(Some(seq));
            next = h.last_offset() + 1;
        }
    }
    highest
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: crash_child <dir>");
    let config = LogConfig {
        flush: FlushPolicy::Always,
        segment_size_bytes_max: 256 << 10,
        ..Default::default()
    };
    let log = PartitionLog::open(std::path::Path::new(&dir), config).expect("open");
    let next_seq = Arc::new(AtomicU64::new(highest_seq(&log).map_or(0, |s| s + 1)));
    println!("ready {}", next_seq.load(Ordering::SeqCst));
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|_| {
            let (log, next_seq) = (log.clone(), next_seq.clone());
            std::thread::spawn(move || loop {
                let seq = next_seq.fetch_add(1, Ordering::SeqCst);
                let info = log.append_blocking(batch(seq), 0).expect("append");
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {seq} {}", info.base_offset).expect("stdout");
                out.flush().expect("flush");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
}
