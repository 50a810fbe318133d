//! The append path: validation, a shared pool of I/O threads, group commit, segment rolls.
//!
//! `append` validates batches on the caller's thread, queues them on the partition and hands the
//! partition to the shared pool (once: a `scheduled` flag keeps exactly one pool thread on a
//! partition, which makes it the single appender). That thread writes every queued request, then
//! issues one fdatasync for all of them (group commit), then answers each request's oneshot.
//! Requests that arrive during the fsync are picked up by the next round. Async callers only
//! await the oneshot, so runtime workers never block on disk.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use conflux_wire::batch::{self, BatchHeader};
use conflux_wire::DecodeError;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::checkpoint;
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::error::LogError;
use crate::log::{now_ms, AppendInfo, Inner, PartitionLog};
use crate::segment::Segment;

/// Duration of every segment fdatasync in this process, for `/metrics`.
pub static FSYNC_DURATION: conflux_metrics::Histogram = conflux_metrics::Histogram::new();

/// Threads in the shared I/O pool. Each blocks in write/fsync, not on CPU, so a few more than
/// cores is right; it bounds how many partitions fsync at once.
pub const IO_THREADS: usize = 4;
/// How often interval-flushed partitions are checked.
const FLUSH_TICK: Duration = Duration::from_millis(10);

pub(crate) struct AppendRequest {
    data: BytesMut,
    headers: Vec<BatchHeader>,
    leader_epoch: i32,
    reply: oneshot::Sender<Result<AppendInfo, LogError>>,
}

#[derive(Default)]
pub(crate) struct AppendQueue {
    pending: Vec<AppendRequest>,
    flush_requested: bool,
    /// A pool thread owns this partition's queue until it finds it empty.
    scheduled: bool,
}

/// State owned by whoever holds the writer lock.
#[derive(Default)]
pub(crate) struct WriterState {
    /// Segments written since their last fsync.
    pub dirty: Vec<Arc<Segment>>,
}

impl WriterState {
    fn mark_dirty(&mut self, segment: &Arc<Segment>) {
        if !self.dirty.iter().any(|s| Arc::ptr_eq(s, segment)) {
            self.dirty.push(segment.clone());
        }
    }
}

struct IoPool {
    ready: Mutex<VecDeque<Arc<Inner>>>,
    wake: Condvar,
    interval_logs: Mutex<Vec<Weak<Inner>>>,
}

fn pool() -> &'static IoPool {
    static POOL: OnceLock<IoPool> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let shared = POOL.get_or_init(|| IoPool {
        ready: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        interval_logs: Mutex::new(Vec::new()),
    });
    STARTED.get_or_init(|| {
        for i in 0..IO_THREADS {
            std::thread::Builder::new()
                .name(format!("conflux-log-io-{i}"))
                .spawn(|| io_thread(pool()))
                .expect("spawn log I/O thread");
        }
        std::thread::Builder::new()
            .name("conflux-log-flush-tick".into())
            .spawn(|| flush_ticker(pool()))
            .expect("spawn log flush ticker");
    });
    shared
}

fn io_thread(pool: &'static IoPool) {
    loop {
        let inner = {
            let mut ready = pool.ready.lock();
            loop {
                if let Some(inner) = ready.pop_front() {
                    break inner;
                }
                pool.wake.wait(&mut ready);
            }
        };
        inner.drain();
    }
}

fn flush_ticker(pool: &'static IoPool) {
    loop {
        std::thread::sleep(FLUSH_TICK);
        let due: Vec<Arc<Inner>> = {
            let mut logs = pool.interval_logs.lock();
            logs.retain(|w| w.strong_count() > 0);
            logs.iter()
                .filter_map(Weak::upgrade)
                .filter(|i| i.interval_flush_due())
                .collect()
        };
        for inner in due {
            inner.request_flush();
        }
    }
}

pub(crate) fn register_for_interval_flush(inner: &Arc<Inner>) {
    pool().interval_logs.lock().push(Arc::downgrade(inner));
}

/// Splits and CRC-checks the batches of one append. Nothing is stored if any batch is bad.
fn validate(batches: Bytes) -> Result<(BytesMut, Vec<BatchHeader>), LogError> {
    let mut rest = batches.clone();
    let mut headers = Vec::new();
    while let Some((_, one)) = batch::split_batch(&mut rest)? {
        headers.push(batch::verify_crc(&one)?);
    }
    if headers.is_empty() {
        return Err(LogError::InvalidBatch(DecodeError::Invalid(
            "an append needs at least one record batch",
        )));
    }
    Ok((BytesMut::from(batches), headers))
}

impl PartitionLog {
    /// Appends one or more complete v2 batches, assigning offsets and stamping `leader_epoch`.
    /// Resolves once the data is as durable as the flush policy promises.
    pub async fn append(&self, batches: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let rx = self.submit(batches, leader_epoch)?;
        rx.await.unwrap_or(Err(LogError::Closed))
    }

    /// `append` for threads outside an async runtime (panics if called on a runtime thread).
    pub fn append_blocking(
        &self,
        batches: Bytes,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let rx = self.submit(batches, leader_epoch)?;
        rx.blocking_recv().unwrap_or(Err(LogError::Closed))
    }

    /// Validates and queues an append now, returning a receiver for its completion. Callers that
    /// must order appends with other state (idempotent producers) enqueue under their own lock
    /// and await the receiver outside it.
    pub fn submit(
        &self,
        batches: Bytes,
        leader_epoch: i32,
    ) -> Result<oneshot::Receiver<Result<AppendInfo, LogError>>, LogError> {
        self.inner.check_open()?;
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        if self
            .latest_epoch()
            .is_some_and(|latest| leader_epoch < latest)
        {
            return Err(LogError::FencedLeaderEpoch {
                epoch: leader_epoch,
                latest: self.latest_epoch().unwrap_or(-1),
            });
        }
        let (data, headers) = validate(batches)?;
        let (reply, rx) = oneshot::channel();
        self.inner.enqueue(AppendRequest {
            data,
            headers,
            leader_epoch,
            reply,
        });
        Ok(rx)
    }

    /// Forces an fsync of everything written so far (any policy). Blocking.
    pub fn flush(&self) -> Result<(), LogError> {
        let mut w = self.inner.writer.lock();
        self.inner.sync_dirty(&mut w)
    }
}

impl Inner {
    fn enqueue(self: &Arc<Self>, request: AppendRequest) {
        let mut q = self.queue.lock();
        q.pending.push(request);
        self.schedule(q);
    }

    fn request_flush(self: &Arc<Self>) {
        let mut q = self.queue.lock();
        q.flush_requested = true;
        self.schedule(q);
    }

    fn schedule(self: &Arc<Self>, mut q: parking_lot::MutexGuard<'_, AppendQueue>) {
        if !q.scheduled {
            q.scheduled = true;
            drop(q);
            let pool = pool();
            pool.ready.lock().push_back(self.clone());
            pool.wake.notify_one();
        }
    }

    fn interval_flush_due(&self) -> bool {
        let FlushPolicy::Interval {
            interval_ms: Some(ms),
            ..
        } = self.config.read().flush
        else {
            return false;
        };
        self.unflushed_messages.load(Ordering::Relaxed) > 0
            && now_ms() - self.last_flush_ms.load(Ordering::Relaxed) >= ms as i64
            && !self.poisoned.load(Ordering::Relaxed)
    }

    /// Runs on a pool thread: serves queued requests until the queue is empty.
    fn drain(self: &Arc<Self>) {
        let mut w = self.writer.lock();
        loop {
            let (requests, flush_requested) = {
                let mut q = self.queue.lock();
                if q.pending.is_empty() && !q.flush_requested {
                    q.scheduled = false;
                    return;
                }
                (
                    std::mem::take(&mut q.pending),
                    std::mem::take(&mut q.flush_requested),
                )
            };
            self.process(&mut w, requests, flush_requested);
        }
    }

    fn process(&self, w: &mut WriterState, requests: Vec<AppendRequest>, flush_requested: bool) {
        let closed = self.closed.load(Ordering::Acquire);
        if closed || self.poisoned.load(Ordering::Acquire) {
            for r in requests {
                let _ = r.reply.send(Err(if closed {
                    LogError::Closed
                } else {
                    LogError::Poisoned
                }));
            }
            return;
        }
        let config = self.config.read().clone();
        let mut written = Vec::with_capacity(requests.len());
        let mut failure = None;
        for request in requests {
            if failure.is_some() {
                let _ = request.reply.send(Err(LogError::Poisoned));
                continue;
            }
            match self.write_request(
                w,
                &config,
                request.data,
                &request.headers,
                request.leader_epoch,
            ) {
                Ok(info) => written.push((request.reply, info)),
                Err(e) => {
                    let _ = request.reply.send(Err(self.poison("write", e)));
                    failure = Some(());
                }
            }
        }
        let sync_result = if failure.is_some() {
            Err(LogError::Poisoned)
        } else {
            self.sync_if_due(w, &config, flush_requested)
        };
        if let Err(e) = sync_result {
            written
                .into_iter()
                .for_each(|(reply, _)| drop(reply.send(Err(LogError::Poisoned))));
            let _ = e;
            return;
        }
        if self.hw_follows_log_end.load(Ordering::Acquire) {
            self.publish_high_watermark(self.log_end.load(Ordering::Acquire));
        }
        for (reply, info) in written {
            let _ = reply.send(Ok(info));
        }
    }

    fn sync_if_due(
        &self,
        w: &mut WriterState,
        config: &LogConfig,
        flush_requested: bool,
    ) -> Result<(), LogError> {
        let due = match config.flush {
            FlushPolicy::Always => true,
            FlushPolicy::Interval {
                interval_ms,
                messages,
            } => {
                flush_requested
                    || messages
                        .is_some_and(|n| self.unflushed_messages.load(Ordering::Relaxed) >= n)
                    || interval_ms.is_some_and(|ms| {
                        now_ms() - self.last_flush_ms.load(Ordering::Relaxed) >= ms as i64
                    })
            }
            FlushPolicy::None => flush_requested,
        };
        if due {
            self.sync_dirty(w)?;
        }
        Ok(())
    }

    /// fdatasyncs every segment written since its last sync. Any failure poisons the log.
    /// Each fdatasync's duration goes to [`FSYNC_DURATION`] (two relaxed atomic adds).
    pub(crate) fn sync_dirty(&self, w: &mut WriterState) -> Result<(), LogError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        if self.fail_next_sync.swap(false, Ordering::AcqRel) {
            let injected = std::io::Error::other("injected fsync failure");
            return Err(self.poison("fdatasync", LogError::Io(injected)));
        }
        for segment in &w.dirty {
            let started = std::time::Instant::now();
            let synced = segment.sync();
            FSYNC_DURATION.observe(started.elapsed());
            if let Err(e) = synced {
                return Err(self.poison("fdatasync", LogError::Io(e)));
            }
        }
        w.dirty.clear();
        self.unflushed_messages.store(0, Ordering::Relaxed);
        self.last_flush_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// After a failed write or fsync the page cache may have dropped our data (fsyncgate), so
    /// nothing written since the last good fsync can be promised: refuse everything from now on.
    pub(crate) fn poison(&self, what: &str, error: LogError) -> LogError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), %error, "{what} failed: partition log POISONED, no further appends will be acknowledged until an operator reopens it");
        LogError::Poisoned
    }

    fn write_request(
        &self,
        w: &mut WriterState,
        config: &LogConfig,
        mut data: BytesMut,
        headers: &[BatchHeader],
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let now = now_ms();
        self.maybe_roll(w, config, data.len() as u64, now)?;
        let segment = self.active_segment();
        let base_offset = self.log_end.load(Ordering::Acquire);
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;
        let mut next = base_offset;
        let mut position = 0;
        let mut stored = Vec::with_capacity(headers.len());
        let mut records = 0u64;
        for h in headers {
            let one = &mut data[position..position + h.size_bytes()];
            batch::set_base_offset(one, next);
            batch::set_leader_epoch(one, leader_epoch);
            if log_append_time {
                batch::stamp_log_append_time(one, now);
            }
            let mut h = *h;
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            if log_append_time {
                h.max_timestamp = now;
            }
            next = h.last_offset() + 1;
            position += h.size_bytes();
            records += h.record_count.max(0) as u64;
            stored.push(h);
        }
        {
            let mut epochs = self.epochs.lock();
            if epochs.assign(leader_epoch, base_offset) {
                epochs.save(&self.dir)?;
            }
        }
        segment.append(&data, &stored, config.index_interval_bytes.max(1))?;
        w.mark_dirty(&segment);
        self.log_end.store(next, Ordering::Release);
        self.unflushed_messages
            .fetch_add(records, Ordering::Relaxed);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: if log_append_time { now } else { -1 },
            log_start_offset: self.log_start.load(Ordering::Acquire),
        })
    }

    fn maybe_roll(
        &self,
        w: &mut WriterState,
        config: &LogConfig,
        incoming: u64,
        now: i64,
    ) -> Result<(), LogError> {
        let active = self.active_segment();
        let (size, created_ms) = {
            let m = active.meta.read();
            (m.size, m.created_ms)
        };
        if size == 0 {
            return Ok(());
        }
        let full = size + incoming > config.segment_size_limit();
        let old = config
            .segment_age_ms_max
            .is_some_and(|ms| now - created_ms >= ms as i64);
        let offsets_exhausted =
            self.log_end.load(Ordering::Acquire) - active.base_offset > i64::from(i32::MAX) / 2;
        if full || old || offsets_exhausted {
            self.roll(w, config, now)?;
        }
        Ok(())
    }

    /// Closes the active segment (synced, indexes saved) and starts a new one at the log end.
    pub(crate) fn roll(
        &self,
        w: &mut WriterState,
        config: &LogConfig,
        now: i64,
    ) -> Result<(), LogError> {
        let old = self.active_segment();
        let synced = config.flush != FlushPolicy::None;
        if synced {
            self.sync_dirty(w)?;
        }
        old.save_index()?;
        let base = self.log_end.load(Ordering::Acquire);
        let segment = Arc::new(Segment::create(&self.dir, base, now)?);
        checkpoint::sync_dir(&self.dir)?;
        self.segments.write().insert(base, segment);
        if synced {
            checkpoint::write_i64(&self.dir, checkpoint::RECOVERY_POINT_FILE, base)?;
        }
        Ok(())
    }
}
