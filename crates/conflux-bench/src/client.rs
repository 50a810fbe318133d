//! A lean async Kafka client on `conflux-wire`: one TCP connection with pipelined requests
//! (responses are matched to requests in order, by correlation id), plus the handful of calls
//! the harness needs — ApiVersions, Metadata, CreateTopics, ListOffsets, Produce, Fetch.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use conflux_wire::generated::{
    api_versions_request::ApiVersionsRequest,
    create_topics_request::{CreatableTopic, CreatableTopicConfig, CreateTopicsRequest},
    fetch_request::{FetchPartition, FetchRequest, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic},
    metadata_request::{MetadataRequest, MetadataRequestTopic},
    produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
    ApiKey, FetchResponse, ProduceResponse, RequestHeader, ResponseBody,
};
use conflux_wire::{decode_response, encode_request, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Largest response frame accepted (a fetch is capped well below this).
const RESPONSE_SIZE_MAX_BYTES: usize = 256 << 20;
const CLIENT_ID: &str = "conflux-bench";

/// Versions this client prefers; the broker's ApiVersions answer may lower them.
const PREFERRED: &[(ApiKey, i16, i16)] = &[
    // (api, lowest we can use, highest we want). Fetch stays ≤ 12 (topic names, not ids).
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::CreateTopics, 2, 5),
];

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("decoding response: {0}")]
    Decode(String),
    #[error("connection closed")]
    Closed,
    #[error("response frame of {0} bytes is invalid")]
    FrameSize(i64),
    #[error("correlation id mismatch: expected {expected}, got {got}")]
    Correlation { expected: i32, got: i32 },
    #[error("broker does not support {0:?} in a version this client speaks")]
    Unsupported(ApiKey),
    #[error("unexpected response type for {0:?}")]
    WrongResponse(ApiKey),
    #[error("{0}")]
    Kafka(String),
}

struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    reply: oneshot::Sender<Result<ResponseBody, ClientError>>,
}

struct Outgoing {
    frame: BytesMut,
    pending: Pending,
}

/// One connection to the broker. Cloning is cheap; all clones share the connection.
#[derive(Clone)]
pub struct Connection {
    tx: mpsc::Sender<Outgoing>,
    next_id: Arc<std::sync::atomic::AtomicI32>,
    versions: Arc<Vec<(ApiKey, i16)>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions (v0, which every broker answers).
    pub async fn connect(addr: SocketAddr) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let queue: Arc<Mutex<VecDeque<Pending>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<Outgoing>(1024);
        tokio::spawn(writer(write, rx, queue.clone()));
        tokio::spawn(reader(read, queue));
        let mut conn = Connection {
            tx,
            next_id: Arc::new(0.into()),
            versions: Arc::new(Vec::new()),
        };
        let body = ApiVersionsRequest::default();
        let ResponseBody::ApiVersions(resp) = conn.call(ApiKey::ApiVersions, 0, &body).await?
        else {
            return Err(ClientError::WrongResponse(ApiKey::ApiVersions));
        };
        if resp.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "ApiVersions error {}",
                resp.error_code
            )));
        }
        let mut versions = Vec::new();
        for &(api, low, high) in PREFERRED {
            if let Some(v) = resp.api_keys.iter().find(|k| k.api_key == api.as_i16()) {
                let version = high.min(v.max_version);
                if version >= low.max(v.min_version) {
                    versions.push((api, version));
                }
            }
        }
        conn.versions = Arc::new(versions);
        Ok(conn)
    }

    fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        self.versions
            .iter()
            .find(|(k, _)| *k == api)
            .map(|(_, v)| *v)
            .ok_or(ClientError::Unsupported(api))
    }

    /// Sends one request; the returned receiver yields its response. Requests are written in
    /// call order, so several may be in flight at once (pipelining).
    pub async fn send(
        &self,
        api_key: ApiKey,
        version: i16,
        body: &impl Message,
    ) -> Result<oneshot::Receiver<Result<ResponseBody, ClientError>>, ClientError> {
        let correlation_id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let header = RequestHeader {
            request_api_key: api_key.as_i16(),
            request_api_version: version,
            correlation_id,
            client_id: Some(CLIENT_ID.to_string()),
            ..Default::default()
        };
        let frame = encode_request(&header, body);
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            correlation_id,
            api_key,
            version,
            reply,
        };
        self.tx
            .send(Outgoing { frame, pending })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    pub async fn call(
        &self,
        api_key: ApiKey,
        version: i16,
        body: &impl Message,
    ) -> Result<ResponseBody, ClientError> {
        let rx = self.send(api_key, version, body).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Partition count of each named topic that exists (Metadata).
    pub async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<Vec<(String, usize)>, ClientError> {
        let version = self.version(ApiKey::Metadata)?;
        let body = MetadataRequest {
            topics: Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic {
                        name: Some(t.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            allow_auto_topic_creation: false,
            ..Default::default()
        };
        let ResponseBody::Metadata(resp) = self.call(ApiKey::Metadata, version, &body).await?
        else {
            return Err(ClientError::WrongResponse(ApiKey::Metadata));
        };
        Ok(resp
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some((t.name?, t.partitions.len())))
            .collect())
    }

    /// Creates topics (TOPIC_ALREADY_EXISTS is not an error).
    pub async fn create_topics(
        &self,
        topics: &[String],
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let version = self.version(ApiKey::CreateTopics)?;
        let body = CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|name| CreatableTopic {
                    name: name.clone(),
                    num_partitions: partitions as i32,
                    replication_factor: 1,
                    configs: configs
                        .iter()
                        .map(|(k, v)| CreatableTopicConfig {
                            name: k.clone(),
                            value: Some(v.clone()),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            timeout_ms: 60_000,
            ..Default::default()
        };
        let ResponseBody::CreateTopics(resp) =
            self.call(ApiKey::CreateTopics, version, &body).await?
        else {
            return Err(ClientError::WrongResponse(ApiKey::CreateTopics));
        };
        for t in resp.topics {
            // 36: TOPIC_ALREADY_EXISTS
            if t.error_code != 0 && t.error_code != 36 {
                return Err(ClientError::Kafka(format!(
                    "creating {}: error {} {}",
                    t.name,
                    t.error_code,
                    t.error_message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// The earliest (`timestamp` -2) or latest (-1) offset of each partition of `topic`.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let version = self.version(ApiKey::ListOffsets)?;
        let body = ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.to_string(),
                partitions: partitions
                    .iter()
                    .map(|&p| ListOffsetsPartition {
                        partition_index: p,
                        current_leader_epoch: -1,
                        timestamp,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ResponseBody::ListOffsets(resp) =
            self.call(ApiKey::ListOffsets, version, &body).await?
        else {
            return Err(ClientError::WrongResponse(ApiKey::ListOffsets));
        };
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Kafka(format!(
                        "ListOffsets {topic}/{}: error {}",
                        p.partition_index, p.error_code
                    )));
                }
                out.push((p.partition_index, p.offset));
            }
        }
        Ok(out)
    }

    /// Sends a Produce of `batches` (partition, record batch) to `topic`; the receiver yields
    /// the response (none when `acks` is 0: then the receiver resolves as soon as it is sent).
    pub async fn produce(
        &self,
        topic: &str,
        acks: i16,
        batches: Vec<(i32, Bytes)>,
    ) -> Result<oneshot::Receiver<Result<ResponseBody, ClientError>>, ClientError> {
        let version = self.version(ApiKey::Produce)?;
        let body = ProduceRequest {
            transactional_id: None,
            acks,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: topic.to_string(),
                partition_data: batches
                    .into_iter()
                    .map(|(index, records)| PartitionProduceData {
                        index,
                        records: Some(records),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        if acks == 0 {
            // The broker sends no response to acks=0; don't wait for one.
            let (tx, rx) = oneshot::channel();
            let frame = {
                let header = RequestHeader {
                    request_api_key: ApiKey::Produce.as_i16(),
                    request_api_version: version,
                    correlation_id: -1,
                    client_id: Some(CLIENT_ID.to_string()),
                    ..Default::default()
                };
                encode_request(&header, &body)
            };
            let (done_tx, done_rx) = oneshot::channel();
            self.tx
                .send(Outgoing {
                    frame,
                    pending: Pending {
                        correlation_id: -1,
                        api_key: ApiKey::Produce,
                        version,
                        reply: done_tx,
                    },
                })
                .await
                .map_err(|_| ClientError::Closed)?;
            drop(done_rx);
            let _ = tx.send(Ok(ResponseBody::Produce(ProduceResponse::default())));
            return Ok(rx);
        }
        self.send(ApiKey::Produce, version, &body).await
    }

    /// One Fetch of `partitions` (partition, offset) of `topic`, waiting up to `max_wait_ms`.
    pub async fn fetch(
        &self,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait_ms: i32,
        partition_max_bytes: i32,
        max_bytes: i32,
    ) -> Result<FetchResponse, ClientError> {
        let version = self.version(ApiKey::Fetch)?;
        let body = FetchRequest {
            replica_id: -1,
            max_wait_ms,
            min_bytes: 1,
            max_bytes,
            isolation_level: 0,
            session_id: 0,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: topic.to_string(),
                partitions: partitions
                    .iter()
                    .map(|&(partition, fetch_offset)| FetchPartition {
                        partition,
                        current_leader_epoch: -1,
                        fetch_offset,
                        last_fetched_epoch: -1,
                        log_start_offset: -1,
                        partition_max_bytes,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        match self.call(ApiKey::Fetch, version, &body).await? {
            ResponseBody::Fetch(resp) => Ok(resp),
            _ => Err(ClientError::WrongResponse(ApiKey::Fetch)),
        }
    }
}

async fn writer(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    queue: Arc<Mutex<VecDeque<Pending>>>,
) {
    while let Some(out) = rx.recv().await {
        // Register before writing so the reader never sees a response it cannot match.
        // acks=0 produce requests (correlation id -1) get no response and are not queued.
        if out.pending.correlation_id >= 0 {
            queue.lock().unwrap().push_back(out.pending);
        }
        if write.write_all(&out.frame).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn reader(mut read: tokio::net::tcp::OwnedReadHalf, queue: Arc<Mutex<VecDeque<Pending>>>) {
    let error = loop {
        let mut size = [0u8; 4];
        if let Err(e) = read.read_exact(&mut size).await {
            break ClientError::Io(e);
        }
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_SIZE_MAX_BYTES {
            break ClientError::FrameSize(i64::from(size));
        }
        // Read into uninitialised capacity (no zeroing of large fetch responses).
        let size = size as usize;
        let mut frame = BytesMut::with_capacity(size);
        let mut limited = (&mut read).take(size as u64);
        let mut eof = false;
        while frame.len() < size {
            match limited.read_buf(&mut frame).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => return fail_all(&queue, ClientError::Io(e)),
            }
        }
        if eof {
            break ClientError::Closed;
        }
        let Some(pending) = queue.lock().unwrap().pop_front() else {
            break ClientError::Decode("response to no request".into());
        };
        let result = decode_response(frame.freeze(), pending.api_key, pending.version)
            .map_err(|e| ClientError::Decode(e.to_string()))
            .and_then(|(header, body)| {
                if header.correlation_id == pending.correlation_id {
                    Ok(body)
                } else {
                    Err(ClientError::Correlation {
                        expected: pending.correlation_id,
                        got: header.correlation_id,
                    })
                }
            });
        let failed = result.is_err();
        let _ = pending.reply.send(result);
        if failed {
            break ClientError::Closed;
        }
    };
    fail_all(&queue, error);
}

/// Fails everything still waiting, so no caller hangs on a dead connection.
fn fail_all(queue: &Mutex<VecDeque<Pending>>, error: ClientError) {
    let waiting: Vec<Pending> = queue.lock().unwrap().drain(..).collect();
    for p in waiting {
        let _ = p.reply.send(Err(ClientError::Decode(format!(
            "connection ended: {error}"
        ))));
    }
}
