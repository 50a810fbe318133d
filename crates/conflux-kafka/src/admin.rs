//! Admin APIs: create/delete topics, add partitions, describe and alter configs, describe the
//! cluster and its log directories.

use std::collections::BTreeMap;
use std::sync::Arc;

use conflux_broker::topic_config::{self, ConfigSource, ConfigType, TopicConfig};
use conflux_broker::{BrokerError, NewTopic};
use conflux_wire::generated::alter_configs_response::AlterConfigsResourceResponse;
use conflux_wire::generated::create_partitions_response::CreatePartitionsTopicResult;
use conflux_wire::generated::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use conflux_wire::generated::delete_topics_response::DeletableTopicResult;
use conflux_wire::generated::describe_cluster_response::DescribeClusterBroker;
use conflux_wire::generated::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use conflux_wire::generated::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use conflux_wire::generated::incremental_alter_configs_response::AlterConfigsResourceResponse as IncAlterResponse;
use conflux_wire::generated::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use crate::{error_code, KafkaContext};

/// A resource to alter: (resource type, name, [(config key, operation, value)]).
type AlterTarget = (i8, String, Vec<(String, i8, Option<String>)>);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs `config_source` values.
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

fn err_parts(e: &BrokerError) -> (i16, Option<String>) {
    (error_code::from_broker(e), Some(e.to_string()))
}

/// Partitions of a CreateTopics entry with a manual replica assignment, checked as Kafka does:
/// `num_partitions` and `replication_factor` must then be -1, the partition indexes must be the
/// sequence 0, 1, 2, … and every partition's only replica must be this broker. `Ok(None)` when
/// the entry has no assignment.
fn assigned_partitions(
    t: &conflux_wire::generated::create_topics_request::CreatableTopic,
    node_id: i32,
) -> Result<Option<u32>, (i16, String)> {
    if t.assignments.is_empty() {
        return Ok(None);
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err((
            error_code::INVALID_REQUEST,
            "a manual replica assignment was given, so num_partitions and replication_factor \
             must be -1"
                .into(),
        ));
    }
    for (i, a) in t.assignments.iter().enumerate() {
        if i64::from(a.partition_index) != i as i64 {
            return Err((
                error_code::INVALID_REPLICA_ASSIGNMENT,
                "partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
        if a.broker_ids != [node_id] {
            return Err((
                error_code::INVALID_REPLICA_ASSIGNMENT,
                format!("replica assignments may only name this broker ({node_id})"),
            ));
        }
    }
    Ok(Some(t.assignments.len() as u32))
}

pub async fn create_topics(
    ctx: &Arc<KafkaContext>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let broker = ctx.broker.clone();
    let validate_only = req.validate_only;
    let topics =
        blocking(move || {
            req.topics
                .into_iter()
                .map(|t| {
                    let mut configs = BTreeMap::new();
                    for c in &t.configs {
                        if let Some(v) = &c.value {
                            configs.insert(c.name.clone(), v.clone());
                        }
                    }
                    let assigned = match assigned_partitions(&t, broker.node_id()) {
                        Ok(assigned) => assigned,
                        Err((code, message)) => {
                            return CreatableTopicResult {
                                name: t.name,
                                error_code: code,
                                error_message: Some(message),
                                num_partitions: -1,
                                replication_factor: -1,
                                configs: None,
                                ..Default::default()
                            }
                        }
                    };
                    let new = NewTopic {
                        name: t.name.clone(),
                        partitions: assigned
                            .or((t.num_partitions > 0).then_some(t.num_partitions as u32)),
                        replication_factor: Some(t.replication_factor),
                        configs,
                    };
                    let bad_partitions = t.num_partitions == 0 || t.num_partitions < -1;
                    let result = if bad_partitions {
                        Err(BrokerError::InvalidPartitions(format!(
                            "number of partitions must be larger than 0, got {}",
                            t.num_partitions
                        )))
                    } else if validate_only {
                        broker.validate_new_topic(&new).map(|_| None)
                    } else {
                        broker.create_topic(new.clone(), false).map(Some)
                    };
                    match result {
                        Ok(created) => {
                            let partitions = broker.validate_new_topic(&new).unwrap_or(0);
                            let partitions = created
                                .as_ref()
                                .map_or(partitions as i32, |c| c.partition_count() as i32);
                            let cfg = created.as_ref().map(|c| c.config()).unwrap_or_else(|| {
                                TopicConfig {
                                    defaults: broker.config().topic_defaults.clone(),
                                    overrides: new.configs.clone(),
                                }
                            });
                            CreatableTopicResult {
                                name: t.name,
                                topic_id: created.as_ref().map(|c| c.id).unwrap_or_default(),
                                error_code: error_code::NONE,
                                num_partitions: partitions,
                                replication_factor: 1,
                                configs: (version >= 5).then(|| created_configs(&cfg)),
                                ..Default::default()
                            }
                        }
                        Err(e) => {
                            let (code, message) = err_parts(&e);
                            CreatableTopicResult {
                                name: t.name,
                                error_code: code,
                                error_message: message,
                                num_partitions: -1,
                                replication_factor: -1,
                                configs: None,
                                ..Default::default()
                            }
                        }
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default();
    CreateTopicsResponse {
        topics,
        ..Default::default()
    }
}

fn created_configs(cfg: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    topic_config::TOPIC_CONFIG_KEYS
        .iter()
        .filter_map(|k| {
            let (value, source) = cfg.get(k.name)?;
            Some(CreatableTopicConfigs {
                name: k.name.to_string(),
                value: Some(value),
                read_only: false,
                config_source: source_code(source),
                is_sensitive: false,
                ..Default::default()
            })
        })
        .collect()
}

fn source_code(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::Topic => SOURCE_TOPIC_CONFIG,
        ConfigSource::Default => SOURCE_DEFAULT_CONFIG,
    }
}

fn type_code(kind: ConfigType) -> i8 {
    match kind {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Short => 4,
        ConfigType::Long => 5,
        ConfigType::Double => 6,
        ConfigType::List => 7,
    }
}

pub async fn delete_topics(
    ctx: &Arc<KafkaContext>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let broker = ctx.broker.clone();
    // v0-5 name topics in `topic_names`; v6 in `topics` by name or id.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let responses = blocking(move || {
        targets
            .into_iter()
            .map(|(name, id)| {
                let resolved = match &name {
                    Some(n) => broker.topic(n),
                    None => broker.topic_by_id(id),
                };
                let result = match resolved {
                    None if name.is_none() => Err((
                        error_code::UNKNOWN_TOPIC_ID,
                        format!("no topic with id {id}"),
                    )),
                    None => Err((
                        error_code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("unknown topic '{}'", name.clone().unwrap_or_default()),
                    )),
                    Some(t) if t.internal => Err((
                        error_code::TOPIC_AUTHORIZATION_FAILED,
                        format!("topic '{}' is internal", t.name),
                    )),
                    Some(t) => broker
                        .delete_topic(&t.name)
                        .map(|_| t)
                        .map_err(|e| (error_code::from_broker(&e), e.to_string())),
                };
                match result {
                    Ok(t) => DeletableTopicResult {
                        name: Some(t.name.clone()),
                        topic_id: t.id,
                        error_code: error_code::NONE,
                        ..Default::default()
                    },
                    Err((code, message)) => DeletableTopicResult {
                        name,
                        topic_id: id,
                        error_code: code,
                        error_message: Some(message),
                        ..Default::default()
                    },
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    DeleteTopicsResponse {
        responses,
        ..Default::default()
    }
}

pub async fn create_partitions(
    ctx: &Arc<KafkaContext>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = ctx.broker.clone();
    let validate_only = req.validate_only;
    let results = blocking(move || {
        req.topics
            .into_iter()
            .map(|t| {
                let result = if t.count <= 0 {
                    Err(BrokerError::InvalidPartitions(format!(
                        "partition count must be positive, got {}",
                        t.count
                    )))
                } else {
                    broker.create_partitions(&t.name, t.count as u32, validate_only)
                };
                let (error_code, error_message) = match result {
                    Ok(()) => (error_code::NONE, None),
                    Err(e) => err_parts(&e),
                };
                CreatePartitionsTopicResult {
                    name: t.name,
                    error_code,
                    error_message,
                    ..Default::default()
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    CreatePartitionsResponse {
        results,
        ..Default::default()
    }
}

pub fn describe_configs(
    ctx: &KafkaContext,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k == name))
            };
            let mut result = DescribeConfigsResult {
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                ..Default::default()
            };
            match r.resource_type {
                RESOURCE_TOPIC => match ctx.broker.topic(&r.resource_name) {
                    Some(topic) => {
                        let cfg = topic.config();
                        result.configs = topic_config::TOPIC_CONFIG_KEYS
                            .iter()
                            .filter(|k| wanted(k.name))
                            .filter_map(|k| {
                                let (value, source) = cfg.get(k.name)?;
                                Some(describe_entry(
                                    k.name,
                                    value,
                                    source_code(source),
                                    type_code(k.kind),
                                    k.doc,
                                    req.include_synonyms,
                                    version,
                                ))
                            })
                            .collect();
                    }
                    None => {
                        result.error_code = error_code::UNKNOWN_TOPIC_OR_PARTITION;
                        result.error_message = Some(format!("unknown topic '{}'", r.resource_name));
                    }
                },
                RESOURCE_BROKER => {
                    result.configs = broker_configs(ctx)
                        .into_iter()
                        .filter(|(name, _, _)| wanted(name))
                        .map(|(name, value, kind)| {
                            let mut e = describe_entry(
                                name,
                                value,
                                SOURCE_STATIC_BROKER_CONFIG,
                                kind,
                                "",
                                req.include_synonyms,
                                version,
                            );
                            e.read_only = true;
                            e
                        })
                        .collect();
                }
                other => {
                    result.error_code = error_code::INVALID_REQUEST;
                    result.error_message = Some(format!("resource type {other} is not supported"));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse {
        results,
        ..Default::default()
    }
}

fn describe_entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    doc: &str,
    include_synonyms: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms && version >= 1 {
        vec![DescribeConfigsSynonym {
            name: name.to_string(),
            value: Some(value.clone()),
            source,
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult {
        name: name.to_string(),
        value: Some(value),
        read_only: false,
        is_default: source == SOURCE_DEFAULT_CONFIG,
        config_source: source,
        is_sensitive: false,
        synonyms,
        config_type,
        documentation: Some(doc.to_string()),
        ..Default::default()
    }
}

/// The broker-level settings reported by DescribeConfigs on a broker resource.
fn broker_configs(ctx: &KafkaContext) -> Vec<(&'static str, String, i8)> {
    let cfg = ctx.broker.config();
    vec![
        ("broker.id", cfg.node_id.to_string(), 3),
        (
            "auto.create.topics.enable",
            cfg.auto_create_topics.to_string(),
            1,
        ),
        ("num.partitions", cfg.num_partitions.to_string(), 3),
        ("default.replication.factor", "1".to_string(), 4),
        (
            "log.dirs",
            cfg.data_dir.join("logs").display().to_string(),
            2,
        ),
        (
            "socket.request.max.bytes",
            ctx.config.request_size_bytes_max.to_string(),
            3,
        ),
        (
            "advertised.listeners",
            format!(
                "PLAINTEXT://{}:{}",
                ctx.config.advertised_host, ctx.config.advertised_port
            ),
            2,
        ),
    ]
}

/// Applies AlterConfigs (replace all overrides) or IncrementalAlterConfigs (per-key ops).
async fn alter(
    ctx: &Arc<KafkaContext>,
    resources: Vec<AlterTarget>,
    incremental: bool,
    validate_only: bool,
) -> Vec<(i8, String, i16, Option<String>)> {
    let broker = ctx.broker.clone();
    blocking(move || {
        resources
            .into_iter()
            .map(|(rtype, name, ops)| {
                if rtype != RESOURCE_TOPIC {
                    return (rtype, name, error_code::INVALID_REQUEST, Some("only topic configs can be altered; broker settings live in conflux.toml".to_string()));
                }
                let Some(topic) = broker.topic(&name) else {
                    return (rtype, name.clone(), error_code::UNKNOWN_TOPIC_OR_PARTITION, Some(format!("unknown topic '{name}'")));
                };
                let mut overrides = if incremental { topic.config().overrides } else { BTreeMap::new() };
                for (key, op, value) in ops {
                    if let Err(e) = apply_op(&mut overrides, &key, op, value) {
                        return (rtype, name, error_code::INVALID_CONFIG, Some(e));
                    }
                }
                match broker.set_topic_configs(&name, overrides, validate_only) {
                    Ok(()) => (rtype, name, error_code::NONE, None),
                    Err(e) => {
                        let (code, msg) = err_parts(&e);
                        (rtype, name, code, msg)
                    }
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Incremental ops: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
fn apply_op(
    overrides: &mut BTreeMap<String, String>,
    key: &str,
    op: i8,
    value: Option<String>,
) -> Result<(), String> {
    if topic_config::config_key(key).is_none() {
        return Err(format!("unknown topic config '{key}'"));
    }
    match op {
        0 => {
            let v = value.ok_or_else(|| format!("a value is required to set '{key}'"))?;
            overrides.insert(key.to_string(), v);
        }
        1 => {
            overrides.remove(key);
        }
        2 | 3 => {
            let current = overrides.get(key).cloned().unwrap_or_default();
            let mut items: Vec<String> = current
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let v = value.unwrap_or_default();
            if op == 2 {
                items.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
            } else {
                items.retain(|i| !v.split(',').any(|x| x == i));
            }
            overrides.insert(key.to_string(), items.join(","));
        }
        other => return Err(format!("unknown config operation {other}")),
    }
    Ok(())
}

pub async fn alter_configs(
    ctx: &Arc<KafkaContext>,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            (
                r.resource_type,
                r.resource_name,
                r.configs
                    .into_iter()
                    .map(|c| (c.name, 0i8, c.value))
                    .collect(),
            )
        })
        .collect();
    let responses = alter(ctx, resources, false, req.validate_only)
        .await
        .into_iter()
        .map(
            |(resource_type, resource_name, error_code, error_message)| {
                AlterConfigsResourceResponse {
                    error_code,
                    error_message,
                    resource_type,
                    resource_name,
                    ..Default::default()
                }
            },
        )
        .collect();
    AlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

pub async fn incremental_alter_configs(
    ctx: &Arc<KafkaContext>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            (
                r.resource_type,
                r.resource_name,
                r.configs
                    .into_iter()
                    .map(|c| (c.name, c.config_operation, c.value))
                    .collect(),
            )
        })
        .collect();
    let responses = alter(ctx, resources, true, req.validate_only)
        .await
        .into_iter()
        .map(
            |(resource_type, resource_name, error_code, error_message)| IncAlterResponse {
                error_code,
                error_message,
                resource_type,
                resource_name,
                ..Default::default()
            },
        )
        .collect();
    IncrementalAlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

pub fn describe_cluster(
    ctx: &KafkaContext,
    _req: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    DescribeClusterResponse {
        error_code: error_code::NONE,
        endpoint_type: 1,
        cluster_id: ctx.broker.cluster_id().to_string(),
        controller_id: ctx.broker.node_id(),
        brokers: vec![DescribeClusterBroker {
            broker_id: ctx.broker.node_id(),
            host: ctx.config.advertised_host.clone(),
            port: ctx.config.advertised_port,
            rack: None,
            ..Default::default()
        }],
        cluster_authorized_operations: i32::MIN,
        ..Default::default()
    }
}

pub fn describe_log_dirs(
    ctx: &KafkaContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req
        .topics
        .map(|ts| ts.into_iter().map(|t| (t.topic, t.partitions)).collect());
    let topics = ctx
        .broker
        .topics()
        .into_iter()
        .filter_map(|t| {
            let filter = match &wanted {
                None => None,
                Some(w) => Some(w.get(&t.name)?.clone()),
            };
            let partitions = t
                .partitions()
                .iter()
                .filter(|p| filter.as_ref().is_none_or(|f| f.contains(&p.index)))
                .map(|p| DescribeLogDirsPartition {
                    partition_index: p.index,
                    partition_size: p.log.size_bytes() as i64,
                    offset_lag: 0,
                    is_future_key: false,
                    ..Default::default()
                })
                .collect();
            Some(DescribeLogDirsTopic {
                name: t.name.clone(),
                partitions,
                ..Default::default()
            })
        })
        .collect();
    let log_dir = ctx.broker.data_dir().join("logs").display().to_string();
    DescribeLogDirsResponse {
        results: vec![DescribeLogDirsResult {
            error_code: error_code::NONE,
            log_dir,
            topics,
            total_bytes: -1,
            usable_bytes: -1,
            ..Default::default()
        }],
        ..Default::default()
    }
}
