//! Metadata: the broker list, the controller, and topics with their partitions, auto-creating
//! requested topics when the broker allows it.

use std::sync::Arc;

use conflux_broker::{BrokerError, Topic};
use conflux_wire::generated::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use conflux_wire::generated::{MetadataRequest, MetadataResponse};

use crate::{error_code, KafkaContext};

pub async fn handle(
    ctx: &Arc<KafkaContext>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let broker = &ctx.broker;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all_topics = match &req.topics {
        None => true,
        Some(t) if t.is_empty() && version == 0 => true,
        _ => false,
    };
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all_topics {
        for t in broker.topics() {
            topics.push(describe_topic(ctx, &t));
        }
    } else {
        for requested in req.topics.unwrap_or_default() {
            let entry = match requested.name {
                Some(name) => lookup_by_name(ctx, name, allow_auto_create).await,
                None => match broker.topic_by_id(requested.topic_id) {
                    Some(t) => describe_topic(ctx, &t),
                    None => MetadataResponseTopic {
                        error_code: error_code::UNKNOWN_TOPIC_ID,
                        name: None,
                        topic_id: requested.topic_id,
                        ..Default::default()
                    },
                },
            };
            topics.push(entry);
        }
    }
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: broker.node_id(),
            host: ctx.config.advertised_host.clone(),
            port: ctx.config.advertised_port,
            rack: None,
            ..Default::default()
        }],
        cluster_id: Some(broker.cluster_id().to_string()),
        controller_id: broker.node_id(),
        topics,
        ..Default::default()
    }
}

async fn lookup_by_name(
    ctx: &Arc<KafkaContext>,
    name: String,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    let broker = ctx.broker.clone();
    let lookup_name = name.clone();
    let found = if allow_auto_create {
        tokio::task::spawn_blocking(move || broker.topic_or_auto_create(&lookup_name))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Storage(e.to_string())))
    } else {
        broker
            .topic(&name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.clone()))
    };
    match found {
        Ok(t) => describe_topic(ctx, &t),
        Err(e) => MetadataResponseTopic {
            error_code: error_code::from_broker(&e),
            name: Some(name),
            ..Default::default()
        },
    }
}

fn describe_topic(ctx: &KafkaContext, topic: &Topic) -> MetadataResponseTopic {
    let node = ctx.broker.node_id();
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| MetadataResponsePartition {
            error_code: error_code::NONE,
            partition_index: p.index,
            leader_id: node,
            leader_epoch: p.leader_epoch,
            replica_nodes: vec![node],
            isr_nodes: vec![node],
            offline_replicas: vec![],
            ..Default::default()
        })
        .collect();
    MetadataResponseTopic {
        error_code: error_code::NONE,
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: topic.internal,
        partitions,
        ..Default::default()
    }
}
