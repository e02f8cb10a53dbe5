"""gRPC plumbing shared by every service: error mapping, access log, server factory.

One interceptor wraps every handler, in this order: it binds the request id
(the client's x-request-id, or a new one) to the log context, authenticates the
caller (`trainyard.auth`: API key or internal token; only health checks need
none), maps errors and writes one access-log line per RPC
(method, code, tenant, key id, latency). Domain errors (`trainyard.errors`) become status codes here and
nowhere else; anything unexpected becomes INTERNAL, logged with its traceback.

Servers are threaded (`grpc.server`) except where a service streams to very many
clients at once: the scheduler runs an asyncio server (`grpc.aio`) whose unary
handlers still run in a thread pool and whose watch streams are coroutines.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from trainyard import auth, errors, metrics
from trainyard.tls import ClientTls, ServerTls

log = structlog.get_logger("trainyard.rpc")

MAX_MESSAGE_BYTES = 16 * 2**20

_CODES: dict[type[errors.TrainyardError], grpc.StatusCode] = {
    cls: grpc.StatusCode[cls.code]
    for cls in (
        errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
        errors.ResourceExhausted, errors.Unavailable, errors.Aborted, errors.OutOfRange,
        errors.Unauthenticated, errors.PermissionDenied,
    )
}


# An error travels in two response headers (grpc-message, percent-encoded, and the Status in
# grpc-status-details-bin, base64), and clients refuse headers over 8 KiB: a message that quoted a
# huge input would reach them as RESOURCE_EXHAUSTED instead of its own code. These bounds keep both
# headers within about 5 KiB, whatever the text.
MESSAGE_BYTES = 768  # of the message, UTF-8
DETAILS_BYTES = 1536  # of the BadRequest / PreconditionFailure details, serialized
_DETAIL_CHARACTERS = 200  # of one violation's field or description


def status_for(exc: errors.TrainyardError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, with BadRequest / PreconditionFailure details
    (the violations in order, as many as fit in DETAILS_BYTES)."""
    code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
    details: list[any_pb2.Any] = []
    if isinstance(exc, errors.InvalidArgument) and exc.violations:
        bad = error_details_pb2.BadRequest()
        for v in exc.violations:
            bad.field_violations.add(field=_cut(v.field), description=_cut(v.description))
            if bad.ByteSize() > DETAILS_BYTES:
                del bad.field_violations[-1]
                break
        details.append(_pack(bad))
    if isinstance(exc, errors.FailedPrecondition) and exc.violations:
        failure = error_details_pb2.PreconditionFailure()
        for description in exc.violations:
            failure.violations.add(type="S1", description=_cut(description))
            if failure.ByteSize() > DETAILS_BYTES:
                del failure.violations[-1]
                break
        details.append(_pack(failure))
    return status_pb2.Status(code=code.value[0], message=errors.cut_utf8(exc.message, MESSAGE_BYTES, f"… (cut; {len(exc.message):,} characters in all)"), details=details)


def _cut(text: str, characters: int = _DETAIL_CHARACTERS) -> str:
    return text if len(text) <= characters else f"{text[: characters - 1]}…"


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _Aborted(Exception):
    """Raised after context.abort; carries the code for the access log."""


class CallInterceptor(grpc.ServerInterceptor):
    """Request id → authentication → error mapping → access log, around every handler."""

    def __init__(self, authenticator: auth.Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(self, continuation, handler_call_details):
        return _wrap(continuation(handler_call_details), handler_call_details.method, self.authenticator)


class AioCallInterceptor(grpc.aio.ServerInterceptor):
    """The same for an asyncio server, whose handlers may be sync (run in its thread pool) or async."""

    def __init__(self, authenticator: auth.Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        return _wrap(await continuation(handler_call_details), handler_call_details.method, self.authenticator)


def _wrap(handler, method: str, authenticator: auth.Authenticator):
    """The handler with its behavior wrapped: request id, authentication, error mapping, access log."""
    if handler is None or method.startswith("/grpc.health"):
        return handler

    def _begin(context) -> None:
        """Bind the request id, then authenticate (raising Unauthenticated / PermissionDenied)."""
        metadata = dict(context.invocation_metadata() or ())
        # "-" until authenticated: a refused call must not log the previous call's caller
        structlog.contextvars.bind_contextvars(request_id=metadata.get("x-request-id") or uuid.uuid4().hex[:16],
                                               tenant="-", key="-")
        auth.bind(None)
        principal = authenticator.authenticate(method, metadata)
        auth.bind(principal)
        structlog.contextvars.bind_contextvars(tenant=principal.tenant or "-", key=principal.key_id)

    def wrap_unary(behavior):
        if inspect.iscoroutinefunction(behavior):
            async def wrapped_async(request_or_iterator, context):
                started, code = time.perf_counter(), "OK"
                try:
                    _begin(context)
                    return await behavior(request_or_iterator, context)
                except Exception as exc:  # noqa: BLE001 - mapped to a status here
                    status = _status(context, exc, method)
                    code = status.code.name
                    await context.abort(status.code, status.details, status.trailing_metadata)
                finally:
                    _access_log(method, code, started, context)
            return wrapped_async

        def wrapped(request_or_iterator, context):
            started, code = time.perf_counter(), "OK"
            try:
                _begin(context)
                return behavior(request_or_iterator, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status here
                status = _status(context, exc, method)
                code = status.code.name
                _abort(context, status)
            finally:
                _access_log(method, code, started, context)

        return wrapped

    def wrap_stream(behavior):
        if inspect.isasyncgenfunction(behavior):
            async def wrapped_async(request_or_iterator, context):
                started, code = time.perf_counter(), "OK"
                try:
                    _begin(context)
                    async for response in behavior(request_or_iterator, context):
                        yield response
                except (GeneratorExit, asyncio.CancelledError):
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status here
                    status = _status(context, exc, method)
                    code = status.code.name
                    await context.abort(status.code, status.details, status.trailing_metadata)
                finally:
                    _access_log(method, code, started, context)
            return wrapped_async

        def wrapped(request_or_iterator, context):
            started, code = time.perf_counter(), "OK"
            try:
                _begin(context)
                yield from behavior(request_or_iterator, context)
            except GeneratorExit:
                code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status here
                status = _status(context, exc, method)
                code = status.code.name
                _abort(context, status)
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


def _status(context, exc: Exception, method: str) -> grpc.Status:
    """The status to answer with; an abort already under way is re-raised untouched."""
    if isinstance(exc, errors.TrainyardError | grpc.RpcError) and not _is_active(context):
        # The client went away (cancelled, or past its deadline): reading its request stream
        # failed, or ended early and the handler refused the cut-off request. Nobody hears the
        # answer; the access log and the metrics say what happened.
        return rpc_status.to_status(status_pb2.Status(code=code_pb2.CANCELLED, message="the client cancelled the call"))
    if isinstance(exc, errors.TrainyardError):
        return rpc_status.to_status(status_for(exc))
    if isinstance(exc, grpc.aio.AbortError) or _is_grpc_abort(exc, context):
        raise exc
    log.error("rpc.unexpected_error", method=method, exc_info=exc)
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error: {type(exc).__name__}"))


def _abort(context: grpc.ServicerContext, status: grpc.Status) -> None:
    """What abort_with_status does, in a form the asyncio server's sync contexts also accept."""
    context.set_trailing_metadata(status.trailing_metadata)
    context.abort(status.code, status.details)


def _is_active(context) -> bool:
    try:
        return context.is_active()
    except (AttributeError, NotImplementedError):  # the asyncio server's contexts
        return not context.cancelled() if hasattr(context, "cancelled") else True


def _is_grpc_abort(exc: Exception, context: grpc.ServicerContext) -> bool:
    code = context.code() if hasattr(context, "code") else None
    return code is not None and code != grpc.StatusCode.OK


def _access_log(method: str, code: str, started: float, context: grpc.ServicerContext) -> None:
    set_code = context.code() if hasattr(context, "code") else None
    if set_code is not None and code == "OK":
        code = set_code.name
    seconds = time.perf_counter() - started
    metrics.record_rpc(method, code, seconds)
    log.info("rpc", method=method, code=code, latency_ms=round(seconds * 1000, 2))
    auth.bind(None)


@dataclass
class RunningServer:
    """A started server: stop it gracefully with `stop`."""

    server: grpc.Server | grpc.aio.Server
    port: int
    health: health.HealthServicer | health.aio.HealthServicer
    service_names: Sequence[str]
    loop: asyncio.AbstractEventLoop | None = None  # an asyncio server's own event loop (thread)

    def stop(self, grace: float = 5.0, drain: float = 0.0) -> None:
        """Graceful shutdown: health NOT_SERVING for `drain` seconds while calls still arrive
        (load balancers and probes notice), then refuse new calls and let those in flight
        finish within `grace`."""
        for name in (*self.service_names, ""):
            self._run(self.health.set, name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain:
            time.sleep(drain)
        if self.loop is None:
            self.server.stop(grace).wait()
        else:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)

    def _run(self, function, *args):
        """Call a (sync, or on an asyncio server async) health method."""
        if self.loop is None:
            return function(*args)
        return asyncio.run_coroutine_threadsafe(function(*args), self.loop).result()


_MESSAGE_LIMITS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
_OPTIONS = [*_MESSAGE_LIMITS, ("grpc.so_reuseport", 0)]


def create_server(
    address: str,
    register: Callable[[grpc.Server], None],
    service_names: Iterable[str],
    *,
    authenticator: auth.Authenticator,
    tls: ServerTls | None = None,
    max_workers: int = 64,
    use_asyncio: bool = False,
) -> RunningServer:
    """Build, bind and start a server with authentication, health checking and reflection.

    `address` may use port 0 (tests): the bound port is returned. With `tls`
    the port speaks TLS only (mTLS when it names a client CA). With
    `use_asyncio` the server is a grpc.aio server on an event loop of its own
    (a thread): async handlers run there, sync ones in a pool of `max_workers`.
    """
    names = list(service_names)
    if not use_asyncio:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            interceptors=[CallInterceptor(authenticator)], options=_OPTIONS,
        )
        running = RunningServer(server, 0, health.HealthServicer(), names)
        _finish_setup(running, address, register, tls)
        server.start()
    else:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="rpc-asyncio", daemon=True).start()

        async def build() -> RunningServer:
            server = grpc.aio.server(
                migration_thread_pool=futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                interceptors=[AioCallInterceptor(authenticator)], options=_OPTIONS,
            )
            running = RunningServer(server, 0, health.aio.HealthServicer(), names, loop)
            _finish_setup(running, address, register, tls)
            await server.start()
            return running

        running = asyncio.run_coroutine_threadsafe(build(), loop).result()
    for name in (*names, ""):
        running._run(running.health.set, name, health_pb2.HealthCheckResponse.SERVING)
    return running


def _finish_setup(running: RunningServer, address: str, register: Callable, tls: ServerTls | None) -> None:
    register(running.server)
    health_pb2_grpc.add_HealthServicer_to_server(running.health, running.server)
    reflection.enable_server_reflection([*running.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], running.server)
    if tls is None:
        running.port = running.server.add_insecure_port(address)
    else:
        running.port = running.server.add_secure_port(address, tls.credentials())
    if running.port == 0:
        raise errors.Unavailable(f"cannot bind {address}")


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


def channel(address: str, tls: ClientTls | None = None, credentials: auth.CallCredentials | None = None) -> grpc.Channel:
    """A client channel with the same message limits as the servers.

    TLS when `tls` is given; `credentials` are sent with every call (a call's
    own metadata, such as the tenant an internal call acts for, is kept).
    """
    if tls is None:
        ch = grpc.insecure_channel(address, options=_MESSAGE_LIMITS)
    else:
        ch = grpc.secure_channel(address, tls.credentials(), options=_MESSAGE_LIMITS)
    if credentials is None:
        return ch
    return grpc.intercept_channel(ch, _CredentialsInterceptor(credentials.metadata()))


class _CredentialsInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
):
    """Adds the caller's credential headers to every call."""

    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self.headers = headers

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        own = tuple(details.metadata or ())
        names = {name for name, _ in own}
        metadata = own + tuple(h for h in self.headers if h[0] not in names)
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: tuple | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


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
