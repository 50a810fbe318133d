"""The Confluent Schema Registry REST API as clients see it: confluent-kafka's
SchemaRegistryClient plus raw HTTP for status codes, error codes and content type."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

CT = "application/vnd.schemaregistry.v1+json"
T = 10


def avro(fields):
    return json.dumps({"type": "record", "name": "R", "fields": fields})


V1 = avro([{"name": "a", "type": "int"}])
V2 = avro([{"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}])
V_BAD = avro([{"name": "a", "type": "int"}, {"name": "c", "type": "string"}])


def subject():
    return f"s-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def base(conflux):
    return f"http://{conflux.registry}"


@pytest.fixture
def sr(base):
    return SchemaRegistryClient({"url": base})


def post(base, path, body):
    return requests.post(base + path, json=body, headers={"Content-Type": CT}, timeout=T)


def test_register_lookup_versions_and_ids(base, sr):
    s = subject()
    id1 = sr.register_schema(s, Schema(V1, "AVRO"))
    id2 = sr.register_schema(s, Schema(V2, "AVRO"))
    assert id2 != id1
    assert sr.register_schema(s, Schema(V1, "AVRO")) == id1, "re-registering is idempotent"
    assert sr.get_versions(s) == [1, 2]
    latest = sr.get_latest_version(s)
    assert (latest.version, latest.schema_id) == (2, id2)
    found = sr.lookup_schema(s, Schema(V1, "AVRO"))
    assert (found.version, found.schema_id) == (1, id1)
    # The same schema under another subject keeps its id.
    s2 = subject()
    assert sr.register_schema(s2, Schema(V1, "AVRO")) == id1
    r = requests.get(f"{base}/schemas/ids/{id1}/versions", timeout=T)
    assert r.headers["content-type"] == CT
    assert sorted(map(tuple, (d.values() for d in r.json()))) == sorted([(s, 1), (s2, 1)])
    assert sorted(requests.get(f"{base}/schemas/ids/{id1}/subjects", timeout=T).json()) == sorted([s, s2])
    assert json.loads(requests.get(f"{base}/schemas/ids/{id1}/schema", timeout=T).text) == json.loads(V1)
    assert sorted(sr.get_schema_types()) == ["AVRO", "JSON", "PROTOBUF"]
    assert s in sr.get_subjects()


def test_incompatible_change_is_409_with_a_message(base, sr):
    s = subject()
    sr.register_schema(s, Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as e:
        sr.register_schema(s, Schema(V_BAD, "AVRO"))
    assert e.value.http_status_code == 409
    assert e.value.error_code == 409
    assert "'c'" in e.value.error_message
    r = post(base, f"/compatibility/subjects/{s}/versions/latest?verbose=true", {"schema": V_BAD})
    assert r.status_code == 200
    assert r.json()["is_compatible"] is False and r.json()["messages"]
    assert sr.test_compatibility(s, Schema(V2, "AVRO")) is True


def test_config_and_mode(base, sr):
    s = subject()
    r = requests.get(f"{base}/config/{s}", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40408)
    r = requests.get(f"{base}/config/{s}?defaultToGlobal=true", timeout=T)
    assert r.json() == {"compatibilityLevel": "BACKWARD"}
    assert sr.set_compatibility(s, "NONE")["compatibility"] == "NONE"
    assert sr.get_compatibility(s) == "NONE"
    sr.register_schema(s, Schema(V1, "AVRO"))
    sr.register_schema(s, Schema(V_BAD, "AVRO"))  # NONE allows anything
    r = requests.put(f"{base}/config/{s}", json={"compatibility": "SIDEWAYS"}, timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (422, 42203)
    assert requests.delete(f"{base}/config/{s}", timeout=T).json() == {"compatibilityLevel": "NONE"}
    assert requests.get(f"{base}/mode", timeout=T).json() == {"mode": "READWRITE"}
    assert requests.put(f"{base}/mode/{s}", json={"mode": "READONLY"}, timeout=T).json() == {"mode": "READONLY"}
    r = post(base, f"/subjects/{s}/versions", {"schema": V2})
    assert (r.status_code, r.json()["error_code"]) == (422, 42205)
    assert requests.delete(f"{base}/mode/{s}", timeout=T).status_code == 200
    r = requests.get(f"{base}/mode/{s}", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40409)


def test_soft_and_permanent_delete(base, sr):
    s = subject()
    sr.register_schema(s, Schema(V1, "AVRO"))
    sr.register_schema(s, Schema(V2, "AVRO"))
    r = requests.delete(f"{base}/subjects/{s}/versions/1?permanent=true", timeout=T)
    assert r.json()["error_code"] == 40407
    assert sr.delete_version(s, 1) == 1
    assert sr.get_versions(s) == [2]
    assert requests.get(f"{base}/subjects/{s}/versions?deleted=true", timeout=T).json() == [1, 2]
    r = requests.get(f"{base}/subjects/{s}/versions/1", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40402)
    assert requests.get(f"{base}/subjects/{s}/versions/1?deleted=true", timeout=T).status_code == 200
    assert sr.delete_subject(s) == [2]
    assert s not in sr.get_subjects()
    r = requests.get(f"{base}/subjects/{s}/versions", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40401)
    assert sorted(sr.delete_subject(s, permanent=True)) == [1, 2]
    assert s not in requests.get(f"{base}/subjects?deleted=true", timeout=T).json()


def test_bad_requests_get_registry_errors(base):
    r = post(base, f"/subjects/{subject()}/versions", {"schema": "{\"type\": \"recrod\"}"})
    assert (r.status_code, r.json()["error_code"]) == (422, 42201)
    r = post(base, f"/subjects/{subject()}/versions", {"schema": "{}", "schemaType": "XML"})
    assert (r.status_code, r.json()["error_code"]) == (422, 42201)
    r = requests.get(f"{base}/schemas/ids/987654", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40403)
    r = requests.get(f"{base}/subjects/nope-{uuid.uuid4().hex}/versions/latest", timeout=T)
    assert (r.status_code, r.json()["error_code"]) == (404, 40401)
    r = requests.get(f"{base}/subjects/x/versions/zero", timeout=T)
    assert r.json()["error_code"] in (40401, 42202)
    r = requests.post(f"{base}/subjects/x/versions", data="{not json", headers={"Content-Type": CT}, timeout=T)
    assert r.status_code == 422
    r = requests.post(f"{base}/subjects/x/versions", data=b"x" * (3 * 1024 * 1024), timeout=T)
    assert r.status_code == 413


def test_json_and_protobuf_references(base, sr):
    from confluent_kafka.schema_registry import SchemaReference

    addr = subject()
    sr.register_schema(addr, Schema(json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}), "JSON"))
    cust = subject()
    ref = SchemaReference("address.json", addr, 1)
    sid = sr.register_schema(
        cust,
        Schema(json.dumps({"type": "object", "properties": {"home": {"$ref": "address.json"}}}), "JSON", [ref]),
    )
    got = sr.get_schema(sid)
    assert got.references[0].name == "address.json"
    assert requests.get(f"{base}/subjects/{addr}/versions/1/referencedby", timeout=T).json() == [sid]
    r = requests.delete(f"{base}/subjects/{addr}/versions/1", timeout=T)
    assert r.json()["error_code"] == 42206
    p = subject()
    proto = 'syntax = "proto3";\npackage x;\nmessage A { string id = 1; }\n'
    sr.register_schema(p, Schema(proto, "PROTOBUF"))
    q = subject()
    qid = sr.register_schema(
        q,
        Schema('syntax = "proto3";\npackage x;\nimport "a.proto";\nmessage B { A a = 1; }\n', "PROTOBUF",
               [SchemaReference("a.proto", p, 1)]),
    )
    assert sr.get_schema(qid).schema_type == "PROTOBUF"


def test_restart_keeps_schemas_ids_and_config(fresh_conflux):
    base = f"http://{fresh_conflux.registry}"
    sr = SchemaRegistryClient({"url": base})
    s = subject()
    id1 = sr.register_schema(s, Schema(V1, "AVRO"))
    id2 = sr.register_schema(s, Schema(V2, "AVRO"))
    jid = sr.register_schema(subject(), Schema('{"type":"string"}', "JSON"))
    sr.set_compatibility(s, "FULL")
    sr.set_compatibility(level="FORWARD")
    sr.delete_version(s, 1)
    fresh_conflux.restart()
    sr = SchemaRegistryClient({"url": f"http://{fresh_conflux.registry}"})
    assert sr.get_versions(s) == [2]
    assert requests.get(f"{base}/subjects/{s}/versions?deleted=true", timeout=T).json() == [1, 2]
    assert sr.get_latest_version(s).schema_id == id2
    assert sr.get_compatibility(s) == "FULL"
    assert sr.get_compatibility() == "FORWARD"
    assert json.loads(sr.get_schema(id1).schema_str) == json.loads(V1)
    assert sr.get_schema(jid).schema_type == "JSON"
    new_id = sr.register_schema(subject(), Schema('{"type":"integer"}', "JSON"))
    assert new_id == max(id1, id2, jid) + 1
