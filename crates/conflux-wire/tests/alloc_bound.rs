//! Allocation bound: a request declaring a huge array must be rejected without allocating for
//! it. Runs in its own test binary because it installs a counting global allocator.

use bytes::Bytes;
use conflux_wire::{decode_request, DecodeError, RequestErrorKind};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const ALLOWED_BYTES: usize = 4 * 1024;

/// Bytes allocated at peak (above what was live before) while running `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let out = f();
    (out, ALLOC.peak_usage().saturating_sub(before))
}

#[test]
fn metadata_v1_with_2_pow_31_topics_allocates_almost_nothing() {
    let mut frame = Vec::new();
    // Request header v1: api key 3 (Metadata), version 1, correlation id, null client id.
    frame.extend_from_slice(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff]);
    // A 9-byte body: topics count 2^31 - 1, then five bytes of "topics".
    frame.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a', 0, 1]);
    let frame = Bytes::from(frame);

    let (result, peak_bytes) = peak_during(|| decode_request(frame.clone()));
    let err = result.expect_err("must be rejected");
    assert!(
        matches!(
            err.kind,
            RequestErrorKind::Decode(DecodeError::CountTooLarge { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.header.map(|h| h.correlation_id), Some(7));
    assert!(peak_bytes <= ALLOWED_BYTES, "allocated {peak_bytes} bytes");

    // Same for a flexible version (compact count) of a request with nested arrays.
    let mut frame = vec![0, 3, 0, 12, 0, 0, 0, 8, 0xff, 0xff, 0];
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0]);
    let (result, peak_bytes) = peak_during(|| decode_request(Bytes::from(frame)));
    assert!(result.is_err());
    assert!(peak_bytes <= ALLOWED_BYTES, "allocated {peak_bytes} bytes");
}
