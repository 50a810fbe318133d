//! The AWS query protocol: form parameters (`Action=…&Attribute.1.Name=…`) translated into
//! the JSON 1.0 request shapes, and JSON response shapes rendered as the XML documents the
//! query protocol returns.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Escapes text for XML element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

/// Parses a form body into parameters (later duplicates win).
pub fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A tree of dotted parameter names: `A.1.B=x` → {A: {1: {B: x}}}.
pub fn tree(params: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut root = Map::new();
    for (k, v) in params {
        let parts: Vec<&str> = k.split('.').collect();
        if parts.len() > 8 {
            continue;
        }
        let mut node = &mut root;
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                if !node.contains_key(*p) {
                    node.insert(p.to_string(), Value::String(v.clone()));
                }
            } else {
                let e = node
                    .entry(p.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !e.is_object() {
                    *e = Value::Object(Map::new());
                }
                let Value::Object(m) = e else { break };
                node = m;
            }
        }
    }
    root
}

/// Children of an indexed node (`1`, `2`, …) in index order.
pub fn indexed(v: &Value) -> Vec<&Value> {
    let Some(m) = v.as_object() else {
        return Vec::new();
    };
    if m.contains_key("Name") || m.contains_key("Key") {
        return vec![v];
    }
    let mut items: Vec<(u32, &Value)> = m
        .iter()
        .filter_map(|(k, v)| k.parse::<u32>().ok().map(|i| (i, v)))
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, v)| v).collect()
}

const MAPS: &[(&str, &str, &str, &str)] = &[
    ("Attribute", "Attributes", "Name", "Value"),
    ("Attributes", "Attributes", "key", "value"),
    ("MessageAttribute", "MessageAttributes", "Name", "Value"),
    ("MessageAttributes", "MessageAttributes", "Name", "Value"),
    (
        "MessageSystemAttribute",
        "MessageSystemAttributes",
        "Name",
        "Value",
    ),
    ("Tag", "Tags", "Key", "Value"),
    ("Tags", "Tags", "Key", "Value"),
];
const LISTS: &[(&str, &str)] = &[
    ("AttributeName", "AttributeNames"),
    ("AttributeNames", "AttributeNames"),
    ("MessageAttributeName", "MessageAttributeNames"),
    ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ("TagKey", "TagKeys"),
    ("TagKeys", "TagKeys"),
    ("AWSAccountId", "AWSAccountIds"),
    ("ActionName", "Actions"),
];

fn convert(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        if let Some((_, to, kn, vn)) = MAPS.iter().find(|(from, ..)| from == k) {
            let mut m = Map::new();
            for item in indexed(v) {
                let entry = item.get("entry").map(indexed);
                for item in entry.unwrap_or_else(|| vec![item]) {
                    let name = item.get(*kn).and_then(Value::as_str);
                    if let (Some(name), Some(val)) = (name, item.get(*vn)) {
                        let val = match val {
                            Value::Object(o) => Value::Object(convert(o)),
                            other => other.clone(),
                        };
                        m.insert(name.to_string(), val);
                    }
                }
            }
            out.insert(to.to_string(), Value::Object(m));
        } else if let Some((_, to)) = LISTS.iter().find(|(from, _)| from == k) {
            let items: Vec<Value> = match v {
                Value::String(_) => vec![v.clone()],
                _ => indexed(v)
                    .into_iter()
                    .chain(v.get("member").map(indexed).unwrap_or_default())
                    .cloned()
                    .collect(),
            };
            out.insert(to.to_string(), Value::Array(items));
        } else if k.ends_with("BatchRequestEntry") || k == "Entries" {
            let items: Vec<Value> = indexed(v)
                .into_iter()
                .filter_map(|e| e.as_object().map(|o| Value::Object(convert(o))))
                .collect();
            out.insert("Entries".into(), Value::Array(items));
        } else {
            let val = match v {
                Value::Object(o) => Value::Object(convert(o)),
                other => other.clone(),
            };
            out.insert(k.clone(), val);
        }
    }
    out
}

/// The JSON request shape of a query-protocol request (the `Action` and `Version`
/// parameters removed).
pub fn to_json_input(params: &BTreeMap<String, String>) -> Value {
    let mut t = tree(params);
    t.remove("Action");
    t.remove("Version");
    Value::Object(convert(&t))
}

/// Element name of one item of a list-valued response field.
fn item_name(action: &str, field: &str) -> String {
    match field {
        "QueueUrls" | "queueUrls" => "QueueUrl".into(),
        "Messages" => "Message".into(),
        "Failed" => "BatchResultErrorEntry".into(),
        "Successful" => format!("{action}ResultEntry"),
        "Results" => format!("{action}ResultEntry"),
        other => other.trim_end_matches('s').to_string(),
    }
}

fn map_names(field: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match field {
        "Attributes" => Some(("Attribute", "Name", "Value")),
        "MessageAttributes" => Some(("MessageAttribute", "Name", "Value")),
        "Tags" => Some(("Tag", "Key", "Value")),
        _ => None,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

fn write_field(action: &str, key: &str, v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            let name = item_name(action, key);
            for item in items {
                write_field(action, &name, item, out);
            }
        }
        Value::Object(m) => {
            if let Some((elem, kn, vn)) = map_names(key) {
                for (k, val) in m {
                    out.push_str(&format!("<{elem}><{kn}>{}</{kn}>", escape(k)));
                    write_field(action, vn, val, out);
                    out.push_str(&format!("</{elem}>"));
                }
            } else {
                out.push_str(&format!("<{key}>"));
                for (k, val) in m {
                    write_field(action, k, val, out);
                }
                out.push_str(&format!("</{key}>"));
            }
        }
        other => out.push_str(&format!("<{key}>{}</{key}>", scalar(other))),
    }
}

/// The query-protocol response document for `action` with JSON result `result`.
pub fn to_xml(action: &str, result: &Value, request_id: &str, namespace: &str) -> String {
    let mut body = String::new();
    if let Value::Object(m) = result {
        for (k, v) in m {
            write_field(action, k, v, &mut body);
        }
    }
    let result = if body.is_empty() {
        String::new()
    } else {
        format!("<{action}Result>{body}</{action}Result>")
    };
    format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{namespace}\">{result}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_to_json_shapes() {
        let p = parse_form(
            b"Action=SendMessageBatch&QueueUrl=u&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=y",
        );
        let j = to_json_input(&p);
        assert_eq!(
            j,
            json!({"QueueUrl": "u", "Entries": [
                {"Id": "a", "MessageBody": "x",
                 "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
                {"Id": "b", "MessageBody": "y"}]})
        );
        let p = parse_form(b"Action=CreateQueue&QueueName=q&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=5&AttributeName.1=All");
        assert_eq!(
            to_json_input(&p),
            json!({"QueueName": "q", "Attributes": {"VisibilityTimeout": "5"}, "AttributeNames": ["All"]})
        );
    }

    #[test]
    fn json_to_xml() {
        let x = to_xml(
            "ReceiveMessage",
            &json!({"Messages": [{"Body": "a<b", "Attributes": {"SentTimestamp": "1"}}]}),
            "r",
            "ns",
        );
        assert!(
            !x.contains("<Attributes>"),
            "maps render as Attribute entries"
        );
        assert!(x.contains("<Message><Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute><Body>a&lt;b</Body></Message>"), "{x}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_forms_never_panic(
            pairs in proptest::collection::vec(("[A-Za-z0-9.]{0,40}", ".{0,20}"), 0..40)
        ) {
            let body: String = pairs
                .iter()
                .map(|(k, v)| format!("{}={}&", k, v.replace(['&', '='], "")))
                .collect();
            let input = to_json_input(&parse_form(body.as_bytes()));
            let _ = to_xml("Any", &input, "r", "ns");
            let _ = crate::message::parse_attributes(input.get("MessageAttributes"));
        }
    }
}
