//! Benchmark (not a test): produce throughput of 1 KiB JSON events through the broker's append
//! path with schema payload validation on vs off, and the validator's cost per record.
//!
//! Run: `cargo run --release -j2 -p conflux-registry --example validation_bench [records]`.
//! Topics use `flush.messages=100000` so that fsync does not hide the CPU cost measured here.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use conflux_broker::{Broker, BrokerConfig, NewTopic, RecordValidator};
use conflux_registry::schema::SchemaType;
use conflux_registry::store::Registration;
use conflux_registry::{Registry, SchemaValidator};
use conflux_wire::records::BatchBuilder;

const BATCH_RECORDS: usize = 100;
const SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
 "required":["event_type","event_id","timestamp","payload"],
 "properties":{"event_type":{"type":"string"},"event_id":{"type":"string","format":"uuid"},
 "timestamp":{"type":"string","format":"date-time"},"version":{"type":"integer","minimum":1},
 "payload":{"type":"object","properties":{"order_id":{"type":"string"},"note":{"type":"string","maxLength":2048}}}}}"#;

/// One ~1 KiB event in Confluent wire format.
fn event(id: i32, n: usize) -> Bytes {
    let note = "x".repeat(870);
    let json = format!(
        r#"{{"event_type":"order.created","event_id":"550e8400-e29b-41d4-a716-{n:012}","timestamp":"2026-02-23T10:00:00Z","version":1,"payload":{{"order_id":"ORD-{n}","note":"{note}"}}}}"#
    );
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(json.as_bytes());
    Bytes::from(v)
}

fn batches(id: i32, records: usize) -> Vec<Bytes> {
    (0..records / BATCH_RECORDS)
        .map(|b| {
            let mut builder = BatchBuilder::new(0);
            for i in 0..BATCH_RECORDS {
                builder.append(0, None, Some(event(id, b * BATCH_RECORDS + i)), Vec::new());
            }
            builder.build().expect("batch")
        })
        .collect()
}

fn main() {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = Broker::open(BrokerConfig::new(dir.path())).expect("broker");
        let registry = Registry::open(&broker).expect("registry");
        let validator = SchemaValidator::new();
        validator.attach(registry.clone());
        broker.set_record_validator(validator.clone());
        let reg = Registration {
            schema_type: SchemaType::Json,
            schema: SCHEMA.into(),
            references: Vec::new(),
            id: None,
            version: None,
        };
        let mut ids = Vec::new();
        for (name, validated) in [("bench-off", false), ("bench-on", true)] {
            let id = registry
                .register(&format!("{name}-value"), reg.clone())
                .await
                .expect("register")
                .id;
            ids.push(id);
            let mut configs = BTreeMap::new();
            configs.insert("flush.messages".to_string(), "100000".to_string());
            if validated {
                configs.insert("confluent.value.schema.validation".into(), "true".into());
                configs.insert("conflux.value.schema.validation".into(), "payload".into());
            }
            broker
                .create_topic(
                    NewTopic {
                        name: name.into(),
                        partitions: Some(1),
                        replication_factor: None,
                        configs,
                    },
                    false,
                )
                .expect("topic");
        }
        let payload = batches(ids[0], records);
        let size = payload.iter().map(Bytes::len).sum::<usize>();
        println!(
            "{records} records of ~{} bytes in batches of {BATCH_RECORDS}",
            size / records
        );
        for name in ["bench-off", "bench-on"] {
            let topic = broker.topic(name).expect("topic");
            let started = Instant::now();
            for b in &payload {
                topic.append(0, b.clone()).await.expect("append");
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{name:<10} {:>10.0} records/s {:>8.1} MiB/s {:>7.2} us/record",
                records as f64 / secs,
                size as f64 / secs / 1048576.0,
                secs * 1e6 / records as f64
            );
        }
        let topic = broker.topic("bench-on").expect("topic");
        let config = topic.config();
        let started = Instant::now();
        for b in &payload {
            validator.validate("bench-on", &config, b).expect("valid");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "validator alone: {:.2} us/record",
            secs * 1e6 / records as f64
        );
        broker.close();
    });
}
