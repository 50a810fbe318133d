//! `conflux bench disk` and `conflux bench net`: what this machine can do at most — sequential
//! file writes with and without fdatasync, and loopback TCP throughput — so broker figures can
//! be stated as a fraction of the limit.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::MB;

/// Block sizes tried by the disk test.
pub const DISK_BLOCK_SIZES: &[usize] = &[64 << 10, 256 << 10, 1 << 20, 4 << 20];

#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    pub block_bytes: usize,
    /// fdatasync after every block (what an fsync-per-append log pays).
    pub fdatasync: bool,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    /// Mean fdatasync time per block (0 without).
    pub sync_mean_ms: f64,
}

/// Writes sequentially to a fresh file in `dir`, each configuration for up to `per_test` or
/// `bytes_max`, whichever comes first. Without fdatasync the time includes one final
/// fdatasync, so the figure is what the device sustains rather than page-cache speed.
pub fn disk(dir: &Path, per_test: Duration, bytes_max: u64) -> std::io::Result<Vec<DiskResult>> {
    let mut results = Vec::new();
    for &fdatasync in &[false, true] {
        for &block in DISK_BLOCK_SIZES {
            let path = dir.join(format!("conflux-bench-disk-{block}-{fdatasync}.tmp"));
            let result = disk_one(&path, block, fdatasync, per_test, bytes_max);
            let _ = std::fs::remove_file(&path);
            results.push(result?);
        }
    }
    Ok(results)
}

fn disk_one(
    path: &Path,
    block: usize,
    fdatasync: bool,
    per_test: Duration,
    bytes_max: u64,
) -> std::io::Result<DiskResult> {
    let buf: Vec<u8> = (0..block).map(|i| (i * 7 % 251) as u8).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    let started = Instant::now();
    let (mut written, mut syncs, mut sync_time) = (0u64, 0u64, Duration::ZERO);
    while written < bytes_max && started.elapsed() < per_test {
        file.write_all(&buf)?;
        written += block as u64;
        if fdatasync {
            let t = Instant::now();
            file.sync_data()?;
            sync_time += t.elapsed();
            syncs += 1;
        }
    }
    file.sync_data()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(DiskResult {
        block_bytes: block,
        fdatasync,
        bytes: written,
        seconds,
        mb_per_s: written as f64 / MB / seconds,
        sync_mean_ms: if syncs > 0 {
            sync_time.as_secs_f64() * 1000.0 / syncs as f64
        } else {
            0.0
        },
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct NetResult {
    pub connections: usize,
    pub write_bytes: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

/// Loopback TCP: `connections` client threads each write `write_bytes` chunks for `per_test`
/// to a server thread per connection that reads and discards.
pub fn net(
    connections: usize,
    write_bytes: usize,
    per_test: Duration,
) -> std::io::Result<NetResult> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let started = Instant::now();
    for _ in 0..connections {
        let mut client = TcpStream::connect(addr)?;
        let (mut server, _) = listener.accept()?;
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            while let Ok(n) = server.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        }));
        writers.push(std::thread::spawn(move || {
            let buf = vec![0x5au8; write_bytes];
            while started.elapsed() < per_test {
                if client.write_all(&buf).is_err() {
                    break;
                }
            }
            let _ = client.shutdown(std::net::Shutdown::Write);
        }));
    }
    for w in writers {
        let _ = w.join();
    }
    let bytes: u64 = readers.into_iter().map(|r| r.join().unwrap_or(0)).sum();
    let seconds = started.elapsed().as_secs_f64();
    Ok(NetResult {
        connections,
        write_bytes,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / MB / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_writes_what_it_reports() {
        let dir = tempfile::tempdir().unwrap();
        let results = disk(dir.path(), Duration::from_millis(200), 1 << 20).unwrap();
        assert_eq!(results.len(), 2 * DISK_BLOCK_SIZES.len());
        for r in &results {
            assert!(r.bytes >= r.block_bytes as u64 && r.bytes % r.block_bytes as u64 == 0);
            assert!(r.mb_per_s > 0.0);
            if !r.fdatasync {
                assert_eq!(r.sync_mean_ms, 0.0);
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp files removed"
        );
    }

    #[test]
    fn net_moves_bytes() {
        let r = net(1, 64 << 10, Duration::from_millis(100)).unwrap();
        assert!(r.bytes >= 64 << 10);
        assert!(r.mb_per_s > 0.0);
    }
}
