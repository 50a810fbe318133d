"""boto3 clients for the Conflux AWS endpoint, and small helpers shared by the SQS/SNS tests."""

from __future__ import annotations

import uuid

import boto3
from botocore.config import Config

CLIENT_CONFIG = Config(
    retries={"max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
)


def client(server, service: str = "sqs"):
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=f"http://{server.aws}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=CLIENT_CONFIG,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
