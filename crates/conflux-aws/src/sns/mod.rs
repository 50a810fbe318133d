//! SNS over the query protocol: topics, subscriptions (`sqs`, and `http`/`https` with the
//! SubscriptionConfirmation handshake), publishing with filter policies, raw or enveloped
//! delivery into SQS queues, HTTP(S) deliveries retried by delivery policy, and
//! subscription dead-letter queues (`redrive`).
//!
//! Topics and subscriptions are routing metadata `aws/sns/topic/<name>` and
//! `aws/sns/sub/<id>` in the broker's metadata log.

pub mod delivery;
pub mod filter;
pub mod redrive;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use base64::Engine;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{AwsError, AwsResult};
use crate::message::{self, AttrValue};
use crate::query::{escape, indexed, tree};
use crate::sqs::queue::Outgoing;
use crate::sqs::Sqs;
use crate::AwsConfig;

const SNS_ACTIONS: &[&str] = &[
    "CreateTopic",
    "DeleteTopic",
    "ListTopics",
    "Subscribe",
    "ConfirmSubscription",
    "Unsubscribe",
    "ListSubscriptions",
    "ListSubscriptionsByTopic",
    "Publish",
    "PublishBatch",
    "GetTopicAttributes",
    "SetTopicAttributes",
    "GetSubscriptionAttributes",
    "SetSubscriptionAttributes",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// Whether a query-protocol request is for SNS: by action, or for actions both services
/// have, by a `TopicArn` parameter or the credential scope naming `sns`.
pub fn is_sns(action: &str, params: &BTreeMap<String, String>, headers: &hyper::HeaderMap) -> bool {
    if SNS_ACTIONS.contains(&action) {
        return true;
    }
    if params.contains_key("TopicArn") {
        return true;
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("/sns/aws4_request"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicDef {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubDef {
    pub arn: String,
    pub topic_arn: String,
    pub protocol: String,
    pub endpoint: String,
    pub attributes: BTreeMap<String, String>,
    pub confirmed: bool,
    pub token: String,
}

pub struct Sns {
    pub config: AwsConfig,
    pub sqs: Arc<Sqs>,
    pub topics: RwLock<BTreeMap<String, TopicDef>>,
    pub subs: RwLock<BTreeMap<String, SubDef>>,
    /// The endpoint's own address, for SubscribeURL / UnsubscribeURL (learnt from requests).
    pub host: parking_lot::Mutex<String>,
    /// Messages published per topic name since start (for `/metrics`).
    published: RwLock<HashMap<String, std::sync::atomic::AtomicU64>>,
    /// TLS client settings for `https` endpoints.
    pub tls: Arc<tokio_rustls::rustls::ClientConfig>,
    /// HTTP(S) deliveries in progress (bounded by `delivery::DELIVERIES_MAX`).
    pub deliveries: AtomicUsize,
}

type P = BTreeMap<String, String>;

/// Most topics and subscriptions a node holds (limits on what clients control).
pub const TOPICS_MAX: usize = 10_000;
pub const SUBSCRIPTIONS_MAX: usize = 100_000;

fn req<'a>(p: &'a P, name: &str) -> AwsResult<&'a str> {
    p.get(name)
        .map(String::as_str)
        .ok_or_else(|| AwsError::invalid_parameter_sns(format!("Invalid parameter: {name}")))
}

fn not_found(what: &str) -> AwsError {
    AwsError::not_found_sns(format!("{what} does not exist"))
}

/// A `<Prefix>.entry.N.key/value` map (or `member.N.Key/Value`).
fn map_param(p: &P, prefix: &str, kn: &str, vn: &str) -> BTreeMap<String, String> {
    let t = tree(p);
    let mut out = BTreeMap::new();
    if let Some(node) = t.get(prefix) {
        let items = node
            .get("entry")
            .or_else(|| node.get("member"))
            .map(indexed)
            .unwrap_or_default();
        for i in items {
            if let (Some(k), Some(v)) = (
                i.get(kn).and_then(Value::as_str),
                i.get(vn).and_then(Value::as_str),
            ) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// SNS message attributes from a tree node (`MessageAttributes.entry.N.Name/Value.*`).
fn message_attributes(node: Option<&Value>) -> AwsResult<Vec<(String, AttrValue)>> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    let mut json_map = serde_json::Map::new();
    for i in node.get("entry").map(indexed).unwrap_or_default() {
        if let (Some(k), Some(v)) = (i.get("Name").and_then(Value::as_str), i.get("Value")) {
            json_map.insert(k.to_string(), v.clone());
        }
    }
    message::parse_attributes(Some(&Value::Object(json_map)))
        .map_err(|e| AwsError::invalid_parameter_sns(e.message))
}

impl Sns {
    pub fn open(
        broker: Arc<conflux_broker::Broker>,
        sqs: Arc<Sqs>,
        config: AwsConfig,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Arc<Sns> {
        let mut topics = BTreeMap::new();
        for (_, v) in broker.routing_entries("aws/sns/topic/") {
            if let Ok(t) = serde_json::from_value::<TopicDef>(v) {
                topics.insert(t.name.clone(), t);
            }
        }
        let mut subs = BTreeMap::new();
        for (_, v) in broker.routing_entries("aws/sns/sub/") {
            if let Ok(s) = serde_json::from_value::<SubDef>(v) {
                subs.insert(s.arn.clone(), s);
            }
        }
        Arc::new(Sns {
            config,
            sqs,
            topics: RwLock::new(topics),
            subs: RwLock::new(subs),
            host: parking_lot::Mutex::new("localhost:9324".to_string()),
            published: RwLock::new(HashMap::new()),
            tls,
            deliveries: AtomicUsize::new(0),
        })
    }

    /// Whether subscription `arn` still exists (retries stop when it is gone).
    pub fn subscribed(&self, arn: &str) -> bool {
        self.subs.read().contains_key(arn)
    }

    /// The `DeliveryPolicy` attribute of the topic `arn` names.
    pub fn topic_delivery_policy(&self, arn: &str) -> Option<String> {
        let name = arn.rsplit(':').next()?;
        self.topics
            .read()
            .get(name)?
            .attributes
            .get("DeliveryPolicy")
            .cloned()
    }

    /// A topic's ARN by name.
    pub fn topic_arn(&self, name: &str) -> String {
        self.arn(name)
    }

    /// Messages published to topic `name` since start.
    pub fn published(&self, name: &str) -> u64 {
        use std::sync::atomic::Ordering;
        self.published
            .read()
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count_published(&self, name: &str) {
        use std::sync::atomic::{AtomicU64, Ordering};
        if let Some(c) = self.published.read().get(name) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.published
            .write()
            .entry(name.to_string())
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sns:{}:{}:{name}",
            self.config.region, self.config.account_id
        )
    }

    fn topic_name<'a>(&self, arn: &'a str) -> AwsResult<&'a str> {
        let name = arn.rsplit(':').next().unwrap_or("");
        if !arn.starts_with("arn:aws:sns:") || !self.topics.read().contains_key(name) {
            return Err(not_found("Topic"));
        }
        Ok(name)
    }

    fn persist_topic(&self, t: &TopicDef) -> AwsResult<()> {
        let v = serde_json::to_value(t).map_err(|e| AwsError::internal(e.to_string()))?;
        self.sqs
            .broker
            .set_routing(&format!("aws/sns/topic/{}", t.name), v)
            .map_err(|e| AwsError::internal(format!("storage error: {e}")))
    }

    fn persist_sub(&self, s: &SubDef) -> AwsResult<()> {
        let id = s.arn.rsplit(':').next().unwrap_or("");
        let v = serde_json::to_value(s).map_err(|e| AwsError::internal(e.to_string()))?;
        self.sqs
            .broker
            .set_routing(&format!("aws/sns/sub/{id}"), v)
            .map_err(|e| AwsError::internal(format!("storage error: {e}")))
    }

    /// Runs one SNS action; returns the inner XML of its `<Action>Result`.
    pub async fn dispatch(self: &Arc<Self>, action: &str, p: &P) -> AwsResult<String> {
        match action {
            "CreateTopic" => self.create_topic(p),
            "DeleteTopic" => self.delete_topic(p),
            "ListTopics" => {
                let members: String = self
                    .topics
                    .read()
                    .keys()
                    .map(|n| {
                        format!(
                            "<member><TopicArn>{}</TopicArn></member>",
                            escape(&self.arn(n))
                        )
                    })
                    .collect();
                Ok(format!("<Topics>{members}</Topics>"))
            }
            "Subscribe" => self.subscribe(p).await,
            "ConfirmSubscription" => {
                let token = req(p, "Token")?;
                let topic_arn = req(p, "TopicArn")?;
                let mut subs = self.subs.write();
                let s = subs
                    .values_mut()
                    .find(|s| s.token == token && s.topic_arn == topic_arn)
                    .ok_or_else(|| AwsError::invalid_parameter_sns("Invalid token"))?;
                s.confirmed = true;
                let s = s.clone();
                drop(subs);
                self.persist_sub(&s)?;
                Ok(format!(
                    "<SubscriptionArn>{}</SubscriptionArn>",
                    escape(&s.arn)
                ))
            }
            "Unsubscribe" => {
                let arn = req(p, "SubscriptionArn")?;
                if self.subs.write().remove(arn).is_none() {
                    return Err(not_found("Subscription"));
                }
                let id = arn.rsplit(':').next().unwrap_or("");
                let _ = self.sqs.broker.remove_routing(&format!("aws/sns/sub/{id}"));
                Ok(String::new())
            }
            "ListSubscriptions" => Ok(self.list_subs(None)),
            "ListSubscriptionsByTopic" => {
                let arn = req(p, "TopicArn")?;
                self.topic_name(arn)?;
                Ok(self.list_subs(Some(arn)))
            }
            "Publish" => self.publish(p).await,
            "PublishBatch" => self.publish_batch(p).await,
            "GetTopicAttributes" => self.get_topic_attributes(p),
            "SetTopicAttributes" => {
                let name = self.topic_name(req(p, "TopicArn")?)?.to_string();
                let k = req(p, "AttributeName")?.to_string();
                let v = p.get("AttributeValue").cloned().unwrap_or_default();
                if k == "DeliveryPolicy" {
                    delivery::validate_delivery_policy(&v).map_err(|e| {
                        AwsError::invalid_parameter_sns(format!(
                            "Invalid parameter: DeliveryPolicy: {e}"
                        ))
                    })?;
                }
                if !matches!(
                    k.as_str(),
                    "DisplayName"
                        | "Policy"
                        | "DeliveryPolicy"
                        | "ContentBasedDeduplication"
                        | "KmsMasterKeyId"
                        | "SignatureVersion"
                        | "TracingConfig"
                        | "ArchivePolicy"
                ) {
                    return Err(AwsError::invalid_parameter_sns(format!(
                        "Invalid parameter: AttributeName {k}"
                    )));
                }
                let t = {
                    let mut topics = self.topics.write();
                    let t = topics.get_mut(&name).ok_or_else(|| not_found("Topic"))?;
                    t.attributes.insert(k, v);
                    t.clone()
                };
                self.persist_topic(&t)?;
                Ok(String::new())
            }
            "GetSubscriptionAttributes" => {
                let arn = req(p, "SubscriptionArn")?;
                let s = self
                    .subs
                    .read()
                    .get(arn)
                    .cloned()
                    .ok_or_else(|| not_found("Subscription"))?;
                let mut a = s.attributes.clone();
                a.insert("SubscriptionArn".into(), s.arn.clone());
                a.insert("TopicArn".into(), s.topic_arn.clone());
                a.insert("Owner".into(), self.config.account_id.clone());
                a.insert("Protocol".into(), s.protocol.clone());
                a.insert("Endpoint".into(), s.endpoint.clone());
                a.insert("PendingConfirmation".into(), (!s.confirmed).to_string());
                a.insert("ConfirmationWasAuthenticated".into(), "true".into());
                a.entry("RawMessageDelivery".into())
                    .or_insert_with(|| "false".into());
                Ok(attributes_xml(&a))
            }
            "SetSubscriptionAttributes" => self.set_subscription_attribute(p),
            "TagResource" | "UntagResource" | "ListTagsForResource" => self.tags(action, p),
            other => Err(AwsError::invalid_action(other)),
        }
    }

    fn create_topic(&self, p: &P) -> AwsResult<String> {
        let name = req(p, "Name")?;
        let attrs = map_param(p, "Attributes", "key", "value");
        let fifo = attrs.get("FifoTopic").map(String::as_str) == Some("true");
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        let ok = !base.is_empty()
            && name.len() <= 256
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && fifo == name.ends_with(".fifo");
        if !ok {
            return Err(AwsError::invalid_parameter_sns(
                "Invalid parameter: Topic Name",
            ));
        }
        let tags = map_param(p, "Tags", "Key", "Value");
        if tags.len() > 50 {
            return Err(AwsError::invalid_parameter_sns(
                "Invalid parameter: Tags: at most 50",
            ));
        }
        let mut topics = self.topics.write();
        if !topics.contains_key(name) && topics.len() >= TOPICS_MAX {
            return Err(AwsError::invalid_parameter_sns(format!(
                "Invalid parameter: this node holds at most {TOPICS_MAX} topics"
            )));
        }
        if let Some(t) = topics.get(name) {
            if attrs.iter().any(|(k, v)| t.attributes.get(k) != Some(v)) {
                return Err(AwsError::invalid_parameter_sns(
                    "Invalid parameter: Attributes Reason: Topic already exists with different attributes",
                ));
            }
        } else {
            let t = TopicDef {
                name: name.to_string(),
                attributes: attrs,
                tags,
            };
            self.persist_topic(&t)?;
            topics.insert(name.to_string(), t);
        }
        Ok(format!("<TopicArn>{}</TopicArn>", escape(&self.arn(name))))
    }

    fn delete_topic(&self, p: &P) -> AwsResult<String> {
        let arn = req(p, "TopicArn")?;
        let name = arn.rsplit(':').next().unwrap_or("").to_string();
        if self.topics.write().remove(&name).is_some() {
            let _ = self
                .sqs
                .broker
                .remove_routing(&format!("aws/sns/topic/{name}"));
            let gone: Vec<String> = self
                .subs
                .read()
                .values()
                .filter(|s| s.topic_arn == arn)
                .map(|s| s.arn.clone())
                .collect();
            for s in gone {
                self.subs.write().remove(&s);
                let id = s.rsplit(':').next().unwrap_or("");
                let _ = self.sqs.broker.remove_routing(&format!("aws/sns/sub/{id}"));
            }
        }
        Ok(String::new())
    }

    fn list_subs(&self, topic: Option<&str>) -> String {
        let members: String = self
            .subs
            .read()
            .values()
            .filter(|s| topic.is_none_or(|t| s.topic_arn == t))
            .map(|s| {
                let arn = if s.confirmed { s.arn.as_str() } else { "PendingConfirmation" };
                format!(
                    "<member><TopicArn>{}</TopicArn><Protocol>{}</Protocol><SubscriptionArn>{}</SubscriptionArn><Owner>{}</Owner><Endpoint>{}</Endpoint></member>",
                    escape(&s.topic_arn), escape(&s.protocol), escape(arn), self.config.account_id, escape(&s.endpoint)
                )
            })
            .collect();
        format!("<Subscriptions>{members}</Subscriptions>")
    }

    async fn subscribe(self: &Arc<Self>, p: &P) -> AwsResult<String> {
        let topic_arn = req(p, "TopicArn")?.to_string();
        self.topic_name(&topic_arn)?;
        let protocol = req(p, "Protocol")?.to_string();
        let endpoint = p.get("Endpoint").cloned().unwrap_or_default();
        let attrs = map_param(p, "Attributes", "key", "value");
        for (k, v) in &attrs {
            check_sub_attribute(k, v)?;
        }
        match protocol.as_str() {
            "sqs" => {
                self.sqs.queue_by_arn(&endpoint).map_err(|_| {
                    AwsError::invalid_parameter_sns("Invalid parameter: SQS endpoint ARN")
                })?;
            }
            "http" | "https" => {
                if !endpoint.starts_with(&format!("{protocol}://")) {
                    return Err(AwsError::invalid_parameter_sns(
                        "Invalid parameter: Endpoint must match the specified protocol",
                    ));
                }
            }
            _ => {
                return Err(AwsError::invalid_parameter_sns(format!(
                "Invalid parameter: Amazon SNS does not support this protocol string: {protocol}"
            )))
            }
        }
        // Subscribing the same endpoint again returns the existing subscription.
        if let Some(s) =
            self.subs.read().values().find(|s| {
                s.topic_arn == topic_arn && s.protocol == protocol && s.endpoint == endpoint
            })
        {
            return Ok(format!(
                "<SubscriptionArn>{}</SubscriptionArn>",
                escape(&s.arn)
            ));
        }
        if self.subs.read().len() >= SUBSCRIPTIONS_MAX {
            return Err(AwsError::invalid_parameter_sns(format!(
                "Invalid parameter: this node holds at most {SUBSCRIPTIONS_MAX} subscriptions"
            )));
        }
        let s = SubDef {
            arn: format!("{topic_arn}:{}", crate::fast_uuid()),
            topic_arn,
            protocol: protocol.clone(),
            endpoint,
            attributes: attrs,
            confirmed: protocol == "sqs",
            token: hex_token(),
        };
        self.persist_sub(&s)?;
        self.subs.write().insert(s.arn.clone(), s.clone());
        if !s.confirmed {
            delivery::send_confirmation(self.clone(), s.clone());
        }
        let shown =
            if s.confirmed || p.get("ReturnSubscriptionArn").map(String::as_str) == Some("true") {
                s.arn.clone()
            } else {
                "pending confirmation".to_string()
            };
        Ok(format!(
            "<SubscriptionArn>{}</SubscriptionArn>",
            escape(&shown)
        ))
    }

    fn set_subscription_attribute(&self, p: &P) -> AwsResult<String> {
        let arn = req(p, "SubscriptionArn")?;
        let k = req(p, "AttributeName")?.to_string();
        let v = p.get("AttributeValue").cloned().unwrap_or_default();
        check_sub_attribute(&k, &v)?;
        let s = {
            let mut subs = self.subs.write();
            let s = subs.get_mut(arn).ok_or_else(|| not_found("Subscription"))?;
            if v.is_empty()
                && matches!(
                    k.as_str(),
                    "FilterPolicy" | "RedrivePolicy" | "DeliveryPolicy"
                )
            {
                s.attributes.remove(&k);
            } else {
                s.attributes.insert(k, v);
            }
            s.clone()
        };
        self.persist_sub(&s)?;
        Ok(String::new())
    }

    fn get_topic_attributes(&self, p: &P) -> AwsResult<String> {
        let arn = req(p, "TopicArn")?;
        let name = self.topic_name(arn)?;
        let t = self
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("Topic"))?;
        let (confirmed, pending) = self
            .subs
            .read()
            .values()
            .filter(|s| s.topic_arn == arn)
            .fold(
                (0, 0),
                |(c, p), s| if s.confirmed { (c + 1, p) } else { (c, p + 1) },
            );
        let mut a = t.attributes.clone();
        a.insert("TopicArn".into(), arn.to_string());
        a.insert("Owner".into(), self.config.account_id.clone());
        a.insert("SubscriptionsConfirmed".into(), confirmed.to_string());
        a.insert("SubscriptionsPending".into(), pending.to_string());
        a.insert("SubscriptionsDeleted".into(), "0".into());
        a.entry("DisplayName".into()).or_default();
        Ok(attributes_xml(&a))
    }

    fn tags(&self, action: &str, p: &P) -> AwsResult<String> {
        let arn = req(p, "ResourceArn")?;
        let name = self
            .topic_name(arn)
            .map_err(|_| AwsError::resource_not_found("Resource does not exist"))?
            .to_string();
        let mut topics = self.topics.write();
        let t = topics.get_mut(&name).ok_or_else(|| not_found("Topic"))?;
        match action {
            "TagResource" => {
                let mut tags = t.tags.clone();
                tags.extend(map_param(p, "Tags", "Key", "Value"));
                if tags.len() > 50 {
                    return Err(AwsError::invalid_parameter_sns(
                        "Invalid parameter: Tags: a topic has at most 50 tags",
                    ));
                }
                t.tags = tags;
            }
            "UntagResource" => {
                let keys = tree(p);
                for k in keys
                    .get("TagKeys")
                    .and_then(|n| n.get("member"))
                    .map(indexed)
                    .unwrap_or_default()
                {
                    if let Some(k) = k.as_str() {
                        t.tags.remove(k);
                    }
                }
            }
            _ => {
                let members: String = t
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "<member><Key>{}</Key><Value>{}</Value></member>",
                            escape(k),
                            escape(v)
                        )
                    })
                    .collect();
                return Ok(format!("<Tags>{members}</Tags>"));
            }
        }
        let t = t.clone();
        drop(topics);
        self.persist_topic(&t)?;
        Ok(String::new())
    }

    async fn publish(self: &Arc<Self>, p: &P) -> AwsResult<String> {
        let t = tree(p);
        let arn = p
            .get("TopicArn")
            .or_else(|| p.get("TargetArn"))
            .ok_or_else(|| AwsError::invalid_parameter_sns("Invalid parameter: TopicArn"))?
            .clone();
        let entry = PublishEntry {
            message: req(p, "Message")?.to_string(),
            subject: p.get("Subject").cloned(),
            structure: p.get("MessageStructure").cloned(),
            attrs: message_attributes(t.get("MessageAttributes"))?,
            group: p.get("MessageGroupId").cloned(),
            dedup: p.get("MessageDeduplicationId").cloned(),
        };
        let (id, seq) = self.publish_one(&arn, entry).await?;
        let seq = seq
            .map(|s| format!("<SequenceNumber>{s}</SequenceNumber>"))
            .unwrap_or_default();
        Ok(format!("<MessageId>{id}</MessageId>{seq}"))
    }

    async fn publish_batch(self: &Arc<Self>, p: &P) -> AwsResult<String> {
        let arn = req(p, "TopicArn")?.to_string();
        self.topic_name(&arn)?;
        let t = tree(p);
        let entries = t
            .get("PublishBatchRequestEntries")
            .and_then(|n| n.get("member"))
            .map(indexed)
            .unwrap_or_default();
        if entries.is_empty() {
            return Err(AwsError::invalid_parameter_sns(
                "The batch request doesn't contain any entries",
            ));
        }
        if entries.len() > 10 {
            return Err(AwsError::invalid_parameter_sns(
                "The batch request contains more entries than permissible",
            ));
        }
        let mut ok = String::new();
        let mut failed = String::new();
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            let id = s("Id").unwrap_or_default();
            if !seen.insert(id.clone()) {
                return Err(AwsError::invalid_parameter_sns(
                    "Two or more batch entries in the request have the same Id",
                ));
            }
            let r = async {
                let entry = PublishEntry {
                    message: s("Message").ok_or_else(|| {
                        AwsError::invalid_parameter_sns("Invalid parameter: Message")
                    })?,
                    subject: s("Subject"),
                    structure: s("MessageStructure"),
                    attrs: message_attributes(e.get("MessageAttributes"))?,
                    group: s("MessageGroupId"),
                    dedup: s("MessageDeduplicationId"),
                };
                self.publish_one(&arn, entry).await
            }
            .await;
            match r {
                Ok((mid, seq)) => {
                    let seq = seq.map(|s| format!("<SequenceNumber>{s}</SequenceNumber>")).unwrap_or_default();
                    ok.push_str(&format!("<member><Id>{}</Id><MessageId>{mid}</MessageId>{seq}</member>", escape(&id)));
                }
                Err(err) => failed.push_str(&format!(
                    "<member><Id>{}</Id><Code>{}</Code><Message>{}</Message><SenderFault>{}</SenderFault></member>",
                    escape(&id), err.code, escape(&err.message), err.sender_fault
                )),
            }
        }
        Ok(format!(
            "<Successful>{ok}</Successful><Failed>{failed}</Failed>"
        ))
    }

    /// Publishes one message to every matching subscription; returns (message id, sequence).
    async fn publish_one(
        self: &Arc<Self>,
        arn: &str,
        e: PublishEntry,
    ) -> AwsResult<(String, Option<String>)> {
        let name = self.topic_name(arn)?.to_string();
        let topic = self
            .topics
            .read()
            .get(&name)
            .cloned()
            .ok_or_else(|| not_found("Topic"))?;
        let fifo = name.ends_with(".fifo");
        if e.message.is_empty() || e.message.len() > 256 * 1024 {
            return Err(AwsError::invalid_parameter_sns(
                "Invalid parameter: Message too long or empty",
            ));
        }
        let mut dedup = e.dedup.clone();
        if fifo {
            if e.group.is_none() {
                return Err(AwsError::invalid_parameter_sns(
                    "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
                ));
            }
            if dedup.is_none() {
                if topic
                    .attributes
                    .get("ContentBasedDeduplication")
                    .map(String::as_str)
                    != Some("true")
                {
                    return Err(AwsError::invalid_parameter_sns("Invalid parameter: The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly"));
                }
                dedup = Some(message::hex(&Sha256::digest(e.message.as_bytes())));
            }
        }
        self.count_published(&name);
        let message_id = crate::fast_uuid().to_string();
        let subs: Vec<SubDef> = self
            .subs
            .read()
            .values()
            .filter(|s| s.topic_arn == arn && s.confirmed)
            .cloned()
            .collect();
        let mut seq = None;
        for s in subs {
            let body_for = |proto: &str| structured(&e, proto);
            let message = body_for(&s.protocol);
            if !filter_matches(&s, &e.attrs, &message) {
                continue;
            }
            let raw = s.attributes.get("RawMessageDelivery").map(String::as_str) == Some("true");
            let envelope = notification(
                arn,
                &message_id,
                &e,
                &message,
                &self.unsubscribe_url(&s.arn),
            );
            let failure = redrive::Failure {
                body: if raw {
                    message.clone()
                } else {
                    envelope.to_string()
                },
                attrs: if raw { e.attrs.clone() } else { Vec::new() },
                group: e.group.clone(),
                dedup: dedup.clone(),
            };
            if s.protocol == "sqs" {
                if let Some(sequence) = self.deliver_sqs(&s, failure).await {
                    seq = Some(sequence);
                }
            } else {
                let body = failure.body.clone();
                delivery::deliver_http(
                    self.clone(),
                    s.clone(),
                    body,
                    "Notification",
                    message_id.clone(),
                    Some(failure),
                );
            }
        }
        if fifo && seq.is_none() {
            seq = Some(format!("{:020}", conflux_broker::now_ms()));
        }
        Ok((message_id, seq))
    }

    /// Delivers into an SQS subscription's queue; a client error (queue gone, message
    /// refused) sends the message to the subscription's dead-letter queue instead. Returns
    /// the FIFO sequence number.
    async fn deliver_sqs(&self, s: &SubDef, f: redrive::Failure) -> Option<String> {
        let Ok(q) = self.sqs.queue_by_arn(&s.endpoint) else {
            self.dead_letter(
                s,
                f,
                "404",
                "AWS.SimpleQueueService.NonExistentQueue: the subscribed queue does not exist",
            )
            .await;
            return None;
        };
        let mut out = Outgoing {
            body: f.body.clone(),
            attrs: f.attrs.clone(),
            delay_s: None,
            group: if q.fifo { f.group.clone() } else { None },
            dedup: if q.fifo { f.dedup.clone() } else { None },
            trace: None,
            extra: Vec::new(),
            message_id: None,
        };
        if let Err(err) = q.check(&mut out) {
            let message = format!("{}: {}", err.code, err.message);
            self.dead_letter(s, f, &err.status.to_string(), &message)
                .await;
            return None;
        }
        let mut seq = None;
        for r in q.send(vec![out]).await {
            match r {
                Ok(sent) => seq = sent.sequence,
                Err(err) => {
                    tracing::warn!(sub = %s.arn, error = %err.message, "SNS delivery to SQS failed")
                }
            }
        }
        seq
    }

    fn unsubscribe_url(&self, sub_arn: &str) -> String {
        format!(
            "http://{}/?Action=Unsubscribe&SubscriptionArn={sub_arn}",
            self.host.lock()
        )
    }
}

struct PublishEntry {
    message: String,
    subject: Option<String>,
    structure: Option<String>,
    attrs: Vec<(String, AttrValue)>,
    group: Option<String>,
    dedup: Option<String>,
}

/// The message for a protocol: with `MessageStructure=json`, the protocol's key or `default`.
fn structured(e: &PublishEntry, protocol: &str) -> String {
    if e.structure.as_deref() != Some("json") {
        return e.message.clone();
    }
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&e.message) else {
        return e.message.clone();
    };
    m.get(protocol)
        .or_else(|| m.get("default"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn filter_matches(s: &SubDef, attrs: &[(String, AttrValue)], body: &str) -> bool {
    let Some(policy) = s.attributes.get("FilterPolicy") else {
        return true;
    };
    let Ok(policy) = serde_json::from_str::<Value>(policy) else {
        return false;
    };
    let body_scope =
        s.attributes.get("FilterPolicyScope").map(String::as_str) == Some("MessageBody");
    if body_scope {
        let Ok(doc) = serde_json::from_str::<Value>(body) else {
            return false;
        };
        return filter::matches(&policy, &|path: &[String]| {
            let mut v = &doc;
            for p in path {
                v = v.get(p)?;
            }
            Some(filter::FVal::from_json(v))
        });
    }
    let map: HashMap<&str, &AttrValue> = attrs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    filter::matches(&policy, &|path: &[String]| {
        if path.len() != 1 {
            return None;
        }
        let v = map.get(path[0].as_str())?;
        let s = String::from_utf8_lossy(&v.value).into_owned();
        Some(match v.data_type.as_str() {
            t if t.starts_with("Number") => vec![s
                .trim()
                .parse()
                .map(filter::FVal::Num)
                .unwrap_or(filter::FVal::Str(s))],
            "String.Array" => serde_json::from_str::<Value>(&s)
                .map(|j| filter::FVal::from_json(&j))
                .unwrap_or_else(|_| vec![filter::FVal::Str(s)]),
            t if t.starts_with("Binary") => Vec::new(),
            _ => vec![filter::FVal::Str(s)],
        })
    })
}

fn check_sub_attribute(k: &str, v: &str) -> AwsResult<()> {
    match k {
        "RawMessageDelivery" if matches!(v, "true" | "false") => Ok(()),
        "FilterPolicyScope" if matches!(v, "MessageAttributes" | "MessageBody") => Ok(()),
        "FilterPolicy" if v.is_empty() => Ok(()),
        "FilterPolicy" => filter::validate(v).map(|_| ()).map_err(|e| {
            AwsError::invalid_parameter_sns(format!("Invalid parameter: FilterPolicy: {e}"))
        }),
        "RedrivePolicy" => redrive::validate_redrive_policy(v).map_err(|e| {
            AwsError::invalid_parameter_sns(format!("Invalid parameter: RedrivePolicy: {e}"))
        }),
        "DeliveryPolicy" => delivery::validate_delivery_policy(v).map_err(|e| {
            AwsError::invalid_parameter_sns(format!("Invalid parameter: DeliveryPolicy: {e}"))
        }),
        "SubscriptionRoleArn" => Ok(()),
        _ => Err(AwsError::invalid_parameter_sns(format!(
            "Invalid parameter: AttributeName {k}"
        ))),
    }
}

fn attributes_xml(a: &BTreeMap<String, String>) -> String {
    let entries: String = a
        .iter()
        .map(|(k, v)| {
            format!(
                "<entry><key>{}</key><value>{}</value></entry>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    format!("<Attributes>{entries}</Attributes>")
}

fn hex_token() -> String {
    let a = crate::fast_uuid();
    let b = crate::fast_uuid();
    format!("{}{}", a.simple(), b.simple())
}

/// The Notification envelope SNS wraps deliveries in.
fn notification(
    topic_arn: &str,
    message_id: &str,
    e: &PublishEntry,
    message: &str,
    unsubscribe_url: &str,
) -> Value {
    let mut v = json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": iso8601(conflux_broker::now_ms()),
        "SignatureVersion": "1",
        "Signature": base64::engine::general_purpose::STANDARD.encode(b"conflux-unsigned"),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-local.pem",
        "UnsubscribeURL": unsubscribe_url,
    });
    if let Some(s) = &e.subject {
        v["Subject"] = json!(s);
    }
    if !e.attrs.is_empty() {
        let m: serde_json::Map<String, Value> = e
            .attrs
            .iter()
            .map(|(k, a)| {
                let value = if a.is_binary() {
                    base64::engine::general_purpose::STANDARD.encode(&a.value)
                } else {
                    String::from_utf8_lossy(&a.value).into_owned()
                };
                (k.clone(), json!({"Type": a.data_type, "Value": value}))
            })
            .collect();
        v["MessageAttributes"] = Value::Object(m);
    }
    v
}

/// `2012-04-26T20:45:04.751Z` from Unix milliseconds.
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_335_473_104_751), "2012-04-26T20:45:04.751Z");
    }
}
