//! Schemas as the registry stores them (type, text, references) and as it uses them (parsed
//! Avro, compiled JSON Schema, Protobuf descriptors), plus payload validation against them.
//!
//! Nothing here fetches anything over the network: JSON Schema `$ref`s resolve only to the
//! document itself and to the schema's declared references.

use std::collections::HashMap;
use std::io::Cursor;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest schema text accepted.
pub const SCHEMA_SIZE_BYTES_MAX: usize = 1024 * 1024;
/// Most references one schema may declare.
pub const REFERENCES_MAX: usize = 256;
/// Deepest chain of references followed.
pub const REFERENCE_DEPTH_MAX: usize = 32;
/// Name given to the main file when compiling a Protobuf schema given as text.
const PROTO_MAIN_FILE: &str = "__conflux_main.proto";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn parse(s: &str) -> Option<SchemaType> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

/// A reference from one schema to a version of another subject, by import name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaRef {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema as stored: what identifies it (two equal contents get the same id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaContent {
    #[serde(rename = "schemaType")]
    pub schema_type: SchemaType,
    pub schema: String,
    #[serde(default)]
    pub references: Vec<SchemaRef>,
}

/// A referenced schema, resolved: its import name and content.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub content: SchemaContent,
}

/// A schema ready for compatibility checks and payload validation.
pub enum Parsed {
    Avro {
        schema: apache_avro::Schema,
        /// The referenced named types, needed to resolve `Schema::Ref`s.
        schemata: Vec<apache_avro::Schema>,
    },
    Json {
        value: Value,
        validator: jsonschema::Validator,
    },
    Protobuf {
        pool: DescriptorPool,
        file: prost_reflect::FileDescriptor,
    },
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parsed::Avro { schema, .. } => write!(f, "Avro({})", schema.canonical_form()),
            Parsed::Json { value, .. } => write!(f, "Json({value})"),
            Parsed::Protobuf { file, .. } => write!(f, "Protobuf({})", file.name()),
        }
    }
}

/// Puts a schema text into the form it is stored and compared in: compact JSON for Avro and
/// JSON Schema (so whitespace does not make a new schema), trimmed text for Protobuf.
pub fn canonical_text(schema_type: SchemaType, text: &str) -> Result<String, String> {
    if text.len() > SCHEMA_SIZE_BYTES_MAX {
        return Err(format!(
            "schema of {} bytes exceeds the limit of {SCHEMA_SIZE_BYTES_MAX}",
            text.len()
        ));
    }
    match schema_type {
        SchemaType::Avro | SchemaType::Json => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("Invalid schema: not valid JSON: {e}"))?;
            Ok(v.to_string())
        }
        SchemaType::Protobuf => Ok(text.trim().to_string()),
    }
}

/// Parses a schema with its (transitively) resolved references, dependencies first.
pub fn parse(content: &SchemaContent, refs: &[Resolved]) -> Result<Parsed, String> {
    match content.schema_type {
        SchemaType::Avro => parse_avro(&content.schema, refs),
        SchemaType::Json => parse_json(&content.schema, refs),
        SchemaType::Protobuf => parse_protobuf(&content.schema, refs),
    }
}

fn parse_avro(text: &str, refs: &[Resolved]) -> Result<Parsed, String> {
    let bad = |e: apache_avro::Error| format!("Invalid schema {text}: {e}");
    if refs.is_empty() {
        let schema = apache_avro::Schema::parse_str(text).map_err(bad)?;
        return Ok(Parsed::Avro {
            schema,
            schemata: Vec::new(),
        });
    }
    let mut inputs: Vec<&str> = refs.iter().map(|r| r.content.schema.as_str()).collect();
    inputs.push(text);
    let mut all = apache_avro::Schema::parse_list(&inputs).map_err(bad)?;
    let schema = all.pop().ok_or("empty schema list")?;
    Ok(Parsed::Avro {
        schema,
        schemata: all,
    })
}

/// The URI a referenced JSON schema is known by: its name, made absolute against the
/// default base the way a relative `$ref` in the main schema would be.
fn json_ref_uri(name: &str) -> String {
    if name.contains("://") || name.starts_with("urn:") {
        name.to_string()
    } else {
        format!("json-schema:///{}", name.trim_start_matches('/'))
    }
}

/// Refuses every retrieval: `$ref`s must be local or declared references.
struct NoNetwork;

impl jsonschema::Retrieve for NoNetwork {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("$ref '{uri}' is not a declared reference (no network fetches)").into())
    }
}

fn parse_json(text: &str, refs: &[Resolved]) -> Result<Parsed, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("Invalid schema: not JSON: {e}"))?;
    if !value.is_object() && !value.is_boolean() {
        return Err("Invalid schema: a JSON schema is an object or a boolean".into());
    }
    let mut options = jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(NoNetwork);
    for r in refs {
        let contents: Value = serde_json::from_str(&r.content.schema)
            .map_err(|e| format!("Invalid reference '{}': {e}", r.name))?;
        let resource = jsonschema::Resource::from_contents(contents)
            .map_err(|e| format!("Invalid reference '{}': {e}", r.name))?;
        options = options.with_resource(json_ref_uri(&r.name), resource);
    }
    let validator = options
        .build(&value)
        .map_err(|e| format!("Invalid schema: {e}"))?;
    Ok(Parsed::Json { value, validator })
}

/// Serves the schema's own file and its references to the Protobuf compiler.
struct ProtoFiles(HashMap<String, protox::file::File>);

impl protox::file::FileResolver for ProtoFiles {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// A Protobuf schema is `.proto` text, or a base64 `FileDescriptorProto` (what confluent-kafka's
/// Python serializer sends).
fn proto_file(name: &str, text: &str) -> Result<protox::file::File, String> {
    let looks_base64 = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64 {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
            if let Ok(mut proto) = prost_types::FileDescriptorProto::decode(bytes.as_slice()) {
                proto.name = Some(name.to_string());
                return Ok(protox::file::File::from_file_descriptor_proto(proto));
            }
        }
    }
    protox::file::File::from_source(name, text).map_err(|e| format!("Invalid schema: {e}"))
}

fn parse_protobuf(text: &str, refs: &[Resolved]) -> Result<Parsed, String> {
    let mut files = HashMap::new();
    for r in refs {
        files.insert(r.name.clone(), proto_file(&r.name, &r.content.schema)?);
    }
    files.insert(
        PROTO_MAIN_FILE.to_string(),
        proto_file(PROTO_MAIN_FILE, text)?,
    );
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(ProtoFiles(files));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_file(PROTO_MAIN_FILE)
        .map_err(|e| format!("Invalid schema: {e}"))?;
    let pool = compiler.descriptor_pool();
    let file = pool
        .get_file_by_name(PROTO_MAIN_FILE)
        .ok_or("Invalid schema: the compiled file is missing")?;
    Ok(Parsed::Protobuf { pool, file })
}

impl Parsed {
    /// The record name RecordNameStrategy uses: Avro's full name, JSON Schema's `title`, or
    /// the first Protobuf message's full name.
    pub fn record_name(&self) -> Option<String> {
        match self {
            Parsed::Avro { schema, .. } => match schema {
                apache_avro::Schema::Record(r) => Some(r.name.fullname(None)),
                apache_avro::Schema::Enum(e) => Some(e.name.fullname(None)),
                apache_avro::Schema::Fixed(f) => Some(f.name.fullname(None)),
                _ => None,
            },
            Parsed::Json { value, .. } => value
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_string),
            Parsed::Protobuf { file, .. } => file.messages().next().map(|m| m.full_name().into()),
        }
    }

    /// Base64 `FileDescriptorProto` of a Protobuf schema (`?format=serialized`).
    pub fn serialized_protobuf(&self) -> Option<String> {
        match self {
            Parsed::Protobuf { file, .. } => {
                let bytes = file.file_descriptor_proto().encode_to_vec();
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => None,
        }
    }

    /// Checks that `payload` (the bytes after magic byte and schema id) is a valid instance.
    /// The error names the failing field where the format allows.
    pub fn validate_payload(&self, payload: &[u8]) -> Result<(), String> {
        match self {
            Parsed::Avro { schema, schemata } => validate_avro(schema, schemata, payload),
            Parsed::Json { validator, .. } => {
                let instance: Value = serde_json::from_slice(payload)
                    .map_err(|e| format!("payload is not JSON: {e}"))?;
                let result = validator.validate(&instance).map_err(|e| {
                    let at = e.instance_path.to_string();
                    let at = if at.is_empty() { "/".to_string() } else { at };
                    format!("field '{at}': {e}")
                });
                result
            }
            Parsed::Protobuf { file, .. } => validate_protobuf(file, payload),
        }
    }
}

fn validate_avro(
    schema: &apache_avro::Schema,
    schemata: &[apache_avro::Schema],
    payload: &[u8],
) -> Result<(), String> {
    let mut cursor = Cursor::new(payload);
    let decoded = if schemata.is_empty() {
        apache_avro::from_avro_datum(schema, &mut cursor, None)
    } else {
        let mut all: Vec<&apache_avro::Schema> = schemata.iter().collect();
        all.push(schema);
        apache_avro::from_avro_datum_schemata(schema, all, &mut cursor, None)
    };
    decoded.map_err(|e| format!("payload does not decode as the Avro schema: {e}"))?;
    let rest = payload.len() as u64 - cursor.position();
    if rest != 0 {
        return Err(format!(
            "payload has {rest} bytes left over after the Avro datum"
        ));
    }
    Ok(())
}

/// Reads one zigzag varint (Confluent's encoding of Protobuf message indexes).
fn read_zigzag(bytes: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or("payload ends inside the message indexes")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("message index varint is too long".into())
}

/// Decodes the message-index path that precedes a Confluent Protobuf payload.
pub fn protobuf_message<'a>(
    file: &prost_reflect::FileDescriptor,
    payload: &'a [u8],
) -> Result<(MessageDescriptor, &'a [u8]), String> {
    let mut pos = 0;
    let count = read_zigzag(payload, &mut pos)?;
    if !(0..=64).contains(&count) {
        return Err(format!("invalid message index count {count}"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indexes.push(read_zigzag(payload, &mut pos)?);
    }
    if indexes.is_empty() {
        indexes.push(0);
    }
    let index = |i: i64| usize::try_from(i).map_err(|_| format!("invalid message index {i}"));
    let mut message = file
        .messages()
        .nth(index(indexes[0])?)
        .ok_or_else(|| format!("message index {} is not in the schema", indexes[0]))?;
    for &i in &indexes[1..] {
        let child = message.child_messages().nth(index(i)?);
        message = child.ok_or_else(|| format!("nested message index {i} is not in the schema"))?;
    }
    Ok((message, &payload[pos..]))
}

fn validate_protobuf(file: &prost_reflect::FileDescriptor, payload: &[u8]) -> Result<(), String> {
    let (message, body) = protobuf_message(file, payload)?;
    DynamicMessage::decode(message.clone(), body)
        .map(|_| ())
        .map_err(|e| format!("payload does not decode as {}: {e}", message.full_name()))
}
