//! Transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn (v0-3, and the
//! batched v4), AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and the admin views
//! DescribeTransactions, ListTransactions and DescribeProducers. The state machine lives in
//! `conflux_broker::transactions`; this module only maps requests and errors.

use std::sync::Arc;

use conflux_broker::offsets::{CommittedOffset, METADATA_SIZE_BYTES_MAX};
use conflux_broker::transactions::{TxnError, TxnState};
use conflux_wire::generated::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use conflux_wire::generated::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use conflux_wire::generated::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use conflux_wire::generated::describe_transactions_response::{TopicData, TransactionState};
use conflux_wire::generated::list_transactions_response as list_txn;
use conflux_wire::generated::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use conflux_wire::generated::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use crate::{error_code, KafkaContext};

const OFFSET_METADATA_TOO_LARGE: i16 = 12;

/// Kafka error code for a coordinator error. `fenced_from` is the first version of the API
/// that knows PRODUCER_FENCED; older versions get INVALID_PRODUCER_EPOCH.
fn code(e: &TxnError, version: i16, fenced_from: i16) -> i16 {
    match e {
        TxnError::InvalidTransactionTimeout => error_code::INVALID_TRANSACTION_TIMEOUT,
        TxnError::ConcurrentTransactions => error_code::CONCURRENT_TRANSACTIONS,
        TxnError::ProducerFenced if version >= fenced_from => error_code::PRODUCER_FENCED,
        TxnError::ProducerFenced => error_code::INVALID_PRODUCER_EPOCH,
        TxnError::InvalidProducerIdMapping => error_code::INVALID_PRODUCER_ID_MAPPING,
        TxnError::InvalidTxnState(_) => error_code::INVALID_TXN_STATE,
        TxnError::CoordinatorLoadInProgress => error_code::COORDINATOR_LOAD_IN_PROGRESS,
        TxnError::UnknownPartitions(_) => error_code::UNKNOWN_TOPIC_OR_PARTITION,
        TxnError::InvalidRequest(_) => error_code::INVALID_REQUEST,
        TxnError::Storage(_) => error_code::COORDINATOR_NOT_AVAILABLE,
    }
}

fn code_of(r: &Result<(), TxnError>, version: i16, fenced_from: i16) -> i16 {
    r.as_ref()
        .err()
        .map_or(error_code::NONE, |e| code(e, version, fenced_from))
}

pub async fn init_producer_id(
    ctx: &Arc<KafkaContext>,
    id: &str,
    req: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let expected = (req.producer_id >= 0 && req.producer_epoch >= 0)
        .then_some((req.producer_id, req.producer_epoch));
    match ctx
        .broker
        .txns
        .init_producer_id(&ctx.broker, id, req.transaction_timeout_ms, expected)
        .await
    {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
            error_code: error_code::NONE,
            producer_id,
            producer_epoch,
            ..Default::default()
        },
        Err(e) => {
            tracing::debug!(transactional_id = id, error = %e, "InitProducerId refused");
            InitProducerIdResponse {
                error_code: code(&e, version, 4),
                producer_id: -1,
                producer_epoch: -1,
                ..Default::default()
            }
        }
    }
}

fn flatten(topics: &[AddPartitionsToTxnTopic]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect()
}

/// Per-partition results: unknown partitions get UNKNOWN_TOPIC_OR_PARTITION and the others
/// OPERATION_NOT_ATTEMPTED, as Kafka answers; any other error applies to all.
fn partition_results(
    topics: &[AddPartitionsToTxnTopic],
    result: &Result<(), TxnError>,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| AddPartitionsToTxnTopicResult {
            name: t.name.clone(),
            results_by_partition: t
                .partitions
                .iter()
                .map(|p| {
                    let partition_error_code = match result {
                        Err(TxnError::UnknownPartitions(unknown)) => {
                            if unknown.iter().any(|(n, i)| *n == t.name && i == p) {
                                error_code::UNKNOWN_TOPIC_OR_PARTITION
                            } else {
                                error_code::OPERATION_NOT_ATTEMPTED
                            }
                        }
                        other => code_of(other, version, 2),
                    };
                    AddPartitionsToTxnPartitionResult {
                        partition_index: *p,
                        partition_error_code,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Transactions per batched (v4+) AddPartitionsToTxn request.
const TRANSACTIONS_PER_REQUEST_MAX: usize = 1_000;

pub async fn add_partitions_to_txn(
    ctx: &Arc<KafkaContext>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let txns = &ctx.broker.txns;
    if version < 4 {
        let parts = flatten(&req.v3_and_below_topics);
        let result = txns
            .add_partitions(
                &ctx.broker,
                &req.v3_and_below_transactional_id,
                req.v3_and_below_producer_id,
                req.v3_and_below_producer_epoch,
                parts,
                false,
            )
            .await;
        return AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: partition_results(
                &req.v3_and_below_topics,
                &result,
                version,
            ),
            ..Default::default()
        };
    }
    if req.transactions.len() > TRANSACTIONS_PER_REQUEST_MAX {
        return AddPartitionsToTxnResponse {
            error_code: error_code::INVALID_REQUEST,
            ..Default::default()
        };
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in req.transactions {
        let result = txns
            .add_partitions(
                &ctx.broker,
                &t.transactional_id,
                t.producer_id,
                t.producer_epoch,
                flatten(&t.topics),
                t.verify_only,
            )
            .await;
        results.push(AddPartitionsToTxnResult {
            topic_results: partition_results(&t.topics, &result, version),
            transactional_id: t.transactional_id,
            ..Default::default()
        });
    }
    AddPartitionsToTxnResponse {
        error_code: error_code::NONE,
        results_by_transaction: results,
        ..Default::default()
    }
}

pub async fn add_offsets_to_txn(
    ctx: &Arc<KafkaContext>,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let result = ctx
        .broker
        .txns
        .add_offsets(
            &req.transactional_id,
            req.producer_id,
            req.producer_epoch,
            &req.group_id,
        )
        .await;
    AddOffsetsToTxnResponse {
        error_code: code_of(&result, version, 2),
        ..Default::default()
    }
}

pub async fn txn_offset_commit(
    ctx: &Arc<KafkaContext>,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let now = conflux_broker::now_ms();
    let mut offsets = Vec::new();
    let mut too_large = false;
    for t in &req.topics {
        for p in &t.partitions {
            if p.committed_metadata.as_ref().map_or(0, String::len) > METADATA_SIZE_BYTES_MAX {
                too_large = true;
            }
            offsets.push((
                t.name.clone(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.clone(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let result = if too_large {
        Err(TxnError::InvalidRequest("offset metadata too large".into()))
    } else {
        ctx.broker
            .txns
            .txn_offset_commit(
                &req.transactional_id,
                req.producer_id,
                req.producer_epoch,
                &req.group_id,
                offsets,
            )
            .await
    };
    let partition_code = match &result {
        Err(TxnError::InvalidRequest(_)) if too_large => OFFSET_METADATA_TOO_LARGE,
        other => code_of(other, version, 3),
    };
    TxnOffsetCommitResponse {
        topics: req
            .topics
            .iter()
            .map(|t| TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: partition_code,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub async fn end_txn(ctx: &Arc<KafkaContext>, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let result = ctx
        .broker
        .txns
        .end_txn(
            &ctx.broker,
            &req.transactional_id,
            req.producer_id,
            req.producer_epoch,
            req.committed,
        )
        .await;
    if let Err(e) = &result {
        tracing::debug!(transactional_id = %req.transactional_id, error = %e, "EndTxn refused");
    }
    EndTxnResponse {
        error_code: code_of(&result, version, 2),
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    }
}

/// Transactional ids per DescribeTransactions request.
const DESCRIBE_IDS_MAX: usize = 10_000;

pub fn describe_transactions(
    ctx: &KafkaContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let transaction_states = req
        .transactional_ids
        .into_iter()
        .take(DESCRIBE_IDS_MAX)
        .map(|id| match ctx.broker.txns.describe(&id) {
            Some(m) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in &m.partitions {
                    match topics.last_mut() {
                        Some(t) if t.topic == *topic => t.partitions.push(*p),
                        _ => topics.push(TopicData {
                            topic: topic.clone(),
                            partitions: vec![*p],
                            ..Default::default()
                        }),
                    }
                }
                TransactionState {
                    error_code: error_code::NONE,
                    transactional_id: id,
                    transaction_state: m.state.name().to_string(),
                    transaction_timeout_ms: m.timeout_ms,
                    transaction_start_time_ms: m.start_ms,
                    producer_id: m.producer_id,
                    producer_epoch: m.epoch,
                    topics,
                    ..Default::default()
                }
            }
            None => TransactionState {
                error_code: error_code::TRANSACTIONAL_ID_NOT_FOUND,
                transactional_id: id,
                transaction_start_time_ms: -1,
                producer_id: -1,
                producer_epoch: -1,
                ..Default::default()
            },
        })
        .collect();
    DescribeTransactionsResponse {
        transaction_states,
        ..Default::default()
    }
}

const STATE_NAMES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub fn list_transactions(
    ctx: &KafkaContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown_state_filters: Vec<String> = req
        .state_filters
        .iter()
        .filter(|f| !STATE_NAMES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = conflux_broker::now_ms();
    let transaction_states = ctx
        .broker
        .txns
        .list()
        .into_iter()
        .filter(|(_, pid, state, start)| {
            (req.state_filters.is_empty() || req.state_filters.iter().any(|f| f == state.name()))
                && (req.producer_id_filters.is_empty() || req.producer_id_filters.contains(pid))
                && (req.duration_filter < 0 || (*start >= 0 && now - *start >= req.duration_filter))
        })
        .map(|(id, pid, state, _)| list_txn::TransactionState {
            transactional_id: id,
            producer_id: pid,
            transaction_state: state.name().to_string(),
            ..Default::default()
        })
        .collect();
    ListTransactionsResponse {
        error_code: error_code::NONE,
        unknown_state_filters,
        transaction_states,
        ..Default::default()
    }
}

pub fn describe_producers(
    ctx: &KafkaContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| TopicResponse {
            partitions: t
                .partition_indexes
                .iter()
                .map(|&index| match ctx.broker.partition(&t.name, index) {
                    Ok(p) => {
                        let described = p.producers.lock().describe();
                        let txns = p.txns.lock();
                        PartitionResponse {
                            partition_index: index,
                            error_code: error_code::NONE,
                            active_producers: described
                                .into_iter()
                                .map(|(pid, epoch, last_seq, last_ts)| ProducerState {
                                    producer_id: pid,
                                    producer_epoch: i32::from(epoch),
                                    last_sequence: last_seq,
                                    last_timestamp: last_ts,
                                    coordinator_epoch: 0,
                                    current_txn_start_offset: txns
                                        .open_txn_start(pid)
                                        .unwrap_or(-1),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }
                    }
                    Err(e) => PartitionResponse {
                        partition_index: index,
                        error_code: error_code::from_broker(&e),
                        error_message: Some(e.to_string()),
                        ..Default::default()
                    },
                })
                .collect(),
            name: t.name,
            ..Default::default()
        })
        .collect();
    DescribeProducersResponse {
        topics,
        ..Default::default()
    }
}
