//! The record-validation hook: a protocol-agnostic check that a produce path runs on every
//! batch before it is appended (schema validation lives in `conflux-registry`, which
//! implements [`RecordValidator`] and registers it on the broker).

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::topic_config::TopicConfig;

/// Checks the record batches of one append. On failure it returns one `(record index, reason)`
/// per failing record; the whole append is then refused and nothing of it is stored.
pub trait RecordValidator: Send + Sync {
    fn validate(
        &self,
        topic: &str,
        config: &TopicConfig,
        batches: &Bytes,
    ) -> Result<(), Vec<(i32, String)>>;
}

/// The broker's one validator slot, shared by every topic; empty until a validator registers.
#[derive(Clone, Default)]
pub struct ValidatorSlot(Arc<RwLock<Option<Arc<dyn RecordValidator>>>>);

impl std::fmt::Debug for ValidatorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().is_some();
        f.debug_struct("ValidatorSlot").field("set", &set).finish()
    }
}

impl ValidatorSlot {
    pub fn set(&self, validator: Arc<dyn RecordValidator>) {
        *self.0.write() = Some(validator);
    }

    /// Runs the registered validator, if any.
    pub fn check(
        &self,
        topic: &str,
        config: &TopicConfig,
        batches: &Bytes,
    ) -> Result<(), Vec<(i32, String)>> {
        let validator = self.0.read().clone();
        match validator {
            Some(v) => v.validate(topic, config, batches),
            None => Ok(()),
        }
    }
}
