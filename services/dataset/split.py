"""The seeded, stratified, stable split of a dataset version into TRAIN and EVAL (S3).

The plain split, per class of n images:

- the TRAIN count is ``train_count(n, ratio)``: ratio × n rounded half up (exact
  decimal arithmetic, so 0.5 × 5 = 2.5 gives 3), then clamped so that a class of
  two or more images has at least one image in each set; a class of one image
  goes to TRAIN;
- the images are ordered by a seeded key, ``sha256(f"{seed}:{image_id}")``, and
  the first ones go to TRAIN. The result depends only on the images, labels, ratio
  and seed, never on input order, Python's ``hash`` or ``random``.

Stability: given the usage map of the previous version (published with the same
ratio and seed), every image present in both keeps its set, even if it was
relabeled, and the new images of each class fill towards that class's TRAIN
count. Keeping every old image is always possible except in one case: a class of
two or more images that gained no new image and whose images all sit in one set
(images were deleted, or relabeled into it). Then exactly one image moves: the
first in key order goes EVAL → TRAIN, or the last goes TRAIN → EVAL. A
one-image class whose image is in EVAL keeps it there (the "≥ 1 in each set" rule
cannot hold for it either way, and S1 refuses to train such a class anyway).
Because old images keep their sets, a class's counts may drift from the target
after deletions; new images pull them back.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

TRAIN = "TRAIN"
EVAL = "EVAL"
USAGES = (TRAIN, EVAL)


def train_count(n: int, ratio: Decimal) -> int:
    """How many of a class's ``n`` images the plain split puts in TRAIN.

    ratio × n rounded half up, clamped to [1, n - 1] when n ≥ 2; 1 when n = 1.
    """
    if n <= 1:
        return max(n, 0)
    target = int((ratio * n).to_integral_value(rounding=ROUND_HALF_UP))
    return min(max(target, 1), n - 1)


def seeded_key(seed: int, image_id: str) -> str:
    """The key that orders images within a class: sha256 of "<seed>:<image_id>"."""
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def assign_usage(
    samples: Sequence[tuple[str, str]],
    ratio: Decimal,
    seed: int,
    previous: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map each image id to "TRAIN" or "EVAL" (see the module docstring for the rules).

    ``samples`` are (image_id, label) pairs, each image id once. ``previous`` is the
    usage map of the earlier version published with the same ratio and seed; images
    it names that are no longer in ``samples`` are ignored. The result is sorted by
    image id.
    """
    if not Decimal(0) < ratio < Decimal(1):
        raise ValueError(f"ratio must lie strictly between 0 and 1, got {ratio}")
    previous = previous or {}
    for image_id, set_name in previous.items():
        if set_name not in USAGES:
            raise ValueError(f"previous usage of {image_id} is {set_name!r}, not TRAIN or EVAL")
    usage: dict[str, str] = {}
    for images in _group_by_label(samples).values():
        ordered = sorted(images, key=lambda image_id: (seeded_key(seed, image_id), image_id))
        usage.update(_assign_class(ordered, ratio, previous))
    return dict(sorted(usage.items()))


def _group_by_label(samples: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Image ids per label, refusing an image id that appears twice."""
    seen: set[str] = set()
    groups: dict[str, list[str]] = defaultdict(list)
    for image_id, label in samples:
        if image_id in seen:
            raise ValueError(f"image {image_id} appears more than once")
        seen.add(image_id)
        groups[label].append(image_id)
    return groups


def _assign_class(
    ordered: list[str], ratio: Decimal, previous: Mapping[str, str]
) -> dict[str, str]:
    """The usage of one class's images, given in seeded-key order.

    Old images keep their previous set; new images take the TRAIN places left
    towards ``train_count`` (first in key order first), the rest go to EVAL.
    """
    kept = {image_id: previous[image_id] for image_id in ordered if image_id in previous}
    new = [image_id for image_id in ordered if image_id not in previous]
    kept_train = sum(1 for usage in kept.values() if usage == TRAIN)
    new_train = min(max(train_count(len(ordered), ratio) - kept_train, 0), len(new))
    usage = dict(kept)
    usage.update({image_id: TRAIN for image_id in new[:new_train]})
    usage.update({image_id: EVAL for image_id in new[new_train:]})
    _ensure_both_sets(ordered, usage)
    return usage


def _ensure_both_sets(ordered: list[str], usage: dict[str, str]) -> None:
    """Move one image if a class of two or more images sits entirely in one set.

    This happens only when no new image joined the class (new images always fill
    both sets), so moving a single old image is the fewest changes possible.
    """
    if len(ordered) < 2:
        return
    sets = set(usage.values())
    if sets == {EVAL}:
        usage[ordered[0]] = TRAIN
    elif sets == {TRAIN}:
        usage[ordered[-1]] = EVAL
