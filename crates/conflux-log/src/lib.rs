//! The partition log: append-only segments of Kafka v2 record batches on local disk.
