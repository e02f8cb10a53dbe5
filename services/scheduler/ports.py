"""What the scheduler needs from the other services, as plain Python.

`clients.py` implements these over gRPC; unit tests pass in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class VersionInfo:
    dataset_id: str
    name: str
    train_ratio: str
    manifest_key: str


@dataclass(frozen=True)
class TrainingSpec:
    job_id: str
    dataset_id: str
    dataset_version: str
    manifest_key: str
    preference: str  # "PERFORMANCE_FIRST" | "BALANCE" | "ACCURACY_FIRST"
    seed: int
    deadline: float  # epoch seconds
    deadline_reason: str  # "DURATION_LIMIT" | "FREE_FLAVOR_HOUR"
    init_artifact_prefix: str
    artifact_prefix: str
    max_epochs: int


@dataclass(frozen=True)
class TrainerUpdate:
    """One trainer event: kind is "progress", "log" or "outcome"; body in proto-JSON form."""

    sequence: int
    time: float
    kind: str
    body: dict[str, Any]


class DatasetPort(Protocol):
    """Every call acts for a tenant: the dataset service answers NOT_FOUND for another tenant's data."""

    def resolve_dataset(self, tenant: str, id_or_name: str, timeout: float = ...) -> str: ...
    def get_version(self, tenant: str, dataset_id: str, name: str) -> VersionInfo: ...
    def publish_version(self, tenant: str, dataset_id: str, name: str, train_ratio: str | None, seed: int) -> VersionInfo: ...


class TrainerPort(Protocol):
    def run(self, address: str, spec: TrainingSpec, after_sequence: int, attach_only: bool) -> Iterator[TrainerUpdate]: ...
    def stop(self, address: str, job_id: str, reason: str) -> None: ...
    def predict(self, address: str, artifact_prefix: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]: ...
    def artifact(self, address: str, artifact_prefix: str, name: str) -> Iterator[bytes]: ...
