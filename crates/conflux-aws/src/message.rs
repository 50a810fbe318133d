//! SQS message attributes and their checksums, computed exactly as AWS does, and their
//! mapping onto record headers.
//!
//! MD5OfMessageAttributes: for each attribute sorted by name, the name, the data type (each
//! as a 4-byte big-endian length and UTF-8 bytes), a transport byte (1 string, 2 binary) and
//! the value (length-prefixed); the MD5 of all of that, in lower-case hex.

use base64::Engine;
use bytes::Bytes;
use conflux_wire::records::RecordHeader;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

use crate::error::{AwsError, AwsResult};

/// Record headers this front end writes besides the attributes themselves.
pub mod hdr {
    pub const MESSAGE_ID: &str = "x-sqs-message-id";
    pub const GROUP_ID: &str = "x-sqs-group-id";
    pub const DEDUP_ID: &str = "x-sqs-dedup-id";
    /// JSON object: attribute name → data type.
    pub const TYPES: &str = "x-sqs-attribute-types";
    pub const TRACE: &str = "x-sqs-trace-header";
    pub const SENDER: &str = "x-sqs-sender-id";
    /// The queue ARN a dead-lettered message came from.
    pub const DLQ_SOURCE: &str = "x-sqs-dead-letter-source";
    pub const PREFIX: &str = "x-sqs-";
}

pub const ATTRIBUTES_MAX: usize = 10;

/// One message attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrValue {
    pub data_type: String,
    pub value: Bytes,
}

impl AttrValue {
    pub fn is_binary(&self) -> bool {
        self.data_type.starts_with("Binary")
    }

    pub fn to_json(&self) -> Value {
        if self.is_binary() {
            json!({"DataType": self.data_type,
                   "BinaryValue": base64::engine::general_purpose::STANDARD.encode(&self.value)})
        } else {
            json!({"DataType": self.data_type,
                   "StringValue": String::from_utf8_lossy(&self.value)})
        }
    }
}

pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

/// Lower-case hex (on the hot path of every send and receive: no formatting machinery).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// MD5OfMessageAttributes of `attrs` (sorted by name here).
pub fn md5_of_attributes(attrs: &[(String, AttrValue)]) -> String {
    let mut sorted: Vec<&(String, AttrValue)> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::new();
    for (name, v) in sorted {
        put_lp(&mut buf, name.as_bytes());
        put_lp(&mut buf, v.data_type.as_bytes());
        buf.push(if v.is_binary() { 2 } else { 1 });
        put_lp(&mut buf, &v.value);
    }
    md5_hex(&buf)
}

fn put_lp(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
    buf.extend_from_slice(b);
}

/// Whether `s` holds only the characters SQS allows in a message:
/// #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF.
pub fn valid_chars(s: &str) -> bool {
    // Printable ASCII is the common case: check it bytewise first.
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) || s.chars().all(valid_char)
}

/// Whether SQS allows character `c` in a message (see [`valid_chars`]).
pub fn valid_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Parses the JSON-protocol `MessageAttributes` map.
pub fn parse_attributes(v: Option<&Value>) -> AwsResult<Vec<(String, AttrValue)>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Some(map) = v.as_object() else {
        return Err(AwsError::invalid_parameter(
            "MessageAttributes must be a map.",
        ));
    };
    if map.len() > ATTRIBUTES_MAX {
        return Err(AwsError::invalid_parameter(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{ATTRIBUTES_MAX}].",
            map.len()
        )));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, av) in map {
        let value = parse_attribute(
            name,
            av.get("DataType").and_then(Value::as_str),
            av.get("StringValue").and_then(Value::as_str),
            av.get("BinaryValue").and_then(Value::as_str),
        )?;
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// Checks one message attribute (name, `DataType`, `StringValue` / `BinaryValue`).
pub fn parse_attribute(
    name: &str,
    data_type: Option<&str>,
    string_value: Option<&str>,
    binary_value: Option<&str>,
) -> AwsResult<AttrValue> {
    validate_attribute_name(name)?;
    let data_type = data_type.ok_or_else(|| {
        AwsError::invalid_parameter(format!(
            "The message attribute '{name}' must contain non-empty message attribute type."
        ))
    })?;
    let base = data_type.split('.').next().unwrap_or("");
    if !matches!(base, "String" | "Number" | "Binary") || data_type.len() > 256 {
        return Err(AwsError::invalid_parameter(format!(
            "The type of message attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
        )));
    }
    let value = if base == "Binary" {
        let b = binary_value.ok_or_else(|| {
            AwsError::invalid_parameter(format!(
                "The message attribute '{name}' with type 'Binary' must use field 'Binary'."
            ))
        })?;
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| {
                    AwsError::invalid_parameter(format!(
                        "The message attribute '{name}' has an invalid binary value."
                    ))
                })?,
        )
    } else {
        let s = string_value.ok_or_else(|| {
            AwsError::invalid_parameter(format!(
                "The message attribute '{name}' with type '{base}' must use field 'String'."
            ))
        })?;
        if s.is_empty() || !valid_chars(s) {
            return Err(AwsError::invalid_parameter(format!(
                "The message attribute '{name}' must contain non-empty, valid message attribute value."
            )));
        }
        if base == "Number" && s.trim().parse::<f64>().is_err() {
            return Err(AwsError::invalid_parameter(format!(
                "Can't cast the value of message (user) attribute '{name}' to a number."
            )));
        }
        Bytes::from(s.to_string())
    };
    Ok(AttrValue {
        data_type: data_type.to_string(),
        value,
    })
}

fn validate_attribute_name(name: &str) -> AwsResult<()> {
    let lower = name.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && !lower.starts_with(hdr::PREFIX);
    if ok {
        Ok(())
    } else {
        Err(AwsError::invalid_parameter(format!(
            "Message (user) attribute '{name}' is not a valid attribute name."
        )))
    }
}

/// Bytes an attribute set counts against the message size limit.
pub fn attributes_size(attrs: &[(String, AttrValue)]) -> usize {
    attrs
        .iter()
        .map(|(n, v)| n.len() + v.data_type.len() + v.value.len())
        .sum()
}

/// Record headers for the attributes: one per attribute (name → raw value) and the types.
pub fn attribute_headers(attrs: &[(String, AttrValue)], out: &mut Vec<RecordHeader>) {
    if attrs.is_empty() {
        return;
    }
    let mut types = std::collections::BTreeMap::new();
    for (n, v) in attrs {
        out.push(RecordHeader {
            key: n.clone(),
            value: Some(v.value.clone()),
        });
        types.insert(n.as_str(), v.data_type.as_str());
    }
    out.push(RecordHeader {
        key: hdr::TYPES.to_string(),
        value: Some(Bytes::from(serde_json::to_vec(&types).unwrap_or_default())),
    });
}

/// The attributes of a record: headers not reserved by this front end or the engine; types
/// from the types header, else String for UTF-8 values (records from other protocols) and
/// Binary otherwise.
pub fn attributes_of(headers: &[RecordHeader]) -> Vec<(String, AttrValue)> {
    let types: Map<String, Value> = headers
        .iter()
        .find(|h| h.key == hdr::TYPES)
        .and_then(|h| h.value.as_ref())
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for h in headers {
        if h.key.starts_with(hdr::PREFIX) || h.key == conflux_broker::subscription::headers::DELAY {
            continue;
        }
        let Some(value) = &h.value else { continue };
        let data_type = match types.get(&h.key).and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None if std::str::from_utf8(value).is_ok() && !value.is_empty() => "String".into(),
            None => "Binary".into(),
        };
        if out.iter().any(|(n, _): &(String, AttrValue)| n == &h.key) || out.len() >= ATTRIBUTES_MAX
        {
            continue;
        }
        out.push((
            h.key.clone(),
            AttrValue {
                data_type,
                value: value.clone(),
            },
        ));
    }
    out
}

/// Whether attribute `name` is selected by `MessageAttributeNames` (`All`, `.*`, `prefix.*`).
pub fn selected(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == "All"
            || n == ".*"
            || n == name
            || n.strip_suffix(".*")
                .is_some_and(|p| name.starts_with(p) && name[p.len()..].starts_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_attributes_matches_aws() {
        // Reference value computed with the algorithm AWS documents (and botocore checks).
        let attrs = vec![(
            "a".to_string(),
            AttrValue {
                data_type: "String".into(),
                value: Bytes::from_static(b"b"),
            },
        )];
        let mut buf = Vec::new();
        buf.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 6]);
        buf.extend_from_slice(b"String");
        buf.extend_from_slice(&[1, 0, 0, 0, 1, b'b']);
        assert_eq!(md5_of_attributes(&attrs), md5_hex(&buf));
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn attribute_selection_and_chars() {
        let n = vec!["foo.*".to_string()];
        assert!(selected(&n, "foo.bar") && !selected(&n, "foobar"));
        assert!(valid_chars("héllo\n") && !valid_chars("\u{1}"));
    }
}
