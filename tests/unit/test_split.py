"""Unit and property tests of the seeded, stratified, stable TRAIN/EVAL split (S3)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainyard.services.dataset.split import EVAL, TRAIN, assign_usage, seeded_key, train_count

Samples = list[tuple[str, str]]


def image_id(n: int) -> str:
    """A realistic image id: the SHA-256 of some bytes."""
    return hashlib.sha256(f"image {n}".encode()).hexdigest()


def dataset(sizes: dict[str, int], start: int = 0) -> list[tuple[str, str]]:
    """(image_id, label) samples with the given number of images per label."""
    samples = []
    n = start
    for label, size in sizes.items():
        for _ in range(size):
            samples.append((image_id(n), label))
            n += 1
    return samples


def reference_split(samples: list[tuple[str, str]], ratio: Decimal, seed: int) -> dict[str, str]:
    """The plain stratified split, written independently of the implementation."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for image, label in samples:
        by_label[label].append(image)
    usage = {}
    for images in by_label.values():
        n = len(images)
        target = int((ratio * n).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        target = 1 if n == 1 else min(max(target, 1), n - 1)
        keyed = sorted(images, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        usage.update({image: TRAIN if k < target else EVAL for k, image in enumerate(keyed)})
    return usage


def per_class(samples: list[tuple[str, str]], usage: dict[str, str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for image, label in samples:
        counts[label][usage[image]] += 1
    return counts


# --- strategies -------------------------------------------------------------------------

ratios = st.integers(1, 99_999).map(lambda n: Decimal(n).scaleb(-5).normalize())
seeds = st.integers(-(2**31), 2**31)
sizes = st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 30), min_size=1)


@st.composite
def datasets(draw: st.DrawFn) -> list[tuple[str, str]]:
    return dataset(draw(sizes))


# --- train_count ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "ratio", "expected"),
    [
        (0, "0.8", 0),
        (1, "0.8", 1),
        (1, "0.1", 1),
        (2, "0.8", 1),
        (2, "0.1", 1),
        (5, "0.8", 4),
        (5, "0.5", 3),  # 2.5 rounds half up
        (5, "0.3", 2),  # 1.5 rounds half up
        (7, "0.5", 4),  # 3.5 rounds half up
        (10, "0.75", 8),  # 7.5 rounds half up
        (10, "0.99999", 9),  # clamped: one image stays in EVAL
        (10, "0.00001", 1),  # clamped: one image goes to TRAIN
        (1797, "0.8", 1438),  # 1437.6
    ],
)
def test_train_count(n: int, ratio: str, expected: int) -> None:
    assert train_count(n, Decimal(ratio)) == expected


def test_seeded_key_is_sha256_of_seed_and_id() -> None:
    assert seeded_key(7, "ab") == hashlib.sha256(b"7:ab").hexdigest()


# --- the plain split --------------------------------------------------------------------


def test_example_split() -> None:
    samples = dataset({"cat": 5, "dog": 10})
    usage = assign_usage(samples, Decimal("0.8"), seed=0)
    counts = per_class(samples, usage)
    assert counts["cat"] == Counter({TRAIN: 4, EVAL: 1})
    assert counts["dog"] == Counter({TRAIN: 8, EVAL: 2})
    assert list(usage) == sorted(usage)


def test_seed_changes_the_split() -> None:
    samples = dataset({"cat": 50, "dog": 50})
    assert assign_usage(samples, Decimal("0.5"), 1) != assign_usage(samples, Decimal("0.5"), 2)


def test_duplicate_image_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        assign_usage([(image_id(1), "cat"), (image_id(1), "dog")], Decimal("0.8"), 0)


@pytest.mark.parametrize("ratio", ["0", "1", "1.5"])
def test_ratio_outside_0_1_is_refused(ratio: str) -> None:
    with pytest.raises(ValueError):
        assign_usage(dataset({"cat": 5}), Decimal(ratio), 0)


def test_bad_previous_usage_is_refused() -> None:
    with pytest.raises(ValueError):
        assign_usage(dataset({"cat": 5}), Decimal("0.8"), 0, {image_id(0): "TEST"})


@given(datasets(), ratios, seeds, st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(
    samples: Samples, ratio: Decimal, seed: int, rnd: random.Random
) -> None:
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    assert assign_usage(shuffled, ratio, seed) == assign_usage(samples, ratio, seed)


@given(datasets(), ratios, seeds)
def test_per_class_counts_and_both_sets(samples: Samples, ratio: Decimal, seed: int) -> None:
    usage = assign_usage(samples, ratio, seed)
    assert set(usage) == {image for image, _ in samples}
    for label, counts in per_class(samples, usage).items():
        n = sum(counts.values())
        assert counts[TRAIN] == train_count(n, ratio), label
        if n >= 2:
            assert counts[TRAIN] >= 1 and counts[EVAL] >= 1
        else:
            assert counts[TRAIN] == 1


@given(datasets(), ratios, seeds)
def test_equals_the_reference_stratified_split(samples: Samples, ratio: Decimal, seed: int) -> None:
    assert assign_usage(samples, ratio, seed) == reference_split(samples, ratio, seed)


@given(datasets(), ratios, seeds, st.sampled_from([None, {}]))
def test_no_previous_or_unrelated_previous_is_the_plain_split(
    samples: Samples, ratio: Decimal, seed: int, empty: dict[str, str] | None
) -> None:
    unrelated = {image_id(10_000 + n): TRAIN for n in range(3)}
    plain = reference_split(samples, ratio, seed)
    assert assign_usage(samples, ratio, seed, empty) == plain
    assert assign_usage(samples, ratio, seed, unrelated) == plain


# --- stability across versions ----------------------------------------------------------


@given(datasets(), ratios, seeds)
def test_republishing_the_same_images_changes_nothing(
    samples: Samples, ratio: Decimal, seed: int
) -> None:
    first = assign_usage(samples, ratio, seed)
    assert assign_usage(samples, ratio, seed, first) == first


@given(datasets(), sizes, ratios, seeds)
def test_adding_images_never_moves_an_old_image(
    samples: Samples, added_sizes: dict[str, int], ratio: Decimal, seed: int
) -> None:
    first = assign_usage(samples, ratio, seed)
    grown = samples + dataset(added_sizes, start=len(samples))
    second = assign_usage(grown, ratio, seed, first)
    for image, usage in first.items():
        assert second[image] == usage
    for label, counts in per_class(grown, second).items():
        n = sum(counts.values())
        if n >= 2:
            assert counts[TRAIN] >= 1 and counts[EVAL] >= 1, label


@given(datasets(), st.lists(sizes, min_size=1, max_size=4), ratios, seeds)
def test_chain_of_versions_keeps_eval_images_out_of_train(
    samples: Samples, growths: list[dict[str, int]], ratio: Decimal, seed: int
) -> None:
    usage = assign_usage(samples, ratio, seed)
    ever_eval = {image for image, u in usage.items() if u == EVAL}
    for added in growths:
        samples = samples + dataset(added, start=len(samples))
        usage = assign_usage(samples, ratio, seed, usage)
        assert not any(usage[image] == TRAIN for image in ever_eval)
        ever_eval |= {image for image, u in usage.items() if u == EVAL}


@given(datasets(), sizes, ratios, seeds)
def test_new_images_fill_towards_the_target(
    samples: Samples, added_sizes: dict[str, int], ratio: Decimal, seed: int
) -> None:
    first = assign_usage(samples, ratio, seed)
    grown = samples + dataset(added_sizes, start=len(samples))
    second = assign_usage(grown, ratio, seed, first)
    old_counts = per_class(samples, first)
    for label, counts in per_class(grown, second).items():
        n = sum(counts.values())
        old_train = old_counts[label][TRAIN]
        old_eval = old_counts[label][EVAL]
        new = n - old_train - old_eval
        target = train_count(n, ratio)
        # TRAIN is as close to the target as keeping the old images allows
        assert counts[TRAIN] == min(max(target, old_train), old_train + new), label


def test_relabeled_image_keeps_its_set() -> None:
    samples = dataset({"cat": 10, "dog": 10})
    first = assign_usage(samples, Decimal("0.8"), 3)
    moved = next(image for image, label in samples if label == "cat" and first[image] == EVAL)
    relabeled = [(image, "dog" if image == moved else label) for image, label in samples]
    second = assign_usage(relabeled, Decimal("0.8"), 3, first)
    assert second == first


def test_class_left_all_in_train_moves_exactly_one_image() -> None:
    samples = dataset({"cat": 10, "dog": 10})
    first = assign_usage(samples, Decimal("0.8"), 5)
    # delete every EVAL cat: the remaining cats are all TRAIN
    kept = [(i, label) for i, label in samples if not (label == "cat" and first[i] == EVAL)]
    second = assign_usage(kept, Decimal("0.8"), 5, first)
    changed = [image for image, _ in kept if second[image] != first[image]]
    assert len(changed) == 1
    assert second[changed[0]] == EVAL
    cats = sorted((i for i, label in kept if label == "cat"), key=lambda i: seeded_key(5, i))
    assert changed == [cats[-1]]


def test_class_left_all_in_eval_moves_exactly_one_image() -> None:
    samples = dataset({"cat": 10, "dog": 10, "bird": 10})
    first = assign_usage(samples, Decimal("0.8"), 5)
    # one EVAL image of cat and one of dog (each has two) are relabeled into a new class
    evals = [
        next(i for i, label in samples if label == source and first[i] == EVAL)
        for source in ("cat", "dog")
    ]
    relabeled = [(i, "fox" if i in evals else label) for i, label in samples]
    second = assign_usage(relabeled, Decimal("0.8"), 5, first)
    changed = [image for image, _ in relabeled if second[image] != first[image]]
    assert len(changed) == 1
    assert second[changed[0]] == TRAIN
    assert changed == [min(evals, key=lambda i: seeded_key(5, i))]


def test_single_image_class_in_eval_stays_there() -> None:
    samples = dataset({"cat": 10})
    first = assign_usage(samples, Decimal("0.8"), 0)
    evaluated = next(image for image, u in first.items() if u == EVAL)
    relabeled = [(i, "fox" if i == evaluated else label) for i, label in samples]
    assert assign_usage(relabeled, Decimal("0.8"), 0, first)[evaluated] == EVAL


@given(datasets(), ratios, seeds, st.data())
def test_any_previous_moves_at_most_one_image_per_class(
    samples: Samples, ratio: Decimal, seed: int, data: st.DataObject
) -> None:
    ids = [image for image, _ in samples]
    previous = data.draw(st.dictionaries(st.sampled_from(ids), st.sampled_from([TRAIN, EVAL])))
    usage = assign_usage(samples, ratio, seed, previous)
    moved: Counter[str] = Counter(
        label for image, label in samples if image in previous and usage[image] != previous[image]
    )
    assert all(count == 1 for count in moved.values())
    for label, counts in per_class(samples, usage).items():
        if sum(counts.values()) >= 2:
            assert counts[TRAIN] >= 1 and counts[EVAL] >= 1, label
