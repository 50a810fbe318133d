//! Broker-wide resource alarms (RabbitMQ's memory and disk alarms): while one is active,
//! front ends stop reading from publishing connections (AMQP sends `connection.blocked`).
//!
//! **Memory** is the bytes the broker *accounts* for holding, not the process RSS: what
//! every subscription engine holds resident ([`crate::subscription::held_bytes_total`]) plus
//! front-end buffers registered with [`ResourceAlarms::hold`] (AMQP publishes read but not yet
//! stored, deliveries queued for a socket). Those are the parts that grow with load and that
//! consumers shrink, so the alarm clears when queues drain. RSS would also count allocator
//! caches, the page cache-backed reads and one-off peaks, and glibc's allocator rarely hands
//! freed memory back, so an RSS alarm could stay raised after the queues emptied. RSS is still
//! reported beside it (from `/proc/self/statm`) for operators.
//!
//! **Disk** is the space free to unprivileged users on the data directory's file system
//! (`statvfs`, `f_bavail × f_frsize`), checked every `disk_check_interval_ms`; the alarm is
//! raised below `disk_free_limit_bytes` (default 50 MB, as RabbitMQ).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// How often the memory alarm is re-evaluated (cheap: a few atomic loads).
const MEMORY_CHECK_INTERVAL_MS: u64 = 50;

/// Share of physical memory the default memory watermark is.
const DEFAULT_WATERMARK_SHARE: f64 = 0.4;
/// Watermark when physical memory is unknown.
const FALLBACK_WATERMARK_BYTES: u64 = 1 << 30;

/// Alarm thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmConfig {
    /// Accounted memory at or above which the memory alarm is raised; 0 means 40 % of
    /// physical memory.
    pub memory_high_watermark_bytes: u64,
    /// Free disk space below which the disk alarm is raised; 0 disables it.
    pub disk_free_limit_bytes: u64,
    pub disk_check_interval_ms: u64,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            memory_high_watermark_bytes: 0,
            disk_free_limit_bytes: 50_000_000,
            disk_check_interval_ms: 1_000,
        }
    }
}

/// Which alarms are raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActiveAlarms {
    pub memory: bool,
    pub disk: bool,
}

impl ActiveAlarms {
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// RabbitMQ's reason text for `connection.blocked`.
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory and disk",
            (true, false) => "low on memory",
            (false, true) => "low on disk",
            (false, false) => "",
        }
    }
}

/// A snapshot for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlarmStatus {
    pub active: ActiveAlarms,
    pub memory_used_bytes: u64,
    pub memory_high_watermark_bytes: u64,
    /// Resident set size of the process, for comparison (0 where unknown).
    pub process_resident_bytes: u64,
    /// Free space on the data directory's file system at the last check (`None` before the
    /// first check or where unknown).
    pub disk_free_bytes: Option<u64>,
    pub disk_free_limit_bytes: u64,
}

/// The broker's resource alarms. Shared behind an `Arc`.
#[derive(Debug)]
pub struct ResourceAlarms {
    data_dir: PathBuf,
    memory_high_watermark: AtomicU64,
    disk_free_limit: AtomicU64,
    disk_check_interval_ms: AtomicU64,
    /// Front-end buffer bytes (see [`ResourceAlarms::hold`]).
    buffered: AtomicU64,
    /// Last measured free disk space; `u64::MAX` before the first check.
    disk_free: AtomicU64,
    state: watch::Sender<ActiveAlarms>,
}

impl ResourceAlarms {
    pub fn new(data_dir: impl Into<PathBuf>, config: AlarmConfig) -> ResourceAlarms {
        let alarms = ResourceAlarms {
            data_dir: data_dir.into(),
            memory_high_watermark: AtomicU64::new(0),
            disk_free_limit: AtomicU64::new(0),
            disk_check_interval_ms: AtomicU64::new(config.disk_check_interval_ms.max(10)),
            buffered: AtomicU64::new(0),
            disk_free: AtomicU64::new(u64::MAX),
            state: watch::channel(ActiveAlarms::default()).0,
        };
        alarms.set_limits(
            Some(config.memory_high_watermark_bytes),
            Some(config.disk_free_limit_bytes),
        );
        alarms
    }

    /// Changes the thresholds at run time (`None` keeps one); re-evaluates the memory alarm
    /// now and the disk alarm against the last measurement.
    pub fn set_limits(
        &self,
        memory_high_watermark_bytes: Option<u64>,
        disk_free_limit_bytes: Option<u64>,
    ) {
        if let Some(m) = memory_high_watermark_bytes {
            let m = if m == 0 { default_watermark_bytes() } else { m };
            self.memory_high_watermark.store(m, Ordering::Relaxed);
        }
        if let Some(d) = disk_free_limit_bytes {
            self.disk_free_limit.store(d, Ordering::Relaxed);
        }
        self.evaluate();
    }

    /// Counts `bytes` of a front-end buffer until the returned guard drops.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> HeldBytes {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
        HeldBytes {
            alarms: self.clone(),
            bytes,
        }
    }

    /// Adds to or removes from the front-end buffer count directly (for buffers whose size
    /// changes in place); every add must be matched by a release.
    pub fn add_buffered(&self, bytes: u64) {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn release_buffered(&self, bytes: u64) {
        let _ = self
            .buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Accounted memory: subscription engines plus front-end buffers.
    pub fn memory_used_bytes(&self) -> u64 {
        crate::subscription::held_bytes_total() + self.buffered.load(Ordering::Relaxed)
    }

    /// The alarms raised now.
    pub fn active(&self) -> ActiveAlarms {
        *self.state.borrow()
    }

    /// A receiver that sees every change of the raised alarms.
    pub fn subscribe(&self) -> watch::Receiver<ActiveAlarms> {
        self.state.subscribe()
    }

    pub fn status(&self) -> AlarmStatus {
        let disk_free = self.disk_free.load(Ordering::Relaxed);
        AlarmStatus {
            active: self.active(),
            memory_used_bytes: self.memory_used_bytes(),
            memory_high_watermark_bytes: self.memory_high_watermark.load(Ordering::Relaxed),
            process_resident_bytes: process_resident_bytes().unwrap_or(0),
            disk_free_bytes: (disk_free != u64::MAX).then_some(disk_free),
            disk_free_limit_bytes: self.disk_free_limit.load(Ordering::Relaxed),
        }
    }

    /// Recomputes both alarms from the current memory and the last disk measurement, and
    /// publishes a change.
    fn evaluate(&self) {
        let memory = self.memory_used_bytes() >= self.memory_high_watermark.load(Ordering::Relaxed);
        let limit = self.disk_free_limit.load(Ordering::Relaxed);
        let disk = limit > 0 && self.disk_free.load(Ordering::Relaxed) < limit;
        let next = ActiveAlarms { memory, disk };
        self.state.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            if cur.memory != next.memory {
                tracing::warn!(
                    raised = next.memory,
                    used_bytes = self.memory_used_bytes(),
                    watermark_bytes = self.memory_high_watermark.load(Ordering::Relaxed),
                    "memory resource alarm"
                );
            }
            if cur.disk != next.disk {
                tracing::warn!(
                    raised = next.disk,
                    free_bytes = self.disk_free.load(Ordering::Relaxed),
                    limit_bytes = limit,
                    "disk resource alarm"
                );
            }
            *cur = next;
            true
        });
    }

    /// Measures free space on the data directory (blocking: a `statvfs` call).
    pub fn check_disk(&self) {
        match disk_free_bytes(&self.data_dir) {
            Ok(free) => self.disk_free.store(free, Ordering::Relaxed),
            Err(e) => tracing::debug!(dir = %self.data_dir.display(), error = %e, "statvfs failed"),
        }
        self.evaluate();
    }

    /// Re-evaluates the memory alarm every 50 ms and measures the disk every
    /// `disk_check_interval_ms` (on a blocking thread), until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(MEMORY_CHECK_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_disk: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let interval =
                Duration::from_millis(self.disk_check_interval_ms.load(Ordering::Relaxed));
            if last_disk.is_none_or(|t| t.elapsed() >= interval) {
                last_disk = Some(tokio::time::Instant::now());
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.check_disk()).await;
            } else {
                self.evaluate();
            }
        }
    }
}

/// Front-end buffer bytes counted by the alarms until dropped.
#[derive(Debug)]
pub struct HeldBytes {
    alarms: Arc<ResourceAlarms>,
    bytes: u64,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.alarms.release_buffered(self.bytes);
    }
}

/// Free bytes for unprivileged users on the file system holding `path`.
pub fn disk_free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The process's resident set size from `/proc/self/statm` (Linux), in bytes.
pub fn process_resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size_bytes())
}

fn page_size_bytes() -> u64 {
    rustix::param::page_size() as u64
}

/// 40 % of physical memory (`MemTotal` in `/proc/meminfo`), or 1 GiB where unknown.
fn default_watermark_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match total {
        Some(t) => (t as f64 * DEFAULT_WATERMARK_SHARE) as u64,
        None => FALLBACK_WATERMARK_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_raise_and_clear_the_memory_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let alarms = Arc::new(ResourceAlarms::new(
            dir.path(),
            AlarmConfig {
                // Far above whatever subscriptions of concurrent tests hold.
                memory_high_watermark_bytes: 1 << 50,
                disk_free_limit_bytes: 0,
                disk_check_interval_ms: 1_000,
            },
        ));
        let mut rx = alarms.subscribe();
        assert!(!alarms.active().any());
        let held = alarms.hold(1 << 50);
        alarms.evaluate();
        assert!(alarms.active().memory && !alarms.active().disk);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().reason(), "low on memory");
        drop(held);
        alarms.evaluate();
        assert!(!alarms.active().any());
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn the_disk_alarm_follows_the_limit_against_measured_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let free = disk_free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let alarms = ResourceAlarms::new(
            dir.path(),
            AlarmConfig {
                memory_high_watermark_bytes: u64::MAX,
                disk_free_limit_bytes: u64::MAX,
                disk_check_interval_ms: 1_000,
            },
        );
        assert!(!alarms.active().disk, "nothing measured yet");
        alarms.check_disk();
        assert!(alarms.active().disk);
        assert_eq!(alarms.active().reason(), "low on disk");
        alarms.set_limits(None, Some(1));
        assert!(!alarms.active().disk);
        let s = alarms.status();
        assert!(s.disk_free_bytes.is_some_and(|f| f > 0));
        assert_eq!(s.disk_free_limit_bytes, 1);
        assert!(s.process_resident_bytes > 0);
    }

    #[test]
    fn a_zero_watermark_means_a_share_of_physical_memory() {
        let dir = tempfile::tempdir().unwrap();
        let alarms = ResourceAlarms::new(dir.path(), AlarmConfig::default());
        assert!(alarms.status().memory_high_watermark_bytes > 0);
        assert_eq!(alarms.status().disk_free_limit_bytes, 50_000_000);
    }
}
