//! Compatibility levels and the rules behind them, per schema type.
//!
//! Every rule is phrased as "can a reader with schema R read data written with schema W?".
//! BACKWARD checks new-as-reader against old-as-writer, FORWARD the reverse, FULL both; the
//! transitive levels check against every earlier version instead of only the latest.
//! - Avro: Avro's own reader/writer schema resolution (via `apache-avro`).
//! - JSON Schema: the reader must accept every instance the writer accepts, with open and
//!   closed content models (`additionalProperties`) deciding what adding and removing
//!   properties means.
//! - Protobuf: messages kept, field numbers keep a wire-compatible type and cardinality,
//!   required fields neither added nor removed.

use std::collections::{BTreeSet, HashMap};

use prost_reflect::{Cardinality, FieldDescriptor, Kind};
use serde_json::Value;

use crate::schema::Parsed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }
    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Checks `new` against the earlier versions (oldest first) under `level`; returns what is
/// incompatible, empty when compatible.
pub fn check(level: Level, new: &Parsed, previous: &[&Parsed]) -> Vec<String> {
    let against: &[&Parsed] = if level.transitive() {
        previous
    } else {
        previous.last().map_or(&[], std::slice::from_ref)
    };
    let mut messages = Vec::new();
    for old in against.iter().rev() {
        if level.backward() {
            for m in can_read(new, old) {
                messages.push(format!(
                    "{m} (new schema cannot read data written with an earlier one)"
                ));
            }
        }
        if level.forward() {
            for m in can_read(old, new) {
                messages.push(format!(
                    "{m} (an earlier schema cannot read data written with the new one)"
                ));
            }
        }
    }
    messages
}

/// What prevents `reader` from reading data written with `writer`.
pub fn can_read(reader: &Parsed, writer: &Parsed) -> Vec<String> {
    match (reader, writer) {
        (Parsed::Avro { schema: r, .. }, Parsed::Avro { schema: w, .. }) => {
            match apache_avro::schema_compatibility::SchemaCompatibility::can_read(w, r) {
                Ok(()) => Vec::new(),
                Err(e) => vec![format!("Avro: {e}")],
            }
        }
        (Parsed::Json { value: r, .. }, Parsed::Json { value: w, .. }) => {
            let mut out = Vec::new();
            JsonCheck {
                reader_root: r,
                writer_root: w,
            }
            .accepts(r, w, "#", 0, &mut out);
            out
        }
        (Parsed::Protobuf { file: r, .. }, Parsed::Protobuf { file: w, .. }) => {
            protobuf_can_read(r, w)
        }
        _ => vec!["the schema type changed".to_string()],
    }
}

// ---------------------------------------------------------------------------------------
// JSON Schema

const JSON_DEPTH_MAX: usize = 64;

struct JsonCheck<'a> {
    reader_root: &'a Value,
    writer_root: &'a Value,
}

/// Follows a local `$ref` (`#/...`) to its target; other refs are left as they are.
fn deref<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..JSON_DEPTH_MAX {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        let Some(pointer) = r.strip_prefix('#') else {
            return schema;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => return schema,
        }
    }
    schema
}

/// The JSON types a schema allows, `None` when unconstrained.
fn json_types(schema: &Value) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(t) => Some([t.clone()].into()),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
        ),
        _ => None,
    }
}

fn accepts_anything(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(o) => o.keys().all(|k| {
            matches!(
                k.as_str(),
                "$schema" | "$id" | "title" | "description" | "default" | "examples" | "$comment"
            )
        }),
        _ => false,
    }
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

impl JsonCheck<'_> {
    fn accepts(
        &self,
        reader: &Value,
        writer: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if depth > JSON_DEPTH_MAX {
            return;
        }
        let reader = deref(self.reader_root, reader);
        let writer = deref(self.writer_root, writer);
        if reader == writer || accepts_anything(reader) || *writer == Value::Bool(false) {
            return;
        }
        if *reader == Value::Bool(false) {
            out.push(format!(
                "SCHEMA_NARROWED at {path}: the reader accepts nothing"
            ));
            return;
        }
        let any = Value::Bool(true);
        let writer_obj = if writer.is_object() { writer } else { &any };
        self.types(reader, writer_obj, path, out);
        self.bounds(reader, writer_obj, path, out);
        self.enums(reader, writer_obj, path, out);
        self.object(reader, writer_obj, path, depth, out);
        self.array(reader, writer_obj, path, depth, out);
        self.combined(reader, writer_obj, path, depth, out);
    }

    fn types(&self, reader: &Value, writer: &Value, path: &str, out: &mut Vec<String>) {
        let Some(rt) = json_types(reader) else { return };
        let Some(wt) = json_types(writer) else {
            out.push(format!(
                "TYPE_NARROWED at {path}: any type became {}",
                join(&rt)
            ));
            return;
        };
        let covered = |t: &String| rt.contains(t) || (t == "integer" && rt.contains("number"));
        if !wt.iter().all(covered) {
            out.push(format!(
                "TYPE_CHANGED at {path}: {} became {}",
                join(&wt),
                join(&rt)
            ));
        }
    }

    fn bounds(&self, reader: &Value, writer: &Value, path: &str, out: &mut Vec<String>) {
        for key in [
            "maximum",
            "exclusiveMaximum",
            "maxLength",
            "maxItems",
            "maxProperties",
        ] {
            if let Some(r) = num(reader, key) {
                match num(writer, key) {
                    Some(w) if w <= r => {}
                    Some(w) => out.push(format!(
                        "{}_DECREASED at {path}: {key} {w} became {r}",
                        key.to_uppercase()
                    )),
                    None => out.push(format!("{}_ADDED at {path}: {key} {r}", key.to_uppercase())),
                }
            }
        }
        for key in [
            "minimum",
            "exclusiveMinimum",
            "minLength",
            "minItems",
            "minProperties",
        ] {
            if let Some(r) = num(reader, key) {
                let floor = if key.starts_with("min") && key != "minimum" {
                    Some(0.0)
                } else {
                    None
                };
                match num(writer, key).or(floor) {
                    Some(w) if w >= r => {}
                    Some(w) => out.push(format!(
                        "{}_INCREASED at {path}: {key} {w} became {r}",
                        key.to_uppercase()
                    )),
                    None => out.push(format!("{}_ADDED at {path}: {key} {r}", key.to_uppercase())),
                }
            }
        }
        if let Some(r) = num(reader, "multipleOf") {
            let ok = num(writer, "multipleOf").is_some_and(|w| (w / r).fract() == 0.0);
            if !ok {
                out.push(format!("MULTIPLE_OF_CHANGED at {path}: multipleOf {r}"));
            }
        }
        if let Some(r) = reader.get("pattern") {
            if writer.get("pattern") != Some(r) {
                out.push(format!("PATTERN_CHANGED at {path}: pattern {r}"));
            }
        }
    }

    fn enums(&self, reader: &Value, writer: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(r) = reader.get("enum").and_then(Value::as_array) {
            match writer.get("enum").and_then(Value::as_array) {
                Some(w) => {
                    let missing: Vec<String> = w
                        .iter()
                        .filter(|v| !r.contains(v))
                        .map(Value::to_string)
                        .collect();
                    if !missing.is_empty() {
                        out.push(format!(
                            "ENUM_ARRAY_NARROWED at {path}: {} removed",
                            missing.join(", ")
                        ));
                    }
                }
                None => out.push(format!("ENUM_ARRAY_ADDED at {path}")),
            }
        }
        if let Some(r) = reader.get("const") {
            if writer.get("const") != Some(r) {
                out.push(format!("CONST_CHANGED at {path}"));
            }
        }
    }

    fn object(
        &self,
        reader: &Value,
        writer: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        let empty = serde_json::Map::new();
        let props = |s: &Value| -> serde_json::Map<String, Value> {
            s.get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(|| empty.clone())
        };
        let (rp, wp) = (props(reader), props(writer));
        let open = Value::Bool(true);
        let ra = reader.get("additionalProperties").unwrap_or(&open);
        let wa = writer.get("additionalProperties").unwrap_or(&open);
        for (name, w) in &wp {
            let at = format!("{path}/properties/{name}");
            match rp.get(name) {
                Some(r) => self.accepts(r, w, &at, depth + 1, out),
                None if *ra == Value::Bool(false) => out.push(format!(
                    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at {at}"
                )),
                None => {
                    let mut sub = Vec::new();
                    self.accepts(ra, w, &at, depth + 1, &mut sub);
                    if !sub.is_empty() {
                        out.push(format!(
                            "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL at {at}"
                        ));
                    }
                }
            }
        }
        for (name, r) in &rp {
            if wp.contains_key(name) || *wa == Value::Bool(false) {
                continue;
            }
            let at = format!("{path}/properties/{name}");
            let mut sub = Vec::new();
            self.accepts(r, wa, &at, depth + 1, &mut sub);
            if !sub.is_empty() {
                out.push(format!("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at {at}"));
            }
        }
        let required = |s: &Value| -> BTreeSet<String> {
            s.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let wr = required(writer);
        for name in required(reader).difference(&wr) {
            out.push(format!(
                "REQUIRED_PROPERTY_ADDED at {path}/properties/{name}"
            ));
        }
        if *ra != open
            && ra != wa
            && !(wp.is_empty() && rp.is_empty() && reader.get("type").is_none())
        {
            if *ra == Value::Bool(false) {
                if *wa != Value::Bool(false) {
                    out.push(format!("ADDITIONAL_PROPERTIES_REMOVED at {path}"));
                }
            } else {
                self.accepts(
                    ra,
                    wa,
                    &format!("{path}/additionalProperties"),
                    depth + 1,
                    out,
                );
            }
        }
    }

    fn array(
        &self,
        reader: &Value,
        writer: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if let Some(ri) = reader.get("items").filter(|i| !i.is_array()) {
            let any = Value::Bool(true);
            let wi = writer
                .get("items")
                .filter(|i| !i.is_array())
                .unwrap_or(&any);
            self.accepts(ri, wi, &format!("{path}/items"), depth + 1, out);
        }
    }

    fn combined(
        &self,
        reader: &Value,
        writer: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        for key in ["anyOf", "oneOf"] {
            let Some(rs) = reader.get(key).and_then(Value::as_array) else {
                continue;
            };
            let ws: Vec<&Value> = match writer
                .get("anyOf")
                .or(writer.get("oneOf"))
                .and_then(Value::as_array)
            {
                Some(ws) => ws.iter().collect(),
                None => vec![writer],
            };
            for (i, w) in ws.iter().enumerate() {
                let fits = rs.iter().any(|r| {
                    let mut sub = Vec::new();
                    self.accepts(r, w, path, depth + 1, &mut sub);
                    sub.is_empty()
                });
                if !fits {
                    out.push(format!("COMBINED_TYPE_SUBSCHEMAS_CHANGED at {path}/{key}: writer branch {i} is not accepted"));
                }
            }
        }
        if let Some(rs) = reader.get("allOf").and_then(Value::as_array) {
            for (i, r) in rs.iter().enumerate() {
                self.accepts(r, writer, &format!("{path}/allOf/{i}"), depth + 1, out);
            }
        }
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join("|")
}

// ---------------------------------------------------------------------------------------
// Protobuf

/// Scalar kinds that share a wire encoding and so read each other's data.
fn wire_group(kind: &Kind) -> String {
    match kind {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            "varint".into()
        }
        Kind::Sint32 | Kind::Sint64 => "zigzag".into(),
        Kind::Fixed32 | Kind::Sfixed32 => "fixed32".into(),
        Kind::Fixed64 | Kind::Sfixed64 => "fixed64".into(),
        Kind::String | Kind::Bytes => "length-delimited".into(),
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::Message(m) => format!("message {}", m.full_name()),
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn field_problem(r: &FieldDescriptor, w: &FieldDescriptor, msg: &str) -> Option<String> {
    let number = w.number();
    let (rk, wk) = (r.kind(), w.kind());
    let same_named = match (&rk, &wk) {
        (Kind::Message(a), Kind::Message(b)) => a.full_name() == b.full_name(),
        (Kind::Enum(a), Kind::Enum(b)) => a.full_name() == b.full_name(),
        _ => true,
    };
    if !same_named {
        return Some(format!(
            "FIELD_NAMED_TYPE_CHANGED in {msg}: field {number} changed from {} to {}",
            kind_name(&wk),
            kind_name(&rk)
        ));
    }
    if wire_group(&rk) != wire_group(&wk) {
        return Some(format!(
            "FIELD_SCALAR_KIND_CHANGED in {msg}: field {number} ('{}') changed from {} to {}",
            w.name(),
            kind_name(&wk),
            kind_name(&rk)
        ));
    }
    let repeated = |f: &FieldDescriptor| f.cardinality() == Cardinality::Repeated || f.is_map();
    if repeated(r) != repeated(w) && !matches!(wire_group(&rk).as_str(), "length-delimited") {
        return Some(format!(
            "FIELD_LABEL_CHANGED in {msg}: field {number} ('{}') changed between repeated and singular",
            w.name()
        ));
    }
    let in_oneof = |f: &FieldDescriptor| {
        f.containing_oneof().is_some() && !f.field_descriptor_proto().proto3_optional()
    };
    if in_oneof(w) && !in_oneof(r) {
        return Some(format!(
            "ONEOF_FIELD_REMOVED in {msg}: field {number} left its oneof"
        ));
    }
    None
}

fn protobuf_can_read(
    reader: &prost_reflect::FileDescriptor,
    writer: &prost_reflect::FileDescriptor,
) -> Vec<String> {
    let mut out = Vec::new();
    if reader.package_name() != writer.package_name() {
        out.push(format!(
            "PACKAGE_CHANGED: '{}' became '{}'",
            writer.package_name(),
            reader.package_name()
        ));
        return out;
    }
    let all =
        |f: &prost_reflect::FileDescriptor| -> HashMap<String, prost_reflect::MessageDescriptor> {
            let mut map = HashMap::new();
            let mut stack: Vec<_> = f.messages().collect();
            while let Some(m) = stack.pop() {
                stack.extend(m.child_messages());
                map.insert(m.full_name().to_string(), m);
            }
            map
        };
    let (rm, wm) = (all(reader), all(writer));
    let mut names: Vec<&String> = wm.keys().collect();
    names.sort();
    for name in names {
        let w = &wm[name];
        if w.is_map_entry() {
            continue;
        }
        let Some(r) = rm.get(name) else {
            out.push(format!("MESSAGE_REMOVED: {name}"));
            continue;
        };
        for wf in w.fields() {
            match r.get_field(wf.number()) {
                Some(rf) => out.extend(field_problem(&rf, &wf, name)),
                None if wf.cardinality() == Cardinality::Required => out.push(format!(
                    "REQUIRED_FIELD_REMOVED in {name}: field {} ('{}')",
                    wf.number(),
                    wf.name()
                )),
                None => {}
            }
        }
        for rf in r.fields() {
            if w.get_field(rf.number()).is_none() && rf.cardinality() == Cardinality::Required {
                out.push(format!(
                    "REQUIRED_FIELD_ADDED in {name}: field {} ('{}')",
                    rf.number(),
                    rf.name()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
