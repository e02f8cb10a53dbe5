"""Ask a Trainyard server whether it is serving: `python -m trainyard.healthcheck TARGET`.

The container health check of the images (deploy/docker/Dockerfile), and the
Kubernetes exec probe when TLS is on (the kubelet's native gRPC probe speaks
plaintext only: deploy/k8s/tls). It calls the standard gRPC health service
(`grpc.health.v1.Health/Check`, which needs no API key) and exits 0 when the
answer is SERVING, 1 otherwise (not serving, unreachable, timed out, TLS
refused).

TARGET is `host:port`, or a service name (`dataset`, `scheduler`, `trainer`) for
the address that service listens on here: its `TRAINYARD_<SERVICE>_LISTEN`, as
the image sets it. A wildcard or missing host (`0.0.0.0:50051`, `[::]:50051`,
`:50051`) means this machine.

TLS follows the service's own environment, which the probe shares: when
TRAINYARD_TLS_CERT is set the server speaks TLS only, so the probe does too. It
trusts TRAINYARD_TLS_CA, or else the server's own certificate file; when the
server demands client certificates (TRAINYARD_TLS_CLIENT_CA) it presents
TRAINYARD_TLS_CLIENT_CERT/KEY, or else the server's own pair. The probe dials
127.0.0.1, which the certificate need not name, so it checks the certificate
against TRAINYARD_TLS_SERVER_NAME, or else a name the certificate holds.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trainyard.tls import ClientTls

# The servers' own defaults (services/<name>/server.py).
_LISTEN_DEFAULTS = {"dataset": "127.0.0.1:50051", "scheduler": "127.0.0.1:50052", "trainer": "127.0.0.1:50053"}


def resolve(target: str, env: Mapping[str, str] | None = None) -> str:
    """The address to dial for TARGET (an address or a service name)."""
    env = os.environ if env is None else env
    name = target.strip().lower()
    if name in _LISTEN_DEFAULTS:
        return local_target(env.get(f"TRAINYARD_{name.upper()}_LISTEN") or _LISTEN_DEFAULTS[name])
    return local_target(target)


def local_target(address: str) -> str:
    """The address to dial for a listen address: wildcards become loopback."""
    host, sep, port = address.strip().rpartition(":")
    if not sep:
        raise ValueError(f"{address!r}: expected HOST:PORT")
    if host in ("", "0.0.0.0", "[::]", "*"):
        host = "127.0.0.1"
    return f"{host}:{port}"


@dataclass(frozen=True)
class ProbeTls:
    """How the probe speaks TLS to a server configured by the same environment."""

    client: ClientTls
    server_name: str  # what the server's certificate is checked against

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProbeTls | None:
        """None when the server speaks plaintext (no TRAINYARD_TLS_CERT)."""
        server_cert = env.get("TRAINYARD_TLS_CERT", "")
        if not server_cert:
            return None
        server_chain = Path(server_cert).read_bytes()
        ca = env.get("TRAINYARD_TLS_CA", "")
        root_ca = Path(ca).read_bytes() if ca else server_chain
        cert_chain = private_key = None
        if env.get("TRAINYARD_TLS_CLIENT_CA"):  # mutual TLS: the server wants a certificate from us too
            cert = env.get("TRAINYARD_TLS_CLIENT_CERT") or server_cert
            key = env.get("TRAINYARD_TLS_CLIENT_KEY") or env.get("TRAINYARD_TLS_KEY", "")
            cert_chain, private_key = Path(cert).read_bytes(), Path(key).read_bytes()
        name = env.get("TRAINYARD_TLS_SERVER_NAME") or certificate_name(server_chain)
        return cls(ClientTls(root_ca, cert_chain, private_key), name)


def certificate_name(pem: bytes) -> str:
    """A name the (first) certificate in `pem` is valid for: a DNS name, else an IP address, else its CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    dns = names.get_values_for_type(x509.DNSName)
    for name in dns:
        if "*" not in name:
            return name
    for name in dns:  # only wildcards: any name they cover
        return name.replace("*", "healthcheck", 1)
    for ip in names.get_values_for_type(x509.IPAddress):
        return str(ip)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


def _is_address_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return True


def check(address: str, service: str = "", timeout: float = 3.0, env: Mapping[str, str] | None = None) -> str:
    """The serving status name (SERVING, NOT_SERVING, …), or UNREACHABLE: <code>."""
    env = os.environ if env is None else env
    target = resolve(address, env)
    try:
        tls = ProbeTls.from_env(env)
    except (OSError, ValueError) as exc:
        return f"UNREACHABLE: TLS configuration: {exc}"
    if tls is None:
        channel = grpc.insecure_channel(target)
    else:
        options = []
        # The probe dials an address (127.0.0.1) the certificate need not name.
        if env.get("TRAINYARD_TLS_SERVER_NAME") or _is_address_literal(target.rpartition(":")[0]):
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, tls.client.credentials(), options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainyard.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gRPC server, or dataset / scheduler / trainer")
    parser.add_argument("--service", default="", help="service name to check (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    status = check(args.target, args.service, args.timeout)
    if status != "SERVING":
        print(f"{args.target} ({resolve(args.target)}): {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
