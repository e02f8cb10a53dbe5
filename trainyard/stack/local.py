"""The local stack: a real S3 server and the three services as processes on loopback.

`trainyard dev up`, the demo and the tests all start the suite through this one
launcher. Each service runs as its own process (`python -m …server`), as in
production, so tests can kill and restart them for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trainyard.auth import KeyStore, new_internal_token
from trainyard.config import S3Config
from trainyard.rpc import channel
from trainyard.stack.devca import DevCertificates, create_dev_ca
from trainyard.stack.s3 import S3Credentials, S3Server, S3ServerError, port_is_free
from trainyard.tls import ClientTls

SERVICES = ("dataset", "scheduler", "trainer")
_MODULES = {name: f"trainyard.services.{name}.server" for name in SERVICES}
_PORT_VARIABLES = {name: f"TRAINYARD_{name.upper()}_PORT" for name in SERVICES}
_PREVIOUS_STOP_WAIT_S = 30.0  # how long a start waits for a stack of the same data directory that is stopping
_ORPHAN_STOP_S = 15.0  # how long the services of a dead stack get to stop before they are killed


class StackError(RuntimeError):
    """The local stack could not start. `summary` says why in one line; the message adds the
    log's last lines; `log_path` is the log to read."""

    def __init__(self, summary: str, details: str = "", log_path: Path | None = None) -> None:
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary
        self.log_path = log_path


def _listens_on(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on 127.0.0.1:`port`; None where /proc cannot tell (not Linux)."""
    inodes = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if table.endswith("6") and not os.path.exists(table):  # no IPv6 in this kernel
                continue
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(fields[9])
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    links = set()
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            links.add(os.readlink(fd))
    return any(f"socket:[{inode}]" in links for inode in inodes)


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (an exited one that its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: kill(0) said it exists


def _runs(pid: int, program: str) -> bool:
    """Whether process `pid`'s command line names `program`; True where /proc cannot tell."""
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _stack_runs(pid: int, info: dict) -> bool:
    """Whether the stack stack.json describes still runs: its process is alive and, unless it is
    stopping, its dataset service's port is taken (after a reboot the pid may be another program's)."""
    if not _pid_alive(pid):
        return False
    if info.get("stopping"):
        return True
    port = str(info.get("dataset", "")).rpartition(":")[2]
    return not port.isdigit() or not port_is_free(int(port))


def _write_atomically(path: Path, text: str) -> None:
    """Replace a file whole: a reader (or a kill) in the middle never sees half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StackSettings:
    """Ports (0 picks a free one), data directory and timing of a local stack."""

    data_dir: Path
    dataset_port: int = 0
    scheduler_port: int = 0
    trainer_port: int = 0
    s3_port: int = 0
    minute_seconds: float = 60.0
    stop_grace_seconds: float = 60.0
    heartbeat_timeout_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    trainer_slots: int = 1
    s3_access_key: str = ""
    s3_secret_key: str = ""
    tls: bool = False  # every endpoint on TLS with certificates from a development CA
    mtls: bool = False  # and clients must present a certificate (implies tls)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env=None) -> StackSettings:
        """Raises StackError naming the variable when a number is not one."""
        env = os.environ if env is None else env

        def number(name: str, default: float, kind=int, low: float = 0, high: float = 65535,
                   expected: str = "a port number, 0 to 65535 (0: any free port)"):
            text = env.get(name, "")
            try:
                value = kind(text) if text.strip() else kind(default)
            except ValueError:
                value = None
            if value is None or not low <= value <= high:
                raise StackError(f"{name}={text!r}: expected {expected}")
            return value

        return cls(
            data_dir=Path(env.get("TRAINYARD_DATA_DIR", ".trainyard")),
            dataset_port=number("TRAINYARD_DATASET_PORT", 50051),
            scheduler_port=number("TRAINYARD_SCHEDULER_PORT", 50052),
            trainer_port=number("TRAINYARD_TRAINER_PORT", 50053),
            s3_port=number("TRAINYARD_S3_PORT", 0),
            minute_seconds=number("TRAINYARD_MINUTE_SECONDS", 60, float, 1e-9, float("inf"), "a positive number of seconds"),
            trainer_slots=number("TRAINYARD_TRAINER_SLOTS", 1, int, 1, float("inf"), "a whole number, 1 or more"),
            s3_access_key=env.get("TRAINYARD_S3_ACCESS_KEY", ""),
            s3_secret_key=env.get("TRAINYARD_S3_SECRET_KEY", ""),
            tls=env.get("TRAINYARD_DEV_TLS", "") in ("1", "true", "mtls"),
            mtls=env.get("TRAINYARD_DEV_TLS", "") == "mtls",
        )


class LocalStack:
    """Start with `start()`, stop with `stop()`; `kill`/`restart` one service for fault tests.

    Security is on as in production: the stack keeps an API-key file and an
    internal token in its data directory and makes one key (tenant `default`,
    admin) for the person who started it, in `dev-api-key` (mode 0600), which
    the SDK and CLI find through stack.json. With `tls`, a development CA.
    """

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        credentials = None
        if settings.s3_access_key and settings.s3_secret_key:
            credentials = S3Credentials(settings.s3_access_key, settings.s3_secret_key)
        self.s3 = S3Server(self.data_dir / "s3", port=settings.s3_port, credentials=credentials,
                           log_path=self.data_dir / "logs" / "s3.log")
        self.ports = {
            "dataset": settings.dataset_port or free_port(),
            "scheduler": settings.scheduler_port or free_port(),
            "trainer": settings.trainer_port or free_port(),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.s3_config: S3Config | None = None
        self.keys = KeyStore(self.data_dir / "api-keys.json")
        self.internal_token_file = self.data_dir / "internal-token"
        self.api_key_file = self.data_dir / "dev-api-key"
        self.certificates = DevCertificates(self.data_dir / "tls") if settings.tls or settings.mtls else None
        self.client_tls: ClientTls | None = None

    # security --------------------------------------------------------------------
    def _prepare_security(self) -> None:
        if not self.internal_token_file.exists():
            _write_secret(self.internal_token_file, new_internal_token())
        if not self.api_key_file.exists() or self.keys.authenticate(self.api_key_file.read_text().strip()) is None:
            _, key = self.keys.create("default", name="dev stack", admin=True)
            _write_secret(self.api_key_file, key)
        if self.certificates is not None:
            if not self.certificates.exists():
                create_dev_ca(self.certificates.folder)
            c = self.certificates
            self.client_tls = ClientTls.from_files(c.ca, c.client_cert, c.client_key)

    @property
    def api_key(self) -> str:
        """The stack owner's key (tenant `default`, admin)."""
        return self.api_key_file.read_text().strip()

    def create_api_key(self, tenant: str, admin: bool = False) -> str:
        """A new key for `tenant` (the services see it within a second)."""
        return self.keys.create(tenant, name="created by the local stack", admin=admin)[1]

    def client(self, api_key: str | None = None, **options):
        """An SDK client of this stack, as its owner or with another tenant's `api_key`."""
        from trainyard.sdk import Client  # the SDK is a client of the stack, not a part of it

        return Client(self.address("dataset"), self.address("scheduler"), api_key=api_key or self.api_key,
                      tls=self.client_tls, **options)

    def _security_env(self) -> dict[str, str]:
        env = {
            "TRAINYARD_API_KEYS_FILE": str(self.keys.path),
            "TRAINYARD_INTERNAL_TOKEN_FILE": str(self.internal_token_file),
        }
        if self.certificates is not None:
            c = self.certificates
            env |= {
                "TRAINYARD_TLS_CERT": str(c.server_cert), "TRAINYARD_TLS_KEY": str(c.server_key),
                "TRAINYARD_TLS_CA": str(c.ca),
                # services present the client certificate when they call each other
                "TRAINYARD_TLS_CLIENT_CERT": str(c.client_cert), "TRAINYARD_TLS_CLIENT_KEY": str(c.client_key),
            }
            if self.settings.mtls:
                env["TRAINYARD_TLS_CLIENT_CA"] = str(c.ca)
        return env

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    # lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 90, services: tuple[str, ...] = SERVICES) -> None:
        """Start S3 and the services; raises StackError, with nothing left running, when one cannot.

        Before anything starts: a stack of the same data directory that is still stopping is
        waited for, and a port of the services that another process holds (another stack,
        say) is refused, naming the port.
        """
        self._check_data_dir_free()
        self._check_ports_free(services)
        try:
            self._prepare_security()
            try:
                endpoint = self.s3.start()
            except S3ServerError as exc:
                summary, _, details = str(exc).partition("\n")
                if "already in use" in summary and self.settings.s3_port:
                    summary += " (TRAINYARD_S3_PORT chooses another)"
                raise StackError(summary, details, self.s3.log_path) from None
            self.s3_config = S3Config(endpoint.address, endpoint.credentials.access_key,
                                      endpoint.credentials.secret_key, endpoint.bucket)
            for name in services:
                self.start_service(name, timeout)
            self._write_stack_file()
        except BaseException:  # a failed or interrupted start leaves nothing running
            self.stop()
            raise

    def _check_data_dir_free(self) -> None:
        """Refuse a data directory that a running stack of another process uses; wait for one that
        is stopping; stop the services a stack left running when its process died (kill -9)."""
        info = self._stack_file_info()
        pid = info.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            return  # none, or ours
        if not _stack_runs(pid, info):
            self._stop_orphans(pid, info)
            return
        if not info.get("stopping"):
            raise StackError(f"a stack is already running from {self.data_dir} (process {pid}, dataset service at "
                             f"{info.get('dataset', '?')}); stop it first, or use another data directory")
        deadline = time.monotonic() + _PREVIOUS_STOP_WAIT_S
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise StackError(f"the stack of process {pid} from {self.data_dir} is still stopping after "
                                 f"{_PREVIOUS_STOP_WAIT_S:g} s; try again when it has stopped")
            time.sleep(0.2)

    def _stop_orphans(self, owner: int, info: dict) -> None:
        """Stop the processes stack.json records for a stack whose own process is gone: each one
        that still runs the program it was started as (a pid reused since is left alone)."""
        orphans = {name: pid for name, pid in (info.get("children") or {}).items()
                   if isinstance(pid, int) and _pid_alive(pid) and _runs(pid, self._program(name))}
        for pid in orphans.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _ORPHAN_STOP_S
        while any(_pid_alive(pid) for pid in orphans.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in orphans.values():
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if orphans:
            print(f"stopped what the stack of process {owner} left running when it died: "
                  + ", ".join(f"{name} (process {pid})" for name, pid in orphans.items()), file=sys.stderr)
        (self.data_dir / "stack.json").unlink(missing_ok=True)

    def _program(self, name: str) -> str:
        """What the command line of the stack's process `name` contains: a service's module, or
        the S3 server's data directory."""
        return _MODULES.get(name) or str(self.s3.data_dir)

    def _check_ports_free(self, services: tuple[str, ...]) -> None:
        taken = [name for name in services if not port_is_free(self.ports[name])]
        if taken:
            ports = ", ".join(f"{self.ports[name]} ({name} service)" for name in taken)
            variables = ", ".join(_PORT_VARIABLES[name] for name in taken)
            raise StackError(f"port{'s' if len(taken) > 1 else ''} {ports} on 127.0.0.1 already in use, by another "
                             f"program or another stack; stop it, or choose other ports with {variables}")

    def _stack_file_info(self) -> dict:
        try:
            info = json.loads((self.data_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def start_service(self, name: str, timeout: float = 90) -> None:
        self._check_ports_free((name,))
        (self.data_dir / "logs").mkdir(exist_ok=True)
        log_file = open(self.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", _MODULES[name]],
            env=self._env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log_file.close()
        self.wait_healthy(name, timeout)

    def _env(self) -> dict[str, str]:
        s = self.settings
        assert self.s3_config is not None
        return {
            **os.environ,
            **self.s3_config.to_env(),
            "TRAINYARD_DATA_DIR": str(self.data_dir),
            "TRAINYARD_LOG_FORMAT": "json",
            "TRAINYARD_DATASET_LISTEN": self.address("dataset"),
            "TRAINYARD_DATASET_ADDRESS": self.address("dataset"),
            "TRAINYARD_SCHEDULER_LISTEN": self.address("scheduler"),
            "TRAINYARD_SCHEDULER_ADDRESS": self.address("scheduler"),
            "TRAINYARD_TRAINER_LISTEN": self.address("trainer"),
            "TRAINYARD_TRAINER_ID": "local-trainer",
            "TRAINYARD_TRAINER_SLOTS": str(s.trainer_slots),
            "TRAINYARD_MINUTE_SECONDS": str(s.minute_seconds),
            "TRAINYARD_STOP_GRACE_SECONDS": str(s.stop_grace_seconds),
            "TRAINYARD_HEARTBEAT_TIMEOUT_SECONDS": str(s.heartbeat_timeout_seconds),
            "TRAINYARD_HEARTBEAT_SECONDS": str(s.heartbeat_seconds),
            **self._security_env(),
            **s.extra_env,
        }

    def wait_healthy(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        with channel(self.address(name), self.client_tls) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    raise self._start_failure(name, f"the {name} service exited with status {process.returncode}")
                try:
                    serving = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    serving = False
                # SERVING counts only from our process: another server on the port (another stack) answers too
                if serving and process.poll() is None and _listens_on(process.pid, self.ports[name]) is not False:
                    return
                if time.monotonic() > deadline:
                    raise self._start_failure(name, f"the {name} service did not become healthy within {timeout:g} s")
                time.sleep(0.1)

    def _start_failure(self, name: str, what: str) -> StackError:
        log = self.data_dir / "logs" / f"{name}.log"
        tail = self.log_tail(name)
        if "failed to bind" in tail.lower():
            what += f": port {self.ports[name]} on 127.0.0.1 is in use ({_PORT_VARIABLES[name]} chooses another)"
        return StackError(f"{what}; see {log}", tail, log)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL a service (fault tests)."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, name: str, timeout: float = 90) -> None:
        self.stop_service(name)
        self.start_service(name, timeout)

    def stop_service(self, name: str, timeout: float = 15) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the services and S3 (idempotent). While it runs, stack.json says the stack is stopping,
        so that a start from the same data directory waits for it instead of finding S3's store locked."""
        stack_file = self.data_dir / "stack.json"
        info = self._stack_file_info()
        if info.get("pid") == os.getpid():
            _write_atomically(stack_file, json.dumps({**info, "stopping": True}, indent=2))
        for name in reversed(SERVICES):
            self.stop_service(name)
        self.s3.stop()
        if self._stack_file_info().get("pid") == os.getpid():
            stack_file.unlink(missing_ok=True)

    def _write_stack_file(self) -> None:
        """Where the SDK and CLI find the services and their credentials by default.

        No secret in it: it names the files that hold them."""
        info = {
            "dataset": self.address("dataset"),
            "scheduler": self.address("scheduler"),
            "trainer": self.address("trainer"),
            "s3": self.s3_config.endpoint if self.s3_config else "",
            "api_key_file": str(self.api_key_file),
            "pid": os.getpid(),
            # what to stop should this process die without stopping them (kill -9): the next start does
            "children": {**{name: p.pid for name, p in self.processes.items()}, "s3": self.s3.pid},
        }
        if self.certificates is not None:
            info |= {"tls_ca": str(self.certificates.ca)}
            if self.settings.mtls:
                info |= {"tls_client_cert": str(self.certificates.client_cert),
                         "tls_client_key": str(self.certificates.client_key)}
        _write_atomically(self.data_dir / "stack.json", json.dumps(info, indent=2))

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
