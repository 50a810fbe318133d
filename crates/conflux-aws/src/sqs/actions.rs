//! SQS actions over the JSON 1.0 shapes (the query protocol is translated to and from these
//! shapes in `query`). Each takes the request object and returns the response object.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::attrs;
use super::messages;
use super::moves;
use super::queue::{Queue, QueueDef};
use super::Sqs;
use crate::error::{AwsError, AwsResult};

/// Entries per batch request.
pub const BATCH_ENTRIES_MAX: usize = 10;
/// Longest WaitTimeSeconds.
pub const WAIT_S_MAX: i64 = 20;
/// Most queues a node holds (each has a topic and a pump task).
pub const QUEUES_MAX: usize = 10_000;

/// Per-request context.
pub struct Ctx<'a> {
    pub host: &'a str,
}

pub async fn dispatch(
    sqs: &Arc<Sqs>,
    ctx: &Ctx<'_>,
    action: &str,
    input: &Value,
) -> AwsResult<Value> {
    match action {
        "CreateQueue" => create_queue(sqs, ctx, input),
        "GetQueueUrl" => {
            let name = req_str(input, "QueueName")?;
            let q = sqs.queue(name)?;
            Ok(json!({"QueueUrl": sqs.url(ctx.host, &q.name)}))
        }
        "ListQueues" => list_queues(sqs, ctx, input),
        "DeleteQueue" => delete_queue(sqs, input),
        "GetQueueAttributes" => get_queue_attributes(sqs, input),
        "SetQueueAttributes" => set_queue_attributes(sqs, input),
        "PurgeQueue" => purge_queue(sqs, input),
        "SendMessage" => messages::send_message(sqs, input).await,
        "SendMessageBatch" => messages::send_message_batch(sqs, input).await,
        "ReceiveMessage" => messages::receive_message(sqs, input).await,
        "DeleteMessage" => {
            let q = queue_of(sqs, input)?;
            q.delete(req_str(input, "ReceiptHandle")?)?;
            Ok(json!({}))
        }
        "DeleteMessageBatch" => messages::delete_message_batch(sqs, input),
        "ChangeMessageVisibility" => {
            let q = queue_of(sqs, input)?;
            let timeout = req_int(input, "VisibilityTimeout")?;
            q.change_visibility(req_str(input, "ReceiptHandle")?, timeout)?;
            Ok(json!({}))
        }
        "ChangeMessageVisibilityBatch" => change_visibility_batch(sqs, input),
        "TagQueue" => tag_queue(sqs, input),
        "UntagQueue" => untag_queue(sqs, input),
        "ListQueueTags" => {
            let q = queue_of(sqs, input)?;
            let tags = q.def.lock().tags.clone();
            Ok(if tags.is_empty() {
                json!({})
            } else {
                json!({"Tags": tags})
            })
        }
        "ListDeadLetterSourceQueues" => list_dead_letter_sources(sqs, ctx, input),
        "StartMessageMoveTask" => moves::start(sqs, input),
        "CancelMessageMoveTask" => moves::cancel(sqs, input),
        "ListMessageMoveTasks" => moves::list(sqs, input),
        "AddPermission" => add_permission(sqs, input),
        "RemovePermission" => remove_permission(sqs, input),
        other => Err(AwsError::invalid_action(other)),
    }
}

// ---- parameter helpers ------------------------------------------------------------------

pub fn req_str<'a>(input: &'a Value, name: &str) -> AwsResult<&'a str> {
    match input.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Null) | None => Err(AwsError::missing_parameter(name)),
        Some(_) => Err(AwsError::invalid_parameter(format!(
            "Value for parameter {name} is invalid."
        ))),
    }
}

pub fn opt_str<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// Integers arrive as JSON numbers (JSON protocol) or strings (query protocol).
pub fn opt_int(input: &Value, name: &str) -> AwsResult<Option<i64>> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad_int(name)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad_int(name)),
        Some(_) => Err(bad_int(name)),
    }
}

fn bad_int(name: &str) -> AwsError {
    AwsError::invalid_parameter(format!(
        "Value for parameter {name} is invalid. Reason: must be an integer."
    ))
}

pub fn req_int(input: &Value, name: &str) -> AwsResult<i64> {
    opt_int(input, name)?.ok_or_else(|| AwsError::missing_parameter(name))
}

fn str_map(v: Option<&Value>, what: &str) -> AwsResult<BTreeMap<String, String>> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let Some(m) = v.as_object() else {
        return Err(AwsError::invalid_parameter(format!(
            "{what} must be a map."
        )));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(AwsError::invalid_parameter(format!(
                "Value for {what} {k} is invalid."
            ))),
        })
        .collect()
}

pub fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn queue_of(sqs: &Sqs, input: &Value) -> AwsResult<Arc<Queue>> {
    sqs.queue_by_url(req_str(input, "QueueUrl")?)
}

fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---- queues -----------------------------------------------------------------------------

fn create_queue(sqs: &Arc<Sqs>, ctx: &Ctx<'_>, input: &Value) -> AwsResult<Value> {
    let name = req_str(input, "QueueName")?;
    let given = str_map(input.get("Attributes"), "Attributes")?;
    let fifo_attr = given.get("FifoQueue").map(String::as_str) == Some("true");
    if !valid_queue_name(name) || fifo_attr != name.ends_with(".fifo") {
        return Err(AwsError::invalid_parameter(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length. A FIFO queue name must end with the .fifo suffix, and only FIFO queues may.",
        ));
    }
    let fifo = fifo_attr;
    attrs::validate(&given, fifo, true)?;
    check_redrive_target(sqs, name, &given)?;
    let tags = str_map(input.get("tags").or(input.get("Tags")), "Tags")?;
    // One creation at a time keeps "idempotent, conflicts rejected" exact.
    let mut queues = sqs.queues.write();
    if let Some(q) = queues.get(name) {
        let def = q.def.lock();
        let conflict = given.iter().any(|(k, v)| def.attributes.get(k) != Some(v));
        if conflict {
            return Err(AwsError::queue_name_exists(name));
        }
        return Ok(json!({"QueueUrl": sqs.url(ctx.host, name)}));
    }
    if queues.len() >= QUEUES_MAX {
        return Err(AwsError {
            kind: "OverLimit",
            code: "OverLimit",
            message: format!("This node holds at most {QUEUES_MAX} queues."),
            status: 403,
            sender_fault: true,
        });
    }
    if tags.len() > 50 {
        return Err(AwsError::invalid_parameter(
            "Too many tags added for queue.",
        ));
    }
    if let Some(t) = sqs
        .broker
        .topic(name)
        .filter(|t| fifo && t.partition_count() > 1)
    {
        return Err(AwsError::invalid_parameter(format!(
            "Value {name} for parameter QueueName is invalid. Reason: {name} is an existing topic with {} partitions; a FIFO queue keeps message-group order only on a single-partition topic.",
            t.partition_count()
        )));
    }
    let mut attributes = attrs::defaults(fifo);
    attributes.extend(given);
    let now = conflux_broker::now_ms();
    let def = QueueDef {
        name: name.to_string(),
        created_ms: now,
        modified_ms: now,
        attributes,
        tags,
        permissions: Vec::new(),
    };
    persist(sqs, &def)?;
    let q = Queue::open(sqs, def)?;
    queues.insert(name.to_string(), q);
    Ok(json!({"QueueUrl": sqs.url(ctx.host, name)}))
}

fn persist(sqs: &Sqs, def: &QueueDef) -> AwsResult<()> {
    let v = serde_json::to_value(def).map_err(|e| AwsError::internal(e.to_string()))?;
    sqs.broker
        .set_routing(&format!("aws/sqs/queue/{}", def.name), v)
        .map_err(|e| AwsError::internal(format!("storage error: {e}")))
}

fn check_redrive_target(
    sqs: &Sqs,
    name: &str,
    attrs_in: &BTreeMap<String, String>,
) -> AwsResult<()> {
    let Some(p) = attrs_in.get("RedrivePolicy") else {
        return Ok(());
    };
    let Some(r) = attrs::parse_redrive(p)? else {
        return Ok(());
    };
    let bad = |why: &str| {
        AwsError::invalid_parameter(format!(
            "Value {p} for parameter RedrivePolicy is invalid. Reason: {why}"
        ))
    };
    let target = sqs
        .queue_by_arn(&r.target_arn)
        .map_err(|_| bad("Dead-letter target does not exist."))?;
    if target.fifo != name.ends_with(".fifo") {
        return Err(bad(
            "Dead-letter queue must be same type of queue as the source.",
        ));
    }
    if target.name == name {
        return Err(bad("Dead-letter target can't be the source queue."));
    }
    let allow = target
        .def
        .lock()
        .attributes
        .get("RedriveAllowPolicy")
        .cloned();
    if !attrs::redrive_allowed(allow.as_ref(), &sqs.arn(name)) {
        return Err(bad(
            "Queue is not allowed to use the dead-letter target by its RedriveAllowPolicy.",
        ));
    }
    Ok(())
}

fn list_queues(sqs: &Sqs, ctx: &Ctx<'_>, input: &Value) -> AwsResult<Value> {
    let prefix = opt_str(input, "QueueNamePrefix").unwrap_or("");
    let max = opt_int(input, "MaxResults")?;
    if max.is_some_and(|m| !(1..=1000).contains(&m)) {
        return Err(AwsError::invalid_parameter(
            "Value for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and 1000.",
        ));
    }
    let after = match opt_str(input, "NextToken") {
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AwsError::invalid_parameter("Invalid NextToken value."))?,
        ),
        None => None,
    };
    let queues = sqs.queues.read();
    let names: Vec<&String> = queues
        .keys()
        .filter(|n| n.starts_with(prefix))
        .filter(|n| after.as_ref().is_none_or(|a| n.as_str() > a.as_str()))
        .collect();
    let limit = max.unwrap_or(1000) as usize;
    let page: Vec<String> = names
        .iter()
        .take(limit)
        .map(|n| sqs.url(ctx.host, n))
        .collect();
    let mut out = Map::new();
    if !page.is_empty() {
        out.insert("QueueUrls".into(), json!(page));
    }
    if max.is_some() && names.len() > limit {
        let last = names[limit - 1];
        out.insert(
            "NextToken".into(),
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)),
        );
    }
    Ok(Value::Object(out))
}

fn delete_queue(sqs: &Arc<Sqs>, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    sqs.queues.write().remove(&q.name);
    q.deleted.store(true, Ordering::SeqCst);
    q.wake_all();
    sqs.broker
        .remove_routing(&format!("aws/sqs/queue/{}", q.name))
        .map_err(|e| AwsError::internal(format!("storage error: {e}")))?;
    if let Err(e) = sqs.broker.delete_topic(&q.name) {
        tracing::warn!(queue = %q.name, error = %e, "deleting the queue's topic failed");
    }
    for i in 0..q.partitions() {
        let _ = std::fs::remove_file(sqs.state_path(&q.name, i));
    }
    Ok(json!({}))
}

fn get_queue_attributes(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let names = str_list(input.get("AttributeNames"));
    let all = names.iter().any(|n| n == "All");
    let def = q.def.lock().clone();
    let (visible, inflight, delayed) = q.counts();
    let mut out = Map::new();
    let mut put = |k: &str, v: String| {
        if all || names.iter().any(|n| n == k) {
            out.insert(k.to_string(), Value::String(v));
        }
    };
    for (k, v) in &def.attributes {
        put(k, v.clone());
    }
    put("QueueArn", q.arn.clone());
    put("ApproximateNumberOfMessages", visible.to_string());
    put(
        "ApproximateNumberOfMessagesNotVisible",
        inflight.to_string(),
    );
    put("ApproximateNumberOfMessagesDelayed", delayed.to_string());
    put("CreatedTimestamp", (def.created_ms / 1000).to_string());
    put(
        "LastModifiedTimestamp",
        (def.modified_ms / 1000).to_string(),
    );
    for n in &names {
        let known = n == "All"
            || attrs::COMPUTED.contains(&n.as_str())
            || attrs::validate(&BTreeMap::from([(n.clone(), String::new())]), q.fifo, false)
                .map_or_else(|e| e.kind != "InvalidAttributeName", |_| true);
        if !known {
            return Err(AwsError::invalid_attribute_name(n));
        }
    }
    Ok(if out.is_empty() {
        json!({})
    } else {
        json!({"Attributes": out})
    })
}

fn set_queue_attributes(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let given = str_map(input.get("Attributes"), "Attributes")?;
    if given.is_empty() {
        return Err(AwsError::missing_parameter("Attributes"));
    }
    if given.contains_key("FifoQueue") {
        return Err(AwsError::invalid_attribute_name("FifoQueue"));
    }
    attrs::validate(&given, q.fifo, false)?;
    check_redrive_target(sqs, &q.name, &given)?;
    let def = {
        let mut def = q.def.lock();
        for (k, v) in given {
            if v.is_empty()
                && matches!(
                    k.as_str(),
                    "RedrivePolicy" | "RedriveAllowPolicy" | "Policy"
                )
            {
                def.attributes.remove(&k);
            } else {
                def.attributes.insert(k, v);
            }
        }
        def.modified_ms = conflux_broker::now_ms();
        def.clone()
    };
    persist(sqs, &def)?;
    q.reconfigure();
    Ok(json!({}))
}

fn purge_queue(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let now = conflux_broker::now_ms();
    let mut inner = q.inner.lock();
    if inner.last_purge_ms != 0 && now - inner.last_purge_ms < 60_000 {
        return Err(AwsError {
            kind: "PurgeQueueInProgress",
            code: "AWS.SimpleQueueService.PurgeQueueInProgress",
            message: format!(
                "Only one PurgeQueue operation on {} is allowed every 60 seconds.",
                q.name
            ),
            status: 403,
            sender_fault: true,
        });
    }
    inner.last_purge_ms = now;
    inner.purge(now);
    Ok(json!({}))
}

fn tag_queue(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let tags = str_map(input.get("Tags"), "Tags")?;
    let def = {
        let mut def = q.def.lock();
        def.tags.extend(tags);
        if def.tags.len() > 50 {
            return Err(AwsError::invalid_parameter(
                "Too many tags added for queue.",
            ));
        }
        def.clone()
    };
    persist(sqs, &def)?;
    Ok(json!({}))
}

fn untag_queue(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let keys = str_list(input.get("TagKeys"));
    let def = {
        let mut def = q.def.lock();
        for k in keys {
            def.tags.remove(&k);
        }
        def.clone()
    };
    persist(sqs, &def)?;
    Ok(json!({}))
}

fn add_permission(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let label = req_str(input, "Label")?.to_string();
    if str_list(input.get("AWSAccountIds")).is_empty() {
        return Err(AwsError::missing_parameter("AWSAccountIds"));
    }
    if str_list(input.get("Actions")).is_empty() {
        return Err(AwsError::missing_parameter("Actions"));
    }
    let def = {
        let mut def = q.def.lock();
        if def.permissions.contains(&label) {
            return Err(AwsError::invalid_parameter(format!(
                "Value {label} for parameter Label is invalid. Reason: Already exists."
            )));
        }
        def.permissions.push(label);
        def.clone()
    };
    persist(sqs, &def)?;
    Ok(json!({}))
}

fn remove_permission(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let label = req_str(input, "Label")?;
    let def = {
        let mut def = q.def.lock();
        let before = def.permissions.len();
        def.permissions.retain(|l| l != label);
        if def.permissions.len() == before {
            return Err(AwsError::invalid_parameter(format!(
                "Value {label} for parameter Label is invalid. Reason: can't find label on existing policy."
            )));
        }
        def.clone()
    };
    persist(sqs, &def)?;
    Ok(json!({}))
}

fn list_dead_letter_sources(sqs: &Sqs, ctx: &Ctx<'_>, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let urls: Vec<String> = sqs
        .queues
        .read()
        .values()
        .filter(|s| s.redrive().is_some_and(|r| r.target_arn == q.arn))
        .map(|s| sqs.url(ctx.host, &s.name))
        .collect();
    Ok(json!({"queueUrls": urls}))
}

// ---- messages (see `messages` for the hot ones) -------------------------------------------

fn entry_error(id: &str, e: &AwsError) -> Value {
    json!({"Id": id, "SenderFault": e.sender_fault, "Code": e.code, "Message": e.message})
}

fn change_visibility_batch(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let q = queue_of(sqs, input)?;
    let entries = messages::batch_entries(input)?;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for e in entries {
        let id = e.get("Id").and_then(Value::as_str).unwrap_or("");
        let r = req_str(e, "ReceiptHandle").and_then(|h| {
            let t = opt_int(e, "VisibilityTimeout")?.unwrap_or(0);
            q.change_visibility(h, t)
        });
        match r {
            Ok(()) => ok.push(json!({"Id": id})),
            Err(err) => failed.push(entry_error(id, &err)),
        }
    }
    Ok(json!({"Successful": ok, "Failed": failed}))
}
