"""The API contract: buf lint (STANDARD) clean, and generated stubs equal to the protos."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def buf(*args: str) -> subprocess.CompletedProcess:
    binary = ROOT / "node_modules" / ".bin" / "buf"
    assert binary.exists(), "run `npm ci` (python3 dev.py test does it) to get @bufbuild/buf"
    return subprocess.run([str(binary), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean():
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_violation(tmp_path):
    # The check can fail: a copy of the protos with a badly named enum value is refused.
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "trainyard" / "common" / "v1" / "training.proto"
    proto.write_text(proto.read_text().replace("STOP_REASON_CONVERGED = 1", "CONVERGED = 1"))
    binary = ROOT / "node_modules" / ".bin" / "buf"
    result = subprocess.run([str(binary), "lint"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "CONVERGED" in result.stdout + result.stderr


def test_generated_stubs_match_the_protos(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "nothing was generated"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / "trainyard" / p.relative_to("trainyard"), shallow=False)]
    assert not stale, f"regenerate with `python scripts/gen_protos.py`: {stale}"


def test_no_breaking_change_against_the_committed_baseline():
    # protos/api-baseline.binpb is the released v1 API; refresh it (buf build -o …) only on purpose.
    result = buf("breaking", "--against", "protos/api-baseline.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_removed_field(tmp_path):
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "trainyard" / "scheduler" / "v1" / "scheduler.proto"
    proto.write_text(proto.read_text().replace("  string wait_reason = 8;\n", ""))
    binary = ROOT / "node_modules" / ".bin" / "buf"
    result = subprocess.run([str(binary), "breaking", "--against", str(ROOT / "protos" / "api-baseline.binpb")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "wait_reason" in result.stdout + result.stderr


def test_api_reference_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
