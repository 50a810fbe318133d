//! Field-level wire encoding used by the generated Kafka message code.
//!
//! Every Rust type a generated message field can have implements [`Field`]: how to read, write
//! and size it in a given version, in classic or flexible ("compact") encoding, and a lower bound
//! of its encoded size. That lower bound is what array counts are checked against before any
//! allocation, so a decode stays bounded by its input. Types that can be null on the wire also
//! implement [`Nullable`]; generated structs use its default methods (an `i8` presence marker).
//!
//! Keeping these generic lets the generated code stay a thin list of field calls, which keeps
//! its compile time down.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::codec::{write, DecodeError, Reader};

/// Upper bound of the bytes pre-allocated for one array before its elements are read. Larger
/// arrays grow as elements actually decode, so memory stays proportional to the input.
const PREALLOC_BYTES_MAX: usize = 64 * 1024;

/// A value that can be a field of a Kafka message.
pub trait Field: Sized {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError>;
    fn write(&self, buf: &mut BytesMut, version: i16, flexible: bool);
    fn wire_len(&self, version: i16, flexible: bool) -> usize;
    /// A lower bound of the encoded size of any value of this type in this version.
    fn min_len(version: i16, flexible: bool) -> usize;
}

/// A field type that may be null in some versions. The default methods are the encoding of a
/// nullable struct: an `i8` marker (-1 null, 1 present) before the struct.
pub trait Nullable: Field + Default {
    fn read_nullable(
        r: &mut Reader,
        version: i16,
        flexible: bool,
    ) -> Result<Option<Self>, DecodeError> {
        if r.i8()? < 0 {
            Ok(None)
        } else {
            Ok(Some(Self::read(r, version, flexible)?))
        }
    }
    fn write_some(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        buf.put_i8(1);
        self.write(buf, version, flexible);
    }
    fn some_len(&self, version: i16, flexible: bool) -> usize {
        1 + self.wire_len(version, flexible)
    }
    fn write_null(buf: &mut BytesMut, _flexible: bool) {
        buf.put_i8(-1);
    }
    fn null_len(_flexible: bool) -> usize {
        1
    }
}

macro_rules! fixed {
    ($ty:ty, $read:ident, $put:ident, $len:expr) => {
        impl Field for $ty {
            fn read(r: &mut Reader, _version: i16, _flexible: bool) -> Result<Self, DecodeError> {
                r.$read()
            }
            fn write(&self, buf: &mut BytesMut, _version: i16, _flexible: bool) {
                buf.$put(*self);
            }
            fn wire_len(&self, _version: i16, _flexible: bool) -> usize {
                $len
            }
            fn min_len(_version: i16, _flexible: bool) -> usize {
                $len
            }
        }
    };
}

fixed!(i8, i8, put_i8, 1);
fixed!(i16, i16, put_i16, 2);
fixed!(u16, u16, put_u16, 2);
fixed!(i32, i32, put_i32, 4);
fixed!(u32, u32, put_u32, 4);
fixed!(i64, i64, put_i64, 8);
fixed!(f64, f64, put_f64, 8);

impl Field for bool {
    fn read(r: &mut Reader, _version: i16, _flexible: bool) -> Result<Self, DecodeError> {
        r.bool()
    }
    fn write(&self, buf: &mut BytesMut, _version: i16, _flexible: bool) {
        buf.put_u8(u8::from(*self));
    }
    fn wire_len(&self, _version: i16, _flexible: bool) -> usize {
        1
    }
    fn min_len(_version: i16, _flexible: bool) -> usize {
        1
    }
}

impl Field for Uuid {
    fn read(r: &mut Reader, _version: i16, _flexible: bool) -> Result<Self, DecodeError> {
        r.uuid()
    }
    fn write(&self, buf: &mut BytesMut, _version: i16, _flexible: bool) {
        write::uuid(buf, self);
    }
    fn wire_len(&self, _version: i16, _flexible: bool) -> usize {
        16
    }
    fn min_len(_version: i16, _flexible: bool) -> usize {
        16
    }
}

/// Encoded size of a length prefix: compact (uvarint of len + 1) or classic (`classic` bytes).
fn prefix_len(len: Option<usize>, flexible: bool, classic: usize) -> usize {
    if flexible {
        write::uvarlong_len(len.map_or(0, |n| n as u64 + 1))
    } else {
        classic
    }
}

impl Field for String {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        Self::read_nullable(r, version, flexible)?.ok_or(DecodeError::UnexpectedNull("string"))
    }
    fn write(&self, buf: &mut BytesMut, _version: i16, flexible: bool) {
        if flexible {
            write::compact_nullable_string(buf, Some(self));
        } else {
            write::nullable_string(buf, Some(self));
        }
    }
    fn wire_len(&self, _version: i16, flexible: bool) -> usize {
        prefix_len(Some(self.len()), flexible, 2) + self.len()
    }
    fn min_len(_version: i16, flexible: bool) -> usize {
        prefix_len(Some(0), flexible, 2)
    }
}

impl Nullable for String {
    fn read_nullable(
        r: &mut Reader,
        _version: i16,
        flexible: bool,
    ) -> Result<Option<Self>, DecodeError> {
        if flexible {
            r.compact_nullable_string()
        } else {
            r.nullable_string()
        }
    }
    fn write_some(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        self.write(buf, version, flexible);
    }
    fn some_len(&self, version: i16, flexible: bool) -> usize {
        self.wire_len(version, flexible)
    }
    fn write_null(buf: &mut BytesMut, flexible: bool) {
        if flexible {
            write::compact_nullable_string(buf, None);
        } else {
            write::nullable_string(buf, None);
        }
    }
    fn null_len(flexible: bool) -> usize {
        prefix_len(None, flexible, 2)
    }
}

impl Field for Bytes {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        Self::read_nullable(r, version, flexible)?.ok_or(DecodeError::UnexpectedNull("bytes"))
    }
    fn write(&self, buf: &mut BytesMut, _version: i16, flexible: bool) {
        if flexible {
            write::compact_nullable_bytes(buf, Some(self));
        } else {
            write::nullable_bytes(buf, Some(self));
        }
    }
    fn wire_len(&self, _version: i16, flexible: bool) -> usize {
        prefix_len(Some(self.len()), flexible, 4) + self.len()
    }
    fn min_len(_version: i16, flexible: bool) -> usize {
        prefix_len(Some(0), flexible, 4)
    }
}

impl Nullable for Bytes {
    fn read_nullable(
        r: &mut Reader,
        _version: i16,
        flexible: bool,
    ) -> Result<Option<Self>, DecodeError> {
        if flexible {
            r.compact_nullable_bytes()
        } else {
            r.nullable_bytes()
        }
    }
    fn write_some(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        self.write(buf, version, flexible);
    }
    fn some_len(&self, version: i16, flexible: bool) -> usize {
        self.wire_len(version, flexible)
    }
    fn write_null(buf: &mut BytesMut, flexible: bool) {
        if flexible {
            write::compact_nullable_bytes(buf, None);
        } else {
            write::nullable_bytes(buf, None);
        }
    }
    fn null_len(flexible: bool) -> usize {
        prefix_len(None, flexible, 4)
    }
}

/// Reads `count` elements; `count` has already been checked against the remaining input.
fn read_elements<T: Field>(
    r: &mut Reader,
    count: usize,
    version: i16,
    flexible: bool,
) -> Result<Vec<T>, DecodeError> {
    let prealloc = count.min(PREALLOC_BYTES_MAX / std::mem::size_of::<T>().max(1));
    let mut out = Vec::with_capacity(prealloc);
    for _ in 0..count {
        out.push(T::read(r, version, flexible)?);
    }
    Ok(out)
}

impl<T: Field> Field for Vec<T> {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        Self::read_nullable(r, version, flexible)?.ok_or(DecodeError::UnexpectedNull("array"))
    }
    fn write(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        if flexible {
            write::compact_array_len(buf, Some(self.len()));
        } else {
            write::array_len(buf, Some(self.len()));
        }
        for item in self {
            item.write(buf, version, flexible);
        }
    }
    fn wire_len(&self, version: i16, flexible: bool) -> usize {
        let items: usize = self
            .iter()
            .map(|item| item.wire_len(version, flexible))
            .sum();
        prefix_len(Some(self.len()), flexible, 4) + items
    }
    fn min_len(_version: i16, flexible: bool) -> usize {
        prefix_len(Some(0), flexible, 4)
    }
}

impl<T: Field> Nullable for Vec<T> {
    fn read_nullable(
        r: &mut Reader,
        version: i16,
        flexible: bool,
    ) -> Result<Option<Self>, DecodeError> {
        let min_elem_size_bytes = T::min_len(version, flexible);
        let count = if flexible {
            r.compact_array_len(min_elem_size_bytes)?
        } else {
            r.array_len(min_elem_size_bytes)?
        };
        match count {
            None => Ok(None),
            Some(count) => Ok(Some(read_elements(r, count, version, flexible)?)),
        }
    }
    fn write_some(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        self.write(buf, version, flexible);
    }
    fn some_len(&self, version: i16, flexible: bool) -> usize {
        self.wire_len(version, flexible)
    }
    fn write_null(buf: &mut BytesMut, flexible: bool) {
        if flexible {
            write::compact_array_len(buf, None);
        } else {
            write::array_len(buf, None);
        }
    }
    fn null_len(flexible: bool) -> usize {
        prefix_len(None, flexible, 4)
    }
}

/// An `Option` field that is nullable in every version it is used in (tagged fields).
impl<T: Nullable> Field for Option<T> {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        T::read_nullable(r, version, flexible)
    }
    fn write(&self, buf: &mut BytesMut, version: i16, flexible: bool) {
        write_opt(self, buf, version, flexible, true);
    }
    fn wire_len(&self, version: i16, flexible: bool) -> usize {
        opt_len(self, version, flexible, true)
    }
    fn min_len(version: i16, flexible: bool) -> usize {
        opt_min_len::<T>(version, flexible, true)
    }
}

/// Reads an `Option` field; `nullable` says whether this version allows null. A field that is
/// not nullable in this version has no null marker (and null is an error).
pub fn read_opt<T: Nullable>(
    r: &mut Reader,
    version: i16,
    flexible: bool,
    nullable: bool,
) -> Result<Option<T>, DecodeError> {
    if nullable {
        T::read_nullable(r, version, flexible)
    } else {
        Ok(Some(T::read(r, version, flexible)?))
    }
}

/// Writes an `Option` field. `None` in a version where the field is not nullable cannot be
/// represented; it is written as the type's default (empty) value rather than panicking.
pub fn write_opt<T: Nullable>(
    v: &Option<T>,
    buf: &mut BytesMut,
    version: i16,
    flexible: bool,
    nullable: bool,
) {
    match (v, nullable) {
        (Some(v), true) => v.write_some(buf, version, flexible),
        (None, true) => T::write_null(buf, flexible),
        (Some(v), false) => v.write(buf, version, flexible),
        (None, false) => T::default().write(buf, version, flexible),
    }
}

pub fn opt_len<T: Nullable>(v: &Option<T>, version: i16, flexible: bool, nullable: bool) -> usize {
    match (v, nullable) {
        (Some(v), true) => v.some_len(version, flexible),
        (None, true) => T::null_len(flexible),
        (Some(v), false) => v.wire_len(version, flexible),
        (None, false) => T::default().wire_len(version, flexible),
    }
}

pub fn opt_min_len<T: Nullable>(version: i16, flexible: bool, nullable: bool) -> usize {
    let present = T::min_len(version, flexible);
    if nullable {
        present.min(T::null_len(flexible))
    } else {
        present
    }
}

/// Fails with `UnsupportedVersion` unless `version` is within `versions` (inclusive).
pub fn check_version(api_key: i16, versions: (i16, i16), version: i16) -> Result<(), DecodeError> {
    if version < versions.0 || version > versions.1 {
        return Err(DecodeError::UnsupportedVersion { api_key, version });
    }
    Ok(())
}

/// Reads a tagged-field section. `known` decodes a tag it knows from a reader over exactly that
/// field's bytes and returns `true`; tags it does not know are returned raw, in wire order.
pub fn read_tagged(
    r: &mut Reader,
    mut known: impl FnMut(u32, &mut Reader) -> Result<bool, DecodeError>,
) -> Result<Vec<(u32, Bytes)>, DecodeError> {
    let count = r.uvarint()? as usize;
    // Each tagged field takes at least two bytes (tag and size).
    r.check_count(count, 2)?;
    let mut unknown = Vec::new();
    for _ in 0..count {
        let (tag, size) = r.tagged_field_header()?;
        let data = r.bytes(size)?;
        let mut sub = Reader::new(data.clone());
        if !known(tag, &mut sub)? {
            unknown.push((tag, data));
        }
    }
    Ok(unknown)
}

/// Writes one known tagged field (always in flexible encoding).
pub fn write_tagged<T: Field>(buf: &mut BytesMut, tag: u32, value: &T, version: i16) {
    write::uvarint(buf, tag);
    write::uvarint(buf, value.wire_len(version, true) as u32);
    value.write(buf, version, true);
}

pub fn tagged_len<T: Field>(tag: u32, value: &T, version: i16) -> usize {
    let size = value.wire_len(version, true);
    write::uvarlong_len(u64::from(tag)) + write::uvarlong_len(size as u64) + size
}

/// Writes the unknown tagged fields from index `from` whose tag is below `below`, so that known
/// and unknown fields come out in ascending tag order. Returns the index of the next unwritten.
pub fn write_unknown_below(
    buf: &mut BytesMut,
    unknown: &[(u32, Bytes)],
    mut from: usize,
    below: u64,
) -> usize {
    while let Some((tag, data)) = unknown.get(from) {
        if u64::from(*tag) >= below {
            break;
        }
        write::uvarint(buf, *tag);
        write::uvarint(buf, data.len() as u32);
        buf.put_slice(data);
        from += 1;
    }
    from
}

pub fn unknown_len(unknown: &[(u32, Bytes)]) -> usize {
    unknown
        .iter()
        .map(|(tag, data)| {
            write::uvarlong_len(u64::from(*tag))
                + write::uvarlong_len(data.len() as u64)
                + data.len()
        })
        .sum()
}

/// Random, version-valid values for round-trip tests of the generated code.
#[cfg(test)]
pub(crate) mod arb {
    use super::*;

    /// A small deterministic generator (SplitMix64); proptest supplies the seed.
    pub struct Gen(u64);

    impl Gen {
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
    }

    pub trait Arb {
        fn arb(g: &mut Gen, version: i16) -> Self;
    }

    macro_rules! arb_int {
        ($($ty:ty),*) => {$(
            impl Arb for $ty {
                fn arb(g: &mut Gen, _version: i16) -> Self {
                    // Mix small values (common defaults) with full-range ones.
                    match g.below(4) {
                        0 => 0,
                        1 => (g.below(3) as $ty).wrapping_sub(1),
                        _ => g.next_u64() as $ty,
                    }
                }
            }
        )*};
    }
    arb_int!(i8, i16, u16, i32, u32, i64);

    impl Arb for f64 {
        fn arb(g: &mut Gen, _version: i16) -> Self {
            (g.next_u64() as i64 as f64) / 1024.0
        }
    }
    impl Arb for bool {
        fn arb(g: &mut Gen, _version: i16) -> Self {
            g.below(2) == 1
        }
    }
    impl Arb for Uuid {
        fn arb(g: &mut Gen, _version: i16) -> Self {
            if g.below(3) == 0 {
                Uuid::nil()
            } else {
                Uuid::from_u64_pair(g.next_u64(), g.next_u64())
            }
        }
    }
    impl Arb for String {
        fn arb(g: &mut Gen, _version: i16) -> Self {
            let n = g.below(6);
            (0..n)
                .map(|_| ['a', 'Z', '0', '-', 'é', '€'][g.below(6) as usize])
                .collect()
        }
    }
    impl Arb for Bytes {
        fn arb(g: &mut Gen, _version: i16) -> Self {
            let n = g.below(12);
            (0..n)
                .map(|_| g.next_u64() as u8)
                .collect::<Vec<u8>>()
                .into()
        }
    }
    impl<T: Arb> Arb for Vec<T> {
        fn arb(g: &mut Gen, version: i16) -> Self {
            let n = g.below(3);
            (0..n).map(|_| T::arb(g, version)).collect()
        }
    }
    impl<T: Arb> Arb for Option<T> {
        fn arb(g: &mut Gen, version: i16) -> Self {
            if g.below(4) == 0 {
                None
            } else {
                Some(T::arb(g, version))
            }
        }
    }

    /// Unknown tagged fields with tags far above any known tag, in ascending order.
    pub fn unknown_tagged(g: &mut Gen) -> Vec<(u32, Bytes)> {
        let n = if g.below(3) == 0 { g.below(3) } else { 0 };
        (0..n)
            .map(|i| (10_000 + i as u32 * 7, Bytes::arb(g, 0)))
            .collect()
    }

    /// Encodes a random value of `M` in every version, checks `encoded_len`, decodes it back
    /// and re-encodes it byte for byte. With `adversarial`, also checks that every strict prefix
    /// of the encoding fails to decode and that corrupted copies decode without panicking.
    pub fn round_trip<M>(seed: u64, adversarial: bool)
    where
        M: crate::protocol::Message + Arb + PartialEq + std::fmt::Debug,
    {
        let mut g = Gen::new(seed);
        for version in M::VERSIONS.0..=M::VERSIONS.1 {
            let value = M::arb(&mut g, version);
            let mut buf = BytesMut::new();
            value.encode(&mut buf, version);
            assert_eq!(
                buf.len(),
                value.encoded_len(version),
                "encoded_len v{version} {value:?}"
            );
            let bytes = buf.freeze();
            let mut r = Reader::new(bytes.clone());
            let decoded = M::decode(&mut r, version)
                .unwrap_or_else(|e| panic!("decode v{version} failed: {e}: {value:?}"));
            assert!(
                r.is_empty(),
                "v{version}: {} bytes left over",
                r.remaining()
            );
            assert_eq!(decoded, value, "v{version}");
            let mut again = BytesMut::new();
            decoded.encode(&mut again, version);
            assert_eq!(again.freeze(), bytes, "v{version} re-encode");
            if adversarial {
                check_adversarial::<M>(&mut g, &bytes, version);
            }
        }
    }

    fn check_adversarial<M: crate::protocol::Message>(g: &mut Gen, bytes: &Bytes, version: i16) {
        for len in 0..bytes.len() {
            let prefix = bytes.slice(..len);
            let result = M::decode(&mut Reader::new(prefix), version);
            assert!(result.is_err(), "v{version}: a {len}-byte prefix decoded");
        }
        for _ in 0..16 {
            let mut corrupt = bytes.to_vec();
            if corrupt.is_empty() {
                break;
            }
            for _ in 0..=g.below(3) {
                let at = g.below(corrupt.len() as u64) as usize;
                corrupt[at] = match g.below(3) {
                    0 => 0xff,
                    1 => 0x7f,
                    _ => g.next_u64() as u8,
                };
            }
            let _ = M::decode(&mut Reader::new(Bytes::from(corrupt)), version);
        }
    }
}
