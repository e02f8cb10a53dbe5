"""Proto enum values from requests, checked: an unknown number is the caller's error."""

from __future__ import annotations

from trainyard.errors import InvalidArgument


def enum_name(enum_type, value: int, prefix: str, field: str) -> str:
    """The value's name without `prefix` ("BALANCE"), or INVALID_ARGUMENT naming `field`."""
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        known = ", ".join(n.removeprefix(prefix) for n in enum_type.keys()[1:])
        raise InvalidArgument.field(field, f"{value} is not a known value; use one of {known}") from None
