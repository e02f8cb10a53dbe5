"""Pretrained weights given as objects in the deployment's bucket, copied to a local cache.

The trainer never downloads weights from the internet. A deployment that wants training to
start from ImageNet weights either fills the local torch hub cache
(``$TORCH_HOME/hub/checkpoints``, read by training.py) or puts the files in its bucket:

* ``pretrained/<torchvision file>``: the file torchvision publishes for the architecture,
  under its own name (``pretrained/resnet18-f37072fd.pth``, see
  ``presets.pretrained_weights_file``). The name carries the start of the file's SHA-256,
  which is checked when the object is copied;
* ``pretrained/<arch>.pth`` (``pretrained/resnet18.pth``): any state dict of the stock
  torchvision architecture, for example weights trained elsewhere. Used only when the
  torchvision-named object is absent.

``materialise_pretrained`` finds the object for an architecture and copies it into a local
directory (a temp file, then a rename: readers never see a partial file), once: a local copy
with the object's size and last-modified time is reused. Training then loads it through
``TrainConfig.pretrained_path`` and records ``pretrained:store:<key>``. training.py itself never
touches the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
import torch

from trainyard.errors import FailedPrecondition
from trainyard.services.trainer.presets import ARCHITECTURES, pretrained_weights_file

log = structlog.get_logger(__name__)

STORE_PREFIX = "pretrained/"  # the bucket's folder of pretrained weights
STALE_PART_SECONDS = 6 * 3600  # a partial copy this old was left by a killed trainer
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.pth$")  # torchvision's: resnet18-f37072fd.pth


class WeightsStore(Protocol):
    """What is read from the object store (trainyard.objectstore.ObjectStore has it)."""

    def list_modified(self, prefix: str = "") -> list[tuple[str, float]]: ...

    def size(self, key: str) -> int: ...

    def get_file(self, key: str, path: str | Path) -> None: ...


@dataclass(frozen=True)
class StoreWeights:
    """An object of the store's ``pretrained/`` folder and its local copy."""

    key: str
    path: Path

    @property
    def source(self) -> str:
        """``TrainConfig.pretrained_source``: the run records ``pretrained:store:<key>``."""
        return f"store:{self.key}"


def store_keys(arch: str) -> list[str]:
    """The keys that may hold ``arch``'s pretrained weights, the preferred one first."""
    if arch not in ARCHITECTURES:
        return []
    keys = []
    # no torchvision weights for it: only <arch>.pth
    with contextlib.suppress(ValueError, AttributeError, KeyError):
        keys.append(STORE_PREFIX + pretrained_weights_file(arch))
    keys.append(f"{STORE_PREFIX}{arch}.pth")
    return keys


def default_cache_dir() -> Path:
    """Where copies of the store's weights go: beside torch's own cache, apart from it
    (``$TORCH_HOME/hub/trainyard-store``), so that they are never mistaken for its files."""
    return Path(torch.hub.get_dir()) / "trainyard-store"


def materialise_pretrained(
    objects: WeightsStore, arch: str, cache_dir: str | Path | None = None
) -> StoreWeights | None:
    """The store's pretrained weights for ``arch``, copied into ``cache_dir`` (default:
    ``default_cache_dir()``); None when the bucket has none for it.

    The local copy is named after the object and carries its last-modified time; it is reused
    while its size and that time match the object's, so a job copies it at most once. A
    torchvision-named object whose content does not match the hash in its name is a
    FailedPrecondition. Object-store errors propagate (they end the job: a deployment that
    provides weights does not silently train without them).
    """
    keys = store_keys(arch)
    if not keys:
        return None
    listed = dict(objects.list_modified(STORE_PREFIX))
    key = next((k for k in keys if k in listed), None)
    if key is None:
        return None
    size = objects.size(key)
    modified_ns = round(listed[key] * 1e9)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / key.removeprefix(STORE_PREFIX)
    if _is_copy(path, size, modified_ns):
        return StoreWeights(key, path)
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(cache)
    partial = cache / f".{path.name}.{uuid.uuid4().hex}.part"  # own name: concurrent jobs
    try:
        objects.get_file(key, partial)
        _check(partial, key, size)
        os.utime(partial, ns=(modified_ns, modified_ns))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("pretrained.copied", key=key, path=str(path), bytes=size)
    return StoreWeights(key, path)


def _remove_stale_parts(cache: Path) -> None:
    """Delete partial copies a killed trainer left behind (any copy in progress is far younger)."""
    cutoff = time.time() - STALE_PART_SECONDS
    for part in cache.glob(".*.part"):
        with contextlib.suppress(FileNotFoundError):  # another job removed it first
            if part.stat().st_mtime < cutoff:
                part.unlink()


def _is_copy(path: Path, size: int, modified_ns: int) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return stat.st_size == size and stat.st_mtime_ns == modified_ns


def _check(path: Path, key: str, size: int) -> None:
    """The copy is whole and, for a torchvision-named object, the file that name promises."""
    copied = path.stat().st_size
    if copied != size:
        raise FailedPrecondition(f"object {key} copied incompletely: {copied} of {size} bytes")
    named = _HASH_IN_NAME.search(key)
    if named is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    if not digest.hexdigest().startswith(named.group(1)):
        raise FailedPrecondition(
            f"object {key} is not the file torchvision publishes under that name (its SHA-256 "
            f"starts {digest.hexdigest()[: len(named.group(1))]}, not {named.group(1)}); upload "
            f"torchvision's file, or put other weights at {STORE_PREFIX}<arch>.pth"
        )
