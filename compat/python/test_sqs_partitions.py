"""An SQS queue over an existing multi-partition Kafka topic: confluent-kafka produces to a
3-partition topic, boto3 receives every message from every partition; SQS sends spread over
the partitions; a FIFO queue on such a topic is refused."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest
from confluent_kafka import Producer

from kafka_helpers import consume_assigned, create_topic
from sqs_helpers import client, unique

PARTITIONS = 3


def drain(sqs, url, expected: int, timeout_s: float = 30) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            continue
        got.extend(msgs)
        r = sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
        assert not r.get("Failed"), r
    return got


@pytest.mark.timeout(90)
def test_queue_reads_every_partition_of_an_existing_topic(conflux):
    name = unique("kparts")
    create_topic(conflux.kafka, name, partitions=PARTITIONS)
    p = Producer({"bootstrap.servers": conflux.kafka, "acks": "all"})
    sent = {}
    for i in range(30):
        body = f"kafka-{i}"
        sent[body] = i % PARTITIONS
        p.produce(name, value=body.encode(), partition=i % PARTITIONS,
                  headers=[("origin", b"kafka")])
    assert p.flush(15) == 0

    sqs = client(conflux)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    got = drain(sqs, url, len(sent))
    assert sorted(m["Body"] for m in got) == sorted(sent)
    assert len({m["MessageId"] for m in got}) == len(sent), "message ids are distinct"
    assert all(m["MessageAttributes"]["origin"]["StringValue"] == "kafka" for m in got)

    # Messages sent over SQS spread over the partitions and are all received.
    for i in range(6):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "MessageBody": f"sqs-{i}-{j}"} for j in range(5)])
    via_sqs = drain(sqs, url, 30)
    assert sorted(m["Body"] for m in via_sqs) == sorted(f"sqs-{i}-{j}" for i in range(6) for j in range(5))
    records = consume_assigned(conflux.kafka, name, PARTITIONS, expected=60)
    used = {r.partition() for r in records if r.value().startswith(b"sqs-")}
    assert used == set(range(PARTITIONS)), used

    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


@pytest.mark.timeout(60)
def test_partitioned_receipts_support_visibility_changes(conflux):
    name = unique("kvis")
    create_topic(conflux.kafka, name, partitions=PARTITIONS)
    p = Producer({"bootstrap.servers": conflux.kafka, "acks": "all"})
    for i in range(PARTITIONS):
        p.produce(name, value=f"m{i}".encode(), partition=i)
    assert p.flush(15) == 0
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    first: list[dict] = []
    deadline = time.monotonic() + 20
    while len(first) < PARTITIONS and time.monotonic() < deadline:
        first += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=1).get("Messages", [])
    assert sorted(m["Body"] for m in first) == [f"m{i}" for i in range(PARTITIONS)]
    # Making each visible again redelivers it with a higher receive count.
    for m in first:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                      VisibilityTimeout=0)
    again: list[dict] = []
    deadline = time.monotonic() + 20
    while len(again) < PARTITIONS and time.monotonic() < deadline:
        again += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
    assert sorted(m["Body"] for m in again) == [f"m{i}" for i in range(PARTITIONS)]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "2" for m in again)
    # The first receipts are stale now; the new ones delete.
    for m in again:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


@pytest.mark.timeout(30)
def test_fifo_queue_on_a_multi_partition_topic_is_refused(conflux):
    name = unique("kfifo") + ".fifo"
    create_topic(conflux.kafka, name, partitions=PARTITIONS)
    sqs = client(conflux)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "partitions" in e.value.response["Error"]["Message"]


@pytest.mark.timeout(90)
def test_partitioned_queue_state_survives_kill9(fresh_conflux):
    name = unique("kdur")
    create_topic(fresh_conflux.kafka, name, partitions=PARTITIONS)
    sqs = client(fresh_conflux)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    for i in range(4):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "MessageBody": f"m{i}-{j}"} for j in range(6)])
    everything = {f"m{i}-{j}" for i in range(4) for j in range(6)}
    got: list[dict] = []
    deadline = time.monotonic() + 20
    while len(got) < 12 and time.monotonic() < deadline:
        got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=1).get("Messages", [])
    deleted = {m["Body"] for m in got[:6]}
    for m in got[:6]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    time.sleep(0.5)  # the subscription checkpoints are written every 100 ms
    fresh_conflux.kill9()
    fresh_conflux.start()
    sqs = client(fresh_conflux)
    # Deleted messages stay deleted; in-flight ones (600 s visibility) are visible again.
    after = drain(sqs, url, len(everything) - len(deleted))
    assert sorted(m["Body"] for m in after) == sorted(everything - deleted)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
