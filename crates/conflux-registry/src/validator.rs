//! Broker-side schema validation: the [`RecordValidator`] the registry registers on the
//! broker. Per topic, `confluent.{key,value}.schema.validation=true` requires each record's
//! key/value to start with magic byte 0 and a 4-byte schema id registered under the topic's
//! subject; `conflux.{key,value}.schema.validation=payload` additionally requires the payload
//! to be a valid instance of that schema.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use conflux_broker::topic_config::TopicConfig;
use conflux_broker::RecordValidator;

use crate::store::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Off,
    Id,
    Payload,
}

/// Which half of a record is checked.
#[derive(Debug, Clone, Copy)]
enum Part {
    Key,
    Value,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// The validator. It is registered on the broker before the registry has loaded; until then
/// a topic that asks for validation refuses records rather than let them through unchecked.
#[derive(Default)]
pub struct SchemaValidator {
    registry: OnceLock<Arc<Registry>>,
}

impl SchemaValidator {
    pub fn new() -> Arc<SchemaValidator> {
        Arc::new(SchemaValidator::default())
    }

    /// Attaches the loaded registry.
    pub fn attach(&self, registry: Arc<Registry>) {
        let _ = self.registry.set(registry);
    }
}

fn mode(config: &TopicConfig, part: Part) -> Mode {
    let get = |key: String| config.get(&key).map(|(v, _)| v.trim().to_ascii_lowercase());
    let confluent = get(format!("confluent.{}.schema.validation", part.name()));
    let conflux = get(format!("conflux.{}.schema.validation", part.name()));
    let from_confluent = if confluent.as_deref() == Some("true") {
        Mode::Id
    } else {
        Mode::Off
    };
    let from_conflux = match conflux.as_deref() {
        Some("payload") => Mode::Payload,
        Some("true") | Some("id") => Mode::Id,
        _ => Mode::Off,
    };
    from_confluent.max(from_conflux)
}

/// The subject a record's schema must be registered under.
fn subject(
    config: &TopicConfig,
    topic: &str,
    part: Part,
    record_name: Option<String>,
) -> Option<String> {
    let strategy = config
        .get(&format!("confluent.{}.subject.name.strategy", part.name()))
        .map(|(v, _)| v)
        .unwrap_or_default();
    let short = strategy.rsplit('.').next().unwrap_or("");
    match short {
        "RecordNameStrategy" => record_name,
        "TopicRecordNameStrategy" => record_name.map(|r| format!("{topic}-{r}")),
        _ => Some(format!("{topic}-{}", part.name())),
    }
}

impl SchemaValidator {
    fn check(
        &self,
        topic: &str,
        config: &TopicConfig,
        part: Part,
        mode: Mode,
        data: Option<&[u8]>,
    ) -> Result<(), String> {
        let name = part.name();
        let Some(data) = data else {
            // Null keys and tombstones carry no schema.
            return Ok(());
        };
        let registry = self
            .registry
            .get()
            .ok_or("the schema registry has not finished loading; retry")?;
        if data.len() < 5 || data[0] != 0 {
            return Err(format!(
                "{name} does not start with magic byte 0 and a 4-byte schema id (Confluent wire format)"
            ));
        }
        let id = i32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let parsed = registry
            .parsed(id)
            .map_err(|_| format!("{name} names schema id {id}, which is not registered"))?;
        let subject = subject(config, topic, part, parsed.record_name()).ok_or_else(|| {
            format!("{name} schema id {id} has no record name for the subject name strategy")
        })?;
        if !registry.subject_has_id(&subject, id) {
            return Err(format!(
                "{name} schema id {id} is not registered under subject '{subject}'"
            ));
        }
        if mode == Mode::Payload {
            parsed.validate_payload(&data[5..]).map_err(|e| {
                format!("{name} does not match schema id {id} of subject '{subject}': {e}")
            })?;
        }
        Ok(())
    }
}

impl RecordValidator for SchemaValidator {
    fn validate(
        &self,
        topic: &str,
        config: &TopicConfig,
        batches: &Bytes,
    ) -> Result<(), Vec<(i32, String)>> {
        let (key_mode, value_mode) = (mode(config, Part::Key), mode(config, Part::Value));
        if key_mode == Mode::Off && value_mode == Mode::Off {
            return Ok(());
        }
        let limit = config
            .max_message_bytes()
            .saturating_mul(2)
            .max(1024 * 1024);
        let mut rest = batches.clone();
        let mut index: i32 = 0;
        let mut errors = Vec::new();
        loop {
            let batch = match conflux_wire::batch::split_batch(&mut rest) {
                Ok(Some((_, batch))) => batch,
                Ok(None) => break,
                Err(e) => return Err(vec![(index, format!("corrupt batch: {e}"))]),
            };
            let records = conflux_wire::records::decode_records(&batch, limit)
                .map_err(|e| vec![(index, format!("records do not decode: {e}"))])?;
            for r in records {
                let checks = [
                    (Part::Key, key_mode, r.key.as_deref()),
                    (Part::Value, value_mode, r.value.as_deref()),
                ];
                for (part, mode, data) in checks {
                    if mode == Mode::Off {
                        continue;
                    }
                    if let Err(e) = self.check(topic, config, part, mode, data) {
                        errors.push((index, e));
                        break;
                    }
                }
                index = index.saturating_add(1);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
