//! Fuzzes the record batch path a Produce request takes: split batches off a buffer, check each
//! CRC, decode the records (any codec, with a small decompression cap). Must never panic.
#![no_main]

use bytes::Bytes;
use conflux_wire::batch::{split_batch, verify_crc};
use conflux_wire::records::{decode_control, decode_records};

/// Small, so that bombs are hit quickly and memory stays low.
const DECOMPRESSED_SIZE_MAX_BYTES: usize = 64 * 1024;
const BATCHES_MAX: usize = 64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = Bytes::copy_from_slice(data);
    for _ in 0..BATCHES_MAX {
        let Ok(Some((header, batch))) = split_batch(&mut buf) else {
            return;
        };
        // Decode whether or not the CRC holds: the fuzzer rarely forges a valid CRC, and the
        // decoder must be safe on any bytes anyway.
        let _ = verify_crc(&batch);
        if let Ok(records) = decode_records(&batch, DECOMPRESSED_SIZE_MAX_BYTES) {
            assert_eq!(records.len(), header.record_count as usize);
            if header.is_control() {
                for record in &records {
                    let _ = decode_control(record);
                }
            }
        }
    }
});
