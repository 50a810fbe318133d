//! Kafka's record batch compression codecs (gzip, snappy, lz4, zstd), with a hard cap on how far
//! untrusted input may inflate.
//!
//! A few bytes of compressed input can inflate to gigabytes. Every decoder here therefore streams
//! into an output buffer that is never grown past `out_size_max_bytes`; one byte more is an error
//! ([`DecodeError::DecompressedTooLarge`], a "decompression bomb"), reported before the memory is
//! allocated. Besides the output buffer, decoders use bounded scratch space that does not depend
//! on the input: lz4 frames up to ~3 × their block size (at most 12 MiB for 4 MiB blocks), zstd
//! a window of at most `2^ZSTD_WINDOW_LOG_FLOOR` bytes unless the cap itself is larger.
//!
//! Wire formats follow what real clients send:
//! - gzip: RFC 1952 members (concatenated members are accepted, as Java's `GZIPInputStream` does).
//! - snappy: raw snappy blocks (librdkafka) *or* xerial framing (Java client): magic
//!   `\x82SNAPPY\0`, version and compat i32s, then `[i32 length][raw block]`… We write xerial.
//! - lz4: the standard LZ4 frame format (magic v2 batches use correct header checksums).
//! - zstd: standard zstd frames.

use std::io::{self, Read, Write};

use crate::codec::DecodeError;

/// The codec named by the low three attribute bits of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec for an attribute id (0..=4); anything else is an error the client must hear.
    pub fn from_id(id: u8) -> Result<Self, DecodeError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(DecodeError::Invalid(
                "unknown compression codec in batch attributes",
            )),
        }
    }

    /// The id stored in the batch attributes.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name used by Kafka configs (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses a `compression.type` name (`uncompressed` is Kafka's alias for `none`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" | "uncompressed" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    fn corrupt(self) -> DecodeError {
        DecodeError::Invalid(match self {
            Compression::None => "corrupt uncompressed data",
            Compression::Gzip => "corrupt gzip data",
            Compression::Snappy => "corrupt snappy data",
            Compression::Lz4 => "corrupt lz4 data",
            Compression::Zstd => "corrupt zstd data",
        })
    }
}

/// Smallest zstd window log we allow regardless of the cap: level 19 streams (Java's
/// `compression.zstd.level` up to 19) use up to 2^23-byte windows when the size is not pledged.
pub const ZSTD_WINDOW_LOG_FLOOR: u32 = 23;
/// zstd's own default maximum window log for decoding.
const ZSTD_WINDOW_LOG_CEILING: u32 = 27;
/// Read granularity of the streaming decoders.
const CHUNK_SIZE_BYTES: usize = 16 * 1024;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_SIZE_BYTES: usize = 16;
/// Uncompressed bytes per xerial block, as the Java client's `SnappyOutputStream` writes them.
const XERIAL_BLOCK_SIZE_BYTES: usize = 32 * 1024;

/// Decompresses `input`, failing with [`DecodeError::DecompressedTooLarge`] as soon as the output
/// would exceed `out_size_max_bytes`. Never panics; memory use is bounded by the cap plus a
/// codec-specific constant (see the module docs).
pub fn decompress(
    codec: Compression,
    input: &[u8],
    out_size_max_bytes: usize,
) -> Result<Vec<u8>, DecodeError> {
    match codec {
        Compression::None => {
            if input.len() > out_size_max_bytes {
                return Err(DecodeError::DecompressedTooLarge {
                    size_bytes_max: out_size_max_bytes,
                });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_capped(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            input.len(),
            out_size_max_bytes,
        ),
        Compression::Snappy => snappy_decompress(input, out_size_max_bytes),
        Compression::Lz4 => read_capped(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            input.len(),
            out_size_max_bytes,
        ),
        Compression::Zstd => zstd_decompress(input, out_size_max_bytes),
    }
}

/// Compresses `input` the way the Java client would (xerial framing for snappy, LZ4 frames,
/// default levels).
pub fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    let out = match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(input).and_then(|()| encoder.finish())
        }
        Compression::Snappy => Ok(snappy_compress_xerial(input)),
        Compression::Lz4 => {
            // 64 KiB independent blocks, no checksums: the frame layout Java and librdkafka write.
            let frame =
                lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame, Vec::new());
            encoder
                .write_all(input)
                .and_then(|()| encoder.finish().map_err(io::Error::other))
        }
        Compression::Zstd => zstd::stream::encode_all(input, zstd::DEFAULT_COMPRESSION_LEVEL),
    };
    // Every encoder writes into a Vec, which cannot fail short of running out of memory.
    out.expect("compressing into a Vec cannot fail")
}

/// Streams `reader` into a Vec that never grows past `out_size_max_bytes`.
fn read_capped(
    codec: Compression,
    mut reader: impl Read,
    input_size_bytes: usize,
    out_size_max_bytes: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(input_size_bytes.saturating_mul(2).min(out_size_max_bytes));
    let mut chunk = [0u8; CHUNK_SIZE_BYTES];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(codec.corrupt()),
        };
        append_capped(&mut out, &chunk[..n], out_size_max_bytes)?;
    }
}

/// Appends `data`, growing geometrically but never reserving past the cap.
fn append_capped(
    out: &mut Vec<u8>,
    data: &[u8],
    out_size_max_bytes: usize,
) -> Result<(), DecodeError> {
    reserve_capped(out, data.len(), out_size_max_bytes)?;
    out.extend_from_slice(data);
    Ok(())
}

/// Makes room for `extra` more bytes; returns the new length. Errors if it would pass the cap.
fn reserve_capped(
    out: &mut Vec<u8>,
    extra: usize,
    out_size_max_bytes: usize,
) -> Result<usize, DecodeError> {
    let needed = out.len().saturating_add(extra);
    if needed > out_size_max_bytes {
        return Err(DecodeError::DecompressedTooLarge {
            size_bytes_max: out_size_max_bytes,
        });
    }
    if needed > out.capacity() {
        let target = needed
            .max(out.capacity().saturating_mul(2))
            .min(out_size_max_bytes);
        out.reserve_exact(target - out.len());
    }
    Ok(needed)
}

fn snappy_decompress(input: &[u8], out_size_max_bytes: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    if input.len() >= XERIAL_HEADER_SIZE_BYTES && input[..8] == XERIAL_MAGIC {
        let mut rest = &input[XERIAL_HEADER_SIZE_BYTES..];
        while !rest.is_empty() {
            let (block, after) = xerial_block(rest)?;
            snappy_raw_append(&mut out, block, out_size_max_bytes)?;
            rest = after;
        }
    } else {
        snappy_raw_append(&mut out, input, out_size_max_bytes)?;
    }
    Ok(out)
}

/// Splits one `[i32 length][block]` xerial chunk off `input`.
fn xerial_block(input: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let Some((len_raw, rest)) = input.split_first_chunk::<4>() else {
        return Err(DecodeError::Truncated {
            needed: 4,
            remaining: input.len(),
        });
    };
    let len = i32::from_be_bytes(*len_raw);
    let len = usize::try_from(len).map_err(|_| DecodeError::InvalidLength(i64::from(len)))?;
    if len > rest.len() {
        return Err(DecodeError::Truncated {
            needed: len,
            remaining: rest.len(),
        });
    }
    Ok(rest.split_at(len))
}

/// Decompresses one raw snappy block onto the end of `out`, checking its declared length
/// against the cap before allocating.
fn snappy_raw_append(
    out: &mut Vec<u8>,
    block: &[u8],
    out_size_max_bytes: usize,
) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(block).map_err(|_| Compression::Snappy.corrupt())?;
    let start = out.len();
    let end = reserve_capped(out, len, out_size_max_bytes)?;
    out.resize(end, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| Compression::Snappy.corrupt())?;
    if written != len {
        return Err(Compression::Snappy.corrupt());
    }
    Ok(())
}

fn snappy_compress_xerial(input: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(XERIAL_HEADER_SIZE_BYTES + snap::raw::max_compress_len(input.len()));
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
    let mut encoder = snap::raw::Encoder::new();
    let mut block = vec![0u8; snap::raw::max_compress_len(XERIAL_BLOCK_SIZE_BYTES)];
    for chunk in input.chunks(XERIAL_BLOCK_SIZE_BYTES) {
        let n = encoder
            .compress(chunk, &mut block)
            .expect("block buffer is max_compress_len sized");
        out.extend_from_slice(&(n as i32).to_be_bytes());
        out.extend_from_slice(&block[..n]);
    }
    out
}

fn zstd_decompress(input: &[u8], out_size_max_bytes: usize) -> Result<Vec<u8>, DecodeError> {
    let corrupt = Compression::Zstd.corrupt();
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(input).map_err(|_| corrupt.clone())?;
    decoder
        .window_log_max(zstd_window_log_max(out_size_max_bytes))
        .map_err(|_| corrupt)?;
    read_capped(Compression::Zstd, decoder, input.len(), out_size_max_bytes)
}

/// No window needs to be larger than the whole output, but producers that do not pledge their
/// size use the level's default window, so a floor keeps them decodable.
fn zstd_window_log_max(out_size_max_bytes: usize) -> u32 {
    let log = usize::BITS - out_size_max_bytes.saturating_sub(1).leading_zeros();
    log.clamp(ZSTD_WINDOW_LOG_FLOOR, ZSTD_WINDOW_LOG_CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: usize = 1024 * 1024;

    proptest! {
        #[test]
        fn round_trips_every_codec(data in proptest::collection::vec(any::<u8>(), 0..100_000)) {
            for codec in Compression::ALL {
                let packed = compress(codec, &data);
                prop_assert_eq!(&decompress(codec, &packed, data.len()).unwrap(), &data);
                if !data.is_empty() {
                    let too_small = decompress(codec, &packed, data.len() - 1);
                    let is_bomb = matches!(too_small, Err(DecodeError::DecompressedTooLarge { .. }));
                    prop_assert!(is_bomb, "{:?} with a cap one byte short", codec);
                }
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2_000)) {
            for codec in Compression::ALL {
                let _ = decompress(codec, &data, 64 * 1024);
            }
        }

        #[test]
        fn truncated_and_flipped_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..5_000),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            for codec in Compression::ALL {
                let mut packed = compress(codec, &data);
                let _ = decompress(codec, &packed[..cut.index(packed.len() + 1)], 64 * 1024);
                let at = flip.index(packed.len());
                packed[at] ^= 0x5a;
                if let Ok(out) = decompress(codec, &packed, 64 * 1024) {
                    prop_assert!(out.len() <= 64 * 1024);
                }
            }
        }
    }

    #[test]
    fn bombs_are_rejected_for_every_codec() {
        let zeros = vec![0u8; 100 * MIB];
        for codec in Compression::ALL {
            let packed = compress(codec, &zeros);
            assert_eq!(
                decompress(codec, &packed, MIB),
                Err(DecodeError::DecompressedTooLarge {
                    size_bytes_max: MIB
                }),
                "{codec:?} compressed {} bytes",
                packed.len()
            );
        }
    }

    #[test]
    fn lz4_frames_use_the_kafka_client_layout() {
        let framed = compress(Compression::Lz4, &[1u8; 200_000]);
        // Magic, then FLG 0x60 (version 1, independent blocks) and BD 0x40 (64 KiB blocks).
        assert_eq!(&framed[..6], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40]);
    }

    #[test]
    fn raw_snappy_is_accepted_too() {
        let data = b"hello hello hello hello, raw snappy as librdkafka writes it".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn raw_snappy_declared_length_is_checked_before_allocating() {
        // A varint declaring ~4 GiB of output followed by nothing.
        let raw = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            decompress(Compression::Snappy, &raw, MIB),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn xerial_chunk_lengths_are_checked() {
        let mut framed = compress(Compression::Snappy, b"abc");
        framed[XERIAL_HEADER_SIZE_BYTES..XERIAL_HEADER_SIZE_BYTES + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decompress(Compression::Snappy, &framed, MIB),
            Err(DecodeError::Truncated { .. })
        ));
        framed[XERIAL_HEADER_SIZE_BYTES..XERIAL_HEADER_SIZE_BYTES + 4]
            .copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            decompress(Compression::Snappy, &framed, MIB),
            Err(DecodeError::InvalidLength(-5))
        );
    }

    #[test]
    fn xerial_framing_matches_the_java_layout() {
        let framed = compress(Compression::Snappy, &[7u8; 70_000]);
        assert_eq!(&framed[..8], &XERIAL_MAGIC);
        assert_eq!(&framed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 70_000).unwrap(),
            vec![7u8; 70_000]
        );
    }

    #[test]
    fn codec_ids_and_names() {
        for codec in Compression::ALL {
            assert_eq!(Compression::from_id(codec.id()), Ok(codec));
            assert_eq!(Compression::from_name(codec.name()), Some(codec));
        }
        assert!(Compression::from_id(5).is_err());
        assert_eq!(
            Compression::from_name("uncompressed"),
            Some(Compression::None)
        );
    }

    #[test]
    fn zstd_window_grows_with_the_cap_within_bounds() {
        assert_eq!(zstd_window_log_max(0), ZSTD_WINDOW_LOG_FLOOR);
        assert_eq!(zstd_window_log_max(2 * MIB), ZSTD_WINDOW_LOG_FLOOR);
        assert_eq!(zstd_window_log_max(64 * MIB), 26);
        assert_eq!(zstd_window_log_max(usize::MAX), ZSTD_WINDOW_LOG_CEILING);
    }
}
