//! The API versions Conflux serves, and the ApiVersions handler.
//!
//! Only versions whose meaning we implement are advertised; a request outside these ranges is
//! refused (ApiVersions itself gets UNSUPPORTED_VERSION plus our ranges so clients fall back).

use conflux_wire::generated::api_versions_response::ApiVersion;
use conflux_wire::generated::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use crate::error_code;

/// (api key, min version, max version) for every API we answer.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetCommit, 0, 8),
    (ApiKey::OffsetFetch, 0, 8),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
];

/// The supported range for an API key, if we serve it.
pub fn supported_range(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k as i16 == api_key)
        .map(|(_, min, max)| (*min, *max))
}

pub fn is_supported(api_key: i16, version: i16) -> bool {
    supported_range(api_key).is_some_and(|(min, max)| (min..=max).contains(&version))
}

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max)| ApiVersion {
            api_key: *k as i16,
            min_version: *min,
            max_version: *max,
            ..Default::default()
        })
        .collect()
}

pub fn handle(_req: &ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: error_code::NONE,
        api_keys: api_list(),
        ..Default::default()
    }
}

/// The answer to an ApiVersions request whose version we do not serve.
pub fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: error_code::UNSUPPORTED_VERSION,
        api_keys: api_list(),
        ..Default::default()
    }
}
