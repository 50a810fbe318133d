//! AWS errors as the services send them: a JSON `__type` plus the `x-amzn-query-error`
//! header on the JSON protocol, an XML `ErrorResponse` on the query protocol.

/// One AWS error: the JSON type name, the legacy query-protocol code, the HTTP status and
/// whether the caller is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The JSON-protocol shape name (`QueueDoesNotExist`).
    pub kind: &'static str,
    /// The query-protocol code (`AWS.SimpleQueueService.NonExistentQueue`).
    pub code: &'static str,
    pub message: String,
    pub status: u16,
    pub sender_fault: bool,
}

impl AwsError {
    fn new(kind: &'static str, code: &'static str, message: impl Into<String>) -> AwsError {
        AwsError {
            kind,
            code,
            message: message.into(),
            status: 400,
            sender_fault: true,
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidParameterValue", "InvalidParameterValue", message)
    }
    pub fn missing_parameter(name: &str) -> AwsError {
        AwsError::new(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }
    pub fn invalid_action(action: &str) -> AwsError {
        AwsError::new(
            "InvalidAction",
            "InvalidAction",
            format!("The action or operation requested is invalid: {action}."),
        )
    }
    pub fn queue_does_not_exist() -> AwsError {
        AwsError::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }
    pub fn queue_name_exists(name: &str) -> AwsError {
        AwsError::new(
            "QueueNameExists",
            "QueueAlreadyExists",
            format!("A queue already exists with the same name and a different value for attribute(s): {name}"),
        )
    }
    pub fn invalid_attribute_name(name: &str) -> AwsError {
        AwsError::new(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!("Unknown Attribute {name}."),
        )
    }
    pub fn invalid_attribute_value(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidAttributeValue", "InvalidAttributeValue", message)
    }
    pub fn receipt_handle_invalid(handle: &str) -> AwsError {
        AwsError::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }
    pub fn message_not_inflight() -> AwsError {
        AwsError::new(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            "The message referred to isn't in flight.",
        )
    }
    pub fn too_many_entries(n: usize) -> AwsError {
        AwsError::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!("Maximum number of entries per request are 10. You have sent {n}."),
        )
    }
    pub fn empty_batch() -> AwsError {
        AwsError::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        )
    }
    pub fn ids_not_distinct(id: &str) -> AwsError {
        AwsError::new(
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            format!("Id {id} repeated."),
        )
    }
    pub fn invalid_batch_entry_id() -> AwsError {
        AwsError::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
        )
    }
    pub fn batch_too_long(size: usize, max: usize) -> AwsError {
        AwsError::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!(
                "Batch requests cannot be longer than {max} bytes. You have sent {size} bytes."
            ),
        )
    }
    pub fn invalid_message_contents(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidMessageContents", "InvalidMessageContents", message)
    }
    pub fn unsupported_operation(message: impl Into<String>) -> AwsError {
        AwsError::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            message,
        )
    }
    pub fn resource_not_found(message: impl Into<String>) -> AwsError {
        AwsError::new(
            "ResourceNotFoundException",
            "ResourceNotFoundException",
            message,
        )
    }
    pub fn not_found_sns(message: impl Into<String>) -> AwsError {
        AwsError::new("NotFoundException", "NotFound", message)
    }
    pub fn invalid_parameter_sns(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidParameterException", "InvalidParameter", message)
    }
    pub fn signature(message: impl Into<String>) -> AwsError {
        let mut e = AwsError::new("SignatureDoesNotMatch", "SignatureDoesNotMatch", message);
        e.status = 403;
        e
    }
    pub fn invalid_client_token(message: impl Into<String>) -> AwsError {
        let mut e = AwsError::new("InvalidClientTokenId", "InvalidClientTokenId", message);
        e.status = 403;
        e
    }
    pub fn internal(message: impl Into<String>) -> AwsError {
        let mut e = AwsError::new("InternalError", "InternalError", message);
        e.status = 500;
        e.sender_fault = false;
        e
    }

    pub fn fault(&self) -> &'static str {
        if self.sender_fault {
            "Sender"
        } else {
            "Receiver"
        }
    }

    /// The JSON-protocol body.
    pub fn json_body(&self, namespace: &str) -> String {
        serde_json::json!({
            "__type": format!("{namespace}#{}", self.kind),
            "message": self.message,
        })
        .to_string()
    }

    /// The `x-amzn-query-error` header value (`code;Sender`).
    pub fn query_error_header(&self) -> String {
        format!("{};{}", self.code, self.fault())
    }

    /// The query-protocol `ErrorResponse` document.
    pub fn xml_body(&self, request_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{}</RequestId></ErrorResponse>",
            self.fault(),
            crate::query::escape(self.code),
            crate::query::escape(&self.message),
            request_id
        )
    }
}

pub type AwsResult<T> = Result<T, AwsError>;
