//! Crash test: a child process appends with `flush=always` and reports acknowledgements; we
//! SIGKILL it at random moments, reopen the log, and check that every acknowledged batch is
//! there, intact, exactly once, at the offset it was acknowledged at, and that the log end is
//! consistent. `CONFLUX_CRASH_CYCLES` sets the number of cycles (default 20).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conflux_log::test_support::decode_all;
use conflux_log::{FlushPolicy, LogConfig, PartitionLog};

/// A tiny xorshift generator: no dependency, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn payload(seq: u64, record: usize) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend((0..(seq % 700) as usize + record).map(|i| (seq as usize + i) as u8));
    v
}

/// Reads the whole log and returns seq → base offset, checking contents and contiguity.
fn verify_log(dir: &std::path::Path) -> (HashMap<u64, i64>, i64) {
    let config = LogConfig {
        flush: FlushPolicy::None,
        segment_size_bytes_max: 256 << 10,
        ..Default::default()
    };
    let log = PartitionLog::open(dir, config).expect("reopen after kill");
    let mut found = HashMap::new();
    let mut next = 0;
    while next < log.log_end_offset() {
        let read = log.read(next, 4 << 20).unwrap();
        let batches = decode_all(&read.records);
        assert!(
            !batches.is_empty(),
            "no batch at offset {next} below log end {}",
            log.log_end_offset()
        );
        for (h, records) in batches {
            assert_eq!(h.base_offset, next, "offsets are contiguous");
            let seq =
                u64::from_be_bytes(records[0].value.as_ref().unwrap()[..8].try_into().unwrap());
            assert_eq!(
                records.len(),
                1 + (seq % 3) as usize,
                "batch {seq} record count"
            );
            for (i, r) in records.iter().enumerate() {
                assert_eq!(
                    r.value.as_deref(),
                    Some(&payload(seq, i)[..]),
                    "batch {seq} record {i} intact"
                );
            }
            assert!(
                found.insert(seq, h.base_offset).is_none(),
                "batch {seq} stored twice"
            );
            next = h.last_offset() + 1;
        }
    }
    assert_eq!(next, log.log_end_offset());
    let end = log.log_end_offset();
    drop(log); // unclean, like the child
    (found, end)
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let cycles: usize = std::env::var("CONFLUX_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60 + 3 * cycles as u64);
    let mut acked: HashMap<u64, i64> = HashMap::new();
    let mut total_acks = 0usize;
    for cycle in 0..cycles {
        assert!(
            Instant::now() < deadline,
            "crash test exceeded its time budget"
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_child"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Most kills land while appends are in flight (after the child reports it is ready);
        // every fourth lands at a random moment of start-up, i.e. possibly mid-recovery.
        let mut received = Vec::new();
        if cycle % 4 != 3 {
            let ready_by = Instant::now() + Duration::from_secs(30);
            while let Ok(line) =
                lines.recv_timeout(ready_by.saturating_duration_since(Instant::now()))
            {
                let ready = line.starts_with("ready");
                received.push(line);
                if ready {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        reader.join().unwrap();
        received.extend(lines.try_iter());
        for line in &received {
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["ack", seq, base] = parts[..] {
                let (Ok(seq), Ok(base)) = (seq.parse(), base.parse()) else {
                    continue;
                };
                assert!(
                    acked.insert(seq, base).is_none(),
                    "seq {seq} acknowledged twice"
                );
                total_acks += 1;
            }
        }
        let (found, end) = verify_log(dir.path());
        for (seq, base) in &acked {
            assert_eq!(
                found.get(seq),
                Some(base),
                "cycle {cycle}: acknowledged batch {seq} at offset {base} lost or moved"
            );
        }
        if cycle % 10 == 0 {
            println!(
                "cycle {cycle}: {total_acks} acks so far, log end {end}, {} batches",
                found.len()
            );
        }
    }
    assert!(total_acks > 0, "the child never acknowledged anything");
    println!("crash test done: {cycles} cycles, {total_acks} acknowledged batches verified");
}
