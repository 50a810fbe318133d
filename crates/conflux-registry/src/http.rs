//! The Confluent Schema Registry REST API over HTTP/1.1 (plain hyper 1.x, like the binary's
//! health listener: a dozen routes do not need a router crate).
//!
//! Answers are `application/vnd.schemaregistry.v1+json`; errors are
//! `{"error_code": N, "message": "..."}` with the registry's codes (40401 subject not found,
//! 409 incompatible, 42201 invalid schema, ...).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::compat::Level;
use crate::error::{RegistryError, Result};
use crate::schema::{SchemaContent, SchemaRef, SchemaType};
use crate::store::{parse_version, Registration, Registry, SubjectVersion};

/// Open connections beyond this wait in the accept queue.
const CONNECTIONS_MAX: usize = 1024;
/// Largest request body: a schema (1 MiB) plus its JSON envelope.
const BODY_SIZE_BYTES_MAX: usize = 2 * 1024 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves the API on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::result::Result<(), BoxError> {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit?,
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "registry: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, registry, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |request| {
        let registry = registry.clone();
        async move { Ok::<_, Infallible>(handle(&registry, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "registry: connection ended with an error");
    }
}

/// A parsed request: method, decoded path segments, query, and body.
struct Req {
    method: Method,
    segments: Vec<String>,
    query: HashMap<String, String>,
    body: Bytes,
}

impl Req {
    fn flag(&self, name: &str) -> bool {
        self.query
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
    fn json_body(&self) -> Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| RegistryError::new(422, 422, format!("Unrecognized JSON body: {e}")))
    }
}

async fn handle(registry: &Registry, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let segments: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query = request.uri().query().map(parse_query).unwrap_or_default();
    let body = match Limited::new(request.into_body(), BODY_SIZE_BYTES_MAX)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(&RegistryError::new(
                413,
                413,
                format!("request body exceeds {BODY_SIZE_BYTES_MAX} bytes"),
            ));
        }
    };
    let req = Req {
        method,
        segments,
        query,
        body,
    };
    match route(registry, &req).await {
        Ok(Answer::Json(v)) => respond(StatusCode::OK, v.to_string()),
        Ok(Answer::Text(t)) => respond(StatusCode::OK, t),
        Err(e) => error(&e),
    }
}

enum Answer {
    Json(Value),
    /// A raw schema string (the `/schema` endpoints answer the schema itself).
    Text(String),
}

fn ok(v: Value) -> Result<Answer> {
    Ok(Answer::Json(v))
}

async fn route(registry: &Registry, req: &Req) -> Result<Answer> {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = &req.method;
    match (m, s.as_slice()) {
        (&Method::GET, []) => ok(json!({})),
        (&Method::GET, ["schemas", "types"]) => ok(json!(["JSON", "PROTOBUF", "AVRO"])),
        (&Method::GET, ["schemas", "ids", id]) => schema_by_id(registry, req, id),
        (&Method::GET, ["schemas", "ids", id, "schema"]) => {
            let content = registry.schema_by_id(parse_id(id)?)?;
            Ok(Answer::Text(content.schema.clone()))
        }
        (&Method::GET, ["schemas", "ids", id, "subjects"]) => {
            let mut subjects: Vec<String> = registry
                .usages(parse_id(id)?, req.flag("deleted"))
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            subjects.dedup();
            ok(json!(subjects))
        }
        (&Method::GET, ["schemas", "ids", id, "versions"]) => {
            let usages = registry.usages(parse_id(id)?, req.flag("deleted"));
            ok(Value::Array(
                usages
                    .into_iter()
                    .map(|(s, v)| json!({"subject": s, "version": v}))
                    .collect(),
            ))
        }
        (&Method::GET, ["subjects"]) => {
            let prefix = req.query.get("subjectPrefix").map_or("", String::as_str);
            ok(json!(registry.subjects(req.flag("deleted"), prefix)))
        }
        (&Method::POST, ["subjects", subject]) => lookup(registry, req, subject),
        (&Method::DELETE, ["subjects", subject]) => ok(json!(
            registry
                .delete_subject(subject, req.flag("permanent"))
                .await?
        )),
        (&Method::GET, ["subjects", subject, "versions"]) => {
            let versions = registry.versions(subject, req.flag("deleted"))?;
            ok(json!(versions
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>()))
        }
        (&Method::POST, ["subjects", subject, "versions"]) => {
            register(registry, req, subject).await
        }
        (&Method::GET, ["subjects", subject, "versions", version]) => {
            let v = registry.version(subject, version, req.flag("deleted"))?;
            ok(version_json(registry, &v, req.query.get("format")))
        }
        (&Method::GET, ["subjects", subject, "versions", version, "schema"]) => {
            let v = registry.version(subject, version, req.flag("deleted"))?;
            Ok(Answer::Text(v.content.schema.clone()))
        }
        (&Method::GET, ["subjects", subject, "versions", version, "referencedby"]) => {
            let v = registry.version(subject, version, true)?;
            ok(json!(registry.referenced_by(subject, v.version)))
        }
        (&Method::DELETE, ["subjects", subject, "versions", version]) => ok(json!(
            registry
                .delete_version(subject, version, req.flag("permanent"))
                .await?
        )),
        (&Method::POST, ["compatibility", "subjects", subject, "versions", version]) => {
            compatibility(registry, req, subject, Some(version))
        }
        (&Method::POST, ["compatibility", "subjects", subject, "versions"]) => {
            compatibility(registry, req, subject, None)
        }
        (&Method::GET, ["config"]) => {
            ok(json!({"compatibilityLevel": registry.global_level().as_str()}))
        }
        (&Method::PUT, ["config"]) => set_config(registry, req, None).await,
        (&Method::GET, ["config", subject]) => match registry.subject_level(subject) {
            Some(l) => ok(json!({"compatibilityLevel": l.as_str()})),
            None if req.flag("defaultToGlobal") => {
                ok(json!({"compatibilityLevel": registry.global_level().as_str()}))
            }
            None => Err(RegistryError::subject_config_not_found(subject)),
        },
        (&Method::PUT, ["config", subject]) => set_config(registry, req, Some(subject)).await,
        (&Method::DELETE, ["config", subject]) => {
            let previous = registry
                .subject_level(subject)
                .ok_or_else(|| RegistryError::subject_config_not_found(subject))?;
            registry.set_level(Some(subject), None).await?;
            ok(json!({"compatibilityLevel": previous.as_str()}))
        }
        (&Method::DELETE, ["config"]) => {
            let previous = registry.global_level();
            registry.set_level(None, None).await?;
            ok(json!({"compatibilityLevel": previous.as_str()}))
        }
        (&Method::GET, ["mode"]) => ok(json!({"mode": registry.global_mode()})),
        (&Method::PUT, ["mode"]) => set_mode(registry, req, None).await,
        (&Method::GET, ["mode", subject]) => match registry.subject_mode(subject) {
            Some(m) => ok(json!({"mode": m})),
            None if req.flag("defaultToGlobal") => ok(json!({"mode": registry.global_mode()})),
            None => Err(RegistryError::subject_mode_not_found(subject)),
        },
        (&Method::PUT, ["mode", subject]) => set_mode(registry, req, Some(subject)).await,
        (&Method::DELETE, ["mode", subject]) => {
            let previous = registry
                .subject_mode(subject)
                .ok_or_else(|| RegistryError::subject_mode_not_found(subject))?;
            registry.set_mode(Some(subject), None, true).await?;
            ok(json!({"mode": previous}))
        }
        _ if known_path(&s) => Err(RegistryError::new(
            405,
            405,
            format!("HTTP {m} is not supported on this path"),
        )),
        _ => Err(RegistryError::new(404, 404, "HTTP 404 Not Found")),
    }
}

fn known_path(s: &[&str]) -> bool {
    matches!(
        s.first(),
        Some(&("schemas" | "subjects" | "config" | "mode" | "compatibility"))
    )
}

fn parse_id(id: &str) -> Result<i32> {
    id.parse::<i32>()
        .map_err(|_| RegistryError::schema_not_found())
}

fn content_json(content: &SchemaContent, obj: &mut serde_json::Map<String, Value>) {
    if content.schema_type != SchemaType::Avro {
        obj.insert("schemaType".into(), json!(content.schema_type.as_str()));
    }
    if !content.references.is_empty() {
        obj.insert("references".into(), json!(content.references));
    }
}

/// The schema text in the format asked for: `serialized` gives Protobuf as a base64
/// `FileDescriptorProto`, which confluent-kafka's Protobuf deserializer asks for.
fn schema_text(
    registry: &Registry,
    id: i32,
    content: &SchemaContent,
    format: Option<&String>,
) -> String {
    if content.schema_type == SchemaType::Protobuf && format.is_some_and(|f| f == "serialized") {
        if let Some(s) = registry
            .parsed(id)
            .ok()
            .and_then(|p| p.serialized_protobuf())
        {
            return s;
        }
    }
    content.schema.clone()
}

fn version_json(registry: &Registry, v: &SubjectVersion, format: Option<&String>) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("subject".into(), json!(v.subject));
    obj.insert("version".into(), json!(v.version));
    obj.insert("id".into(), json!(v.id));
    obj.insert(
        "schema".into(),
        json!(schema_text(registry, v.id, &v.content, format)),
    );
    content_json(&v.content, &mut obj);
    Value::Object(obj)
}

fn schema_by_id(registry: &Registry, req: &Req, id: &str) -> Result<Answer> {
    let id = parse_id(id)?;
    let content = registry.schema_by_id(id)?;
    // `?subject=` only scopes contexts in Confluent's registry; ids here are global.
    let mut obj = serde_json::Map::new();
    obj.insert(
        "schema".into(),
        json!(schema_text(registry, id, &content, req.query.get("format"))),
    );
    content_json(&content, &mut obj);
    ok(Value::Object(obj))
}

/// Reads `schema`, `schemaType` and `references` from a request body.
fn schema_request(req: &Req) -> Result<(SchemaType, String, Vec<SchemaRef>, Value)> {
    let body = req.json_body()?;
    let schema = body
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| RegistryError::invalid_schema("Empty schema"))?
        .to_string();
    let schema_type = match body.get("schemaType").and_then(Value::as_str) {
        None => SchemaType::Avro,
        Some(t) => SchemaType::parse(t)
            .ok_or_else(|| RegistryError::invalid_schema(format!("Unknown schema type {t}")))?,
    };
    let references: Vec<SchemaRef> = match body.get("references") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RegistryError::invalid_schema(format!("Invalid references: {e}")))?,
    };
    Ok((schema_type, schema, references, body))
}

async fn register(registry: &Registry, req: &Req, subject: &str) -> Result<Answer> {
    let (schema_type, schema, references, body) = schema_request(req)?;
    let int = |k: &str| {
        body.get(k)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let registration = Registration {
        schema_type,
        schema,
        references,
        id: int("id"),
        version: int("version"),
    };
    let v = registry.register(subject, registration).await?;
    ok(json!({"id": v.id}))
}

fn lookup(registry: &Registry, req: &Req, subject: &str) -> Result<Answer> {
    let (schema_type, schema, references, _) = schema_request(req)?;
    let (content, _) = registry.prepare(schema_type, &schema, references)?;
    let v = registry.lookup(subject, &content, req.flag("deleted"))?;
    ok(version_json(registry, &v, req.query.get("format")))
}

fn compatibility(
    registry: &Registry,
    req: &Req,
    subject: &str,
    version: Option<&str>,
) -> Result<Answer> {
    let (schema_type, schema, references, _) = schema_request(req)?;
    let (_, parsed) = registry.prepare(schema_type, &schema, references)?;
    let level = registry.effective_level(subject);
    let (against, level) = match version {
        Some(v) => {
            parse_version(v)?;
            match registry.version(subject, v, false) {
                Ok(found) => {
                    let versions = registry.versions(subject, false)?;
                    let one: Vec<_> = versions
                        .into_iter()
                        .filter(|x| x.version == found.version)
                        .collect();
                    // A single named version is checked on its own, transitive or not.
                    let single = match level {
                        Level::BackwardTransitive => Level::Backward,
                        Level::ForwardTransitive => Level::Forward,
                        Level::FullTransitive => Level::Full,
                        other => other,
                    };
                    (one, single)
                }
                Err(e) if e.code == 40401 && parse_version(v)?.is_none() => (Vec::new(), level),
                Err(e) => return Err(e),
            }
        }
        None => (registry.versions(subject, false).unwrap_or_default(), level),
    };
    let messages = registry.compatibility(subject, &parsed, &against, Some(level))?;
    let mut answer = json!({"is_compatible": messages.is_empty()});
    if req.flag("verbose") {
        answer["messages"] = json!(messages);
    }
    ok(answer)
}

async fn set_config(registry: &Registry, req: &Req, subject: Option<&str>) -> Result<Answer> {
    let body = req.json_body()?;
    let given = body
        .get("compatibility")
        .or_else(|| body.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or_else(|| RegistryError::invalid_compatibility(""))?;
    let level = Level::parse(given).ok_or_else(|| RegistryError::invalid_compatibility(given))?;
    registry.set_level(subject, Some(level)).await?;
    ok(json!({"compatibility": level.as_str()}))
}

async fn set_mode(registry: &Registry, req: &Req, subject: Option<&str>) -> Result<Answer> {
    let body = req.json_body()?;
    let given = body.get("mode").and_then(Value::as_str).unwrap_or("");
    let mode = given.to_ascii_uppercase();
    if !matches!(
        mode.as_str(),
        "READWRITE" | "READONLY" | "READONLY_OVERRIDE" | "IMPORT"
    ) {
        return Err(RegistryError::invalid_mode(given));
    }
    registry
        .set_mode(subject, Some(&mode), req.flag("force"))
        .await?;
    ok(json!({"mode": mode}))
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

fn error(e: &RegistryError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(
        status,
        json!({"error_code": e.code, "message": e.message}).to_string(),
    )
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_stray_percents() {
        assert_eq!(percent_decode("a%2Fb%3Ac"), "a/b:c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(parse_query("deleted=True&x=a+b")["x"], "a b");
    }
}
