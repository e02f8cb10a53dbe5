"""The TypeScript SDK (clients/typescript) against the whole local stack.

Builds the SDK (`npm ci` when its node_modules is missing or stale, then `npm run
build`, which regenerates the messages from protos/ and compiles), runs its example
script (upload, a tiny training job, watch, model version) and checks the JSON it
prints. The scheduler is killed and restarted while the script watches, so the
watch must resume from the last sequence over a really dropped connection, with
its API key.

A second, smaller stack (dataset and scheduler only) runs mutual TLS with a
development CA; the SDK's `check-connection` example calls it with and without
the API key, the CA and the client certificate, given as options, through the
TRAINYARD_* variables, or found in the stack's stack.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainyard.sample_data import write_digits
from trainyard.stack.local import LocalStack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "typescript"


def npm(*args: str) -> None:
    done = subprocess.run(["npm", *args], cwd=SDK, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def fingerprint(*paths: Path) -> str:
    """SHA-256 over the files' names and bytes (folders: every file below, except generated code)."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            if not file.is_relative_to(SDK / "src" / "gen"):
                digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def node_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """This environment without TRAINYARD_* settings (nothing found by accident), plus `variables`;
    TRAINYARD_DATA_DIR is `data_dir` unless given."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRAINYARD_")}
    return {**env, "TRAINYARD_DATA_DIR": str(data_dir), **variables}


def build_sdk() -> Path:
    """`npm ci` when node_modules is missing or older than the lock file, `npm run build`
    (generate from protos/, then tsc) when any input changed since the last build."""
    installed = SDK / "node_modules" / ".trainyard-installed"
    lock = fingerprint(SDK / "package-lock.json")
    if not installed.exists() or installed.read_text() != lock:
        npm("ci", "--no-audit", "--no-fund")
        installed.write_text(lock)
    built = SDK / "dist" / ".trainyard-built"
    inputs = fingerprint(REPO / "protos", *(SDK / name for name in (
        "protos", "src", "examples", "test", "buf.gen.yaml", "tsconfig.json", "package-lock.json")))
    if not built.exists() or built.read_text() != inputs:
        npm("run", "build")
        built.write_text(inputs)
    return SDK / "dist" / "examples"


@pytest.fixture(scope="module")
def sdk_build():
    """The SDK's build, running in the background while the stack starts."""
    if shutil.which("npm") is None:
        pytest.fail("npm (Node.js 20 or newer) is needed to build the TypeScript SDK")
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(build_sdk)


def test_typescript_sdk_trains_and_resumes_its_watch(sdk_build, stack, tmp_path):
    script_js = sdk_build.result(timeout=600) / "e2e.js"
    images = tmp_path / "digits"
    write_digits(images, per_class=8)
    stderr = tmp_path / "stderr.txt"
    command = ["node", str(script_js), "--dataset-address", stack.address("dataset"),
               "--scheduler-address", stack.address("scheduler"), "--api-key", stack.api_key, "--images", str(images)]
    lines: list[dict] = []
    with stderr.open("w") as err, subprocess.Popen(command, cwd=SDK, stdout=subprocess.PIPE, stderr=err, text=True,
                                                   env=node_env(tmp_path)) as script:
        assert script.stdout is not None
        restarted = False
        for line in script.stdout:
            lines.append(json.loads(line))
            if "event" in lines[-1] and not restarted:
                # Drop the watch's connection: SIGKILL the scheduler and bring it back on its port.
                stack.kill("scheduler")
                time.sleep(0.5)
                stack.start_service("scheduler")
                restarted = True
        assert script.wait(timeout=120) == 0, stderr.read_text()
    log = stderr.read_text()

    summary = lines[-1]["summary"]
    assert summary["state"] == "COMPLETED", summary["errorMessage"] or log
    assert summary["modelVersion"] == "V001"
    assert summary["stored"] == 80 and summary["rejected"] == 0
    assert summary["retriedJobId"] == summary["jobId"]  # same request id, same job
    # every event exactly once, in order, through the restart
    sequences = summary["sequences"]
    assert sequences == list(range(1, len(sequences) + 1))
    events = [line["event"] for line in lines if "event" in line]
    assert [int(e["sequence"]) for e in events] == sequences
    assert events[-1].get("final") is True and "final" not in events[-2]
    assert summary["reconnects"] >= 1 and "resuming after sequence" in log, log
    # the model version's evaluation came through the typed client
    evaluation = summary["evaluation"]
    assert 0.0 <= evaluation["accuracy"] <= 1.0
    assert 0 < evaluation["validationSamples"] < 80 and evaluation["classes"] == 10
    # a refusal lists every failing rule, read from the error details
    refusal = summary["refusal"]
    assert refusal["code"] == "FailedPrecondition"
    assert len(refusal["violations"]) >= 2 and all(v["subject"] == "S1" for v in refusal["violations"])


# mutual TLS ------------------------------------------------------------------------------


def check_connection(sdk_build, stack: LocalStack, tmp_path: Path, *, api_key: bool = True, ca: bool = True,
                     client_cert: bool = True, flags: bool = True, **env: str) -> dict:
    """Runs the SDK's check-connection example; its one line of JSON, {"ok": …} or {"error": …}."""
    certificates = stack.certificates
    assert certificates is not None
    command = ["node", str(sdk_build.result(timeout=600) / "check-connection.js")]
    if flags:
        command += ["--dataset-address", stack.address("dataset"), "--scheduler-address", stack.address("scheduler")]
        command += ["--api-key", stack.api_key] if api_key else []
        command += ["--tls-ca", str(certificates.ca)] if ca else []
        command += ["--tls-cert", str(certificates.client_cert), "--tls-key", str(certificates.client_key)] if client_cert else []
    done = subprocess.run(command, cwd=SDK, capture_output=True, text=True, timeout=60, env=node_env(tmp_path, **env))
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert done.returncode == (0 if "ok" in result else 1), done.stderr
    return result


def test_typescript_sdk_calls_an_mtls_stack_with_its_key_and_certificates(sdk_build, mtls_stack, tmp_path):
    result = check_connection(sdk_build, mtls_stack, tmp_path)
    assert result["ok"]["listed"] is True and "free-gpu" in result["ok"]["flavors"], result


def test_typescript_sdk_reads_key_and_certificates_from_the_environment(sdk_build, mtls_stack, tmp_path):
    certificates = mtls_stack.certificates
    assert certificates is not None
    # the TRAINYARD_* variables, with another tenant's key
    from_variables = check_connection(
        sdk_build, mtls_stack, tmp_path, flags=False,
        TRAINYARD_DATASET_ADDRESS=mtls_stack.address("dataset"),
        TRAINYARD_SCHEDULER_ADDRESS=mtls_stack.address("scheduler"),
        TRAINYARD_API_KEY=mtls_stack.create_api_key("tenant-b"),
        TRAINYARD_TLS_CA=str(certificates.ca),
        TRAINYARD_TLS_CLIENT_CERT=str(certificates.client_cert),
        TRAINYARD_TLS_CLIENT_KEY=str(certificates.client_key),
    )
    assert from_variables["ok"]["listed"] is True, from_variables
    # nothing but the stack's data directory: addresses, key file and certificates from its stack.json
    from_stack = check_connection(sdk_build, mtls_stack, tmp_path, flags=False, TRAINYARD_DATA_DIR=str(mtls_stack.data_dir))
    assert from_stack["ok"]["listed"] is True, from_stack


def test_typescript_sdk_without_the_api_key_is_unauthenticated(sdk_build, mtls_stack, tmp_path):
    error = check_connection(sdk_build, mtls_stack, tmp_path, api_key=False)["error"]
    assert error["code"] == "Unauthenticated" and "authorization: Bearer" in error["message"], error


def test_typescript_sdk_refuses_a_server_whose_ca_it_does_not_trust(sdk_build, mtls_stack, tmp_path):
    # No CA given: Node.js's public CAs do not include the development CA.
    error = check_connection(sdk_build, mtls_stack, tmp_path, ca=False)["error"]
    assert error["cause"] == "UNABLE_TO_VERIFY_LEAF_SIGNATURE" and "certificate" in error["message"], error


def test_typescript_sdk_without_a_client_certificate_is_refused_by_an_mtls_stack(sdk_build, mtls_stack, tmp_path):
    # The server ends the TLS session; Connect for Node.js sees the stream cut (CANCELED).
    error = check_connection(sdk_build, mtls_stack, tmp_path, client_cert=False)["error"]
    assert error["code"] != "Unauthenticated", error
