"""Configuration read once from the environment in each service's `main`.

Every variable is documented in docs/configuration.md. Services receive frozen
dataclasses built here; nothing reads the environment later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainyard.auth import Authenticator, CallCredentials, KeyStore, read_internal_token
from trainyard.tls import ClientTls, ServerTls


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default) or default


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a whole number") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class S3Config:
    """Where the object store is and how to reach it."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    secure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        env = os.environ if env is None else env
        missing = [
            n for n in ("TRAINYARD_S3_ENDPOINT", "TRAINYARD_S3_ACCESS_KEY", "TRAINYARD_S3_SECRET_KEY") if not env.get(n)
        ]
        if missing:
            raise SystemExit(f"missing configuration: {', '.join(missing)}")
        return cls(
            endpoint=env["TRAINYARD_S3_ENDPOINT"],
            access_key=env["TRAINYARD_S3_ACCESS_KEY"],
            secret_key=env["TRAINYARD_S3_SECRET_KEY"],
            bucket=env_str(env, "TRAINYARD_S3_BUCKET", "trainyard"),
            secure=env.get("TRAINYARD_S3_SECURE", "false").lower() in ("1", "true", "yes"),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "TRAINYARD_S3_ENDPOINT": self.endpoint,
            "TRAINYARD_S3_ACCESS_KEY": self.access_key,
            "TRAINYARD_S3_SECRET_KEY": self.secret_key,
            "TRAINYARD_S3_BUCKET": self.bucket,
            "TRAINYARD_S3_SECURE": "true" if self.secure else "false",
        }


@dataclass(frozen=True)
class SecurityConfig:
    """Who may call a service, how it talks TLS, and how it calls the others.

    TRAINYARD_API_KEYS_FILE (default <TRAINYARD_DATA_DIR>/api-keys.json), the
    internal token, and the TLS variables of `trainyard.tls`.
    """

    api_keys_file: Path
    internal_token: str
    server_tls: ServerTls | None = None
    client_tls: ClientTls | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecurityConfig:
        env = os.environ if env is None else env
        data_dir = Path(env_str(env, "TRAINYARD_DATA_DIR", ".trainyard"))
        return cls(
            api_keys_file=Path(env_str(env, "TRAINYARD_API_KEYS_FILE", str(data_dir / "api-keys.json"))),
            internal_token=read_internal_token(env),
            server_tls=ServerTls.from_env(env),
            client_tls=ClientTls.from_env(env),
        )

    def authenticator(self, internal_methods: Sequence[str] = ()) -> Authenticator:
        return Authenticator(KeyStore(self.api_keys_file), self.internal_token, internal_methods)

    def internal_credentials(self) -> CallCredentials:
        """What this service presents when it calls another (the tenant is named per call)."""
        return CallCredentials(self.internal_token)
