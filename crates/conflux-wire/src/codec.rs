//! Bounded primitive readers and writers for the Kafka wire format.
//!
//! `Reader` walks a `Bytes` buffer. Every length or count it reads is checked against the bytes
//! still remaining *before* anything is allocated, so a decode can never allocate more than a
//! small constant times its input. Byte fields are returned as zero-copy slices of the input.
//! Writers are free functions over `BufMut`, so they work on `BytesMut` and `Vec<u8>` alike.

use bytes::{Buf, BufMut, Bytes};
use uuid::Uuid;

/// Why a decode failed. Every variant is a client error: the server answers it (or closes the
/// connection) and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input: needed {needed} more bytes, {remaining} remaining")]
    Truncated { needed: usize, remaining: usize },
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("{count} elements of at least {min_size_bytes} bytes cannot fit in {remaining} bytes")]
    CountTooLarge {
        count: usize,
        min_size_bytes: usize,
        remaining: usize,
    },
    #[error("varint is longer than {0} bytes")]
    VarintTooLong(usize),
    #[error("null value in a non-nullable field {0}")]
    UnexpectedNull(&'static str),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("{0}")]
    Invalid(&'static str),
    /// The payload inflates past the allowed size: a decompression bomb, or a batch too large.
    #[error("decompressed size exceeds the limit of {size_bytes_max} bytes")]
    DecompressedTooLarge { size_bytes_max: usize },
}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// A cursor over an immutable byte buffer with bounded, non-panicking reads.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The unread rest of the buffer, without consuming it.
    pub fn peek_rest(&self) -> &Bytes {
        &self.buf
    }

    /// Consumes and returns everything left.
    pub fn take_rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated {
                needed: n,
                remaining: self.buf.remaining(),
            })
        } else {
            Ok(())
        }
    }

    pub fn i8(&mut self) -> Result<i8> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }
    pub fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.i8()? != 0)
    }
    pub fn i16(&mut self) -> Result<i16> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }
    pub fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    pub fn i32(&mut self) -> Result<i32> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    pub fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    pub fn i64(&mut self) -> Result<i64> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }
    pub fn f64(&mut self) -> Result<f64> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }
    pub fn uuid(&mut self) -> Result<Uuid> {
        self.need(16)?;
        let mut raw = [0u8; 16];
        self.buf.copy_to_slice(&mut raw);
        Ok(Uuid::from_bytes(raw))
    }

    /// Takes exactly `n` bytes as a zero-copy slice.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.need(n)?;
        self.buf.advance(n);
        Ok(())
    }

    /// Unsigned LEB128 varint of at most 5 bytes (u32).
    pub fn uvarint(&mut self) -> Result<u32> {
        let v = self.uvarlong_max(5)?;
        u32::try_from(v).map_err(|_| DecodeError::VarintTooLong(5))
    }

    /// Unsigned LEB128 varint of at most 10 bytes (u64).
    pub fn uvarlong(&mut self) -> Result<u64> {
        self.uvarlong_max(10)
    }

    fn uvarlong_max(&mut self, max_len: usize) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..max_len {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong(max_len))
    }

    /// Zig-zag signed varint (i32), as used inside records.
    pub fn varint(&mut self) -> Result<i32> {
        let v = self.uvarint()?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Zig-zag signed varlong (i64), as used inside records.
    pub fn varlong(&mut self) -> Result<i64> {
        let v = self.uvarlong()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Checks that `count` elements of at least `min_size_bytes` each can fit in what is left,
    /// so that a `Vec::with_capacity(count)` is bounded by the input size.
    pub fn check_count(&self, count: usize, min_size_bytes: usize) -> Result<usize> {
        let needed = count.saturating_mul(min_size_bytes.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::CountTooLarge {
                count,
                min_size_bytes,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    /// Length of a classic (non-compact) nullable item: `None` for -1, error for other negatives.
    fn nullable_len(len: i64) -> Result<Option<usize>> {
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::InvalidLength(n)),
            n => Ok(Some(n as usize)),
        }
    }

    /// Length of a compact item (uvarint of len + 1; 0 means null).
    fn compact_len(&mut self) -> Result<Option<usize>> {
        let raw = self.uvarint()?;
        Ok(if raw == 0 {
            None
        } else {
            Some(raw as usize - 1)
        })
    }

    fn utf8(bytes: Bytes) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }

    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = i64::from(self.i16()?);
        match Self::nullable_len(len)? {
            None => Ok(None),
            Some(n) => Ok(Some(Self::utf8(self.bytes(n)?)?)),
        }
    }
    pub fn string(&mut self, field: &'static str) -> Result<String> {
        self.nullable_string()?
            .ok_or(DecodeError::UnexpectedNull(field))
    }
    pub fn compact_nullable_string(&mut self) -> Result<Option<String>> {
        match self.compact_len()? {
            None => Ok(None),
            Some(n) => Ok(Some(Self::utf8(self.bytes(n)?)?)),
        }
    }
    pub fn compact_string(&mut self, field: &'static str) -> Result<String> {
        self.compact_nullable_string()?
            .ok_or(DecodeError::UnexpectedNull(field))
    }

    pub fn nullable_bytes(&mut self) -> Result<Option<Bytes>> {
        let len = i64::from(self.i32()?);
        match Self::nullable_len(len)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.bytes(n)?)),
        }
    }
    pub fn compact_nullable_bytes(&mut self) -> Result<Option<Bytes>> {
        match self.compact_len()? {
            None => Ok(None),
            Some(n) => Ok(Some(self.bytes(n)?)),
        }
    }

    /// Classic array length (i32, -1 = null), checked against the remaining bytes.
    pub fn array_len(&mut self, min_elem_size_bytes: usize) -> Result<Option<usize>> {
        let len = i64::from(self.i32()?);
        match Self::nullable_len(len)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.check_count(n, min_elem_size_bytes)?)),
        }
    }
    /// Compact array length (uvarint len + 1, 0 = null), checked against the remaining bytes.
    pub fn compact_array_len(&mut self, min_elem_size_bytes: usize) -> Result<Option<usize>> {
        match self.compact_len()? {
            None => Ok(None),
            Some(n) => Ok(Some(self.check_count(n, min_elem_size_bytes)?)),
        }
    }

    /// Reads one tagged-field header, returning `(tag, size)`; the caller decodes or skips
    /// `size` bytes. The size is checked against what remains.
    pub fn tagged_field_header(&mut self) -> Result<(u32, usize)> {
        let tag = self.uvarint()?;
        let size = self.uvarint()? as usize;
        self.need(size)?;
        Ok((tag, size))
    }

    /// Reads and discards a whole tagged-field section.
    pub fn skip_tagged_fields(&mut self) -> Result<()> {
        let count = self.uvarint()? as usize;
        // Each tagged field is at least two bytes (tag + size).
        self.check_count(count, 2)?;
        for _ in 0..count {
            let (_, size) = self.tagged_field_header()?;
            self.skip(size)?;
        }
        Ok(())
    }
}

/// Writers. All take `&mut impl BufMut`; none can fail.
pub mod write {
    use super::*;

    pub fn uvarint(buf: &mut impl BufMut, v: u32) {
        uvarlong(buf, u64::from(v));
    }
    pub fn uvarlong(buf: &mut impl BufMut, mut v: u64) {
        while v >= 0x80 {
            buf.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        buf.put_u8(v as u8);
    }
    pub fn varint(buf: &mut impl BufMut, v: i32) {
        uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
    }
    pub fn varlong(buf: &mut impl BufMut, v: i64) {
        uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
    }
    /// Number of bytes `uvarlong` would write.
    pub fn uvarlong_len(mut v: u64) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }
    pub fn varint_len(v: i32) -> usize {
        uvarlong_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
    }
    pub fn varlong_len(v: i64) -> usize {
        uvarlong_len(((v << 1) ^ (v >> 63)) as u64)
    }

    pub fn uuid(buf: &mut impl BufMut, v: &Uuid) {
        buf.put_slice(v.as_bytes());
    }

    pub fn nullable_string(buf: &mut impl BufMut, v: Option<&str>) {
        match v {
            None => buf.put_i16(-1),
            Some(s) => {
                buf.put_i16(s.len() as i16);
                buf.put_slice(s.as_bytes());
            }
        }
    }
    pub fn compact_nullable_string(buf: &mut impl BufMut, v: Option<&str>) {
        match v {
            None => uvarint(buf, 0),
            Some(s) => {
                uvarint(buf, s.len() as u32 + 1);
                buf.put_slice(s.as_bytes());
            }
        }
    }
    pub fn nullable_bytes(buf: &mut impl BufMut, v: Option<&[u8]>) {
        match v {
            None => buf.put_i32(-1),
            Some(b) => {
                buf.put_i32(b.len() as i32);
                buf.put_slice(b);
            }
        }
    }
    pub fn compact_nullable_bytes(buf: &mut impl BufMut, v: Option<&[u8]>) {
        match v {
            None => uvarint(buf, 0),
            Some(b) => {
                uvarint(buf, b.len() as u32 + 1);
                buf.put_slice(b);
            }
        }
    }
    /// Classic array length; `None` writes the null marker -1.
    pub fn array_len(buf: &mut impl BufMut, len: Option<usize>) {
        buf.put_i32(len.map_or(-1, |n| n as i32));
    }
    /// Compact array length; `None` writes the null marker 0.
    pub fn compact_array_len(buf: &mut impl BufMut, len: Option<usize>) {
        uvarint(buf, len.map_or(0, |n| n as u32 + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn reader(b: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(b))
    }

    proptest! {
        #[test]
        fn varints_round_trip(a: i32, b: i64, c: u32, d: u64) {
            let mut buf = BytesMut::new();
            write::varint(&mut buf, a);
            write::varlong(&mut buf, b);
            write::uvarint(&mut buf, c);
            write::uvarlong(&mut buf, d);
            prop_assert_eq!(buf.len(), write::varint_len(a) + write::varlong_len(b)
                + write::uvarlong_len(u64::from(c)) + write::uvarlong_len(d));
            let mut r = Reader::new(buf.freeze());
            prop_assert_eq!(r.varint().unwrap(), a);
            prop_assert_eq!(r.varlong().unwrap(), b);
            prop_assert_eq!(r.uvarint().unwrap(), c);
            prop_assert_eq!(r.uvarlong().unwrap(), d);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn reads_never_panic(data: Vec<u8>) {
            let mut r = reader(&data);
            let _ = r.compact_nullable_string();
            let _ = r.nullable_bytes();
            let _ = r.array_len(4);
            let _ = r.skip_tagged_fields();
            let _ = r.varlong();
        }
    }

    #[test]
    fn huge_array_count_is_rejected_before_allocation() {
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(
            r.array_len(4),
            Err(DecodeError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn negative_lengths_other_than_null_are_invalid() {
        assert_eq!(
            reader(&[0xff, 0xfe]).nullable_string(),
            Err(DecodeError::InvalidLength(-2))
        );
        assert_eq!(reader(&[0xff, 0xff]).nullable_string(), Ok(None));
        assert!(reader(&[0, 5, b'a']).nullable_string().is_err());
    }

    #[test]
    fn overlong_varint_is_rejected() {
        assert_eq!(
            reader(&[0x80; 11]).uvarlong(),
            Err(DecodeError::VarintTooLong(10))
        );
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff, 0x7f]).uvarint(),
            Err(DecodeError::VarintTooLong(5))
        );
    }
}
