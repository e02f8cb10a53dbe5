"""Shared fixtures: a real S3 server, in-process services on port 0, the whole local stack."""

from __future__ import annotations

import pytest

from trainyard.config import S3Config
from trainyard.objectstore import ObjectStore
from trainyard.stack.s3 import S3Server


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real local S3 server (weed mini, or minio when on PATH) for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_config(s3) -> S3Config:
    ep = s3.endpoint
    return S3Config(ep.address, ep.credentials.access_key, ep.credentials.secret_key, ep.bucket)


@pytest.fixture(scope="session")
def objects(s3) -> ObjectStore:
    return ObjectStore.from_endpoint(s3.endpoint)
