//! Group metadata records in `__consumer_offsets`, so group membership survives a restart
//! (also `kill -9`), as Kafka's GroupMetadata records do.
//!
//! A group is written when it reaches Stable (after the leader's SyncGroup set the
//! assignments; the SyncGroup answers wait for the write), when a static member's id changes
//! while Stable, and when it becomes Empty, with the time of that state change (so an Empty
//! group's offsets expire on time across restarts); deleting a group, or removing an Empty
//! group whose offsets all expired, writes a tombstone. The key is
//! `{"group_metadata": <group id>}`, which never parses as an offset-commit key, so both kinds
//! share the compacted topic and one replay. Replayed groups come back in the state they were
//! written with, and every restored member gets a fresh session deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_wire::records::BatchBuilder;
use serde::{Deserialize, Serialize};

use super::{Group, GroupState, Member};
use crate::error::{BrokerError, Result};
use crate::topics::Topic;

/// Receives the outcome of a queued group-metadata write.
pub type WriteReceiver = tokio::sync::oneshot::Receiver<
    std::result::Result<conflux_log::AppendInfo, conflux_log::LogError>,
>;

/// Groups read back from `__consumer_offsets`, by group id.
pub type StoredGroups = HashMap<String, StoredGroup>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMetadataKey {
    group_metadata: String,
}

/// One group as persisted (Kafka's GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// One member as persisted: its subscription is the metadata of the selected protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    #[serde(with = "base64_bytes")]
    pub subscription: Bytes,
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

mod base64_bytes {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// The group id of a group-metadata key, or `None` for any other key (offset commits).
pub fn group_of_key(key: &[u8]) -> Option<String> {
    serde_json::from_slice::<GroupMetadataKey>(key)
        .ok()
        .map(|k| k.group_metadata)
}

/// The record key of a group's metadata.
pub fn encode_key(group_id: &str) -> Bytes {
    let key = GroupMetadataKey {
        group_metadata: group_id.to_string(),
    };
    Bytes::from(serde_json::to_vec(&key).unwrap_or_default())
}

pub fn encode_value(group: &StoredGroup) -> Bytes {
    Bytes::from(serde_json::to_vec(group).unwrap_or_default())
}

/// Applies one replayed group-metadata record (a `None` value is a tombstone).
pub fn apply_record(groups: &mut StoredGroups, group_id: String, value: Option<&[u8]>) {
    match value.map(serde_json::from_slice::<StoredGroup>) {
        Some(Ok(g)) => {
            groups.insert(group_id, g);
        }
        None => {
            groups.remove(&group_id);
        }
        Some(Err(e)) => {
            tracing::warn!(group = %group_id, error = %e, "skipping undecodable group metadata")
        }
    }
}

/// What a group looks like persisted, when its state is one Kafka persists (Stable, Empty).
pub(super) fn snapshot(group: &Group) -> Option<StoredGroup> {
    if !matches!(group.state, GroupState::Stable | GroupState::Empty) {
        return None;
    }
    let members = group
        .members
        .values()
        .map(|m| StoredMember {
            member_id: m.id.clone(),
            group_instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout_ms: m.session_timeout.as_millis() as u64,
            rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
            subscription: group
                .protocol
                .as_ref()
                .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                .map(|(_, md)| md.clone())
                .unwrap_or_default(),
            assignment: m.assignment.clone(),
        })
        .collect();
    Some(StoredGroup {
        protocol_type: group.protocol_type.clone(),
        generation: group.generation,
        protocol: group.protocol.clone(),
        leader: group.leader.clone(),
        current_state_timestamp_ms: group.state_since_ms,
        members,
    })
}

/// Rebuilds a group from its stored form. Every member's session starts now, so live clients
/// carry on heartbeating and absent ones expire after their session timeout.
pub(super) fn restore(stored: StoredGroup, now: Instant) -> Group {
    let mut group = Group::new();
    group.protocol_type = stored.protocol_type;
    group.generation = stored.generation;
    if stored.current_state_timestamp_ms > 0 {
        // An Empty group's offsets keep expiring from when it became Empty, not from now.
        group.state_since_ms = stored.current_state_timestamp_ms;
    }
    if stored.members.is_empty() {
        return group;
    }
    group.state = GroupState::Stable;
    group.protocol = stored.protocol.clone();
    let protocol = stored.protocol.unwrap_or_default();
    let mut members = BTreeMap::new();
    for m in stored.members {
        if let Some(instance) = &m.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), m.member_id.clone());
        }
        members.insert(
            m.member_id.clone(),
            Member {
                id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(m.session_timeout_ms),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                last_heartbeat: now,
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }
    group.leader = stored
        .leader
        .filter(|l| members.contains_key(l))
        .or_else(|| members.keys().next().cloned());
    group.members = members;
    group.subscribed_topics = group.compute_subscribed_topics();
    group
}

/// Queues a group's metadata record (or a tombstone) on the offsets topic. The append is
/// enqueued before this returns, so records of one group land in the order they were made.
pub(super) fn write(
    topic: &Arc<Topic>,
    group_id: &str,
    value: Option<&StoredGroup>,
) -> Result<WriteReceiver> {
    let partition = topic
        .partition(0)
        .ok_or_else(|| BrokerError::Storage(format!("{} has no partition 0", topic.name)))?;
    let now = crate::now_ms();
    let mut builder = BatchBuilder::new(now);
    builder.append(
        now,
        Some(encode_key(group_id)),
        value.map(encode_value),
        Vec::new(),
    );
    let batch = builder
        .build()
        .map_err(|e| BrokerError::Storage(format!("building group metadata batch: {e}")))?;
    let _order = partition.producers.lock();
    Ok(partition.log.submit(batch, partition.leader_epoch)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Broker, BrokerConfig};
    use crate::groups::{GroupError, JoinRequest, OffsetExpiry};
    use crate::offsets::CommittedOffset;

    fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"sub-range")),
                ("roundrobin".into(), Bytes::from_static(b"sub-rr")),
            ],
            require_known_member_id: false,
        }
    }

    /// A plain member (the leader) and a static one ("static-1") join and sync; returns
    /// (leader id, follower id).
    async fn stable_group(broker: &Arc<Broker>) -> (String, String) {
        let groups = &broker.groups;
        let a = groups.join(join_req("", None)).await;
        groups
            .sync("g", a.generation_id, &a.member_id, None, Vec::new())
            .await
            .unwrap();
        let b = broker.clone();
        let b_join =
            tokio::spawn(async move { b.groups.join(join_req("", Some("static-1"))).await });
        while groups.state("g") != Some(GroupState::PreparingRebalance) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a = groups.join(join_req(&a.member_id, None)).await;
        let c = b_join.await.unwrap();
        assert_eq!((a.error.clone(), c.error.clone()), (None, None));
        assert_eq!(a.generation_id, c.generation_id);
        assert_eq!(a.leader, a.member_id);
        let (leader, follower, gen) = (a.member_id.clone(), c.member_id.clone(), a.generation_id);
        let b = broker.clone();
        let f = follower.clone();
        let follower_sync = tokio::spawn(async move {
            b.groups
                .sync("g", gen, &f, Some("static-1"), Vec::new())
                .await
                .unwrap()
        });
        let assignments = vec![
            (leader.clone(), Bytes::from_static(b"assign-leader")),
            (follower.clone(), Bytes::from_static(b"assign-follower")),
        ];
        groups
            .sync("g", gen, &leader, None, assignments)
            .await
            .unwrap();
        assert_eq!(
            &follower_sync.await.unwrap().assignment[..],
            b"assign-follower"
        );
        (leader, follower)
    }

    #[test]
    fn keys_are_distinct_from_offset_commit_keys() {
        assert_eq!(group_of_key(&encode_key("g1")).as_deref(), Some("g1"));
        let offset_key = br#"{"group":"g1","topic":"t","partition":0}"#;
        assert_eq!(group_of_key(offset_key), None);
        assert_eq!(group_of_key(b"not json"), None);
    }

    #[test]
    fn values_round_trip_and_tombstones_remove() {
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 1,
            members: vec![StoredMember {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 300_000,
                subscription: Bytes::from_static(&[0, 1, 255]),
                assignment: Bytes::from_static(&[9, 8]),
            }],
        };
        let mut groups = StoredGroups::new();
        apply_record(&mut groups, "g".into(), Some(&encode_value(&g)));
        assert_eq!(groups.get("g"), Some(&g));
        apply_record(&mut groups, "g".into(), Some(b"{broken"));
        assert_eq!(groups.get("g"), Some(&g), "an undecodable value is skipped");
        apply_record(&mut groups, "g".into(), None);
        assert!(groups.is_empty());
    }

    #[tokio::test]
    async fn a_static_member_replaced_while_stable_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let (leader, old_follower) = stable_group(&broker).await;
        let generation = broker.groups.describe("g").generation_id;
        // The static member restarts: a new member id, no rebalance.
        let rejoined = broker.groups.join(join_req("", Some("static-1"))).await;
        assert_eq!(rejoined.error, None);
        assert_eq!(rejoined.generation_id, generation);
        assert_ne!(rejoined.member_id, old_follower);
        assert_eq!(broker.groups.state("g"), Some(GroupState::Stable));
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(broker);

        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let d = broker.groups.describe("g");
        assert_eq!((d.state, d.generation_id), (GroupState::Stable, generation));
        let mut ids: Vec<_> = d.members.iter().map(|m| m.member_id.clone()).collect();
        ids.sort();
        let mut expected = vec![leader, rejoined.member_id.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        let follower = d
            .members
            .iter()
            .find(|m| m.member_id == rejoined.member_id)
            .unwrap();
        assert_eq!(&follower.assignment[..], b"assign-follower");
        assert_eq!(
            broker
                .groups
                .heartbeat("g", generation, &old_follower, Some("static-1")),
            Err(GroupError::FencedInstanceId)
        );
        broker.close();
    }

    #[tokio::test]
    async fn stable_group_survives_an_unclean_restart_then_expires_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let (leader, follower) = stable_group(&broker).await;
        let before = broker.groups.describe("g");
        assert_eq!(before.state, GroupState::Stable);
        broker
            .offsets
            .commit(
                "g",
                vec![(
                    "t".into(),
                    0,
                    crate::offsets::CommittedOffset {
                        offset: 42,
                        leader_epoch: -1,
                        metadata: None,
                        commit_timestamp_ms: crate::now_ms(),
                    },
                )],
            )
            .await
            .unwrap();
        // No close: the logs are reopened as after kill -9.
        drop(broker);

        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let after = broker.groups.describe("g");
        assert_eq!(after.state, GroupState::Stable);
        assert_eq!(after.generation_id, before.generation_id);
        assert_eq!(after.protocol, before.protocol);
        assert_eq!(after.protocol_type, "consumer");
        let summary = |d: &crate::groups::GroupDescription| {
            d.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.metadata.clone(),
                        m.assignment.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&after), summary(&before));
        assert_eq!(broker.offsets.fetch("g", "t", 0).unwrap().offset, 42);
        let gen = after.generation_id;
        let static_of = |id: &str| {
            after
                .members
                .iter()
                .find(|m| m.member_id == id)
                .and_then(|m| m.group_instance_id.clone())
        };
        // Old member ids and generation keep working: no rebalance.
        let leader_instance = static_of(&leader);
        let follower_instance = static_of(&follower);
        assert_eq!(
            broker
                .groups
                .heartbeat("g", gen, &leader, leader_instance.as_deref()),
            Ok(())
        );
        assert_eq!(
            broker
                .groups
                .check_commit("g", gen, &follower, follower_instance.as_deref()),
            Ok(())
        );
        let sync = broker
            .groups
            .sync(
                "g",
                gen,
                &follower,
                follower_instance.as_deref(),
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(&sync.assignment[..], b"assign-follower");
        // A member that never comes back is expired by its (fresh) session timeout.
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.groups.state("g") == Some(GroupState::Stable) && Instant::now() < deadline {
            broker
                .groups
                .heartbeat("g", gen, &leader, leader_instance.as_deref())
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            broker.groups.tick();
        }
        assert_eq!(
            broker.groups.state("g"),
            Some(GroupState::PreparingRebalance)
        );
        assert_eq!(
            broker
                .groups
                .heartbeat("g", gen, &leader, leader_instance.as_deref()),
            Err(GroupError::RebalanceInProgress)
        );
        // The leader goes too: the group becomes Empty, which is persisted.
        broker
            .groups
            .leave("g", &[(leader.clone(), None)])
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(broker.groups.state("g"), Some(GroupState::Empty));
        let empty_generation = broker.groups.describe("g").generation_id;
        assert!(empty_generation > gen);
        // Give the queued write its fsync before the unclean stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(broker);

        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let empty = broker.groups.describe("g");
        assert_eq!(empty.state, GroupState::Empty);
        assert_eq!(empty.generation_id, empty_generation);
        assert!(empty.members.is_empty());
        broker.groups.delete("g").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.close();
        drop(broker);

        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        assert_eq!(
            broker.groups.state("g"),
            None,
            "the tombstone removed the group"
        );
        assert_eq!(broker.offsets.fetch("g", "t", 0).unwrap().offset, 42);
        broker.close();
    }

    fn commit_at(topic: &str, offset: i64, at_ms: i64) -> (String, i32, CommittedOffset) {
        (
            topic.to_string(),
            0,
            CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: at_ms,
            },
        )
    }

    fn retention_config(dir: &std::path::Path, retention_ms: i64) -> BrokerConfig {
        let mut config = BrokerConfig::new(dir);
        config.offsets_retention_ms = retention_ms;
        config
    }

    #[tokio::test]
    async fn empty_group_expires_from_when_it_became_empty_then_its_tombstone_survives_restart() {
        const RETENTION_MS: i64 = 60_000;
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(retention_config(dir.path(), RETENTION_MS)).unwrap();
        let (leader, follower) = stable_group(&broker).await;
        // Commits far older than the retention.
        let long_ago = crate::now_ms() - 10 * RETENTION_MS;
        broker
            .offsets
            .commit(
                "g",
                vec![commit_at("t", 7, long_ago), commit_at("u", 9, long_ago)],
            )
            .await
            .unwrap();
        // Stable, with a subscription that is not the consumer protocol's: nothing expires.
        assert_eq!(broker.groups.offset_expiry("g"), OffsetExpiry::Never);
        assert_eq!(broker.expire_group_offsets(crate::now_ms()).await, (0, 0));
        assert_eq!(broker.offsets.fetch_all("g").len(), 2);

        let before_empty = crate::now_ms();
        broker
            .groups
            .leave(
                "g",
                &[(leader, None), (String::new(), Some("static-1".into()))],
            )
            .unwrap()
            .into_iter()
            .for_each(|r| r.unwrap());
        let after_empty = crate::now_ms();
        assert_eq!(broker.groups.state("g"), Some(GroupState::Empty));
        let _ = follower;
        // KIP-211: the clock starts when the group became Empty, not at the (old) commits.
        assert_eq!(broker.expire_group_offsets(crate::now_ms()).await, (0, 0));
        assert_eq!(broker.offsets.fetch_all("g").len(), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(broker);

        // The Empty-since time is persisted: after a restart the deadline has not moved.
        let broker = Broker::open(retention_config(dir.path(), RETENTION_MS)).unwrap();
        assert_eq!(broker.groups.state("g"), Some(GroupState::Empty));
        match broker.groups.offset_expiry("g") {
            OffsetExpiry::AllSince(since) => assert!(
                (before_empty..=after_empty).contains(&since),
                "{since} not in {before_empty}..={after_empty}"
            ),
            other => panic!("unexpected expiry rule {other:?}"),
        }
        assert_eq!(
            broker
                .expire_group_offsets(before_empty + RETENTION_MS - 1)
                .await,
            (0, 0)
        );
        assert_eq!(
            broker
                .expire_group_offsets(after_empty + RETENTION_MS)
                .await,
            (2, 1),
            "both offsets expire, then the group is removed"
        );
        assert!(broker.offsets.fetch_all("g").is_empty());
        assert_eq!(broker.groups.state("g"), None);
        assert_eq!(broker.groups.describe("g").state, GroupState::Dead);
        assert!(broker.groups.list().is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(broker);

        // Offset and group tombstones replay: nothing comes back.
        let broker = Broker::open(retention_config(dir.path(), RETENTION_MS)).unwrap();
        assert_eq!(broker.groups.state("g"), None);
        assert!(broker.offsets.groups().is_empty());
        // The group id starts over.
        let fresh = broker.groups.join(join_req("", None)).await;
        assert_eq!((fresh.error, fresh.generation_id), (None, 1));
        broker.close();
    }

    #[tokio::test]
    async fn stable_consumer_group_keeps_subscribed_topics_and_loses_the_others() {
        use conflux_wire::generated::ConsumerProtocolSubscription;
        const RETENTION_MS: i64 = 60_000;
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(retention_config(dir.path(), RETENTION_MS)).unwrap();
        let subscription = ConsumerProtocolSubscription {
            topics: vec!["subscribed".into()],
            ..Default::default()
        };
        let mut req = join_req("", None);
        req.protocols = vec![(
            "range".into(),
            conflux_wire::encode_versioned(&subscription, 1),
        )];
        let joined = broker.groups.join(req).await;
        assert_eq!(joined.error, None);
        broker
            .groups
            .sync(
                "g",
                joined.generation_id,
                &joined.member_id,
                None,
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(broker.groups.state("g"), Some(GroupState::Stable));
        let now = crate::now_ms();
        let long_ago = now - 2 * RETENTION_MS;
        broker
            .offsets
            .commit(
                "g",
                vec![
                    commit_at("subscribed", 1, long_ago),
                    commit_at("dropped", 2, long_ago),
                    commit_at("recent", 3, now),
                ],
            )
            .await
            .unwrap();
        // Offsets committed by a group that never joined expire from their commit.
        broker
            .offsets
            .commit(
                "standalone",
                vec![commit_at("t", 4, long_ago), commit_at("t2", 5, now)],
            )
            .await
            .unwrap();
        assert_eq!(broker.expire_group_offsets(now).await, (2, 0));
        let topics = |g: &str| {
            broker
                .offsets
                .fetch_all(g)
                .into_iter()
                .map(|(t, _, _)| t)
                .collect::<Vec<_>>()
        };
        assert_eq!(topics("g"), vec!["recent", "subscribed"]);
        assert_eq!(topics("standalone"), vec!["t2"]);
        assert_eq!(broker.groups.state("g"), Some(GroupState::Stable));
        // Past the retention of the recent commits too, the subscribed topic still stays.
        assert_eq!(
            broker.expire_group_offsets(now + RETENTION_MS).await,
            (2, 0)
        );
        assert_eq!(topics("g"), vec!["subscribed"]);
        assert!(!broker.offsets.has_offsets("standalone"));
        broker.close();
    }

    #[tokio::test]
    async fn empty_group_without_offsets_is_removed_at_the_next_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let joined = broker.groups.join(join_req("", None)).await;
        broker
            .groups
            .leave("g", &[(joined.member_id.clone(), None)])
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(broker.groups.state("g"), Some(GroupState::Empty));
        assert_eq!(broker.expire_group_offsets(crate::now_ms()).await, (0, 1));
        assert_eq!(broker.groups.state("g"), None);
        broker.close();
    }
}
