//! The HTTP endpoint: reads each request (bounded), decides its protocol — AWS JSON 1.0
//! (`X-Amz-Target: AmazonSQS.<Action>`) or query (`Action=…` form or query string, SQS or
//! SNS by action and parameters) — dispatches it, and renders results and errors the way the
//! protocol does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::AwsError;
use crate::sns::Sns;
use crate::sqs::actions::{self, Ctx};
use crate::sqs::Sqs;
use crate::{query, AwsConfig};

/// Largest request body: a 256 KiB message batch plus its envelope (DESIGN §5).
pub const BODY_BYTES_MAX: usize = (1 << 20) + (64 << 10);
const SQS_NS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";
const SNS_NS: &str = "http://sns.amazonaws.com/doc/2010-03-31/";

pub struct State {
    pub config: AwsConfig,
    pub sqs: Arc<Sqs>,
    pub sns: Arc<Sns>,
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(state.config.connections_max));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "aws: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("aws: connection limit reached; refusing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "aws: connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Json,
    Query,
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = crate::fast_uuid().to_string();
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let protocol = if target.is_some() {
        Protocol::Json
    } else {
        Protocol::Query
    };
    let body = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut e = AwsError::invalid_parameter(format!(
                "Request body is larger than {BODY_BYTES_MAX} bytes."
            ));
            e.status = 413;
            return error_response(protocol, &e, &request_id, SQS_NS);
        }
    };
    if let Err(e) = crate::sigv4::verify(&state.config.credentials, &parts, &body) {
        return error_response(protocol, &e, &request_id, SQS_NS);
    }
    let ctx = Ctx { host: &host };
    match target {
        Some(t) => {
            let Some(action) = t.strip_prefix("AmazonSQS.") else {
                let e = AwsError::invalid_action(&t);
                return error_response(Protocol::Json, &e, &request_id, SQS_NS);
            };
            if let Some(r) = crate::sqs::messages::dispatch_json(&state.sqs, action, &body).await {
                return match r {
                    Ok(v) => respond(
                        StatusCode::OK,
                        "application/x-amz-json-1.0",
                        v,
                        &request_id,
                        None,
                    ),
                    Err(e) => error_response(Protocol::Json, &e, &request_id, SQS_NS),
                };
            }
            let input: Value = if body.is_empty() {
                Value::Object(Default::default())
            } else {
                match serde_json::from_slice(&body) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        let e = AwsError {
                            kind: "SerializationException",
                            code: "SerializationException",
                            message: "The request body is not a JSON object.".into(),
                            status: 400,
                            sender_fault: true,
                        };
                        return error_response(Protocol::Json, &e, &request_id, SQS_NS);
                    }
                }
            };
            match actions::dispatch(&state.sqs, &ctx, action, &input).await {
                Ok(v) => respond(
                    StatusCode::OK,
                    "application/x-amz-json-1.0",
                    serde_json::to_vec(&v).unwrap_or_default(),
                    &request_id,
                    None,
                ),
                Err(e) => error_response(Protocol::Json, &e, &request_id, SQS_NS),
            }
        }
        None => {
            let mut params = query::parse_form(&body);
            if let Some(q) = parts.uri.query() {
                for (k, v) in query::parse_form(q.as_bytes()) {
                    params.entry(k).or_insert(v);
                }
            }
            let Some(action) = params.get("Action").cloned() else {
                let e = AwsError::missing_parameter("Action");
                return error_response(Protocol::Query, &e, &request_id, SQS_NS);
            };
            if crate::sns::is_sns(&action, &params, &parts.headers) {
                if state.config.advertised_host.is_none() {
                    host.clone_into(&mut state.sns.host.lock());
                }
                return match state.sns.dispatch(&action, &params).await {
                    Ok(xml) => respond(
                        StatusCode::OK,
                        "text/xml",
                        wrap_sns(&action, &xml, &request_id),
                        &request_id,
                        None,
                    ),
                    Err(e) => error_response(Protocol::Query, &e, &request_id, SNS_NS),
                };
            }
            // Older SDKs post to the queue URL itself.
            let path = parts.uri.path();
            if !params.contains_key("QueueUrl") && path.matches('/').count() == 2 && path.len() > 2
            {
                params.insert("QueueUrl".into(), path.to_string());
            }
            let input = query::to_json_input(&params);
            match actions::dispatch(&state.sqs, &ctx, &action, &input).await {
                Ok(v) => respond(
                    StatusCode::OK,
                    "text/xml",
                    query::to_xml(&action, &v, &request_id, SQS_NS),
                    &request_id,
                    None,
                ),
                Err(e) => error_response(Protocol::Query, &e, &request_id, SQS_NS),
            }
        }
    }
}

fn wrap_sns(action: &str, inner: &str, request_id: &str) -> String {
    let result = if inner.is_empty() {
        String::new()
    } else {
        format!("<{action}Result>{inner}</{action}Result>")
    };
    format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{SNS_NS}\">{result}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
}

fn error_response(
    protocol: Protocol,
    e: &AwsError,
    request_id: &str,
    namespace: &str,
) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    match protocol {
        Protocol::Json => respond(
            status,
            "application/x-amz-json-1.0",
            e.json_body("com.amazonaws.sqs"),
            request_id,
            Some(e.query_error_header()),
        ),
        Protocol::Query => {
            let body = e.xml_body(request_id);
            let body = if namespace == SNS_NS {
                body.replace(SQS_NS, SNS_NS)
            } else {
                body
            };
            respond(status, "text/xml", body, request_id, None)
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
    request_id: &str,
    query_error: Option<String>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(q) = query_error.and_then(|q| hyper::header::HeaderValue::from_str(&q).ok()) {
        h.insert("x-amzn-query-error", q);
    }
    r
}
