//! Confluent-compatible schema registry: the REST API (`http`), schema parsing for Avro, JSON
//! Schema and Protobuf (`schema`), compatibility rules (`compat`), storage in the internal
//! compacted topic `_schemas` (`store`), and broker-side record validation (`validator`).
//!
//! Invariant: every change is appended to `_schemas` before it becomes visible, so a restart
//! replays exactly what clients were told; schema ids are global and content-addressed (the
//! same schema always gets the same id).

pub mod compat;
pub mod error;
pub mod http;
pub mod schema;
pub mod store;
pub mod validator;

pub use error::RegistryError;
pub use http::serve;
pub use store::{Registry, SCHEMAS_TOPIC};
pub use validator::SchemaValidator;
