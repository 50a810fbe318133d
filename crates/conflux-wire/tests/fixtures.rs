//! Byte-exact vectors: requests captured from real clients (see `fixtures/README.md`) and
//! hand-built frames following the Kafka protocol guide, decoded and re-encoded byte for byte.

use bytes::{BufMut, Bytes, BytesMut};
use conflux_wire::generated::{
    api_versions_response, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest,
    ProduceRequest, RequestHeader, ResponseHeader,
};
use conflux_wire::{
    decode_request, decode_response, encode_request, encode_response, ApiKey, Message, RequestBody,
    RequestErrorKind, ResponseBody,
};

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let hex = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    unhex(hex.trim())
}

fn unhex(hex: &str) -> Bytes {
    let clean: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// Decodes a request frame, re-encodes it and checks the bytes are identical.
fn round_trip(frame: Bytes) -> (RequestHeader, RequestBody) {
    let (header, body) = decode_request(frame.clone()).expect("decodes");
    let version = header.request_api_version;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let encoded = match &body {
        RequestBody::ApiVersions(m) => encode_request(&header, m),
        RequestBody::Metadata(m) => encode_request(&header, m),
        RequestBody::Produce(m) => encode_request(&header, m),
        other => panic!("unexpected body {other:?}"),
    };
    assert_eq!(&encoded[4..], &frame[..], "re-encoded frame differs");
    assert_eq!(
        body.encoded_len(version) + 4,
        encoded.len() - header_len(&header)
    );
    (header, body)
}

fn header_len(header: &RequestHeader) -> usize {
    let v =
        conflux_wire::request_header_version(header.request_api_key, header.request_api_version);
    header.encoded_len(v)
}

fn expect_api_versions(frame: Bytes, software: &str, software_version: &str) {
    let (header, body) = round_trip(frame);
    assert_eq!(
        (header.request_api_key, header.request_api_version),
        (18, 3)
    );
    assert_eq!(header.correlation_id, 1);
    assert_eq!(header.client_id.as_deref(), Some("conflux-fixture"));
    let RequestBody::ApiVersions(req) = body else {
        panic!("not ApiVersions")
    };
    assert_eq!(req.client_software_name, software);
    assert_eq!(req.client_software_version, software_version);
}

#[test]
fn kcat_api_versions_v3() {
    let frame = fixture("kcat-1.7.1-librdkafka-2.0.2-api_versions-v3.hex");
    expect_api_versions(frame, "librdkafka", "2.0.2");
}

#[test]
fn confluent_kafka_python_api_versions_v3() {
    let frame = fixture("confluent-kafka-2.16.1-librdkafka-2.16.0-api_versions-v3.hex");
    expect_api_versions(frame, "confluent-kafka-python", "2.16.1-rdkafka-2.16.0");
}

#[test]
fn kcat_metadata_v4_brokers_and_all_topics() {
    let (header, body) = round_trip(fixture(
        "kcat-1.7.1-librdkafka-2.0.2-metadata-v4-brokers.hex",
    ));
    assert_eq!((header.request_api_key, header.request_api_version), (3, 4));
    let RequestBody::Metadata(req) = body else {
        panic!("not Metadata")
    };
    assert_eq!(req.topics, Some(vec![]));
    assert!(!req.allow_auto_topic_creation);

    let (_, body) = round_trip(fixture(
        "kcat-1.7.1-librdkafka-2.0.2-metadata-v4-all-topics.hex",
    ));
    let RequestBody::Metadata(req) = body else {
        panic!("not Metadata")
    };
    assert_eq!(req.topics, None, "null topics = all topics");
    assert!(req.allow_auto_topic_creation);
}

#[test]
fn confluent_kafka_python_metadata_v12() {
    let frame = fixture("confluent-kafka-2.16.1-librdkafka-2.16.0-metadata-v12-orders.hex");
    let (header, body) = round_trip(frame);
    assert_eq!(
        (header.request_api_key, header.request_api_version),
        (3, 12)
    );
    let RequestBody::Metadata(req) = body else {
        panic!("not Metadata")
    };
    let topics = req.topics.expect("topics");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].name.as_deref(), Some("orders"));
    assert!(topics[0].topic_id.is_nil());
    assert!(req.allow_auto_topic_creation);
    assert!(!req.include_topic_authorized_operations);
}

/// Metadata v12 (flexible, request header v2), built from the protocol guide.
#[test]
fn hand_built_metadata_v12_request() {
    let frame = unhex(
        "0003 000c 00000007 0003 616263 00 \
         02 00000000000000000000000000000000 07 6f7264657273 00 \
         01 00 00",
    );
    let (header, body) = round_trip(frame.clone());
    assert_eq!(header.client_id.as_deref(), Some("abc"));
    assert_eq!(header.correlation_id, 7);
    let RequestBody::Metadata(req) = body else {
        panic!("not Metadata")
    };
    let expected = MetadataRequest {
        topics: Some(vec![
            conflux_wire::generated::metadata_request::MetadataRequestTopic {
                name: Some("orders".into()),
                ..Default::default()
            },
        ]),
        allow_auto_topic_creation: true,
        include_topic_authorized_operations: false,
        ..Default::default()
    };
    assert_eq!(req, expected);
}

/// Unknown tagged fields survive a decode/encode cycle byte for byte.
#[test]
fn unknown_tagged_fields_are_preserved() {
    // Metadata v12 with two unknown tags (5: 2 bytes, 9: 0 bytes) in the top-level section.
    let frame = unhex("0003 000c 00000007 ffff 00  01  01 00  02 05 02 abcd 09 00");
    let (_, body) = round_trip(frame);
    let RequestBody::Metadata(req) = body else {
        panic!("not Metadata")
    };
    assert_eq!(req.unknown_tagged_fields.len(), 2);
    assert_eq!(
        req.unknown_tagged_fields[0],
        (5, Bytes::from_static(&[0xab, 0xcd]))
    );
    assert_eq!(req.topics, Some(vec![]));
}

/// Produce v9 with a records payload: decoded as a zero-copy slice of the frame.
#[test]
fn hand_built_produce_v9_request() {
    let records = "0000000000000000 0000003a 00000000 02 deadbeef 0000 00000000 \
                   0000000000000000 0000000000000000 ffffffffffffffff ffff ffffffff 00000001 \
                   10 00 00 00 02 61 02 62 00";
    let records_len = unhex(records).len();
    let frame = unhex(&format!(
        "0000 0009 0000002a 0006 636f6e666c78 00 \
         00 ffff 00007530 \
         02 07 6f7264657273 \
           02 00000003 {:02x} {records} 00 \
           00 \
         00",
        records_len + 1
    ));
    let (header, body) = round_trip(frame.clone());
    assert_eq!(header.correlation_id, 42);
    let RequestBody::Produce(req) = body else {
        panic!("not Produce")
    };
    assert_eq!(req.transactional_id, None);
    assert_eq!(req.acks, -1);
    assert_eq!(req.timeout_ms, 30_000);
    let topic = &req.topic_data[0];
    assert_eq!(topic.name, "orders");
    let partition = &topic.partition_data[0];
    assert_eq!(partition.index, 3);
    let data = partition.records.as_ref().expect("records");
    assert_eq!(data, &unhex(records));
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    assert!(
        range.contains(&(data.as_ptr() as usize)),
        "records are a slice of the frame"
    );
    assert_eq!(ProduceRequest::API_KEY, 0);
}

/// ApiVersions v3 response with a tagged SupportedFeatures field; response header v0.
#[test]
fn api_versions_v3_response_with_tagged_field() {
    let frame = unhex(
        "00000001 0000 \
         03 0000 0000 0009 00  0012 0000 0004 00 \
         00000000 \
         02 00 17 02 11 6d657461646174612e76657273696f6e 0001 0014 00 \
            01 08 0000000000000005",
    );
    let (header, body) = decode_response(frame.clone(), ApiKey::ApiVersions, 3).expect("decodes");
    assert_eq!(header.correlation_id, 1);
    let ResponseBody::ApiVersions(resp) = body else {
        panic!("not ApiVersions")
    };
    assert_eq!(resp.api_keys.len(), 2);
    assert_eq!(resp.api_keys[1].api_key, 18);
    assert_eq!(resp.supported_features[0].name, "metadata.version");
    assert_eq!(resp.supported_features[0].max_version, 20);
    assert_eq!(resp.finalized_features_epoch, 5);
    let encoded = encode_response(
        &ResponseHeader {
            correlation_id: 1,
            ..Default::default()
        },
        &resp,
        18,
        3,
    );
    assert_eq!(&encoded[4..], &frame[..]);
    assert_eq!(
        i32::from_be_bytes(encoded[..4].try_into().unwrap()) as usize,
        frame.len()
    );
}

/// An ApiVersions response built by value in every version decodes back to itself.
#[test]
fn api_versions_response_in_all_versions() {
    let resp = ApiVersionsResponse {
        error_code: 35,
        api_keys: ApiKey::ALL
            .iter()
            .map(|k| api_versions_response::ApiVersion {
                api_key: k.as_i16(),
                min_version: k.valid_versions().0,
                max_version: k.valid_versions().1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    for version in 0..=4 {
        let encoded = encode_response(
            &ResponseHeader {
                correlation_id: 9,
                ..Default::default()
            },
            &resp,
            18,
            version,
        );
        let (header, body) =
            decode_response(encoded.freeze().slice(4..), ApiKey::ApiVersions, version).unwrap();
        assert_eq!(header.correlation_id, 9);
        assert_eq!(body, ResponseBody::ApiVersions(resp.clone()));
    }
}

/// A too-new ApiVersions request still yields its header (parsed as v2) for the error answer.
#[test]
fn too_new_api_versions_request_keeps_its_header() {
    let frame = unhex("0012 0063 0000000b 0003 616263 00 0161 0162 00 ffff");
    let err = decode_request(frame).unwrap_err();
    let header = err.header.expect("header");
    assert_eq!(header.correlation_id, 11);
    assert_eq!(header.client_id.as_deref(), Some("abc"));
    assert_eq!(
        err.kind,
        RequestErrorKind::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            version: 99
        }
    );
    // An old client's ApiVersions v0 frame decodes normally with header v1.
    let (header, body) = decode_request(unhex("0012 0000 0000000c ffff")).unwrap();
    assert_eq!(header.client_id, None);
    assert_eq!(
        body,
        RequestBody::ApiVersions(ApiVersionsRequest::default())
    );
}

#[test]
fn unknown_api_key_is_reported_with_header() {
    let err = decode_request(unhex("7fff 0000 00000005 0000")).unwrap_err();
    assert_eq!(err.kind, RequestErrorKind::UnknownApiKey(0x7fff));
    assert_eq!(err.header.expect("header").correlation_id, 5);
}

#[test]
fn header_versions_follow_flexibility() {
    use conflux_wire::{request_header_version, response_header_version};
    assert_eq!(request_header_version(3, 8), 1);
    assert_eq!(request_header_version(3, 9), 2);
    assert_eq!(request_header_version(18, 3), 2);
    assert_eq!(request_header_version(18, 42), 2);
    assert_eq!(
        response_header_version(18, 3),
        0,
        "ApiVersions responses always use v0"
    );
    assert_eq!(response_header_version(0, 9), 1);
    assert_eq!(response_header_version(0, 8), 0);
    assert_eq!(ApiKey::from_i16(18), Some(ApiKey::ApiVersions));
    assert_eq!(ApiKey::ApiVersions.name(), "ApiVersions");
    assert_eq!(ApiKey::Metadata.flexible_min_version(), Some(9));
    assert_eq!(ApiKey::Produce.valid_versions().0, 0);
}

/// The consumer protocol's subscription inside JoinGroup metadata: version-prefixed, and a
/// newer version than we know is read as the newest we know.
#[test]
fn consumer_protocol_subscription_versioned() {
    use conflux_wire::generated::ConsumerProtocolSubscription;
    use conflux_wire::{decode_versioned, encode_versioned};
    let v0 = unhex("0000 00000001 0006 6f7264657273 ffffffff");
    let (version, sub) = decode_versioned::<ConsumerProtocolSubscription>(v0.clone()).unwrap();
    assert_eq!(version, 0);
    assert_eq!(sub.topics, ["orders"]);
    assert_eq!(sub.user_data, None);
    assert_eq!(
        sub.generation_id, -1,
        "spec default for a field absent in v0"
    );
    assert_eq!(encode_versioned(&sub, 0), v0);
    // v3 layout plus a trailing field from a hypothetical v4, labelled v4.
    let v4 = unhex("0004 00000000 ffffffff 00000000 00000005 ffff 00000009");
    let (version, sub) = decode_versioned::<ConsumerProtocolSubscription>(v4).unwrap();
    assert_eq!((version, sub.generation_id, sub.rack_id), (4, 5, None));
}
