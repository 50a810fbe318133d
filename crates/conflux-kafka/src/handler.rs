//! Decodes one request frame, dispatches it to its API's handler, and encodes the response.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use conflux_wire::generated::{ApiKey, RequestBody, ResponseHeader};
use conflux_wire::{decode_request, Message, RequestError, RequestErrorKind};

use crate::groups::{self, ClientInfo};
use crate::server::ConnectionError;
use crate::{admin, api_versions, fetch, metadata, offsets, produce, txn, KafkaContext};

/// Per-connection request handler.
#[derive(Debug)]
pub struct Handler {
    ctx: Arc<KafkaContext>,
    peer: SocketAddr,
}

/// Frames one response: size prefix, response header, body.
pub fn encode_response<M: Message>(
    correlation_id: i32,
    api_key: i16,
    version: i16,
    body: &M,
) -> BytesMut {
    let header = ResponseHeader {
        correlation_id,
        ..Default::default()
    };
    conflux_wire::encode_response(&header, body, api_key, version)
}

/// What a handled request owes the client.
pub enum Reply {
    /// The response is ready (`None`: no response is due).
    Now(Option<BytesMut>),
    /// The response follows when this future resolves (a Produce awaiting durability).
    Later(Pin<Box<dyn Future<Output = Option<BytesMut>> + Send>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(r) => write!(
                f,
                "Reply::Now({} bytes)",
                r.as_ref().map_or(0, BytesMut::len)
            ),
            Reply::Later(_) => f.write_str("Reply::Later"),
        }
    }
}

impl Handler {
    pub fn new(ctx: Arc<KafkaContext>, peer: SocketAddr) -> Self {
        Handler { ctx, peer }
    }

    /// Handles one frame and records its count and latency per API (a produce's latency runs
    /// until its durability wait ends). Everything but that wait happens before this returns,
    /// so requests take effect in the order they arrived; a Produce's response comes as
    /// [`Reply::Later`]. An error closes the connection, as Kafka does for undecodable requests.
    pub async fn handle(&mut self, frame: Bytes) -> Result<Reply, ConnectionError> {
        let (api_key, started) = (crate::metrics::frame_api_key(&frame), Instant::now());
        let result = self.dispatch(frame).await;
        match result {
            Ok(Reply::Later(pending)) => {
                let ctx = self.ctx.clone();
                Ok(Reply::Later(Box::pin(async move {
                    let response = pending.await;
                    ctx.metrics.apis.observe(api_key, started.elapsed(), false);
                    response
                })))
            }
            other => {
                self.ctx
                    .metrics
                    .apis
                    .observe(api_key, started.elapsed(), other.is_err());
                other
            }
        }
    }

    async fn dispatch(&mut self, frame: Bytes) -> Result<Reply, ConnectionError> {
        self.ctx
            .metrics
            .requests_total
            .fetch_add(1, Ordering::Relaxed);
        let (header, body) = match decode_request(frame) {
            Ok(x) => x,
            Err(err) => return self.refuse(err).map(Reply::Now),
        };
        let api_key = header.request_api_key;
        let version = header.request_api_version;
        let cid = header.correlation_id;
        if !api_versions::is_supported(api_key, version) {
            if let RequestBody::ApiVersions(_) = body {
                let resp = api_versions::unsupported();
                return Ok(Reply::Now(Some(encode_response(cid, api_key, 0, &resp))));
            }
            self.ctx
                .metrics
                .request_errors_total
                .fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionError::Malformed(format!(
                "api key {api_key} version {version} is not supported"
            )));
        }
        let ctx = &self.ctx;
        let out = match body {
            RequestBody::ApiVersions(r) => {
                encode_response(cid, api_key, version, &api_versions::handle(&r))
            }
            RequestBody::Metadata(r) => {
                let resp = metadata::handle(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::Produce(r) => {
                let acks = r.acks;
                let completion = produce::handle(ctx, r, version).await;
                return Ok(Reply::Later(Box::pin(async move {
                    let resp = completion.await;
                    // acks=0: the client expects no response at all.
                    (acks != 0).then(|| encode_response(cid, api_key, version, &resp))
                })));
            }
            RequestBody::Fetch(r) => {
                let resp = fetch::handle(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::ListOffsets(r) => {
                let resp = offsets::list_offsets(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::OffsetForLeaderEpoch(r) => encode_response(
                cid,
                api_key,
                version,
                &offsets::offset_for_leader_epoch(ctx, r),
            ),
            RequestBody::DeleteRecords(r) => {
                let resp = offsets::delete_records(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::CreateTopics(r) => {
                let resp = admin::create_topics(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::DeleteTopics(r) => {
                let resp = admin::delete_topics(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::CreatePartitions(r) => {
                let resp = admin::create_partitions(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::DescribeConfigs(r) => encode_response(
                cid,
                api_key,
                version,
                &admin::describe_configs(ctx, r, version),
            ),
            RequestBody::AlterConfigs(r) => {
                let resp = admin::alter_configs(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::IncrementalAlterConfigs(r) => {
                let resp = admin::incremental_alter_configs(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::DescribeCluster(r) => {
                encode_response(cid, api_key, version, &admin::describe_cluster(ctx, &r))
            }
            RequestBody::DescribeLogDirs(r) => {
                encode_response(cid, api_key, version, &admin::describe_log_dirs(ctx, r))
            }
            RequestBody::FindCoordinator(r) => encode_response(
                cid,
                api_key,
                version,
                &groups::find_coordinator(ctx, r, version),
            ),
            RequestBody::JoinGroup(r) => {
                let client = ClientInfo {
                    client_id: header.client_id.clone().unwrap_or_default(),
                    host: format!("/{}", self.peer.ip()),
                };
                let resp = groups::join_group(ctx, r, version, &client).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::SyncGroup(r) => {
                let resp = groups::sync_group(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::Heartbeat(r) => {
                encode_response(cid, api_key, version, &groups::heartbeat(ctx, r))
            }
            RequestBody::LeaveGroup(r) => {
                encode_response(cid, api_key, version, &groups::leave_group(ctx, r, version))
            }
            RequestBody::DescribeGroups(r) => {
                encode_response(cid, api_key, version, &groups::describe_groups(ctx, r))
            }
            RequestBody::ListGroups(r) => {
                encode_response(cid, api_key, version, &groups::list_groups(ctx, r))
            }
            RequestBody::DeleteGroups(r) => {
                let resp = groups::delete_groups(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::OffsetCommit(r) => {
                let resp = groups::offset_commit(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::OffsetFetch(r) => encode_response(
                cid,
                api_key,
                version,
                &groups::offset_fetch(ctx, r, version),
            ),
            RequestBody::OffsetDelete(r) => {
                let resp = groups::offset_delete(ctx, r).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::InitProducerId(r) => {
                let resp = groups::init_producer_id(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::AddPartitionsToTxn(r) => {
                let resp = txn::add_partitions_to_txn(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::AddOffsetsToTxn(r) => {
                let resp = txn::add_offsets_to_txn(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::TxnOffsetCommit(r) => {
                let resp = txn::txn_offset_commit(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::EndTxn(r) => {
                let resp = txn::end_txn(ctx, r, version).await;
                encode_response(cid, api_key, version, &resp)
            }
            RequestBody::DescribeTransactions(r) => {
                encode_response(cid, api_key, version, &txn::describe_transactions(ctx, r))
            }
            RequestBody::ListTransactions(r) => {
                encode_response(cid, api_key, version, &txn::list_transactions(ctx, r))
            }
            RequestBody::DescribeProducers(r) => {
                encode_response(cid, api_key, version, &txn::describe_producers(ctx, r))
            }
            other => {
                return Err(ConnectionError::Malformed(format!(
                    "api key {api_key} ({other:?}) is decoded but not served"
                )))
            }
        };
        Ok(Reply::Now(Some(out)))
    }

    /// Answers an undecodable request where the protocol allows, else closes the connection.
    fn refuse(&self, err: RequestError) -> Result<Option<BytesMut>, ConnectionError> {
        self.ctx
            .metrics
            .request_errors_total
            .fetch_add(1, Ordering::Relaxed);
        if let (Some(header), RequestErrorKind::UnsupportedVersion { .. }) =
            (&err.header, &err.kind)
        {
            if header.request_api_key == ApiKey::ApiVersions.as_i16() {
                let resp = api_versions::unsupported();
                return Ok(Some(encode_response(
                    header.correlation_id,
                    header.request_api_key,
                    0,
                    &resp,
                )));
            }
        }
        tracing::debug!(peer = %self.peer, error = ?err, "closing connection on undecodable request");
        Err(ConnectionError::Malformed(err.kind.to_string()))
    }
}
