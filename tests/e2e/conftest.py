"""The whole local stack for end-to-end tests: S3 plus the three services as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stacks import running_stack
from trainyard.sdk import Client
from trainyard.stack.local import LocalStack, StackSettings


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    """One stack shared by the tests that do not kill its processes."""
    yield from running_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def client(stack) -> Client:
    return stack.client()


@pytest.fixture(scope="session")
def mtls_stack(tmp_path_factory) -> Iterator[LocalStack]:
    """Dataset and scheduler (enough for flavors, datasets and queued jobs) on TLS that requires client certificates."""
    stack = LocalStack(StackSettings(data_dir=tmp_path_factory.mktemp("mtls-stack"), mtls=True))
    stack.start(services=("dataset", "scheduler"))
    yield stack
    stack.stop()
