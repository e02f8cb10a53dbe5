"""Page tokens for list RPCs: opaque to clients, an offset inside."""

from __future__ import annotations

import base64

from trainyard.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MAX_OFFSET_DIGITS = 18  # far beyond any list, within SQLite's 64-bit integers


def page(page_size: int, page_token: str) -> tuple[int, int]:
    """(offset, limit) for a request; INVALID_ARGUMENT naming the bad field."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument.field("page_size", f"must be 0 to {MAX_PAGE_SIZE}, got {page_size}")
    limit = page_size or DEFAULT_PAGE_SIZE
    if not page_token:
        return 0, limit
    try:
        kind, _, value = base64.urlsafe_b64decode(page_token.encode()).decode().partition(":")
        if kind != "o" or not (value.isascii() and value.isdigit()) or len(value) > _MAX_OFFSET_DIGITS:
            raise ValueError
        offset = int(value)
    except ValueError:  # also bad base64 (binascii.Error) and bytes that are not UTF-8
        raise InvalidArgument.field("page_token", "is not a token returned by this list call") from None
    return offset, limit


def next_token(offset: int, limit: int, returned: int) -> str:
    """The token of the following page, or "" when this page was the last."""
    if returned < limit:
        return ""
    return base64.urlsafe_b64encode(f"o:{offset + returned}".encode()).decode()
