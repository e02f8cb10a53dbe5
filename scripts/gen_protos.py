"""Generate the Python API stubs from protos/ into trainyard/<service>/v1/.

Usage: python scripts/gen_protos.py [--out DIR]

The generated files are committed; tests/unit/test_generated_code.py regenerates
them into a temporary folder and fails on any difference, so they never drift
from the protos and are never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    files = proto_files()
    include = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(f.relative_to(PROTOS)) for f in files),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # Every generated folder is a package (trainyard/<service>/ and trainyard/<service>/v1/).
    for f in files:
        package_dir = out / f.relative_to(PROTOS).parent
        for d in (package_dir, package_dir.parent):
            init = d / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from protos/; do not edit."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repo)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
