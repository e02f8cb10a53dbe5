"""bench/load.py at tiny sizes: the script runs end to end and its nothing-lost checks pass.

The figures are not asserted (speed is for the benchmark to report); the checks are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_load_benchmark_small_loses_nothing(tmp_path):
    output = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--uploaders", "3", "--jobs", "5", "--watchers", "20",
         "--tenants", "2", "--baseline-seconds", "1", "--timeout", "240", "--output", str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    assert results["passed"] and not results["timed_out"]
    assert results["checks"] and all(results["checks"].values()), results["checks"]
    at_once = results["at_once"]
    assert at_once["uploads"]["uploaders"] == 3 and at_once["uploads"]["images"] > 0
    assert at_once["uploads"]["listed_images"] == at_once["uploads"]["stored"]
    assert at_once["jobs"]["created"] == 5 and at_once["jobs"]["states"] == {"completed": 5}
    assert at_once["watchers"]["watchers"] == 20 and at_once["watchers"]["events_delivered"] > 0
    assert results["machine"]["cpu_count"] >= 1
