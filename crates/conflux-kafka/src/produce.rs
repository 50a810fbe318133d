//! Produce: validates and appends each partition's record batches, waiting for durability
//! according to `acks`, and reports per-partition results.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use conflux_broker::AppendInfo;
use conflux_broker::{BrokerError, Partition};
use conflux_wire::generated::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use conflux_wire::generated::{ProduceRequest, ProduceResponse};

use crate::{error_code, KafkaContext, KafkaMetrics};

/// The rest of a produce request once its batches are queued: resolves with the response when
/// every partition's append is durable (or failed, or timed out).
pub type ProduceCompletion = Pin<Box<dyn Future<Output = ProduceResponse> + Send>>;

type PartitionResult = (
    usize,
    String,
    i32,
    Result<(AppendInfo, Option<Arc<Partition>>), BrokerError>,
);

/// Validates and queues every partition's batches now, in request order (so one connection's
/// pipelined produce requests are appended in the order they were sent), and returns the
/// completion that waits for durability.
pub async fn handle(
    ctx: &Arc<KafkaContext>,
    req: ProduceRequest,
    version: i16,
) -> ProduceCompletion {
    if !matches!(req.acks, -1..=1) {
        let resp = error_for_all(
            &req,
            error_code::INVALID_REQUIRED_ACKS,
            "acks must be -1, 0 or 1",
        );
        return Box::pin(std::future::ready(resp));
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let mut started = Vec::new();
    for (topic_index, topic_data) in req.topic_data.into_iter().enumerate() {
        let topic = ctx.broker.topic(&topic_data.name);
        for part in topic_data.partition_data {
            let name = topic_data.name.clone();
            let begun = match (&topic, part.records) {
                (None, _) => Err(BrokerError::UnknownTopicOrPartition(name.clone())),
                (Some(_), None) => Err(BrokerError::CorruptMessage("null record set".into())),
                (Some(_), Some(records)) if has_control_batch(&records) => Err(
                    BrokerError::InvalidRecord("clients may not write control batches".into()),
                ),
                (Some(t), Some(records)) => t
                    .begin_append(part.index, records)
                    .await
                    .map(|pending| (pending, t.clone())),
            };
            started.push((topic_index, name, part.index, begun));
        }
    }
    let metrics = ctx.metrics.clone();
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results: Vec<PartitionResult> = Vec::with_capacity(started.len());
        for (topic_index, name, index, begun) in started {
            let result = match begun {
                Err(e) => Err(e),
                Ok((pending, topic)) => {
                    match tokio::time::timeout_at(deadline, pending.finish()).await {
                        Ok(r) => r.map(|info| (info, topic.partition(index))),
                        Err(_) => Err(BrokerError::Storage(
                            "timed out waiting for durability".into(),
                        )),
                    }
                }
            };
            results.push((topic_index, name, index, result));
        }
        respond(results, version, &metrics)
    })
}

fn respond(
    mut results: Vec<PartitionResult>,
    version: i16,
    metrics: &KafkaMetrics,
) -> ProduceResponse {
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
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
                metrics.apis.error(conflux_wire::generated::ApiKey::Produce);
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

/// Whether any (complete) batch of a produce payload is flagged as a control batch: only the
/// broker writes those (transaction markers). Malformed payloads are left to the topic's checks.
fn has_control_batch(records: &bytes::Bytes) -> bool {
    let mut rest = records.clone();
    while let Ok(Some((header, _))) = conflux_wire::batch::split_batch(&mut rest) {
        if header.is_control() {
            return true;
        }
    }
    false
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
