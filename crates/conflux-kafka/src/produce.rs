//! Produce: validates and appends each partition's record batches, waiting for durability
//! according to `acks`, and reports per-partition results.

use std::sync::Arc;
use std::time::Duration;

use conflux_broker::BrokerError;
use conflux_wire::generated::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use conflux_wire::generated::{ProduceRequest, ProduceResponse};

use crate::{error_code, KafkaContext};

pub async fn handle(ctx: &Arc<KafkaContext>, req: ProduceRequest, version: i16) -> ProduceResponse {
    if !matches!(req.acks, -1..=1) {
        return error_for_all(
            &req,
            error_code::INVALID_REQUIRED_ACKS,
            "acks must be -1, 0 or 1",
        );
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for (topic_index, topic_data) in req.topic_data.into_iter().enumerate() {
        let topic = ctx.broker.topic(&topic_data.name);
        for part in topic_data.partition_data {
            let topic = topic.clone();
            let name = topic_data.name.clone();
            tasks.spawn(async move {
                let result = match (topic, part.records) {
                    (None, _) => Err(BrokerError::UnknownTopicOrPartition(name.clone())),
                    (Some(_), None) => Err(BrokerError::CorruptMessage("null record set".into())),
                    (Some(t), Some(records)) => {
                        match tokio::time::timeout(timeout, t.append(part.index, records)).await {
                            Ok(r) => r.map(|info| (info, t.partition(part.index))),
                            Err(_) => Err(BrokerError::Storage(
                                "timed out waiting for durability".into(),
                            )),
                        }
                    }
                };
                (topic_index, name, part.index, result)
            });
        }
    }
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(r) = done {
            results.push(r);
        }
    }
    results.sort_by_key(|(ti, _, pi, _)| (*ti, *pi));
    for (_, name, index, result) in results {
        let resp = match result {
            Ok((info, partition)) => PartitionProduceResponse {
                index,
                error_code: error_code::NONE,
                base_offset: info.base_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: partition.map_or(0, |p| p.log.log_start_offset()),
                ..Default::default()
            },
            Err(e) => {
                let code = match &e {
                    BrokerError::Storage(m) if m.contains("timed out") => {
                        error_code::REQUEST_TIMED_OUT
                    }
                    other => error_code::from_broker(other),
                };
                tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                let record_errors = match &e {
                    BrokerError::RecordsRejected { record_errors, .. } if version >= 8 => {
                        record_errors
                            .iter()
                            .map(|(batch_index, message)| BatchIndexAndErrorMessage {
                                batch_index: *batch_index,
                                batch_index_error_message: Some(message.clone()),
                                ..Default::default()
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                };
                PartitionProduceResponse {
                    record_errors,
                    index,
                    error_code: code,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                    error_message: (version >= 8).then(|| e.to_string()),
                    ..Default::default()
                }
            }
        };
        match responses.last_mut() {
            Some(last) if last.name == name => last.partition_responses.push(resp),
            _ => responses.push(TopicProduceResponse {
                name,
                partition_responses: vec![resp],
                ..Default::default()
            }),
        }
    }
    ProduceResponse {
        responses,
        ..Default::default()
    }
}

fn error_for_all(req: &ProduceRequest, code: i16, message: &str) -> ProduceResponse {
    let responses = req
        .topic_data
        .iter()
        .map(|t| TopicProduceResponse {
            name: t.name.clone(),
            partition_responses: t
                .partition_data
                .iter()
                .map(|p| PartitionProduceResponse {
                    index: p.index,
                    error_code: code,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                    error_message: Some(message.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ProduceResponse {
        responses,
        ..Default::default()
    }
}
