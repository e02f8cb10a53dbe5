"""Unit tests of the version manifest (ExeML/ModelArts JSON Lines) and its metadata."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainyard.errors import InvalidArgument
from trainyard.services.dataset.manifest import (
    ManifestEntry,
    content_hash,
    manifest_lines,
    parse_manifest,
    version_metadata,
)

CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def image_id(n: int) -> str:
    return hashlib.sha256(f"image {n}".encode()).hexdigest()


def entry(n: int, label: str = "cat", usage: str = "TRAIN", **changes: Any) -> ManifestEntry:
    sample = ManifestEntry(
        image_id=image_id(n),
        object_key=f"datasets/d1/images/{image_id(n)}",
        label=label,
        usage=usage,
        label_time=datetime(2024, 4, 30, 8, 23, n % 60, tzinfo=UTC),
    )
    return dataclasses.replace(sample, **changes)


# --- writing ------------------------------------------------------------------------------


def test_line_shape_matches_modelarts() -> None:
    data = manifest_lines([entry(1)], bucket="trainyard", created=CREATED)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {
        "source": f"s3://trainyard/datasets/d1/images/{image_id(1)}",
        "usage": "TRAIN",
        "id": image_id(1),
        "annotation": [
            {
                "name": "cat",
                "type": "modelarts/image_classification",
                "annotated-by": "human",
                "creation-time": "2024-04-30 08:23:01",
            }
        ],
    }
    assert list(json.loads(data)) == ["source", "usage", "id", "annotation"]


def test_lines_are_sorted_by_image_id_and_bytes_are_deterministic() -> None:
    entries = [entry(n, usage="EVAL" if n % 3 else "TRAIN") for n in range(20)]
    data = manifest_lines(entries, bucket="b", created=CREATED)
    ids = [json.loads(line)["id"] for line in data.splitlines()]
    assert ids == sorted(ids)
    assert manifest_lines(reversed(entries), bucket="b", created=CREATED) == data


def test_times_are_written_in_utc_and_created_fills_missing_label_times() -> None:
    plus_two = timezone(timedelta(hours=2))
    entries = [
        entry(1, label_time=datetime(2024, 4, 30, 10, 0, 0, tzinfo=plus_two)),
        entry(2, label_time=None),
    ]
    lines = manifest_lines(entries, bucket="b", created=CREATED).splitlines()
    times = {
        json.loads(line)["id"]: json.loads(line)["annotation"][0]["creation-time"] for line in lines
    }
    assert times == {image_id(1): "2024-04-30 08:00:00", image_id(2): "2024-05-01 12:00:00"}


def test_unicode_labels_are_written_as_utf8() -> None:
    data = manifest_lines([entry(1, label="猫")], bucket="b", created=CREATED)
    assert "猫".encode() in data


def test_annotated_by_is_configurable() -> None:
    data = manifest_lines([entry(1)], bucket="b", created=CREATED, annotated_by="auto")
    assert json.loads(data)["annotation"][0]["annotated-by"] == "auto"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry(1, image_id="ABC"), "SHA-256"),
        (entry(1, object_key=""), "no object key"),
        (entry(1, label=""), "no label"),
        (entry(1, usage=""), "not TRAIN or EVAL"),
        (entry(1, usage="TEST"), "not TRAIN or EVAL"),
        (entry(1, label_time=datetime(2024, 1, 1)), "no timezone"),
    ],
)
def test_incomplete_entries_are_refused(bad: ManifestEntry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        manifest_lines([bad], bucket="b", created=CREATED)


def test_duplicate_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        manifest_lines([entry(1), entry(1, label="dog")], bucket="b", created=CREATED)


# --- reading and round trips ----------------------------------------------------------------


def test_round_trip() -> None:
    entries = [
        entry(n, label=["cat", "dog"][n % 2], usage=["TRAIN", "EVAL"][n % 3 == 0])
        for n in range(12)
    ]
    data = manifest_lines(entries, bucket="trainyard", created=CREATED)
    parsed = parse_manifest(data)
    expected = sorted(entries, key=lambda e: e.image_id)
    assert parsed == [
        ManifestEntry(e.image_id, e.object_key, e.label, e.usage, e.label_time, "trainyard")
        for e in expected
    ]
    assert manifest_lines(parsed, bucket="trainyard", created=CREATED) == data


labels = st.text(
    st.characters(categories=["L", "Nd"]) | st.sampled_from(" _-."), min_size=1, max_size=20
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))
keys = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), labels, st.sampled_from(["TRAIN", "EVAL"]), times, keys),
        unique_by=lambda row: row[0],
        max_size=30,
    )
)
def test_round_trip_property(rows: list[tuple[int, str, str, datetime, str]]) -> None:
    entries = [
        ManifestEntry(image_id(n), key, label, usage, when) for n, label, usage, when, key in rows
    ]
    data = manifest_lines(entries, bucket="bkt", created=CREATED)
    parsed = parse_manifest(data)
    assert parsed == sorted(
        (
            ManifestEntry(e.image_id, e.object_key, e.label, e.usage, e.label_time, "bkt")
            for e in entries
        ),
        key=lambda e: e.image_id,
    )
    assert manifest_lines(parsed, bucket="bkt", created=CREATED) == data


def test_imported_exeml_manifest_with_source_and_annotation_only() -> None:
    data = (
        b'{"source":"obs://exeml-bucket/flowers/rose_1.jpg","annotation":[{"name":"rose",'
        b'"type":"modelarts/image_classification","annotated-by":"human",'
        b'"creation-time":"2019-02-20 08:23:06"}]}\n'
        b'{"source":"obs://exeml-bucket/flowers/unlabeled.jpg"}\n'
        b"\n"
        b'{"source":"s3://other/tulip.jpg","usage":"EVAL","annotation":[]}\r\n'
    )
    assert parse_manifest(data) == [
        ManifestEntry(
            "",
            "flowers/rose_1.jpg",
            "rose",
            "",
            datetime(2019, 2, 20, 8, 23, 6, tzinfo=UTC),
            "exeml-bucket",
        ),
        ManifestEntry("", "flowers/unlabeled.jpg", "", "", None, "exeml-bucket"),
        ManifestEntry("", "tulip.jpg", "", "EVAL", None, "other"),
    ]


def test_byte_order_mark_and_fractional_times_are_tolerated() -> None:
    data = (
        '\ufeff{"source":"obs://b/k.jpg","annotation":[{"name":"rose",'
        '"creation-time":"2019-02-20 08:23:06.250"}]}'
    ).encode()
    [parsed] = parse_manifest(data)
    assert parsed.label_time == datetime(2019, 2, 20, 8, 23, 6, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"usage": "TRAIN"}', '"source" is missing'),
        ('{"source": 7}', '"source" is missing or not a string'),
        ('{"source": "http://b/k.jpg"}', "is not an s3:// or obs:// object URI"),
        ('{"source": "s3://bucket-only"}', "is not an s3:// or obs:// object URI"),
        ('{"source": "s3://b/k", "id": "xyz"}', "is not a lowercase SHA-256"),
        ('{"source": "s3://b/k", "id": 5}', '"id" is not a string'),
        ('{"source": "s3://b/k", "usage": "TEST"}', "usage 'TEST' is not TRAIN or EVAL"),
        ('{"source": "s3://b/k", "annotation": {"name": "x"}}', '"annotation" is not a list'),
        ('{"source": "s3://b/k", "annotation": [{"name": "a"}, {"name": "b"}]}', "has 2 labels"),
        ('{"source": "s3://b/k", "annotation": ["cat"]}', "other than an object"),
        (
            '{"source": "s3://b/k", "annotation": [{"type": "modelarts/image_classification"}]}',
            '"name" is missing',
        ),
        (
            '{"source": "s3://b/k", "annotation": [{"name": "a", "type": "modelarts/object_detection"}]}',
            "is not 'modelarts/image_classification'",
        ),
        (
            '{"source": "s3://b/k", "annotation": [{"name": "a", "creation-time": "yesterday"}]}',
            "YYYY-MM-DD HH:MM:SS",
        ),
    ],
)
def test_malformed_lines_are_reported_with_their_number(line: str, problem: str) -> None:
    good = manifest_lines([entry(1), entry(2)], bucket="b", created=CREATED)
    data = good + b"\n" + line.encode() + b"\n"
    with pytest.raises(InvalidArgument) as caught:
        parse_manifest(data)
    assert caught.value.message.startswith("manifest: line 4: ")
    assert problem in caught.value.message
    assert [v.field for v in caught.value.violations] == ["manifest"]


def test_duplicate_ids_name_both_lines() -> None:
    line = manifest_lines([entry(1)], bucket="b", created=CREATED)
    with pytest.raises(InvalidArgument, match="line 2: id .* already appears on line 1"):
        parse_manifest(line + line)


def test_non_utf8_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        parse_manifest(b'{"source": "s3://b/\xff"}')


def test_empty_manifest() -> None:
    assert parse_manifest(b"") == []


# --- metadata --------------------------------------------------------------------------------


def test_content_hash_is_sha256_hex() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


def metadata_of(written: list[ManifestEntry], **changes: Any) -> dict[str, Any]:
    """The metadata of a manifest written from ``written``, with arguments changed."""
    data = manifest_lines(written, bucket="b", created=CREATED)
    arguments: dict[str, Any] = {
        "dataset_id": "ds-1",
        "version": "v1",
        "entries": written,
        "manifest_bytes": data,
        "train_ratio": "0.8",
        "seed": 0,
        "parent_version": "",
        "created": CREATED,
    }
    return version_metadata(**{**arguments, **changes})


def test_version_metadata() -> None:
    entries = [entry(n, "dog", "TRAIN") for n in range(4)] + [entry(4, "dog", "EVAL")]
    entries += [entry(n, "cat", "TRAIN" if n < 13 else "EVAL") for n in range(5, 15)]
    data = manifest_lines(entries, bucket="b", created=CREATED)
    created = datetime(2024, 5, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    metadata = metadata_of(
        entries, version="v2", train_ratio="0.80", seed=42, parent_version="v1", created=created
    )
    assert metadata == {
        "format_version": 1,
        "dataset_id": "ds-1",
        "version": "v2",
        "parent_version": "v1",
        "created": "2024-05-01T12:30:05Z",
        "train_ratio": "0.80",
        "seed": 42,
        "classes": ["cat", "dog"],
        "counts": {"cat": {"TRAIN": 8, "EVAL": 2}, "dog": {"TRAIN": 4, "EVAL": 1}},
        "totals": {"TRAIN": 12, "EVAL": 3, "ALL": 15},
        "content_hash": hashlib.sha256(data).hexdigest(),
    }
    assert list(metadata["counts"]) == ["cat", "dog"]
    json.dumps(metadata)  # serializable as it is


def test_first_version_has_no_parent() -> None:
    metadata = metadata_of([entry(1)], parent_version="")
    assert metadata["parent_version"] is None
    assert metadata_of([entry(1)], parent_version=None)["parent_version"] is None
    assert metadata["created"] == "2024-05-01T12:00:00Z"


def test_metadata_refuses_a_bad_ratio_and_naive_time() -> None:
    with pytest.raises(InvalidArgument):
        metadata_of([entry(1)], train_ratio="1")
    with pytest.raises(ValueError, match="no timezone"):
        metadata_of([entry(1)], created=datetime(2024, 1, 1))


def test_metadata_refuses_entries_that_do_not_match_the_manifest() -> None:
    with pytest.raises(ValueError, match="2 entries were given for a manifest of 1 lines"):
        metadata_of([entry(1)], entries=[entry(1), entry(2)])


def test_metadata_refuses_unlabeled_or_unsplit_samples() -> None:
    with pytest.raises(ValueError, match="lacks a label or usage"):
        metadata_of([entry(1)], entries=[entry(1, usage="")])
