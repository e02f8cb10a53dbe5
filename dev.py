#!/usr/bin/env python3
"""Set up and run Trainyard from a fresh clone with nothing but Python 3.11.

    python3 dev.py demo    # the whole stack on a real dataset: import, train, evaluate
    python3 dev.py test    # the test suite (what CI runs)

Both create .venv and install the project into it (again only when
pyproject.toml or package-lock.json changed). Extra arguments go to the demo
or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".trainyard-installed"


def run(*cmd: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)


def fingerprint(*files: str) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in files:
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def setup(with_node_tools: bool) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs under whatever python3 the user has
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = fingerprint("pyproject.toml")
    if not STAMP.exists() or STAMP.read_text() != wanted:
        run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        STAMP.write_text(wanted)
    if with_node_tools:
        lock = ROOT / "node_modules" / ".trainyard-installed"
        wanted_node = fingerprint("package-lock.json")
        if shutil.which("npm") is None:
            sys.exit("npm is needed for the API contract checks (buf); install Node.js 20")
        if not lock.exists() or lock.read_text() != wanted_node:
            run("npm", "ci", "--no-audit", "--no-fund")
            lock.write_text(wanted_node)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit(__doc__)
    command, extra = sys.argv[1], sys.argv[2:]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if command == "demo":
        setup(with_node_tools=False)
        os.execve(BIN / "trainyard", [str(BIN / "trainyard"), "demo", *extra], env)
    setup(with_node_tools=True)
    os.execve(BIN / "python", [str(BIN / "python"), "-m", "pytest", *extra], env)


if __name__ == "__main__":
    main()
