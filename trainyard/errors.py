"""The domain error hierarchy, shared by every service.

Domain code raises these; the RPC layer (``trainyard.rpc``) maps each to one gRPC
status code in one place. Anything else that escapes a handler becomes INTERNAL.
"""

from __future__ import annotations

from dataclasses import dataclass

SHOWN_CHARACTERS = 80  # how much of a value a user sent an error message quotes


def cut_utf8(text: str, max_bytes: int, tail: str = "…") -> str:
    """``text`` within ``max_bytes`` of UTF-8: whole, or cut at a character boundary and ending in ``tail``."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - len(tail.encode())].decode(errors="ignore") + tail


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """A value from a request, quoted for an error message: its repr, cut to ``limit``
    characters with its full length said, so a message never repeats a huge input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 1]}…{size}"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: which field, and what is wrong with it."""

    field: str
    description: str


class TrainyardError(Exception):
    """Base of every error a user may see; its message is written for people.

    `code` is the gRPC status code name the error travels as (one place decides).
    """

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TrainyardError):
    """The request itself is wrong; names every offending field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"{field}: {description}", [FieldViolation(field, description)])

    @property
    def description(self) -> str:
        """What is wrong, without the field a rule named ("label: "), for a caller naming its own."""
        return self.violations[0].description if self.violations else self.message

    def renamed(self, field: str) -> InvalidArgument:
        """The same problem, said of the caller's field (a shared rule checked one of its fields)."""
        return InvalidArgument.field(field, self.description)


class NotFound(TrainyardError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = "NOT_FOUND"


class AlreadyExists(TrainyardError):
    """A resource with that name exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(TrainyardError):
    """The request is well formed but the system's state refuses it.

    ``violations`` lists every rule that fails (for example every S1 rule), so a
    user can fix them all at once.
    """

    code = "FAILED_PRECONDITION"

    def __init__(self, message: str, violations: list[str] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class ResourceExhausted(TrainyardError):
    """A limit or quota is exceeded; the message names the limit."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(TrainyardError):
    """A dependency (object store, another service) cannot be reached right now."""

    code = "UNAVAILABLE"


class Aborted(TrainyardError):
    """A concurrent change won; the caller may retry."""

    code = "ABORTED"


class OutOfRange(TrainyardError):
    """A position (a sequence number, an offset) lies outside what is kept."""

    code = "OUT_OF_RANGE"


class Unauthenticated(TrainyardError):
    """The call carries no valid credential."""

    code = "UNAUTHENTICATED"


class PermissionDenied(TrainyardError):
    """The caller is known but may not call this method (a tenant calling a service-only method)."""

    code = "PERMISSION_DENIED"
