//! Proves the allocation bounds of decoding with a counting global allocator: decompression bombs
//! fail without allocating past the cap, and absurd record counts fail without allocating at all.
//!
//! One test function only, so no other test thread disturbs the peak. zstd's own window is
//! allocated by its C library and is not seen here (it is bounded by `ZSTD_WINDOW_LOG_FLOOR`).

use bytes::Bytes;
use conflux_wire::batch::compute_crc;
use conflux_wire::compression::{compress, decompress, Compression};
use conflux_wire::records::{decode_records, BatchBuilder};
use conflux_wire::DecodeError;
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;

/// Runs `f` and returns how far heap use rose above where it started.
fn peak_growth_bytes(f: impl FnOnce()) -> usize {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    f();
    ALLOCATOR.peak_usage().saturating_sub(before)
}

fn bombs_stay_near_the_cap() {
    let zeros = vec![0u8; 100 * MIB];
    for codec in Compression::ALL {
        let packed = compress(codec, &zeros);
        let cap = MIB;
        let growth = peak_growth_bytes(|| {
            let result = decompress(codec, &packed, cap);
            assert_eq!(
                result,
                Err(DecodeError::DecompressedTooLarge {
                    size_bytes_max: cap
                })
            );
        });
        eprintln!("{codec:?}: peak heap growth {growth} bytes for a {cap} byte cap");
        // The output buffer never exceeds the cap, but while it grows the old and the new
        // buffer coexist (at most 2 × cap), plus bounded decoder scratch (lz4: 64 KiB blocks).
        assert!(
            growth <= 2 * cap + MIB / 2,
            "{codec:?}: peak grew by {growth} bytes for a {cap} byte cap"
        );
    }
}

fn huge_counts_allocate_nothing_big() {
    for codec in Compression::ALL {
        let mut b = BatchBuilder::new(0).with_compression(codec);
        b.append(0, None, Some(Bytes::from_static(b"v")), Vec::new());
        let mut raw = b.build().unwrap().to_vec();
        raw[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = compute_crc(&raw);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = Bytes::from(raw);
        let growth = peak_growth_bytes(|| {
            assert!(matches!(
                decode_records(&batch, MIB),
                Err(DecodeError::CountTooLarge { .. })
            ));
        });
        assert!(
            growth < 256 * 1024,
            "{codec:?}: peak grew by {growth} bytes"
        );
    }
}

#[test]
fn decoding_allocations_are_bounded() {
    bombs_stay_near_the_cap();
    huge_counts_allocate_nothing_big();
}
