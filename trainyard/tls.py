"""TLS for every endpoint: server certificates, optional client certificates (mTLS).

Servers: TRAINYARD_TLS_CERT and TRAINYARD_TLS_KEY (PEM) turn TLS on;
TRAINYARD_TLS_CLIENT_CA additionally requires every client to present a
certificate signed by that CA. Clients (the SDK, the CLI, and services calling
each other): TRAINYARD_TLS_CA is the CA they trust (TLS on when set);
TRAINYARD_TLS_CLIENT_CERT / TRAINYARD_TLS_CLIENT_KEY is the certificate they
present for mTLS. `trainyard.stack.devca` makes a development CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc


def _read(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"{variable}={path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # set: clients must present a certificate signed by it

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerTls | None:
        cert, key = env.get("TRAINYARD_TLS_CERT", ""), env.get("TRAINYARD_TLS_KEY", "")
        if not cert and not key:
            return None
        if not cert or not key:
            raise SystemExit("TLS needs both TRAINYARD_TLS_CERT and TRAINYARD_TLS_KEY")
        client_ca = env.get("TRAINYARD_TLS_CLIENT_CA", "")
        return cls(_read(cert, "TRAINYARD_TLS_CERT"), _read(key, "TRAINYARD_TLS_KEY"),
                   _read(client_ca, "TRAINYARD_TLS_CLIENT_CA") if client_ca else None)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ClientTls:
    root_ca: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_files(cls, ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None) -> ClientTls:
        return cls(Path(ca).read_bytes(), Path(cert).read_bytes() if cert else None, Path(key).read_bytes() if key else None)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientTls | None:
        ca = env.get("TRAINYARD_TLS_CA", "")
        if not ca:
            return None
        cert, key = env.get("TRAINYARD_TLS_CLIENT_CERT", ""), env.get("TRAINYARD_TLS_CLIENT_KEY", "")
        if bool(cert) != bool(key):
            raise SystemExit("a client certificate needs both TRAINYARD_TLS_CLIENT_CERT and TRAINYARD_TLS_CLIENT_KEY")
        return cls(_read(ca, "TRAINYARD_TLS_CA"),
                   _read(cert, "TRAINYARD_TLS_CLIENT_CERT") if cert else None,
                   _read(key, "TRAINYARD_TLS_CLIENT_KEY") if key else None)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_ca, self.private_key, self.cert_chain)
