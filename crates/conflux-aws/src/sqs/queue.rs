//! One SQS queue: its definition, its subscriptions, and the send / receive / delete /
//! visibility operations, plus the pump that runs its timers and redrives dead letters.
//!
//! A queue is the topic of the same name with one broker subscription per partition. Queues
//! SQS creates have one partition; a queue over an existing Kafka topic with several reads
//! them all (receives go round the partitions, sends spread over them). A FIFO queue keeps
//! to one partition: message-group order holds within a partition only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use conflux_broker::dedup::DedupCheck;
use conflux_broker::subscription::{
    self, DeadReason, Delivery, Message, Subscription, SubscriptionConfig,
};
use conflux_broker::{NewTopic, Topic};
use conflux_wire::records::{BatchBuilder, RecordHeader};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::attrs::{self, Redrive};
use super::Sqs;
use crate::error::{AwsError, AwsResult};
use crate::message::{self, hdr, AttrValue};

/// What is persisted of a queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    pub name: String,
    pub created_ms: i64,
    #[serde(default)]
    pub modified_ms: i64,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// The queue's state on one partition of its topic.
pub struct Part {
    pub sub: Subscription,
    /// First receive time per in-flight or returned message (not persisted).
    pub first_receive: HashMap<i64, i64>,
}

pub struct Inner {
    /// One per partition read, in partition order (one for FIFO queues).
    pub parts: Vec<Part>,
    last_checkpoint: Instant,
    pub last_purge_ms: i64,
    /// FIFO `ReceiveRequestAttemptId` → (expiry, what that receive returned).
    pub attempts: HashMap<String, (i64, Vec<Received>)>,
    /// The partition the next receive starts at (round robin).
    next_take: usize,
}

impl Inner {
    /// Every message settled by purge: ready and delayed ones dropped, in-flight ones acked.
    pub fn purge(&mut self, now_ms: i64) {
        for p in &mut self.parts {
            p.sub.purge();
            p.sub.purge_in_flight(now_ms);
            p.first_receive.clear();
        }
    }
}

pub struct Queue {
    pub name: String,
    pub arn: String,
    pub fifo: bool,
    pub topic: Arc<Topic>,
    pub def: Mutex<QueueDef>,
    pub inner: Mutex<Inner>,
    /// Woken when messages may have become receivable.
    pub notify: Notify,
    /// FIFO sends are serialised so that dedup checks and appends happen in one order.
    pub send_lock: tokio::sync::Mutex<()>,
    pub deleted: AtomicBool,
    pub id: u64,
    dedup: Arc<conflux_broker::dedup::DedupStore>,
    /// The partition the next send goes to (round robin over the parts).
    next_send: AtomicUsize,
}

/// A message ready to be stored.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    pub attrs: Vec<(String, AttrValue)>,
    pub delay_s: Option<i64>,
    pub group: Option<String>,
    pub dedup: Option<String>,
    pub trace: Option<String>,
    /// Extra headers (dead-letter source, SNS).
    pub extra: Vec<RecordHeader>,
    /// Keep this message id (redrive) instead of a new one.
    pub message_id: Option<String>,
}

/// A message of a send being stored: its request index, answer, record and dedup key.
type Stored = (usize, Sent, Message, Option<(String, String)>);

/// What SendMessage answers.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    pub md5_body: String,
    pub md5_attrs: Option<String>,
    pub md5_system: Option<String>,
    pub sequence: Option<String>,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The partition the message is on.
    pub partition: usize,
    pub delivery: Delivery,
    pub first_receive_ms: i64,
    pub receipt: String,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Scanning limit for FIFO receives looking past blocked groups.
const FIFO_SCAN_MAX: usize = 20_000;
const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;

impl Queue {
    /// Creates the queue's topic if needed, opens its subscription and starts its pump.
    pub fn open(sqs: &Arc<Sqs>, def: QueueDef) -> AwsResult<Arc<Queue>> {
        let name = def.name.clone();
        let fifo = name.ends_with(".fifo");
        let topic = match sqs.broker.topic(&name) {
            Some(t) => t,
            None => {
                let retention_ms =
                    attrs::num(&def.attributes, "MessageRetentionPeriod", 345_600) * 1000;
                let configs = [
                    ("retention.ms".to_string(), retention_ms.to_string()),
                    ("segment.bytes".to_string(), (64u64 << 20).to_string()),
                ]
                .into_iter()
                .collect();
                let req = NewTopic {
                    name: name.clone(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs,
                };
                match sqs.broker.create_topic(req, false) {
                    Ok(t) => t,
                    Err(conflux_broker::BrokerError::TopicAlreadyExists(_)) => sqs
                        .broker
                        .topic(&name)
                        .ok_or_else(|| AwsError::internal("topic vanished"))?,
                    Err(e) => return Err(AwsError::internal(format!("storage error: {e}"))),
                }
            }
        };
        let partitions = if fifo {
            if topic.partition_count() > 1 {
                tracing::warn!(queue = %name, "FIFO queue over a multi-partition topic reads partition 0 only");
            }
            1
        } else {
            topic.partition_count().max(1)
        };
        let parts = (0..partitions)
            .map(|i| open_part(sqs, &topic, &def, i))
            .collect::<AwsResult<Vec<Part>>>()?;
        let q = Arc::new(Queue {
            arn: sqs.arn(&name),
            name,
            fifo,
            topic,
            def: Mutex::new(def),
            inner: Mutex::new(Inner {
                parts,
                last_checkpoint: Instant::now(),
                last_purge_ms: 0,
                attempts: HashMap::new(),
                next_take: 0,
            }),
            notify: Notify::new(),
            send_lock: tokio::sync::Mutex::new(()),
            deleted: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dedup: sqs.dedup.clone(),
            next_send: AtomicUsize::new(0),
        });
        tokio::spawn(run_pump(sqs.clone(), q.clone()));
        Ok(q)
    }

    /// Wakes one waiting receive (which passes the wake on while messages remain).
    pub fn wake_one(&self) {
        self.notify.notify_one();
    }

    /// Wakes every waiting receive (the queue was deleted or reconfigured).
    pub fn wake_all(&self) {
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn attr_num(&self, name: &str, default: i64) -> i64 {
        attrs::num(&self.def.lock().attributes, name, default)
    }

    pub fn redrive(&self) -> Option<Redrive> {
        let def = self.def.lock();
        def.attributes
            .get("RedrivePolicy")
            .and_then(|p| attrs::parse_redrive(p).ok().flatten())
    }

    /// Applies changed attributes to the subscription.
    pub fn reconfigure(&self) {
        let cfg = sub_config(&self.def.lock().attributes);
        for p in &mut self.inner.lock().parts {
            p.sub.set_config(cfg.clone());
        }
        self.wake_all();
    }

    fn dedup_scope(&self, group: Option<&str>) -> String {
        let def = self.def.lock();
        let per_group =
            def.attributes.get("DeduplicationScope").map(String::as_str) == Some("messageGroup");
        match (per_group, group) {
            (true, Some(g)) => format!("sqs/{}/{}/g/{g}", self.name, def.created_ms),
            _ => format!("sqs/{}/{}", self.name, def.created_ms),
        }
    }

    /// Validates one outgoing message against the queue's rules.
    pub fn check(&self, m: &mut Outgoing) -> AwsResult<()> {
        if m.body.is_empty() {
            return Err(AwsError::missing_parameter("MessageBody"));
        }
        if let Some(bad) = (!message::valid_chars(&m.body))
            .then(|| m.body.chars().find(|c| !message::valid_char(*c)))
            .flatten()
        {
            return Err(AwsError::invalid_message_contents(format!(
                "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is available at https://www.w3.org/TR/REC-xml/#charsets",
                bad as u32
            )));
        }
        let max = self.attr_num("MaximumMessageSize", 262_144) as usize;
        let size = m.body.len() + message::attributes_size(&m.attrs);
        if size > max {
            return Err(AwsError::invalid_parameter(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {max} bytes."
            )));
        }
        if let Some(d) = m.delay_s {
            if !(0..=900).contains(&d) {
                return Err(AwsError::invalid_parameter(format!(
                    "Value {d} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
                )));
            }
        }
        if self.fifo {
            if m.delay_s.is_some_and(|d| d != 0) {
                return Err(AwsError::invalid_parameter(format!(
                    "Value {} for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
                    m.delay_s.unwrap_or(0)
                )));
            }
            let Some(g) = &m.group else {
                return Err(AwsError::missing_parameter("MessageGroupId"));
            };
            check_id("MessageGroupId", g)?;
            match &m.dedup {
                Some(d) => check_id("MessageDeduplicationId", d)?,
                None => {
                    let content_based = self
                        .def
                        .lock()
                        .attributes
                        .get("ContentBasedDeduplication")
                        .map(String::as_str)
                        == Some("true");
                    if !content_based {
                        return Err(AwsError::invalid_parameter(
                            "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                        ));
                    }
                    m.dedup = Some(message::hex(&Sha256::digest(m.body.as_bytes())));
                }
            }
        } else {
            if m.dedup.is_some() {
                return Err(AwsError::invalid_parameter(
                    "Value for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type.",
                ));
            }
            if let Some(g) = &m.group {
                check_id("MessageGroupId", g)?;
            }
        }
        Ok(())
    }

    /// Stores checked messages (one record batch, one durable append) and hands them to
    /// the subscription. FIFO duplicates within the window are answered with the first's id.
    pub async fn send(&self, msgs: Vec<Outgoing>) -> Vec<AwsResult<Sent>> {
        let _guard = if self.fifo {
            Some(self.send_lock.lock().await)
        } else {
            None
        };
        let now = conflux_broker::now_ms();
        let default_delay = self.attr_num("DelaySeconds", 0);
        let mut results: Vec<Option<AwsResult<Sent>>> = vec![None; msgs.len()];
        let mut stored: Vec<Stored> = Vec::new();
        let mut batch = BatchBuilder::new(now);
        for (i, m) in msgs.into_iter().enumerate() {
            let md5_body = message::md5_hex(m.body.as_bytes());
            let md5_attrs = (!m.attrs.is_empty()).then(|| message::md5_of_attributes(&m.attrs));
            let md5_system = m.trace.as_ref().map(|t| {
                message::md5_of_attributes(&[(
                    "AWSTraceHeader".to_string(),
                    AttrValue {
                        data_type: "String".into(),
                        value: Bytes::from(t.clone()),
                    },
                )])
            });
            let mut dedup_key = None;
            // Redriven and moved messages keep their id and skip deduplication.
            if let (true, Some(d), None) = (self.fifo, &m.dedup, &m.message_id) {
                let scope = self.dedup_scope(m.group.as_deref());
                match self
                    .sqs_dedup()
                    .check_or_insert(&scope, d, "", now, now + DEDUP_WINDOW_MS)
                {
                    DedupCheck::Duplicate(v) => {
                        let (id, seq) = v.split_once(' ').unwrap_or((&v, ""));
                        results[i] = Some(Ok(Sent {
                            message_id: id.to_string(),
                            md5_body,
                            md5_attrs,
                            md5_system,
                            sequence: Some(seq.to_string()),
                        }));
                        continue;
                    }
                    DedupCheck::New => dedup_key = Some((scope, d.clone())),
                }
            }
            let message_id = m
                .message_id
                .clone()
                .unwrap_or_else(|| crate::fast_uuid().to_string());
            let mut headers = vec![RecordHeader {
                key: hdr::MESSAGE_ID.into(),
                value: Some(Bytes::from(message_id.clone())),
            }];
            if let Some(g) = &m.group {
                headers.push(header(hdr::GROUP_ID, g));
            }
            if let Some(d) = &m.dedup {
                headers.push(header(hdr::DEDUP_ID, d));
            }
            if let Some(t) = &m.trace {
                headers.push(header(hdr::TRACE, t));
            }
            let delay = m.delay_s.unwrap_or(default_delay);
            if delay > 0 {
                headers.push(header(
                    subscription::headers::DELAY,
                    &(delay * 1000).to_string(),
                ));
            }
            message::attribute_headers(&m.attrs, &mut headers);
            headers.extend(m.extra.iter().cloned());
            let key = m.group.as_ref().map(|g| Bytes::from(g.clone()));
            let value = Bytes::from(m.body);
            batch.append(now, key.clone(), Some(value.clone()), headers.clone());
            stored.push((
                i,
                Sent {
                    message_id,
                    md5_body,
                    md5_attrs,
                    md5_system,
                    sequence: None,
                },
                Message {
                    offset: 0,
                    timestamp: now,
                    key,
                    value: Some(value),
                    headers,
                },
                dedup_key,
            ));
        }
        if !stored.is_empty() {
            let parts = self.inner.lock().parts.len();
            let part = self.next_send.fetch_add(1, Ordering::Relaxed) % parts.max(1);
            let appended = match batch.build() {
                Ok(b) => self
                    .topic
                    .append(part as i32, b)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match appended {
                Ok(info) => {
                    let mut inner = self.inner.lock();
                    for (n, (i, mut sent, mut msg, dedup_key)) in stored.into_iter().enumerate() {
                        msg.offset = info.base_offset + n as i64;
                        if self.fifo {
                            let seq = sequence_number(msg.offset);
                            if let Some((scope, id)) = dedup_key {
                                self.sqs_dedup().update(
                                    &scope,
                                    &id,
                                    &format!("{} {seq}", sent.message_id),
                                );
                            }
                            sent.sequence = Some(seq);
                        }
                        if let Some(p) = inner.parts.get_mut(part) {
                            p.sub.offer(msg, now);
                        }
                        results[i] = Some(Ok(sent));
                    }
                    drop(inner);
                    self.wake_one();
                }
                Err(e) => {
                    tracing::warn!(queue = %self.name, error = %e, "storing SQS messages failed");
                    for (i, _, _, dedup_key) in stored {
                        if let Some((scope, id)) = dedup_key {
                            self.sqs_dedup().remove(&scope, &id);
                        }
                        results[i] = Some(Err(AwsError::internal("storage error")));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(AwsError::internal("message not stored"))))
            .collect()
    }

    fn sqs_dedup(&self) -> &conflux_broker::dedup::DedupStore {
        &self.dedup
    }

    /// Takes up to `max` receivable messages, leased for `visibility_s`: round the
    /// partitions, starting one further each call.
    pub fn take(&self, max: usize, visibility_s: i64) -> Vec<Received> {
        let now = conflux_broker::now_ms();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        for p in &mut inner.parts {
            p.sub.tick(now);
        }
        let deadline = Some(now + visibility_s * 1000);
        let mut out: Vec<(usize, Delivery)> = Vec::new();
        if self.fifo {
            let Some(part) = inner.parts.first_mut() else {
                return Vec::new();
            };
            let blocked: HashSet<Vec<u8>> = part
                .sub
                .in_flight()
                .filter_map(|(m, _)| m.header(hdr::GROUP_ID).map(<[u8]>::to_vec))
                .collect();
            while out.len() < max {
                let Some(d) = part
                    .sub
                    .next_where(self.id, now, deadline, FIFO_SCAN_MAX, |m| {
                        !m.header(hdr::GROUP_ID).is_some_and(|g| blocked.contains(g))
                    })
                else {
                    break;
                };
                out.push((0, d));
            }
        } else {
            let n = inner.parts.len().max(1);
            let start = inner.next_take % n;
            inner.next_take = inner.next_take.wrapping_add(1);
            for k in 0..n {
                let i = (start + k) % n;
                let Some(part) = inner.parts.get_mut(i) else {
                    continue;
                };
                while out.len() < max {
                    let Some(d) = part.sub.next_where(self.id, now, deadline, 1, |_| true) else {
                        break;
                    };
                    out.push((i, d));
                }
            }
        }
        // Pass the wake on only after progress: FIFO messages of blocked groups are ready
        // but not receivable, and waking for them would spin.
        let more = !out.is_empty() && inner.parts.iter().any(|p| p.sub.ready_len() > 0);
        let got = out
            .into_iter()
            .map(|(i, d)| {
                let first = *inner.parts[i]
                    .first_receive
                    .entry(d.message.offset)
                    .or_insert(now);
                let receipt = self.receipt(i, d.message.offset, d.delivery_count);
                Received {
                    partition: i,
                    delivery: d,
                    first_receive_ms: first,
                    receipt,
                }
            })
            .collect();
        drop(guard);
        if more {
            // Other receives may be waiting for what is left.
            self.wake_one();
        }
        got
    }

    /// A FIFO receive retried with the same `ReceiveRequestAttemptId` within 5 minutes gets
    /// the same messages and receipt handles while they are all still in flight unchanged.
    pub fn retried_attempt(&self, attempt: &str) -> Option<Vec<Received>> {
        let now = conflux_broker::now_ms();
        let inner = self.inner.lock();
        let (expires, got) = inner.attempts.get(attempt)?;
        let same = *expires > now
            && got.iter().all(|r| {
                inner
                    .parts
                    .get(r.partition)
                    .and_then(|p| p.sub.in_flight_deliveries(r.delivery.message.offset))
                    == Some(r.delivery.delivery_count)
            });
        same.then(|| got.clone())
    }

    /// Remembers what a FIFO receive with an attempt id returned (bounded, 5-minute window).
    pub fn remember_attempt(&self, attempt: &str, got: &[Received]) {
        const ATTEMPTS_MAX: usize = 10_000;
        let now = conflux_broker::now_ms();
        let mut inner = self.inner.lock();
        if inner.attempts.len() >= ATTEMPTS_MAX {
            inner.attempts.retain(|_, (e, _)| *e > now);
            if inner.attempts.len() >= ATTEMPTS_MAX {
                return;
            }
        }
        inner
            .attempts
            .insert(attempt.to_string(), (now + 5 * 60 * 1000, got.to_vec()));
    }

    /// A receipt handle: queue, creation time, `[partition:]offset`, delivery count, nonce.
    fn receipt(&self, partition: usize, offset: i64, deliveries: u32) -> String {
        let created = self.def.lock().created_ms;
        let at = if partition == 0 {
            offset.to_string()
        } else {
            format!("{partition}:{offset}")
        };
        let raw = format!(
            "{}\n{created}\n{at}\n{deliveries}\n{}",
            self.name,
            crate::fast_uuid().simple()
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// (partition, offset, deliveries) of a receipt handle issued by this queue.
    pub fn parse_receipt(&self, handle: &str) -> AwsResult<(usize, i64, u32)> {
        let bad = || AwsError::receipt_handle_invalid(handle);
        if handle.len() > 1024 {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(handle.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let parts: Vec<&str> = raw.split('\n').collect();
        if parts.len() != 5 || parts[0] != self.name {
            return Err(bad());
        }
        let created: i64 = parts[1].parse().map_err(|_| bad())?;
        if created != self.def.lock().created_ms {
            return Err(bad());
        }
        let (partition, offset) = match parts[2].split_once(':') {
            Some((p, o)) => (p.parse().map_err(|_| bad())?, o),
            None => (0, parts[2]),
        };
        Ok((
            partition,
            offset.parse().map_err(|_| bad())?,
            parts[3].parse().map_err(|_| bad())?,
        ))
    }

    /// Deletes a received message. A stale handle (the message was received again since)
    /// succeeds without deleting, as SQS does.
    pub fn delete(&self, handle: &str) -> AwsResult<()> {
        let (partition, offset, deliveries) = self.parse_receipt(handle)?;
        let now = conflux_broker::now_ms();
        let mut inner = self.inner.lock();
        let Some(p) = inner.parts.get_mut(partition) else {
            return Err(AwsError::receipt_handle_invalid(handle));
        };
        let acked = if p.sub.in_flight_deliveries(offset) == Some(deliveries) {
            p.sub.ack(offset, now)
        } else {
            p.sub.ack_ready(offset, deliveries, now)
        };
        if acked {
            p.first_receive.remove(&offset);
            drop(inner);
            if self.fifo {
                // The message's group may be unblocked.
                self.wake_one();
            }
        }
        Ok(())
    }

    /// Acknowledges a message taken by a move task.
    pub fn ack(&self, partition: usize, offset: i64) {
        let mut inner = self.inner.lock();
        if let Some(p) = inner.parts.get_mut(partition) {
            if p.sub.ack(offset, conflux_broker::now_ms()) {
                p.first_receive.remove(&offset);
            }
        }
    }

    /// Changes the visibility timeout of a received message, counted from now.
    pub fn change_visibility(&self, handle: &str, timeout_s: i64) -> AwsResult<()> {
        let (partition, offset, deliveries) = self.parse_receipt(handle)?;
        if !(0..=43_200).contains(&timeout_s) {
            return Err(AwsError::invalid_parameter(format!(
                "Value {timeout_s} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )));
        }
        let now = conflux_broker::now_ms();
        let mut inner = self.inner.lock();
        let Some(p) = inner.parts.get_mut(partition) else {
            return Err(AwsError::receipt_handle_invalid(handle));
        };
        if p.sub.in_flight_deliveries(offset) != Some(deliveries) {
            return Err(AwsError::message_not_inflight());
        }
        p.sub.set_lease(offset, Some(now + timeout_s * 1000));
        if timeout_s == 0 {
            p.sub.tick(now);
            drop(inner);
            self.wake_one();
        }
        Ok(())
    }

    /// Opens subscriptions for partitions added to a standard queue's topic since.
    fn grow(&self, sqs: &Sqs) {
        let n = self.topic.partition_count();
        let mut inner = self.inner.lock();
        if self.fifo || n <= inner.parts.len() {
            return;
        }
        let def = self.def.lock().clone();
        for i in inner.parts.len()..n {
            match open_part(sqs, &self.topic, &def, i) {
                Ok(p) => inner.parts.push(p),
                Err(e) => {
                    tracing::warn!(queue = %self.name, partition = i, error = %e.message, "opening a queue partition");
                    break;
                }
            }
        }
    }

    /// How many partitions the queue reads.
    pub fn partitions(&self) -> usize {
        self.inner.lock().parts.len()
    }

    /// Approximate counts: (visible, in flight, delayed).
    pub fn counts(&self) -> (u64, u64, u64) {
        let inner = self.inner.lock();
        inner.parts.iter().fold((0, 0, 0), |(r, u, d), p| {
            let s = p.sub.stats();
            // Messages spilled to the log (not loaded yet) are visible too.
            (r + s.ready + s.not_loaded, u + s.unacked, d + s.delayed)
        })
    }
}

fn header(k: &str, v: &str) -> RecordHeader {
    RecordHeader {
        key: k.to_string(),
        value: Some(Bytes::from(v.to_string())),
    }
}

pub fn sequence_number(offset: i64) -> String {
    format!("{:020}", offset.max(0))
}

fn check_id(name: &str, v: &str) -> AwsResult<()> {
    let ok = !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(AwsError::invalid_parameter(format!(
            "Value {v} for parameter {name} is invalid. Reason: {name} can only include alphanumeric and punctuation characters. 1 to 128 in length."
        )))
    }
}

/// The subscription policies a queue's attributes imply.
pub fn sub_config(a: &BTreeMap<String, String>) -> SubscriptionConfig {
    let redrive = a
        .get("RedrivePolicy")
        .and_then(|p| attrs::parse_redrive(p).ok().flatten());
    SubscriptionConfig {
        backoff_base_ms: 0,
        backoff_max_ms: 0,
        delivery_limit: redrive
            .as_ref()
            .map(|r| r.max_receive_count.saturating_sub(1)),
        message_ttl_ms: Some(attrs::num(a, "MessageRetentionPeriod", 345_600) * 1000),
        max_length: None,
        max_length_bytes: None,
        overflow: Default::default(),
        max_priority: None,
        dead_letter: redrive.is_some(),
        lease_ms: Some(attrs::num(a, "VisibilityTimeout", 30) * 1000),
    }
}

/// The subscription of partition `i` of a queue's topic.
fn open_part(sqs: &Sqs, topic: &Topic, def: &QueueDef, i: usize) -> AwsResult<Part> {
    let log_start = topic
        .partition(i as i32)
        .map(|p| p.log.log_start_offset())
        .unwrap_or(0);
    let mut sub = Subscription::open(
        sub_config(&def.attributes),
        Some(sqs.state_path(&def.name, i)),
        log_start,
    )
    .map_err(|e| AwsError::internal(format!("storage error: {e}")))?;
    sub.set_limits(sqs.config.queue_limits);
    Ok(Part {
        sub,
        first_receive: HashMap::new(),
    })
}

/// What one pump round collected under the queue's lock.
struct Round {
    dead: Vec<subscription::DeadLetter>,
    wake: Option<i64>,
    checkpoints: Vec<(std::path::PathBuf, Vec<u8>)>,
    floors: Vec<i64>,
    ready: u64,
}

/// The pump of one queue: runs the subscriptions' timers (visibility expiry, delays,
/// retention), reads records other protocols appended, moves dead letters to the DLQ, wakes
/// long polls and checkpoints the subscription state (at most every 100 ms).
async fn run_pump(sqs: Arc<Sqs>, queue: Arc<Queue>) {
    let mut appends = queue.topic.watch_appends();
    let mut gap_since: Option<tokio::time::Instant> = None;
    let mut first = true;
    let mut floors_set = 0;
    while !queue.deleted.load(Ordering::SeqCst) {
        let now = conflux_broker::now_ms();
        queue.grow(&sqs);
        let (lagging, spilled): (Vec<(usize, Arc<conflux_broker::Partition>)>, bool) = {
            let inner = queue.inner.lock();
            let lagging: Vec<_> = (0..inner.parts.len())
                .filter_map(|i| queue.topic.partition(i as i32).map(|p| (i, p)))
                .filter(|(i, p)| inner.parts[*i].sub.needs_log_read(p.log.high_watermark()))
                .collect();
            let spilled = lagging.iter().any(|(i, _)| inner.parts[*i].sub.spilled());
            (lagging, spilled)
        };
        if !lagging.is_empty() {
            let since = *gap_since.get_or_insert_with(tokio::time::Instant::now);
            // A gap left by offers dropped for lack of room is never closed by an offer.
            if first || spilled || since.elapsed() >= Duration::from_millis(20) {
                let q = queue.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut inner = q.inner.lock();
                    for (i, p) in lagging {
                        if let Err(e) = inner.parts[i].sub.load_from_log(&p.log, 1 << 20, now) {
                            tracing::warn!(queue = %q.name, partition = i, error = %e, "reading queue log");
                        }
                    }
                })
                .await;
                gap_since = None;
                queue.wake_one();
            }
        } else {
            gap_since = None;
        }
        first = false;
        let round = pump_round(&queue, now);
        if round.ready > 0 {
            queue.wake_one();
        }
        let dead: Vec<_> = round
            .dead
            .into_iter()
            .filter(|d| d.reason == DeadReason::DeliveryLimit)
            .collect();
        if !dead.is_empty() {
            redrive(&sqs, &queue, dead).await;
        }
        if !round.checkpoints.is_empty() {
            let checkpoints = round.checkpoints;
            let _ = tokio::task::spawn_blocking(move || {
                for (path, bytes) in checkpoints {
                    if let Err(e) = subscription::write_state(&path, &bytes) {
                        tracing::warn!(path = %path.display(), error = %e, "SQS checkpoint failed");
                    }
                }
            })
            .await;
        }
        floors_set = round.floors.len();
        for (i, floor) in round.floors.into_iter().enumerate() {
            sqs.broker
                .subscription_floors
                .set(&queue.name, i as i32, queue.id, floor);
        }
        let mut sleep_ms: i64 = 100;
        if let Some(w) = round.wake {
            sleep_ms = sleep_ms.min((w - now).max(1));
        }
        if gap_since.is_some() {
            sleep_ms = sleep_ms.min(20);
        }
        tokio::select! {
            r = appends.changed() => {
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(sleep_ms as u64)).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
        }
    }
    for i in 0..floors_set {
        sqs.broker
            .subscription_floors
            .remove(&queue.name, i as i32, queue.id);
    }
}

/// Ticks every partition's subscription and collects dead letters, checkpoints (when due),
/// ack floors, the next wake-up and the ready count.
fn pump_round(queue: &Queue, now: i64) -> Round {
    let mut guard = queue.inner.lock();
    let inner = &mut *guard;
    let checkpoint_due = inner.last_checkpoint.elapsed() >= Duration::from_millis(100);
    if checkpoint_due {
        inner.last_checkpoint = Instant::now();
    }
    let mut round = Round {
        dead: Vec::new(),
        wake: None,
        checkpoints: Vec::new(),
        floors: Vec::with_capacity(inner.parts.len()),
        ready: 0,
    };
    for p in &mut inner.parts {
        p.sub.tick(now);
        for d in p.sub.take_dead_letters() {
            p.first_receive.remove(&d.message.offset);
            round.dead.push(d);
        }
        if checkpoint_due {
            // Receive times of messages settled by purge or retention.
            let floor = p.sub.ack_floor();
            p.first_receive.retain(|o, _| *o >= floor);
            round.checkpoints.extend(p.sub.checkpoint());
        }
        round.floors.push(p.sub.ack_floor());
        round.wake = match (round.wake, p.sub.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        round.ready += p.sub.ready_len();
    }
    round
}

/// Moves messages over their receive limit to the queue's dead-letter queue, keeping the
/// message id, body and attributes and recording the source queue.
async fn redrive(sqs: &Arc<Sqs>, queue: &Arc<Queue>, dead: Vec<subscription::DeadLetter>) {
    let target = queue
        .redrive()
        .and_then(|r| sqs.queue_by_arn(&r.target_arn).ok());
    let Some(target) = target else {
        tracing::warn!(queue = %queue.name, dropped = dead.len(), "dead-letter queue missing; messages dropped");
        return;
    };
    let msgs: Vec<Outgoing> = dead
        .iter()
        .map(|d| {
            let mut o = outgoing_from_record(&d.message);
            o.extra.push(header(hdr::DLQ_SOURCE, &queue.arn));
            o
        })
        .collect();
    for r in target.send(msgs).await {
        if let Err(e) = r {
            tracing::warn!(queue = %queue.name, error = %e.message, "dead-lettering failed");
        }
    }
}

/// A stored message as an outgoing one (redrive, message move tasks).
pub fn outgoing_from_record(m: &Message) -> Outgoing {
    let s = |k: &str| m.header(k).map(|v| String::from_utf8_lossy(v).into_owned());
    Outgoing {
        body: m
            .value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        attrs: message::attributes_of(&m.headers),
        delay_s: None,
        group: s(hdr::GROUP_ID),
        dedup: s(hdr::DEDUP_ID),
        trace: s(hdr::TRACE),
        extra: Vec::new(),
        message_id: s(hdr::MESSAGE_ID),
    }
}
