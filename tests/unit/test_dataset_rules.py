"""Unit tests of the dataset rules: training ratio (S3), trainability (S1), names."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainyard.errors import FailedPrecondition, InvalidArgument
from trainyard.services.dataset.rules import (
    DEFAULT_TRAIN_RATIO,
    MIN_CLASSES,
    MIN_IMAGES_PER_CLASS,
    RuleViolation,
    check_trainability,
    next_version_name,
    parse_train_ratio,
    require_trainable,
    validate_label,
    validate_version_name,
)

# --- S3: training ratio ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.8", Decimal("0.8")),
        ("0.75", Decimal("0.75")),
        ("0.12345", Decimal("0.12345")),
        ("0.00001", Decimal("0.00001")),
        ("0.99999", Decimal("0.99999")),
        ("0.80000", Decimal("0.8")),
    ],
)
def test_ratio_accepts_one_to_five_places_between_0_and_1(text: str, value: Decimal) -> None:
    assert parse_train_ratio(text) == value


def test_ratio_keeps_the_places_typed() -> None:
    assert str(parse_train_ratio("0.80000")) == "0.80000"


def test_default_ratio_is_valid() -> None:
    assert parse_train_ratio(DEFAULT_TRAIN_RATIO) == Decimal("0.8")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "is empty"),
        ("abc", "is not a decimal number"),
        ("1e-1", "is not a decimal number"),
        (" 0.8", "is not a decimal number"),
        ("0.8 ", "is not a decimal number"),
        ("NaN", "is not a decimal number"),
        ("Infinity", "is not a decimal number"),
        ("-Infinity", "is not a decimal number"),
        ("0,8", "is not a decimal number"),
        (".", "is not a decimal number"),
        ("0.8.1", "is not a decimal number"),
        ("٠.٨", "is not a decimal number"),  # Arabic-Indic digits
        ("1", "strictly between 0 and 1"),
        ("0", "strictly between 0 and 1"),
        ("0.0", "strictly between 0 and 1"),
        ("0.00000", "strictly between 0 and 1"),
        ("1.0", "strictly between 0 and 1"),
        ("-0.5", "strictly between 0 and 1"),
        ("1.5", "strictly between 0 and 1"),
        ("0.123456", "1 to 5"),
        ("0.800000", "1 to 5"),
        (".8", "leading '0.'"),
        ("+0.8", "leading '0.'"),
        ("00.8", "leading '0.'"),
    ],
)
def test_ratio_rejections_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_train_ratio(text)
    assert rule in caught.value.message
    assert [v.field for v in caught.value.violations] == ["train_ratio"]


def test_ratio_reports_every_failing_rule() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_train_ratio("1")
    assert "strictly between 0 and 1" in caught.value.message
    assert "0 decimal places" in caught.value.message


def test_leading_zero_suggestion_shows_the_accepted_form() -> None:
    with pytest.raises(InvalidArgument, match=r"write \.8 as 0\.8"):
        parse_train_ratio(".8")


@given(st.integers(min_value=1, max_value=99_999), st.integers(min_value=1, max_value=5))
def test_ratio_accepts_every_well_formed_value(digits: int, places: int) -> None:
    text = f"0.{digits % 10**places:0{places}d}"
    if Decimal(text) == 0:
        return
    assert parse_train_ratio(text) == Decimal(text)


# --- S1: trainability --------------------------------------------------------------


def test_trainable_data_has_no_violations() -> None:
    assert check_trainability({"cat": 5, "dog": 7}) == []
    require_trainable({"cat": 5, "dog": 7})


def test_constants_match_the_source_document() -> None:
    assert (MIN_CLASSES, MIN_IMAGES_PER_CLASS) == (2, 5)


def test_every_failing_rule_is_reported_classes_sorted() -> None:
    violations = check_trainability({"zebra": 1, "cat": 3, "dog": 9})
    assert violations == [
        RuleViolation(
            rule="min_images_per_class",
            message="class 'cat' has 3 labeled images; at least 5 are needed",
            count=3,
            required=5,
            label="cat",
        ),
        RuleViolation(
            rule="min_images_per_class",
            message="class 'zebra' has 1 labeled image; at least 5 are needed",
            count=1,
            required=5,
            label="zebra",
        ),
    ]


def test_one_class_fails_both_rules() -> None:
    violations = check_trainability({"cat": 3})
    assert [(v.rule, v.message) for v in violations] == [
        ("min_classes", "1 class; at least 2 are needed"),
        ("min_images_per_class", "class 'cat' has 3 labeled images; at least 5 are needed"),
    ]


def test_no_classes() -> None:
    assert [v.message for v in check_trainability({})] == ["0 classes; at least 2 are needed"]


def test_labels_without_images_are_not_classes() -> None:
    violations = check_trainability({"cat": 6, "dog": 0})
    assert [v.message for v in violations] == ["1 class; at least 2 are needed"]


def test_negative_counts_are_a_bug() -> None:
    with pytest.raises(ValueError):
        check_trainability({"cat": -1})


def test_require_trainable_lists_every_violation() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        require_trainable({"cat": 3})
    assert caught.value.violations == [
        "1 class; at least 2 are needed",
        "class 'cat' has 3 labeled images; at least 5 are needed",
    ]
    for message in caught.value.violations:
        assert message in caught.value.message


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 12), max_size=6))
def test_violations_match_the_rules(counts: dict[str, int]) -> None:
    violations = check_trainability(counts)
    classes = [label for label, count in counts.items() if count > 0]
    expected_small = sorted(label for label in classes if counts[label] < 5)
    assert [v.label for v in violations if v.rule == "min_images_per_class"] == expected_small
    assert any(v.rule == "min_classes" for v in violations) == (len(classes) < 2)


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["cat", "Golden retriever", "class_1", "v-2.0", "猫", "Ünïcödé", "नमस्ते", "a" * 64, "..."],
)
def test_valid_labels(name: str) -> None:
    assert validate_label(name) == name


def test_labels_are_normalized_to_nfc() -> None:
    assert validate_label("e\u0301") == "\u00e9"


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "is empty"),
        ("a" * 65, "65 characters long; at most 64"),
        (" cat", "must not start or end with a space"),
        ("cat ", "must not start or end with a space"),
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("cat/dog", "'/' (U+002F)"),
        ("tab\there", "U+0009"),
        ("emoji🐱", "U+1F431"),
    ],
)
def test_invalid_labels_name_the_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_label(name)
    assert rule in caught.value.message
    assert [v.field for v in caught.value.violations] == ["label"]


@pytest.mark.parametrize("name", ["v1", "2024-05-01", "release_1.2", "A", "x" * 64])
def test_valid_version_names(name: str) -> None:
    assert validate_version_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "is empty"),
        ("x" * 65, "at most 64"),
        ("-v1", "must start with an ASCII letter or digit"),
        (".hidden", "must start with an ASCII letter or digit"),
        ("v 1", "may contain only"),
        ("v1/2", "may contain only"),
        ("v1\n", "may contain only"),
        ("vé", "may contain only"),
    ],
)
def test_invalid_version_names(name: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_version_name(name)
    assert rule in caught.value.message
    assert [v.field for v in caught.value.violations] == ["version_name"]


@pytest.mark.parametrize(
    ("existing", "proposal"),
    [
        ([], "v1"),
        (["v1"], "v2"),
        (["v1", "v3", "v2"], "v4"),
        (["baseline", "v2", "release-7"], "v3"),
        (["V9", "v10x", "version3"], "v1"),
        (["v09"], "v10"),
    ],
)
def test_next_version_name(existing: list[str], proposal: str) -> None:
    assert next_version_name(existing) == proposal


@given(st.lists(st.text(max_size=6) | st.integers(0, 200).map(lambda n: f"v{n}")))
def test_proposal_is_new_and_valid(existing: list[str]) -> None:
    proposal = next_version_name(existing)
    assert proposal not in existing
    assert validate_version_name(proposal) == proposal


@pytest.mark.parametrize(
    ("existing", "proposal"),
    [
        (["v" + "9" * 63], "v1"),
        (["v1", "v2", "v" + "9" * 63], "v3"),
        (["v1", "v3", "v" + "9" * 63], "v2"),
        (["v" + "0" * 62 + "1", "v" + "9" * 63], "v2"),  # "v00…01" is number 1, taken
        (["v" + "9" * 62], "v1" + "0" * 62),  # 64 characters: still one above
    ],
)
def test_the_proposal_never_passes_64_characters(existing: list[str], proposal: str) -> None:
    """One above "v" and 63 nines would be 65 characters: the lowest free number instead."""
    assert next_version_name(existing) == proposal
    assert validate_version_name(proposal) == proposal


@given(
    st.lists(
        st.integers(1, 10**63 - 1).map(lambda n: f"v{n}") | st.sampled_from(["v" + "9" * 63]),
        max_size=8,
    )
)
def test_proposal_is_new_and_valid_near_the_length_limit(existing: list[str]) -> None:
    proposal = next_version_name(existing)
    assert proposal not in existing
    assert validate_version_name(proposal) == proposal


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("\u0301", "has no letter, digit, '_', '-' or '.'"),
        ("\u0301\u0301", "has no letter, digit, '_', '-' or '.'"),
        ("\u1160", "U+1160: a Hangul filler, which shows as nothing"),
        ("\u3164", "U+3164: a Hangul filler"),
        ("\u115f", "U+115F: a Hangul filler"),
        ("\uffa0", "U+FFA0: a Hangul filler"),
        ("cat\u3164", "U+3164: a Hangul filler"),
        ("\u3164\u115f", "U+115F, U+3164: Hangul fillers, which show as nothing"),
        ("\u0301cat", "starts with the combining mark U+0301"),
    ],
)
def test_labels_that_show_nothing_or_hide_a_filler_are_refused(name: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_label(name)
    assert rule in caught.value.message
    assert [v.field for v in caught.value.violations] == ["label"]


@pytest.mark.parametrize("name", ["...", "_", "-", "e\u0301", "\u1100\u1161", "क्ष"])
def test_labels_with_something_visible_are_accepted(name: str) -> None:
    assert validate_label(name)


def test_a_huge_label_is_quoted_cut_and_its_characters_listed_in_part() -> None:
    name = "".join(chr(0x1F600 + i) for i in range(80)) * 125  # 80 emoji
    with pytest.raises(InvalidArgument) as caught:
        validate_label(name)
    message = caught.value.message
    assert len(message) < 600
    assert "(10,000 characters)" in message and "is 10,000 characters long" in message
    assert "'\U0001f600' (U+1F600)" in message and "and 72 more" in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("x" * 6000, "train_ratio"),
        ("0." + "1" * 6000, "train_ratio"),
        ("5" * 6000, "train_ratio"),
    ],
)
def test_a_huge_ratio_is_quoted_cut(text: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_train_ratio(text)
    assert len(caught.value.message) < 600 and "characters)" in caught.value.message
    assert [v.field for v in caught.value.violations] == [field]


@pytest.mark.parametrize("name", ["é" * 6000, "-" + "x" * 60])
def test_a_bad_version_name_is_quoted_cut(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_version_name(name)
    assert len(caught.value.message) < 200
