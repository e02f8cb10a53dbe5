"""The local stack: a real S3 server and the three services as processes on loopback.

`trainyard dev up`, the demo and the tests all start the suite through this one
launcher. Each service runs as its own process (`python -m …server`), as in
production, so tests can kill and restart them for real.
"""

from __future__ import annotations

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
from trainyard.stack.s3 import S3Credentials, S3Server
from trainyard.tls import ClientTls

SERVICES = ("dataset", "scheduler", "trainer")
_MODULES = {name: f"trainyard.services.{name}.server" for name in SERVICES}


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
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("TRAINYARD_DATA_DIR", ".trainyard")),
            dataset_port=int(env.get("TRAINYARD_DATASET_PORT", 50051)),
            scheduler_port=int(env.get("TRAINYARD_SCHEDULER_PORT", 50052)),
            trainer_port=int(env.get("TRAINYARD_TRAINER_PORT", 50053)),
            s3_port=int(env.get("TRAINYARD_S3_PORT", 0)),
            minute_seconds=float(env.get("TRAINYARD_MINUTE_SECONDS", 60)),
            trainer_slots=int(env.get("TRAINYARD_TRAINER_SLOTS", 1)),
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
        self._prepare_security()
        endpoint = self.s3.start()
        self.s3_config = S3Config(endpoint.address, endpoint.credentials.access_key,
                                  endpoint.credentials.secret_key, endpoint.bucket)
        for name in services:
            self.start_service(name, timeout)
        self._write_stack_file()

    def start_service(self, name: str, timeout: float = 90) -> None:
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
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.data_dir / 'logs' / (name + '.log')}:\n{self.log_tail(name)}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become healthy within {timeout:g} s:\n{self.log_tail(name)}")
                time.sleep(0.1)

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
        for name in reversed(SERVICES):
            self.stop_service(name)
        self.s3.stop()
        (self.data_dir / "stack.json").unlink(missing_ok=True)

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
        }
        if self.certificates is not None:
            info |= {"tls_ca": str(self.certificates.ca)}
            if self.settings.mtls:
                info |= {"tls_client_cert": str(self.certificates.client_cert),
                         "tls_client_key": str(self.certificates.client_key)}
        (self.data_dir / "stack.json").write_text(json.dumps(info, indent=2))

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
