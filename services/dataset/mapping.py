"""Dataset service: domain objects ↔ protos."""

from __future__ import annotations

from trainyard.dataset.v1 import dataset_pb2 as pb
from trainyard.services.dataset.service import TrainabilityReport, UploadOutcome, VersionView
from trainyard.services.dataset.store import DatasetRow, ImageRow
from trainyard.timeconv import timestamp

_UPLOAD_STATUS = {
    "stored": pb.UPLOAD_STATUS_STORED,
    "duplicate": pb.UPLOAD_STATUS_DUPLICATE,
    "rejected": pb.UPLOAD_STATUS_REJECTED,
}


def dataset(row: DatasetRow) -> pb.Dataset:
    return pb.Dataset(
        id=row.id, display_name=row.display_name, description=row.description,
        create_time=timestamp(row.create_time), image_count=row.image_count,
        labeled_image_count=row.labeled_image_count, version_count=row.version_count,
    )


def image(row: ImageRow) -> pb.Image:
    return pb.Image(
        id=row.image_id, file_name=row.file_name, label=row.label, format=row.format, width=row.width,
        height=row.height, size_bytes=row.size_bytes, create_time=timestamp(row.create_time),
    )


def upload_result(outcome: UploadOutcome) -> pb.UploadResult:
    return pb.UploadResult(
        file_name=outcome.file_name, status=_UPLOAD_STATUS[outcome.status], image_id=outcome.image_id,
        reason=outcome.reason,
    )


def report(r: TrainabilityReport) -> pb.TrainabilityReport:
    return pb.TrainabilityReport(
        trainable=r.trainable,
        violations=[
            pb.RuleViolation(rule=v.rule, message=v.message, label=v.label, count=v.count, required=v.required)
            for v in r.violations
        ],
        classes=[pb.ClassCount(label=label, image_count=n) for label, n in sorted(r.class_counts.items())],
        unlabeled_image_count=r.unlabeled,
    )


def version(v: VersionView) -> pb.DatasetVersion:
    row = v.row
    return pb.DatasetVersion(
        dataset_id=row.dataset_id, name=row.name, train_ratio=row.train_ratio, seed=row.seed,
        create_time=timestamp(row.create_time),
        classes=[
            pb.VersionClassCount(label=label, train_count=c["TRAIN"], validation_count=c["EVAL"])
            for label, c in v.class_counts.items()
        ],
        train_count=v.train_count, validation_count=v.validation_count, manifest_key=row.manifest_key,
        metadata_key=row.metadata_key, content_hash=row.content_hash, parent_version=row.parent_version,
    )
