"""The dataset rules a user can break: training ratio (S3), trainability (S1), names.

Every check names the rule that fails, in words a user can act on. Checks that can
fail in several ways at once report every failure, not just the first.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from trainyard.errors import FailedPrecondition, InvalidArgument, shown

# --- S3: the training ratio --------------------------------------------------------

DEFAULT_TRAIN_RATIO = "0.8"
"""The training ratio used when the user gives none (validation gets the rest, 0.2)."""

MAX_RATIO_DECIMAL_PLACES = 5

# A plain decimal numeral: an optional sign, ASCII digits, at most one point, at least
# one digit. Anything else (spaces, exponents, "NaN", "Infinity", words) is not one.
_DECIMAL_NUMERAL = re.compile(r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?")


def parse_train_ratio(text: str) -> Decimal:
    """Parse the training ratio exactly as the user typed it (rule S3).

    Accepted: ``0.`` followed by 1 to 5 digits, with a value strictly between 0 and 1,
    such as "0.8", "0.75", "0.12345" or "0.80000" (5 places, equal to 0.8). The
    result keeps the typed places (``Decimal("0.80000")``).

    Rejected with ``InvalidArgument`` on field ``train_ratio``, the message naming
    every rule that fails: empty text; text that is not a plain decimal numeral
    ("abc", "1e-1", " 0.8", "NaN", "Infinity"); a value outside (0, 1) ("0", "1",
    "-0.5", "1.5"); fewer than 1 or more than 5 decimal places ("1", "0.123456");
    and a numeral not written as ``0.<digits>`` (".8", "+0.8", "00.8"): we ask for
    the leading zero so that what is stored and shown is what the user typed.
    """
    if text == "":
        raise _ratio_error("is empty; give a decimal number between 0 and 1 such as 0.8")
    match = _DECIMAL_NUMERAL.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        raise _ratio_error(
            f"{shown(text)} is not a decimal number; write digits with a decimal point, "
            "such as 0.8 (no spaces, exponents or words)"
        )
    value = Decimal(text)
    places = len(match["frac"] or "")
    typed = _numeral(text)
    problems = []
    if not Decimal(0) < value < Decimal(1):
        problems.append(f"{typed} must lie strictly between 0 and 1")
    if not 1 <= places <= MAX_RATIO_DECIMAL_PLACES:
        problems.append(
            f"{typed} has {places:,} decimal places; it must have 1 to {MAX_RATIO_DECIMAL_PLACES}"
        )
    if not problems and (match["sign"] or match["int"] != "0"):
        problems.append(f"write {typed} as 0.{match['frac']} (a leading '0.' and no sign)")
    if problems:
        raise _ratio_error("; ".join(problems))
    return value


def _numeral(text: str) -> str:
    """A numeral the user typed, for a message: as typed when short, else cut (``shown``)."""
    return text if len(text) <= _NUMERAL_SHOWN else shown(text)


_NUMERAL_SHOWN = 24  # a plain numeral up to this long is quoted whole, without quotes


def _ratio_error(description: str) -> InvalidArgument:
    """An InvalidArgument on the train_ratio field."""
    return InvalidArgument.field("train_ratio", description)


# --- S1: trainability ----------------------------------------------------------------

MIN_CLASSES = 2
MIN_IMAGES_PER_CLASS = 5


@dataclass(frozen=True)
class RuleViolation:
    """One S1 rule that the labeled data breaks.

    ``rule`` is "min_classes" or "min_images_per_class"; ``count`` is what the data
    has, ``required`` the minimum; ``label`` names the class for the per-class rule
    and is empty for the class-count rule.
    """

    rule: str
    message: str
    count: int
    required: int
    label: str = ""


def check_trainability(labeled_counts: Mapping[str, int]) -> list[RuleViolation]:
    """Every S1 rule the labeled data breaks; an empty list means training may start.

    ``labeled_counts`` maps each label to its number of labeled images. A label with
    0 images is not a class of the data (it adds nothing to a version), so it is
    neither counted as a class nor reported. The class-count rule comes first, then
    one violation per class with too few images, classes sorted by name.
    """
    for label, count in labeled_counts.items():
        if count < 0:
            raise ValueError(f"label {shown(label)} has a negative image count: {count}")
    classes = sorted(label for label, count in labeled_counts.items() if count > 0)
    violations = []
    if len(classes) < MIN_CLASSES:
        noun = "class" if len(classes) == 1 else "classes"
        violations.append(
            RuleViolation(
                rule="min_classes",
                message=f"{len(classes)} {noun}; at least {MIN_CLASSES} are needed",
                count=len(classes),
                required=MIN_CLASSES,
            )
        )
    for label in classes:
        count = labeled_counts[label]
        if count < MIN_IMAGES_PER_CLASS:
            noun = "image" if count == 1 else "images"
            violations.append(
                RuleViolation(
                    rule="min_images_per_class",
                    message=(
                        f"class {shown(label)} has {count} labeled {noun}; "
                        f"at least {MIN_IMAGES_PER_CLASS} are needed"
                    ),
                    count=count,
                    required=MIN_IMAGES_PER_CLASS,
                    label=label,
                )
            )
    return violations


def require_trainable(labeled_counts: Mapping[str, int]) -> None:
    """Raise FailedPrecondition listing every S1 rule the labeled data breaks.

    The error's ``violations`` holds one message per failing rule, in the order of
    ``check_trainability``.
    """
    violations = check_trainability(labeled_counts)
    if violations:
        messages = [violation.message for violation in violations]
        raise FailedPrecondition(
            "training cannot start: " + "; ".join(messages), violations=messages
        )


# --- Names -------------------------------------------------------------------------------

MAX_LABEL_LENGTH = 64
_LABEL_PUNCTUATION = frozenset(" _-.")
_VISIBLE_PUNCTUATION = frozenset("_-.")
# Letters (category Lo) that render as nothing: the Hangul fillers. A label made of them,
# or one that adds them to "cat", would look like nothing or like another label.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_COMBINING = frozenset({"Mn", "Mc"})
_SHOWN_BAD_CHARACTERS = 8  # a message lists at most this many of a label's refused characters


def validate_label(name: str) -> str:
    """Check a label (class) name and return it in Unicode NFC form.

    A label has 1 to 64 characters: letters of any script (with their combining
    marks), decimal digits, spaces, '_', '-' and '.'; it neither starts nor ends with
    a space and is not "." or "..". It has at least one visible character (a letter,
    digit, '_', '-' or '.'), does not start with a combining mark, and holds no Hangul
    filler (U+115F, U+1160, U+3164, U+FFA0: letters that render as nothing). Raises
    ``InvalidArgument`` on field ``label`` naming every rule that fails; the message
    quotes the label cut to 80 characters (``shown``) and lists at most 8 refused ones.
    """
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InvalidArgument.field("label", "is empty; a label has 1 to 64 characters")
    problems = []
    if len(name) > MAX_LABEL_LENGTH:
        problems.append(f"is {len(name):,} characters long; at most {MAX_LABEL_LENGTH} are allowed")
    fillers = sorted({char for char in name if char in _INVISIBLE_LETTERS})
    bad = sorted({char for char in name if not _is_label_char(char)} - set(fillers))
    if bad:
        listed = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in bad[:_SHOWN_BAD_CHARACTERS])
        if len(bad) > _SHOWN_BAD_CHARACTERS:
            listed += f" and {len(bad) - _SHOWN_BAD_CHARACTERS:,} more"
        problems.append(
            f"contains {listed}; only letters, digits, spaces, '_', '-' and '.' are allowed"
        )
    if fillers:
        listed = ", ".join(f"U+{ord(char):04X}" for char in fillers)
        noun = "a Hangul filler, which shows" if len(fillers) == 1 else "Hangul fillers, which show"
        problems.append(f"contains {listed}: {noun} as nothing")
    if not any(_is_visible(char) for char in name):
        problems.append("has no letter, digit, '_', '-' or '.'; a label must show at least one")
    elif unicodedata.category(name[0]) in _COMBINING:
        problems.append(
            f"starts with the combining mark U+{ord(name[0]):04X}, which has no letter to mark"
        )
    if name != name.strip(" "):
        problems.append("must not start or end with a space")
    if name in {".", ".."}:
        problems.append(f"must not be {name!r}")
    if problems:
        raise InvalidArgument.field("label", f"{shown(name)} " + "; ".join(problems))
    return name


def _is_label_char(char: str) -> bool:
    """Whether a character may appear in a label name."""
    category = unicodedata.category(char)
    return (
        (category.startswith("L") and char not in _INVISIBLE_LETTERS)  # letters of any script
        or category in _COMBINING  # combining marks, needed by many scripts
        or category == "Nd"  # decimal digits
        or char in _LABEL_PUNCTUATION
    )


def _is_visible(char: str) -> bool:
    """Whether a label character shows by itself (not a space, a mark or a filler)."""
    category = unicodedata.category(char)
    return (
        (category.startswith("L") and char not in _INVISIBLE_LETTERS)
        or category == "Nd"
        or char in _VISIBLE_PUNCTUATION
    )


MAX_VERSION_NAME = 64
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_version_name(name: str) -> str:
    """Check a dataset version name chosen by the user (S2) and return it.

    A version name has 1 to 64 characters: ASCII letters, digits, '.', '_' and '-',
    starting with a letter or digit. Raises ``InvalidArgument`` on field
    ``version_name``.
    """
    if _VERSION_NAME.fullmatch(name):
        return name
    if not name:
        description = "is empty; a version name has 1 to 64 characters"
    elif len(name) > MAX_VERSION_NAME:
        description = f"is {len(name):,} characters long; at most {MAX_VERSION_NAME} are allowed"
    elif not re.fullmatch(r"[A-Za-z0-9]", name[0]):
        description = f"{shown(name)} must start with an ASCII letter or digit"
    else:
        description = f"{shown(name)} may contain only ASCII letters, digits, '.', '_' and '-'"
    raise InvalidArgument.field("version_name", description)


_PROPOSED_VERSION = re.compile(r"v([0-9]+)")


def next_version_name(existing: Iterable[str]) -> str:
    """The version name the system proposes (S2): "v1", "v2", ...

    One above the highest existing name of the form "v<N>"; names the users chose
    in another form are ignored. When that would pass the 64 characters a version
    name may have (after a user's "v999…9"), the lowest "v<N>" whose number is not
    taken instead. The proposal never equals an existing name and is always valid.
    """
    numbers = {int(m[1]) for name in existing if (m := _PROPOSED_VERSION.fullmatch(name))}
    proposal = f"v{max(numbers, default=0) + 1}"
    if len(proposal) <= MAX_VERSION_NAME:
        return proposal
    return f"v{next(n for n in itertools.count(1) if n not in numbers)}"
