"""Cursor pages of OpenAI list endpoints (`after`, `limit`, `has_more`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fakellm.errors import ApiError

T = TypeVar("T")


def query_limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    """The `limit` query parameter, between 1 and `maximum`."""
    raw = query.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"Invalid 'limit': {raw!r}; expected an integer from 1 to {maximum}.", "limit")
    return limit


def cursor_page(
    items: Sequence[T], query: Mapping[str, str], as_json: Callable[[T], dict[str, Any]], limit: int
) -> dict[str, Any]:
    """The page of `items` (already in list order) that starts after the `after` id of the query."""
    data = [as_json(item) for item in items]
    after = query.get("after")
    if after is not None:
        ids = [entry["id"] for entry in data]
        if after not in ids:
            raise ApiError(400, f"Invalid 'after': {after!r} is not the id of a listed object.", "after")
        data = data[ids.index(after) + 1 :]
    page = data[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(data) > limit,
    }
