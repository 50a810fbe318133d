//! Offset queries and log-start moves: ListOffsets, OffsetForLeaderEpoch, DeleteRecords.

use std::sync::Arc;

use conflux_broker::BrokerError;
use conflux_wire::generated::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use conflux_wire::generated::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use conflux_wire::generated::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use conflux_wire::generated::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use crate::{error_code, KafkaContext};

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn list_offsets(
    ctx: &Arc<KafkaContext>,
    req: ListOffsetsRequest,
    _version: i16,
) -> ListOffsetsResponse {
    let broker = ctx.broker.clone();
    let committed = req.isolation_level == 1;
    let task = tokio::task::spawn_blocking(move || {
        req.topics
            .into_iter()
            .map(|t| ListOffsetsTopicResponse {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| list_one(&broker, &t.name, p.partition_index, p.timestamp, committed))
                    .collect(),
                name: t.name,
                ..Default::default()
            })
            .collect()
    });
    ListOffsetsResponse {
        topics: task.await.unwrap_or_default(),
        ..Default::default()
    }
}

fn list_one(
    broker: &conflux_broker::Broker,
    topic: &str,
    index: i32,
    timestamp: i64,
    read_committed: bool,
) -> ListOffsetsPartitionResponse {
    let mut resp = ListOffsetsPartitionResponse {
        partition_index: index,
        timestamp: -1,
        offset: -1,
        leader_epoch: -1,
        ..Default::default()
    };
    let partition = match broker.partition(topic, index) {
        Ok(p) => p,
        Err(e) => {
            resp.error_code = error_code::from_broker(&e);
            return resp;
        }
    };
    let log = &partition.log;
    resp.leader_epoch = partition.leader_epoch;
    let found = match timestamp {
        // read_committed consumers see the end of the log at the last stable offset.
        LATEST | LATEST_TIERED if read_committed => Ok(Some((partition.last_stable_offset(), -1))),
        LATEST | LATEST_TIERED => Ok(Some((log.high_watermark(), -1))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
        MAX_TIMESTAMP => log.max_timestamp(),
        ts if ts >= 0 => log.offset_for_timestamp(ts),
        _ => {
            resp.error_code = error_code::INVALID_REQUEST;
            return resp;
        }
    };
    match found {
        Ok(Some((offset, ts))) => {
            resp.offset = offset;
            resp.timestamp = ts;
        }
        Ok(None) => {}
        Err(e) => resp.error_code = error_code::from_broker(&BrokerError::from(e)),
    }
    resp
}

pub fn offset_for_leader_epoch(
    ctx: &KafkaContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| OffsetForLeaderTopicResult {
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = EpochEndOffset {
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1,
                        ..Default::default()
                    };
                    match ctx.broker.partition(&t.topic, p.partition) {
                        Ok(part) => {
                            if let Some((epoch, end)) =
                                part.log.end_offset_for_epoch(p.leader_epoch)
                            {
                                out.leader_epoch = epoch;
                                out.end_offset = end;
                            }
                        }
                        Err(e) => out.error_code = error_code::from_broker(&e),
                    }
                    out
                })
                .collect(),
            topic: t.topic,
            ..Default::default()
        })
        .collect();
    OffsetForLeaderEpochResponse {
        topics,
        ..Default::default()
    }
}

pub async fn delete_records(
    ctx: &Arc<KafkaContext>,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let broker = ctx.broker.clone();
    let task = tokio::task::spawn_blocking(move || {
        req.topics
            .into_iter()
            .map(|t| DeleteRecordsTopicResult {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut out = DeleteRecordsPartitionResult {
                            partition_index: p.partition_index,
                            low_watermark: -1,
                            ..Default::default()
                        };
                        let result =
                            broker
                                .partition(&t.name, p.partition_index)
                                .and_then(|part| {
                                    let hw = part.log.high_watermark();
                                    let target = if p.offset == -1 { hw } else { p.offset };
                                    if target < 0 || target > hw {
                                        return Err(BrokerError::OffsetOutOfRange {
                                            offset: target,
                                            log_start: part.log.log_start_offset(),
                                            log_end: hw,
                                        });
                                    }
                                    Ok(part.log.delete_records_before(target)?)
                                });
                        match result {
                            Ok(low) => out.low_watermark = low,
                            Err(e) => out.error_code = error_code::from_broker(&e),
                        }
                        out
                    })
                    .collect(),
                name: t.name,
                ..Default::default()
            })
            .collect()
    });
    DeleteRecordsResponse {
        topics: task.await.unwrap_or_default(),
        ..Default::default()
    }
}
