"""How an error is cut to fit its response headers, and how values are quoted in messages."""

from __future__ import annotations

from google.rpc import error_details_pb2

from trainyard import errors
from trainyard.rpc import DETAILS_BYTES, MESSAGE_BYTES, status_for


def test_shown_quotes_short_values_whole_and_cuts_long_ones_saying_their_length():
    assert errors.shown("cat") == "'cat'"
    long = errors.shown("x" * 5000)
    assert long.startswith("'xxx") and long.endswith("… (5,000 characters)") and len(long) < 110


def test_a_huge_message_is_cut_at_a_character_boundary_and_says_so():
    for text in ("x" * 10_000, "é" * 10_000, "猫" * 10_000):
        message = status_for(errors.NotFound(text)).message
        assert len(message.encode()) <= MESSAGE_BYTES
        assert message.endswith("… (cut; 10,000 characters in all)")
        assert message.startswith(text[:100])
    assert status_for(errors.NotFound("short")).message == "short"


def test_violations_are_kept_in_order_as_many_as_fit():
    violations = [errors.FieldViolation(f"assignments[{i}].label", "x" * 500) for i in range(1000)]
    status = status_for(errors.InvalidArgument("many", violations))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert 0 < len(bad.field_violations) < 1000 and bad.ByteSize() <= DETAILS_BYTES
    assert [v.field for v in bad.field_violations] == [f"assignments[{i}].label" for i in range(len(bad.field_violations))]
    assert all(len(v.description) == 200 for v in bad.field_violations)
    s1 = status_for(errors.FailedPrecondition("S1", ["rule " * 100] * 100))
    failure = error_details_pb2.PreconditionFailure()
    assert s1.details[0].Unpack(failure) and 0 < len(failure.violations) < 100 and failure.ByteSize() <= DETAILS_BYTES
