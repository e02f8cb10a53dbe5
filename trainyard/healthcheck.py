"""Ask a Trainyard server whether it is serving: `python -m trainyard.healthcheck TARGET`.

The container health check of the images (deploy/docker/Dockerfile). It calls
the standard gRPC health service (`grpc.health.v1.Health/Check`) and exits 0
when the answer is SERVING, 1 otherwise (not serving, unreachable, timed out).
Kubernetes does not need it: its probes speak gRPC health natively.

TARGET is `host:port`, or a service name (`dataset`, `scheduler`, `trainer`) for
the address that service listens on here: its `TRAINYARD_<SERVICE>_LISTEN`, as
the image sets it. A wildcard or missing host (`0.0.0.0:50051`, `[::]:50051`,
`:50051`) means this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """The serving status name (SERVING, NOT_SERVING, …), or UNREACHABLE: <code>."""
    with grpc.insecure_channel(resolve(address)) as channel:
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
