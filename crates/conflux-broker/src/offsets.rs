//! Committed consumer-group offsets, kept in memory and stored durably as records of the
//! internal compacted topic `__consumer_offsets` (key: group/topic/partition; value: the
//! offset, or a tombstone when deleted). The topic is replayed at start-up; the group
//! metadata records it also holds (see [`crate::groups::store`]) are handed to the group
//! coordinator.
//!
//! Offsets expire per `offsets.retention` with KIP-211 semantics: the group coordinator
//! says which of a group's offsets may expire ([`OffsetExpiry`]) and [`OffsetStore::expire`]
//! writes their tombstones. Commits, deletions and expiry pass a gate so an expiry never
//! removes a commit that landed while it was choosing what to expire.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use conflux_wire::records::BatchBuilder;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::groups::store::StoredGroups;
use crate::groups::OffsetExpiry;
use crate::topics::Topic;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest commit metadata string kept (`offset.metadata.max.bytes`).
pub const METADATA_SIZE_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct OffsetKey {
    group: String,
    topic: String,
    partition: i32,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

type GroupOffsets = HashMap<(String, i32), CommittedOffset>;

/// The store: an in-memory index over the offsets topic.
#[derive(Debug)]
pub struct OffsetStore {
    topic: Arc<Topic>,
    offsets: RwLock<HashMap<String, GroupOffsets>>,
    /// Commits and deletions hold it shared from their append until memory reflects it;
    /// expiry holds it exclusively while it chooses, appends and removes.
    gate: tokio::sync::RwLock<()>,
}

impl OffsetStore {
    /// Replays the offsets topic into memory; returns the group metadata found beside the
    /// offsets. Blocking.
    pub fn open(topic: Arc<Topic>) -> Result<(OffsetStore, StoredGroups)> {
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let mut groups = StoredGroups::new();
        crate::replay::replay_records(&topic, |key, value| {
            match key.and_then(crate::groups::store::group_of_key) {
                Some(group) => crate::groups::store::apply_record(&mut groups, group, value),
                None => apply_record(&mut offsets, key, value),
            }
        })?;
        let count: usize = offsets.values().map(HashMap::len).sum();
        tracing::info!(
            groups = offsets.len(),
            offsets = count,
            "committed offsets loaded"
        );
        let store = OffsetStore {
            topic,
            offsets: RwLock::new(offsets),
            gate: tokio::sync::RwLock::new(()),
        };
        Ok((store, groups))
    }

    /// Durably stores a set of commits for one group, then makes them visible.
    pub async fn commit(
        &self,
        group: &str,
        commits: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let _gate = self.gate.read().await;
        let now = crate::now_ms();
        let mut builder = BatchBuilder::new(now);
        for (topic, partition, c) in &commits {
            let key = OffsetKey {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            builder.append(now, Some(encode(&key)), Some(encode(c)), Vec::new());
        }
        self.append(builder).await?;
        let mut offsets = self.offsets.write();
        let entry = offsets.entry(group.to_string()).or_default();
        for (topic, partition, c) in commits {
            entry.insert((topic, partition), c);
        }
        Ok(())
    }

    /// Removes offsets (all of a group's when `partitions` is `None`).
    pub async fn delete(
        &self,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<usize> {
        let _gate = self.gate.read().await;
        let targets: Vec<(String, i32)> = {
            let offsets = self.offsets.read();
            let Some(existing) = offsets.get(group) else {
                return Ok(0);
            };
            match partitions {
                None => existing.keys().cloned().collect(),
                Some(ps) => ps
                    .into_iter()
                    .filter(|k| existing.contains_key(k))
                    .collect(),
            }
        };
        self.remove(group, targets).await
    }

    /// Expires the offsets of `group` that `rule` lets go after `retention_ms` (KIP-211):
    /// writes their tombstones, then forgets them. Returns how many expired.
    pub async fn expire(
        &self,
        group: &str,
        now_ms: i64,
        retention_ms: i64,
        rule: &OffsetExpiry,
    ) -> Result<usize> {
        let _gate = self.gate.write().await;
        let targets: Vec<(String, i32)> = {
            let offsets = self.offsets.read();
            let Some(existing) = offsets.get(group) else {
                return Ok(0);
            };
            existing
                .iter()
                .filter(|((topic, _), c)| match rule {
                    OffsetExpiry::Never => false,
                    OffsetExpiry::AllSince(since) => now_ms.saturating_sub(*since) >= retention_ms,
                    OffsetExpiry::ByCommitTime { except } => {
                        !except.contains(topic)
                            && now_ms.saturating_sub(c.commit_timestamp_ms) >= retention_ms
                    }
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        let expired = self.remove(group, targets).await?;
        if expired > 0 {
            tracing::info!(group, offsets = expired, "committed offsets expired");
        }
        Ok(expired)
    }

    /// Writes tombstones for `targets` of `group`, then removes them from memory. The caller
    /// holds the gate.
    async fn remove(&self, group: &str, targets: Vec<(String, i32)>) -> Result<usize> {
        if targets.is_empty() {
            return Ok(0);
        }
        let now = crate::now_ms();
        let mut builder = BatchBuilder::new(now);
        for (topic, partition) in &targets {
            let key = OffsetKey {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            builder.append(now, Some(encode(&key)), None, Vec::new());
        }
        self.append(builder).await?;
        let mut offsets = self.offsets.write();
        if let Some(existing) = offsets.get_mut(group) {
            for k in &targets {
                existing.remove(k);
            }
            if existing.is_empty() {
                offsets.remove(group);
            }
        }
        Ok(targets.len())
    }

    async fn append(&self, builder: BatchBuilder) -> Result<()> {
        let batch = builder
            .build()
            .map_err(|e| BrokerError::Storage(format!("building offsets batch: {e}")))?;
        self.topic.append(0, batch).await?;
        Ok(())
    }

    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.offsets
            .read()
            .get(group)?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group, sorted by topic and partition.
    pub fn fetch_all(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        let offsets = self.offsets.read();
        let mut all: Vec<_> = offsets
            .get(group)
            .map(|g| {
                g.iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut gs: Vec<_> = self.offsets.read().keys().cloned().collect();
        gs.sort();
        gs
    }

    /// Whether `group` has any committed offset.
    pub fn has_offsets(&self, group: &str) -> bool {
        self.offsets.read().contains_key(group)
    }
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn apply_record(
    offsets: &mut HashMap<String, GroupOffsets>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(key) = key.and_then(|k| serde_json::from_slice::<OffsetKey>(k).ok()) else {
        tracing::warn!("skipping undecodable key in {OFFSETS_TOPIC}");
        return;
    };
    match value.map(serde_json::from_slice::<CommittedOffset>) {
        Some(Ok(c)) => {
            offsets
                .entry(key.group)
                .or_default()
                .insert((key.topic, key.partition), c);
        }
        None => {
            if let Some(g) = offsets.get_mut(&key.group) {
                g.remove(&(key.topic, key.partition));
                if g.is_empty() {
                    offsets.remove(&key.group);
                }
            }
        }
        Some(Err(e)) => tracing::warn!(error = %e, "skipping undecodable value in {OFFSETS_TOPIC}"),
    }
}
