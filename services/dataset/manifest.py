"""A published dataset version's content: its manifest and its metadata.

The manifest is JSON Lines in the ExeML/ModelArts image-classification shape, one
sample per line, sorted by image id, so that any S3 client (and any tool that
reads ModelArts manifests) can use a version without Trainyard::

    {"source": "s3://bucket/images/ab12...", "usage": "TRAIN", "id": "ab12...",
     "annotation": [{"name": "cat", "type": "modelarts/image_classification",
                     "annotated-by": "human", "creation-time": "2024-05-01 12:00:00"}]}

Lines are written compactly (no spaces), UTF-8, each ending in a newline, so the
same version always has the same bytes and the same content hash. Times in the
manifest are UTC, with the ExeML format "YYYY-MM-DD HH:MM:SS".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainyard.errors import InvalidArgument, shown
from trainyard.services.dataset.rules import parse_train_ratio
from trainyard.services.dataset.split import EVAL, TRAIN, USAGES

ANNOTATION_TYPE = "modelarts/image_classification"
METADATA_FORMAT_VERSION = 1
SOURCE_SCHEMES = ("s3", "obs")  # obs:// is how ExeML manifests name their objects

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")
_TOO_DEEP = (
    "nests arrays or objects too deeply to read; "
    "a manifest line is one object with a list of annotations"
)
_SOURCE = re.compile(r"(?P<scheme>[a-z0-9]+)://(?P<bucket>[^/]+)/(?P<key>.+)", re.DOTALL)


@dataclass(frozen=True)
class ManifestEntry:
    """One sample of a version: an image, its label and its set.

    ``image_id`` is the image's SHA-256 (hex), ``object_key`` where its bytes lie in
    the bucket, ``usage`` "TRAIN" or "EVAL". ``label_time`` is when the label was
    set (timezone-aware); ``manifest_lines`` writes the version's creation time
    for an entry without one. ``bucket`` is filled by ``parse_manifest`` from the
    line's source and is ignored by ``manifest_lines``, which writes its own.
    Entries parsed from imported ExeML manifests may lack the id (""), the usage
    ("") and the label ("", an unlabeled image).
    """

    image_id: str
    object_key: str
    label: str
    usage: str
    label_time: datetime | None = None
    bucket: str = ""


def manifest_lines(
    entries: Iterable[ManifestEntry],
    *,
    bucket: str,
    created: datetime,
    annotated_by: str = "human",
) -> bytes:
    """The manifest of a version: one JSON line per entry, sorted by image id.

    Every entry needs an image id, a label and a usage; ``created`` (the version's
    creation time) stands in for a missing ``label_time``. Raises ValueError on an
    incomplete or duplicated entry.
    """
    ordered = sorted(entries, key=lambda entry: entry.image_id)
    lines = []
    for index, entry in enumerate(ordered):
        _check_publishable(entry)
        if index and ordered[index - 1].image_id == entry.image_id:
            raise ValueError(f"image {entry.image_id} appears more than once")
        line = {
            "source": f"s3://{bucket}/{entry.object_key}",
            "usage": entry.usage,
            "id": entry.image_id,
            "annotation": [
                {
                    "name": entry.label,
                    "type": ANNOTATION_TYPE,
                    "annotated-by": annotated_by,
                    "creation-time": _format_time(entry.label_time or created),
                }
            ],
        }
        lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


def _check_publishable(entry: ManifestEntry) -> None:
    """Refuse an entry that a published manifest cannot hold."""
    if not _IMAGE_ID.fullmatch(entry.image_id):
        raise ValueError(f"image id {shown(entry.image_id)} is not a lowercase SHA-256 hex digest")
    if not entry.object_key:
        raise ValueError(f"image {entry.image_id} has no object key")
    if not entry.label:
        raise ValueError(f"image {entry.image_id} has no label")
    if entry.usage not in USAGES:
        raise ValueError(
            f"image {entry.image_id} has usage {shown(entry.usage)}, not TRAIN or EVAL"
        )


def _format_time(moment: datetime) -> str:
    """A timezone-aware time in the manifest's format, in UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"time {moment} has no timezone")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_manifest(data: bytes, field: str = "manifest") -> list[ManifestEntry]:
    """Read a manifest written by ``manifest_lines`` or imported from ExeML/ModelArts.

    A line needs ``source`` (an s3:// or obs:// URI); ``id``, ``usage`` and
    ``annotation`` are optional (an absent or empty annotation is an unlabeled
    image). Blank lines are skipped. Raises ``InvalidArgument`` on ``field`` (the
    request field the manifest came in) naming the first malformed line by its number;
    a line whose JSON nests too deeply to read is malformed like any other.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument.field(field, f"is not UTF-8 text ({error})") from None
    entries = []
    seen_ids: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = _parse_line(line)
        except ValueError as error:
            raise InvalidArgument.field(field, f"line {number}: {error}") from None
        except RecursionError:  # the JSON decoder (or a repr) gives up on deep nesting this way
            raise InvalidArgument.field(field, f"line {number}: {_TOO_DEEP}") from None
        if entry.image_id in seen_ids:
            raise InvalidArgument.field(
                field,
                f"line {number}: id {entry.image_id} already appears on line "
                f"{seen_ids[entry.image_id]}",
            )
        if entry.image_id:
            seen_ids[entry.image_id] = number
        entries.append(entry)
    return entries


def _parse_line(line: str) -> ManifestEntry:
    """One manifest line as an entry; ValueError says what is wrong with it."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(sample, dict):
        raise ValueError("is not a JSON object")
    bucket, key = _parse_source(sample.get("source"))
    image_id = _optional_string(sample, "id")
    if image_id and not _IMAGE_ID.fullmatch(image_id):
        raise ValueError(f"id {shown(image_id)} is not a lowercase SHA-256 hex digest")
    usage = _optional_string(sample, "usage")
    if usage and usage not in USAGES:
        raise ValueError(f"usage {shown(usage)} is not TRAIN or EVAL")
    label, label_time = _parse_annotation(sample.get("annotation"))
    return ManifestEntry(image_id, key, label, usage, label_time, bucket)


def _parse_source(source: object) -> tuple[str, str]:
    """The (bucket, object key) of a source URI."""
    if not isinstance(source, str) or not source:
        raise ValueError('"source" is missing or not a string')
    match = _SOURCE.fullmatch(source)
    if match is None or match["scheme"] not in SOURCE_SCHEMES:
        raise ValueError(f'"source" {shown(source)} is not an s3:// or obs:// object URI')
    return match["bucket"], match["key"]


def _optional_string(sample: dict[str, Any], name: str) -> str:
    """A string field that may be absent (read as "")."""
    value = sample.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f'"{name}" is not a string')
    return value


def _parse_annotation(annotation: object) -> tuple[str, datetime | None]:
    """The label and label time of an annotation list; ("", None) when unlabeled."""
    if annotation is None or annotation == []:
        return "", None
    if not isinstance(annotation, list):
        raise ValueError('"annotation" is not a list')
    if len(annotation) > 1:
        raise ValueError(
            f'"annotation" has {len(annotation)} labels; image classification takes one'
        )
    item = annotation[0]
    if not isinstance(item, dict):
        raise ValueError('"annotation" holds something other than an object')
    kind = item.get("type", ANNOTATION_TYPE)
    if kind != ANNOTATION_TYPE:
        raise ValueError(f"annotation type {shown(kind)} is not {ANNOTATION_TYPE!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('annotation "name" is missing or not a string')
    return name, _parse_time(item.get("creation-time"))


def _parse_time(value: object) -> datetime | None:
    """A manifest time ("YYYY-MM-DD HH:MM:SS", fractions allowed) read as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        for form in (_TIME_FORMAT, _TIME_FORMAT + ".%f"):
            try:
                return datetime.strptime(value, form).replace(tzinfo=UTC)
            except ValueError:
                continue
    raise ValueError(f'"creation-time" {shown(value)} is not in the form YYYY-MM-DD HH:MM:SS')


def content_hash(manifest_bytes: bytes) -> str:
    """The content hash of a manifest: its SHA-256, lowercase hex."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def version_metadata(
    *,
    dataset_id: str,
    version: str,
    entries: Iterable[ManifestEntry],
    manifest_bytes: bytes,
    train_ratio: str,
    seed: int,
    parent_version: str | None,
    created: datetime,
) -> dict[str, Any]:
    """The metadata document published beside a version's manifest (JSON-ready).

    ``entries`` are the ones ``manifest_bytes`` was written from; counts come from
    them, the content hash (SHA-256 hex) from the bytes. ``train_ratio`` is kept as
    typed; an empty ``parent_version`` is written as null; ``created`` is written in
    RFC 3339, UTC ("2024-05-01T12:00:00Z"). Classes and counts are sorted by label.
    """
    parse_train_ratio(train_ratio)
    entries = list(entries)
    lines = manifest_bytes.count(b"\n")
    if len(entries) != lines:
        raise ValueError(f"{len(entries)} entries were given for a manifest of {lines} lines")
    counts: dict[str, dict[str, int]] = {}
    for entry in entries:
        if not entry.label or entry.usage not in USAGES:
            raise ValueError(f"manifest entry {shown(entry.image_id)} lacks a label or usage")
        per_set = counts.setdefault(entry.label, {TRAIN: 0, EVAL: 0})
        per_set[entry.usage] += 1
    counts = dict(sorted(counts.items()))
    totals = {usage: sum(per_set[usage] for per_set in counts.values()) for usage in USAGES}
    return {
        "format_version": METADATA_FORMAT_VERSION,
        "dataset_id": dataset_id,
        "version": version,
        "parent_version": parent_version or None,
        "created": _rfc3339(created),
        "train_ratio": train_ratio,
        "seed": seed,
        "classes": list(counts),
        "counts": counts,
        "totals": {**totals, "ALL": totals[TRAIN] + totals[EVAL]},
        "content_hash": content_hash(manifest_bytes),
    }


def _rfc3339(moment: datetime) -> str:
    """A timezone-aware time in RFC 3339, UTC, with a "Z"."""
    if moment.tzinfo is None:
        raise ValueError(f"time {moment} has no timezone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
