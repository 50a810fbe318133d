//! AMQP 0-9-1 framing: reading frames with their size checked against `frame_max` before the
//! payload is read, and encoding method, content-header and body frames. Method and
//! content-header payloads are decoded and encoded with the `amq-protocol` crate.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::protocol::{gen_class, parse_class, AMQPClass};
use amq_protocol::types::generation::{gen_id, gen_long_long_uint, gen_short_uint};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
pub const FRAME_HEADER_BYTES: usize = 7;
/// Header plus the frame-end octet.
pub const FRAME_OVERHEAD_BYTES: usize = 8;
/// Smallest frame_max a peer may negotiate (the spec's `frame-min-size`).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// AMQP reply codes used by the server.
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// One frame as read from the socket.
#[derive(Debug)]
pub struct RawFrame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Bytes,
}

/// Why reading a frame failed.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// A protocol violation: the connection is closed with this code and text.
    Protocol(u16, String),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one frame, refusing any larger than `frame_max` before allocating for it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame_max: u32,
) -> Result<RawFrame, ReadError> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    r.read_exact(&mut head).await?;
    let kind = head[0];
    let channel = u16::from_be_bytes([head[1], head[2]]);
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(ReadError::Protocol(
            code::FRAME_ERROR,
            format!("FRAME_ERROR - unknown frame type {kind}"),
        ));
    }
    if u64::from(size) + FRAME_OVERHEAD_BYTES as u64 > u64::from(frame_max) {
        return Err(ReadError::Protocol(
            code::FRAME_ERROR,
            format!(
                "FRAME_ERROR - frame of {} bytes exceeds the negotiated frame_max {frame_max}",
                u64::from(size) + FRAME_OVERHEAD_BYTES as u64
            ),
        ));
    }
    let mut payload = BytesMut::zeroed(size as usize + 1);
    r.read_exact(&mut payload).await?;
    if payload[size as usize] != FRAME_END {
        return Err(ReadError::Protocol(
            code::FRAME_ERROR,
            "FRAME_ERROR - frame does not end with 0xCE".into(),
        ));
    }
    payload.truncate(size as usize);
    Ok(RawFrame {
        kind,
        channel,
        payload: payload.freeze(),
    })
}

/// Decodes a method frame's payload.
pub fn decode_method(payload: &[u8]) -> Result<AMQPClass, String> {
    match parse_class(payload) {
        Ok((&[], class)) => Ok(class),
        Ok(_) => Err("method frame has trailing bytes".into()),
        Err(e) => Err(format!("undecodable method frame: {e:?}")),
    }
}

/// A decoded content header.
#[derive(Debug)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: AMQPProperties,
}

pub fn decode_content_header(payload: &[u8]) -> Result<ContentHeader, String> {
    if payload.len() < 12 {
        return Err("content header frame is too short".into());
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let body_size = u64::from_be_bytes(payload[4..12].try_into().unwrap_or([0; 8]));
    match parse_properties(&payload[12..]) {
        Ok((&[], properties)) => Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        }),
        Ok(_) => Err("content header has trailing bytes".into()),
        Err(e) => Err(format!("undecodable content header: {e:?}")),
    }
}

/// Encodes properties alone (as stored in a record header).
pub fn encode_properties(props: &AMQPProperties) -> Vec<u8> {
    let ctx = WriteContext::from(Vec::new());
    match gen_properties(props)(ctx) {
        Ok(ctx) => ctx.write,
        Err(_) => Vec::new(),
    }
}

/// Decodes properties stored by [`encode_properties`].
pub fn decode_properties(raw: &[u8]) -> Option<AMQPProperties> {
    match parse_properties(raw) {
        Ok((&[], p)) => Some(p),
        _ => None,
    }
}

fn put_frame(out: &mut BytesMut, kind: u8, channel: u16, payload: &[u8]) {
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Appends a method frame to `out`.
pub fn put_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let ctx = WriteContext::from(Vec::with_capacity(64));
    let payload = match gen_class(method)(ctx) {
        Ok(ctx) => ctx.write,
        Err(e) => {
            tracing::error!(error = ?e, "encoding an AMQP method failed");
            return;
        }
    };
    put_frame(out, FRAME_METHOD, channel, &payload);
}

/// Appends a content header and the body frames (each within `frame_max`) to `out`.
pub fn put_content(
    out: &mut BytesMut,
    channel: u16,
    properties_raw: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let ctx = WriteContext::from(Vec::with_capacity(14 + properties_raw.len()));
    let head = (|| {
        let ctx = gen_id(60)(ctx)?;
        let ctx = gen_short_uint(0)(ctx)?;
        gen_long_long_uint(body.len() as u64)(ctx)
    })();
    let Ok(head) = head else { return };
    let mut payload = head.write;
    payload.extend_from_slice(properties_raw);
    put_frame(out, FRAME_HEADER, channel, &payload);
    let chunk = (frame_max as usize)
        .saturating_sub(FRAME_OVERHEAD_BYTES)
        .max(1);
    for part in body.chunks(chunk) {
        put_frame(out, FRAME_BODY, channel, part);
    }
}

pub fn put_heartbeat(out: &mut BytesMut) {
    put_frame(out, FRAME_HEARTBEAT, 0, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    #[tokio::test]
    async fn oversized_frames_are_refused_before_reading_them() {
        let mut raw = vec![FRAME_BODY, 0, 1];
        raw.extend_from_slice(&(200_000u32).to_be_bytes());
        let err = read_frame(&mut &raw[..], 131_072).await.unwrap_err();
        assert!(matches!(err, ReadError::Protocol(code::FRAME_ERROR, _)));
        let bad_type = [9u8, 0, 0, 0, 0, 0, 0, FRAME_END];
        let err = read_frame(&mut &bad_type[..], 131_072).await.unwrap_err();
        assert!(matches!(err, ReadError::Protocol(code::FRAME_ERROR, _)));
        let bad_end = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0];
        let err = read_frame(&mut &bad_end[..], 131_072).await.unwrap_err();
        assert!(matches!(err, ReadError::Protocol(code::FRAME_ERROR, _)));
    }

    #[tokio::test]
    async fn methods_and_content_round_trip() {
        let mut out = BytesMut::new();
        let method = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 7,
            multiple: true,
        }));
        put_method(&mut out, 3, &method);
        let props = basic::AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_priority(4);
        put_content(
            &mut out,
            3,
            &encode_properties(&props),
            &[1u8; 10_000],
            4096,
        );
        let mut r = &out[..];
        let f = read_frame(&mut r, 131_072).await.unwrap();
        assert_eq!((f.kind, f.channel), (FRAME_METHOD, 3));
        assert_eq!(decode_method(&f.payload).unwrap(), method);
        let h = read_frame(&mut r, 131_072).await.unwrap();
        let header = decode_content_header(&h.payload).unwrap();
        assert_eq!(
            (header.class_id, header.body_size, header.properties),
            (60, 10_000, props)
        );
        let mut body = 0;
        while !r.is_empty() {
            let b = read_frame(&mut r, 4096).await.unwrap();
            assert_eq!(b.kind, FRAME_BODY);
            body += b.payload.len();
        }
        assert_eq!(body, 10_000);
    }
}
