//! The transaction coordinator, protocol-agnostic: one state machine per transactional id,
//! stored durably as JSON records of the internal compacted topic `__transaction_state` (key:
//! the transactional id; value: the whole state) and replayed at start-up.
//!
//! States: Empty → Ongoing (partitions or consumer-group offsets added) → PrepareCommit /
//! PrepareAbort (persisted before any marker is written) → CompleteCommit / CompleteAbort
//! (persisted once a COMMIT/ABORT control batch is in every partition of the transaction and,
//! for a commit, its pending offsets are committed). A crash in between is finished at
//! start-up from the Prepare state, so a transaction is never torn: markers are idempotent
//! (a marker for a producer without an open transaction on a partition changes nothing).
//!
//! Fencing: every InitProducerId for a transactional id bumps the producer epoch (aborting an
//! ongoing transaction of the previous epoch first), and a transaction running longer than its
//! timeout is aborted with a bumped epoch, so the old producer's later requests are refused.
//!
//! Expiry: a transactional id without a transaction in progress whose state has not changed
//! for `transactional.id.expiration.ms` is removed with a tombstone, as Kafka does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use conflux_wire::records::BatchBuilder;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::offsets::CommittedOffset;
use crate::topics::Topic;

pub const TXN_STATE_TOPIC: &str = "__transaction_state";
/// `transaction.max.timeout.ms`.
pub const TXN_TIMEOUT_MS_MAX: i32 = 900_000;
pub const TXN_ID_LEN_MAX: usize = 1_024;
pub const PARTITIONS_PER_TXN_MAX: usize = 10_000;
pub const GROUPS_PER_TXN_MAX: usize = 100;
pub const PENDING_OFFSETS_PER_TXN_MAX: usize = 10_000;
pub const TRANSACTIONAL_IDS_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// Pending transactional offset commits: group → (topic, partition) → offset.
pub type PendingOffsets = BTreeMap<String, Vec<(String, i32, CommittedOffset)>>;

/// The durable state of one transactional id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub pending_offsets: PendingOffsets,
    /// When the current transaction started (-1 when none is ongoing).
    pub start_ms: i64,
    pub updated_ms: i64,
}

/// Why a transaction request was refused; each maps onto one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("transaction timeout must be between 1 and {TXN_TIMEOUT_MS_MAX} ms")]
    InvalidTransactionTimeout,
    #[error("a previous transaction of this transactional id is still completing")]
    ConcurrentTransactions,
    #[error("the producer has been fenced by a newer instance")]
    ProducerFenced,
    #[error("the producer id does not match the transactional id")]
    InvalidProducerIdMapping,
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("the transaction coordinator is loading")]
    CoordinatorLoadInProgress,
    #[error("unknown partitions: {0:?}")]
    UnknownPartitions(Vec<(String, i32)>),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<BrokerError> for TxnError {
    fn from(e: BrokerError) -> Self {
        TxnError::Storage(e.to_string())
    }
}

pub type TxnResult<T> = std::result::Result<T, TxnError>;

#[derive(Debug, Serialize, Deserialize)]
struct TxnKey {
    transactional_id: String,
}

/// The coordinator. All transactional ids are coordinated by this node.
#[derive(Debug)]
pub struct TransactionCoordinator {
    topic: Arc<Topic>,
    metas: Mutex<HashMap<String, TxnMeta>>,
    /// Serialises operations on one transactional id (held across awaits).
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Until start-up recovery finished, requests get COORDINATOR_LOAD_IN_PROGRESS.
    recovered: AtomicBool,
}

impl TransactionCoordinator {
    /// Replays `__transaction_state` into memory. Blocking.
    pub fn open(topic: Arc<Topic>) -> crate::Result<TransactionCoordinator> {
        let mut metas = HashMap::new();
        crate::replay::replay_records(&topic, |key, value| apply_record(&mut metas, key, value))?;
        tracing::info!(transactional_ids = metas.len(), "transaction state loaded");
        Ok(TransactionCoordinator {
            topic,
            metas: Mutex::new(metas),
            ops: Mutex::new(HashMap::new()),
            recovered: AtomicBool::new(false),
        })
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.ops.lock().entry(id.to_string()).or_default().clone()
    }

    fn get(&self, id: &str) -> Option<TxnMeta> {
        self.metas.lock().get(id).cloned()
    }

    async fn persist(&self, id: &str, meta: &TxnMeta) -> TxnResult<()> {
        let now = crate::now_ms();
        let mut builder = BatchBuilder::new(now);
        let key = TxnKey {
            transactional_id: id.to_string(),
        };
        builder.append(now, Some(encode(&key)), Some(encode(meta)), Vec::new());
        let batch = builder
            .build()
            .map_err(|e| TxnError::Storage(format!("building transaction state batch: {e}")))?;
        self.topic.append(0, batch).await?;
        self.metas.lock().insert(id.to_string(), meta.clone());
        Ok(())
    }

    fn check_ready(&self, id: &str) -> TxnResult<()> {
        if id.is_empty() || id.len() > TXN_ID_LEN_MAX {
            return Err(TxnError::InvalidRequest(format!(
                "a transactional id has 1 to {TXN_ID_LEN_MAX} bytes"
            )));
        }
        if !self.recovered.load(Ordering::Acquire) {
            return Err(TxnError::CoordinatorLoadInProgress);
        }
        Ok(())
    }

    /// Finishes start-up: re-opens the write permissions of ongoing transactions on their
    /// partitions and completes transactions caught between Prepare and Complete.
    pub async fn recover(&self, broker: &Broker) {
        let metas: Vec<(String, TxnMeta)> = self
            .metas
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, meta) in metas {
            match meta.state {
                TxnState::Ongoing => {
                    for (topic, index) in &meta.partitions {
                        if let Ok(p) = broker.partition(topic, *index) {
                            p.txns.lock().resume(meta.producer_id, meta.epoch);
                        }
                    }
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let commit = meta.state == TxnState::PrepareCommit;
                    let lock = self.op_lock(&id);
                    let _guard = lock.lock().await;
                    match self.finish(broker, &id, meta, commit).await {
                        Ok(_) => {
                            tracing::info!(transactional_id = %id, commit, "completed a transaction interrupted by a restart")
                        }
                        Err(e) => {
                            tracing::warn!(transactional_id = %id, error = %e, "completing an interrupted transaction failed; will retry")
                        }
                    }
                }
                _ => {}
            }
        }
        self.recovered.store(true, Ordering::Release);
    }

    /// InitProducerId for a transactional id: a new (id, epoch 0), or the id's producer with
    /// its epoch bumped (fencing the previous instance; an ongoing transaction is aborted
    /// first). `expected` is the (producer id, epoch) a client re-initialising itself sends.
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> TxnResult<(i64, i16)> {
        self.check_ready(id)?;
        if timeout_ms <= 0 || timeout_ms > TXN_TIMEOUT_MS_MAX {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let lock = self.op_lock(id);
        let _guard = lock.lock().await;
        let now = crate::now_ms();
        let meta = match self.get(id) {
            None => {
                if self.metas.lock().len() >= TRANSACTIONAL_IDS_MAX {
                    return Err(TxnError::InvalidRequest(format!(
                        "at most {TRANSACTIONAL_IDS_MAX} transactional ids"
                    )));
                }
                let producer_id = next_producer_id(broker).await?;
                TxnMeta {
                    producer_id,
                    epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    pending_offsets: BTreeMap::new(),
                    start_ms: -1,
                    updated_ms: now,
                }
            }
            Some(mut meta) => {
                let before = meta.clone();
                if let Some((pid, epoch)) = expected {
                    if pid != meta.producer_id || epoch != meta.epoch {
                        return Err(TxnError::ProducerFenced);
                    }
                }
                match meta.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        let commit = meta.state == TxnState::PrepareCommit;
                        meta = self.finish(broker, id, meta, commit).await?;
                    }
                    TxnState::Ongoing => {
                        // Abort with the new epoch: the old producer is fenced on every
                        // partition of its transaction by the markers themselves.
                        meta = self.abort_fencing(broker, id, meta).await?;
                    }
                    _ => {}
                }
                // The abort of an ongoing transaction already bumped the epoch (its markers
                // carry the new one); otherwise bump it now.
                if (meta.producer_id, meta.epoch) == (before.producer_id, before.epoch) {
                    let (pid, epoch) = bump(broker, meta.producer_id, meta.epoch).await?;
                    meta.producer_id = pid;
                    meta.epoch = epoch;
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.groups.clear();
                meta.pending_offsets.clear();
                meta.start_ms = -1;
                meta.updated_ms = now;
                meta
            }
        };
        self.persist(id, &meta).await?;
        Ok((meta.producer_id, meta.epoch))
    }

    fn check_producer(meta: Option<TxnMeta>, pid: i64, epoch: i16) -> TxnResult<TxnMeta> {
        let meta = meta.ok_or(TxnError::InvalidProducerIdMapping)?;
        if meta.producer_id != pid {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if meta.epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(meta)
    }

    /// Moves a transaction to Ongoing (a new one starts after Empty or Complete*).
    fn begin_or_continue(meta: &mut TxnMeta) -> TxnResult<()> {
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(()),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                meta.state = TxnState::Ongoing;
                meta.start_ms = crate::now_ms();
                meta.partitions.clear();
                meta.groups.clear();
                meta.pending_offsets.clear();
                Ok(())
            }
        }
    }

    /// AddPartitionsToTxn. With `verify_only`, only checks that they are already in it.
    pub async fn add_partitions(
        &self,
        broker: &Broker,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    ) -> TxnResult<()> {
        self.check_ready(id)?;
        let unknown: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(t, p)| broker.partition(t, *p).is_err())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(TxnError::UnknownPartitions(unknown));
        }
        let lock = self.op_lock(id);
        let _guard = lock.lock().await;
        let mut meta = Self::check_producer(self.get(id), pid, epoch)?;
        if verify_only {
            let missing = meta.state != TxnState::Ongoing
                || partitions.iter().any(|p| !meta.partitions.contains(p));
            return if missing {
                Err(TxnError::InvalidTxnState(
                    "the partitions are not in the ongoing transaction".into(),
                ))
            } else {
                Ok(())
            };
        }
        let before = meta.clone();
        Self::begin_or_continue(&mut meta)?;
        meta.partitions.extend(partitions.iter().cloned());
        if meta.partitions.len() > PARTITIONS_PER_TXN_MAX {
            return Err(TxnError::InvalidRequest(format!(
                "a transaction spans at most {PARTITIONS_PER_TXN_MAX} partitions"
            )));
        }
        if meta != before {
            meta.updated_ms = crate::now_ms();
            self.persist(id, &meta).await?;
        }
        for (topic, index) in &partitions {
            if let Ok(p) = broker.partition(topic, *index) {
                p.txns.lock().allow(pid, epoch);
            }
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub async fn add_offsets(&self, id: &str, pid: i64, epoch: i16, group: &str) -> TxnResult<()> {
        self.check_ready(id)?;
        if group.is_empty() || group.len() > crate::groups::GROUP_ID_LEN_MAX {
            return Err(TxnError::InvalidRequest("invalid group id".into()));
        }
        let lock = self.op_lock(id);
        let _guard = lock.lock().await;
        let mut meta = Self::check_producer(self.get(id), pid, epoch)?;
        let before = meta.clone();
        Self::begin_or_continue(&mut meta)?;
        meta.groups.insert(group.to_string());
        if meta.groups.len() > GROUPS_PER_TXN_MAX {
            return Err(TxnError::InvalidRequest(format!(
                "a transaction commits offsets of at most {GROUPS_PER_TXN_MAX} groups"
            )));
        }
        if meta != before {
            meta.updated_ms = crate::now_ms();
            self.persist(id, &meta).await?;
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets that become committed when the transaction commits.
    pub async fn txn_offset_commit(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> TxnResult<()> {
        self.check_ready(id)?;
        let lock = self.op_lock(id);
        let _guard = lock.lock().await;
        let mut meta = Self::check_producer(self.get(id), pid, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
            return Err(TxnError::InvalidTxnState(format!(
                "group {group} was not added to the ongoing transaction"
            )));
        }
        let pending = meta.pending_offsets.entry(group.to_string()).or_default();
        for (topic, partition, offset) in offsets {
            pending.retain(|(t, p, _)| !(*t == topic && *p == partition));
            pending.push((topic, partition, offset));
        }
        let total: usize = meta.pending_offsets.values().map(Vec::len).sum();
        if total > PENDING_OFFSETS_PER_TXN_MAX {
            return Err(TxnError::InvalidRequest(format!(
                "a transaction commits at most {PENDING_OFFSETS_PER_TXN_MAX} offsets"
            )));
        }
        meta.updated_ms = crate::now_ms();
        self.persist(id, &meta).await
    }

    /// EndTxn: commits or aborts the ongoing transaction. A retry of a finished EndTxn with
    /// the same outcome succeeds again.
    pub async fn end_txn(
        &self,
        broker: &Broker,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> TxnResult<()> {
        self.check_ready(id)?;
        let lock = self.op_lock(id);
        let _guard = lock.lock().await;
        let meta = Self::check_producer(self.get(id), pid, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut meta = meta;
                meta.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                meta.updated_ms = crate::now_ms();
                self.persist(id, &meta).await?;
                self.finish(broker, id, meta, commit).await.map(|_| ())
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (state, _) => Err(TxnError::InvalidTxnState(format!(
                "cannot {} a transaction in state {}",
                if commit { "commit" } else { "abort" },
                state.name()
            ))),
        }
    }

    /// Writes the markers (and, for a commit, the pending offsets) of a transaction in a
    /// Prepare state, then persists its completion. Caller holds the id's op lock.
    async fn finish(
        &self,
        broker: &Broker,
        id: &str,
        mut meta: TxnMeta,
        commit: bool,
    ) -> TxnResult<TxnMeta> {
        for (topic, index) in &meta.partitions {
            let Some(t) = broker.topic(topic) else {
                continue; // deleted since: nothing to mark
            };
            t.append_txn_marker(*index, meta.producer_id, meta.epoch, commit)
                .await?;
        }
        if commit {
            for (group, offsets) in &meta.pending_offsets {
                broker.offsets.commit(group, offsets.clone()).await?;
            }
        }
        meta.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        meta.partitions.clear();
        meta.groups.clear();
        meta.pending_offsets.clear();
        meta.start_ms = -1;
        meta.updated_ms = crate::now_ms();
        self.persist(id, &meta).await?;
        Ok(meta)
    }

    /// Aborts an ongoing transaction with a bumped epoch, fencing its producer.
    async fn abort_fencing(
        &self,
        broker: &Broker,
        id: &str,
        mut meta: TxnMeta,
    ) -> TxnResult<TxnMeta> {
        let (pid, epoch) = bump_in_place(meta.producer_id, meta.epoch);
        if pid != meta.producer_id {
            // Epoch exhausted: abort with the last epoch; the bump to a new id follows.
            meta.state = TxnState::PrepareAbort;
        } else {
            meta.epoch = epoch;
            meta.state = TxnState::PrepareAbort;
        }
        meta.updated_ms = crate::now_ms();
        self.persist(id, &meta).await?;
        self.finish(broker, id, meta, false).await
    }

    /// Aborts transactions older than their timeout (fencing their producers) and retries
    /// completions that failed. Called periodically.
    pub async fn expire(&self, broker: &Broker, now_ms: i64) {
        if !self.recovered.load(Ordering::Acquire) {
            return;
        }
        let due: Vec<String> = self
            .metas
            .lock()
            .iter()
            .filter(|(_, m)| {
                (m.state == TxnState::Ongoing
                    && m.start_ms >= 0
                    && now_ms - m.start_ms > i64::from(m.timeout_ms))
                    || matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let lock = self.op_lock(&id);
            let _guard = lock.lock().await;
            let Some(meta) = self.get(&id) else { continue };
            let result = match meta.state {
                TxnState::Ongoing
                    if meta.start_ms >= 0
                        && crate::now_ms() - meta.start_ms > i64::from(meta.timeout_ms) =>
                {
                    tracing::info!(transactional_id = %id, producer_id = meta.producer_id, "aborting a transaction that exceeded its timeout");
                    self.abort_fencing(broker, &id, meta).await.map(|_| ())
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let commit = meta.state == TxnState::PrepareCommit;
                    self.finish(broker, &id, meta, commit).await.map(|_| ())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(transactional_id = %id, error = %e, "ending a transaction failed; will retry");
            }
        }
    }

    /// Removes transactional ids with no transaction in progress (Empty, CompleteCommit,
    /// CompleteAbort) whose state is older than `expiration_ms`, writing a tombstone for each.
    /// Returns how many were removed. Called periodically.
    pub async fn expire_transactional_ids(&self, now_ms: i64, expiration_ms: i64) -> usize {
        if !self.recovered.load(Ordering::Acquire) {
            return 0;
        }
        let expired = |m: &TxnMeta| {
            matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now_ms.saturating_sub(m.updated_ms) >= expiration_ms
        };
        let due: Vec<String> = self
            .metas
            .lock()
            .iter()
            .filter(|(_, m)| expired(m))
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed = 0;
        for id in due {
            let lock = self.op_lock(&id);
            let _guard = lock.lock().await;
            if !self.get(&id).is_some_and(|m| expired(&m)) {
                continue;
            }
            if let Err(e) = self.remove(&id).await {
                tracing::warn!(transactional_id = %id, error = %e, "expiring a transactional id failed; will retry");
                continue;
            }
            {
                // Drop the id's op lock too, unless another request already waits on it.
                let mut ops = self.ops.lock();
                if Arc::strong_count(&lock) == 2 {
                    ops.remove(&id);
                }
            }
            tracing::info!(transactional_id = %id, "transactional id expired");
            removed += 1;
        }
        removed
    }

    /// Writes a tombstone for `id`, then forgets it.
    async fn remove(&self, id: &str) -> TxnResult<()> {
        let now = crate::now_ms();
        let mut builder = BatchBuilder::new(now);
        let key = TxnKey {
            transactional_id: id.to_string(),
        };
        builder.append(now, Some(encode(&key)), None, Vec::new());
        let batch = builder
            .build()
            .map_err(|e| TxnError::Storage(format!("building transaction state batch: {e}")))?;
        self.topic.append(0, batch).await?;
        self.metas.lock().remove(id);
        Ok(())
    }

    /// The state of a transactional id.
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.get(id)
    }

    /// (transactional id, producer id, state) of every transactional id, sorted by id.
    pub fn list(&self) -> Vec<(String, i64, TxnState, i64)> {
        let mut all: Vec<_> = self
            .metas
            .lock()
            .iter()
            .map(|(id, m)| (id.clone(), m.producer_id, m.state, m.start_ms))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Whether an ongoing transaction holds an uncommitted offset for this group partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.metas.lock().values().any(|m| {
            m.pending_offsets
                .get(group)
                .is_some_and(|os| os.iter().any(|(t, p, _)| t == topic && *p == partition))
        })
    }
}

/// A fresh producer id from the allocator (which may fsync a new block).
async fn next_producer_id(broker: &Arc<Broker>) -> TxnResult<i64> {
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.producer_ids.next())
        .await
        .map_err(|e| TxnError::Storage(e.to_string()))?
        .map_err(TxnError::from)
}

/// The next (producer id, epoch): the epoch + 1, or a new id when the epoch is exhausted
/// (signalled by returning a different id; the caller allocates it).
fn bump_in_place(pid: i64, epoch: i16) -> (i64, i16) {
    if epoch >= i16::MAX - 1 {
        (-1, 0)
    } else {
        (pid, epoch + 1)
    }
}

async fn bump(broker: &Arc<Broker>, pid: i64, epoch: i16) -> TxnResult<(i64, i16)> {
    match bump_in_place(pid, epoch) {
        (-1, _) => Ok((next_producer_id(broker).await?, 0)),
        other => Ok(other),
    }
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn apply_record(metas: &mut HashMap<String, TxnMeta>, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(key) = key.and_then(|k| serde_json::from_slice::<TxnKey>(k).ok()) else {
        tracing::warn!("skipping undecodable key in {TXN_STATE_TOPIC}");
        return;
    };
    match value.map(serde_json::from_slice::<TxnMeta>) {
        Some(Ok(m)) => {
            metas.insert(key.transactional_id, m);
        }
        None => {
            metas.remove(&key.transactional_id);
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "skipping undecodable value in {TXN_STATE_TOPIC}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerConfig, NewTopic};

    fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
        let mut b = BatchBuilder::new(0)
            .with_producer(pid, epoch, seq)
            .with_transactional(true);
        b.append(0, None, Some(Bytes::from(value.to_string())), Vec::new());
        b.build().unwrap()
    }

    fn plain_batch(value: &str) -> Bytes {
        let mut b = BatchBuilder::new(0);
        b.append(0, None, Some(Bytes::from(value.to_string())), Vec::new());
        b.build().unwrap()
    }

    async fn open(dir: &std::path::Path) -> Arc<Broker> {
        let broker = Broker::open(BrokerConfig::new(dir)).unwrap();
        broker.txns.recover(&broker).await;
        broker
    }

    /// A recovered broker with a one-partition topic `name`.
    async fn open_with_topic(dir: &std::path::Path, name: &str) -> Arc<Broker> {
        let broker = open(dir).await;
        let topic = NewTopic {
            name: name.into(),
            partitions: Some(1),
            ..Default::default()
        };
        broker.create_topic(topic, false).unwrap();
        broker
    }

    fn committed_values(broker: &Broker, topic: &str) -> (Vec<String>, i64, usize) {
        let p = broker.partition(topic, 0).unwrap();
        let (read, aborted) = p.read(0, 1 << 20, true).unwrap();
        let mut out = Vec::new();
        let mut rest = read.records.clone();
        while let Ok(Some((h, batch))) = conflux_wire::batch::split_batch(&mut rest) {
            let is_aborted = aborted.iter().any(|a| {
                a.producer_id == h.producer_id
                    && (a.first_offset..=a.last_offset).contains(&h.base_offset)
            });
            if h.is_control() || (h.is_transactional() && is_aborted) {
                continue;
            }
            for r in conflux_wire::records::decode_records(&batch, 1 << 20).unwrap() {
                out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        (out, read.last_stable_offset, aborted.len())
    }

    #[tokio::test]
    async fn commit_abort_fence_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), "t").await;
        let topic = broker.topic("t").unwrap();
        let txns = &broker.txns;
        assert_eq!(
            txns.init_producer_id(&broker, "tx", 0, None).await,
            Err(TxnError::InvalidTransactionTimeout)
        );
        let (pid, epoch) = txns
            .init_producer_id(&broker, "tx", 60_000, None)
            .await
            .unwrap();
        // Writing before the partition is added is refused.
        assert!(matches!(
            topic.append(0, txn_batch(pid, epoch, 0, "early")).await,
            Err(BrokerError::InvalidTxnState(_))
        ));
        // Transaction 1: committed, with an offset commit.
        let part = vec![("t".to_string(), 0)];
        txns.add_partitions(&broker, "tx", pid, epoch, part.clone(), false)
            .await
            .unwrap();
        topic
            .append(0, txn_batch(pid, epoch, 0, "a"))
            .await
            .unwrap();
        topic.append(0, plain_batch("plain")).await.unwrap();
        let (vals, lso, _) = committed_values(&broker, "t");
        assert!(vals.is_empty(), "nothing visible while open: {vals:?}");
        assert_eq!(lso, 0);
        txns.add_offsets("tx", pid, epoch, "g").await.unwrap();
        let off = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        };
        txns.txn_offset_commit("tx", pid, epoch, "g", vec![("in".into(), 0, off)])
            .await
            .unwrap();
        assert!(txns.has_pending_offset("g", "in", 0));
        assert!(broker.offsets.fetch("g", "in", 0).is_none());
        txns.end_txn(&broker, "tx", pid, epoch, true).await.unwrap();
        // A retried EndTxn succeeds; the opposite outcome does not.
        txns.end_txn(&broker, "tx", pid, epoch, true).await.unwrap();
        assert!(matches!(
            txns.end_txn(&broker, "tx", pid, epoch, false).await,
            Err(TxnError::InvalidTxnState(_))
        ));
        assert_eq!(broker.offsets.fetch("g", "in", 0).unwrap().offset, 42);
        assert!(!txns.has_pending_offset("g", "in", 0));
        let (vals, _, _) = committed_values(&broker, "t");
        assert_eq!(vals, vec!["a", "plain"]);
        // Transaction 2: aborted.
        txns.add_partitions(&broker, "tx", pid, epoch, part.clone(), false)
            .await
            .unwrap();
        topic
            .append(0, txn_batch(pid, epoch, 1, "b"))
            .await
            .unwrap();
        txns.end_txn(&broker, "tx", pid, epoch, false)
            .await
            .unwrap();
        let (vals, lso, aborted) = committed_values(&broker, "t");
        assert_eq!(vals, vec!["a", "plain"]);
        assert_eq!(aborted, 1);
        assert_eq!(lso, broker.partition("t", 0).unwrap().log.high_watermark());
        // Transaction 3: left open, then a new instance fences the old producer.
        txns.add_partitions(&broker, "tx", pid, epoch, part.clone(), false)
            .await
            .unwrap();
        topic
            .append(0, txn_batch(pid, epoch, 2, "c"))
            .await
            .unwrap();
        let (pid2, epoch2) = txns
            .init_producer_id(&broker, "tx", 60_000, None)
            .await
            .unwrap();
        assert_eq!((pid2, epoch2), (pid, epoch + 1));
        assert!(matches!(
            topic.append(0, txn_batch(pid, epoch, 3, "zombie")).await,
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert_eq!(
            txns.end_txn(&broker, "tx", pid, epoch, true).await,
            Err(TxnError::ProducerFenced)
        );
        let (vals, _, aborted) = committed_values(&broker, "t");
        assert_eq!(
            vals,
            vec!["a", "plain"],
            "the fenced transaction was aborted"
        );
        assert_eq!(aborted, 2);
        // Transaction 4: open across a restart, then committed by the same producer.
        txns.add_partitions(&broker, "tx", pid2, epoch2, part.clone(), false)
            .await
            .unwrap();
        topic
            .append(0, txn_batch(pid2, epoch2, 0, "d"))
            .await
            .unwrap();
        assert_eq!(txns.describe("tx").unwrap().state, TxnState::Ongoing);
        broker.close();
        drop(topic);
        drop(broker);
        let broker = open(dir.path()).await;
        let (vals, _, aborted) = committed_values(&broker, "t");
        assert_eq!(vals, vec!["a", "plain"]);
        assert_eq!(aborted, 2, "aborted index rebuilt from the log");
        let meta = broker.txns.describe("tx").unwrap();
        assert_eq!(meta.state, TxnState::Ongoing);
        broker
            .txns
            .end_txn(&broker, "tx", pid2, epoch2, true)
            .await
            .unwrap();
        let (vals, _, _) = committed_values(&broker, "t");
        assert_eq!(vals, vec!["a", "plain", "d"]);
        broker.close();
    }

    #[tokio::test]
    async fn timed_out_transactions_are_aborted_and_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), "t").await;
        let (pid, epoch) = broker
            .txns
            .init_producer_id(&broker, "slow", 1, None)
            .await
            .unwrap();
        broker
            .txns
            .add_partitions(&broker, "slow", pid, epoch, vec![("t".into(), 0)], false)
            .await
            .unwrap();
        let topic = broker.topic("t").unwrap();
        topic
            .append(0, txn_batch(pid, epoch, 0, "x"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        broker.txns.expire(&broker, crate::now_ms()).await;
        let meta = broker.txns.describe("slow").unwrap();
        assert_eq!(meta.state, TxnState::CompleteAbort);
        assert_eq!(meta.epoch, epoch + 1);
        assert_eq!(
            broker.txns.end_txn(&broker, "slow", pid, epoch, true).await,
            Err(TxnError::ProducerFenced)
        );
        let (vals, lso, aborted) = committed_values(&broker, "t");
        assert!(vals.is_empty());
        assert_eq!(aborted, 1);
        assert_eq!(lso, 2);
        broker.close();
    }

    #[tokio::test]
    async fn idle_transactional_ids_expire_with_a_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), "t").await;
        let init = |id: &'static str| {
            let broker = broker.clone();
            async move {
                broker
                    .txns
                    .init_producer_id(&broker, id, 60_000, None)
                    .await
                    .unwrap()
            }
        };
        let (idle_pid, idle_epoch) = init("idle").await;
        let (busy_pid, busy_epoch) = init("busy").await;
        broker
            .txns
            .add_partitions(
                &broker,
                "busy",
                busy_pid,
                busy_epoch,
                vec![("t".into(), 0)],
                false,
            )
            .await
            .unwrap();
        let now = crate::now_ms();
        assert_eq!(broker.txns.expire_transactional_ids(now, 60_000).await, 0);
        // Later than the expiration: the idle id goes, the one with a transaction stays.
        assert_eq!(
            broker
                .txns
                .expire_transactional_ids(now + 60_000, 60_000)
                .await,
            1
        );
        let listed: Vec<String> = broker.txns.list().into_iter().map(|t| t.0).collect();
        assert_eq!(listed, ["busy"]);
        assert_eq!(
            broker
                .txns
                .add_partitions(
                    &broker,
                    "idle",
                    idle_pid,
                    idle_epoch,
                    vec![("t".into(), 0)],
                    false
                )
                .await,
            Err(TxnError::InvalidProducerIdMapping)
        );
        broker.close();
        drop(broker);

        let broker = open(dir.path()).await;
        assert!(
            broker.txns.describe("idle").is_none(),
            "the tombstone was replayed"
        );
        assert_eq!(
            broker.txns.describe("busy").unwrap().state,
            TxnState::Ongoing
        );
        let (pid, epoch) = broker
            .txns
            .init_producer_id(&broker, "idle", 60_000, None)
            .await
            .unwrap();
        assert_ne!(
            pid, idle_pid,
            "an expired id starts over with a new producer id"
        );
        assert_eq!(epoch, 0);
        broker.close();
    }
}
