//! Cluster, topic and partition endpoints of the admin API.
//!
//! Calls that write metadata or open log files run on a blocking thread (DESIGN §4: no
//! blocking file I/O on async workers).

use std::collections::BTreeMap;
use std::sync::Arc;

use conflux_broker::topic_config::{ConfigSource, TOPIC_CONFIG_KEYS};
use conflux_broker::{Broker, NewTopic, Partition, Topic};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::router::{query_param, Reply};
use crate::{ApiError, HttpContext};

/// Topic configs settable in one call, at most.
const CONFIGS_PER_REQUEST_MAX: usize = 1_000;

pub fn cluster(ctx: &HttpContext) -> Reply {
    let b = &ctx.broker;
    let topics = b.topics();
    let partitions: usize = topics.iter().map(|t| t.partition_count()).sum();
    Ok((
        StatusCode::OK,
        json!({
            "cluster_id": b.cluster_id(),
            "node_id": b.node_id(),
            "version": env!("CARGO_PKG_VERSION"),
            "data_dir": b.data_dir().display().to_string(),
            "nodes": [{"node_id": b.node_id()}],
            "topics": topics.iter().filter(|t| !t.internal).count(),
            "partitions": partitions,
            "groups": crate::groups::all_group_ids(b).len(),
            "alarms": b.alarms.status(),
        }),
    ))
}

/// `GET /api/v1/alarms`: the resource alarms and what they compare.
pub fn alarms(ctx: &HttpContext) -> Reply {
    Ok((StatusCode::OK, json!(ctx.broker.alarms.status())))
}

/// New alarm thresholds; an absent field keeps its value, `memory_high_watermark_bytes: 0`
/// restores the default (40 % of physical memory), `disk_free_limit_bytes: 0` disables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAlarmLimits {
    memory_high_watermark_bytes: Option<u64>,
    disk_free_limit_bytes: Option<u64>,
}

/// `PUT /api/v1/alarms`: changes the thresholds until the next restart, then re-checks.
pub async fn set_alarms(ctx: &HttpContext, req: SetAlarmLimits) -> Reply {
    let alarms = ctx.broker.alarms.clone();
    alarms.set_limits(req.memory_high_watermark_bytes, req.disk_free_limit_bytes);
    let checked = alarms.clone();
    tokio::task::spawn_blocking(move || checked.check_disk())
        .await
        .map_err(|e| ApiError::internal(format!("disk check failed: {e}")))?;
    Ok((StatusCode::OK, json!(alarms.status())))
}

pub fn list_topics(ctx: &HttpContext, query: &str) -> Reply {
    let with_internal = matches!(query_param(query, "internal"), Some("true" | "1"));
    let topics: Vec<Value> = ctx
        .broker
        .topics()
        .iter()
        .filter(|t| with_internal || !t.internal)
        .map(|t| {
            let parts = t.partitions();
            json!({
                "name": t.name,
                "topic_id": t.id.to_string(),
                "internal": t.internal,
                "partitions": parts.len(),
                "size_bytes": parts.iter().map(|p| p.log.size_bytes()).sum::<u64>(),
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "topics": topics })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    replication_factor: Option<i16>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

pub async fn create_topic(ctx: &HttpContext, req: CreateTopic) -> Reply {
    if req.configs.len() > CONFIGS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request("too many configs"));
    }
    let new = NewTopic {
        name: req.name,
        partitions: req.partitions,
        replication_factor: req.replication_factor,
        configs: req.configs,
    };
    let topic = blocking(&ctx.broker, move |b| b.create_topic(new, false)).await?;
    Ok((StatusCode::CREATED, describe(&topic)))
}

pub fn describe_topic(ctx: &HttpContext, name: &str) -> Reply {
    let topic = lookup(&ctx.broker, name)?;
    Ok((StatusCode::OK, describe(&topic)))
}

pub async fn delete_topic(ctx: &HttpContext, name: &str) -> Reply {
    let topic = lookup(&ctx.broker, name)?;
    if topic.internal {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal_topic",
            format!("topic '{name}' is internal and cannot be deleted"),
        ));
    }
    let name = name.to_owned();
    blocking(&ctx.broker, move |b| b.delete_topic(&name)).await?;
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

pub fn topic_configs(ctx: &HttpContext, name: &str) -> Reply {
    let topic = lookup(&ctx.broker, name)?;
    Ok((StatusCode::OK, json!({ "configs": configs(&topic) })))
}

/// Incremental change: `set` adds or replaces overrides, `delete` reverts keys to defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlterConfigs {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    validate_only: bool,
}

pub async fn alter_configs(ctx: &HttpContext, name: &str, req: AlterConfigs) -> Reply {
    if req.set.len() + req.delete.len() > CONFIGS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request("too many configs"));
    }
    let topic = lookup(&ctx.broker, name)?;
    let mut overrides = topic.config().overrides;
    for key in &req.delete {
        if conflux_broker::topic_config::config_key(key).is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                format!("unknown topic config '{key}'"),
            ));
        }
        overrides.remove(key);
    }
    overrides.extend(req.set);
    let owned = name.to_owned();
    let validate_only = req.validate_only;
    blocking(&ctx.broker, move |b| {
        b.set_topic_configs(&owned, overrides, validate_only)
    })
    .await?;
    let topic = lookup(&ctx.broker, name)?;
    Ok((StatusCode::OK, json!({ "configs": configs(&topic) })))
}

pub fn partitions(ctx: &HttpContext, name: &str) -> Reply {
    let topic = lookup(&ctx.broker, name)?;
    let parts: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|p| partition_json(p))
        .collect();
    Ok((StatusCode::OK, json!({ "partitions": parts })))
}

pub fn partition(ctx: &HttpContext, name: &str, index: &str) -> Reply {
    let topic = lookup(&ctx.broker, name)?;
    let p = lookup_partition(&topic, index)?;
    Ok((StatusCode::OK, partition_json(&p)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPartitions {
    count: u32,
}

pub async fn add_partitions(ctx: &HttpContext, name: &str, req: AddPartitions) -> Reply {
    lookup(&ctx.broker, name)?;
    let owned = name.to_owned();
    blocking(&ctx.broker, move |b| {
        b.create_partitions(&owned, req.count, false)
    })
    .await?;
    describe_topic(ctx, name)
}

pub fn lookup(broker: &Broker, name: &str) -> Result<Arc<Topic>, ApiError> {
    broker
        .topic(name)
        .ok_or_else(|| ApiError::unknown_topic(name))
}

pub fn lookup_partition(topic: &Topic, index: &str) -> Result<Arc<Partition>, ApiError> {
    let parsed: i32 = index
        .parse()
        .map_err(|_| ApiError::bad_request(format!("partition '{index}' is not a number")))?;
    topic.partition(parsed).ok_or_else(|| {
        ApiError::not_found(
            "unknown_partition",
            format!(
                "topic '{}' has no partition {parsed} (it has {})",
                topic.name,
                topic.partition_count()
            ),
        )
    })
}

fn describe(topic: &Topic) -> Value {
    let parts: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|p| partition_json(p))
        .collect();
    json!({
        "name": topic.name,
        "topic_id": topic.id.to_string(),
        "internal": topic.internal,
        "partitions": parts,
        "configs": configs(topic),
    })
}

fn partition_json(p: &Partition) -> Value {
    let log = &p.log;
    json!({
        "partition": p.index,
        "leader": 0,
        "leader_epoch": p.leader_epoch,
        "log_start_offset": log.log_start_offset(),
        "log_end_offset": log.log_end_offset(),
        "high_watermark": log.high_watermark(),
        "size_bytes": log.size_bytes(),
        "segments": log.segment_count(),
    })
}

fn configs(topic: &Topic) -> Value {
    let cfg = topic.config();
    let map: serde_json::Map<String, Value> = TOPIC_CONFIG_KEYS
        .iter()
        .filter_map(|k| cfg.get(k.name).map(|(v, source)| (k.name, v, source)))
        .map(|(name, value, source)| {
            let source = match source {
                ConfigSource::Topic => "topic",
                ConfigSource::Default => "default",
            };
            (name.to_owned(), json!({"value": value, "source": source}))
        })
        .collect();
    Value::Object(map)
}

/// Runs a blocking broker call on the blocking pool and maps its error.
async fn blocking<T, F>(broker: &Arc<Broker>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Broker) -> conflux_broker::Result<T> + Send + 'static,
{
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || f(&broker))
        .await
        .map_err(|e| ApiError::internal(format!("admin task failed: {e}")))?
        .map_err(ApiError::from)
}
