//! Errors of the admin API: a stable `error_code`, a human message, and the HTTP status, sent
//! as `{"error_code": "...", "message": "..."}`.

use conflux_broker::BrokerError;
use hyper::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unknown_topic(name: &str) -> Self {
        Self::not_found("unknown_topic", format!("topic '{name}' does not exist"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error_code": self.code, "message": self.message}).to_string()
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            BrokerError::UnknownTopicOrPartition(_) => (S::NOT_FOUND, "unknown_topic_or_partition"),
            BrokerError::TopicAlreadyExists(_) => (S::CONFLICT, "topic_already_exists"),
            BrokerError::InvalidTopic { .. } => (S::BAD_REQUEST, "invalid_topic"),
            BrokerError::InvalidPartitions(_) => (S::BAD_REQUEST, "invalid_partitions"),
            BrokerError::InvalidReplicationFactor(_) => {
                (S::BAD_REQUEST, "invalid_replication_factor")
            }
            BrokerError::InvalidConfig(_) => (S::BAD_REQUEST, "invalid_config"),
            BrokerError::MessageTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "message_too_large"),
            BrokerError::CorruptMessage(_) | BrokerError::InvalidRecord(_) => {
                (S::BAD_REQUEST, "invalid_record")
            }
            BrokerError::OffsetOutOfRange { .. } => (S::BAD_REQUEST, "offset_out_of_range"),
            BrokerError::TopicAuthorizationFailed(_) => (S::FORBIDDEN, "internal_topic"),
            BrokerError::OutOfOrderSequence(_) | BrokerError::InvalidProducerEpoch(_) => {
                (S::CONFLICT, "producer_fenced")
            }
            BrokerError::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting_down"),
            _ => (S::INTERNAL_SERVER_ERROR, "storage_error"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
