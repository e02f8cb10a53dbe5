"""The object store: a small wrapper over the ``minio`` S3 client, used by every service.

All object data (images, manifests, model artifacts, reports) goes through here, to
one bucket of any S3-compatible server (MinIO in production, MinIO or SeaweedFS in
the local stack, see ``trainyard.stack.s3``).

Errors come out as domain errors (``trainyard.errors``), never as client exceptions:

* a missing key (or bucket) raises ``NotFound``;
* a server that cannot be reached (down, refusing connections, timing out, dropping
  the connection) raises ``Unavailable("object store unreachable: ...")``, and one
  that keeps answering 5xx raises ``Unavailable("object store unavailable ...")``;
  the HTTP pool uses short connect timeouts and few retries, so a down server
  fails in under a second, not minutes (a hung one: see ``make_http_client``);
* credentials the server refuses raise ``ObjectStoreAccessDenied`` (an
  ``Unavailable``: the store cannot be used until the deployment is fixed);
* any other S3 error raises ``ObjectStoreError``.

No message ever contains the credentials.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from trainyard.errors import InvalidArgument, NotFound, TrainyardError, Unavailable

if TYPE_CHECKING:
    from trainyard.stack.s3 import S3Endpoint

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
    }
)
_RETRYABLE_STATUS = (500, 502, 503, 504)


class ObjectStoreError(TrainyardError):
    """The object store answered with an error this wrapper does not expect."""


class ObjectStoreAccessDenied(Unavailable):
    """The object store refused our credentials (a deployment problem, not the user's)."""


def make_http_client(
    *, connect_timeout: float = 2.0, read_timeout: float = 20.0, max_pool: int = 32
) -> urllib3.PoolManager:
    """The urllib3 pool behind the client: short connect timeout, few retries.

    A refused connection is retried twice (backoff 0 s, then 0.4 s: about 0.4 s in
    all); a connect timeout costs ``connect_timeout`` per try. A request that was
    sent and whose answer never came (or whose pooled connection turned out dead)
    is retried once, idempotent methods only, so a hung server (accepting
    connections, never answering) costs up to ``2 * read_timeout``. 5xx answers
    are retried twice. ``read_timeout`` bounds each wait for bytes, not a whole
    transfer, so large objects are fine.
    """
    return urllib3.PoolManager(
        maxsize=max_pool,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        retries=urllib3.Retry(
            total=3,
            connect=2,
            read=1,
            status=2,
            other=0,
            backoff_factor=0.2,
            status_forcelist=_RETRYABLE_STATUS,
            raise_on_status=False,  # let the S3 error body through to minio
            respect_retry_after_header=False,  # a server's Retry-After must not stall us
        ),
    )


class ObjectStore:
    """One bucket of an S3-compatible store. Thread-safe (one client, one pool)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        *,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 20.0,
    ) -> None:
        """``endpoint`` is ``host:port``, or a URL (``http://host:port``) whose scheme
        then decides ``secure``. ``region`` None asks the server once (GetBucketLocation)."""
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"object store endpoint must be host:port or http(s)://host:port, not {endpoint!r}")
            secure = parts.scheme == "https"
            endpoint = parts.netloc
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self._secrets = tuple(s for s in (access_key, secret_key) if s)
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=make_http_client(connect_timeout=connect_timeout, read_timeout=read_timeout),
        )
        # None: not tried yet; False: the server ignores or refuses If-None-Match.
        self._conditional_put: bool | None = None

    @classmethod
    def from_endpoint(cls, ep: S3Endpoint) -> ObjectStore:
        return cls(ep.address, ep.credentials.access_key, ep.credentials.secret_key, ep.bucket, ep.secure)

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def __repr__(self) -> str:
        return f"ObjectStore({self.url}, bucket={self.bucket!r})"

    def close(self) -> None:
        """Drop pooled connections (the store stays usable; it reconnects on demand)."""
        http = getattr(self._client, "_http", None)
        if http is not None:
            http.clear()

    # -- bucket --------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe when several services race)."""
        with self._errors("bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # -- writes --------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write ``data`` to ``key``, replacing any object there (a single PUT)."""
        with self._errors(key):
            self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        length: int,
        content_type: str = "application/octet-stream",
        *,
        part_size: int = 0,
    ) -> None:
        """Upload from a readable binary stream without reading it all into memory.

        ``length`` -1 means unknown (then ``part_size``, at least 5 MiB, is needed;
        16 MiB is used when 0). Objects over one part go up as a multipart upload,
        holding a few parts in memory at a time; a failed upload is aborted.
        """
        if length < 0 and not part_size:
            part_size = 16 * 1024 * 1024
        with self._errors(key):
            self._client.put_object(
                self.bucket, key, stream, length, content_type=content_type, part_size=part_size
            )

    def put_file(self, key: str, path: str | Path, content_type: str = "application/octet-stream") -> None:
        """Upload a local file (streamed, multipart when large)."""
        with self._errors(key):
            self._client.fput_object(self.bucket, key, str(path), content_type=content_type)

    def put_json(self, key: str, obj: Any) -> None:
        """Write ``obj`` as UTF-8 JSON with sorted keys (same object, same bytes)."""
        self.put_bytes(key, _json_bytes(obj), content_type="application/json")

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write ``data`` unless ``key`` exists: True if written, False if it existed.

        Uses a conditional PUT (``If-None-Match: *``), which SeaweedFS, MinIO and AWS
        S3 honour atomically: of concurrent writers exactly one gets True. On a
        server that does not support it (it answers 501, or the first try shows the
        header being ignored) this falls back to "HEAD, then PUT", which leaves a
        race window: two writers that both see the key absent both write, the last
        one wins, and both get True. Writers that put the same bytes under a
        content-addressed key do not care.
        """
        if self._conditional_put is not False and hasattr(self._client, "_put_object"):
            with self._errors(key):
                written = self._put_conditional(key, data, content_type)
            if written is not None:
                return written
        if self.exists(key):
            return False
        self.put_bytes(key, data, content_type)
        return True

    def put_json_if_absent(self, key: str, obj: Any) -> bool:
        return self.put_if_absent(key, _json_bytes(obj), content_type="application/json")

    # -- reads ---------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """The object's content; ``NotFound`` when there is no such key."""
        with self._errors(key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_file(self, key: str, path: str | Path) -> None:
        """Download to a local file (streamed; written to a temp file, then renamed)."""
        with self._errors(key):
            self._client.fget_object(self.bucket, key, str(path))

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ObjectStoreError(f"object {key!r} is not valid JSON: {exc}") from None

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self._client.stat_object(self.bucket, key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """The object's size in bytes; ``NotFound`` when there is no such key."""
        with self._errors(key):
            return int(self._client.stat_object(self.bucket, key).size or 0)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursive, sorted); "directories" are not keys."""
        return [key for key, _ in self.list_modified(prefix)]

    def list_modified(self, prefix: str = "") -> list[tuple[str, float]]:
        """(key, last-modified epoch seconds) of every key under ``prefix``, sorted by key."""
        with self._errors(prefix or "/"):
            return sorted(
                (obj.object_name, obj.last_modified.timestamp() if obj.last_modified else 0.0)
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name and not obj.is_dir
            )

    # -- delete --------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error (as in S3)."""
        with self._errors(key):
            self._client.remove_object(self.bucket, key)

    # -- internals -----------------------------------------------------------

    def _put_conditional(self, key: str, data: bytes, content_type: str) -> bool | None:
        """True written, False existed, None: the server cannot do conditional PUTs."""
        first_try = self._conditional_put is None
        if first_try and self._exists_raw(key):
            # Cannot learn anything from a PUT that must fail; ask again next time.
            return False
        headers = _put_headers(data, content_type)
        headers["If-None-Match"] = "*"
        # minio's public put_object turns unknown headers into x-amz-meta-*, so the
        # conditional PUT goes through its low-level single-PUT method.
        for attempt in range(4):
            try:
                self._client._put_object(self.bucket, key, bytes(data), headers=headers)
            except S3Error as exc:
                if exc.code == "PreconditionFailed":
                    self._conditional_put = True
                    return False
                if exc.code == "ConditionalRequestConflict" and attempt < 3:
                    time.sleep(0.05 * (attempt + 1))  # AWS: a concurrent conditional write
                    continue
                if exc.code == "NotImplemented" or (exc.response is not None and exc.response.status == 501):
                    self._conditional_put = False
                    return None
                raise
            break
        if first_try:
            # The key was absent just before, so this PUT wrote it. A second
            # conditional PUT must now be refused, or the server ignores the header.
            try:
                self._client._put_object(self.bucket, key, bytes(data), headers=headers)
                self._conditional_put = False
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    raise
                self._conditional_put = True
        return True

    def _exists_raw(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return False
            raise
        return True

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate client and transport exceptions into domain errors."""
        try:
            yield
        except S3Error as exc:
            self._raise_s3(exc, key)
        except (ServerError, InvalidResponseError) as exc:
            raise Unavailable(
                f"object store error at {self.url}: {self._scrub(str(exc))[:300]}"
            ) from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            # (not every OSError: a missing local file in put_file is the caller's problem)
            raise Unavailable(f"object store unreachable: {self.url} ({self._describe(exc)})") from None
        except MinioException as exc:
            raise ObjectStoreError(f"object store error at {self.url}: {self._scrub(str(exc))[:300]}") from None
        except ValueError as exc:  # the client refuses the key itself ("..", empty, too long) before sending
            raise InvalidArgument(f"object key {key[:200]!r} is not valid: {exc}") from None

    def _raise_s3(self, exc: S3Error, key: str) -> NoReturn:
        code = exc.code or ""
        if code == "NoSuchBucket":
            raise NotFound(f"bucket {self.bucket!r} does not exist at {self.url}") from None
        if code in _NOT_FOUND_CODES:
            raise NotFound(f"object {key!r} not found in bucket {self.bucket!r}") from None
        if code in _AUTH_CODES:
            raise ObjectStoreAccessDenied(
                f"object store at {self.url} refused our credentials ({code}) for bucket {self.bucket!r}"
            ) from None
        status = exc.response.status if exc.response is not None else 0
        detail = self._scrub(f"{code}: {exc.message}")[:300]
        if status in _RETRYABLE_STATUS or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            raise Unavailable(f"object store unavailable at {self.url} ({detail})") from None
        raise ObjectStoreError(f"object store refused the request on {key!r} ({detail})") from None

    def _describe(self, exc: BaseException) -> str:
        """A short, credential-free reason for a transport failure."""
        reason: BaseException = exc
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            reason = exc.reason
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            cause = str(reason).rsplit(": ", 1)[-1]  # drop "<HTTPConnection object at 0x..>"
            text = f"cannot connect: {cause}"
        elif isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            text = "connect timed out"
        elif isinstance(reason, urllib3.exceptions.ReadTimeoutError | TimeoutError):
            text = "no answer before the read timeout"
        elif isinstance(reason, urllib3.exceptions.ProtocolError | ConnectionError):
            text = f"connection lost: {reason}"
        else:
            text = f"{type(reason).__name__}: {reason}"
        return self._scrub(text)[:300]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _put_headers(data: bytes, content_type: str) -> dict[str, Any]:
    # Content-Length always, even 0 (minio's low-level PUT sets it for a non-empty body only).
    return {"Content-Type": content_type, "Content-Length": str(len(data))}


def _json_bytes(obj: Any) -> bytes:
    """Strict JSON (RFC 8259): a NaN or infinite number (a metric of nothing, a diverged loss) is null."""
    return json.dumps(_finite(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj
