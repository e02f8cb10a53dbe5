"""Starting a local stack for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trainyard.stack.local import LocalStack, StackSettings


def running_stack(data_dir: Path, **settings) -> Iterator[LocalStack]:
    """A started stack with short minutes and heartbeats (so limits and trainer loss take seconds)."""
    stack = LocalStack(StackSettings(data_dir=data_dir, **{
        "minute_seconds": 1.0, "heartbeat_seconds": 1.0, "heartbeat_timeout_seconds": 10.0, **settings}))
    stack.start()
    yield stack
    stack.stop()
