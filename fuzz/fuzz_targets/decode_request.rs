//! Fuzzes Kafka request decoding: any frame body through `decode_request`, and every decoded
//! request re-encoded and decoded again. Must never panic, whatever the bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use conflux_wire::decode_request;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((header, body)) = decode_request(Bytes::copy_from_slice(data)) {
        let version = header.request_api_version;
        let mut buf = BytesMut::new();
        body.encode(&mut buf, version);
        assert_eq!(buf.len(), body.encoded_len(version));
    }
});
