//! Hostile request frames through `decode_request`: huge counts, lengths past the end, bad
//! negative lengths, every truncation of valid requests, and random bytes for every API and
//! version. Decoding must fail cleanly (or succeed), never panic.

use bytes::{BufMut, Bytes, BytesMut};
use conflux_wire::generated::{
    ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
};
use conflux_wire::{
    decode_request, encode_request, request_header_version, ApiKey, DecodeError, Message,
    RequestBody, RequestErrorKind,
};

fn decode_err(frame: &[u8]) -> RequestErrorKind {
    decode_request(Bytes::copy_from_slice(frame))
        .expect_err("must be rejected")
        .kind
}

/// Header v1 for `api_key`/`version` with a null client id.
fn header_v1(api_key: i16, version: i16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xff]);
    h
}

#[test]
fn array_count_i32_max_is_rejected() {
    let mut frame = header_v1(3, 1);
    frame.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
    assert!(matches!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::CountTooLarge { .. })
    ));
    // Produce v3: topic data count i32::MAX after acks and timeout.
    let mut frame = header_v1(0, 3);
    frame.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::CountTooLarge { .. })
    ));
}

#[test]
fn string_length_past_end_is_truncated() {
    let mut frame = header_v1(3, 1);
    frame.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x64, b'a', b'b']);
    assert!(matches!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::Truncated { .. })
    ));
    // Client id length past the end of the header.
    assert!(matches!(
        decode_err(&[0, 3, 0, 1, 0, 0, 0, 1, 0x10, 0]),
        RequestErrorKind::Decode(_)
    ));
}

#[test]
fn negative_lengths_other_than_null_are_invalid() {
    // Topic name length -2.
    let mut frame = header_v1(3, 1);
    frame.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xfe]);
    assert_eq!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::InvalidLength(-2))
    );
    // Topics array count -5.
    let mut frame = header_v1(3, 1);
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xfb]);
    assert_eq!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::InvalidLength(-5))
    );
    // Records length -3 in Produce v3: no txn id, acks, timeout, 1 topic "t", 1 partition 0.
    let mut frame = header_v1(0, 3);
    frame.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't']);
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfd]);
    assert_eq!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::InvalidLength(-3))
    );
    // Null where the version does not allow it: Metadata v1 topic name -1.
    let mut frame = header_v1(3, 1);
    frame.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xff]);
    assert!(matches!(
        decode_err(&frame),
        RequestErrorKind::Decode(DecodeError::UnexpectedNull(_))
    ));
}

#[test]
fn versions_outside_the_valid_range_are_unsupported() {
    for &key in ApiKey::ALL {
        let (min, max) = key.valid_versions();
        for version in [min - 1, max + 1, i16::MAX] {
            if version < 0 && min == 0 {
                continue;
            }
            let kind = decode_err(&header_v1(key.as_i16(), version));
            if request_header_version(key.as_i16(), version) == 1 {
                assert_eq!(
                    kind,
                    RequestErrorKind::UnsupportedVersion {
                        api_key: key,
                        version
                    }
                );
            }
        }
    }
}

/// Encodes `body` as a full request (without size prefix) in `version`.
fn request_frame(body: &impl Message, api_key: ApiKey, version: i16) -> Bytes {
    let header = RequestHeader {
        request_api_key: api_key.as_i16(),
        request_api_version: version,
        correlation_id: 77,
        client_id: Some("adversary".into()),
        ..Default::default()
    };
    encode_request(&header, body).freeze().slice(4..)
}

/// A few valid requests of every API and version: the default body, plus richer ones.
fn valid_frames() -> Vec<Bytes> {
    let mut frames = Vec::new();
    for &key in ApiKey::ALL {
        let (min, max) = key.valid_versions();
        for version in min..=max {
            let header = RequestHeader {
                request_api_key: key.as_i16(),
                request_api_version: version,
                correlation_id: 3,
                client_id: Some("c".into()),
                ..Default::default()
            };
            let hv = request_header_version(key.as_i16(), version);
            let mut buf = BytesMut::new();
            header.encode(&mut buf, hv);
            RequestBody::default_for(key).encode(&mut buf, version);
            frames.push(buf.freeze());
        }
    }
    let metadata = MetadataRequest {
        topics: Some(vec![Default::default(), Default::default()]),
        ..Default::default()
    };
    for v in 1..=12 {
        frames.push(request_frame(&metadata, ApiKey::Metadata, v));
    }
    let produce: ProduceRequest = ProduceRequest {
        transactional_id: Some("tx".into()),
        topic_data: vec![Default::default()],
        ..Default::default()
    };
    for v in 3..=11 {
        frames.push(request_frame(&produce, ApiKey::Produce, v));
    }
    let fetch = FetchRequest {
        topics: vec![Default::default()],
        ..Default::default()
    };
    for v in 4..=16 {
        frames.push(request_frame(&fetch, ApiKey::Fetch, v));
    }
    for v in 0..=4 {
        frames.push(request_frame(
            &ApiVersionsRequest::default(),
            ApiKey::ApiVersions,
            v,
        ));
    }
    frames
}

#[test]
fn valid_requests_decode_and_every_truncation_fails() {
    let frames = valid_frames();
    assert!(frames.len() > 300, "{} frames", frames.len());
    for frame in &frames {
        let (header, _) = decode_request(frame.clone())
            .unwrap_or_else(|e| panic!("valid frame {frame:02x?} failed: {e}"));
        assert!(header.correlation_id == 3 || header.correlation_id == 77);
        for len in 0..frame.len() {
            let result = decode_request(frame.slice(..len));
            assert!(result.is_err(), "prefix {len} of {frame:02x?} decoded");
        }
    }
}

/// SplitMix64, so the random inputs are reproducible from the seed in a failure message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_for_every_api_and_version_never_panic() {
    let mut decoded_ok = 0;
    for &key in ApiKey::ALL {
        let (min, max) = key.valid_versions();
        for version in min..=max {
            for seed in 0..24u64 {
                let mut rng =
                    Rng(seed ^ (u64::from(key.as_i16() as u16) << 32) ^ (version as u64) << 48);
                let mut frame = BytesMut::new();
                frame.put_i16(key.as_i16());
                frame.put_i16(version);
                if seed % 2 == 0 {
                    // A valid header, then 1 KiB of noise as the body.
                    frame.put_i32(seed as i32);
                    frame.put_i16(1);
                    frame.put_u8(b'x');
                    if request_header_version(key.as_i16(), version) == 2 {
                        frame.put_u8(0);
                    }
                    frame.extend_from_slice(&rng.fill(1024));
                } else {
                    frame.extend_from_slice(&rng.fill(1024));
                }
                if decode_request(frame.freeze()).is_ok() {
                    decoded_ok += 1;
                }
            }
        }
    }
    // Noise rarely forms a valid body; the point is that nothing panicked.
    assert!(decoded_ok < 100_000);
}

#[test]
fn random_mutations_of_valid_requests_never_panic() {
    let mut rng = Rng(42);
    for frame in valid_frames() {
        for _ in 0..8 {
            let mut bytes = frame.to_vec();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            let _ = decode_request(Bytes::from(bytes));
        }
    }
}
