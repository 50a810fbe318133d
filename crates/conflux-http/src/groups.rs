//! Consumer-group endpoints: list, describe with per-partition lag, delete, commit and reset
//! offsets. Lag is `log end (high watermark) − committed offset`, never negative; a partition
//! without a committed offset has no lag figure (as in Kafka's `kafka-consumer-groups`).

use std::collections::{BTreeMap, BTreeSet};

use conflux_broker::groups::{GroupCoordinator, GroupState, MemberDescription};
use conflux_broker::offsets::CommittedOffset;
use conflux_broker::Broker;
use conflux_wire::generated::ConsumerProtocolAssignment;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::router::Reply;
use crate::{ApiError, HttpContext};

/// Offsets committed or reset in one call, at most.
const OFFSETS_PER_REQUEST_MAX: usize = 10_000;

/// One row of a group description: a partition the group consumes or has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    pub topic: String,
    pub partition: i32,
    pub current_offset: Option<i64>,
    /// The partition's high watermark; `None` when the topic or partition no longer exists.
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    /// Index into the description's members of the member the partition is assigned to.
    pub member: Option<usize>,
}

/// Every group known to the coordinator or holding committed offsets, sorted.
pub fn all_group_ids(broker: &Broker) -> Vec<String> {
    let mut ids: BTreeSet<String> = broker.offsets.groups().into_iter().collect();
    ids.extend(broker.groups.list().into_iter().map(|(id, _, _)| id));
    ids.into_iter().collect()
}

/// The lag rows of `group`, sorted by topic and partition.
pub fn lag_rows(broker: &Broker, members: &[MemberDescription], group: &str) -> Vec<LagRow> {
    let mut rows: BTreeMap<(String, i32), LagRow> = BTreeMap::new();
    fn row<'a>(
        rows: &'a mut BTreeMap<(String, i32), LagRow>,
        topic: &str,
        partition: i32,
    ) -> &'a mut LagRow {
        rows.entry((topic.to_owned(), partition))
            .or_insert_with(|| LagRow {
                topic: topic.to_owned(),
                partition,
                current_offset: None,
                log_end_offset: None,
                lag: None,
                member: None,
            })
    }
    for (index, member) in members.iter().enumerate() {
        for (topic, partitions) in assigned_partitions(member) {
            for p in partitions {
                row(&mut rows, &topic, p).member = Some(index);
            }
        }
    }
    for (topic, partition, committed) in broker.offsets.fetch_all(group) {
        row(&mut rows, &topic, partition).current_offset = Some(committed.offset);
    }
    for r in rows.values_mut() {
        let end = broker
            .partition(&r.topic, r.partition)
            .ok()
            .map(|p| p.log.high_watermark());
        r.log_end_offset = end;
        r.lag = match (end, r.current_offset) {
            (Some(end), Some(current)) if current >= 0 => Some((end - current).max(0)),
            _ => None,
        };
    }
    rows.into_values().collect()
}

/// The topic partitions assigned to a member of a `consumer` group (empty when the assignment
/// is not in the consumer protocol's format).
fn assigned_partitions(member: &MemberDescription) -> Vec<(String, Vec<i32>)> {
    if member.assignment.is_empty() {
        return Vec::new();
    }
    match conflux_wire::decode_versioned::<ConsumerProtocolAssignment>(member.assignment.clone()) {
        Ok((_, a)) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic, tp.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn list(ctx: &HttpContext) -> Reply {
    let b = &ctx.broker;
    let groups: Vec<Value> = all_group_ids(b)
        .into_iter()
        .map(|id| {
            let d = b.groups.describe(&id);
            json!({
                "group_id": id,
                "state": state_name(d.state),
                "protocol_type": d.protocol_type,
                "members": d.members.len(),
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "groups": groups })))
}

pub fn describe(ctx: &HttpContext, group: &str) -> Reply {
    let b = &ctx.broker;
    let d = b.groups.describe(group);
    let committed = b.offsets.fetch_all(group);
    if d.state == GroupState::Dead && committed.is_empty() {
        return Err(unknown_group(group));
    }
    let rows = lag_rows(b, &d.members, group);
    let offsets: Vec<Value> = rows
        .iter()
        .map(|r| {
            let m = r.member.and_then(|i| d.members.get(i));
            json!({
                "topic": r.topic,
                "partition": r.partition,
                "current_offset": r.current_offset,
                "log_end_offset": r.log_end_offset,
                "lag": r.lag,
                "consumer_id": m.map(|m| m.member_id.clone()),
                "host": m.map(|m| m.client_host.clone()),
                "client_id": m.map(|m| m.client_id.clone()),
            })
        })
        .collect();
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assignments: Vec<Value> = assigned_partitions(m)
                .into_iter()
                .map(|(topic, partitions)| json!({"topic": topic, "partitions": partitions}))
                .collect();
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.client_host,
                "assignments": assignments,
            })
        })
        .collect();
    let total_lag: i64 = rows.iter().filter_map(|r| r.lag).sum();
    Ok((
        StatusCode::OK,
        json!({
            "group_id": group,
            "state": state_name(d.state),
            "protocol_type": d.protocol_type,
            "protocol": d.protocol,
            "generation_id": d.generation_id,
            "members": members,
            "offsets": offsets,
            "total_lag": total_lag,
        }),
    ))
}

pub async fn delete(ctx: &HttpContext, group: &str) -> Reply {
    let b = &ctx.broker;
    let d = b.groups.describe(group);
    if d.state == GroupState::Dead && b.offsets.fetch_all(group).is_empty() {
        return Err(unknown_group(group));
    }
    require_inactive(b, group)?;
    b.groups
        .delete(group)
        .map_err(|e| not_empty(group, &e.to_string()))?;
    let removed = b.offsets.delete(group, None).await?;
    Ok((
        StatusCode::OK,
        json!({"group_id": group, "deleted_offsets": removed}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetEntry {
    topic: String,
    partition: i32,
    offset: i64,
    metadata: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    offsets: Vec<OffsetEntry>,
}

/// Commits offsets for a group without active members (how the CLI's `consume --group`
/// records its progress).
pub async fn commit(ctx: &HttpContext, group: &str, req: Commit) -> Reply {
    let b = &ctx.broker;
    GroupCoordinator::validate_group_id(group)
        .map_err(|e| ApiError::bad_request(format!("invalid group id: {e}")))?;
    if req.offsets.len() > OFFSETS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {OFFSETS_PER_REQUEST_MAX} offsets per request"
        )));
    }
    require_inactive(b, group)?;
    let mut commits = Vec::with_capacity(req.offsets.len());
    for e in req.offsets {
        let p = b.partition(&e.topic, e.partition)?;
        if e.offset < 0 || e.offset > p.log.high_watermark() {
            return Err(ApiError::bad_request(format!(
                "offset {} of {}-{} is outside [0, {}]",
                e.offset,
                e.topic,
                e.partition,
                p.log.high_watermark()
            )));
        }
        let metadata_len = e.metadata.as_ref().map_or(0, String::len);
        if metadata_len > conflux_broker::offsets::METADATA_SIZE_BYTES_MAX {
            return Err(ApiError::bad_request(format!(
                "metadata of {metadata_len} bytes exceeds {} bytes",
                conflux_broker::offsets::METADATA_SIZE_BYTES_MAX
            )));
        }
        commits.push((e.topic, e.partition, committed(e.offset, e.metadata)));
    }
    let count = commits.len();
    b.offsets.commit(group, commits).await?;
    Ok((
        StatusCode::OK,
        json!({"group_id": group, "committed": count}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// `earliest`, `latest`, `timestamp` or `offset`.
    to: String,
    timestamp_ms: Option<i64>,
    offset: Option<i64>,
    /// Only this topic (default: every topic the group has committed offsets for).
    topic: Option<String>,
    /// Only these partitions of `topic` (default: all).
    partitions: Option<Vec<i32>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

pub async fn reset_offsets(ctx: &HttpContext, group: &str, req: Reset) -> Reply {
    let b = ctx.broker.clone();
    GroupCoordinator::validate_group_id(group)
        .map_err(|e| ApiError::bad_request(format!("invalid group id: {e}")))?;
    let target = parse_target(&req)?;
    let partitions = reset_scope(&b, group, &req)?;
    require_inactive(&b, group)?;
    let planned = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        partitions
            .into_iter()
            .map(|(topic, partition)| {
                let offset = resolve(&b, &topic, partition, target)?;
                Ok((topic, partition, offset))
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let rows: Vec<Value> = planned
        .iter()
        .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o}))
        .collect();
    if !req.dry_run {
        let commits = planned
            .into_iter()
            .map(|(t, p, o)| (t, p, committed(o, None)))
            .collect();
        ctx.broker.offsets.commit(group, commits).await?;
    }
    Ok((
        StatusCode::OK,
        json!({"group_id": group, "dry_run": req.dry_run, "offsets": rows}),
    ))
}

fn parse_target(req: &Reset) -> Result<Target, ApiError> {
    let need = |what: Option<i64>, field: &str| {
        what.ok_or_else(|| {
            ApiError::bad_request(format!("\"to\": \"{}\" needs \"{field}\"", req.to))
        })
    };
    Ok(match req.to.as_str() {
        "earliest" => Target::Earliest,
        "latest" => Target::Latest,
        "timestamp" => Target::Timestamp(need(req.timestamp_ms, "timestamp_ms")?),
        "offset" => Target::Offset(need(req.offset, "offset")?),
        other => {
            return Err(ApiError::bad_request(format!(
                "\"to\" must be earliest, latest, timestamp or offset, not '{other}'"
            )))
        }
    })
}

/// The partitions a reset applies to.
fn reset_scope(b: &Broker, group: &str, req: &Reset) -> Result<Vec<(String, i32)>, ApiError> {
    let scope: Vec<(String, i32)> = match &req.topic {
        Some(topic) => {
            let t = b
                .topic(topic)
                .ok_or_else(|| ApiError::unknown_topic(topic))?;
            let all: Vec<i32> = (0..t.partition_count() as i32).collect();
            let wanted = req.partitions.clone().unwrap_or(all);
            for p in &wanted {
                if t.partition(*p).is_none() {
                    return Err(ApiError::not_found(
                        "unknown_partition",
                        format!("topic '{topic}' has no partition {p}"),
                    ));
                }
            }
            wanted.into_iter().map(|p| (topic.clone(), p)).collect()
        }
        None if req.partitions.is_some() => {
            return Err(ApiError::bad_request("\"partitions\" needs \"topic\""))
        }
        None => b
            .offsets
            .fetch_all(group)
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .filter(|(t, p)| b.partition(t, *p).is_ok())
            .collect(),
    };
    if scope.is_empty() {
        return Err(ApiError::bad_request(format!(
            "group '{group}' has no committed offsets; name a \"topic\" to reset"
        )));
    }
    if scope.len() > OFFSETS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request("too many partitions in one reset"));
    }
    Ok(scope)
}

/// The offset `target` means on one partition, clamped to what the log holds. Blocking.
fn resolve(b: &Broker, topic: &str, partition: i32, target: Target) -> Result<i64, ApiError> {
    let log = &b.partition(topic, partition)?.log;
    let (start, end) = (log.log_start_offset(), log.high_watermark());
    Ok(match target {
        Target::Earliest => start,
        Target::Latest => end,
        Target::Offset(o) => o.clamp(start, end),
        Target::Timestamp(ts) => log
            .offset_for_timestamp(ts)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_or(end, |(offset, _)| offset),
    })
}

/// Offsets may only be changed from outside while no consumer is in the group (Kafka's rule).
fn require_inactive(b: &Broker, group: &str) -> Result<(), ApiError> {
    let d = b.groups.describe(group);
    if d.members.is_empty() {
        return Ok(());
    }
    Err(not_empty(
        group,
        &format!(
            "it has {} active member(s) (state {})",
            d.members.len(),
            state_name(d.state)
        ),
    ))
}

fn not_empty(group: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "group_not_empty",
        format!("group '{group}' must have no active members: {why}; stop its consumers first"),
    )
}

fn unknown_group(group: &str) -> ApiError {
    ApiError::not_found(
        "unknown_group",
        format!("consumer group '{group}' does not exist"),
    )
}

fn committed(offset: i64, metadata: Option<String>) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata,
        commit_timestamp_ms: conflux_broker::now_ms(),
    }
}

/// Groups with committed offsets but no membership record are reported as `Empty`.
fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Dead => "Empty",
        other => other.name(),
    }
}
