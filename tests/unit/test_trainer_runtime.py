"""The trainer runtime's object-store patience: a blip of the store never throws a finished run away."""

from __future__ import annotations

import pytest

from trainyard.errors import NotFound, Unavailable
from trainyard.services.trainer.runtime import PatientObjects


class FlakyObjects:
    """Unreachable for the first `failures` calls, then a plain in-memory store."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.objects: dict[str, bytes] = {}

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("object store unreachable")

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self._maybe_fail()
        self.objects[key] = data

    def put_json(self, key: str, obj: object) -> None:
        self.put_bytes(key, repr(obj).encode())

    def get_bytes(self, key: str) -> bytes:
        self._maybe_fail()
        if key not in self.objects:
            raise NotFound(key)
        return self.objects[key]


def test_calls_are_retried_while_the_store_is_unreachable_and_each_retry_is_reported():
    store, reported, slept = FlakyObjects(failures=3), [], []
    patient = PatientObjects(store, reported.append, patience=60, sleep=slept.append)
    patient.put_bytes("models/d/j/checkpoint.pt", b"weights")
    assert store.objects == {"models/d/j/checkpoint.pt": b"weights"}
    assert slept == [0.5, 1.0, 2.0]  # exponential backoff
    assert len(reported) == 3 and "checkpoint.pt" in reported[0] and "retrying" in reported[0]
    assert patient.get_bytes("models/d/j/checkpoint.pt") == b"weights"


def test_patience_runs_out_and_other_errors_are_not_retried():
    patient = PatientObjects(FlakyObjects(failures=100), lambda _: None, patience=0.0, sleep=lambda _: None)
    with pytest.raises(Unavailable):
        patient.put_bytes("k", b"x")
    reported = []
    patient = PatientObjects(FlakyObjects(failures=0), reported.append, patience=60, sleep=lambda _: None)
    with pytest.raises(NotFound):
        patient.get_bytes("missing")
    assert reported == []
