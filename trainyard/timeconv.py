"""Conversions between epoch seconds and protobuf Timestamp / Duration."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from trainyard.errors import InvalidArgument

# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def seconds(ts: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    return ts.ToNanoseconds() / 1e9


def request_seconds(ts: timestamp_pb2.Timestamp, field: str) -> float:
    """A Timestamp a user sent, in epoch seconds; INVALID_ARGUMENT naming `field` and the valid
    range when it is not a valid Timestamp (seconds or nanos out of range)."""
    problems = []
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        problems.append(
            f"seconds {ts.seconds} is outside {MIN_TIMESTAMP_SECONDS} to {MAX_TIMESTAMP_SECONDS}"
        )
    if not 0 <= ts.nanos <= MAX_NANOS:
        problems.append(f"nanos {ts.nanos} is outside 0 to {MAX_NANOS}")
    if problems:
        raise InvalidArgument.field(
            field,
            f"is not a valid timestamp ({'; '.join(problems)}); "
            "a timestamp lies from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z",
        )
    return ts.ToNanoseconds() / 1e9


def request_times(message, *fields: str) -> list[float | None]:
    """The Timestamp fields of a request in epoch seconds, None where left out (field presence,
    so the epoch itself is a time); INVALID_ARGUMENT naming every invalid one."""
    values: list[float | None] = []
    violations = []
    for field in fields:
        try:
            values.append(
                request_seconds(getattr(message, field), field) if message.HasField(field) else None
            )
        except InvalidArgument as exc:
            violations += exc.violations
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations), violations
        )
    return values
