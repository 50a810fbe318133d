//! The Kafka message API: the `Message` trait every generated message implements, request and
//! response headers, and framing helpers (`decode_request`, `encode_response`).
//!
//! A request frame is `size:i32 | header | body`. The header version follows from the API key
//! and version (flexible versions use header v2 for requests, v1 for responses), with two
//! exceptions Kafka has: ApiVersions responses always use header v0 (a client that does not know
//! the broker's versions must be able to read them), and ControlledShutdown v0 uses header v0.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader};
use crate::generated::{ApiKey, RequestBody, RequestHeader, ResponseBody, ResponseHeader};

/// A Kafka message: one struct covering every version in `VERSIONS`.
pub trait Message: Sized {
    /// Inclusive (min, max) versions this message can be decoded in.
    const VERSIONS: (i16, i16);
    /// The first version using the flexible (compact, tagged-field) encoding, if any.
    const FLEXIBLE_MIN_VERSION: Option<i16>;
    /// Decodes one message of `version`; versions outside `VERSIONS` are `UnsupportedVersion`.
    fn decode(r: &mut Reader, version: i16) -> Result<Self, DecodeError>;
    /// Encodes in `version`; fields absent in that version are skipped.
    fn encode(&self, buf: &mut BytesMut, version: i16);
    /// Exactly the number of bytes `encode` writes.
    fn encoded_len(&self, version: i16) -> usize;
}

/// A request message, linked to its API key and response type.
pub trait Request: Message {
    const API_KEY: i16;
    type Response: Response;
}

/// A response message, linked to its API key and request type.
pub trait Response: Message {
    const API_KEY: i16;
    type Request: Request;
}

const API_VERSIONS_KEY: i16 = 18;
const CONTROLLED_SHUTDOWN_KEY: i16 = 7;

fn is_flexible(api_key: i16, api_version: i16) -> bool {
    ApiKey::from_i16(api_key)
        .and_then(ApiKey::flexible_min_version)
        .is_some_and(|min| api_version >= min)
}

/// The request header version for a request of `api_key` in `api_version`. Also defined for
/// versions above the supported range, as Kafka does, so that the header of a too-new request
/// (notably ApiVersions) still parses and can be answered with UNSUPPORTED_VERSION.
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    if api_key == CONTROLLED_SHUTDOWN_KEY && api_version == 0 {
        0
    } else if is_flexible(api_key, api_version) {
        2
    } else {
        1
    }
}

/// The response header version for a response to `api_key` in `api_version`.
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    if api_key != API_VERSIONS_KEY && is_flexible(api_key, api_version) {
        1
    } else {
        0
    }
}

/// What was wrong with a request frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestErrorKind {
    /// Kafka closes the connection for an API key it does not know.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// Answer with UNSUPPORTED_VERSION (for ApiVersions: a v0 response listing our ranges).
    #[error("unsupported version {version} of {}", api_key.name())]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A request that could not be decoded, with its header when that much could be read (so the
/// error can be answered with the right correlation id).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct RequestError {
    pub header: Option<RequestHeader>,
    pub kind: RequestErrorKind,
}

impl RequestError {
    fn new(header: Option<RequestHeader>, kind: impl Into<RequestErrorKind>) -> Self {
        Self {
            header,
            kind: kind.into(),
        }
    }
}

/// Decodes one request frame (without its 4-byte size prefix) into header and body.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, RequestBody), RequestError> {
    let peek = frame.get(..4).ok_or_else(|| {
        RequestError::new(
            None,
            DecodeError::Truncated {
                needed: 4,
                remaining: frame.len(),
            },
        )
    })?;
    let api_key = i16::from_be_bytes([peek[0], peek[1]]);
    let api_version = i16::from_be_bytes([peek[2], peek[3]]);
    let mut r = Reader::new(frame);
    let header = RequestHeader::decode(&mut r, request_header_version(api_key, api_version))
        .map_err(|e| RequestError::new(None, e))?;
    let Some(key) = ApiKey::from_i16(api_key) else {
        return Err(RequestError::new(
            Some(header),
            RequestErrorKind::UnknownApiKey(api_key),
        ));
    };
    let (min, max) = key.valid_versions();
    if api_version < min || api_version > max {
        let kind = RequestErrorKind::UnsupportedVersion {
            api_key: key,
            version: api_version,
        };
        return Err(RequestError::new(Some(header), kind));
    }
    match RequestBody::decode(key, &mut r, api_version) {
        Ok(body) => Ok((header, body)),
        Err(e) => Err(RequestError::new(Some(header), e)),
    }
}

/// Encodes a whole frame: size prefix, `header` in `header_version`, then `body` in `version`.
fn encode_frame(
    header: &impl Message,
    header_version: i16,
    body: &impl Message,
    version: i16,
) -> BytesMut {
    let size = header.encoded_len(header_version) + body.encoded_len(version);
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version);
    body.encode(&mut buf, version);
    buf
}

/// Encodes a response frame (size prefix, header in the right version, body).
pub fn encode_response(
    header: &ResponseHeader,
    body: &impl Message,
    api_key: i16,
    version: i16,
) -> BytesMut {
    encode_frame(
        header,
        response_header_version(api_key, version),
        body,
        version,
    )
}

/// Encodes a request frame; the API key and version are taken from `header`.
pub fn encode_request(header: &RequestHeader, body: &impl Message) -> BytesMut {
    let (api_key, version) = (header.request_api_key, header.request_api_version);
    encode_frame(
        header,
        request_header_version(api_key, version),
        body,
        version,
    )
}

/// Decodes a response frame (without its size prefix) to a request of `api_key`/`version`.
pub fn decode_response(
    frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, ResponseBody), DecodeError> {
    let mut r = Reader::new(frame);
    let header =
        ResponseHeader::decode(&mut r, response_header_version(api_key.as_i16(), version))?;
    let body = ResponseBody::decode(api_key, &mut r, version)?;
    Ok((header, body))
}

/// Decodes a structure that carries its own version as a leading `i16`, as the consumer
/// protocol's `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` do inside JoinGroup
/// and SyncGroup. A version above the highest known one is read as the highest known one (those
/// versions only ever append fields), as Kafka does; the returned version is the one on the wire.
pub fn decode_versioned<M: Message>(data: Bytes) -> Result<(i16, M), DecodeError> {
    let mut r = Reader::new(data);
    let version = r.i16()?;
    let message = M::decode(&mut r, version.min(M::VERSIONS.1))?;
    Ok((version, message))
}

/// Encodes `message` in `version` behind its `i16` version prefix (see [`decode_versioned`]).
pub fn encode_versioned(message: &impl Message, version: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + message.encoded_len(version));
    buf.put_i16(version);
    message.encode(&mut buf, version);
    buf.freeze()
}
