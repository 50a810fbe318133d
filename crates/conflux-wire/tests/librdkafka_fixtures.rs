//! Cross-checks record decoding against batches produced by a real client (librdkafka), one per
//! compression codec, and xerial snappy against snappy-java; see `fixtures/records/README.md`.

use bytes::Bytes;
use conflux_wire::batch::{split_batch, verify_crc};
use conflux_wire::compression::Compression;
use conflux_wire::records::{decode_records, recompress, BatchBuilder, RecordHeader};

const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
const CAP: usize = 2 * 1024 * 1024;

struct Expected {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Option<&'static [u8]>)>,
    timestamp: i64,
}

/// Mirrors `large_value()` in capture.py.
fn large_value() -> Vec<u8> {
    let mut x: u64 = 1;
    (0..80_000)
        .map(|_| {
            x = (x * 1_103_515_245 + 12_345) % (1 << 31);
            b'a' + ((x >> 16) % 16) as u8
        })
        .collect()
}

/// Mirrors `expected_records()` in capture.py.
fn expected() -> Vec<Expected> {
    let e = |key: Option<&[u8]>, value: Option<Vec<u8>>, headers, dt| Expected {
        key: key.map(<[u8]>::to_vec),
        value,
        headers,
        timestamp: BASE_TIMESTAMP_MS + dt,
    };
    vec![
        e(Some(b"key-0"), Some(b"value-0".to_vec()), vec![], 0),
        e(
            Some(b"key-1"),
            Some(b"value-1".repeat(20)),
            vec![("h1", Some(b"v1")), ("h2", None), ("h3", Some(b""))],
            5,
        ),
        e(None, Some(b"no key".to_vec()), vec![], 3),
        e(Some(b"tombstone"), None, vec![], 1000),
        e(
            Some(b""),
            Some(Vec::new()),
            vec![("\u{e9}t\u{e9}", Some(b"\x00\xff"))],
            1001,
        ),
        e(Some(b"large"), Some(large_value()), vec![], 1002),
    ]
}

fn fixture(codec: Compression) -> Bytes {
    let path = format!(
        "{}/tests/fixtures/records/librdkafka-{}.bin",
        env!("CARGO_MANIFEST_DIR"),
        codec.name()
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn check_batch(codec: Compression, batch: &Bytes) {
    let header = verify_crc(batch).unwrap();
    assert_eq!(header.compression(), codec.id(), "{codec:?}");
    assert_eq!((header.producer_id, header.base_sequence), (-1, -1));
    assert_eq!(header.base_timestamp, BASE_TIMESTAMP_MS);
    assert_eq!(header.max_timestamp, BASE_TIMESTAMP_MS + 1002);
    let records = decode_records(batch, CAP).unwrap();
    let expected = expected();
    assert_eq!(records.len(), expected.len(), "{codec:?}");
    assert_eq!(header.last_offset_delta as usize, expected.len() - 1);
    for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
        assert_eq!(got.offset_delta as usize, i);
        assert_eq!(header.base_timestamp + got.timestamp_delta, want.timestamp);
        assert_eq!(
            got.key.as_deref(),
            want.key.as_deref(),
            "{codec:?} record {i}"
        );
        assert_eq!(
            got.value.as_deref(),
            want.value.as_deref(),
            "{codec:?} record {i}"
        );
        let headers: Vec<RecordHeader> = want
            .headers
            .iter()
            .map(|(k, v)| RecordHeader {
                key: (*k).to_owned(),
                value: v.map(Bytes::from_static),
            })
            .collect();
        assert_eq!(got.headers, headers, "{codec:?} record {i}");
    }
}

#[test]
fn librdkafka_batches_decode_for_every_codec() {
    for codec in Compression::ALL {
        let mut buf = fixture(codec);
        let (_, batch) = split_batch(&mut buf).unwrap().expect("one batch");
        assert!(buf.is_empty(), "{codec:?}: librdkafka sent one batch");
        check_batch(codec, &batch);
    }
}

#[test]
fn librdkafka_batches_survive_recompression_to_every_codec() {
    for from in Compression::ALL {
        let mut buf = fixture(from);
        let (_, batch) = split_batch(&mut buf).unwrap().unwrap();
        for to in Compression::ALL {
            check_batch(to, &recompress(&batch, to, CAP).unwrap());
        }
    }
}

#[test]
fn librdkafka_batches_respect_the_decompression_cap() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut buf = fixture(codec);
        let (_, batch) = split_batch(&mut buf).unwrap().unwrap();
        assert!(decode_records(&batch, 50_000).is_err(), "{codec:?}");
    }
}

/// Regenerates `fixtures/records/conflux-<codec>.bin`: the expected records built by
/// `BatchBuilder`, which `capture.py verify` serves to a librdkafka consumer (with CRC checks
/// on) to prove that a real client reads what we write. Run with
/// `CONFLUX_WRITE_FIXTURES=1 cargo test -p conflux-wire --test librdkafka_fixtures -- --ignored`.
#[test]
#[ignore = "writes fixtures; run by hand"]
fn write_conflux_built_fixtures() {
    if std::env::var_os("CONFLUX_WRITE_FIXTURES").is_none() {
        return;
    }
    for codec in Compression::ALL {
        let path = format!(
            "{}/tests/fixtures/records/conflux-{}.bin",
            env!("CARGO_MANIFEST_DIR"),
            codec.name()
        );
        std::fs::write(&path, build_expected(codec)).unwrap();
    }
}

fn build_expected(codec: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(BASE_TIMESTAMP_MS).with_compression(codec);
    for want in expected() {
        let headers = want
            .headers
            .iter()
            .map(|(k, v)| RecordHeader {
                key: (*k).to_owned(),
                value: v.map(Bytes::from_static),
            })
            .collect();
        builder.append(
            want.timestamp,
            want.key.map(Bytes::from),
            want.value.map(Bytes::from),
            headers,
        );
    }
    builder.build().unwrap()
}

#[test]
fn conflux_built_batches_match_the_librdkafka_view() {
    for codec in Compression::ALL {
        check_batch(codec, &build_expected(codec));
    }
}

#[test]
fn committed_conflux_built_fixtures_still_decode() {
    for codec in Compression::ALL {
        let path = format!(
            "{}/tests/fixtures/records/conflux-{}.bin",
            env!("CARGO_MANIFEST_DIR"),
            codec.name()
        );
        check_batch(codec, &Bytes::from(std::fs::read(&path).unwrap()));
    }
}

/// Uncompressed, our encoding is byte for byte librdkafka's (which writes leader epoch 0).
#[test]
fn uncompressed_build_is_byte_identical_to_librdkafka() {
    let mut ours = build_expected(Compression::None).to_vec();
    conflux_wire::batch::set_leader_epoch(&mut ours, 0);
    assert!(
        ours == fixture(Compression::None),
        "BatchBuilder output differs from librdkafka's"
    );
}

/// Xerial framing as the Java client writes it, produced by snappy-java itself
/// (`fixtures/XerialSnappy.java`, which also checks that snappy-java reads our framing).
#[test]
fn snappy_java_xerial_stream_decodes() {
    let path = format!(
        "{}/tests/fixtures/records/snappy-java-xerial.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    let framed = std::fs::read(&path).unwrap();
    let value = large_value();
    let out = conflux_wire::compression::decompress(Compression::Snappy, &framed, value.len());
    assert_eq!(out.unwrap(), value);
    let too_small = conflux_wire::compression::decompress(Compression::Snappy, &framed, 1000);
    assert!(too_small.is_err());
}
