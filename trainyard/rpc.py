"""gRPC plumbing shared by every service: error mapping, access log, server factory.

Interceptor order (outermost first): request id → access log with error mapping.
Authentication (issue 7) slots in before the access log. Domain errors
(`trainyard.errors`) become status codes here and nowhere else; anything
unexpected becomes INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
import structlog

from trainyard import errors, metrics

log = structlog.get_logger("trainyard.rpc")

MAX_MESSAGE_BYTES = 16 * 2**20

_CODES: dict[type[errors.TrainyardError], grpc.StatusCode] = {
    cls: grpc.StatusCode[cls.code]
    for cls in (
        errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
        errors.ResourceExhausted, errors.Unavailable, errors.Aborted, errors.OutOfRange,
    )
}


def status_for(exc: errors.TrainyardError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, with BadRequest / PreconditionFailure details."""
    code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
    details: list[any_pb2.Any] = []
    if isinstance(exc, errors.InvalidArgument) and exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    if isinstance(exc, errors.FailedPrecondition) and exc.violations:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(type="S1", description=v)
                for v in exc.violations
            ]
        )
        details.append(_pack(failure))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _Aborted(Exception):
    """Raised after context.abort; carries the code for the access log."""


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """One access-log line per RPC (method, code, latency) and domain errors → status codes."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith("/grpc.health") or method.startswith("/grpc.reflection"):
            return handler

        def wrap_unary(behavior):
            def wrapped(request_or_iterator, context):
                started = time.perf_counter()
                code = "OK"
                try:
                    return behavior(request_or_iterator, context)
                except Exception as exc:  # noqa: BLE001 - mapped to a status here
                    code = _abort(context, exc, method)
                finally:
                    _access_log(method, code, started, context)

            return wrapped

        def wrap_stream(behavior):
            def wrapped(request_or_iterator, context):
                started = time.perf_counter()
                code = "OK"
                try:
                    yield from behavior(request_or_iterator, context)
                except GeneratorExit:
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status here
                    code = _abort(context, exc, method)
                finally:
                    _access_log(method, code, started, context)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> str:
    if isinstance(exc, errors.TrainyardError):
        status = status_for(exc)
    elif _is_grpc_abort(exc, context):
        raise exc
    else:
        log.error("rpc.unexpected_error", method=method, exc_info=exc)
        status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error: {type(exc).__name__}")
    code_name = grpc.StatusCode(_code_tuple(status.code)).name
    context.abort_with_status(rpc_status.to_status(status))
    return code_name  # not reached: abort_with_status raises


def _is_grpc_abort(exc: Exception, context: grpc.ServicerContext) -> bool:
    code = context.code() if hasattr(context, "code") else None
    return code is not None and code != grpc.StatusCode.OK


def _code_tuple(value: int):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def _access_log(method: str, code: str, started: float, context: grpc.ServicerContext) -> None:
    set_code = context.code() if hasattr(context, "code") else None
    if set_code is not None and code == "OK":
        code = set_code.name
    seconds = time.perf_counter() - started
    metrics.record_rpc(method, code, seconds)
    log.info("rpc", method=method, code=code, latency_ms=round(seconds * 1000, 2))


class RequestIdInterceptor(grpc.ServerInterceptor):
    """Binds a request id (the client's x-request-id, or a new one) to the log context."""

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex[:16]
        structlog.contextvars.bind_contextvars(request_id=request_id)
        return continuation(handler_call_details)


@dataclass
class RunningServer:
    """A started server: stop it gracefully with `stop`."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: Sequence[str]

    def stop(self, grace: float = 5.0, drain: float = 0.0) -> None:
        """Graceful shutdown: health NOT_SERVING for `drain` seconds while calls still arrive
        (load balancers and probes notice), then refuse new calls and let those in flight
        finish within `grace`."""
        for name in (*self.service_names, ""):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain:
            time.sleep(drain)
        self.server.stop(grace).wait()


def create_server(
    address: str,
    register: Callable[[grpc.Server], None],
    service_names: Iterable[str],
    *,
    max_workers: int = 64,
) -> RunningServer:
    """Build, bind and start a server with health checking and reflection.

    `address` may use port 0 (tests): the bound port is returned.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[RequestIdInterceptor(), ErrorMappingInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server)
    names = list(service_names)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise errors.Unavailable(f"cannot bind {address}")
    server.start()
    for name in (*names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, names)


def serve_until_signal(running: RunningServer, on_stop: Callable[[], None] = lambda: None, drain: float = 0.0) -> None:
    """Block until SIGINT/SIGTERM, then shut down gracefully (see RunningServer.stop)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("server.stopping", drain_seconds=drain)
    on_stop()
    running.stop(drain=drain)
    log.info("server.stopped")


def channel(address: str) -> grpc.Channel:
    """A client channel with the same message limits as the servers."""
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )


_ERRORS_BY_CODE = {code: cls for cls, code in _CODES.items()}


def domain_error(exc: grpc.RpcError) -> errors.TrainyardError:
    """The domain error for a failed call to another service, keeping its details.

    Lets a service pass another's verdict through unchanged (the scheduler relays
    the dataset service's S1 report, for example).
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _ERRORS_BY_CODE.get(code)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.Unavailable(message or "service unavailable")
    if cls is None:
        error = errors.TrainyardError(message or code.name)
        error.code = code.name
        return error
    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    if cls is errors.InvalidArgument:
        violations = []
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations += [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
        return errors.InvalidArgument(message, violations)
    if cls is errors.FailedPrecondition:
        violations = []
        for detail in status.details if status else ():
            failure = error_details_pb2.PreconditionFailure()
            if detail.Unpack(failure):
                violations += [v.description for v in failure.violations]
        return errors.FailedPrecondition(message, violations)
    return cls(message)
