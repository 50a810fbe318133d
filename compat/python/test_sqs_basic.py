"""boto3 against the Conflux SQS endpoint (AWS JSON 1.0 protocol): queues, messages,
visibility, long polling, batches, attributes, errors, and the seed example run verbatim."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import botocore.exceptions
import pytest

from conflux_server import REPO, clean_env
from sqs_helpers import client, unique

SEED = REPO.parent / "shared" / "seed-examples" / "sqs_fifo.py"


@pytest.mark.timeout(60)
def test_seed_example_sqs_fifo_runs_verbatim(conflux):
    assert SEED.is_file(), f"seed example missing: {SEED}"
    result = subprocess.run(
        [sys.executable, str(SEED)],
        env=clean_env({"CONFLUX_AWS": f"http://{conflux.aws}"}),
        cwd=SEED.parent,
        capture_output=True,
        text=True,
        timeout=50,
    )
    detail = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, detail
    assert "OK sqs_fifo" in result.stdout.splitlines(), detail


@pytest.mark.timeout(30)
def test_standard_send_receive_delete(conflux):
    sqs = client(conflux)
    name = unique("std")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert url == f"http://{conflux.aws}/000000000000/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert sent["MD5OfMessageBody"] == "5d41402abc4b2a76b9719d911017c592"
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                              MessageSystemAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["hello"]
    assert got[0]["MessageId"] == sent["MessageId"]
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert e.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


@pytest.mark.timeout(30)
def test_create_queue_is_idempotent_and_rejects_conflicts(conflux):
    sqs = client(conflux)
    name = unique("idem")
    a = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    b = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    assert a == b
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "11"})
    assert e.value.response["Error"]["Code"] == "QueueAlreadyExists"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=unique("bad"), Attributes={"VisibilityTimeout": "99999"})
    assert e.value.response["Error"]["Code"] == "InvalidAttributeValue"


@pytest.mark.timeout(30)
def test_visibility_expiry_redelivers_with_rising_receive_count(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("vis"), Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    counts = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5,
                                  AttributeNames=["ApproximateReceiveCount"])["Messages"]
        counts.append(int(got[0]["Attributes"]["ApproximateReceiveCount"]))
        # Invisible until the timeout passes.
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert counts == [1, 2, 3]
    # Per-receive timeout, then ChangeMessageVisibility to 0 makes it visible at once.
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=30)["Messages"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert again[0]["Body"] == "again"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert e.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"


@pytest.mark.timeout(30)
def test_long_poll_wakes_soon_after_a_send(conflux):
    sqs = client(conflux)
    sender = client(conflux)
    url = sqs.create_queue(QueueName=unique("poll"))["QueueUrl"]
    result = {}

    def poll():
        t0 = time.monotonic()
        r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
        result["msgs"] = r.get("Messages", [])
        result["done"] = time.monotonic()
        result["t0"] = t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(1.0)
    sent_at = time.monotonic()
    sender.send_message(QueueUrl=url, MessageBody="wake")
    th.join(timeout=25)
    assert not th.is_alive()
    assert [m["Body"] for m in result["msgs"]] == ["wake"]
    assert result["done"] - sent_at < 0.2, f"woke {result['done'] - sent_at:.3f}s after the send"
    assert result["done"] - result["t0"] >= 0.9, "the poll returned before the send"


@pytest.mark.timeout(30)
def test_batches_with_good_and_bad_entries(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("batch"))["QueueUrl"]
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "ok1", "MessageBody": "one"},
        {"Id": "bad1", "MessageBody": "bad\u0001char"},
        {"Id": "ok2", "MessageBody": "two", "DelaySeconds": 0},
        {"Id": "bad2", "MessageBody": "x", "DelaySeconds": 901},
    ])
    assert sorted(e["Id"] for e in r["Successful"]) == ["ok1", "ok2"]
    failed = {e["Id"]: e for e in r["Failed"]}
    assert set(failed) == {"bad1", "bad2"}
    assert failed["bad1"]["Code"] == "InvalidMessageContents" and failed["bad1"]["SenderFault"]
    assert failed["bad2"]["Code"] == "InvalidParameterValue"
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "two"]
    d = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": got[0]["ReceiptHandle"]},
        {"Id": "b", "ReceiptHandle": "garbage"},
    ])
    assert [e["Id"] for e in d["Successful"]] == ["a"]
    assert d["Failed"][0]["Id"] == "b" and d["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    errors = [
        ([{"Id": str(i), "MessageBody": "x"} for i in range(11)],
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([{"Id": "same", "MessageBody": "x"}, {"Id": "same", "MessageBody": "y"}],
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([{"Id": "big1", "MessageBody": "x" * 200_000}, {"Id": "big2", "MessageBody": "y" * 100_000}],
         "AWS.SimpleQueueService.BatchRequestTooLong"),
    ]
    for entries, code in errors:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert e.value.response["Error"]["Code"] == code


@pytest.mark.timeout(30)
def test_message_attributes_round_trip(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("attrs"))["QueueUrl"]
    attrs = {
        "color": {"DataType": "String", "StringValue": "blue"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        "kind.custom": {"DataType": "String.custom", "StringValue": "ü"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="with attrs", MessageAttributes=attrs)
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2,
                              MessageAttributeNames=["All"])["Messages"][0]
    assert got["MessageAttributes"] == attrs
    assert got["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    # Selection by name and prefix.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got["ReceiptHandle"], VisibilityTimeout=0)
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2,
                              MessageAttributeNames=["color", "kind.*"])["Messages"][0]
    assert set(got["MessageAttributes"]) == {"color", "kind.custom"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x",
                         MessageAttributes={"n": {"DataType": "Number", "StringValue": "abc"}})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.timeout(30)
def test_list_queues_paginates_and_tags(conflux):
    sqs = client(conflux)
    prefix = unique("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5)]
    seen, token = [], None
    while True:
        kw = {"QueueNamePrefix": prefix, "MaxResults": 2}
        if token:
            kw["NextToken"] = token
        r = sqs.list_queues(**kw)
        seen += r.get("QueueUrls", [])
        token = r.get("NextToken")
        if not token:
            break
    assert seen == urls
    sqs.tag_queue(QueueUrl=urls[0], Tags={"team": "a", "env": "t"})
    sqs.untag_queue(QueueUrl=urls[0], TagKeys=["env"])
    assert sqs.list_queue_tags(QueueUrl=urls[0])["Tags"] == {"team": "a"}
    sqs.set_queue_attributes(QueueUrl=urls[0], Attributes={"DelaySeconds": "1"})
    sqs.send_message(QueueUrl=urls[0], MessageBody="late")
    assert "Messages" not in sqs.receive_message(QueueUrl=urls[0], WaitTimeSeconds=0)
    got = sqs.receive_message(QueueUrl=urls[0], WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "late"
    sqs.purge_queue(QueueUrl=urls[1])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.purge_queue(QueueUrl=urls[1])
    assert e.value.response["Error"]["Code"] == "AWS.SimpleQueueService.PurgeQueueInProgress"
    sqs.add_permission(QueueUrl=urls[2], Label="l1", AWSAccountIds=["111122223333"],
                       Actions=["SendMessage"])
    sqs.remove_permission(QueueUrl=urls[2], Label="l1")
