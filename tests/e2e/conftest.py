"""The whole local stack for end-to-end tests: S3 plus the three services as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stacks import running_stack
from trainyard.sdk import Client
from trainyard.stack.local import LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    """One stack shared by the tests that do not kill its processes."""
    yield from running_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def client(stack) -> Client:
    return stack.client()
