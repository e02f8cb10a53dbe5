"""An in-memory stand-in for the part of ObjectStore the trainer runtime uses.

Counts reads and writes per key; reads of images and every write can be slowed
down, to test progress during slow transfers.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from trainyard.errors import NotFound


class MemoryObjects:
    def __init__(self, read_delay: float = 0.0, write_delay: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.read_delay, self.write_delay = read_delay, write_delay

    def get_bytes(self, key: str) -> bytes:
        self.reads[key] += 1
        if key.startswith("images/"):
            time.sleep(self.read_delay)
        if key not in self.objects:
            raise NotFound(key)
        return self.objects[key]

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        time.sleep(self.write_delay)
        self.objects[key] = data
        self.writes[key] += 1

    def put_json(self, key: str, obj: object) -> None:
        self.put_bytes(key, json.dumps(obj).encode())

    def list_modified(self, prefix: str = "") -> list[tuple[str, float]]:
        """(key, modification time) of the objects under ``prefix``; every time is 0."""
        return sorted((key, 0.0) for key in self.objects if key.startswith(prefix))
