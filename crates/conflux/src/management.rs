//! The RabbitMQ management HTTP API listener (`amqp.management_listen`, RabbitMQ's 15672):
//! HTTP basic authentication with the AMQP users (`guest` from loopback only), routing of
//! `/api/…` paths with percent-decoded segments (the default vhost is `%2F`), and answers and
//! errors shaped as RabbitMQ's, so `rabbitmqadmin`, monitoring exporters and scripts work.
//! The JSON shapes themselves live in `conflux_amqp::management`.

use std::net::SocketAddr;
use std::sync::Arc;

use conflux_amqp::management as m;
use conflux_amqp::server::Destination;
use conflux_amqp::Server;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::ops::ProtocolHandles;

/// Most management API connections served at once.
const CONNECTIONS_MAX: usize = 256;
/// Largest request body (a declaration's JSON).
const BODY_SIZE_BYTES_MAX: usize = 1024 * 1024;
/// Longest page a client may ask for (`page_size`), as RabbitMQ.
const PAGE_SIZE_MAX: usize = 500;

/// The key of a 201 answer whose value `respond` sends as the `Location` header.
const LOCATION_KEY: &str = "\u{0}location";

/// A RabbitMQ-shaped error: status, `error` and `reason`.
#[derive(Debug)]
pub struct MgmtError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl MgmtError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> MgmtError {
        MgmtError {
            status,
            error,
            reason: reason.into(),
        }
    }

    fn not_found() -> MgmtError {
        MgmtError::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    fn bad_request(reason: impl Into<String>) -> MgmtError {
        MgmtError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

type Answer = Result<(StatusCode, Option<Value>), MgmtError>;

fn ok(value: Value) -> Answer {
    Ok((StatusCode::OK, Some(value)))
}

fn no_content() -> Answer {
    Ok((StatusCode::NO_CONTENT, None))
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handles: Arc<ProtocolHandles>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "management API connection limit reached; refusing");
            continue;
        };
        let handles = handles.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let handles = handles.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(respond(&handles, peer, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn respond(
    handles: &ProtocolHandles,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let answer = match handles.amqp.get() {
        None => Err(MgmtError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the AMQP listener is not running",
        )),
        Some(server) => match login(server, peer, &request) {
            Err(e) => Err(e),
            Ok(user) => route(server, &user, request).await,
        },
    };
    let mut location = None;
    let (status, body) = match answer {
        Ok((StatusCode::CREATED, Some(Value::Object(o)))) if o.contains_key(LOCATION_KEY) => {
            location = o[LOCATION_KEY].as_str().map(str::to_owned);
            (StatusCode::CREATED, String::new())
        }
        Ok((status, body)) => (status, body.map(|v| v.to_string()).unwrap_or_default()),
        Err(e) => (
            e.status,
            json!({"error": e.error, "reason": e.reason}).to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LOCATION, l);
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
        );
    }
    response
}

/// The user of a request's `Authorization: Basic` header, when it may log in.
fn login<B>(server: &Server, peer: SocketAddr, request: &Request<B>) -> Result<String, MgmtError> {
    let refused = || MgmtError::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed");
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(refused)?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or_else(refused)?;
    let decoded = base64_decode(encoded.trim()).ok_or_else(refused)?;
    let text = String::from_utf8(decoded).map_err(|_| refused())?;
    let (user, pass) = text.split_once(':').ok_or_else(refused)?;
    if conflux_amqp::connection::login_allowed(server, user, pass, peer.ip()) {
        Ok(user.to_owned())
    } else {
        Err(refused())
    }
}

/// Standard base64 (with or without padding); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes of one path segment (`%2F` is the default vhost).
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The virtual host a path segment names (`%2F` is the default one).
fn vhost(server: &Arc<Server>, segment: &str) -> Result<Arc<Server>, MgmtError> {
    server
        .vhost_server(segment)
        .filter(|_| !segment.is_empty())
        .ok_or_else(MgmtError::not_found)
}

async fn route(server: &Arc<Server>, user: &str, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(rest) = path.strip_prefix("/api/") else {
        return Err(MgmtError::not_found());
    };
    let segments: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()
        .ok_or_else(|| MgmtError::bad_request("bad percent-encoding in the path"))?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    use Method as M;
    match (&method, s.as_slice()) {
        (&M::GET, ["overview"]) => ok(m::overview(server)),
        (&M::GET, ["whoami"]) => ok(m::whoami(user)),
        (&M::GET, ["nodes"]) => ok(m::nodes()),
        (&M::GET, ["vhosts"]) => list(m::vhosts(server), &query),
        (&M::GET, ["vhosts", v]) => ok(m::vhost(&*vhost(server, v)?)),
        (&M::PUT, ["vhosts", v]) => {
            let (root, name) = (server.clone(), (*v).to_owned());
            let created = blocking(move || root.create_vhost(&name)).await?;
            Ok((
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::NO_CONTENT
                },
                None,
            ))
        }
        (&M::DELETE, ["vhosts", v]) => {
            let (root, name) = (server.clone(), (*v).to_owned());
            match blocking(move || root.delete_vhost(&name)).await? {
                true => no_content(),
                false => Err(MgmtError::not_found()),
            }
        }
        (&M::GET, ["aliveness-test", v]) => {
            vhost(server, v).and_then(|_| ok(json!({"status": "ok"})))
        }
        (&M::GET, ["health", "checks", "alarms" | "local-alarms" | "virtual-hosts"]) => {
            ok(json!({"status": "ok"}))
        }
        (&M::GET, ["queues"]) => list(m::across(server, m::queues), &query),
        (&M::GET, ["queues", v]) => list(m::queues(&*vhost(server, v)?), &query),
        (&M::GET, ["queues", v, name]) => {
            m::queue(&*vhost(server, v)?, name).map_or_else(|| Err(MgmtError::not_found()), ok)
        }
        (&M::PUT, ["queues", v, name]) => {
            let vh = vhost(server, v)?;
            let body = read_json(request.into_body()).await?;
            declare_queue(&vh, name, &body).await
        }
        (&M::DELETE, ["queues", v, name]) => delete_queue(&vhost(server, v)?, name, &query).await,
        (&M::POST, ["queues", v, name, "get"]) => {
            let vh = vhost(server, v)?;
            let body = read_json(request.into_body()).await?;
            get_messages(&vh, name, &body).await
        }
        (&M::DELETE, ["queues", v, name, "contents"]) => vhost(server, v)?
            .purge_queue(name)
            .map_or_else(|| Err(MgmtError::not_found()), |_| no_content()),
        (&M::GET, ["exchanges"]) => list(m::across(server, m::exchanges), &query),
        (&M::GET, ["exchanges", v]) => list(m::exchanges(&*vhost(server, v)?), &query),
        (&M::GET, ["exchanges", v, name]) => {
            let want = if *name == "amq.default" { "" } else { name };
            find(m::exchanges(&*vhost(server, v)?), |x| x["name"] == want)
        }
        (&M::PUT, ["exchanges", v, name]) => {
            let vh = vhost(server, v)?;
            let body = read_json(request.into_body()).await?;
            declare_exchange(&vh, name, &body).await
        }
        (&M::DELETE, ["exchanges", v, name]) => {
            let (vh, name) = (vhost(server, v)?, (*name).to_owned());
            let if_unused = query_param(&query, "if-unused") == Some("true");
            blocking(move || vh.delete_exchange(&name, if_unused)).await?;
            no_content()
        }
        (&M::POST, ["exchanges", v, name, "publish"]) => {
            let vh = vhost(server, v)?;
            let body = read_json(request.into_body()).await?;
            let exchange = if *name == "amq.default" { "" } else { name };
            publish(&vh, exchange, &body).await
        }
        (&M::GET, ["exchanges", v, name, "bindings", dir @ ("source" | "destination")]) => {
            let vh = vhost(server, v)?;
            let exists = vh.vhost.lock().exchanges.contains_key(*name);
            if !exists {
                return Err(MgmtError::not_found());
            }
            let rows = filter(m::bindings(&vh), |b| {
                if *dir == "source" {
                    b["source"] == *name
                } else {
                    b["destination"] == *name && b["destination_type"] == "exchange"
                }
            });
            list(rows, &query)
        }
        (&M::GET, ["bindings"]) => list(m::across(server, m::bindings), &query),
        (&M::GET, ["bindings", v]) => list(m::bindings(&*vhost(server, v)?), &query),
        (&M::GET, ["bindings", v, "e", source, kind @ ("q" | "e"), dest]) => {
            let vh = vhost(server, v)?;
            let pair = binding_pair(&vh, source, kind, dest)?;
            list(filter(m::bindings(&vh), |b| pair.matches(b)), &query)
        }
        (&M::POST, ["bindings", v, "e", source, kind @ ("q" | "e"), dest]) => {
            let vh = vhost(server, v)?;
            let pair = binding_pair(&vh, source, kind, dest)?;
            let body = read_json(request.into_body()).await?;
            let key = match body.get("routing_key") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(k)) if k.len() <= 255 => k.clone(),
                Some(_) => {
                    return Err(MgmtError::bad_request(
                        "'routing_key' must be a string of at most 255 bytes",
                    ))
                }
            };
            let arguments = m::field_table(body.get("arguments").unwrap_or(&Value::Null))
                .map_err(MgmtError::bad_request)?;
            let (source, destination) = (pair.source.clone(), pair.destination.clone());
            let bound = arguments.clone();
            let rk = key.clone();
            blocking(move || vh.bind(&source, destination, &rk, &bound, false)).await?;
            let args: std::collections::BTreeMap<String, String> = arguments
                .inner()
                .iter()
                .filter_map(|(k, v)| {
                    conflux_amqp::message::value_text(v).map(|t| (k.as_str().to_owned(), t))
                })
                .collect();
            // The path segments as the client sent them (still percent-encoded).
            let location = format!(
                "{}/{}",
                path.trim_end_matches('/'),
                percent_encode(&m::properties_key(&key, &args))
            );
            // `respond` moves this into the `Location` header (the body stays empty).
            Ok((StatusCode::CREATED, Some(json!({ LOCATION_KEY: location }))))
        }
        (&M::GET | &M::DELETE, ["bindings", v, "e", source, kind @ ("q" | "e"), dest, props]) => {
            let vh = vhost(server, v)?;
            let pair = binding_pair(&vh, source, kind, dest)?;
            let found = filter(m::bindings(&vh), |b| {
                pair.matches(b)
                    && b["properties_key"].as_str().is_some_and(|k| {
                        k == *props || percent_decode(k).is_some_and(|d| d == *props)
                    })
            });
            let Some(row) = found.as_array().and_then(|a| a.first()).cloned() else {
                return Err(MgmtError::not_found());
            };
            if method == M::GET {
                return ok(row);
            }
            let key = row["routing_key"].as_str().unwrap_or_default().to_owned();
            let arguments = m::field_table(&row["arguments"]).map_err(MgmtError::bad_request)?;
            let (source, destination) = (pair.source.clone(), pair.destination.clone());
            blocking(move || vh.bind(&source, destination, &key, &arguments, true)).await?;
            no_content()
        }
        (&M::GET, ["connections"]) => list(m::across(server, m::connections), &query),
        (&M::GET, ["consumers"]) => list(m::across(server, m::consumers), &query),
        (&M::GET, ["consumers", v]) => list(m::consumers(&*vhost(server, v)?), &query),
        (_, [first, ..])
            if [
                "overview",
                "whoami",
                "nodes",
                "vhosts",
                "queues",
                "exchanges",
                "bindings",
                "connections",
                "consumers",
            ]
            .contains(first) =>
        {
            Err(MgmtError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} {path} is not supported"),
            ))
        }
        _ => Err(MgmtError::not_found()),
    }
}

/// Runs a metadata-writing change (fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, conflux_amqp::server::AmqpError> + Send + 'static,
) -> Result<T, MgmtError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            MgmtError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?
        .map_err(amqp_error)
}

/// The rows of `rows` that `pred` keeps.
fn filter(rows: Value, pred: impl Fn(&Value) -> bool) -> Value {
    Value::Array(
        rows.as_array()
            .map(|a| a.iter().filter(|r| pred(r)).cloned().collect())
            .unwrap_or_default(),
    )
}

/// The source exchange and destination of `/api/bindings/{vhost}/e/{source}/q|e/{dest}`.
struct BindingPair {
    source: String,
    destination: Destination,
}

impl BindingPair {
    fn matches(&self, row: &Value) -> bool {
        let (name, kind) = match &self.destination {
            Destination::Queue(q) => (q, "queue"),
            Destination::Exchange(x) => (x, "exchange"),
        };
        row["source"] == self.source.as_str()
            && row["destination"] == name.as_str()
            && row["destination_type"] == kind
    }
}

/// Both ends must exist (404 otherwise, as RabbitMQ).
fn binding_pair(
    server: &Server,
    source: &str,
    kind: &str,
    dest: &str,
) -> Result<BindingPair, MgmtError> {
    // URLs name the default exchange `amq.default` (binding to it is refused with 403).
    let source = if source == "amq.default" { "" } else { source };
    let v = server.vhost.lock();
    let source_exists = source.is_empty() || v.exchanges.contains_key(source);
    let destination = if kind == "q" {
        Destination::Queue(dest.to_owned())
    } else {
        Destination::Exchange(dest.to_owned())
    };
    let dest_exists = match &destination {
        Destination::Queue(q) => v.queues.contains_key(q),
        Destination::Exchange(x) => v.exchanges.contains_key(x),
    };
    if !source_exists || !dest_exists {
        return Err(MgmtError::not_found());
    }
    Ok(BindingPair {
        source: source.to_owned(),
        destination,
    })
}

/// Percent-encodes every byte but the unreserved ones (for a path segment).
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find(rows: Value, pred: impl Fn(&Value) -> bool) -> Answer {
    rows.as_array()
        .and_then(|a| a.iter().find(|r| pred(r)).cloned())
        .map_or_else(|| Err(MgmtError::not_found()), ok)
}

/// A list, or RabbitMQ's paged form when the client asks for `page` (with `page_size`,
/// default 100), as monitoring tools with many queues do.
fn list(rows: Value, query: &str) -> Answer {
    let Some(page) = query_param(query, "page") else {
        return ok(rows);
    };
    let page: usize = page
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| MgmtError::bad_request("page must be a positive integer"))?;
    let size: usize = match query_param(query, "page_size") {
        None => 100,
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_SIZE_MAX).contains(n))
            .ok_or_else(|| {
                MgmtError::bad_request(format!("page_size must be between 1 and {PAGE_SIZE_MAX}"))
            })?,
    };
    let all = rows.as_array().cloned().unwrap_or_default();
    let total = all.len();
    let page_count = total.div_ceil(size).max(1);
    if page > page_count {
        return Err(MgmtError::bad_request(format!(
            "page {page} is beyond the last page {page_count}"
        )));
    }
    let items: Vec<Value> = all.into_iter().skip((page - 1) * size).take(size).collect();
    ok(json!({
        "items": items, "item_count": items.len(), "page": page, "page_count": page_count,
        "page_size": size, "filtered_count": total, "total_count": total,
    }))
}

async fn read_json(body: Incoming) -> Result<Value, MgmtError> {
    let bytes = Limited::new(body, BODY_SIZE_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| {
            MgmtError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {BODY_SIZE_BYTES_MAX} bytes"),
            )
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| MgmtError::bad_request(format!("invalid JSON: {e}")))
}

/// A boolean field sent as JSON `true`/`false` or as the strings `rabbitmqadmin` sends.
fn flag(body: &Value, key: &str, default: bool) -> Result<bool, MgmtError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(MgmtError::bad_request(format!(
            "'{key}' must be true or false"
        ))),
    }
}

fn amqp_error(e: conflux_amqp::server::AmqpError) -> MgmtError {
    let status = match e.code {
        404 => StatusCode::NOT_FOUND,
        403 => StatusCode::FORBIDDEN,
        405 => StatusCode::LOCKED,
        541 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    // RabbitMQ's reason is the AMQP text without its `CODE_NAME - ` prefix.
    let reason = match e.text.split_once(" - ") {
        Some((name, rest)) if name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => rest,
        _ => &e.text,
    };
    MgmtError::new(status, "bad_request", reason)
}

/// `PUT /api/queues/%2F/NAME`: declares a queue (`durable` defaults to true, as RabbitMQ's
/// API); answers 201 when created, 204 when an equivalent queue exists.
async fn declare_queue(server: &Arc<Server>, name: &str, body: &Value) -> Answer {
    if name.is_empty() || name.len() > 255 {
        return Err(MgmtError::bad_request("queue names are 1 to 255 bytes"));
    }
    let durable = flag(body, "durable", true)?;
    let auto_delete = flag(body, "auto_delete", false)?;
    let arguments = m::field_table(body.get("arguments").unwrap_or(&Value::Null))
        .map_err(MgmtError::bad_request)?;
    let existed = server.vhost.lock().queues.contains_key(name);
    let (server, owned) = (server.clone(), name.to_owned());
    // Declaring writes the metadata log (fsync): off the async workers.
    blocking(move || {
        server.declare_queue(&owned, false, durable, false, auto_delete, &arguments, 0)
    })
    .await?;
    Ok((
        if existed {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::CREATED
        },
        None,
    ))
}

/// `PUT /api/exchanges/{vhost}/NAME`: exchange.declare (`type` is mandatory, `durable`
/// defaults to true as RabbitMQ's API); 201 when created, 204 when an equivalent exchange
/// exists, 400 with the inequivalent-arg reason otherwise.
async fn declare_exchange(server: &Arc<Server>, name: &str, body: &Value) -> Answer {
    if name.is_empty() || name.len() > 255 {
        return Err(MgmtError::bad_request("exchange names are 1 to 255 bytes"));
    }
    let kind = match body.get("type") {
        Some(Value::String(t)) => t.clone(),
        None | Some(Value::Null) => return Err(MgmtError::bad_request("key_missing: type")),
        Some(_) => return Err(MgmtError::bad_request("'type' must be a string")),
    };
    let durable = flag(body, "durable", true)?;
    let auto_delete = flag(body, "auto_delete", false)?;
    let internal = flag(body, "internal", false)?;
    let arguments = m::field_table(body.get("arguments").unwrap_or(&Value::Null))
        .map_err(MgmtError::bad_request)?;
    let existed = server.vhost.lock().exchanges.contains_key(name);
    let (server, owned) = (server.clone(), name.to_owned());
    blocking(move || {
        server.declare_exchange(
            &owned,
            &kind,
            false,
            durable,
            auto_delete,
            internal,
            &arguments,
        )
    })
    .await?;
    Ok((
        if existed {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::CREATED
        },
        None,
    ))
}

/// A string field the request must carry (RabbitMQ's `key_missing`).
fn text<'a>(body: &'a Value, key: &str) -> Result<&'a str, MgmtError> {
    match body.get(key) {
        None | Some(Value::Null) => Err(MgmtError::bad_request(format!("key_missing: {key}"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MgmtError::bad_request(format!("'{key}' must be a string"))),
    }
}

/// A non-negative integer field, as JSON or as the string `rabbitmqadmin` sends.
fn number(body: &Value, key: &str) -> Result<Option<u64>, MgmtError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| {
                MgmtError::bad_request(format!("'{key}' must be a non-negative integer"))
            }),
    }
}

/// `POST /api/exchanges/{vhost}/NAME/publish` (`amq.default` is the default exchange):
/// `{"routed": bool}` once the message is stored.
async fn publish(server: &Arc<Server>, exchange: &str, body: &Value) -> Answer {
    let routing_key = text(body, "routing_key")?;
    if routing_key.len() > 255 {
        return Err(MgmtError::bad_request("routing keys are at most 255 bytes"));
    }
    let payload = text(body, "payload")?;
    let bytes = match body.get("payload_encoding").and_then(Value::as_str) {
        None | Some("string") => payload.as_bytes().to_vec(),
        Some("base64") => m::base64_payload(payload)
            .ok_or_else(|| MgmtError::bad_request("payload is not valid base64"))?,
        Some(other) => {
            return Err(MgmtError::bad_request(format!(
                "payload_encoding must be string or base64, not '{other}'"
            )))
        }
    };
    let props = m::properties_from_json(body.get("properties").unwrap_or(&Value::Null))
        .map_err(MgmtError::bad_request)?;
    if !exchange.is_empty() && !server.vhost.lock().exchanges.contains_key(exchange) {
        return Err(MgmtError::not_found());
    }
    let routed = m::publish(server, exchange, routing_key, props, Bytes::from(bytes))
        .await
        .map_err(amqp_error)?;
    ok(json!({ "routed": routed }))
}

/// `POST /api/queues/{vhost}/NAME/get`: `count`, `ackmode`, `encoding` (`auto`|`base64`),
/// `truncate`, as RabbitMQ.
async fn get_messages(server: &Arc<Server>, queue: &str, body: &Value) -> Answer {
    let count =
        number(body, "count")?.ok_or_else(|| MgmtError::bad_request("key_missing: count"))?;
    let mode = text(body, "ackmode")?;
    let mode = m::AckMode::parse(mode).ok_or_else(|| {
        MgmtError::bad_request(format!(
            "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or \
             reject_requeue_false, not '{mode}'"
        ))
    })?;
    let base64 = match text(body, "encoding")? {
        "auto" => false,
        "base64" => true,
        other => {
            return Err(MgmtError::bad_request(format!(
                "encoding must be auto or base64, not '{other}'"
            )))
        }
    };
    let truncate = number(body, "truncate")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if !server.vhost.lock().queues.contains_key(queue) {
        return Err(MgmtError::not_found());
    }
    m::get(server, queue, count, mode, base64, truncate)
        .await
        .map_or_else(|e| Err(amqp_error(e)), ok)
}

/// `DELETE /api/queues/%2F/NAME` (`if-unused`, `if-empty` as query parameters): 204.
async fn delete_queue(server: &Arc<Server>, name: &str, query: &str) -> Answer {
    if !server.vhost.lock().queues.contains_key(name) {
        return Err(MgmtError::not_found());
    }
    let if_unused = query_param(query, "if-unused") == Some("true");
    let if_empty = query_param(query, "if-empty") == Some("true");
    let (server, owned) = (server.clone(), name.to_owned());
    blocking(move || server.delete_queue(&owned, if_unused, if_empty)).await?;
    no_content()
}

/// The read-only resources also served on the admin API under `/api/v1/rabbitmq/api/…`.
pub const READ_ONLY: [&str; 7] = [
    "overview",
    "queues",
    "exchanges",
    "bindings",
    "connections",
    "consumers",
    "vhosts",
];

/// One of [`READ_ONLY`] as JSON; `None` for other names.
pub fn read_only(server: &Arc<Server>, what: &str) -> Option<Value> {
    Some(match what {
        "overview" => m::overview(server),
        "queues" => m::across(server, m::queues),
        "exchanges" => m::across(server, m::exchanges),
        "bindings" => m::across(server, m::bindings),
        "connections" => m::across(server, m::connections),
        "consumers" => m::across(server, m::consumers),
        "vhosts" => m::vhosts(server),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(base64_decode("Z3Vlc3Q6Z3Vlc3Q=").unwrap(), b"guest:guest");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn vhost_segments_decode() {
        assert_eq!(percent_decode("%2F").as_deref(), Some("/"));
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert!(percent_decode("%2").is_none());
        assert!(percent_decode("%ff").is_none());
    }

    #[test]
    fn binding_properties_keys_follow_rabbitmq() {
        let none = std::collections::BTreeMap::new();
        assert_eq!(m::properties_key("", &none), "~");
        assert_eq!(m::properties_key("a.b-c_d", &none), "a.b-c_d");
        assert_eq!(m::properties_key("a/b c~", &none), "a%2Fb%20c%7E");
        let args = std::collections::BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let other = std::collections::BTreeMap::from([("k".to_owned(), "w".to_owned())]);
        let (with, with_other) = (m::properties_key("", &args), m::properties_key("", &other));
        assert!(with.starts_with("~~") && with.len() == 18, "{with}");
        assert_ne!(with, with_other);
        assert_eq!(with, m::properties_key("", &args));
        assert_eq!(percent_encode("a%2F~"), "a%252F~");
    }

    #[test]
    fn pages_follow_rabbitmq() {
        let rows = json!([1, 2, 3, 4, 5]);
        let (_, page) = list(rows.clone(), "page=2&page_size=2").unwrap();
        let page = page.unwrap();
        assert_eq!(page["items"], json!([3, 4]));
        assert_eq!(
            (page["page_count"].as_u64(), page["total_count"].as_u64()),
            (Some(3), Some(5))
        );
        assert!(list(rows.clone(), "page=4&page_size=2").is_err());
        assert!(list(rows.clone(), "page=1&page_size=0").is_err());
        assert_eq!(list(rows.clone(), "columns=name").unwrap().1, Some(rows));
    }
}
