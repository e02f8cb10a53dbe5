"""The TypeScript SDK (clients/typescript) against the whole local stack.

Builds the SDK (`npm ci` when its node_modules is missing or stale, then `npm run
build`, which regenerates the messages from protos/ and compiles), runs its example
script (upload, a tiny training job, watch, model version) and checks the JSON it
prints. The scheduler is killed and restarted while the script watches, so the
watch must resume from the last sequence over a really dropped connection.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainyard.sample_data import write_digits

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
    return SDK / "dist" / "examples" / "e2e.js"


@pytest.fixture(scope="module")
def sdk_build():
    """The SDK's build, running in the background while the stack starts."""
    if shutil.which("npm") is None:
        pytest.fail("npm (Node.js 20 or newer) is needed to build the TypeScript SDK")
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(build_sdk)


def test_typescript_sdk_trains_and_resumes_its_watch(sdk_build, stack, tmp_path):
    script_js = sdk_build.result(timeout=600)
    images = tmp_path / "digits"
    write_digits(images, per_class=8)
    stderr = tmp_path / "stderr.txt"
    command = ["node", str(script_js), "--dataset-address", stack.address("dataset"),
               "--scheduler-address", stack.address("scheduler"), "--images", str(images)]
    lines: list[dict] = []
    with stderr.open("w") as err, subprocess.Popen(command, cwd=SDK, stdout=subprocess.PIPE, stderr=err, text=True) as script:
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
