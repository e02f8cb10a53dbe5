"""Typed results of the SDK: plain dataclasses, not protos.

Enums become lower-case strings ("running", "duration_limit", "balance"), times
`datetime` (UTC), durations `timedelta`, counts `int`. Each type keeps the proto
it came from as `.proto` for anything not mapped here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trainyard.common.v1 import training_pb2 as common
from trainyard.dataset.v1 import dataset_pb2
from trainyard.scheduler.v1 import scheduler_pb2


def _time(ts) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


def _enum(enum_type, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix).lower() if value else ""


@dataclass(frozen=True)
class Dataset:
    id: str
    display_name: str
    description: str
    create_time: datetime | None
    image_count: int
    labeled_image_count: int
    version_count: int
    proto: dataset_pb2.Dataset = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: dataset_pb2.Dataset) -> Dataset:
        return cls(p.id, p.display_name, p.description, _time(p.create_time), p.image_count,
                   p.labeled_image_count, p.version_count, p)


@dataclass(frozen=True)
class Image:
    """One image of a dataset; `id` is the SHA-256 of its bytes (hex)."""

    id: str
    file_name: str
    label: str  # "" when unlabeled
    format: str  # JPEG | PNG | BMP | WEBP
    width: int
    height: int
    size_bytes: int
    create_time: datetime | None
    proto: dataset_pb2.Image = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: dataset_pb2.Image) -> Image:
        return cls(p.id, p.file_name, p.label, p.format, p.width, p.height, p.size_bytes, _time(p.create_time), p)


@dataclass(frozen=True)
class TrainabilityReport:
    """Rule S1: `violations` lists every failing rule, for people."""

    trainable: bool
    violations: list[str]
    classes: dict[str, int]
    unlabeled_image_count: int
    proto: dataset_pb2.TrainabilityReport = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: dataset_pb2.TrainabilityReport) -> TrainabilityReport:
        return cls(p.trainable, [v.message for v in p.violations], {c.label: c.image_count for c in p.classes},
                   p.unlabeled_image_count, p)


@dataclass(frozen=True)
class DatasetVersion:
    dataset_id: str
    name: str
    train_ratio: str
    seed: int
    create_time: datetime | None
    classes: dict[str, tuple[int, int]]  # label -> (train, validation)
    train_count: int
    validation_count: int
    manifest_key: str
    content_hash: str
    parent_version: str
    proto: dataset_pb2.DatasetVersion = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: dataset_pb2.DatasetVersion) -> DatasetVersion:
        return cls(p.dataset_id, p.name, p.train_ratio, p.seed, _time(p.create_time),
                   {c.label: (c.train_count, c.validation_count) for c in p.classes}, p.train_count,
                   p.validation_count, p.manifest_key, p.content_hash, p.parent_version, p)


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs_total: int
    step: int
    steps_total: int
    loss: float
    train_accuracy: float
    validation_accuracy: float | None
    learning_rate: float
    images_per_second: float
    eta: timedelta
    device: str

    @classmethod
    def from_proto(cls, p: common.TrainingProgress) -> Progress:
        return cls(p.epoch, p.epochs_total, p.step, p.steps_total, p.loss, p.train_accuracy,
                   p.validation_accuracy if p.HasField("validation_accuracy") else None, p.learning_rate,
                   p.images_per_second, p.eta.ToTimedelta(), p.device)


@dataclass(frozen=True)
class Averages:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    train_count: int
    validation_count: int


@dataclass(frozen=True)
class Evaluation:
    """S9 on the validation set; `macro` is the unweighted mean over classes, `weighted` by support."""

    accuracy: float
    macro: Averages
    weighted: Averages
    classes: list[ClassMetrics]
    confusion_labels: list[str]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted
    top5_accuracy: float | None
    validation_samples: int

    @classmethod
    def from_proto(cls, p: common.Evaluation) -> Evaluation:
        labels = list(p.confusion_matrix.labels)
        n = len(labels)
        counts = list(p.confusion_matrix.counts)
        return cls(
            p.accuracy, Averages(p.macro.precision, p.macro.recall, p.macro.f1),
            Averages(p.weighted.precision, p.weighted.recall, p.weighted.f1),
            [ClassMetrics(c.label, c.precision, c.recall, c.f1, c.support, c.train_count, c.validation_count) for c in p.classes],
            labels, [counts[i * n:(i + 1) * n] for i in range(n)],
            p.top5_accuracy if p.HasField("top5_accuracy") else None, p.validation_samples,
        )


@dataclass(frozen=True)
class TrainingParameters:
    dataset_version: str
    train_ratio: str
    seed: int
    incremental_model_version: str
    max_duration_minutes: int
    preference: str
    flavor_id: str
    free_terms_accepted: bool
    max_epochs: int

    @classmethod
    def from_proto(cls, p: scheduler_pb2.TrainingParameters) -> TrainingParameters:
        return cls(p.dataset_version, p.train_ratio, p.seed, p.incremental_model_version, p.max_duration_minutes,
                   _enum(common.TrainingPreference, p.preference, "TRAINING_PREFERENCE_"), p.flavor_id,
                   p.free_terms_accepted, p.max_epochs)


FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class TrainingJob:
    id: str
    dataset_id: str
    state: str  # queued | starting | running | completed | failed | cancelled
    stop_reason: str  # converged | duration_limit | free_flavor_hour | cancelled | trainer_lost | error | ""
    error_message: str
    parameters: TrainingParameters
    queue_position: int
    wait_reason: str
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    duration_limit: timedelta
    model_version: str
    latest_progress: Progress | None
    billed_seconds: float
    cost: float
    last_sequence: int
    proto: scheduler_pb2.TrainingJob = field(repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_proto(cls, p: scheduler_pb2.TrainingJob) -> TrainingJob:
        return cls(
            p.id, p.dataset_id, _enum(scheduler_pb2.TrainingJobState, p.state, "TRAINING_JOB_STATE_"),
            _enum(common.StopReason, p.stop_reason, "STOP_REASON_"), p.error_message,
            TrainingParameters.from_proto(p.parameters), p.queue_position, p.wait_reason, _time(p.create_time),
            _time(p.start_time), _time(p.end_time), p.duration_limit.ToTimedelta(), p.model_version,
            Progress.from_proto(p.latest_progress) if p.HasField("latest_progress") else None,
            p.billed_seconds, p.cost, p.last_sequence, p,
        )


@dataclass(frozen=True)
class ModelVersion:
    dataset_id: str
    version: str
    job_id: str
    dataset_version: str
    parameters: TrainingParameters
    evaluation: Evaluation
    stop_reason: str
    artifact_prefix: str
    create_time: datetime | None
    architecture: str
    initialization: str
    epochs_run: int
    best_epoch: int
    device: str
    training_time: timedelta
    proto: scheduler_pb2.ModelVersion = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: scheduler_pb2.ModelVersion) -> ModelVersion:
        return cls(
            p.dataset_id, p.version, p.job_id, p.dataset_version, TrainingParameters.from_proto(p.parameters),
            Evaluation.from_proto(p.evaluation), _enum(common.StopReason, p.stop_reason, "STOP_REASON_"),
            p.artifact_prefix, _time(p.create_time), p.architecture, p.initialization, p.epochs_run, p.best_epoch,
            p.device, p.training_time.ToTimedelta(), p,
        )


@dataclass(frozen=True)
class JobEvent:
    """One event of a job. `kind` says which of the optional parts is set:
    "state_change" (state, stop_reason, message), "queue_position" (position,
    jobs_ahead, message), "progress", "log" (level, message) or "result" (model_version)."""

    job_id: str
    sequence: int
    time: datetime | None
    final: bool
    kind: str
    state: str = ""
    stop_reason: str = ""
    message: str = ""
    position: int = 0
    jobs_ahead: int = 0
    level: str = ""
    progress: Progress | None = None
    model_version: ModelVersion | None = None
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: scheduler_pb2.TrainingJobEvent) -> JobEvent:
        kind = p.WhichOneof("kind") or ""
        base = dict(job_id=p.job_id, sequence=p.sequence, time=_time(p.time), final=p.final, kind=kind, proto=p)
        if kind == "state_change":
            c = p.state_change
            return cls(**base, state=_enum(scheduler_pb2.TrainingJobState, c.state, "TRAINING_JOB_STATE_"),
                       stop_reason=_enum(common.StopReason, c.stop_reason, "STOP_REASON_"), message=c.message)
        if kind == "queue_position":
            q = p.queue_position
            return cls(**base, position=q.position, jobs_ahead=q.jobs_ahead, message=q.wait_reason)
        if kind == "progress":
            return cls(**base, progress=Progress.from_proto(p.progress))
        if kind == "log":
            return cls(**base, level=p.log.level, message=p.log.message)
        if kind == "result":
            return cls(**base, model_version=ModelVersion.from_proto(p.result.model_version))
        return cls(**base)


@dataclass(frozen=True)
class Flavor:
    id: str
    display_name: str
    kind: str  # pay_per_use | free
    gpus_per_job: int
    price_per_hour: float
    tenant_concurrency_quota: int
    capacity: int
    slots_in_use: int
    queue_length: int
    terms: str
    max_job_duration: timedelta | None
    proto: scheduler_pb2.Flavor = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: scheduler_pb2.Flavor) -> Flavor:
        return cls(p.id, p.display_name, _enum(scheduler_pb2.FlavorKind, p.kind, "FLAVOR_KIND_"), p.gpus_per_job,
                   p.price_per_hour, p.tenant_concurrency_quota, p.capacity, p.slots_in_use, p.queue_length, p.terms,
                   p.max_job_duration.ToTimedelta() if p.HasField("max_job_duration") else None, p)


@dataclass(frozen=True)
class UploadResult:
    file_name: str
    status: str  # stored | duplicate | rejected
    image_id: str
    reason: str
    label: str = ""  # the label the file was sent with (set by the SDK's folder, zip and manifest imports)


@dataclass(frozen=True)
class UploadSummary:
    results: list[UploadResult]
    stored: int
    duplicates: int
    rejected: int

    @classmethod
    def from_proto(cls, p) -> UploadSummary:
        return cls([UploadResult(r.file_name, _enum(dataset_pb2.UploadStatus, r.status, "UPLOAD_STATUS_"), r.image_id, r.reason)
                    for r in p.results], p.stored_count, p.duplicate_count, p.rejected_count)
