//! Property-based checks of every generated message in every version: random values round-trip
//! byte for byte, truncated encodings fail cleanly, corrupted ones never panic.

use proptest::prelude::*;

fn check_all(seed: u64, adversarial: bool) -> Result<(), TestCaseError> {
    for (name, check) in crate::generated::ROUND_TRIPS {
        let result = std::panic::catch_unwind(|| check(seed, adversarial));
        prop_assert!(result.is_ok(), "{} failed for seed {}", name, seed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn every_message_round_trips_in_every_version(seed: u64) {
        check_all(seed, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn truncated_and_corrupted_messages_fail_cleanly(seed: u64) {
        check_all(seed, true)?;
    }
}

#[test]
fn every_message_is_covered() {
    // 150 broker requests/responses and headers plus the data structures.
    assert!(crate::generated::ROUND_TRIPS.len() >= 150);
    assert_eq!(
        crate::generated::ApiKey::ALL.len() * 2 + 2 + 8,
        crate::generated::ROUND_TRIPS.len()
    );
}

/// Random requests and responses of every API and version survive full framing:
/// `encode_request` → `decode_request`, `encode_response` → `decode_response`.
#[test]
fn every_api_and_version_round_trips_through_framing() {
    use crate::field::arb::{Arb, Gen};
    use crate::generated::{ApiKey, RequestBody, RequestHeader, ResponseBody, ResponseHeader};
    use crate::protocol::{self, request_header_version, response_header_version, Message};

    let mut g = Gen::new(7);
    for &key in ApiKey::ALL {
        let (min, max) = key.valid_versions();
        for version in min..=max {
            for _ in 0..4 {
                let hv = request_header_version(key.as_i16(), version);
                let mut header = RequestHeader::arb(&mut g, hv);
                header.request_api_key = key.as_i16();
                header.request_api_version = version;
                let body = RequestBody::arb(key, &mut g, version);
                let mut frame = bytes::BytesMut::new();
                header.encode(&mut frame, hv);
                body.encode(&mut frame, version);
                let (h, b) = protocol::decode_request(frame.freeze()).expect("request decodes");
                assert_eq!((h, b), (header, body), "{key:?} v{version}");

                let rhv = response_header_version(key.as_i16(), version);
                let rheader = ResponseHeader::arb(&mut g, rhv);
                let rbody = ResponseBody::arb(key, &mut g, version);
                let mut buf = bytes::BytesMut::new();
                rheader.encode(&mut buf, rhv);
                rbody.encode(&mut buf, version);
                let encoded = buf.freeze();
                let (h, b) =
                    protocol::decode_response(encoded, key, version).expect("response decodes");
                assert_eq!((h, b), (rheader, rbody), "{key:?} v{version} response");
            }
        }
    }
}
