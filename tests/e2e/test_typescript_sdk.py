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
from pathlib import Path

import pytest

from trainyard.sample_data import write_digits
from trainyard.stack.local import LocalStack, StackSettings

pytestmark = pytest.mark.e2e

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"


def npm(*args: str) -> None:
    subprocess.run(["npm", *args], cwd=SDK, check=True, timeout=300)


@pytest.fixture(scope="module")
def built_sdk() -> Path:
    if shutil.which("npm") is None:
        pytest.fail("npm (Node.js 20 or newer) is needed to build the TypeScript SDK")
    stamp = SDK / "node_modules" / ".trainyard-installed"
    wanted = hashlib.sha256((SDK / "package-lock.json").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        npm("ci", "--no-audit", "--no-fund")
        stamp.write_text(wanted)
    npm("run", "build")  # always: the generated code must match today's protos
    return SDK / "dist" / "examples" / "e2e.js"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(StackSettings(data_dir=tmp_path_factory.mktemp("stack"), minute_seconds=1.0,
                                     heartbeat_seconds=1.0, heartbeat_timeout_seconds=10.0))
    stack.start()
    yield stack
    stack.stop()


def test_typescript_sdk_trains_and_resumes_its_watch(built_sdk, stack, tmp_path):
    images = tmp_path / "digits"
    write_digits(images, per_class=8)
    stderr = tmp_path / "stderr.txt"
    command = ["node", str(built_sdk), "--dataset-address", stack.address("dataset"),
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
    assert evaluation["validationSamples"] == 16 and evaluation["classes"] == 10
    # a refusal lists its reasons from the error details
    refusal = summary["refusal"]
    assert refusal["code"] == "FailedPrecondition"
    assert refusal["violations"] and all(v["subject"] == "S1" for v in refusal["violations"])
