//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! DescribeGroups, ListGroups, DeleteGroups, OffsetCommit, OffsetFetch, OffsetDelete, and
//! InitProducerId for idempotent producers. This node is the coordinator for every key.

use std::sync::Arc;

use conflux_broker::groups::{GroupCoordinator, GroupError, JoinRequest};
use conflux_broker::offsets::{CommittedOffset, METADATA_SIZE_BYTES_MAX};
use conflux_broker::BrokerError;
use conflux_wire::generated::delete_groups_response::DeletableGroupResult;
use conflux_wire::generated::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use conflux_wire::generated::find_coordinator_response::Coordinator;
use conflux_wire::generated::join_group_response::JoinGroupResponseMember;
use conflux_wire::generated::leave_group_response::MemberResponse;
use conflux_wire::generated::list_groups_response::ListedGroup;
use conflux_wire::generated::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use conflux_wire::generated::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use conflux_wire::generated::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use conflux_wire::generated::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};

use crate::{error_code, KafkaContext};

const OFFSET_METADATA_TOO_LARGE: i16 = 12;

/// Who sent a request (for DescribeGroups' client id and host).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub host: String,
}

pub fn group_error_code(e: &GroupError) -> i16 {
    match e {
        GroupError::UnknownMemberId => error_code::UNKNOWN_MEMBER_ID,
        GroupError::IllegalGeneration => error_code::ILLEGAL_GENERATION,
        GroupError::RebalanceInProgress => error_code::REBALANCE_IN_PROGRESS,
        GroupError::MemberIdRequired => error_code::MEMBER_ID_REQUIRED,
        GroupError::InconsistentGroupProtocol => error_code::INCONSISTENT_GROUP_PROTOCOL,
        GroupError::InvalidSessionTimeout => error_code::INVALID_SESSION_TIMEOUT,
        GroupError::InvalidGroupId => error_code::INVALID_GROUP_ID,
        GroupError::GroupIdNotFound => error_code::GROUP_ID_NOT_FOUND,
        GroupError::NonEmptyGroup => error_code::NON_EMPTY_GROUP,
        GroupError::FencedInstanceId => error_code::FENCED_INSTANCE_ID,
        GroupError::GroupMaxSizeReached => error_code::GROUP_MAX_SIZE_REACHED,
        GroupError::CoordinatorNotAvailable => error_code::COORDINATOR_NOT_AVAILABLE,
    }
}

fn code_of(r: Result<(), GroupError>) -> i16 {
    r.err().map_or(error_code::NONE, |e| group_error_code(&e))
}

pub fn find_coordinator(
    ctx: &KafkaContext,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let node_id = ctx.broker.node_id();
    let host = ctx.config.advertised_host.clone();
    let port = ctx.config.advertised_port;
    let valid_type = matches!(req.key_type, 0 | 1);
    if version < 4 {
        let code = if valid_type {
            error_code::NONE
        } else {
            error_code::INVALID_REQUEST
        };
        return FindCoordinatorResponse {
            error_code: code,
            error_message: None,
            node_id: if valid_type { node_id } else { -1 },
            host: if valid_type { host } else { String::new() },
            port: if valid_type { port } else { -1 },
            ..Default::default()
        };
    }
    let coordinators = req
        .coordinator_keys
        .into_iter()
        .map(|key| Coordinator {
            key,
            node_id,
            host: host.clone(),
            port,
            error_code: if valid_type {
                error_code::NONE
            } else {
                error_code::INVALID_REQUEST
            },
            error_message: None,
            ..Default::default()
        })
        .collect();
    FindCoordinatorResponse {
        coordinators,
        ..Default::default()
    }
}

pub async fn join_group(
    ctx: &KafkaContext,
    req: JoinGroupRequest,
    version: i16,
    client: &ClientInfo,
) -> JoinGroupResponse {
    let join = JoinRequest {
        group_id: req.group_id,
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type,
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let resp = ctx.broker.groups.join(join).await;
    JoinGroupResponse {
        error_code: resp
            .error
            .as_ref()
            .map_or(error_code::NONE, group_error_code),
        generation_id: resp.generation_id,
        protocol_type: resp.protocol_type,
        protocol_name: resp
            .protocol_name
            .or_else(|| (version < 7).then(String::new)),
        leader: resp.leader,
        skip_assignment: false,
        member_id: resp.member_id,
        members: resp
            .members
            .into_iter()
            .map(|m| JoinGroupResponseMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                metadata: m.metadata,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub async fn sync_group(ctx: &KafkaContext, req: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id, a.assignment))
        .collect();
    let result = ctx
        .broker
        .groups
        .sync(
            &req.group_id,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            assignments,
        )
        .await;
    match result {
        Ok(s) => SyncGroupResponse {
            error_code: error_code::NONE,
            protocol_type: s.protocol_type,
            protocol_name: s.protocol_name,
            assignment: s.assignment,
            ..Default::default()
        },
        Err(e) => SyncGroupResponse {
            error_code: group_error_code(&e),
            ..Default::default()
        },
    }
}

pub fn heartbeat(ctx: &KafkaContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = ctx.broker.groups.heartbeat(
        &req.group_id,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
    );
    HeartbeatResponse {
        error_code: code_of(r),
        ..Default::default()
    }
}

pub fn leave_group(ctx: &KafkaContext, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(req.member_id.clone(), None)]
    };
    match ctx.broker.groups.leave(&req.group_id, &members) {
        Err(e) => LeaveGroupResponse {
            error_code: group_error_code(&e),
            ..Default::default()
        },
        Ok(results) => {
            let top = if version < 3 {
                results.first().cloned().unwrap_or(Ok(()))
            } else {
                Ok(())
            };
            LeaveGroupResponse {
                error_code: code_of(top),
                members: members
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, group_instance_id), r)| MemberResponse {
                        member_id,
                        group_instance_id,
                        error_code: code_of(r),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }
    }
}

pub fn describe_groups(ctx: &KafkaContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|group_id| {
            if GroupCoordinator::validate_group_id(&group_id).is_err() {
                return DescribedGroup {
                    error_code: error_code::INVALID_GROUP_ID,
                    group_id,
                    ..Default::default()
                };
            }
            let d = ctx.broker.groups.describe(&group_id);
            let state = if d.members.is_empty()
                && d.state != conflux_broker::groups::GroupState::PreparingRebalance
            {
                if ctx.broker.offsets.fetch_all(&group_id).is_empty() && d.generation_id < 0 {
                    "Dead"
                } else {
                    "Empty"
                }
            } else {
                d.state.name()
            };
            DescribedGroup {
                error_code: error_code::NONE,
                group_id,
                group_state: state.to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.metadata,
                        member_assignment: m.assignment,
                        ..Default::default()
                    })
                    .collect(),
                authorized_operations: i32::MIN,
                ..Default::default()
            }
        })
        .collect();
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub fn list_groups(ctx: &KafkaContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let mut all: Vec<(String, String, String)> = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .map(|(id, ptype, state)| (id, ptype, state.name().to_string()))
        .collect();
    // Groups known only by their committed offsets are Empty and, as in Kafka, have no
    // protocol type (clients list them as "simple" consumer groups).
    for g in ctx.broker.offsets.groups() {
        if !all.iter().any(|(id, _, _)| *id == g) {
            all.push((g, String::new(), "Empty".to_string()));
        }
    }
    all.sort();
    let groups = all
        .into_iter()
        .filter(|(_, _, state)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(state))
        })
        .filter(|_| {
            req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("classic"))
        })
        .map(|(group_id, protocol_type, group_state)| ListedGroup {
            group_id,
            protocol_type,
            group_state,
            group_type: "classic".to_string(),
            ..Default::default()
        })
        .collect();
    ListGroupsResponse {
        error_code: error_code::NONE,
        groups,
        ..Default::default()
    }
}

pub async fn delete_groups(ctx: &KafkaContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let known = ctx.broker.groups.state(&group_id).is_some()
            || !ctx.broker.offsets.fetch_all(&group_id).is_empty();
        let code = if !known {
            error_code::GROUP_ID_NOT_FOUND
        } else {
            match ctx.broker.groups.delete(&group_id) {
                Err(e) => group_error_code(&e),
                Ok(()) => match ctx.broker.offsets.delete(&group_id, None).await {
                    Ok(_) => error_code::NONE,
                    Err(e) => error_code::from_broker(&e),
                },
            }
        };
        results.push(DeletableGroupResult {
            group_id,
            error_code: code,
            ..Default::default()
        });
    }
    DeleteGroupsResponse {
        results,
        ..Default::default()
    }
}

pub async fn offset_commit(
    ctx: &KafkaContext,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let generation = if version >= 1 {
        req.generation_id_or_member_epoch
    } else {
        -1
    };
    let check = ctx.broker.groups.check_commit(
        &req.group_id,
        generation,
        &req.member_id,
        req.group_instance_id.as_deref(),
    );
    let now = conflux_broker::now_ms();
    let mut commits = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = ctx.broker.topic(&t.name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let code = if let Err(e) = &check {
                    group_error_code(e)
                } else if topic
                    .as_ref()
                    .and_then(|tp| tp.partition(p.partition_index))
                    .is_none()
                {
                    error_code::UNKNOWN_TOPIC_OR_PARTITION
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > METADATA_SIZE_BYTES_MAX)
                {
                    OFFSET_METADATA_TOO_LARGE
                } else {
                    commits.push((
                        t.name.clone(),
                        p.partition_index,
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: p.committed_metadata.clone(),
                            commit_timestamp_ms: now,
                        },
                    ));
                    error_code::NONE
                };
                OffsetCommitResponsePartition {
                    partition_index: p.partition_index,
                    error_code: code,
                    ..Default::default()
                }
            })
            .collect();
        topics.push(OffsetCommitResponseTopic {
            name: t.name,
            partitions,
            ..Default::default()
        });
    }
    if let Err(e) = ctx.broker.offsets.commit(&req.group_id, commits).await {
        let code = error_code::from_broker(&e);
        for t in &mut topics {
            for p in &mut t.partitions {
                if p.error_code == error_code::NONE {
                    p.error_code = code;
                }
            }
        }
    }
    OffsetCommitResponse {
        topics,
        ..Default::default()
    }
}

/// Committed offsets for the requested partitions (all committed ones when `None`), with each
/// one's error: UNSTABLE_OFFSET_COMMIT when `require_stable` and a transaction holds a pending
/// offset for it.
type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>, i16)>)>;

fn fetch_group(
    ctx: &KafkaContext,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> FetchedOffsets {
    let code = |topic: &str, p: i32| {
        if require_stable && ctx.broker.txns.has_pending_offset(group, topic, p) {
            error_code::UNSTABLE_OFFSET_COMMIT
        } else {
            error_code::NONE
        }
    };
    match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(name, parts)| {
                let got = parts
                    .into_iter()
                    .map(|p| {
                        let c = code(&name, p);
                        let o = if c == error_code::NONE {
                            ctx.broker.offsets.fetch(group, &name, p)
                        } else {
                            None
                        };
                        (p, o, c)
                    })
                    .collect();
                (name, got)
            })
            .collect(),
        None => {
            let mut out: FetchedOffsets = Vec::new();
            for (topic, partition, c) in ctx.broker.offsets.fetch_all(group) {
                let entry = (partition, Some(c), error_code::NONE);
                match out.last_mut() {
                    Some((t, ps)) if *t == topic => ps.push(entry),
                    _ => out.push((topic, vec![entry])),
                }
            }
            out
        }
    }
}

pub fn offset_fetch(
    ctx: &KafkaContext,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = fetch_group(ctx, &g.group_id, wanted, req.require_stable)
                    .into_iter()
                    .map(|(name, parts)| OffsetFetchResponseTopics {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|(p, c, code)| OffsetFetchResponsePartitions {
                                partition_index: p,
                                committed_offset: c.as_ref().map_or(-1, |c| c.offset),
                                committed_leader_epoch: c.as_ref().map_or(-1, |c| c.leader_epoch),
                                metadata: Some(c.and_then(|c| c.metadata).unwrap_or_default()),
                                error_code: code,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect();
                OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    topics,
                    error_code: error_code::NONE,
                    ..Default::default()
                }
            })
            .collect();
        return OffsetFetchResponse {
            groups,
            ..Default::default()
        };
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = fetch_group(ctx, &req.group_id, wanted, req.require_stable)
        .into_iter()
        .map(|(name, parts)| OffsetFetchResponseTopic {
            name,
            partitions: parts
                .into_iter()
                .map(|(p, c, code)| OffsetFetchResponsePartition {
                    partition_index: p,
                    committed_offset: c.as_ref().map_or(-1, |c| c.offset),
                    committed_leader_epoch: c.as_ref().map_or(-1, |c| c.leader_epoch),
                    metadata: Some(c.and_then(|c| c.metadata).unwrap_or_default()),
                    error_code: code,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    OffsetFetchResponse {
        topics,
        error_code: error_code::NONE,
        ..Default::default()
    }
}

pub async fn offset_delete(ctx: &KafkaContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if ctx.broker.groups.state(&req.group_id).is_none()
        && ctx.broker.offsets.fetch_all(&req.group_id).is_empty()
    {
        return OffsetDeleteResponse {
            error_code: error_code::GROUP_ID_NOT_FOUND,
            ..Default::default()
        };
    }
    let subscribed = |topic: &str| {
        ctx.broker
            .groups
            .describe(&req.group_id)
            .members
            .iter()
            .any(|m| {
                // Consumer protocol metadata carries the subscribed topic names as strings.
                m.metadata
                    .windows(topic.len())
                    .any(|w| w == topic.as_bytes())
            })
    };
    let mut to_delete = Vec::new();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let busy = subscribed(&t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if busy {
                        error_code::GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        to_delete.push((t.name.clone(), p.partition_index));
                        error_code::NONE
                    };
                    OffsetDeleteResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code,
                    }
                })
                .collect();
            OffsetDeleteResponseTopic {
                name: t.name,
                partitions,
            }
        })
        .collect();
    let code = match ctx
        .broker
        .offsets
        .delete(&req.group_id, Some(to_delete))
        .await
    {
        Ok(_) => error_code::NONE,
        Err(e) => error_code::from_broker(&e),
    };
    OffsetDeleteResponse {
        error_code: code,
        topics,
        ..Default::default()
    }
}

pub async fn init_producer_id(
    ctx: &Arc<KafkaContext>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    if let Some(id) = req.transactional_id.as_deref().filter(|id| !id.is_empty()) {
        return crate::txn::init_producer_id(ctx, id, &req, version).await;
    }
    // An idempotent producer bumping its own epoch (KIP-360) keeps its id.
    if req.producer_id >= 0 && req.producer_epoch >= 0 {
        let epoch = req.producer_epoch.checked_add(1).unwrap_or(0);
        return InitProducerIdResponse {
            error_code: error_code::NONE,
            producer_id: req.producer_id,
            producer_epoch: epoch,
            ..Default::default()
        };
    }
    let broker = ctx.broker.clone();
    let id = tokio::task::spawn_blocking(move || broker.producer_ids.next())
        .await
        .unwrap_or_else(|e| Err(BrokerError::Storage(e.to_string())));
    match id {
        Ok(producer_id) => InitProducerIdResponse {
            error_code: error_code::NONE,
            producer_id,
            producer_epoch: 0,
            ..Default::default()
        },
        Err(e) => InitProducerIdResponse {
            error_code: error_code::from_broker(&e),
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        },
    }
}
