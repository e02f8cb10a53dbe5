"""The dataset service's domain: datasets, uploads, the S1 check, publishing versions.

No gRPC here: the servicer turns requests into these calls and results back
into protos (`mapping.py`).

Tenancy: every public method takes the tenant the call acts for, first. A dataset
is found only within its tenant, so another tenant's dataset is NOT_FOUND with the
very message of one that does not exist, and everything reached through a
dataset (images, labels, versions) is the tenant's own.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from trainyard import images, paging
from trainyard.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    cut_utf8,
    shown,
)
from trainyard.objectstore import ObjectStore
from trainyard.services.dataset import manifest, rules, split
from trainyard.services.dataset.store import DatasetRow, DatasetStore, ImageRow, Usage, VersionRow

log = structlog.get_logger(__name__)

_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DATASET_ID = re.compile(r"ds-[0-9a-f]{8}")  # the form of the ids new_dataset_id makes
MAX_DESCRIPTION = 1000
DESCRIPTION_CONTROLS = "\n\t"  # the only control characters a description may hold (line breaks, tabs)


def new_dataset_id() -> str:
    """A fresh dataset id: "ds-" and 8 lowercase hex digits. No display name has this form."""
    return "ds-" + secrets.token_hex(4)


@dataclass(frozen=True)
class Limits:
    """Ingest limits, configurable per deployment (the variables named in each limit's message)."""

    max_image_bytes: int = 50 * 2**20  # TRAINYARD_MAX_IMAGE_BYTES: one image file
    max_image_pixels: int = 89_478_485  # TRAINYARD_MAX_IMAGE_PIXELS: one decoded image
    max_tenant_bytes: int = 50 * 2**30  # TRAINYARD_TENANT_MAX_BYTES: image bytes of a tenant's live datasets
    max_dataset_images: int = 1_000_000  # TRAINYARD_DATASET_MAX_IMAGES: images of one dataset
    decode_pixels: int = 400_000_000  # TRAINYARD_DATASET_DECODE_PIXELS: pixels being validated at once, all streams

    def image_too_big(self, size: int) -> str:
        """Why a file of `size` bytes, over max_image_bytes, is rejected."""
        return f"the file is {size:,} bytes; the limit is {self.max_image_bytes:,} bytes per image (TRAINYARD_MAX_IMAGE_BYTES)"

    def rejection(self, invalid: images.InvalidImage) -> str:
        """Why validation rejected a file, naming the setting when it was the pixel limit."""
        return f"{invalid.reason} (TRAINYARD_MAX_IMAGE_PIXELS)" if invalid.over_pixel_limit else invalid.reason

    def check(self, tenant: str, dataset: DatasetRow, usage: Usage) -> None:
        """ResourceExhausted naming the limit when `usage` (as a request would leave it) is over one."""
        if usage.dataset_images > self.max_dataset_images:
            raise ResourceExhausted(
                f"dataset {shown(dataset.display_name)} would hold {usage.dataset_images:,} images; the limit is "
                f"{self.max_dataset_images:,} images per dataset (TRAINYARD_DATASET_MAX_IMAGES). "
                "Nothing of this request was recorded."
            )
        if usage.tenant_bytes > self.max_tenant_bytes:
            raise ResourceExhausted(
                f"tenant {shown(tenant)} would store {usage.tenant_bytes:,} bytes of images; the limit is "
                f"{self.max_tenant_bytes:,} bytes per tenant (TRAINYARD_TENANT_MAX_BYTES). "
                "Nothing of this request was recorded."
            )


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



class PixelBudget:
    """The pixels being decoded at once, over every upload and import: a file waits until its
    pixels fit (one larger than the whole budget, until nothing else is decoding), so many
    concurrent streams of huge images cannot take the service's memory (about 3 bytes a pixel)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.limit)
        with self._changed:
            while self.used and self.used + pixels > self.limit:
                self._changed.wait()
            self.used += pixels
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()

MAX_LABEL_ASSIGNMENTS = 10_000
MAX_MANIFEST_BYTES = 8 * 2**20  # a manifest, inline or an object in the bucket
# One upload stream's files, or one import's manifest lines. Each gets a result in the one
# response, so the cap and the bounds on a result's parts (a file name of at most
# MAX_FILE_NAME_BYTES, a source of at most s3://<bucket>/ and MAX_OBJECT_KEY_BYTES, a reason
# of at most MAX_REASON_BYTES, an image id) keep the response below the 16 MiB a gRPC message
# may have (trainyard.rpc.MAX_MESSAGE_BYTES): under 2.2 KiB a result, 11 MiB for 5,000.
# The SDK's folder and zip uploads send 500 files a stream.
MAX_FILES_PER_REQUEST = 5_000
MAX_FILE_NAME_BYTES = 1024  # an upload's file_name, in UTF-8: as long as an S3 object key may be
MAX_OBJECT_KEY_BYTES = 1024  # S3's own limit on an object key, in UTF-8
MAX_REASON_BYTES = 1024  # a rejection's reason, in UTF-8; ours are far shorter, this bounds others' words
_SHOWN_CONTROLS = 8  # a message lists at most this many distinct control characters
UPLOAD_WORKERS = 3  # files of one upload stream validated and written at once
IMPORTS_PREFIX = "imports/"  # imports/<tenant>/…: where objects for a tenant's imports are staged


class _Budget:
    """What one upload or import may still add, counted before each new object is written.

    Starts from the usage committed when the request began, so a request over a
    limit stops early and writes no more objects; the check inside the commit's
    transaction (`Limits.check`) stays the one that decides between concurrent requests.
    """

    def __init__(self, limits: Limits, tenant: str, dataset: DatasetRow, usage: Usage) -> None:
        self._limits, self._tenant, self._dataset = limits, tenant, dataset
        self._usage = usage
        self._taken: set[str] = set()
        self._lock = threading.Lock()
        self.exceeded: ResourceExhausted | None = None

    def take(self, image_id: str, size: int) -> bool:
        """Count a new image; False (and `exceeded` set) when it would pass a limit."""
        with self._lock:
            if image_id in self._taken:  # the same new file twice in one request counts once
                return True
            after = Usage(self._usage.dataset_images + 1, self._usage.tenant_bytes + size)
            try:
                self._limits.check(self._tenant, self._dataset, after)
            except ResourceExhausted as exc:
                self.exceeded = self.exceeded or exc
                return False
            self._taken.add(image_id)
            self._usage = after
            return True


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


def _controls(text: str, allowed: str = "") -> str:
    """The control characters (Unicode Cc) of `text` but `allowed`, listed for a message; "" when none."""
    found = sorted({c for c in text if unicodedata.category(c) == "Cc" and c not in allowed})
    listed = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in found[:_SHOWN_CONTROLS])
    return listed + (f" and {len(found) - _SHOWN_CONTROLS} more" if len(found) > _SHOWN_CONTROLS else "")


def _name_problem(field_name: str, text: str, max_bytes: int) -> str:
    """Why a name or key is refused (over `max_bytes` of UTF-8, or a control character); "" when fine."""
    size = len(text.encode())
    if size > max_bytes:
        return f"{field_name} is {size:,} bytes long (UTF-8); at most {max_bytes:,} bytes are allowed"
    controls = _controls(text)
    if controls:
        return f"{field_name} contains the control character(s) {controls}, which are not allowed"
    return ""


def _not_importable(tenant: str, key: str) -> str:
    """Why a key is refused: the same words whether or not the object or its dataset exists."""
    return (f"object {shown(key)} is not importable: a tenant imports only objects under "
            f"{IMPORTS_PREFIX}{tenant}/ or datasets/<id>/ of one of its own datasets")


class _Writers:
    """Datasets whose uploads or imports are writing image objects before their rows commit.

    The orphan sweep leaves such a dataset alone, and a new writer waits while its
    dataset is being swept, so the sweep never deletes an object a commit is about
    to reference.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._active: Counter[str] = Counter()
        self._sweeping: set[str] = set()

    @contextmanager
    def writing(self, dataset_id: str) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: dataset_id not in self._sweeping)
            self._active[dataset_id] += 1
        try:
            yield
        finally:
            with self._changed:
                self._active[dataset_id] -= 1
                if not self._active[dataset_id]:
                    del self._active[dataset_id]
                self._changed.notify_all()

    @contextmanager
    def sweeping(self, dataset_id: str) -> Iterator[bool]:
        """Yields False (and holds nothing) when the dataset has writers right now."""
        with self._changed:
            if self._active[dataset_id]:
                yield False
                return
            self._sweeping.add(dataset_id)
        try:
            yield True
        finally:
            with self._changed:
                self._sweeping.discard(dataset_id)
                self._changed.notify_all()


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
        self._decoding = PixelBudget(limits.decode_pixels)
        self.clock = clock
        self._publish_lock = threading.Lock()
        self._writers = _Writers()

    # datasets --------------------------------------------------------------------
    def create_dataset(self, tenant: str, display_name: str, description: str = "") -> DatasetRow:
        if not _DISPLAY_NAME.fullmatch(display_name):
            raise InvalidArgument.field(
                "display_name", "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if _DATASET_ID.fullmatch(display_name):
            raise InvalidArgument.field(
                "display_name", f"{shown(display_name)} has the form of a dataset id (ds- and 8 hex digits); "
                "datasets are found by id or by name, so a name of that form could reach another dataset")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument.field("description", f"is {len(description):,} characters; at most {MAX_DESCRIPTION}")
        controls = _controls(description, allowed=DESCRIPTION_CONTROLS)
        if controls:
            raise InvalidArgument.field(
                "description", f"contains the control character(s) {controls}; only line breaks (\\n) and tabs (\\t) are allowed")
        dataset_id = new_dataset_id()
        if not self.store.insert_dataset(tenant, dataset_id, display_name, description, self.clock()):
            raise AlreadyExists(f"a dataset named {shown(display_name)} exists already")
        log.info("dataset.created", dataset_id=dataset_id, display_name=display_name, tenant=tenant)
        return self.get_dataset(tenant, dataset_id)

    def get_dataset(self, tenant: str, id_or_name: str) -> DatasetRow:
        """The tenant's dataset of that id or display name.

        Another tenant's dataset gets the very NOT_FOUND of one that does not exist.
        """
        if not id_or_name:
            raise InvalidArgument.field("dataset_id", "is required")
        row = self.store.find_dataset(tenant, id_or_name)
        if row is None:
            raise NotFound(f"dataset {shown(id_or_name)} does not exist")
        return row

    def list_datasets(self, tenant: str, page_size: int, page_token: str) -> tuple[list[DatasetRow], str]:
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_datasets(tenant, offset, limit)
        return rows, paging.next_token(offset, limit, len(rows))

    # images ----------------------------------------------------------------------
    def upload(self, tenant: str, dataset_id: str, parts: Iterable[FileHeader | bytes],
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

        A file over max_image_bytes is rejected by itself. New images that would take the
        dataset over max_dataset_images or the tenant over max_tenant_bytes fail the whole
        stream with ResourceExhausted, and nothing of it is recorded (files stored already
        count once, so retrying an upload that was recorded stays safe).
        """
        dataset = self.get_dataset(tenant, dataset_id)
        with self._writers.writing(dataset.id):
            return self._upload(tenant, dataset, parts, still_wanted)

    def _upload(self, tenant: str, dataset: DatasetRow, parts: Iterable[FileHeader | bytes],
                still_wanted: Callable[[], bool]) -> list[UploadOutcome]:
        budget = _Budget(self.limits, tenant, dataset, self.store.usage(dataset.id))
        in_flight = threading.BoundedSemaphore(UPLOAD_WORKERS * 2)  # bounds the bytes held in memory
        pending: list[Future[_Prepared | UploadOutcome | None]] = []
        with ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="upload") as pool:
            try:
                for count, (header, chunks) in enumerate(_files(parts), start=1):
                    if budget.exceeded:
                        raise budget.exceeded  # stop reading: no more objects for a request that fails
                    if count > MAX_FILES_PER_REQUEST:  # stop reading: the response would grow without end
                        raise InvalidArgument.field(
                            "header", f"the stream sends more than {MAX_FILES_PER_REQUEST:,} files; at most "
                            f"{MAX_FILES_PER_REQUEST:,} files per UploadImages stream (send the rest in another "
                            "stream). Nothing of this stream was recorded.")
                    received = self._receive(header, chunks)
                    if isinstance(received, UploadOutcome):
                        pending.append(_done(received))
                        continue
                    label, data = received
                    in_flight.acquire()
                    future = pool.submit(self._prepare, dataset.id, header.file_name, label, data, budget)
                    future.add_done_callback(lambda _: in_flight.release())
                    pending.append(future)
            finally:
                prepared = [f.result() for f in pending]
        if not still_wanted():
            raise Aborted("the upload was cut off before it ended; nothing of it was recorded")
        return self._commit(tenant, dataset, prepared, budget)

    def _receive(self, header: FileHeader, chunks: Iterator[bytes]) -> tuple[str, bytes] | UploadOutcome:
        """A file's (label, bytes), or its rejection for its name, size, completeness or label.

        A rejected file's name is repeated cut to MAX_FILE_NAME_BYTES, so no result is larger.
        """
        name_problem = _name_problem("file_name", header.file_name, MAX_FILE_NAME_BYTES)
        buffer = bytearray()
        received = 0
        for chunk in chunks:  # always drain the file's chunks, even once it is rejected
            received += len(chunk)
            if received <= self.limits.max_image_bytes and not name_problem:
                buffer += chunk
            elif buffer:
                buffer = bytearray()  # over the limit: keep counting, stop holding
        name = cut_utf8(header.file_name, MAX_FILE_NAME_BYTES)
        if name_problem:
            return UploadOutcome(name, "rejected", reason=name_problem)
        if header.size_bytes < 0:
            return UploadOutcome(name, "rejected", reason=(
                f"size_bytes is {header.size_bytes:,}; give the file's size in bytes, or 0 when it is not known"))
        if received > self.limits.max_image_bytes:
            return UploadOutcome(name, "rejected", reason=self.limits.image_too_big(received))
        if header.size_bytes and len(buffer) != header.size_bytes:
            return UploadOutcome(name, "rejected", reason=f"incomplete: {len(buffer)} of {header.size_bytes} bytes arrived")
        try:
            label = rules.validate_label(header.label) if header.label else ""
        except InvalidArgument as exc:
            return UploadOutcome(name, "rejected", reason=f"bad label: {exc.description}")
        return label, bytes(buffer)

    def _prepare(self, dataset_id: str, name: str, label: str, data: bytes, budget: _Budget) -> _Prepared | UploadOutcome | None:
        """Validate by decoding and write the object (unless stored already); no row yet.

        None when a new image would pass a limit (`budget.exceeded` says which): its object is not written.
        """
        if len(data) > self.limits.max_image_bytes:
            return UploadOutcome(name, "rejected", reason=self.limits.image_too_big(len(data)))
        try:
            with self._decoding.hold(images.decode_pixels(data)):  # bounded memory across all uploads
                info = images.inspect_image(data, max_bytes=self.limits.max_image_bytes,
                                            max_pixels=self.limits.max_image_pixels)
        except images.InvalidImage as exc:
            return UploadOutcome(name, "rejected", reason=self.limits.rejection(exc))
        image_id = hashlib.sha256(data).hexdigest()
        if self.store.get_image(dataset_id, image_id) is None:
            if not budget.take(image_id, len(data)):
                return None
            self.objects.put_bytes(image_key(dataset_id, image_id), data, content_type=_CONTENT_TYPES[info.format])
        return _Prepared(image_id, ImageRow(image_id, name, label, info.format, info.width, info.height, len(data), 0.0))

    def _commit(self, tenant: str, dataset: DatasetRow, prepared: list[_Prepared | UploadOutcome | None],
                budget: _Budget) -> list[UploadOutcome]:
        """Insert the rows of the stored files in one transaction, within the limits; the rest are duplicates."""
        if budget.exceeded:
            raise budget.exceeded
        rows = [p.row for p in prepared if isinstance(p, _Prepared)]
        inserted = iter(self.store.insert_images(
            dataset.id, rows, self.clock(), lambda usage: self.limits.check(tenant, dataset, usage)))
        outcomes = []
        for p in prepared:
            if isinstance(p, UploadOutcome):  # a reason may carry the object store's or Pillow's words
                outcomes.append(replace(p, reason=cut_utf8(p.reason, MAX_REASON_BYTES)))
            elif isinstance(p, _Prepared):
                outcomes.append(UploadOutcome(p.row.file_name, "stored" if next(inserted) else "duplicate", p.image_id))
        return outcomes

    def list_images(self, tenant: str, dataset_id: str, label: str, unlabeled_only: bool, page_size: int, page_token: str):
        dataset = self.get_dataset(tenant, dataset_id)
        if label and unlabeled_only:
            raise InvalidArgument.field("label", "must be empty when unlabeled_only is set")
        if label:
            try:
                label = rules.validate_label(label)  # a label no image can have is a mistake; NFC, as stored
            except InvalidArgument:  # unless images hold it: labels stored before today's rules stay listable
                label = unicodedata.normalize("NFC", label)
                if label not in self.store.class_counts(dataset.id)[0]:
                    raise
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_images(dataset.id, label or None, unlabeled_only, offset, limit)
        return rows, paging.next_token(offset, limit, len(rows))

    def import_manifest(self, tenant: str, dataset_id: str, manifest_key: str = "", content: bytes = b"") -> list[UploadOutcome]:
        """Ingest the images an ExeML manifest lists from this deployment's bucket.

        The manifest is an object (`manifest_key`) or sent inline (`content`). A tenant
        reads only its own objects: the manifest key and every source must lie under
        `imports/<tenant>/` or under `datasets/<id>/` of one of the tenant's live
        datasets (`importable`). Limits apply as for an upload. A manifest has at most
        MAX_MANIFEST_BYTES and MAX_FILES_PER_REQUEST lines with a source; a malformed line
        refuses the whole manifest (INVALID_ARGUMENT on the field it came in, naming the
        line). A source that cannot be imported (another bucket, a key S3 would refuse, an
        object not the tenant's or not an image) is rejected by itself; the others go on.
        """
        dataset = self.get_dataset(tenant, dataset_id)
        if bool(manifest_key) == bool(content):
            raise InvalidArgument.field("manifest_key", "give either manifest_key or manifest_content")
        field_name = "manifest_key" if manifest_key else "manifest_content"
        if len(content) > MAX_MANIFEST_BYTES:
            raise InvalidArgument.field("manifest_content", f"is {len(content):,} bytes; at most {MAX_MANIFEST_BYTES:,} inline")
        owned: dict[str, bool] = {}
        if manifest_key:
            problem = _name_problem("the key", manifest_key, MAX_OBJECT_KEY_BYTES)
            if problem:
                raise InvalidArgument.field("manifest_key", problem)
            if not self.importable(tenant, manifest_key, owned):
                raise InvalidArgument.field("manifest_key", _not_importable(tenant, manifest_key))
            size = self.objects.size(manifest_key)
            if size > MAX_MANIFEST_BYTES:  # refused before it is read
                raise InvalidArgument.field(
                    "manifest_key", f"object {shown(manifest_key)} is {size:,} bytes; a manifest has at most {MAX_MANIFEST_BYTES:,}")
        entries = manifest.parse_manifest(content or self.objects.get_bytes(manifest_key), field_name)
        if len(entries) > MAX_FILES_PER_REQUEST:
            raise InvalidArgument.field(
                field_name, f"has {len(entries):,} lines with a source; at most {MAX_FILES_PER_REQUEST:,} per "
                "ImportManifest call: split the manifest into parts of at most that many lines and import "
                "each (the CLI and the SDK split local manifests themselves). Nothing was imported.")
        source_bytes = len(f"s3://{self.objects.bucket}/".encode()) + MAX_OBJECT_KEY_BYTES
        with self._writers.writing(dataset.id):  # image objects are written before their rows
            budget = _Budget(self.limits, tenant, dataset, self.store.usage(dataset.id))
            outcomes: list[_Prepared | UploadOutcome | None] = []
            for entry in entries:
                if budget.exceeded:
                    raise budget.exceeded
                source = cut_utf8(f"s3://{entry.bucket}/{entry.object_key}", source_bytes)
                if entry.bucket != self.objects.bucket:
                    outcomes.append(UploadOutcome(source, "rejected", reason=f"source is not in bucket {self.objects.bucket!r}"))
                    continue
                problem = _name_problem("the object key", entry.object_key, MAX_OBJECT_KEY_BYTES)
                if problem:  # refused before the store sees it (S3 refuses such keys, and the answer must not vary)
                    outcomes.append(UploadOutcome(source, "rejected", reason=problem))
                    continue
                if not self.importable(tenant, entry.object_key, owned):
                    outcomes.append(UploadOutcome(source, "rejected", reason=_not_importable(tenant, entry.object_key)))
                    continue
                try:
                    label = rules.validate_label(entry.label) if entry.label else ""
                    size = self.objects.size(entry.object_key)
                    if size > self.limits.max_image_bytes:  # refused before it is read
                        outcomes.append(UploadOutcome(source, "rejected", reason=self.limits.image_too_big(size)))
                        continue
                    data = self.objects.get_bytes(entry.object_key)
                except (InvalidArgument, NotFound) as exc:
                    outcomes.append(UploadOutcome(source, "rejected", reason=exc.message))
                    continue
                outcomes.append(self._prepare(dataset.id, source, label, data, budget))
            return self._commit(tenant, dataset, outcomes, budget)

    def importable(self, tenant: str, key: str, owned: dict[str, bool] | None = None) -> bool:
        """Whether `tenant` may import the object at `key`.

        Only the tenant's own objects: under `imports/<tenant>/` (the staging prefix an
        operator grants the tenant's own S3 user) or under `datasets/<id>/` of one of the
        tenant's live datasets. A key with an empty, `.` or `..` segment is refused
        whatever its prefix, so no server-side path normalisation can lead elsewhere.
        The answer depends on the key and the tenant's own datasets only, never on what
        another tenant has. `owned` caches dataset ids already looked up.
        """
        segments = key.split("/")
        if any(s in ("", ".", "..") for s in segments) or "\\" in key:
            return False
        if len(segments) > 2 and f"{segments[0]}/" == IMPORTS_PREFIX and segments[1] == tenant:
            return True
        if len(segments) > 2 and segments[0] == "datasets":
            cache = {} if owned is None else owned
            if segments[1] not in cache:
                row = self.store.find_dataset(tenant, segments[1])
                cache[segments[1]] = row is not None and row.id == segments[1]  # by id, never by display name
            return cache[segments[1]]
        return False

    # labels ----------------------------------------------------------------------
    def set_labels(self, tenant: str, dataset_id: str, assignments: list[tuple[str, str]]) -> int:
        """Apply every (image_id, label) change or none; an empty label removes it.

        An image named twice with the same label counts once; named with two different
        labels, the call is refused (INVALID_ARGUMENT naming both positions), as its
        outcome would hang on the order. Returns the number of images whose label changed.
        """
        dataset = self.get_dataset(tenant, dataset_id)
        if len(assignments) > MAX_LABEL_ASSIGNMENTS:
            raise InvalidArgument.field("assignments", f"{len(assignments)} changes; at most {MAX_LABEL_ASSIGNMENTS} per call")
        checked: dict[str, str] = {}
        position: dict[str, int] = {}
        for index, (image_id, label) in enumerate(assignments):
            if not image_id:
                raise InvalidArgument.field(f"assignments[{index}].image_id", "is required")
            if not _IMAGE_ID.fullmatch(image_id):
                raise InvalidArgument.field(
                    f"assignments[{index}].image_id",
                    f"{shown(image_id)} is not an image id; an image id is the SHA-256 of its bytes, 64 lowercase hex digits")
            try:
                label = rules.validate_label(label) if label else ""
            except InvalidArgument as exc:
                raise exc.renamed(f"assignments[{index}].label") from None
            if image_id in checked and checked[image_id] != label:
                first = position[image_id]
                raise InvalidArgument.field(
                    f"assignments[{index}].label",
                    f"image {image_id} is given {shown(label)} here and {shown(checked[image_id])} at "
                    f"assignments[{first}]; give each image one label per call")
            checked[image_id] = label
            position.setdefault(image_id, index)
        ids = list(checked)
        missing = sorted(set(ids) - self.store.existing_image_ids(dataset.id, ids))
        if missing:
            listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5:,} more" if len(missing) > 5 else "")
            raise NotFound(f"dataset {shown(dataset.display_name)} has no image {listed}")
        return self.store.set_labels(dataset.id, list(checked.items()), self.clock())

    def rename_class(self, tenant: str, dataset_id: str, label: str, new_label: str) -> int:
        dataset = self.get_dataset(tenant, dataset_id)
        if not label:
            raise InvalidArgument.field("label", "is required")
        try:
            new_label = rules.validate_label(new_label)
        except InvalidArgument as exc:
            raise exc.renamed("new_label") from None
        label = unicodedata.normalize("NFC", label)  # labels are stored in NFC (rules.validate_label)
        changed = self.store.rename_label(dataset.id, label, new_label, self.clock())
        if not changed:
            raise NotFound(f"no image of dataset {shown(dataset.display_name)} is labeled {shown(label)}")
        return changed

    # deletion --------------------------------------------------------------------
    def delete_dataset(self, tenant: str, dataset_id: str) -> None:
        """Hide the dataset at once; purge its rows and objects after the retention period.

        A job already started on one of its versions reads immutable objects that stay
        until the purge, and the retention outlasts the longest job (6000 minutes), so it
        finishes normally. A job still queued never starts: the scheduler checks the
        dataset before dispatch (and every TRAINYARD_DATASET_CHECK_SECONDS) and ends it
        FAILED, saying the dataset was deleted. Model versions live under models/, which
        the purge leaves alone; the scheduler keeps serving them by the dataset's id.
        """
        dataset = self.get_dataset(tenant, dataset_id)
        self.store.mark_deleted(dataset.id, self.clock())
        log.info("dataset.deleted", dataset_id=dataset.id, tenant=tenant)

    def sweep_orphans(self, grace_seconds: float) -> int:
        """Delete image objects that no image row references, older than `grace_seconds`.

        Uploads write objects before their rows commit; one cut off, refused over a
        limit, or killed leaves objects nobody sees. They are invisible (every read
        goes through the rows) but take space: this removes them. Datasets with an
        upload in progress are skipped; the grace period protects objects of uploads
        in another process during a rolling restart.
        """
        removed = 0
        cutoff = self.clock() - grace_seconds
        for dataset_id in self.store.live_dataset_ids():
            with self._writers.sweeping(dataset_id) as free:
                if not free:
                    continue
                known = self.store.image_ids(dataset_id)
                for key, modified in self.objects.list_modified(f"datasets/{dataset_id}/images/"):
                    if key.rsplit("/", 1)[-1] not in known and modified < cutoff:
                        self.objects.delete(key)
                        removed += 1
        if removed:
            log.info("dataset.orphans_removed", objects=removed)
        return removed

    def purge_deleted(self, retention_seconds: float) -> list[str]:
        """Remove datasets deleted more than `retention_seconds` ago: objects first, then rows.

        Only `datasets/<id>/` (images, manifests); trained models (`models/<id>/`) stay.
        """
        purged = []
        for dataset_id in self.store.deleted_before(self.clock() - retention_seconds):
            for key in self.objects.list_keys(f"datasets/{dataset_id}/"):
                self.objects.delete(key)
            self.store.purge(dataset_id)
            purged.append(dataset_id)
            log.info("dataset.purged", dataset_id=dataset_id)
        return purged

    # S1 --------------------------------------------------------------------------
    def check_trainability(self, tenant: str, dataset_id: str) -> TrainabilityReport:
        dataset = self.get_dataset(tenant, dataset_id)
        counts, unlabeled = self.store.class_counts(dataset.id)
        return TrainabilityReport(rules.check_trainability(counts), counts, unlabeled)

    # versions --------------------------------------------------------------------
    def publish(
        self, tenant: str, dataset_id: str, version_name: str = "", train_ratio: str | None = None, seed: int = 0
    ) -> VersionView:
        """Publish the labeled images as an immutable version (S2, S3).

        ``train_ratio`` None (left out) means the default, 0.8; any text given, the
        empty string included, is checked as typed (S3), so "" is refused.
        Every input is checked before anything is written. The version exists once
        its row commits; manifest and metadata are written before that.
        """
        dataset = self.get_dataset(tenant, dataset_id)
        ratio_text = rules.DEFAULT_TRAIN_RATIO if train_ratio is None else train_ratio
        ratio = rules.parse_train_ratio(ratio_text)
        if version_name:
            rules.validate_version_name(version_name)
        with self._publish_lock:
            existing = self.store.list_versions(dataset.id)
            name = version_name or rules.next_version_name(v.name for v in existing)
            if any(v.name == name for v in existing):
                raise AlreadyExists(f"dataset {shown(dataset.display_name)} has a version {shown(name)} already")
            samples = self.store.labeled_samples(dataset.id)
            rules.require_trainable(Counter(label for _, label, _ in samples))
            parent = next(  # the same ratio by value: "0.80000" continues a version of "0.8"
                (v for v in reversed(existing) if Decimal(v.train_ratio) == ratio and v.seed == seed), None
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
                raise AlreadyExists(f"dataset {shown(dataset.display_name)} has a version {shown(name)} already")
        log.info("version.published", dataset_id=dataset.id, version=name, samples=len(samples), ratio=ratio_text)
        return self._view(row)

    def get_version(self, tenant: str, dataset_id: str, name: str) -> VersionView:
        dataset = self.get_dataset(tenant, dataset_id)
        if not name:
            raise InvalidArgument.field("version_name", "is required")
        row = self.store.get_version(dataset.id, name)
        if row is None:
            raise NotFound(f"dataset {shown(dataset.display_name)} has no version {shown(name)}")
        return self._view(row)

    def list_versions(self, tenant: str, dataset_id: str, page_size: int, page_token: str) -> tuple[list[VersionView], str]:
        dataset = self.get_dataset(tenant, dataset_id)
        offset, limit = paging.page(page_size, page_token)
        rows = self.store.list_versions(dataset.id, offset, limit)
        return [self._view(r) for r in rows], paging.next_token(offset, limit, len(rows))

    def export_manifest(self, tenant: str, dataset_id: str, name: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The version's manifest bytes, in chunks."""
        data = self.objects.get_bytes(self.get_version(tenant, dataset_id, name).row.manifest_key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start:start + chunk_bytes]

    def diff_versions(self, tenant: str, dataset_id: str, base: str, target: str) -> VersionDiff:
        dataset = self.get_dataset(tenant, dataset_id)
        rows = {}
        for field_name, name in (("base_version", base), ("target_version", target)):
            if not name:
                raise InvalidArgument.field(field_name, "is required")
            if self.store.get_version(dataset.id, name) is None:
                raise NotFound(f"dataset {shown(dataset.display_name)} has no version {shown(name)}")
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


_IMAGE_ID = re.compile(r"[0-9a-f]{64}")  # an image's SHA-256, as image ids are written
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
