//! Protocol-agnostic broker core: topics, partitions, the metadata log, groups, subscriptions.
