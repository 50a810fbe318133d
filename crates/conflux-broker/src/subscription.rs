//! Subscriptions: queue semantics over a partition log, shared by every queueing front end
//! (AMQP queues today; SQS queues, JetStream consumers and Kafka share groups later).
//!
//! A [`Subscription`] is a cursor over one partition log plus per-message state: which
//! consumer a message is delivered to, its lease deadline, its delivery count, and individual
//! acks above an *ack floor* (every offset below the floor is settled). Messages reach it either
//! directly from the publisher that appended them ([`Subscription::offer`], no log read) or by
//! reading the log at the cursor ([`Subscription::load_from_log`], for records produced by other
//! protocols). Settled messages are acked, dropped or dead-lettered; dead letters are handed to
//! the owner through an outbox ([`Subscription::take_dead_letters`]) because routing them is the
//! front end's business.
//!
//! Policies: redelivery on nack / lease expiry after an exponential backoff
//! `min(base * 2^(deliveries-1), max)`, dead-lettering once a message was delivered more than
//! `delivery_limit` times, per-message and per-queue TTL, max-length / max-length-bytes with
//! overflow `drop-head` / `reject-publish` / `reject-publish-dlx`, priorities and delayed
//! delivery. Message attributes the engine needs come from record headers named in
//! [`headers`].
//!
//! Memory: the engine holds at most [`ResidentLimits`] messages / bytes (ready, delayed, in
//! flight and out-of-order offers together). Once full it stops admitting: further offers are
//! dropped and read back from the log at the cursor when room frees ("spilled"), so the log is
//! the spill. The queue's length still counts what is not loaded yet (`log end - cursor`,
//! minus offsets known settled), so max-length, overflow and the front ends' message counts
//! see the whole queue; priorities only order the resident messages (RabbitMQ's classic
//! queues paging to disk behave much the same). Settled offsets above the floor are kept as
//! merged ranges ([`SettledRanges`]), so their memory is bounded by the resident messages
//! between them, and `next` stops delivering once `unacked_max` messages are in flight.
//!
//! Persistence: the ack floor, the acks above it (as ranges) and the delivery counts of
//! delivered but unsettled messages are written (batched, by the owner calling
//! [`Subscription::checkpoint`]) to a small state file, atomically. After a restart the cursor
//! starts at the floor, skips the acked offsets, and every other message is delivered again —
//! flagged as redelivered when it had been delivered before.

mod leases;
#[cfg(test)]
mod memory_tests;
mod settled;

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use settled::SettledRanges;

use bytes::Bytes;
use conflux_wire::records::RecordHeader;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Record header names the engine reads. Values are ASCII decimal numbers.
pub mod headers {
    /// Message priority, 0–255 (capped by the subscription's `max_priority`).
    pub const PRIORITY: &str = "priority";
    /// Per-message time to live in milliseconds, counted from the record timestamp.
    pub const EXPIRATION: &str = "expiration";
    /// Delivery delay in milliseconds, counted from the record timestamp.
    pub const DELAY: &str = "x-delay";
}

/// What happens when a publish would exceed `max_length` / `max_length_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready message to make room.
    #[default]
    DropHead,
    /// Refuse the new message.
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

impl Overflow {
    pub fn parse(s: &str) -> Option<Overflow> {
        match s {
            "drop-head" => Some(Overflow::DropHead),
            "reject-publish" => Some(Overflow::RejectPublish),
            "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
            _ => None,
        }
    }
}

/// The policies of one subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionConfig {
    /// First redelivery delay in ms; 0 redelivers at once.
    pub backoff_base_ms: u64,
    /// Upper bound of the redelivery delay in ms.
    pub backoff_max_ms: u64,
    /// Dead-letter a message returned after more than this many deliveries.
    pub delivery_limit: Option<u32>,
    /// Queue-wide time to live in ms.
    pub message_ttl_ms: Option<i64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// Priorities above this are treated as this; `None` ignores priorities (FIFO).
    pub max_priority: Option<u8>,
    /// Whether settled-without-ack messages become dead letters (a DLQ is configured) or are
    /// dropped.
    pub dead_letter: bool,
    /// Lease length in ms for deliveries; `None`: held until acked, nacked or released.
    pub lease_ms: Option<i64>,
}

/// Why a message was dead-lettered (RabbitMQ's reason names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Expired => "expired",
            DeadReason::MaxLen => "maxlen",
            DeadReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// One message as the engine holds it: the record plus the attributes it acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    fn number(&self, name: &str) -> Option<i64> {
        std::str::from_utf8(self.header(name)?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Bytes counted against `max_length_bytes`: the body, as RabbitMQ counts.
    pub fn size_bytes(&self) -> u64 {
        self.value.as_ref().map_or(0, |v| v.len() as u64)
    }

    /// Memory the engine accounts for holding this message: key, value and headers plus a
    /// fixed allowance for the entry and index nodes around it.
    pub fn memory_bytes(&self) -> u64 {
        const ENTRY_OVERHEAD_BYTES: u64 = 160;
        const HEADER_OVERHEAD_BYTES: u64 = 48;
        let headers: u64 = self
            .headers
            .iter()
            .map(|h| h.key.len() as u64 + h.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>()
            + HEADER_OVERHEAD_BYTES * self.headers.len() as u64;
        ENTRY_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, |k| k.len() as u64)
            + self.size_bytes()
            + headers
    }

    /// A copy that owns its bytes, so a message loaded from the log does not pin the whole
    /// read buffer it was sliced from.
    fn detached(self) -> Message {
        let own = |b: Option<Bytes>| b.map(|b| Bytes::copy_from_slice(&b));
        Message {
            offset: self.offset,
            timestamp: self.timestamp,
            key: own(self.key),
            value: own(self.value),
            headers: self
                .headers
                .into_iter()
                .map(|h| RecordHeader {
                    key: h.key,
                    value: own(h.value),
                })
                .collect(),
        }
    }
}

/// How much one subscription holds in memory, and how many deliveries may be unacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentLimits {
    /// Messages held (ready, delayed, in flight, out-of-order offers); beyond this the log
    /// is the spill.
    pub messages_max: u64,
    /// Bytes held, by [`Message::memory_bytes`]; one message is admitted even if larger.
    pub bytes_max: u64,
    /// Deliveries in flight (delivered, not settled); `next` delivers nothing more at this
    /// count until one settles (JetStream's `max_ack_pending`).
    pub unacked_max: u64,
}

impl ResidentLimits {
    pub const DEFAULT_MESSAGES_MAX: u64 = 100_000;
    pub const DEFAULT_BYTES_MAX: u64 = 64 * 1024 * 1024;
    pub const DEFAULT_UNACKED_MAX: u64 = 50_000;
}

impl Default for ResidentLimits {
    fn default() -> Self {
        ResidentLimits {
            messages_max: Self::DEFAULT_MESSAGES_MAX,
            bytes_max: Self::DEFAULT_BYTES_MAX,
            unacked_max: Self::DEFAULT_UNACKED_MAX,
        }
    }
}

/// Bytes held by every subscription of the process (by [`Message::memory_bytes`]); the
/// broker's memory alarm reads it.
static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes held in memory by all subscription engines of this process.
pub fn held_bytes_total() -> u64 {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// Deliveries including this one.
    pub delivery_count: u32,
    pub redelivered: bool,
}

/// A message leaving the subscription without an ack, with the reason and its history.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: Arc<Message>,
    pub reason: DeadReason,
    pub delivery_count: u32,
    pub first_failure_ms: i64,
    pub last_failure_ms: i64,
}

/// Identifies a consumer within its subscription's owner.
pub type ConsumerId = u64;

#[derive(Debug, Clone)]
struct Entry {
    msg: Arc<Message>,
    /// `msg.memory_bytes()`, computed once.
    memory: u64,
    priority: u8,
    expires_at: Option<i64>,
    deliveries: u32,
    first_failure: Option<i64>,
    last_failure: Option<i64>,
}

#[derive(Debug)]
struct InFlight {
    entry: Entry,
    consumer: ConsumerId,
    lease_deadline: Option<i64>,
}

type ReadyKey = (Reverse<u8>, i64);

/// The state file's format version written now: 2 keeps settled offsets as ranges.
const STATE_VERSION: u32 = 2;

/// What is persisted. Version 1 files (no `version`) list every settled offset in
/// `settled`; version 2 writes `settled_ranges` as `[start, end)` pairs. Both are read.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedState {
    #[serde(default)]
    version: u32,
    floor: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    settled: Vec<i64>,
    #[serde(default)]
    settled_ranges: Vec<(i64, i64)>,
    #[serde(default)]
    deliveries: Vec<(i64, u32)>,
}

/// Result of [`Subscription::admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// The queue is full and refuses the message; `dead_letter` when it should be
    /// dead-lettered (`reject-publish-dlx`).
    Reject {
        dead_letter: bool,
    },
}

/// Counters for metrics and management APIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Resident ready messages.
    pub ready: u64,
    pub delayed: u64,
    pub unacked: u64,
    /// Messages in the log past the cursor, not loaded yet (approximate: offsets, minus
    /// those known settled). They are ready too: front ends add them to their ready counts.
    pub not_loaded: u64,
    /// Body bytes, resident plus (estimated) not loaded.
    pub bytes: u64,
    /// Memory held, by [`Message::memory_bytes`].
    pub resident_bytes: u64,
    pub ack_floor: i64,
    pub cursor: i64,
    pub dead_lettered: u64,
}

/// Queue semantics over one partition log. Not internally synchronised: the owner holds it
/// behind its own lock.
#[derive(Debug)]
pub struct Subscription {
    config: SubscriptionConfig,
    limits: ResidentLimits,
    state_path: Option<PathBuf>,
    cursor: i64,
    floor: i64,
    /// Settled offsets at or above the floor. Those at or above the cursor can only come
    /// from the state file (acked before a restart); `settled_ahead` counts them.
    settled: SettledRanges,
    settled_ahead: u64,
    /// Highest log end seen (offers, `needs_log_read`): what is past the cursor is queued
    /// but not loaded.
    known_end: Cell<i64>,
    /// Body bytes of offers dropped for lack of room, not loaded yet (an estimate: records
    /// other protocols appended count once loaded).
    not_loaded_bytes: u64,
    /// An offer was dropped for lack of room; the gap at the cursor is filled only by a log
    /// read. Cleared when the cursor reaches `known_end`.
    spilled: bool,
    /// The memory of the record at this offset, which the last log read found no room for.
    blocked_read: Option<(i64, u64)>,
    /// Delivery counts restored from disk for messages not loaded yet.
    restored_deliveries: HashMap<i64, u32>,
    pending_offers: BTreeMap<i64, Message>,
    pending_memory: u64,
    ready: BTreeMap<ReadyKey, Entry>,
    /// Expiry index over `ready`: (expires_at, ready key).
    expiry: BTreeSet<(i64, ReadyKey)>,
    delayed: BTreeMap<(i64, i64), Entry>,
    inflight: HashMap<i64, InFlight>,
    /// Resident messages (ready, delayed, in flight) and their body bytes and memory.
    count: u64,
    bytes: u64,
    memory: u64,
    dead: Vec<DeadLetter>,
    dead_total: u64,
    dirty: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.memory + self.pending_memory, Ordering::Relaxed);
    }
}

/// Largest number of pending out-of-order offers kept before they are dropped (they will be
/// read from the log instead).
const PENDING_OFFERS_MAX: usize = 65_536;

/// Largest decompressed batch a log read decodes.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

impl Subscription {
    /// Opens a subscription whose log starts at `log_start`, restoring persisted state from
    /// `state_path` when given and present. Limits are the defaults until
    /// [`Subscription::set_limits`].
    pub fn open(
        config: SubscriptionConfig,
        state_path: Option<PathBuf>,
        log_start: i64,
    ) -> std::io::Result<Subscription> {
        let mut persisted = PersistedState::default();
        if let Some(path) = &state_path {
            match std::fs::read(path) {
                Ok(raw) => {
                    persisted = serde_json::from_slice(&raw).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if persisted.version > STATE_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "subscription state version {} is newer than this build reads ({STATE_VERSION})",
                    persisted.version
                ),
            ));
        }
        let mut settled = SettledRanges::new();
        for o in persisted.settled {
            settled.insert(o);
        }
        for (lo, hi) in persisted.settled_ranges {
            settled.insert_range(lo, hi);
        }
        let mut floor = persisted.floor.max(log_start);
        settled.drop_below(floor);
        floor = settled.advance_floor(floor);
        Ok(Subscription {
            config,
            limits: ResidentLimits::default(),
            state_path,
            cursor: floor,
            floor,
            settled_ahead: settled.total(),
            settled,
            known_end: Cell::new(floor),
            not_loaded_bytes: 0,
            spilled: false,
            blocked_read: None,
            restored_deliveries: persisted
                .deliveries
                .into_iter()
                .filter(|(o, _)| *o >= floor)
                .collect(),
            pending_offers: BTreeMap::new(),
            pending_memory: 0,
            ready: BTreeMap::new(),
            expiry: BTreeSet::new(),
            delayed: BTreeMap::new(),
            inflight: HashMap::new(),
            count: 0,
            bytes: 0,
            memory: 0,
            dead: Vec::new(),
            dead_total: 0,
            dirty: false,
        })
    }

    pub fn config(&self) -> &SubscriptionConfig {
        &self.config
    }

    /// Replaces the memory and in-flight limits. Lowering them never evicts what is held:
    /// the engine admits nothing more until it is back under them.
    pub fn set_limits(&mut self, limits: ResidentLimits) {
        self.limits = ResidentLimits {
            messages_max: limits.messages_max.max(1),
            bytes_max: limits.bytes_max.max(1),
            unacked_max: limits.unacked_max.max(1),
        };
    }

    pub fn limits(&self) -> ResidentLimits {
        self.limits
    }

    /// Next log offset the subscription has not seen.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Every offset below this is settled; segments below it may be deleted.
    pub fn ack_floor(&self) -> i64 {
        self.floor
    }

    /// Messages in the queue: ready, delayed and unacked, including those not loaded yet.
    pub fn len(&self) -> u64 {
        self.count + self.not_loaded_len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Resident ready messages (see [`Subscription::not_loaded_len`] for the rest).
    pub fn ready_len(&self) -> u64 {
        self.ready.len() as u64
    }
    pub fn unacked_len(&self) -> u64 {
        self.inflight.len() as u64
    }

    /// Messages past the cursor (in the log or in out-of-order offers) not admitted yet:
    /// offsets up to the highest log end seen, minus those known settled. Approximate when
    /// other protocols wrote control records (transaction markers) into the log.
    pub fn not_loaded_len(&self) -> u64 {
        let ahead = (self.known_end.get() - self.cursor).max(0) as u64;
        ahead.saturating_sub(self.settled_ahead)
    }

    /// Messages that are or will become ready without outside input: resident ready plus
    /// not loaded (AMQP's `message_count`, SQS's `ApproximateNumberOfMessages`).
    pub fn ready_total(&self) -> u64 {
        self.ready_len() + self.not_loaded_len()
    }

    /// Settled ranges above the floor (their count is the memory they hold).
    pub fn settled_ranges(&self) -> &SettledRanges {
        &self.settled
    }

    /// Messages held in memory: resident plus out-of-order offers.
    pub fn resident_len(&self) -> u64 {
        self.count + self.pending_offers.len() as u64
    }

    /// Memory held, by [`Message::memory_bytes`].
    pub fn resident_bytes(&self) -> u64 {
        self.memory + self.pending_memory
    }

    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            ready: self.ready.len() as u64,
            delayed: self.delayed.len() as u64,
            unacked: self.inflight.len() as u64,
            not_loaded: self.not_loaded_len(),
            bytes: self.bytes + self.not_loaded_bytes,
            resident_bytes: self.resident_bytes(),
            ack_floor: self.floor,
            cursor: self.cursor,
            dead_lettered: self.dead_total,
        }
    }

    /// Whether a new message of `size_bytes` may be published, by the overflow policy.
    pub fn admission(&self, size_bytes: u64) -> Admission {
        let full = self.config.max_length.is_some_and(|m| self.len() >= m)
            || self
                .config
                .max_length_bytes
                .is_some_and(|m| self.queue_bytes() + size_bytes > m);
        match (full, self.config.overflow) {
            (false, _) | (true, Overflow::DropHead) => Admission::Accept,
            (true, Overflow::RejectPublish) => Admission::Reject { dead_letter: false },
            (true, Overflow::RejectPublishDlx) => Admission::Reject { dead_letter: true },
        }
    }

    /// Body bytes of the queue: resident plus the estimate for what is not loaded.
    fn queue_bytes(&self) -> u64 {
        self.bytes + self.not_loaded_bytes
    }

    /// Whether one more message of `memory_bytes` fits beside what is held; an empty
    /// subscription always takes one, however large.
    fn has_room(&self, memory_bytes: u64) -> bool {
        let held = self.resident_len();
        held == 0
            || (held < self.limits.messages_max
                && self.resident_bytes() + memory_bytes <= self.limits.bytes_max)
    }

    /// Whether a log read at the cursor could admit the record there (out-of-order offers
    /// held above the cursor give way to it). The record's size is known once a read found
    /// no room for it; until then any free byte counts as room.
    fn has_room_at_cursor(&self) -> bool {
        let next = match self.blocked_read {
            Some((offset, memory)) if offset == self.cursor => memory,
            _ => 1,
        };
        self.count == 0
            || (self.count < self.limits.messages_max
                && self.memory + next <= self.limits.bytes_max)
    }

    fn note_end(&self, end: i64) {
        if end > self.known_end.get() {
            self.known_end.set(end);
        }
    }

    /// Hands over a message just appended at `message.offset`. Offers may arrive out of
    /// order; offers below the cursor were already read from the log and are ignored. When
    /// the resident set is full the offer is dropped: the message is read from the log once
    /// there is room.
    pub fn offer(&mut self, message: Message, now_ms: i64) {
        self.note_end(message.offset.saturating_add(1));
        if message.offset < self.cursor || self.pending_offers.contains_key(&message.offset) {
            return;
        }
        let memory = message.memory_bytes();
        let fits = !self.spilled
            && self.pending_offers.len() < PENDING_OFFERS_MAX
            && self.has_room(memory);
        if fits {
            self.hold_pending(memory);
            self.pending_offers.insert(message.offset, message);
            self.drain_pending(now_ms);
        } else {
            self.spilled = true;
            self.not_loaded_bytes += message.size_bytes();
            // Counted in the length now: drop-head makes room by the same rule as an admit.
            self.enforce_limits(now_ms);
        }
    }

    /// Admits the out-of-order offers that continue at the cursor.
    fn drain_pending(&mut self, now_ms: i64) {
        while let Some(m) = self.pending_offers.remove(&self.cursor) {
            self.release_pending(m.memory_bytes());
            self.cursor += 1;
            self.admit(m, now_ms);
        }
        self.note_caught_up();
    }

    fn note_caught_up(&mut self) {
        if self.cursor >= self.known_end.get() {
            self.spilled = false;
            self.not_loaded_bytes = 0;
        }
    }

    /// Whether the log holds records the subscription has not seen, no offer fills, and
    /// there is room to load. Records `log_end` as the queue's known end.
    pub fn needs_log_read(&self, log_end: i64) -> bool {
        self.note_end(log_end);
        self.cursor < log_end
            && !self.pending_offers.contains_key(&self.cursor)
            && self.has_room_at_cursor()
    }

    /// Whether the gap at the cursor is known to be spill (offers were dropped for lack of
    /// room), so a log read should not wait for an offer to close it.
    pub fn spilled(&self) -> bool {
        self.spilled
    }

    /// Settles `[cursor, to)` without admitting anything (records that are gone or hold
    /// no message) and moves the cursor to `to`.
    fn skip_to(&mut self, to: i64) {
        if to <= self.cursor {
            return;
        }
        let known = self.settled.count_in(self.cursor, to);
        self.settled_ahead = self.settled_ahead.saturating_sub(known);
        let evicted: Vec<i64> = self.pending_offers.range(..to).map(|(o, _)| *o).collect();
        for o in evicted {
            if let Some(m) = self.pending_offers.remove(&o) {
                self.release_pending(m.memory_bytes());
            }
        }
        self.settle_range(self.cursor, to);
        self.cursor = to;
        if !self.restored_deliveries.is_empty() {
            self.restored_deliveries.retain(|o, _| *o >= to);
        }
    }

    /// Makes room for a log read at the cursor by giving up the highest out-of-order offer
    /// (it is in the log too). False when nothing is left to give up.
    fn evict_last_pending(&mut self) -> bool {
        match self.pending_offers.pop_last() {
            Some((_, m)) => {
                self.release_pending(m.memory_bytes());
                self.spilled = true;
                true
            }
            None => false,
        }
    }

    /// Reads up to `max_bytes` of records at the cursor from `log` (blocking pread) and
    /// admits them while there is room. Returns how many were admitted.
    pub fn load_from_log(
        &mut self,
        log: &conflux_log::PartitionLog,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<usize, conflux_log::LogError> {
        self.note_end(log.high_watermark());
        if self.cursor < log.log_start_offset() {
            // Retention removed records we never saw: they are gone.
            self.skip_to(log.log_start_offset());
        }
        let read = log.read(self.cursor, max_bytes)?;
        let mut chunk = read.records;
        let mut loaded = 0;
        'batches: while let Ok(Some((header, batch))) = conflux_wire::batch::split_batch(&mut chunk)
        {
            if header.last_offset() < self.cursor {
                continue;
            }
            let records = if header.is_control() {
                Vec::new()
            } else {
                match conflux_wire::records::decode_records(&batch, DECOMPRESSED_BATCH_BYTES_MAX) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(offset = header.base_offset, error = %e,
                            "subscription skips an undecodable batch");
                        Vec::new()
                    }
                }
            };
            for r in records {
                let offset = header.base_offset + i64::from(r.offset_delta);
                if offset < self.cursor {
                    continue;
                }
                let msg = Message {
                    offset,
                    timestamp: header.base_timestamp.saturating_add(r.timestamp_delta),
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                };
                let memory = msg.memory_bytes();
                while !self.has_room(memory) {
                    if !self.evict_last_pending() {
                        self.blocked_read = Some((offset, memory));
                        break 'batches;
                    }
                }
                self.skip_to(offset);
                if let Some(m) = self.pending_offers.remove(&offset) {
                    self.release_pending(m.memory_bytes());
                }
                self.cursor = offset + 1;
                self.not_loaded_bytes = self.not_loaded_bytes.saturating_sub(msg.size_bytes());
                self.admit(msg.detached(), now_ms);
                loaded += 1;
            }
            // Offsets of the batch with no record (control batches, compacted gaps).
            self.skip_to(header.last_offset() + 1);
        }
        self.drain_pending(now_ms);
        Ok(loaded)
    }

    fn hold_pending(&mut self, memory: u64) {
        self.pending_memory += memory;
        HELD_BYTES.fetch_add(memory, Ordering::Relaxed);
    }

    fn release_pending(&mut self, memory: u64) {
        self.pending_memory -= memory;
        HELD_BYTES.fetch_sub(memory, Ordering::Relaxed);
    }

    fn admit(&mut self, msg: Message, now_ms: i64) {
        if self.settled.contains(msg.offset) {
            // Acked before a restart: the cursor just passed it.
            self.settled_ahead = self.settled_ahead.saturating_sub(1);
            return;
        }
        let priority = match self.config.max_priority {
            Some(max) => (msg.number(headers::PRIORITY).unwrap_or(0).clamp(0, 255) as u8).min(max),
            None => 0,
        };
        let ttl = match (msg.number(headers::EXPIRATION), self.config.message_ttl_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at = ttl.map(|t| msg.timestamp.saturating_add(t.max(0)));
        let delay_until = msg
            .number(headers::DELAY)
            .filter(|d| *d > 0)
            .map(|d| msg.timestamp.saturating_add(d));
        let deliveries = self.restored_deliveries.remove(&msg.offset).unwrap_or(0);
        let entry = Entry {
            memory: msg.memory_bytes(),
            msg: Arc::new(msg),
            priority,
            expires_at,
            deliveries,
            first_failure: None,
            last_failure: None,
        };
        // A full queue with a reject policy refuses what slipped past `admission`.
        if self.config.overflow != Overflow::DropHead
            && self.admission(entry.msg.size_bytes()) != Admission::Accept
        {
            let dead = self.config.overflow == Overflow::RejectPublishDlx;
            self.settle(entry, dead.then_some(DeadReason::MaxLen), now_ms);
            return;
        }
        self.add_counted(&entry);
        match delay_until {
            Some(at) if at > now_ms => {
                self.delayed.insert((at, entry.msg.offset), entry);
            }
            _ => self.push_ready(entry),
        }
        self.enforce_limits(now_ms);
    }

    fn push_ready(&mut self, entry: Entry) {
        let key = (Reverse(entry.priority), entry.msg.offset);
        if let Some(at) = entry.expires_at {
            self.expiry.insert((at, key));
        }
        self.ready.insert(key, entry);
    }

    fn take_ready(&mut self, key: &ReadyKey) -> Option<Entry> {
        let entry = self.ready.remove(key)?;
        if let Some(at) = entry.expires_at {
            self.expiry.remove(&(at, *key));
        }
        Some(entry)
    }

    fn over_limit(&self) -> bool {
        self.config.max_length.is_some_and(|m| self.len() > m)
            || self
                .config
                .max_length_bytes
                .is_some_and(|m| self.queue_bytes() > m)
    }

    /// The oldest resident ready message: the first key of each priority level, oldest of
    /// those (at most 256 lookups, not a scan).
    fn ready_head(&self) -> Option<ReadyKey> {
        if self.config.max_priority.is_none() {
            return self.ready.keys().next().copied();
        }
        let mut head: Option<ReadyKey> = None;
        let mut from = *self.ready.keys().next()?;
        while let Some(key) = self.ready.range(from..).next().map(|(k, _)| *k) {
            if head.is_none_or(|h| key.1 < h.1) {
                head = Some(key);
            }
            let priority = key.0 .0;
            if priority == 0 {
                break;
            }
            from = (Reverse(priority - 1), i64::MIN);
        }
        head
    }

    /// Drop-head (or dead-letter) the oldest ready messages while the queue is over its
    /// max-length. Not-loaded messages are newer than every resident one, so the head is
    /// always resident; with none ready the queue stays over until one is.
    fn enforce_limits(&mut self, now_ms: i64) {
        while self.over_limit() {
            let Some(key) = self.ready_head() else {
                break;
            };
            if let Some(e) = self.take_ready(&key) {
                self.remove_counted(&e);
                self.settle(e, Some(DeadReason::MaxLen), now_ms);
            }
        }
    }

    fn add_counted(&mut self, e: &Entry) {
        let memory = e.memory;
        self.count += 1;
        self.bytes += e.msg.size_bytes();
        self.memory += memory;
        HELD_BYTES.fetch_add(memory, Ordering::Relaxed);
    }

    fn remove_counted(&mut self, e: &Entry) {
        let memory = e.memory.min(self.memory);
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(e.msg.size_bytes());
        self.memory -= memory;
        HELD_BYTES.fetch_sub(memory, Ordering::Relaxed);
    }

    /// Settles a message: acked (`reason` None) or dead-lettered / dropped.
    fn settle(&mut self, mut e: Entry, reason: Option<DeadReason>, now_ms: i64) {
        if let Some(reason) = reason {
            if self.config.dead_letter {
                e.first_failure.get_or_insert(now_ms);
                self.dead_total += 1;
                self.dead.push(DeadLetter {
                    message: e.msg.clone(),
                    reason,
                    delivery_count: e.deliveries,
                    first_failure_ms: e.first_failure.unwrap_or(now_ms),
                    last_failure_ms: now_ms,
                });
            }
        }
        self.settle_offset(e.msg.offset);
    }

    fn settle_offset(&mut self, offset: i64) {
        self.settle_range(offset, offset.saturating_add(1));
    }

    /// Settles `[lo, hi)` and moves the floor over the settled run it starts, if any.
    fn settle_range(&mut self, lo: i64, hi: i64) {
        self.dirty = true;
        let lo = lo.max(self.floor);
        if lo >= hi {
            return;
        }
        self.settled.insert_range(lo, hi);
        self.floor = self.settled.advance_floor(self.floor);
    }

    /// Moves due delayed messages to ready and settles expired ready messages.
    pub fn tick(&mut self, now_ms: i64) {
        while let Some((&(at, offset), _)) = self.delayed.first_key_value() {
            if at > now_ms {
                break;
            }
            if let Some(e) = self.delayed.remove(&(at, offset)) {
                self.push_ready(e);
            }
        }
        while let Some(&(at, key)) = self.expiry.first() {
            if at > now_ms {
                break;
            }
            if let Some(e) = self.take_ready(&key) {
                self.remove_counted(&e);
                self.settle(e, Some(DeadReason::Expired), now_ms);
            }
        }
        if self.config.lease_ms.is_some() {
            let expired: Vec<i64> = self
                .inflight
                .iter()
                .filter(|(_, f)| f.lease_deadline.is_some_and(|d| d <= now_ms))
                .map(|(o, _)| *o)
                .collect();
            for o in expired {
                self.nack(o, true, now_ms);
            }
        }
    }

    /// Earliest time something changes without outside input (a delayed message comes due,
    /// a message expires, a lease ends).
    pub fn next_wakeup(&self) -> Option<i64> {
        let delayed = self.delayed.keys().next().map(|k| k.0);
        let expiry = self.expiry.first().map(|k| k.0);
        let lease = self
            .inflight
            .values()
            .filter_map(|f| f.lease_deadline)
            .min();
        [delayed, expiry, lease].into_iter().flatten().min()
    }

    /// Whether the in-flight cap allows another delivery.
    pub fn can_deliver(&self) -> bool {
        (self.inflight.len() as u64) < self.limits.unacked_max
    }

    /// Takes the next ready message for `consumer` (highest priority, then oldest); none
    /// while `unacked_max` deliveries are in flight.
    pub fn next(&mut self, consumer: ConsumerId, now_ms: i64) -> Option<Delivery> {
        if !self.can_deliver() {
            return None;
        }
        loop {
            let key = *self.ready.keys().next()?;
            let mut e = self.take_ready(&key)?;
            if e.expires_at.is_some_and(|at| at <= now_ms) {
                self.remove_counted(&e);
                self.settle(e, Some(DeadReason::Expired), now_ms);
                continue;
            }
            e.deliveries += 1;
            self.dirty = true;
            let d = Delivery {
                message: e.msg.clone(),
                delivery_count: e.deliveries,
                redelivered: e.deliveries > 1,
            };
            let lease_deadline = self.config.lease_ms.map(|l| now_ms.saturating_add(l));
            self.inflight.insert(
                e.msg.offset,
                InFlight {
                    entry: e,
                    consumer,
                    lease_deadline,
                },
            );
            return Some(d);
        }
    }

    /// Acknowledges a delivered message. Returns false when it is not in flight.
    pub fn ack(&mut self, offset: i64, now_ms: i64) -> bool {
        let Some(f) = self.inflight.remove(&offset) else {
            return false;
        };
        self.remove_counted(&f.entry);
        self.settle(f.entry, None, now_ms);
        true
    }

    /// Negatively acknowledges a delivered message: requeued (after the backoff, unless the
    /// delivery limit is exceeded) or dead-lettered / dropped.
    pub fn nack(&mut self, offset: i64, requeue: bool, now_ms: i64) -> bool {
        let Some(f) = self.inflight.remove(&offset) else {
            return false;
        };
        let mut e = f.entry;
        e.first_failure.get_or_insert(now_ms);
        e.last_failure = Some(now_ms);
        let over_limit = self.config.delivery_limit.is_some_and(|l| e.deliveries > l);
        if !requeue || over_limit {
            self.remove_counted(&e);
            let reason = if requeue {
                DeadReason::DeliveryLimit
            } else {
                DeadReason::Rejected
            };
            self.settle(e, Some(reason), now_ms);
            return true;
        }
        self.dirty = true;
        let backoff = self.backoff_ms(e.deliveries);
        if backoff > 0 {
            let at = now_ms.saturating_add(backoff as i64);
            self.delayed.insert((at, e.msg.offset), e);
        } else {
            self.push_ready(e);
        }
        true
    }

    /// Negatively acknowledges a delivered message and requeues it after `delay_ms` instead of
    /// the configured backoff (JetStream `-NAK {"delay": ...}`); the delivery limit still
    /// applies. Returns false when it is not in flight.
    pub fn nack_with_delay(&mut self, offset: i64, delay_ms: u64, now_ms: i64) -> bool {
        let Some(f) = self.inflight.remove(&offset) else {
            return false;
        };
        let mut e = f.entry;
        e.first_failure.get_or_insert(now_ms);
        e.last_failure = Some(now_ms);
        if self.config.delivery_limit.is_some_and(|l| e.deliveries > l) {
            self.remove_counted(&e);
            self.settle(e, Some(DeadReason::DeliveryLimit), now_ms);
            return true;
        }
        self.dirty = true;
        if delay_ms > 0 {
            let at = now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
            self.delayed.insert((at, e.msg.offset), e);
        } else {
            self.push_ready(e);
        }
        true
    }

    /// Restarts the lease of a delivered message (JetStream `+WPI`, SQS
    /// ChangeMessageVisibility). Returns false when it is not in flight.
    pub fn extend_lease(&mut self, offset: i64, now_ms: i64) -> bool {
        let lease = self.config.lease_ms;
        match self.inflight.get_mut(&offset) {
            Some(f) => {
                f.lease_deadline = lease.map(|l| now_ms.saturating_add(l));
                true
            }
            None => false,
        }
    }

    /// `min(base * 2^(deliveries-1), max)`.
    pub fn backoff_ms(&self, deliveries: u32) -> u64 {
        if self.config.backoff_base_ms == 0 {
            return 0;
        }
        let exp = deliveries.saturating_sub(1).min(62);
        self.config
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.backoff_max_ms.max(self.config.backoff_base_ms))
    }

    /// Returns every message in flight to `consumer` to the queue (consumer gone, channel
    /// closed), counting as a failed delivery. Returned offsets in order.
    pub fn release_consumer(&mut self, consumer: ConsumerId, now_ms: i64) -> Vec<i64> {
        let mut offsets: Vec<i64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.consumer == consumer)
            .map(|(o, _)| *o)
            .collect();
        offsets.sort_unstable();
        for o in &offsets {
            self.nack(*o, true, now_ms);
        }
        offsets
    }

    /// Drops every ready and delayed message; returns how many.
    pub fn purge(&mut self) -> u64 {
        let ready = std::mem::take(&mut self.ready);
        let delayed = std::mem::take(&mut self.delayed);
        self.expiry.clear();
        let mut n = 0;
        for e in ready.into_values().chain(delayed.into_values()) {
            self.remove_counted(&e);
            self.settle_offset(e.msg.offset);
            n += 1;
        }
        // What is not loaded yet goes too: the cursor jumps to the known end.
        n += self.not_loaded_len();
        self.skip_to(self.known_end.get());
        self.note_caught_up();
        n
    }

    /// Takes the dead letters produced since the last call.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    /// Serialises the state if it changed since the last checkpoint; the owner writes the
    /// result with [`write_state`] (off the async runtime) — batching many changes per write.
    pub fn checkpoint(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !self.dirty {
            return None;
        }
        let path = self.state_path.clone()?;
        self.dirty = false;
        let mut deliveries: Vec<(i64, u32)> = self
            .inflight
            .values()
            .map(|f| &f.entry)
            .chain(self.ready.values())
            .chain(self.delayed.values())
            .filter(|e| e.deliveries > 0)
            .map(|e| (e.msg.offset, e.deliveries))
            .collect();
        deliveries.extend(self.restored_deliveries.iter().map(|(o, d)| (*o, *d)));
        let state = PersistedState {
            version: STATE_VERSION,
            floor: self.floor,
            settled: Vec::new(),
            settled_ranges: self.settled.iter().collect(),
            deliveries,
        };
        serde_json::to_vec(&state).ok().map(|b| (path, b))
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename). Blocking.
pub fn write_state(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Ack floors of all subscriptions by (topic, partition), so retention never deletes a
/// segment a subscription still needs.
#[derive(Debug, Default)]
pub struct FloorRegistry {
    floors: Mutex<HashMap<(String, i32), HashMap<u64, i64>>>,
}

impl FloorRegistry {
    /// Records subscription `id`'s floor on a partition.
    pub fn set(&self, topic: &str, partition: i32, id: u64, floor: i64) {
        self.floors
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .insert(id, floor);
    }

    pub fn remove(&self, topic: &str, partition: i32, id: u64) {
        let mut floors = self.floors.lock();
        let key = (topic.to_string(), partition);
        if let Some(m) = floors.get_mut(&key) {
            m.remove(&id);
            if m.is_empty() {
                floors.remove(&key);
            }
        }
    }

    /// The lowest floor on the partition, if any subscription reads it.
    pub fn min_needed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.floors
            .lock()
            .get(&(topic.to_string(), partition))
            .and_then(|m| m.values().copied().min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64, ts: i64, hdrs: &[(&str, &str)]) -> Message {
        Message {
            offset,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("m{offset}"))),
            headers: hdrs
                .iter()
                .map(|(k, v)| RecordHeader {
                    key: k.to_string(),
                    value: Some(Bytes::from(v.to_string())),
                })
                .collect(),
        }
    }

    fn sub(config: SubscriptionConfig) -> Subscription {
        Subscription::open(config, None, 0).unwrap()
    }

    #[test]
    fn acks_above_the_floor_advance_it_when_the_gap_closes() {
        let mut s = sub(SubscriptionConfig::default());
        for o in 0..4 {
            s.offer(msg(o, 0, &[]), 0);
        }
        let d: Vec<_> = (0..4).map(|_| s.next(1, 0).unwrap()).collect();
        assert_eq!(
            d.iter().map(|d| d.message.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(s.ack(1, 0) && s.ack(3, 0));
        assert_eq!(s.ack_floor(), 0);
        assert!(s.ack(0, 0));
        assert_eq!(s.ack_floor(), 2);
        assert!(s.ack(2, 0));
        assert_eq!(s.ack_floor(), 4);
        assert!(!s.ack(2, 0), "a second ack of the same message is refused");
        assert!(s.is_empty());
    }

    #[test]
    fn out_of_order_offers_are_delivered_in_offset_order() {
        let mut s = sub(SubscriptionConfig::default());
        s.offer(msg(1, 0, &[]), 0);
        assert!(s.next(1, 0).is_none(), "offset 0 is still missing");
        s.offer(msg(0, 0, &[]), 0);
        assert_eq!(s.next(1, 0).unwrap().message.offset, 0);
        assert_eq!(s.next(1, 0).unwrap().message.offset, 1);
    }

    #[test]
    fn nack_requeues_with_exponential_backoff() {
        let mut s = sub(SubscriptionConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 250,
            ..Default::default()
        });
        assert_eq!(
            (1..=4).map(|n| s.backoff_ms(n)).collect::<Vec<_>>(),
            [100, 200, 250, 250]
        );
        s.offer(msg(0, 0, &[]), 0);
        s.next(1, 0).unwrap();
        s.nack(0, true, 1000);
        assert!(s.next(1, 1050).is_none(), "still backing off");
        s.tick(1100);
        let d = s.next(1, 1100).unwrap();
        assert!(d.redelivered);
        assert_eq!(d.delivery_count, 2);
        s.nack(0, true, 2000);
        s.tick(2199);
        assert!(s.next(1, 2199).is_none());
        s.tick(2200);
        assert_eq!(s.next(1, 2200).unwrap().delivery_count, 3);
    }

    #[test]
    fn delivery_limit_dead_letters_with_history() {
        let mut s = sub(SubscriptionConfig {
            delivery_limit: Some(2),
            dead_letter: true,
            ..Default::default()
        });
        s.offer(msg(0, 0, &[]), 0);
        for t in [10, 20] {
            s.next(1, t).unwrap();
            s.nack(0, true, t);
            assert!(s.take_dead_letters().is_empty());
        }
        s.next(1, 30).unwrap();
        s.nack(0, true, 30);
        let dead = s.take_dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, DeadReason::DeliveryLimit);
        assert_eq!(dead[0].delivery_count, 3);
        assert_eq!(
            (dead[0].first_failure_ms, dead[0].last_failure_ms),
            (10, 30)
        );
        assert!(s.is_empty());
        assert_eq!(s.ack_floor(), 1);
    }

    #[test]
    fn reject_without_requeue_dead_letters_or_drops() {
        let mut with = sub(SubscriptionConfig {
            dead_letter: true,
            ..Default::default()
        });
        with.offer(msg(0, 0, &[]), 0);
        with.next(1, 0);
        with.nack(0, false, 5);
        assert_eq!(with.take_dead_letters()[0].reason, DeadReason::Rejected);
        let mut without = sub(SubscriptionConfig::default());
        without.offer(msg(0, 0, &[]), 0);
        without.next(1, 0);
        without.nack(0, false, 5);
        assert!(without.take_dead_letters().is_empty());
        assert_eq!(without.ack_floor(), 1);
    }

    #[test]
    fn ttl_per_queue_and_per_message_expires_to_the_dlq() {
        let mut s = sub(SubscriptionConfig {
            message_ttl_ms: Some(1000),
            dead_letter: true,
            ..Default::default()
        });
        s.offer(msg(0, 0, &[]), 0);
        s.offer(msg(1, 0, &[(headers::EXPIRATION, "100")]), 0);
        s.offer(msg(2, 0, &[(headers::EXPIRATION, "5000")]), 0);
        s.tick(100);
        let dead = s.take_dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].message.offset, dead[0].reason),
            (1, DeadReason::Expired)
        );
        s.tick(1000);
        let dead: Vec<_> = s
            .take_dead_letters()
            .iter()
            .map(|d| d.message.offset)
            .collect();
        assert_eq!(dead, [0, 2], "the queue TTL caps the message's own");
        assert!(s.is_empty());
    }

    #[test]
    fn overflow_modes() {
        let cfg = |overflow| SubscriptionConfig {
            max_length: Some(2),
            overflow,
            dead_letter: true,
            ..Default::default()
        };
        let mut drop_head = sub(cfg(Overflow::DropHead));
        for o in 0..3 {
            assert_eq!(drop_head.admission(2), Admission::Accept);
            drop_head.offer(msg(o, 0, &[]), 0);
        }
        let dead = drop_head.take_dead_letters();
        assert_eq!(
            (dead[0].message.offset, dead[0].reason),
            (0, DeadReason::MaxLen)
        );
        assert_eq!(drop_head.len(), 2);
        assert_eq!(drop_head.next(1, 0).unwrap().message.offset, 1);

        let mut reject = sub(cfg(Overflow::RejectPublish));
        reject.offer(msg(0, 0, &[]), 0);
        reject.offer(msg(1, 0, &[]), 0);
        assert_eq!(
            reject.admission(2),
            Admission::Reject { dead_letter: false }
        );
        let mut dlx = sub(cfg(Overflow::RejectPublishDlx));
        dlx.offer(msg(0, 0, &[]), 0);
        dlx.offer(msg(1, 0, &[]), 0);
        assert_eq!(dlx.admission(2), Admission::Reject { dead_letter: true });
        // One that slipped past the admission check is refused at admit time.
        dlx.offer(msg(2, 0, &[]), 0);
        assert_eq!(dlx.len(), 2);
        assert_eq!(dlx.take_dead_letters()[0].message.offset, 2);

        let mut bytes = sub(SubscriptionConfig {
            max_length_bytes: Some(4),
            ..Default::default()
        });
        bytes.offer(msg(0, 0, &[]), 0); // "m0": 2 bytes
        bytes.offer(msg(1, 0, &[]), 0);
        bytes.offer(msg(2, 0, &[]), 0);
        assert_eq!(bytes.len(), 2);
        assert_eq!(bytes.next(1, 0).unwrap().message.offset, 1);
    }

    #[test]
    fn priorities_then_fifo() {
        let mut s = sub(SubscriptionConfig {
            max_priority: Some(5),
            ..Default::default()
        });
        let prios = ["1", "9", "0", "3", "5"];
        for (o, p) in prios.iter().enumerate() {
            s.offer(msg(o as i64, 0, &[(headers::PRIORITY, p)]), 0);
        }
        let order: Vec<_> = (0..5)
            .map(|_| s.next(1, 0).unwrap().message.offset)
            .collect();
        // 9 is capped to 5, so offsets 1 and 4 tie and go oldest first.
        assert_eq!(order, [1, 4, 3, 0, 2]);
    }

    #[test]
    fn delayed_delivery() {
        let mut s = sub(SubscriptionConfig::default());
        s.offer(msg(0, 1000, &[(headers::DELAY, "500")]), 1000);
        s.offer(msg(1, 1000, &[]), 1000);
        assert_eq!(s.next(1, 1000).unwrap().message.offset, 1);
        assert!(s.next(1, 1000).is_none());
        assert_eq!(s.next_wakeup(), Some(1500));
        s.tick(1500);
        assert_eq!(s.next(1, 1500).unwrap().message.offset, 0);
    }

    #[test]
    fn nack_with_delay_and_lease_extension() {
        let mut s = sub(SubscriptionConfig {
            lease_ms: Some(100),
            delivery_limit: Some(1),
            ..Default::default()
        });
        s.offer(msg(0, 0, &[]), 0);
        s.offer(msg(1, 0, &[]), 0);
        s.next(1, 0).unwrap();
        assert!(s.nack_with_delay(0, 500, 10));
        // Offset 0 waits 500 ms; offset 1 goes first.
        assert_eq!(s.next(1, 10).unwrap().message.offset, 1);
        assert!(s.next(1, 400).is_none());
        // Extending offset 1's lease at 90 keeps it in flight past its first deadline.
        assert!(s.extend_lease(1, 90));
        s.tick(150);
        assert_eq!(s.unacked_len(), 1);
        s.tick(510);
        let d = s.next(1, 510).unwrap();
        assert_eq!((d.message.offset, d.delivery_count), (0, 2));
        // Past the delivery limit a delayed nack settles instead of requeueing.
        assert!(s.nack_with_delay(0, 0, 520));
        assert!(!s.extend_lease(0, 520));
        assert_eq!(s.next(1, 520).unwrap().message.offset, 1);
        assert!(s.next(1, 520).is_none());
        assert_eq!(s.ack_floor(), 1);
    }

    #[test]
    fn leases_expire_and_released_consumers_requeue() {
        let mut s = sub(SubscriptionConfig {
            lease_ms: Some(100),
            ..Default::default()
        });
        s.offer(msg(0, 0, &[]), 0);
        s.offer(msg(1, 0, &[]), 0);
        s.next(7, 0).unwrap();
        s.tick(100);
        let d = s.next(8, 100).unwrap();
        assert_eq!((d.message.offset, d.redelivered), (0, true));
        s.next(8, 100).unwrap();
        assert_eq!(s.release_consumer(8, 150), vec![0, 1]);
        assert_eq!(s.ready_len(), 2);
    }

    #[test]
    fn restart_redelivers_exactly_the_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.json");
        let mut s =
            Subscription::open(SubscriptionConfig::default(), Some(path.clone()), 0).unwrap();
        for o in 0..5 {
            s.offer(msg(o, 0, &[]), 0);
        }
        for _ in 0..4 {
            s.next(1, 0).unwrap();
        }
        s.ack(0, 0);
        s.ack(2, 0);
        let (p, bytes) = s.checkpoint().unwrap();
        write_state(&p, &bytes).unwrap();
        assert!(s.checkpoint().is_none(), "nothing changed since");

        let mut r = Subscription::open(SubscriptionConfig::default(), Some(path), 0).unwrap();
        assert_eq!(r.ack_floor(), 1);
        for o in 0..5 {
            r.offer(msg(o, 0, &[]), 0);
        }
        let again: Vec<_> = std::iter::from_fn(|| r.next(1, 0))
            .map(|d| (d.message.offset, d.redelivered))
            .collect();
        assert_eq!(again, [(1, true), (3, true), (4, false)]);
    }

    #[test]
    fn loads_records_from_the_log() {
        use conflux_wire::records::BatchBuilder;
        let dir = tempfile::tempdir().unwrap();
        let log =
            conflux_log::PartitionLog::open(dir.path(), conflux_log::LogConfig::default()).unwrap();
        let mut b = BatchBuilder::new(1000);
        b.append(1000, None, Some(Bytes::from_static(b"a")), vec![]);
        b.append(1001, None, Some(Bytes::from_static(b"b")), vec![]);
        log.append_blocking(b.build().unwrap(), 0).unwrap();
        let mut s = sub(SubscriptionConfig::default());
        assert!(s.needs_log_read(log.log_end_offset()));
        assert_eq!(s.load_from_log(&log, 1 << 20, 0).unwrap(), 2);
        assert_eq!(s.cursor(), 2);
        let d = s.next(1, 0).unwrap();
        assert_eq!(d.message.value.as_deref(), Some(&b"a"[..]));
        assert_eq!(d.message.timestamp, 1000);
        // An offer of a record already read is ignored.
        s.offer(msg(1, 0, &[]), 0);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn floor_registry_reports_the_slowest() {
        let r = FloorRegistry::default();
        r.set("q", 0, 1, 10);
        r.set("q", 0, 2, 4);
        assert_eq!(r.min_needed("q", 0), Some(4));
        r.remove("q", 0, 2);
        assert_eq!(r.min_needed("q", 0), Some(10));
        assert_eq!(r.min_needed("other", 0), None);
    }
}
