"""Timestamps a user sends: checked against the range google.protobuf.Timestamp allows."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from trainyard.errors import InvalidArgument
from trainyard.scheduler.v1 import scheduler_service_pb2 as api
from trainyard.timeconv import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    request_seconds,
    request_times,
)

RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"seconds": 10**15},
            f"seconds 1000000000000000 is outside {MIN_TIMESTAMP_SECONDS} to {MAX_TIMESTAMP_SECONDS}",
        ),
        ({"seconds": -(10**12)}, "seconds -1000000000000 is outside"),
        ({"seconds": MAX_TIMESTAMP_SECONDS + 1}, "is outside"),
        ({"seconds": MIN_TIMESTAMP_SECONDS - 1}, "is outside"),
        ({"nanos": -5}, "nanos -5 is outside 0 to 999999999"),
        ({"nanos": 10**9}, "nanos 1000000000 is outside"),
    ],
)
def test_an_invalid_timestamp_is_invalid_argument_naming_the_field_and_the_range(fields, words):
    with pytest.raises(InvalidArgument) as exc:
        request_seconds(timestamp_pb2.Timestamp(**fields), "end_time")
    assert [v.field for v in exc.value.violations] == ["end_time"]
    assert exc.value.message.startswith("end_time: is not a valid timestamp (")
    assert words in exc.value.message and RANGE in exc.value.message


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ({}, 0.0),
        ({"seconds": MIN_TIMESTAMP_SECONDS}, float(MIN_TIMESTAMP_SECONDS)),
        ({"seconds": MAX_TIMESTAMP_SECONDS, "nanos": 999_999_999}, MAX_TIMESTAMP_SECONDS + 1.0),
        ({"seconds": 1, "nanos": 500_000_000}, 1.5),
    ],
)
def test_every_valid_timestamp_converts(fields, seconds):
    assert request_seconds(timestamp_pb2.Timestamp(**fields), "t") == pytest.approx(seconds)


def test_request_times_use_field_presence_and_name_every_bad_field():
    assert request_times(api.GetUsageRequest(), "start_time", "end_time") == [None, None]
    epoch = api.GetUsageRequest(end_time=timestamp_pb2.Timestamp(seconds=0))
    assert request_times(epoch, "start_time", "end_time") == [
        None,
        0.0,
    ]  # sent as 0: the epoch, not left out
    both = api.GetUsageRequest(
        start_time=timestamp_pb2.Timestamp(nanos=-1),
        end_time=timestamp_pb2.Timestamp(seconds=10**15),
    )
    with pytest.raises(InvalidArgument) as exc:
        request_times(both, "start_time", "end_time")
    assert [v.field for v in exc.value.violations] == ["start_time", "end_time"]
    assert (
        exc.value.message.startswith("start_time: is not a valid timestamp")
        and "; end_time: " in exc.value.message
    )
