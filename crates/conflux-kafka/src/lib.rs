//! Kafka wire-protocol front end: connections, framing, and request handlers over the broker.
