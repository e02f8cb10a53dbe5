"""Shared fixtures: a real S3 server, in-process services on port 0, the whole local stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from trainyard.auth import CallCredentials, KeyStore, new_internal_token
from trainyard.config import S3Config, SecurityConfig
from trainyard.objectstore import ObjectStore
from trainyard.rpc import channel
from trainyard.stack.s3 import S3Server


@dataclass
class Security:
    """Key file and internal token shared by in-process servers, and a key for tenant `alpha`."""

    keys: KeyStore
    internal_token: str
    api_key: str

    @property
    def env(self) -> dict[str, str]:
        return {"TRAINYARD_API_KEYS_FILE": str(self.keys.path), "TRAINYARD_INTERNAL_TOKEN": self.internal_token}

    @property
    def config(self) -> SecurityConfig:
        return SecurityConfig.from_env(self.env)

    def channel(self, address: str, api_key: str | None = None, *, internal_for: str | None = None) -> grpc.Channel:
        """A channel calling as tenant `alpha` (or with `api_key`), or as a service acting for a tenant."""
        if internal_for is not None:
            return channel(address, credentials=CallCredentials(self.internal_token, internal_for))
        return channel(address, credentials=CallCredentials(api_key or self.api_key))


@pytest.fixture(scope="session")
def security(tmp_path_factory) -> Security:
    keys = KeyStore(Path(tmp_path_factory.mktemp("keys")) / "api-keys.json")
    return Security(keys, new_internal_token(), keys.create("alpha", "tests")[1])


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real local S3 server (weed mini, or minio when on PATH) for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_config(s3) -> S3Config:
    ep = s3.endpoint
    return S3Config(ep.address, ep.credentials.access_key, ep.credentials.secret_key, ep.bucket)


@pytest.fixture(scope="session")
def objects(s3) -> ObjectStore:
    return ObjectStore.from_endpoint(s3.endpoint)
