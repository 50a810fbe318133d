//! A minimal HTTP/1.1 JSON client for the CLI's subcommands that talk to a running node's
//! admin API: one connection per call, bounded in time, errors that say what to do.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Bound on connecting, and on a whole call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read.
const RESPONSE_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Conflux server at {server}: {reason} (is it running? set --server or CONFLUX_SERVER)")]
    Unreachable { server: String, reason: String },
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("{0}")]
    BadArgument(String),
    #[error("bad server address '{0}': expected http://HOST:PORT")]
    BadUrl(String),
    #[error("unexpected answer from {server}: {reason}")]
    Protocol { server: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    /// `http://host:port` as given, for messages.
    server: String,
    /// `host:port`, for connecting and the Host header.
    authority: String,
}

impl Client {
    pub fn new(server: &str) -> Result<Client, ClientError> {
        let trimmed = server.trim_end_matches('/');
        let authority = trimmed
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(server.to_owned()))?;
        Ok(Client {
            server: trimmed.to_owned(),
            authority: authority.to_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// Sends one request (JSON body optional) and returns the JSON answer; a non-2xx answer
    /// becomes [`ClientError::Api`] with the server's `error_code` and message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call_once(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.protocol(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            server: self.server.clone(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), RESPONSE_SIZE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(format!("HTTP {status} with a non-JSON body: {e}")))?
        };
        if status.is_success() {
            return Ok(value);
        }
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Err(ClientError::Api {
            status,
            code: text("error_code").unwrap_or_else(|| "unknown".into()),
            message: text("message").unwrap_or_else(|| format!("HTTP {status}")),
        })
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            server: self.server.clone(),
            reason,
        }
    }
}

/// Percent-encodes one path segment (group ids may contain anything).
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_must_be_plain_http_host_port() {
        assert!(Client::new("http://127.0.0.1:8080").is_ok());
        assert!(Client::new("http://localhost:8080/").is_ok());
        assert!(Client::new("https://x:1").is_err());
        assert!(Client::new("127.0.0.1:8080").is_err());
        assert!(Client::new("http://x:1/api").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("order-processor.v1"), "order-processor.v1");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_in_the_error() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.get("/api/v1/cluster").await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
