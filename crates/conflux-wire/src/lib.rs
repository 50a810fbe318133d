//! Sans-IO wire codecs: Kafka protocol messages, record batch v2, compression codecs and varints.
//!
//! Invariants: no I/O, no async runtime; decoding never panics on any input and never allocates
//! more than a small constant times the bytes it was given (every length and count read from the
//! wire is checked against the bytes remaining before anything is allocated).

pub mod batch;
pub mod codec;
pub mod compression;
pub mod field;
pub mod generated;
pub mod protocol;
pub mod records;

pub use codec::{DecodeError, Reader};
pub use generated::{ApiKey, RequestBody, ResponseBody};
pub use protocol::{
    decode_request, decode_response, decode_versioned, encode_request, encode_response,
    encode_versioned, request_header_version, response_header_version, Message, Request,
    RequestError, RequestErrorKind, Response,
};

#[cfg(test)]
mod generated_tests;
