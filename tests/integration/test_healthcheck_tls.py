"""The images' health check (`python -m trainyard.healthcheck`) against servers that speak TLS.

Each server is built the way every service builds its own: `SecurityConfig`
from an environment, then `trainyard.rpc.create_server`. The probe gets that
same environment, as it does inside a container, and dials 127.0.0.1, which
the certificates here deliberately do not name (as in a cluster, where they
name `dataset.trainyard.svc`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trainyard import healthcheck
from trainyard.auth import new_internal_token
from trainyard.config import SecurityConfig
from trainyard.rpc import create_server

SERVER_NAME = "dataset.trainyard.svc"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{name}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _certificate(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
                 usage=None, dns: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A CA, a server certificate for SERVER_NAME only (not 127.0.0.1) and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    _write(folder, "ca", _certificate("test CA", ca_key, ca_name, ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "server", _certificate("dataset", server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                                          dns=(SERVER_NAME, "dataset")), server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "client", _certificate("scheduler", client_key, ca_name, ca_key,
                                          usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key)
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem",
               folder / "client.pem", folder / "client-key.pem")


def tls_env(pki: Pki, *, mutual: bool = False) -> dict[str, str]:
    """A service's TLS environment as deploy/k8s/tls sets it."""
    env = {"TRAINYARD_TLS_CERT": str(pki.server_cert), "TRAINYARD_TLS_KEY": str(pki.server_key),
           "TRAINYARD_TLS_CA": str(pki.ca)}
    if mutual:
        env |= {"TRAINYARD_TLS_CLIENT_CA": str(pki.ca), "TRAINYARD_TLS_CLIENT_CERT": str(pki.client_cert),
                "TRAINYARD_TLS_CLIENT_KEY": str(pki.client_key)}
    return env


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[[dict[str, str]], dict[str, str]]]:
    """serve(env): a server configured by `env`; returns the env a probe in its container sees."""
    running = []

    def start(env: dict[str, str]) -> dict[str, str]:
        env = {"TRAINYARD_INTERNAL_TOKEN": new_internal_token(), "TRAINYARD_DATA_DIR": str(tmp_path), **env}
        security = SecurityConfig.from_env(env)
        server = create_server("127.0.0.1:0", lambda _: None, [], authenticator=security.authenticator(),
                               tls=security.server_tls)
        running.append(server)
        return {**env, "TRAINYARD_DATASET_LISTEN": f"0.0.0.0:{server.port}"}

    yield start
    for server in running:
        server.stop(0)


def test_plaintext_server_plaintext_probe(serve):
    env = serve({})
    assert healthcheck.check("dataset", env=env) == "SERVING"


def test_tls_probe_checks_the_certificate_against_a_name_it_holds(serve, pki):
    env = serve(tls_env(pki))
    assert healthcheck.check("dataset", env=env) == "SERVING"
    assert healthcheck.check("dataset", env={**env, "TRAINYARD_TLS_SERVER_NAME": SERVER_NAME}) == "SERVING"
    # the name is really checked: one the certificate does not hold is refused
    assert healthcheck.check("dataset", env={**env, "TRAINYARD_TLS_SERVER_NAME": "scheduler.trainyard.svc"}).startswith("UNREACHABLE")
    # and TLS was needed: a plaintext probe gets no answer
    plain = {k: v for k, v in env.items() if not k.startswith("TRAINYARD_TLS_")}
    assert healthcheck.check("dataset", env=plain).startswith("UNREACHABLE")


def test_without_a_ca_the_probe_trusts_the_servers_own_certificate(serve, pki):
    env = serve(tls_env(pki))
    del env["TRAINYARD_TLS_CA"]
    assert healthcheck.check("dataset", env=env) == "SERVING"


def test_mutual_tls_probe_presents_the_client_certificate(serve, pki):
    env = serve(tls_env(pki, mutual=True))
    assert healthcheck.check("dataset", env=env) == "SERVING"
    # without a client certificate the server refuses the handshake
    no_cert = {k: v for k, v in env.items() if k not in ("TRAINYARD_TLS_CLIENT_CA", "TRAINYARD_TLS_CLIENT_CERT",
                                                          "TRAINYARD_TLS_CLIENT_KEY")}
    assert healthcheck.check("dataset", env=no_cert).startswith("UNREACHABLE")


def test_the_command_exits_0_when_serving_and_1_otherwise(serve, pki, monkeypatch, capsys):
    env = serve(tls_env(pki, mutual=True))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert healthcheck.main(["dataset"]) == 0
    monkeypatch.setenv("TRAINYARD_TLS_SERVER_NAME", "elsewhere.example")
    assert healthcheck.main(["dataset", "--timeout", "2"]) == 1
    assert "UNREACHABLE" in capsys.readouterr().err
    monkeypatch.setenv("TRAINYARD_TLS_CERT", str(pki.server_cert.with_name("missing.pem")))
    assert healthcheck.main(["dataset"]) == 1
    assert "missing.pem" in capsys.readouterr().err
