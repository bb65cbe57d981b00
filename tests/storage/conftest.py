"""Object storage fixtures: a local S3-compatible server (moto) and a bucket on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from storage_support import Bucket

from support import moto_s3


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, one per test module."""
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket; the AWS variables every S3 client here (and child processes) read."""
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "farm-test-key",
        "AWS_SECRET_ACCESS_KEY": "farm-test-secret-s3",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    name = f"farm-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return Bucket(s3_endpoint, name)
