"""The dataset service's domain: datasets, uploads, the S1 check, publishing versions.

No gRPC here: the servicer turns requests into these calls and results back
into protos (`mapping.py`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from trainyard import paging
from trainyard.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from trainyard.objectstore import ObjectStore
from trainyard.services.dataset import images, manifest, rules, split
from trainyard.services.dataset.store import DatasetRow, DatasetStore, ImageRow, VersionRow

log = structlog.get_logger(__name__)

_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class Limits:
    """Ingest limits, configurable per deployment."""

    max_image_bytes: int = 50 * 2**20
    max_image_pixels: int = 89_478_485


@dataclass(frozen=True)
class FileHeader:
    """Starts one file of an upload; size_bytes 0 when the client did not say."""

    file_name: str
    label: str
    size_bytes: int = 0


@dataclass(frozen=True)
class VersionDiff:
    added: list[str]
    removed: list[str]
    relabeled: list[tuple[str, str, str]]  # (image_id, base label, target label)
    class_changes: list[tuple[str, int, int]]  # (label, base count, target count)


MAX_LABEL_ASSIGNMENTS = 10_000
MAX_INLINE_MANIFEST = 8 * 2**20
UPLOAD_WORKERS = 3  # files of one upload stream validated and written at once


@dataclass(frozen=True)
class _Prepared:
    """A validated file whose object is in the store; its row is not committed yet."""

    image_id: str
    row: ImageRow


def _done(outcome: UploadOutcome) -> Future[UploadOutcome]:
    future: Future[UploadOutcome] = Future()
    future.set_result(outcome)
    return future


@dataclass(frozen=True)
class UploadOutcome:
    file_name: str
    status: str  # "stored" | "duplicate" | "rejected"
    image_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class VersionView:
    """A version with its per-class counts, as the API shows it."""

    row: VersionRow
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> {"TRAIN": n, "EVAL": n}

    @property
    def train_count(self) -> int:
        return sum(c["TRAIN"] for c in self.class_counts.values())

    @property
    def validation_count(self) -> int:
        return sum(c["EVAL"] for c in self.class_counts.values())


@dataclass(frozen=True)
class TrainabilityReport:
    violations: list[rules.RuleViolation]
    class_counts: dict[str, int]
    unlabeled: int

    @property
    def trainable(self) -> bool:
        return not self.violations


def image_key(dataset_id: str, image_id: str) -> str:
    return f"datasets/{dataset_id}/images/{image_id[:2]}/{image_id}"


def version_prefix(dataset_id: str, name: str) -> str:
    return f"datasets/{dataset_id}/versions/{name}/"


class DatasetService:
    def __init__(
        self,
        store: DatasetStore,
        objects: ObjectStore,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.objects = objects
        self.limits = limits
        self.clock = clock
        self._publish_lock = threading.Lock()

    # datasets --------------------------------------------------------------------
    def create_dataset(self, display_name: str, description: str = "") -> DatasetRow:
        if not _DISPLAY_NAME.fullmatch(display_name):
            raise InvalidArgument.field(
                "display_name", "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument.field("description", f"is {len(description)} characters; at most {MAX_DESCRIPTION}")
        dataset_id = "ds-" + secrets.token_hex(4)
        if not self.store.insert_dataset(dataset_id, display_name, description, self.clock()):
            raise AlreadyExists(f"a dataset named {display_name!r} exists already")
        log.info("dataset.created", dataset_id=dataset_id, display_name=display_name)
        return self.get_dataset(dataset_id)

    def get_dataset(self, id_or_name: str) -> DatasetRow:
        if not id_or_name:
            raise InvalidArgument.field("dataset_id", "is required")
        row = self.store.find_dataset(id_or_name)
        if row is None:
            raise NotFound(f"dataset {id_or_name!r} does not exist")
        return row

    def list_datasets(self, page_size: int, page_token: str) -> tuple[list[DatasetRow], str]:
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_datasets(offset, limit)
        return rows, paging.next_token(offset, limit, len(rows))

    # images ----------------------------------------------------------------------
    def upload(self, dataset_id: str, parts: Iterable[FileHeader | bytes],
               still_wanted: Callable[[], bool] = lambda: True) -> list[UploadOutcome]:
        """Store each file of an upload stream; a bad file is rejected, the rest go on.

        `parts` is the stream as it arrives: a FileHeader, then that file's chunks,
        then the next header. Bytes before the first header are a malformed stream.
        While the next file arrives, earlier ones are validated and written to the
        object store by a few workers; their rows commit together when the stream
        ends. A file cut off midway is never stored; when the cut is seen (the stream fails,
        or `still_wanted` says the caller is gone) nothing of the stream is recorded. gRPC can
        report a cancelled stream as an ordinary end, so files received in full before a cut
        may be recorded; a retry then reports them as duplicates.
        """
        dataset = self.get_dataset(dataset_id)
        in_flight = threading.BoundedSemaphore(UPLOAD_WORKERS * 2)  # bounds the bytes held in memory
        pending: list[Future[_Prepared | UploadOutcome]] = []
        with ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="upload") as pool:
            try:
                for header, chunks in _files(parts):
                    received = self._receive(header, chunks)
                    if isinstance(received, UploadOutcome):
                        pending.append(_done(received))
                        continue
                    label, data = received
                    in_flight.acquire()
                    future = pool.submit(self._prepare, dataset.id, header.file_name, label, data)
                    future.add_done_callback(lambda _: in_flight.release())
                    pending.append(future)
            finally:
                prepared = [f.result() for f in pending]
        if not still_wanted():
            raise Aborted("the upload was cut off before it ended; nothing of it was recorded")
        return self._commit(dataset.id, prepared)

    def _receive(self, header: FileHeader, chunks: Iterator[bytes]) -> tuple[str, bytes] | UploadOutcome:
        """A file's (label, bytes), or its rejection for size, completeness or label."""
        buffer = bytearray()
        too_big = False
        for chunk in chunks:  # always drain the file's chunks, even once it is rejected
            if not too_big:
                buffer += chunk
                too_big = len(buffer) > self.limits.max_image_bytes
                if too_big:
                    buffer = bytearray()
        name = header.file_name
        if too_big:
            return UploadOutcome(name, "rejected", reason=f"file is larger than the limit of {self.limits.max_image_bytes} bytes")
        if header.size_bytes and len(buffer) != header.size_bytes:
            return UploadOutcome(name, "rejected", reason=f"incomplete: {len(buffer)} of {header.size_bytes} bytes arrived")
        try:
            label = rules.validate_label(header.label) if header.label else ""
        except InvalidArgument as exc:
            return UploadOutcome(name, "rejected", reason=f"bad label: {exc.message}")
        return label, bytes(buffer)

    def _prepare(self, dataset_id: str, name: str, label: str, data: bytes) -> _Prepared | UploadOutcome:
        """Validate by decoding and write the object (unless stored already); no row yet."""
        try:
            info = images.inspect_image(data, max_bytes=self.limits.max_image_bytes, max_pixels=self.limits.max_image_pixels)
        except images.InvalidImage as exc:
            return UploadOutcome(name, "rejected", reason=exc.reason)
        image_id = hashlib.sha256(data).hexdigest()
        if self.store.get_image(dataset_id, image_id) is None:
            self.objects.put_bytes(image_key(dataset_id, image_id), data, content_type=_CONTENT_TYPES[info.format])
        return _Prepared(image_id, ImageRow(image_id, name, label, info.format, info.width, info.height, len(data), 0.0))

    def _commit(self, dataset_id: str, prepared: list[_Prepared | UploadOutcome]) -> list[UploadOutcome]:
        """Insert the rows of the stored files in one transaction; the rest are duplicates."""
        rows = [p.row for p in prepared if isinstance(p, _Prepared)]
        inserted = iter(self.store.insert_images(dataset_id, rows, self.clock()))
        outcomes = []
        for p in prepared:
            if isinstance(p, UploadOutcome):
                outcomes.append(p)
            else:
                outcomes.append(UploadOutcome(p.row.file_name, "stored" if next(inserted) else "duplicate", p.image_id))
        return outcomes

    def list_images(self, dataset_id: str, label: str, unlabeled_only: bool, page_size: int, page_token: str):
        dataset = self.get_dataset(dataset_id)
        if label and unlabeled_only:
            raise InvalidArgument.field("label", "must be empty when unlabeled_only is set")
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_images(dataset.id, label or None, unlabeled_only, offset, limit)
        return rows, paging.next_token(offset, limit, len(rows))

    def import_manifest(self, dataset_id: str, manifest_key: str = "", content: bytes = b"") -> list[UploadOutcome]:
        """Ingest the images an ExeML manifest lists from this deployment's bucket.

        The manifest is an object (`manifest_key`) or sent inline (`content`).
        """
        dataset = self.get_dataset(dataset_id)
        if bool(manifest_key) == bool(content):
            raise InvalidArgument.field("manifest_key", "give either manifest_key or manifest_content")
        if len(content) > MAX_INLINE_MANIFEST:
            raise InvalidArgument.field("manifest_content", f"is {len(content)} bytes; at most {MAX_INLINE_MANIFEST} inline")
        entries = manifest.parse_manifest(content or self.objects.get_bytes(manifest_key))
        outcomes: list[_Prepared | UploadOutcome] = []
        for entry in entries:
            source = f"s3://{entry.bucket}/{entry.object_key}"
            if entry.bucket != self.objects.bucket:
                outcomes.append(UploadOutcome(source, "rejected", reason=f"source is not in bucket {self.objects.bucket!r}"))
                continue
            try:
                label = rules.validate_label(entry.label) if entry.label else ""
                data = self.objects.get_bytes(entry.object_key)
            except (InvalidArgument, NotFound) as exc:
                outcomes.append(UploadOutcome(source, "rejected", reason=exc.message))
                continue
            outcomes.append(self._prepare(dataset.id, source, label, data))
        return self._commit(dataset.id, outcomes)

    # labels ----------------------------------------------------------------------
    def set_labels(self, dataset_id: str, assignments: list[tuple[str, str]]) -> int:
        """Apply every (image_id, label) change or none; an empty label removes it."""
        dataset = self.get_dataset(dataset_id)
        if len(assignments) > MAX_LABEL_ASSIGNMENTS:
            raise InvalidArgument.field("assignments", f"{len(assignments)} changes; at most {MAX_LABEL_ASSIGNMENTS} per call")
        checked = []
        for index, (image_id, label) in enumerate(assignments):
            try:
                checked.append((image_id, rules.validate_label(label) if label else ""))
            except InvalidArgument as exc:
                raise InvalidArgument.field(f"assignments[{index}].label", exc.message) from None
        ids = [image_id for image_id, _ in checked]
        missing = sorted(set(ids) - self.store.existing_image_ids(dataset.id, ids))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise NotFound(f"dataset {dataset.display_name!r} has no image {shown}")
        return self.store.set_labels(dataset.id, checked, self.clock())

    def rename_class(self, dataset_id: str, label: str, new_label: str) -> int:
        dataset = self.get_dataset(dataset_id)
        if not label:
            raise InvalidArgument.field("label", "is required")
        try:
            new_label = rules.validate_label(new_label)
        except InvalidArgument as exc:
            raise InvalidArgument.field("new_label", exc.message) from None
        changed = self.store.rename_label(dataset.id, label, new_label, self.clock())
        if not changed:
            raise NotFound(f"no image of dataset {dataset.display_name!r} is labeled {label!r}")
        return changed

    # deletion --------------------------------------------------------------------
    def delete_dataset(self, dataset_id: str) -> None:
        """Hide the dataset at once; purge its rows and objects after the retention period.

        Jobs that already use one of its versions read immutable objects that stay
        until the purge, and the retention outlasts the longest job (6000 minutes).
        """
        dataset = self.get_dataset(dataset_id)
        self.store.mark_deleted(dataset.id, self.clock())
        log.info("dataset.deleted", dataset_id=dataset.id)

    def purge_deleted(self, retention_seconds: float) -> list[str]:
        """Remove datasets deleted more than `retention_seconds` ago: objects first, then rows."""
        purged = []
        for dataset_id in self.store.deleted_before(self.clock() - retention_seconds):
            for key in self.objects.list_keys(f"datasets/{dataset_id}/"):
                self.objects.delete(key)
            self.store.purge(dataset_id)
            purged.append(dataset_id)
            log.info("dataset.purged", dataset_id=dataset_id)
        return purged

    # S1 --------------------------------------------------------------------------
    def check_trainability(self, dataset_id: str) -> TrainabilityReport:
        dataset = self.get_dataset(dataset_id)
        counts, unlabeled = self.store.class_counts(dataset.id)
        return TrainabilityReport(rules.check_trainability(counts), counts, unlabeled)

    # versions --------------------------------------------------------------------
    def publish(self, dataset_id: str, version_name: str = "", train_ratio: str = "", seed: int = 0) -> VersionView:
        """Publish the labeled images as an immutable version (S2, S3).

        Every input is checked before anything is written. The version exists once
        its row commits; manifest and metadata are written before that.
        """
        dataset = self.get_dataset(dataset_id)
        ratio_text = train_ratio or rules.DEFAULT_TRAIN_RATIO
        ratio = rules.parse_train_ratio(ratio_text)
        if version_name:
            rules.validate_version_name(version_name)
        with self._publish_lock:
            existing = self.store.list_versions(dataset.id)
            name = version_name or rules.next_version_name(v.name for v in existing)
            if any(v.name == name for v in existing):
                raise AlreadyExists(f"dataset {dataset.display_name!r} has a version {name!r} already")
            samples = self.store.labeled_samples(dataset.id)
            rules.require_trainable(Counter(label for _, label, _ in samples))
            parent = next(
                (v for v in reversed(existing) if v.train_ratio == ratio_text and v.seed == seed), None
            )
            previous = (
                {image_id: usage for image_id, _, usage in self.store.version_samples(dataset.id, parent.name)}
                if parent else None
            )
            usage = split.assign_usage([(i, label) for i, label, _ in samples], ratio, seed, previous)
            created = datetime.fromtimestamp(self.clock(), UTC)
            entries = [
                manifest.ManifestEntry(
                    image_id=i, object_key=image_key(dataset.id, i), label=label, usage=usage[i],
                    label_time=datetime.fromtimestamp(label_time, UTC),
                )
                for i, label, label_time in samples
            ]
            manifest_bytes = manifest.manifest_lines(entries, bucket=self.objects.bucket, created=created)
            prefix = version_prefix(dataset.id, name)
            metadata = manifest.version_metadata(
                entries=entries, dataset_id=dataset.id, version=name, train_ratio=ratio_text, seed=seed,
                parent_version=parent.name if parent else "", created=created, manifest_bytes=manifest_bytes,
            )
            self.objects.put_bytes(prefix + "manifest.jsonl", manifest_bytes, content_type="application/x-ndjson")
            self.objects.put_json(prefix + "metadata.json", metadata)
            row = VersionRow(
                dataset_id=dataset.id, name=name, seq=self.store.next_version_seq(dataset.id), train_ratio=ratio_text,
                seed=seed, create_time=created.timestamp(), manifest_key=prefix + "manifest.jsonl",
                metadata_key=prefix + "metadata.json", content_hash=metadata["content_hash"],
                parent_version=parent.name if parent else "",
            )
            if not self.store.insert_version(row, [(i, label, usage[i]) for i, label, _ in samples]):
                raise AlreadyExists(f"dataset {dataset.display_name!r} has a version {name!r} already")
        log.info("version.published", dataset_id=dataset.id, version=name, samples=len(samples), ratio=ratio_text)
        return self._view(row)

    def get_version(self, dataset_id: str, name: str) -> VersionView:
        dataset = self.get_dataset(dataset_id)
        if not name:
            raise InvalidArgument.field("version_name", "is required")
        row = self.store.get_version(dataset.id, name)
        if row is None:
            raise NotFound(f"dataset {dataset.display_name!r} has no version {name!r}")
        return self._view(row)

    def list_versions(self, dataset_id: str, page_size: int, page_token: str) -> tuple[list[VersionView], str]:
        dataset = self.get_dataset(dataset_id)
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_versions(dataset.id, offset, limit)
        return [self._view(r) for r in rows], paging.next_token(offset, limit, len(rows))

    def export_manifest(self, dataset_id: str, name: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The version's manifest bytes, in chunks."""
        data = self.objects.get_bytes(self.get_version(dataset_id, name).row.manifest_key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start:start + chunk_bytes]

    def diff_versions(self, dataset_id: str, base: str, target: str) -> VersionDiff:
        dataset = self.get_dataset(dataset_id)
        rows = {}
        for field_name, name in (("base_version", base), ("target_version", target)):
            if not name:
                raise InvalidArgument.field(field_name, "is required")
            if self.store.get_version(dataset.id, name) is None:
                raise NotFound(f"dataset {dataset.display_name!r} has no version {name!r}")
            rows[name] = {i: label for i, label, _ in self.store.version_samples(dataset.id, name)}
        before, after = rows[base], rows[target]
        counts_before, counts_after = Counter(before.values()), Counter(after.values())
        return VersionDiff(
            added=sorted(after.keys() - before.keys()),
            removed=sorted(before.keys() - after.keys()),
            relabeled=sorted((i, before[i], after[i]) for i in before.keys() & after.keys() if before[i] != after[i]),
            class_changes=[
                (label, counts_before[label], counts_after[label])
                for label in sorted(counts_before.keys() | counts_after.keys())
                if counts_before[label] != counts_after[label]
            ],
        )

    def _view(self, row: VersionRow) -> VersionView:
        counts: dict[str, dict[str, int]] = {}
        for _, label, usage in self.store.version_samples(row.dataset_id, row.name):
            counts.setdefault(label, {"TRAIN": 0, "EVAL": 0})[usage] += 1
        return VersionView(row, dict(sorted(counts.items())))


_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "WEBP": "image/webp"}


def _files(parts: Iterable[FileHeader | bytes]) -> Iterator[tuple[FileHeader, Iterator[bytes]]]:
    """Group an upload stream into (header, chunk iterator) pairs, lazily."""
    iterator = iter(parts)
    pending: list[FileHeader | bytes] = []

    def next_part() -> FileHeader | bytes | None:
        if pending:
            return pending.pop()
        return next(iterator, None)

    first = next_part()
    if first is None:
        return
    if not isinstance(first, FileHeader):
        raise InvalidArgument.field("header", "the upload stream must start with a file header before any bytes")
    header = first
    while header is not None:
        following: list[FileHeader | None] = [None]

        def chunks(following: list[FileHeader | None] = following) -> Iterator[bytes]:
            while True:
                part = next_part()
                if part is None:
                    return
                if isinstance(part, FileHeader):
                    following[0] = part
                    return
                yield part

        file_chunks = chunks()
        yield header, file_chunks
        for _ in file_chunks:  # drain whatever the consumer did not read
            pass
        header = following[0]
