//! The consumer group coordinator (Kafka's classic rebalance protocol), protocol-agnostic:
//! member metadata and assignments are opaque bytes chosen by the clients' assignors.
//!
//! A group moves Empty → PreparingRebalance → CompletingRebalance → Stable. A rebalance
//! completes when every known member has rejoined or the rebalance timeout passes (members that
//! did not rejoin are dropped). The leader's SyncGroup distributes assignments to everyone
//! waiting. Members whose heartbeats stop for their session timeout are removed, which starts a
//! rebalance. Committed offsets live in [`crate::offsets`]; this module only decides whether a
//! commit is allowed.
//!
//! Membership is persisted in `__consumer_offsets` (see [`store`]) whenever a group becomes
//! Stable or Empty, and replayed at start-up, so a restart does not force a rebalance.
//!
//! Each group notes when its state last changed; [`GroupCoordinator::offset_expiry`] turns
//! that into which of its offsets may expire (KIP-211), and
//! [`GroupCoordinator::remove_dead`] drops Empty groups left without offsets.

pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::topics::Topic;
use store::{StoredGroups, WriteReceiver};

/// The protocol type of Kafka consumer groups, whose member metadata is a
/// `ConsumerProtocolSubscription` naming the subscribed topics.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Limits.
pub const GROUP_ID_LEN_MAX: usize = 255;
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Why a group operation was refused; each maps onto one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("member id required")]
    MemberIdRequired,
    #[error("no protocol is supported by every member")]
    InconsistentGroupProtocol,
    #[error(
        "session timeout must be between {SESSION_TIMEOUT_MS_MIN} and {SESSION_TIMEOUT_MS_MAX} ms"
    )]
    InvalidSessionTimeout,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("static member fenced by a newer instance")]
    FencedInstanceId,
    #[error("group has reached its maximum size")]
    GroupMaxSizeReached,
    #[error("coordinator is shutting down")]
    CoordinatorNotAvailable,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first get a member id and rejoin with it.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the member list.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(e: GroupError, member_id: String) -> Self {
        JoinResponse {
            error: Some(e),
            generation_id: -1,
            member_id,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<Result<SyncResponse, GroupError>>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with their expiry.
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// Bumped when membership changes without a new generation (a static member's new id).
    members_version: u64,
    /// What was last persisted: (state, generation, members_version).
    persisted: Option<(GroupState, i32, u64)>,
    /// Wall-clock time of the last state change (Kafka's `currentStateTimestamp`), persisted
    /// with the group: an Empty group's offsets expire this long after it became Empty.
    state_since_ms: i64,
    /// Topics the members of a "consumer" group subscribe to, decoded from their metadata
    /// for the selected protocol at each new generation; `None` when not known.
    subscribed_topics: Option<BTreeSet<String>>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            members_version: 0,
            // A new group has nothing worth a record until it first becomes Stable.
            persisted: Some((GroupState::Empty, 0, 0)),
            state_since_ms: crate::now_ms(),
            subscribed_topics: None,
        }
    }

    /// Moves to `state`, noting when, as Kafka's `transitionTo` does.
    fn transition(&mut self, state: GroupState) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = crate::now_ms();
        }
    }

    /// The topics every member's subscription (for the selected protocol) names, when the
    /// group uses the consumer protocol and every subscription decodes.
    fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE {
            return None;
        }
        let protocol = self.protocol.as_ref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let (_, metadata) = m.protocols.iter().find(|(n, _)| n == protocol)?;
            topics.extend(subscription_topics(metadata)?);
        }
        Some(topics)
    }

    /// The part of the group whose change calls for a new metadata record, in the states
    /// Kafka persists (Stable, Empty).
    fn persist_mark(&self) -> Option<(GroupState, i32, u64)> {
        matches!(self.state, GroupState::Stable | GroupState::Empty).then_some((
            self.state,
            self.generation,
            self.members_version,
        ))
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // Followers waiting for an assignment that will never come must rejoin.
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        if self.state != GroupState::PreparingRebalance {
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + timeout);
        }
        self.transition(GroupState::PreparingRebalance);
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Picks the protocol every member supports, preferring members' earlier choices.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let mut best: Option<(usize, &String)> = None;
        for (name, _) in &first.protocols {
            if !self
                .members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            {
                continue;
            }
            let votes = self
                .members
                .values()
                .filter(|m| m.protocols.first().map(|(n, _)| n) == Some(name))
                .count();
            if best.is_none_or(|(v, _)| votes > v) {
                best = Some((votes, name));
            }
        }
        best.map(|(_, n)| n.clone())
    }

    /// Ends the join phase: drops members that did not rejoin, bumps the generation and answers
    /// every waiting member.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.static_members
            .retain(|_, id| self.members.contains_key(id));
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.transition(GroupState::Empty);
            self.protocol = None;
            self.leader = None;
            self.subscribed_topics = None;
            return;
        }
        self.transition(GroupState::CompletingRebalance);
        self.protocol = self.select_protocol();
        self.subscribed_topics = self.compute_subscribed_topics();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let all: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let now = Instant::now();
        for m in self.members.values_mut() {
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResponse {
                    error: None,
                    generation_id: self.generation,
                    protocol_type: Some(self.protocol_type.clone()),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn remove_member(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(instance) = &m.instance_id {
                self.static_members.remove(instance);
            }
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResponse::error(
                    GroupError::UnknownMemberId,
                    m.id.clone(),
                ));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(Err(GroupError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            // Nobody left to rebalance: the group becomes Empty (under a new generation).
            self.complete_join();
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::PreparingRebalance if self.all_joined() => self.complete_join(),
            _ => {}
        }
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }
}

/// The coordinator for every group on this node.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Delay before the first rebalance of an empty group completes, so members starting
    /// together land in one generation (`group.initial.rebalance.delay.ms`).
    initial_rebalance_delay: Duration,
    /// Where group metadata is persisted (`__consumer_offsets`); `None` keeps it in memory.
    store: Option<Arc<Topic>>,
}

/// Which committed offsets of a group may expire (see [`GroupCoordinator::offset_expiry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetExpiry {
    /// None (the group is rebalancing, or its subscription is not known).
    Never,
    /// All of them, once the retention has passed since this time (ms): when the group
    /// became Empty.
    AllSince(i64),
    /// Each once the retention has passed since its commit, except offsets of these topics.
    ByCommitTime { except: BTreeSet<String> },
}

/// The topics a consumer-protocol subscription (`ConsumerProtocolSubscription`, the member
/// metadata of "consumer" groups) names, or `None` when it does not decode.
fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    conflux_wire::decode_versioned::<conflux_wire::generated::ConsumerProtocolSubscription>(
        metadata.clone(),
    )
    .ok()
    .map(|(_, s)| s.topics)
}

fn new_member_id(client_id: &str) -> String {
    format!(
        "{}-{}",
        if client_id.is_empty() {
            "member"
        } else {
            client_id
        },
        uuid::Uuid::new_v4()
    )
}

impl GroupCoordinator {
    pub fn new(initial_rebalance_delay: Duration) -> Self {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            initial_rebalance_delay,
            store: None,
        }
    }

    /// A coordinator that persists group metadata to `topic` (`__consumer_offsets`) and
    /// starts with the groups replayed from it.
    pub fn with_store(
        initial_rebalance_delay: Duration,
        topic: Arc<Topic>,
        stored: StoredGroups,
    ) -> Self {
        let now = Instant::now();
        let groups: HashMap<String, Group> = stored
            .into_iter()
            .map(|(id, g)| {
                let mut group = store::restore(g, now);
                group.persisted = group.persist_mark();
                (id, group)
            })
            .collect();
        let members: usize = groups.values().map(|g| g.members.len()).sum();
        tracing::info!(groups = groups.len(), members, "consumer groups restored");
        GroupCoordinator {
            groups: Mutex::new(groups),
            initial_rebalance_delay,
            store: Some(topic),
        }
    }

    /// Writes the group's metadata record when it reached a persisted state it was not
    /// written in yet. Call with the groups lock held, after every change.
    fn persist_changes(&self, group_id: &str, group: &mut Group) -> Option<WriteReceiver> {
        let topic = self.store.as_ref()?;
        let mark = group.persist_mark()?;
        if group.persisted == Some(mark) {
            return None;
        }
        group.persisted = Some(mark);
        let value = store::snapshot(group)?;
        match store::write(topic, group_id, Some(&value)) {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "persisting group metadata failed");
                None
            }
        }
    }

    pub fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() || group_id.len() > GROUP_ID_LEN_MAX {
            return Err(GroupError::InvalidGroupId);
        }
        Ok(())
    }

    /// JoinGroup. Resolves when the rebalance this join takes part in completes.
    pub async fn join(&self, req: JoinRequest) -> JoinResponse {
        if let Err(e) = Self::validate_group_id(&req.group_id) {
            return JoinResponse::error(e, req.member_id);
        }
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&req.session_timeout_ms) {
            return JoinResponse::error(GroupError::InvalidSessionTimeout, req.member_id);
        }
        let rx = {
            let mut groups = self.groups.lock();
            let group = groups
                .entry(req.group_id.clone())
                .or_insert_with(Group::new);
            let group_id = req.group_id.clone();
            let joined = self.join_locked(group, req);
            self.persist_changes(&group_id, group);
            match joined {
                Ok(rx) => rx,
                Err(resp) => return *resp,
            }
        };
        rx.await.unwrap_or_else(|_| {
            JoinResponse::error(GroupError::CoordinatorNotAvailable, String::new())
        })
    }

    fn join_locked(
        &self,
        group: &mut Group,
        req: JoinRequest,
    ) -> Result<oneshot::Receiver<JoinResponse>, Box<JoinResponse>> {
        let now = Instant::now();
        if group.state != GroupState::Empty
            && !group.members.is_empty()
            && group.protocol_type != req.protocol_type
        {
            return Err(Box::new(JoinResponse::error(
                GroupError::InconsistentGroupProtocol,
                req.member_id,
            )));
        }
        if req.protocols.is_empty() {
            return Err(Box::new(JoinResponse::error(
                GroupError::InconsistentGroupProtocol,
                req.member_id,
            )));
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &req.group_instance_id {
                // A static member rejoining under a new id replaces its old self.
                if let Some(old) = group.static_members.get(instance).cloned() {
                    return Ok(self.replace_static_member(group, &old, req));
                }
                member_id = new_member_id(&req.client_id);
            } else {
                member_id = new_member_id(&req.client_id);
                if req.require_known_member_id {
                    group.pending.insert(
                        member_id.clone(),
                        now + Duration::from_millis(req.session_timeout_ms as u64),
                    );
                    return Err(Box::new(JoinResponse::error(
                        GroupError::MemberIdRequired,
                        member_id,
                    )));
                }
            }
        } else if !group.members.contains_key(&member_id)
            && group.pending.remove(&member_id).is_none()
        {
            return Err(Box::new(JoinResponse::error(
                GroupError::UnknownMemberId,
                member_id,
            )));
        }
        if !group.members.contains_key(&member_id) && group.members.len() >= MEMBERS_PER_GROUP_MAX {
            return Err(Box::new(JoinResponse::error(
                GroupError::GroupMaxSizeReached,
                member_id,
            )));
        }
        let (tx, rx) = oneshot::channel();
        let protocols_changed = group
            .members
            .get(&member_id)
            .is_none_or(|m| m.protocols != req.protocols);
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        member.rebalance_timeout =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
        member.protocols = req.protocols;
        member.last_heartbeat = now;
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinResponse::error(
                GroupError::RebalanceInProgress,
                member_id.clone(),
            ));
        }
        if let Some(instance) = &req.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.protocol_type = req.protocol_type;
        let was_empty = group.state == GroupState::Empty;
        let follower_rejoin_unchanged = group.state == GroupState::Stable
            && !protocols_changed
            && group.leader.as_deref() != Some(&member_id);
        if follower_rejoin_unchanged {
            // A follower rejoining with unchanged metadata gets the current generation back.
            self.answer_current_generation(group, &member_id);
            return Ok(rx);
        }
        group.prepare_rebalance(now);
        if was_empty && !self.initial_rebalance_delay.is_zero() {
            group.rebalance_deadline = Some(now + self.initial_rebalance_delay);
        } else if group.all_joined() {
            group.complete_join();
        }
        Ok(rx)
    }

    fn answer_current_generation(&self, group: &mut Group, member_id: &str) {
        let generation = group.generation;
        let protocol = group.protocol.clone();
        let protocol_type = group.protocol_type.clone();
        let leader = group.leader.clone().unwrap_or_default();
        if let Some(m) = group.members.get_mut(member_id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResponse {
                    error: None,
                    generation_id: generation,
                    protocol_type: Some(protocol_type),
                    protocol_name: protocol,
                    leader,
                    member_id: member_id.to_string(),
                    members: Vec::new(),
                });
            }
        }
    }

    /// A static member came back with a new member id: swap ids, keep its assignment, and
    /// answer with the current generation (no rebalance), as Kafka does.
    fn replace_static_member(
        &self,
        group: &mut Group,
        old_id: &str,
        req: JoinRequest,
    ) -> oneshot::Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let new_id = new_member_id(&req.client_id);
        if let Some(mut m) = group.members.remove(old_id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResponse::error(
                    GroupError::FencedInstanceId,
                    old_id.to_string(),
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::FencedInstanceId));
            }
            m.id = new_id.clone();
            m.protocols = req.protocols;
            m.last_heartbeat = Instant::now();
            m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            m.join_waiter = Some(tx);
            group.members.insert(new_id.clone(), m);
        }
        if let Some(instance) = &req.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id) {
            group.leader = Some(new_id.clone());
        }
        group.members_version += 1;
        // Its subscription may have changed without a rebalance.
        group.subscribed_topics = group.compute_subscribed_topics();
        match group.state {
            GroupState::Stable => {
                let leader_is_self = group.leader.as_deref() == Some(&new_id);
                self.answer_current_generation(group, &new_id);
                if leader_is_self {
                    // The leader learns it leads but gets no member list: it keeps its
                    // previous assignment (skip_assignment semantics).
                }
            }
            _ => {
                group.prepare_rebalance(Instant::now());
                if group.all_joined() {
                    group.complete_join();
                }
            }
        }
        rx
    }

    /// SyncGroup. The leader's call carries assignments; everyone's resolves with their own.
    /// The answers to the leader's SyncGroup wait until the Stable group is persisted.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncResponse, GroupError> {
        type Waiter = oneshot::Sender<Result<SyncResponse, GroupError>>;
        let (rx, answers, write): (_, Vec<(Waiter, SyncResponse)>, _) = {
            let mut groups = self.groups.lock();
            let group = groups
                .get_mut(group_id)
                .ok_or(GroupError::UnknownMemberId)?;
            group.check_member(member_id, instance_id, generation)?;
            match group.state {
                GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => {
                    let m = &group.members[member_id];
                    return Ok(SyncResponse {
                        protocol_type: Some(group.protocol_type.clone()),
                        protocol_name: group.protocol.clone(),
                        assignment: m.assignment.clone(),
                    });
                }
                GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
                m.last_heartbeat = Instant::now();
            }
            let mut answers = Vec::new();
            let mut write = None;
            if group.leader.as_deref() == Some(member_id) {
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                let protocol_type = Some(group.protocol_type.clone());
                let protocol_name = group.protocol.clone();
                for m in group.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let response = SyncResponse {
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        };
                        answers.push((w, response));
                    }
                }
                group.transition(GroupState::Stable);
                write = self.persist_changes(group_id, group);
            }
            (rx, answers, write)
        };
        let persisted = match write {
            None => Ok(()),
            Some(w) => match w.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the offsets log closed".to_string()),
            },
        };
        if let Err(e) = &persisted {
            tracing::warn!(group = group_id, error = %e, "persisting a stable group failed");
        }
        for (w, response) in answers {
            let _ = w.send(match &persisted {
                Ok(()) => Ok(response),
                Err(_) => Err(GroupError::CoordinatorNotAvailable),
            });
        }
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        group.check_member(member_id, instance_id, generation)?;
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup for each `(member_id, instance_id)`; static members may leave by instance id.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let now = Instant::now();
        Ok(members
            .iter()
            .map(|(member_id, instance_id)| {
                let resolved = match instance_id {
                    Some(instance) => match group.static_members.get(instance) {
                        Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                        Some(_) => return Err(GroupError::FencedInstanceId),
                        None => return Err(GroupError::UnknownMemberId),
                    },
                    None => member_id.clone(),
                };
                if !group.members.contains_key(&resolved) {
                    return Err(GroupError::UnknownMemberId);
                }
                group.remove_member(&resolved, now);
                self.persist_changes(group_id, group);
                Ok(())
            })
            .collect())
    }

    /// Whether an offset commit from this member is allowed now. Commits with generation -1
    /// and an empty member id come from consumers that assign partitions themselves.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        Self::validate_group_id(group_id)?;
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        group.check_member(member_id, instance_id, generation)?;
        // As Kafka: members of the current generation may commit while a rebalance is being
        // prepared (eager consumers commit in their revoke callback before rejoining), but
        // not between JoinGroup and SyncGroup.
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expires silent members and overdue rebalances. Call every few hundred ms.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            group.pending.retain(|_, expiry| *expiry > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now > m.last_heartbeat + m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "group member session expired");
                group.remove_member(&id, now);
            }
            if group.state == GroupState::PreparingRebalance
                && group.rebalance_deadline.is_some_and(|d| now >= d)
            {
                group.complete_join();
            }
            self.persist_changes(group_id, group);
        }
    }

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            None => GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                generation_id: -1,
                members: Vec::new(),
            },
            Some(g) => GroupDescription {
                group_id: group_id.to_string(),
                state: g.state,
                protocol_type: g.protocol_type.clone(),
                protocol: g.protocol.clone().unwrap_or_default(),
                generation_id: g.generation,
                members: g
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: g
                            .protocol
                            .as_ref()
                            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                            .map(|(_, md)| md.clone())
                            .unwrap_or_default(),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// Groups with members, as (group id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| (id.clone(), g.protocol_type.clone(), g.state))
            .collect();
        out.sort();
        out
    }

    /// Which of a group's committed offsets may expire now, per KIP-211 (Kafka's
    /// `offsetExpirationCondition`): an Empty group's all, counted from when it became Empty;
    /// a Stable consumer group's only those of topics it no longer subscribes to, counted
    /// from their commit; a group that only commits offsets (unknown here), each counted from
    /// its commit; a rebalancing group's none.
    pub fn offset_expiry(&self, group_id: &str) -> OffsetExpiry {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return OffsetExpiry::ByCommitTime {
                except: BTreeSet::new(),
            };
        };
        match g.state {
            _ if g.protocol_type.is_empty() && g.members.is_empty() => OffsetExpiry::ByCommitTime {
                except: BTreeSet::new(),
            },
            GroupState::Empty => OffsetExpiry::AllSince(g.state_since_ms),
            GroupState::Stable => match &g.subscribed_topics {
                Some(topics) => OffsetExpiry::ByCommitTime {
                    except: topics.clone(),
                },
                None => OffsetExpiry::Never,
            },
            _ => OffsetExpiry::Never,
        }
    }

    /// Removes every Empty group that has no committed offsets left (`has_offsets` says),
    /// writing its tombstone, as Kafka's offset cleanup moves such a group to Dead. Returns
    /// the removed group ids.
    pub fn remove_dead(&self, has_offsets: impl Fn(&str) -> bool) -> Vec<String> {
        let mut groups = self.groups.lock();
        let dead: Vec<String> = groups
            .iter()
            .filter(|(id, g)| {
                g.state == GroupState::Empty
                    && g.members.is_empty()
                    && g.pending.is_empty()
                    && !has_offsets(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            groups.remove(id);
            tracing::info!(group = %id, "empty group without offsets removed");
            if let Some(topic) = &self.store {
                if let Err(e) = store::write(topic, id, None) {
                    tracing::warn!(group = %id, error = %e, "writing group tombstone failed");
                }
            }
        }
        dead
    }

    pub fn state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.lock().get(group_id).map(|g| g.state)
    }

    /// Removes an empty group's membership record; offsets are removed by the caller.
    pub fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        match groups.get(group_id) {
            Some(g) if !g.members.is_empty() => Err(GroupError::NonEmptyGroup),
            Some(_) => {
                groups.remove(group_id);
                if let Some(topic) = &self.store {
                    // The tombstone is queued in order behind the group's earlier records.
                    if let Err(e) = store::write(topic, group_id, None) {
                        tracing::warn!(group = group_id, error = %e, "writing group tombstone failed");
                    }
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Answers every waiter so no client hangs across a shutdown.
    pub fn shutdown(&self) {
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            for m in g.members.values_mut() {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(JoinResponse::error(
                        GroupError::CoordinatorNotAvailable,
                        m.id.clone(),
                    ));
                }
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::CoordinatorNotAvailable));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn join_req(group: &str, member: &str) -> JoinRequest {
        JoinRequest {
            group_id: group.into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 2_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    #[tokio::test]
    async fn member_id_required_then_single_member_leads() {
        let c = GroupCoordinator::new(Duration::ZERO);
        let first = c.join(join_req("g", "")).await;
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        let joined = c.join(join_req("g", &first.member_id)).await;
        assert_eq!(joined.error, None);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.members.len(), 1);
        let sync = c
            .sync(
                "g",
                1,
                &first.member_id,
                None,
                vec![(first.member_id.clone(), Bytes::from_static(b"a"))],
            )
            .await
            .unwrap();
        assert_eq!(&sync.assignment[..], b"a");
        assert_eq!(c.state("g"), Some(GroupState::Stable));
        assert!(c.heartbeat("g", 1, &first.member_id, None).is_ok());
        assert_eq!(
            c.heartbeat("g", 0, &first.member_id, None),
            Err(GroupError::IllegalGeneration)
        );
    }

    #[tokio::test]
    async fn second_member_triggers_rebalance_and_both_get_assignments() {
        let c = Arc::new(GroupCoordinator::new(Duration::ZERO));
        let mut r = join_req("g", "");
        r.require_known_member_id = false;
        let a = c.join(r.clone()).await;
        c.sync("g", 1, &a.member_id, None, vec![]).await.unwrap();
        let c2 = c.clone();
        let r2 = r.clone();
        let b_join = tokio::spawn(async move { c2.join(r2).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            Err(GroupError::RebalanceInProgress)
        );
        let mut again = r.clone();
        again.member_id = a.member_id.clone();
        let a2 = c.join(again).await;
        let b = b_join.await.unwrap();
        assert_eq!((a2.generation_id, b.generation_id), (2, 2));
        assert_eq!(a2.leader, a.member_id);
        assert_eq!(a2.members.len(), 2);
        let c3 = c.clone();
        let bid = b.member_id.clone();
        let b_sync = tokio::spawn(async move { c3.sync("g", 2, &bid, None, vec![]).await });
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"0")),
            (b.member_id.clone(), Bytes::from_static(b"1")),
        ];
        assert_eq!(
            &c.sync("g", 2, &a.member_id, None, assignments)
                .await
                .unwrap()
                .assignment[..],
            b"0"
        );
        assert_eq!(&b_sync.await.unwrap().unwrap().assignment[..], b"1");
    }

    #[tokio::test]
    async fn leave_empties_group_and_allows_delete() {
        let c = GroupCoordinator::new(Duration::ZERO);
        let mut r = join_req("g", "");
        r.require_known_member_id = false;
        let a = c.join(r).await;
        assert_eq!(c.delete("g"), Err(GroupError::NonEmptyGroup));
        let results = c.leave("g", &[(a.member_id.clone(), None)]).unwrap();
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(c.state("g"), Some(GroupState::Empty));
        assert!(c.delete("g").is_ok());
    }

    #[tokio::test]
    async fn silent_member_expires() {
        let c = GroupCoordinator::new(Duration::ZERO);
        let mut r = join_req("g", "");
        r.require_known_member_id = false;
        r.session_timeout_ms = 1_000;
        let a = c.join(r).await;
        c.sync("g", 1, &a.member_id, None, vec![]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        c.tick();
        assert_eq!(c.state("g"), Some(GroupState::Empty));
    }
}
