//! Fuzzes every decompression codec with a small output cap. The first byte picks the codec.
//! Must never panic and never return more than the cap.
#![no_main]

use conflux_wire::compression::{decompress, Compression};

const OUT_SIZE_MAX_BYTES: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let codec = Compression::ALL[usize::from(selector) % Compression::ALL.len()];
    if let Ok(out) = decompress(codec, input, OUT_SIZE_MAX_BYTES) {
        assert!(out.len() <= OUT_SIZE_MAX_BYTES);
    }
});
