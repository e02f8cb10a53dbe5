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


def test_an_error_after_the_client_went_away_is_counted_as_cancelled():
    """A cancelled upload stream may fail, or end early and be refused (Aborted): either way the
    client is gone, and the access log and metrics say CANCELLED, not a server error."""
    import grpc

    from trainyard.rpc import _status

    class Gone:
        def is_active(self) -> bool:
            return False

        def code(self):
            return None

    class Here(Gone):
        def is_active(self) -> bool:
            return True

    cut = errors.Aborted("the upload was cut off before it ended; nothing of it was recorded")
    assert _status(Gone(), cut, "/m").code == grpc.StatusCode.CANCELLED
    assert _status(Gone(), grpc.RpcError(), "/m").code == grpc.StatusCode.CANCELLED
    assert _status(Here(), cut, "/m").code == grpc.StatusCode.ABORTED
