//! Maps method + path onto a handler, reads bounded JSON bodies, and writes JSON responses.
//!
//! Every admin route lives under `/api/v1`; path segments are percent-decoded (group ids may
//! hold any character). Errors become `{"error_code", "message"}` with their HTTP status.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{admin, groups, metrics, records, ApiError, HttpContext, ADMIN_BODY_SIZE_BYTES_MAX};

/// A handler's answer: status and JSON body, or an error.
pub type Reply = Result<(StatusCode, Value), ApiError>;

pub async fn route(ctx: &Arc<HttpContext>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let method = parts.method;
    let reply = match path.as_str() {
        "/health/live" | "/health/ready" | "/metrics" => {
            return plain_route(ctx, &method, &path).await
        }
        _ => api_route(ctx, &method, &path, &query, body).await,
    };
    match reply {
        Ok((status, value)) if status == StatusCode::NO_CONTENT => {
            let _ = value;
            respond(status, "application/json", Bytes::new())
        }
        Ok((status, value)) => respond(status, "application/json", value.to_string().into()),
        Err(e) => {
            tracing::debug!(%method, path, status = %e.status, error = %e.message, "admin request refused");
            respond(e.status, "application/json", e.body().into())
        }
    }
}

async fn plain_route(ctx: &Arc<HttpContext>, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
        return respond(e.status, "application/json", e.body().into());
    }
    let json = "application/json";
    match path {
        "/health/live" => respond(StatusCode::OK, json, r#"{"status":"ok"}"#.into()),
        "/health/ready" if ctx.readiness.is_ready() => {
            respond(StatusCode::OK, json, r#"{"status":"ok"}"#.into())
        }
        "/health/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            r#"{"status":"unavailable"}"#.into(),
        ),
        _ => {
            let ctx = ctx.clone();
            // Scraping walks every partition and group; keep it off the async workers' path.
            let text = tokio::task::spawn_blocking(move || metrics::render(&ctx))
                .await
                .unwrap_or_default();
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text.into(),
            )
        }
    }
}

async fn api_route(
    ctx: &Arc<HttpContext>,
    method: &Method,
    path: &str,
    query: &str,
    body: Incoming,
) -> Reply {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Err(not_found(path));
    };
    let segments: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    use Method as M;
    match (method, s.as_slice()) {
        (&M::GET, ["cluster"]) => admin::cluster(ctx),
        (&M::GET, ["alarms"]) => admin::alarms(ctx),
        (&M::PUT, ["alarms"]) => admin::set_alarms(ctx, read_json(body).await?).await,
        (&M::GET, ["topics"]) => admin::list_topics(ctx, query),
        (&M::POST, ["topics"]) => admin::create_topic(ctx, read_json(body).await?).await,
        (&M::GET, ["topics", t]) => admin::describe_topic(ctx, t),
        (&M::DELETE, ["topics", t]) => admin::delete_topic(ctx, t).await,
        (&M::GET, ["topics", t, "configs"]) => admin::topic_configs(ctx, t),
        (&M::PATCH, ["topics", t, "configs"]) => {
            admin::alter_configs(ctx, t, read_json(body).await?).await
        }
        (&M::GET, ["topics", t, "partitions"]) => admin::partitions(ctx, t),
        (&M::POST, ["topics", t, "partitions"]) => {
            admin::add_partitions(ctx, t, read_json(body).await?).await
        }
        (&M::GET, ["topics", t, "partitions", p]) => admin::partition(ctx, t, p),
        (&M::POST, ["topics", t, "records"]) => {
            records::produce(
                ctx,
                t,
                read_json_limited(body, records::BODY_SIZE_BYTES_MAX).await?,
            )
            .await
        }
        (&M::GET, ["topics", t, "partitions", p, "records"]) => {
            records::consume(ctx, t, p, query).await
        }
        (&M::GET, ["groups"]) => groups::list(ctx),
        (&M::GET, ["groups", g]) => groups::describe(ctx, g),
        (&M::DELETE, ["groups", g]) => groups::delete(ctx, g).await,
        (&M::POST, ["groups", g, "offsets"]) => {
            groups::commit(ctx, g, read_json(body).await?).await
        }
        (&M::POST, ["groups", g, "offsets", "reset"]) => {
            groups::reset_offsets(ctx, g, read_json(body).await?).await
        }
        _ if !ctx.admin_extensions.is_empty() => {
            let bytes = Limited::new(body, ADMIN_BODY_SIZE_BYTES_MAX)
                .collect()
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("request body exceeds {ADMIN_BODY_SIZE_BYTES_MAX} bytes"),
                    )
                })?
                .to_bytes();
            let json: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            };
            for extension in &ctx.admin_extensions {
                if let Some(reply) = extension(method.clone(), segments.clone(), json.clone()).await
                {
                    return reply;
                }
            }
            Err(not_found(path))
        }
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("no such endpoint: {path} (see docs/openapi.yaml)"),
    )
}

async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, ApiError> {
    read_json_limited(body, ADMIN_BODY_SIZE_BYTES_MAX).await
}

/// Reads at most `limit_bytes` of body and parses it as `T`.
async fn read_json_limited<T: DeserializeOwned>(
    body: Incoming,
    limit_bytes: usize,
) -> Result<T, ApiError> {
    let collected = Limited::new(body, limit_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body exceeds {limit_bytes} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&collected)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Decodes `%XX` escapes of one path segment; the result must be UTF-8.
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("bad percent-encoding in path segment '{segment}'"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The value of `key` in a query string (no decoding: values are numbers or plain words).
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Parses an optional numeric query parameter, naming it on error.
pub fn query_number<T: std::str::FromStr>(query: &str, key: &str) -> Result<Option<T>, ApiError> {
    match query_param(query, key) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("query parameter {key}={v} is not a number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(percent_decode("my%20group").unwrap(), "my group");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn query_parameters_are_found_and_checked() {
        assert_eq!(
            query_param("offset=5&max_records=2", "max_records"),
            Some("2")
        );
        assert_eq!(query_number::<i64>("offset=5", "offset").unwrap(), Some(5));
        assert!(query_number::<i64>("offset=x", "offset").is_err());
        assert_eq!(query_number::<i64>("", "offset").unwrap(), None);
    }
}
