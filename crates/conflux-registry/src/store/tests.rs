//! Store tests against a real broker in a temporary directory: ids, versions, deletes,
//! configs, restart, and the broker-side validator.

use std::collections::BTreeMap;

use super::*;
use crate::validator::SchemaValidator;
use conflux_broker::BrokerConfig;

const ORDER_V1: &str =
    r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;
const ORDER_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int","default":0}]}"#;
const ORDER_BAD: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"int"}]}"#;
const JSON_ORDER: &str = r#"{"type":"object","properties":{"id":{"type":"string"},"qty":{"type":"integer","minimum":1}},"required":["id"]}"#;

fn reg(t: SchemaType, schema: &str) -> Registration {
    Registration {
        schema_type: t,
        schema: schema.to_string(),
        references: Vec::new(),
        id: None,
        version: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open(dir: &std::path::Path) -> (Arc<Broker>, Arc<Registry>) {
    let broker = Broker::open(BrokerConfig::new(dir)).unwrap();
    let registry = Registry::open(&broker).unwrap();
    (broker, registry)
}

#[test]
fn ids_versions_configs_and_deletes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (ids, versions) = rt.block_on(async {
        let (broker, r) = open(dir.path());
        let a = r
            .register("orders-value", reg(SchemaType::Avro, ORDER_V1))
            .await
            .unwrap();
        // Whitespace does not make a new schema; the same schema under another subject
        // gets the same id.
        let spaced = ORDER_V1.replace(',', " ,\n ");
        let again = r
            .register("orders-value", reg(SchemaType::Avro, &spaced))
            .await
            .unwrap();
        assert_eq!((again.id, again.version), (a.id, a.version));
        let other = r
            .register("other-value", reg(SchemaType::Avro, ORDER_V1))
            .await
            .unwrap();
        assert_eq!(other.id, a.id);
        let b = r
            .register("orders-value", reg(SchemaType::Avro, ORDER_V2))
            .await
            .unwrap();
        assert_eq!((b.version, b.id), (2, a.id + 1));
        let err = r
            .register("orders-value", reg(SchemaType::Avro, ORDER_BAD))
            .await
            .unwrap_err();
        assert_eq!((err.status, err.code), (409, 409));
        assert!(err.message.contains("id"), "{}", err.message);
        let j = r
            .register("json-value", reg(SchemaType::Json, JSON_ORDER))
            .await
            .unwrap();
        r.set_level(None, Some(Level::Full)).await.unwrap();
        r.set_level(Some("json-value"), Some(Level::None))
            .await
            .unwrap();
        r.set_mode(Some("other-value"), Some("READONLY"), false)
            .await
            .unwrap();
        assert_eq!(
            r.delete_version("orders-value", "1", false).await.unwrap(),
            1
        );
        let err = r
            .delete_version("orders-value", "1", false)
            .await
            .unwrap_err();
        assert_eq!(err.code, 40406);
        let err = r.delete_subject("json-value", true).await.unwrap_err();
        assert_eq!(err.code, 40405);
        broker.close();
        (
            vec![a.id, b.id, j.id],
            r.versions("orders-value", true).unwrap(),
        )
    });
    drop(rt);
    let rt = runtime();
    rt.block_on(async {
        let (broker, r) = open(dir.path());
        assert_eq!(r.versions("orders-value", true).unwrap(), versions);
        assert_eq!(r.versions("orders-value", false).unwrap().len(), 1);
        assert_eq!(
            r.version("orders-value", "latest", false).unwrap().id,
            ids[1]
        );
        assert_eq!(r.version("json-value", "1", false).unwrap().id, ids[2]);
        assert_eq!(r.global_level(), Level::Full);
        assert_eq!(r.subject_level("json-value"), Some(Level::None));
        assert_eq!(r.subject_level("orders-value"), None);
        assert_eq!(r.subject_mode("other-value").as_deref(), Some("READONLY"));
        let err = r
            .register("other-value", reg(SchemaType::Avro, ORDER_V2))
            .await
            .unwrap_err();
        assert_eq!(err.code, 42205);
        // New ids continue after the highest one, and old content keeps its id.
        let next = r
            .register("fresh-value", reg(SchemaType::Json, r#"{"type":"string"}"#))
            .await
            .unwrap();
        assert_eq!(next.id, ids[2] + 1);
        let old = r
            .register("fresh2-value", reg(SchemaType::Avro, ORDER_V1))
            .await
            .unwrap();
        assert_eq!(old.id, ids[0]);
        broker.close();
    });
}

#[test]
fn errors_use_the_registry_codes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (_broker, r) = open(dir.path());
        assert_eq!(r.versions("nope", false).unwrap_err().code, 40401);
        r.register("s", reg(SchemaType::Avro, ORDER_V1))
            .await
            .unwrap();
        assert_eq!(r.version("s", "7", false).unwrap_err().code, 40402);
        assert_eq!(r.version("s", "zero", false).unwrap_err().code, 42202);
        assert_eq!(r.schema_by_id(999).unwrap_err().code, 40403);
        let err = r
            .register("s", reg(SchemaType::Avro, "{\"type\":\"record\"}"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 42201);
        let err = r
            .register("s", reg(SchemaType::Json, "{not json"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 42201);
        let err = r
            .register("p", reg(SchemaType::Protobuf, "message {"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 42201);
        r.delete_subject("s", false).await.unwrap();
        assert_eq!(r.delete_subject("s", false).await.unwrap_err().code, 40404);
        assert_eq!(r.delete_subject("s", true).await.unwrap(), vec![1]);
        assert!(r.subjects(true, "").is_empty());
    });
}

#[test]
fn references_resolve_for_avro_json_and_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (_broker, r) = open(dir.path());
        let refs = |name: &str, subject: &str| {
            vec![SchemaRef {
                name: name.into(),
                subject: subject.into(),
                version: 1,
            }]
        };
        r.register("addr", reg(SchemaType::Avro, r#"{"type":"record","name":"Address","namespace":"x","fields":[{"name":"city","type":"string"}]}"#)).await.unwrap();
        let mut with_ref = reg(SchemaType::Avro, r#"{"type":"record","name":"Customer","namespace":"x","fields":[{"name":"home","type":"x.Address"}]}"#);
        with_ref.references = refs("x.Address", "addr");
        r.register("customer", with_ref).await.unwrap();

        r.register("jaddr", reg(SchemaType::Json, r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#)).await.unwrap();
        let mut jref = reg(SchemaType::Json, r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#);
        jref.references = refs("address.json", "jaddr");
        let j = r.register("jcustomer", jref).await.unwrap();
        let parsed = r.parsed(j.id).unwrap();
        assert!(parsed.validate_payload(br#"{"home":{"city":"Oslo"}}"#).is_ok());
        let err = parsed.validate_payload(br#"{"home":{}}"#).unwrap_err();
        assert!(err.contains("city"), "{err}");

        r.register("paddr", reg(SchemaType::Protobuf, "syntax = \"proto3\";\npackage x;\nmessage Address { string city = 1; }\n")).await.unwrap();
        let mut pref = reg(SchemaType::Protobuf, "syntax = \"proto3\";\npackage x;\nimport \"address.proto\";\nimport \"google/protobuf/timestamp.proto\";\nmessage Customer { Address home = 1; google.protobuf.Timestamp at = 2; }\n");
        pref.references = refs("address.proto", "paddr");
        r.register("pcustomer", pref).await.unwrap();
        // A JSON $ref to anything else is refused rather than fetched.
        let err = r.register("remote", reg(SchemaType::Json, r#"{"$ref":"http://127.0.0.1:9/x.json"}"#)).await.unwrap_err();
        assert_eq!(err.code, 42201);
    });
}

fn batch(values: &[&[u8]]) -> Bytes {
    let mut b = BatchBuilder::new(0);
    for v in values {
        b.append(0, None, Some(Bytes::copy_from_slice(v)), Vec::new());
    }
    b.build().unwrap()
}

fn framed(id: i32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn validator_rejects_whole_batches_naming_the_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (broker, r) = open(dir.path());
        let validator = SchemaValidator::new();
        validator.attach(r.clone());
        broker.set_record_validator(validator);
        let id = r
            .register("t-value", reg(SchemaType::Json, JSON_ORDER))
            .await
            .unwrap()
            .id;
        let other = r
            .register(
                "elsewhere-value",
                reg(SchemaType::Json, r#"{"type":"string"}"#),
            )
            .await
            .unwrap()
            .id;
        let mut configs = BTreeMap::new();
        configs.insert(
            "confluent.value.schema.validation".to_string(),
            "true".to_string(),
        );
        configs.insert(
            "conflux.value.schema.validation".to_string(),
            "payload".to_string(),
        );
        let topic = broker
            .create_topic(
                NewTopic {
                    name: "t".into(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs,
                },
                false,
            )
            .unwrap();
        let good = framed(id, br#"{"id":"a","qty":2}"#);
        topic.append(0, batch(&[&good, &good])).await.unwrap();
        let bad = framed(id, br#"{"id":"a","qty":0}"#);
        let err = topic.append(0, batch(&[&good, &bad])).await.unwrap_err();
        let BrokerError::RecordsRejected {
            record_errors,
            message,
        } = err
        else {
            panic!("{err}")
        };
        assert_eq!(record_errors.len(), 1);
        assert_eq!(record_errors[0].0, 1);
        assert!(message.contains("/qty"), "{message}");
        let cases: [(&[u8], &str); 3] = [
            (br#"{"id":"a"}"#, "magic byte"),
            (&framed(999, b"{}"), "not registered"),
            (
                &framed(other, br#""x""#),
                "not registered under subject 't-value'",
            ),
        ];
        for (value, expected) in cases {
            let err = topic.append(0, batch(&[value])).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert_eq!(
            topic.partition(0).unwrap().log.log_end_offset(),
            2,
            "nothing of a refused batch is stored"
        );
        // Without validation configs anything goes.
        let plain = broker
            .create_topic(
                NewTopic {
                    name: "plain".into(),
                    ..Default::default()
                },
                false,
            )
            .unwrap();
        plain.append(0, batch(&[b"anything"])).await.unwrap();
    });
}
