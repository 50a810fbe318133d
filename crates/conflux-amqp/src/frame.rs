//! AMQP 0-9-1 framing: reading frames with their size checked against `frame_max` before the
//! payload is read, and encoding method, content-header and body frames. Method and
//! content-header payloads are decoded and encoded with the `amq-protocol` crate.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{self, gen_properties, parse_properties, AMQPProperties};
use amq_protocol::protocol::{gen_class, parse_class, AMQPClass};
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
    check_frame_header(kind, size, frame_max)?;
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

/// Reads frames out of one receive buffer: socket reads fill it in large chunks and each
/// frame is split off it, so a frame costs neither a zeroed allocation nor a copy (its
/// payload is a slice of the buffer). A frame's size is checked against `frame_max` from its
/// 7-byte header, before waiting for (or making room for) its payload.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
}

/// Bytes asked of the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
        }
    }
}

impl FrameReader {
    /// A reader that starts with bytes already read from the socket (by a `BufReader` that
    /// served the handshake).
    pub fn with_buffered(bytes: &[u8]) -> FrameReader {
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES.max(bytes.len()));
        buf.extend_from_slice(bytes);
        FrameReader { buf }
    }

    /// Reads the next frame.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        frame_max: u32,
    ) -> Result<RawFrame, ReadError> {
        loop {
            let wanted = match self.split_frame(frame_max)? {
                Ok(frame) => return Ok(frame),
                Err(wanted) => wanted,
            };
            if self.buf.capacity() - self.buf.len() < wanted {
                self.buf.reserve(wanted.max(READ_CHUNK_BYTES));
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next whole frame in the buffer, or how many more bytes it needs.
    fn split_frame(&mut self, frame_max: u32) -> Result<Result<RawFrame, usize>, ReadError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(Err(FRAME_HEADER_BYTES - self.buf.len()));
        }
        let kind = self.buf[0];
        let channel = u16::from_be_bytes([self.buf[1], self.buf[2]]);
        let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]);
        check_frame_header(kind, size, frame_max)?;
        let total = FRAME_HEADER_BYTES + size as usize + 1;
        if self.buf.len() < total {
            return Ok(Err(total - self.buf.len()));
        }
        let frame = self.buf.split_to(total).freeze();
        if frame[total - 1] != FRAME_END {
            return Err(ReadError::Protocol(
                code::FRAME_ERROR,
                "FRAME_ERROR - frame does not end with 0xCE".into(),
            ));
        }
        Ok(Ok(RawFrame {
            kind,
            channel,
            payload: frame.slice(FRAME_HEADER_BYTES..total - 1),
        }))
    }
}

fn check_frame_header(kind: u8, size: u32, frame_max: u32) -> Result<(), ReadError> {
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
    Ok(())
}

/// Decodes a basic.publish method payload without the general parser (the one method every
/// published message carries); `None` for any other method or a malformed one, which the
/// general parser then handles (and reports).
pub fn decode_publish(payload: &[u8]) -> Option<basic::Publish> {
    let rest = payload.strip_prefix(&[0, 60, 0, 40][..])?;
    let rest = rest.get(2..)?; // reserved (ticket)
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    let [bits] = rest else {
        return None;
    };
    Some(basic::Publish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

fn short_str(input: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = input.split_first()?;
    let text = rest.get(..usize::from(len))?;
    Some((std::str::from_utf8(text).ok()?, &rest[usize::from(len)..]))
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
    let chunk = (frame_max as usize)
        .saturating_sub(FRAME_OVERHEAD_BYTES)
        .max(1);
    let frames = body.len().div_ceil(chunk);
    out.reserve(
        FRAME_OVERHEAD_BYTES
            + 12
            + properties_raw.len()
            + body.len()
            + frames * FRAME_OVERHEAD_BYTES,
    );
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32((12 + properties_raw.len()) as u32);
    out.put_u16(60); // class basic
    out.put_u16(0); // weight
    out.put_u64(body.len() as u64);
    out.put_slice(properties_raw);
    out.put_u8(FRAME_END);
    for part in body.chunks(chunk) {
        put_frame(out, FRAME_BODY, channel, part);
    }
}

/// Appends a basic.deliver method frame written directly (the method every delivery
/// carries); `false`, with nothing written, when a name does not fit a short string.
pub fn put_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) -> bool {
    let short = |s: &[u8]| s.len() <= usize::from(u8::MAX);
    if !(short(consumer_tag) && short(exchange) && short(routing_key)) {
        return false;
    }
    let size = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
    out.reserve(FRAME_OVERHEAD_BYTES + size);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(size as u32);
    out.put_u16(60);
    out.put_u16(60);
    out.put_u8(consumer_tag.len() as u8);
    out.put_slice(consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    for s in [exchange, routing_key] {
        out.put_u8(s.len() as u8);
        out.put_slice(s);
    }
    out.put_u8(FRAME_END);
    true
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
    async fn the_frame_reader_splits_frames_and_checks_them_first() {
        let mut out = BytesMut::new();
        let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        }));
        put_method(&mut out, 5, &publish);
        put_content(&mut out, 5, &[0, 0], &[7u8; 300], 4096);
        put_heartbeat(&mut out);
        // One byte at a time: frames still come out whole.
        let mut slow = tokio_test_reader(&out);
        let mut reader = FrameReader::default();
        let f = reader.read(&mut slow, 131_072).await.unwrap();
        assert_eq!((f.kind, f.channel), (FRAME_METHOD, 5));
        let fast = decode_publish(&f.payload).unwrap();
        assert_eq!(AMQPClass::Basic(basic::AMQPMethod::Publish(fast)), publish);
        assert_eq!(decode_method(&f.payload).unwrap(), publish);
        assert_eq!(
            reader.read(&mut slow, 131_072).await.unwrap().kind,
            FRAME_HEADER
        );
        let body = reader.read(&mut slow, 131_072).await.unwrap();
        assert_eq!(&body.payload[..], &[7u8; 300][..]);
        assert_eq!(
            reader.read(&mut slow, 131_072).await.unwrap().kind,
            FRAME_HEARTBEAT
        );
        assert!(matches!(
            reader.read(&mut slow, 131_072).await,
            Err(ReadError::Io(_))
        ));
        // A frame over frame_max is refused from its header alone.
        let mut big = vec![FRAME_BODY, 0, 1];
        big.extend_from_slice(&(200_000u32).to_be_bytes());
        let err = FrameReader::default()
            .read(&mut &big[..], 131_072)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Protocol(code::FRAME_ERROR, _)));
        let bad_end = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0];
        let err = FrameReader::default()
            .read(&mut &bad_end[..], 131_072)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Protocol(code::FRAME_ERROR, _)));
        // Not a publish, or a malformed one: left to the general parser.
        assert!(decode_publish(&[0, 60, 0, 40, 0, 0, 5, b'a']).is_none());
        let ack = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: false,
        }));
        let mut out = BytesMut::new();
        put_method(&mut out, 1, &ack);
        assert!(decode_publish(&out[7..out.len() - 1]).is_none());
    }

    #[test]
    fn deliver_frames_match_the_general_encoder() {
        let mut fast = BytesMut::new();
        assert!(put_deliver(&mut fast, 9, b"ctag", 77, true, b"ex", b"rk.1"));
        let mut general = BytesMut::new();
        put_method(
            &mut general,
            9,
            &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 77,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk.1".into(),
            })),
        );
        assert_eq!(fast, general);
        let long = vec![b'k'; 256];
        assert!(!put_deliver(&mut fast, 9, b"c", 1, false, b"", &long));
        assert_eq!(fast, general, "nothing written when a name is too long");
    }

    /// A reader that hands out one byte per read.
    fn tokio_test_reader(bytes: &[u8]) -> impl AsyncRead + Unpin {
        struct OneByte(Vec<u8>, usize);
        impl AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if self.1 < self.0.len() && buf.remaining() > 0 {
                    let b = self.0[self.1];
                    buf.put_slice(&[b]);
                    self.1 += 1;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByte(bytes.to_vec(), 0)
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
