//! The message actions (SendMessage(Batch), ReceiveMessage, DeleteMessage(Batch)) over
//! typed request and response shapes.
//!
//! These are the actions a busy queue serves thousands of times a second, so on the JSON
//! protocol they are parsed straight from the request body (borrowing strings where the
//! JSON has no escapes) and written straight to the response, without a
//! `serde_json::Value` tree in between ([`dispatch_json`]). A body the typed shapes do not
//! accept (a number sent as a string, a missing list) falls back to the generic `Value`
//! path, which gives the exact AWS error for it; the query protocol always takes that path.
//! Both paths share the checks and the queue operations below, so they answer alike.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::actions::{opt_int, opt_str, req_str, str_list, BATCH_ENTRIES_MAX, WAIT_S_MAX};
use super::queue::{Outgoing, Queue, Received, Sent};
use super::Sqs;
use crate::error::{AwsError, AwsResult};
use crate::message::{self, hdr, AttrValue};

/// A string borrowed from the request body when it has no escapes, owned otherwise.
#[derive(Debug, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

// ---- request shapes (JSON protocol) -------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttrIn<'a> {
    #[serde(borrow, default)]
    data_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    string_value: Option<Str<'a>>,
    #[serde(borrow, default)]
    binary_value: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SystemAttrsIn<'a> {
    #[serde(borrow, default, rename = "AWSTraceHeader")]
    aws_trace_header: Option<AttrIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryIn<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(default)]
    message_body: Option<String>,
    #[serde(default)]
    delay_seconds: Option<i64>,
    #[serde(borrow, default)]
    message_attributes: Option<BTreeMap<String, AttrIn<'a>>>,
    #[serde(borrow, default)]
    message_system_attributes: Option<SystemAttrsIn<'a>>,
    #[serde(default)]
    message_group_id: Option<String>,
    #[serde(default)]
    message_deduplication_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendIn<'a> {
    #[serde(borrow)]
    queue_url: Str<'a>,
    #[serde(borrow, flatten)]
    entry: EntryIn<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendBatchIn<'a> {
    #[serde(borrow)]
    queue_url: Str<'a>,
    #[serde(borrow, default)]
    entries: Vec<EntryIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleIn<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    receipt_handle: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteIn<'a> {
    #[serde(borrow)]
    queue_url: Str<'a>,
    #[serde(borrow, flatten)]
    handle: HandleIn<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteBatchIn<'a> {
    #[serde(borrow)]
    queue_url: Str<'a>,
    #[serde(borrow, default)]
    entries: Vec<HandleIn<'a>>,
}

/// ReceiveMessage parameters (from either protocol).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReceiveIn {
    #[serde(default)]
    queue_url: String,
    #[serde(default)]
    max_number_of_messages: Option<i64>,
    #[serde(default)]
    wait_time_seconds: Option<i64>,
    #[serde(default)]
    visibility_timeout: Option<i64>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
    #[serde(default)]
    message_attribute_names: Vec<String>,
    #[serde(default)]
    receive_request_attempt_id: Option<String>,
}

// ---- response shapes ----------------------------------------------------------------------

#[derive(Serialize)]
pub struct SentOut {
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "MD5OfMessageBody")]
    md5_body: String,
    #[serde(
        rename = "MD5OfMessageAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    md5_attrs: Option<String>,
    #[serde(
        rename = "MD5OfMessageSystemAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    md5_system: Option<String>,
    #[serde(rename = "SequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence: Option<String>,
}

impl SentOut {
    fn new(id: Option<String>, s: Sent) -> SentOut {
        SentOut {
            id,
            message_id: s.message_id,
            md5_body: s.md5_body,
            md5_attrs: s.md5_attrs,
            md5_system: s.md5_system,
            sequence: s.sequence,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryError {
    id: String,
    sender_fault: bool,
    code: &'static str,
    message: String,
}

impl EntryError {
    pub fn new(id: &str, e: &AwsError) -> EntryError {
        EntryError {
            id: id.to_string(),
            sender_fault: e.sender_fault,
            code: e.code,
            message: e.message.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct IdOut {
    #[serde(rename = "Id")]
    id: String,
}

impl IdOut {
    pub fn new(id: &str) -> IdOut {
        IdOut { id: id.to_string() }
    }
}

/// A batch action's answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchOut<T> {
    pub successful: Vec<T>,
    pub failed: Vec<EntryError>,
}

#[derive(Serialize)]
struct AttrOut<'a> {
    #[serde(rename = "DataType")]
    data_type: &'a str,
    #[serde(rename = "StringValue", skip_serializing_if = "Option::is_none")]
    string_value: Option<Cow<'a, str>>,
    #[serde(rename = "BinaryValue", skip_serializing_if = "Option::is_none")]
    binary_value: Option<String>,
}

/// One received message as ReceiveMessage answers it.
#[derive(Serialize)]
pub struct MessageOut {
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "ReceiptHandle")]
    receipt_handle: String,
    #[serde(rename = "MD5OfBody")]
    md5_body: String,
    #[serde(rename = "Body")]
    body: String,
    #[serde(rename = "Attributes", skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'static str, String>,
    #[serde(
        rename = "MD5OfMessageAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    md5_attrs: Option<String>,
    #[serde(rename = "MessageAttributes", skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "attrs_as_map")]
    message_attributes: Vec<(String, AttrValue)>,
}

fn attrs_as_map<S: serde::Serializer>(a: &[(String, AttrValue)], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.collect_map(a.iter().map(|(n, v)| {
        let out = if v.is_binary() {
            AttrOut {
                data_type: &v.data_type,
                string_value: None,
                binary_value: Some(base64::engine::general_purpose::STANDARD.encode(&v.value)),
            }
        } else {
            AttrOut {
                data_type: &v.data_type,
                string_value: Some(String::from_utf8_lossy(&v.value)),
                binary_value: None,
            }
        };
        (n, out)
    }))
}

#[derive(Serialize)]
pub struct ReceiveOut {
    #[serde(rename = "Messages", skip_serializing_if = "Vec::is_empty")]
    messages: Vec<MessageOut>,
}

// ---- the JSON fast path -------------------------------------------------------------------

/// Serves a hot action from a JSON-protocol body: `None` when `action` is not one of them or
/// the body does not fit the typed shapes (the caller then takes the generic path).
pub async fn dispatch_json(sqs: &Sqs, action: &str, body: &[u8]) -> Option<AwsResult<Vec<u8>>> {
    fn out<T: Serialize>(r: AwsResult<T>) -> AwsResult<Vec<u8>> {
        r.and_then(|v| serde_json::to_vec(&v).map_err(|e| AwsError::internal(e.to_string())))
    }
    Some(match action {
        "SendMessage" => {
            let req: SendIn = serde_json::from_slice(body).ok()?;
            let q = sqs.queue_by_url(&req.queue_url.0);
            out(match q {
                Ok(q) => send_one(&q, entry_outgoing(req.entry)).await,
                Err(e) => Err(e),
            })
        }
        "SendMessageBatch" => {
            let req: SendBatchIn = serde_json::from_slice(body).ok()?;
            let r = async {
                let q = sqs.queue_by_url(&req.queue_url.0)?;
                check_batch_ids(req.entries.iter().map(|e| e.id.as_ref().map(|s| &*s.0)))?;
                let entries = req
                    .entries
                    .into_iter()
                    .map(|e| {
                        let id = e.id.as_ref().map(|s| s.0.to_string()).unwrap_or_default();
                        (id, entry_outgoing(e))
                    })
                    .collect();
                send_batch(&q, entries).await
            };
            out(r.await)
        }
        "ReceiveMessage" => {
            let req: ReceiveIn = serde_json::from_slice(body).ok()?;
            let r = async {
                if req.queue_url.is_empty() {
                    return Err(AwsError::missing_parameter("QueueUrl"));
                }
                let q = sqs.queue_by_url(&req.queue_url)?;
                receive(&q, req).await
            };
            out(r.await)
        }
        "DeleteMessage" => {
            let req: DeleteIn = serde_json::from_slice(body).ok()?;
            let r = sqs.queue_by_url(&req.queue_url.0).and_then(|q| {
                let h = req
                    .handle
                    .receipt_handle
                    .ok_or_else(|| AwsError::missing_parameter("ReceiptHandle"))?;
                q.delete(&h.0)
            });
            out(r.map(|()| serde_json::Map::new()))
        }
        "DeleteMessageBatch" => {
            let req: DeleteBatchIn = serde_json::from_slice(body).ok()?;
            let r = sqs.queue_by_url(&req.queue_url.0).and_then(|q| {
                check_batch_ids(req.entries.iter().map(|e| e.id.as_ref().map(|s| &*s.0)))?;
                let entries = req.entries.iter().map(|e| {
                    (
                        e.id.as_ref().map_or("", |s| &*s.0),
                        e.receipt_handle
                            .as_ref()
                            .map(|s| &*s.0)
                            .ok_or_else(|| AwsError::missing_parameter("ReceiptHandle")),
                    )
                });
                Ok(delete_batch(&q, entries))
            });
            out(r)
        }
        _ => return None,
    })
}

fn entry_outgoing(e: EntryIn<'_>) -> AwsResult<Outgoing> {
    let body = e
        .message_body
        .ok_or_else(|| AwsError::missing_parameter("MessageBody"))?;
    let attrs = match e.message_attributes {
        None => Vec::new(),
        Some(map) => {
            check_attribute_count(map.len())?;
            let mut out = Vec::with_capacity(map.len());
            for (name, a) in map {
                let s = |v: &Option<Str<'_>>| v.as_ref().map(|s| s.0.to_string());
                let value = message::parse_attribute(
                    &name,
                    s(&a.data_type).as_deref(),
                    s(&a.string_value).as_deref(),
                    s(&a.binary_value).as_deref(),
                )?;
                out.push((name, value));
            }
            out
        }
    };
    let trace = e
        .message_system_attributes
        .and_then(|m| m.aws_trace_header)
        .and_then(|a| a.string_value)
        .map(|s| s.0.into_owned());
    Ok(Outgoing {
        body,
        attrs,
        delay_s: e.delay_seconds,
        group: e.message_group_id,
        dedup: e.message_deduplication_id,
        trace,
        extra: Vec::new(),
        message_id: None,
    })
}

fn check_attribute_count(n: usize) -> AwsResult<()> {
    if n > message::ATTRIBUTES_MAX {
        return Err(AwsError::invalid_parameter(format!(
            "Number of message attributes [{n}] exceeds the allowed maximum [{}].",
            message::ATTRIBUTES_MAX
        )));
    }
    Ok(())
}

// ---- the generic (`Value`) path -----------------------------------------------------------

fn value_outgoing(input: &Value) -> AwsResult<Outgoing> {
    let body = match input.get("MessageBody") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(AwsError::missing_parameter("MessageBody")),
    };
    let trace = input
        .get("MessageSystemAttributes")
        .and_then(|m| m.get("AWSTraceHeader"))
        .and_then(|a| a.get("StringValue"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Outgoing {
        body,
        attrs: message::parse_attributes(input.get("MessageAttributes"))?,
        delay_s: opt_int(input, "DelaySeconds")?,
        group: opt_str(input, "MessageGroupId").map(str::to_string),
        dedup: opt_str(input, "MessageDeduplicationId").map(str::to_string),
        trace,
        extra: Vec::new(),
        message_id: None,
    })
}

fn to_value<T: Serialize>(r: AwsResult<T>) -> AwsResult<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| AwsError::internal(e.to_string())))
}

fn queue_of(sqs: &Sqs, input: &Value) -> AwsResult<std::sync::Arc<Queue>> {
    sqs.queue_by_url(req_str(input, "QueueUrl")?)
}

pub async fn send_message(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    to_value(send_one(&q, value_outgoing(input)).await)
}

/// A batch's entries after the batch-level checks: present, at most 10, ids well-formed
/// and distinct.
pub fn batch_entries(input: &Value) -> AwsResult<&Vec<Value>> {
    let entries = input
        .get("Entries")
        .and_then(Value::as_array)
        .ok_or_else(AwsError::empty_batch)?;
    check_batch_ids(
        entries
            .iter()
            .map(|e| Some(e.get("Id").and_then(Value::as_str).unwrap_or(""))),
    )?;
    Ok(entries)
}

pub async fn send_message_batch(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let entries = batch_entries(input)?
        .iter()
        .map(|e| {
            let id = e.get("Id").and_then(Value::as_str).unwrap_or("");
            (id.to_string(), value_outgoing(e))
        })
        .collect();
    to_value(send_batch(&q, entries).await)
}

pub async fn receive_message(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let params = ReceiveIn {
        queue_url: String::new(),
        max_number_of_messages: opt_int(input, "MaxNumberOfMessages")?,
        wait_time_seconds: opt_int(input, "WaitTimeSeconds")?,
        visibility_timeout: opt_int(input, "VisibilityTimeout")?,
        attribute_names: str_list(input.get("AttributeNames")),
        message_system_attribute_names: str_list(input.get("MessageSystemAttributeNames")),
        message_attribute_names: str_list(input.get("MessageAttributeNames")),
        receive_request_attempt_id: opt_str(input, "ReceiveRequestAttemptId").map(str::to_string),
    };
    to_value(receive(&q, params).await)
}

pub fn delete_message_batch(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let entries = batch_entries(input)?.iter().map(|e| {
        (
            e.get("Id").and_then(Value::as_str).unwrap_or(""),
            req_str(e, "ReceiptHandle"),
        )
    });
    to_value(Ok(delete_batch(&q, entries)))
}

// ---- shared by both paths -----------------------------------------------------------------

/// Batch-level checks on entry ids: at least one entry, at most 10, each id well-formed and
/// distinct.
pub fn check_batch_ids<'a>(ids: impl ExactSizeIterator<Item = Option<&'a str>>) -> AwsResult<()> {
    let n = ids.len();
    if n == 0 {
        return Err(AwsError::empty_batch());
    }
    if n > BATCH_ENTRIES_MAX {
        return Err(AwsError::too_many_entries(n));
    }
    let mut seen = HashSet::with_capacity(n);
    for id in ids {
        let id = id.unwrap_or("");
        let ok = !id.is_empty()
            && id.len() <= 80
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(AwsError::invalid_batch_entry_id());
        }
        if !seen.insert(id) {
            return Err(AwsError::ids_not_distinct(id));
        }
    }
    Ok(())
}

async fn send_one(q: &Queue, m: AwsResult<Outgoing>) -> AwsResult<SentOut> {
    let mut m = m?;
    q.check(&mut m)?;
    let sent = q
        .send(vec![m])
        .await
        .pop()
        .unwrap_or_else(|| Err(AwsError::internal("lost")))?;
    Ok(SentOut::new(None, sent))
}

async fn send_batch(
    q: &Queue,
    entries: Vec<(String, AwsResult<Outgoing>)>,
) -> AwsResult<BatchOut<SentOut>> {
    let max = q.attr_num("MaximumMessageSize", 262_144) as usize;
    let mut failed = Vec::new();
    let mut good = Vec::with_capacity(entries.len());
    let mut total = 0usize;
    for (id, m) in entries {
        match m.and_then(|mut m| q.check(&mut m).map(|_| m)) {
            Ok(m) => {
                total += m.body.len() + message::attributes_size(&m.attrs);
                good.push((id, m));
            }
            Err(err) => failed.push(EntryError::new(&id, &err)),
        }
    }
    if total > max {
        return Err(AwsError::batch_too_long(total, max));
    }
    let (ids, msgs): (Vec<String>, Vec<Outgoing>) = good.into_iter().unzip();
    let results = q.send(msgs).await;
    let mut successful = Vec::with_capacity(ids.len());
    for (id, r) in ids.into_iter().zip(results) {
        match r {
            Ok(s) => successful.push(SentOut::new(Some(id), s)),
            Err(err) => failed.push(EntryError::new(&id, &err)),
        }
    }
    Ok(BatchOut { successful, failed })
}

fn delete_batch<'a>(
    q: &Queue,
    entries: impl Iterator<Item = (&'a str, AwsResult<&'a str>)>,
) -> BatchOut<IdOut> {
    let mut out = BatchOut {
        successful: Vec::new(),
        failed: Vec::new(),
    };
    for (id, handle) in entries {
        let r = handle.and_then(|h| q.delete(h));
        match r {
            Ok(()) => out.successful.push(IdOut::new(id)),
            Err(err) => out.failed.push(EntryError::new(id, &err)),
        }
    }
    out
}

async fn receive(q: &Queue, p: ReceiveIn) -> AwsResult<ReceiveOut> {
    let max = p.max_number_of_messages.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return Err(AwsError::invalid_parameter(format!(
            "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
        )));
    }
    let wait = match p.wait_time_seconds {
        Some(w) => w,
        None => q.attr_num("ReceiveMessageWaitTimeSeconds", 0),
    };
    if !(0..=WAIT_S_MAX).contains(&wait) {
        return Err(AwsError::invalid_parameter(format!(
            "Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
        )));
    }
    let visibility = match p.visibility_timeout {
        Some(v) if !(0..=43_200).contains(&v) => {
            return Err(AwsError::invalid_parameter(format!(
                "Value {v} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )))
        }
        Some(v) => v,
        None => q.attr_num("VisibilityTimeout", 30),
    };
    let mut sys_names = p.attribute_names;
    sys_names.extend(p.message_system_attribute_names);
    let attempt = p.receive_request_attempt_id.filter(|_| q.fifo);
    if let Some(a) = &attempt {
        if a.is_empty() || a.len() > 128 || !a.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AwsError::invalid_parameter(
                "Value for parameter ReceiveRequestAttemptId is invalid.",
            ));
        }
    }
    let retried = attempt.as_deref().and_then(|a| q.retried_attempt(a));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    let got = if let Some(got) = retried {
        got
    } else {
        loop {
            let notified = q.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = q.take(max as usize, visibility);
            if !got.is_empty()
                || tokio::time::Instant::now() >= deadline
                || q.deleted.load(Ordering::SeqCst)
            {
                break got;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    };
    if let Some(a) = &attempt {
        q.remember_attempt(a, &got);
    }
    let messages = got
        .iter()
        .map(|r| message_out(q, r, &sys_names, &p.message_attribute_names))
        .collect();
    Ok(ReceiveOut { messages })
}

fn message_out(q: &Queue, r: &Received, sys: &[String], names: &[String]) -> MessageOut {
    let m = &r.delivery.message;
    let body = m
        .value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let hs = |k: &str| m.header(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let message_id = hs(hdr::MESSAGE_ID).unwrap_or_else(|| {
        // A record another protocol produced: a stable id from the queue, partition and
        // offset.
        let mut b = [0u8; 16];
        let salt = q.id as i64 ^ m.timestamp ^ ((r.partition as i64) << 48);
        b[..8].copy_from_slice(&salt.to_be_bytes());
        b[8..].copy_from_slice(&m.offset.to_be_bytes());
        uuid::Uuid::from_bytes(b).to_string()
    });
    let mut attributes = BTreeMap::new();
    if !sys.is_empty() {
        let want = |n: &str| sys.iter().any(|s| s == "All" || s == n);
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                if want(k) {
                    attributes.insert(k, v);
                }
            }
        };
        put(
            "SenderId",
            Some(hs(hdr::SENDER).unwrap_or_else(|| "AIDAIT2UOQQY3AUEKVGXU".into())),
        );
        put("SentTimestamp", Some(m.timestamp.to_string()));
        put(
            "ApproximateReceiveCount",
            Some(r.delivery.delivery_count.to_string()),
        );
        put(
            "ApproximateFirstReceiveTimestamp",
            Some(r.first_receive_ms.to_string()),
        );
        put("MessageGroupId", hs(hdr::GROUP_ID));
        if q.fifo {
            put("MessageDeduplicationId", hs(hdr::DEDUP_ID));
            put(
                "SequenceNumber",
                Some(super::queue::sequence_number(m.offset)),
            );
        }
        put("AWSTraceHeader", hs(hdr::TRACE));
        put("DeadLetterQueueSourceArn", hs(hdr::DLQ_SOURCE));
    }
    let message_attributes: Vec<(String, AttrValue)> = if names.is_empty() {
        Vec::new()
    } else {
        message::attributes_of(&m.headers)
            .into_iter()
            .filter(|(n, _)| message::selected(names, n))
            .collect()
    };
    MessageOut {
        message_id,
        receipt_handle: r.receipt.clone(),
        md5_body: message::md5_hex(body.as_bytes()),
        body,
        attributes,
        md5_attrs: (!message_attributes.is_empty())
            .then(|| message::md5_of_attributes(&message_attributes)),
        message_attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_shapes_borrow_plain_strings_and_own_escaped_ones() {
        let body = br#"{"QueueUrl":"http://h/0/q","Entries":[{"Id":"a","MessageBody":"x\ny","MessageAttributes":{"k":{"DataType":"String","StringValue":"v\"w"}}}]}"#;
        let req: SendBatchIn = serde_json::from_slice(body).unwrap();
        assert!(matches!(req.queue_url.0, Cow::Borrowed("http://h/0/q")));
        let e = req.entries.into_iter().next().unwrap();
        let attr = &e.message_attributes.as_ref().unwrap()["k"];
        assert!(matches!(
            attr.string_value.as_ref().unwrap().0,
            Cow::Owned(_)
        ));
        let out = entry_outgoing(e).unwrap();
        assert_eq!(out.body, "x\ny");
        assert_eq!(&out.attrs[0].1.value[..], b"v\"w");
    }

    #[test]
    fn shapes_that_do_not_fit_are_left_to_the_generic_path() {
        // A number sent as a string, and an entry list that is not a list.
        assert!(serde_json::from_slice::<ReceiveIn>(
            br#"{"QueueUrl":"u","MaxNumberOfMessages":"5"}"#
        )
        .is_err());
        assert!(
            serde_json::from_slice::<SendBatchIn>(br#"{"QueueUrl":"u","Entries":{}}"#).is_err()
        );
    }

    #[test]
    fn batch_id_checks() {
        assert_eq!(
            check_batch_ids([Some("a"), Some("a")].into_iter())
                .unwrap_err()
                .kind,
            "BatchEntryIdsNotDistinct"
        );
        assert_eq!(
            check_batch_ids([None].into_iter()).unwrap_err().kind,
            "InvalidBatchEntryId"
        );
        assert_eq!(
            check_batch_ids(std::iter::empty()).unwrap_err().kind,
            "EmptyBatchRequest"
        );
        assert!(check_batch_ids([Some("a-1"), Some("b_2")].into_iter()).is_ok());
    }
}
