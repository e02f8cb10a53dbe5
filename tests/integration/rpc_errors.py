"""Reading a refused call in the integration tests: the error itself, and the fields it names."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error(call) -> grpc.RpcError:
    """The error `call()` raises (the test fails if it raises none)."""
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value


def bad_fields(exc: grpc.RpcError) -> list[str]:
    """The fields the error's BadRequest details name, in order."""
    status = rpc_status.from_call(exc)
    assert status is not None, exc.details()
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields
