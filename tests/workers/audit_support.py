"""A comparator a test's TOML names as `audit_support:same_length` (a callable comparator)."""

from __future__ import annotations

from typing import Any


def same_length(candidate: str, reference: str, messages: list[dict[str, Any]]) -> bool:
    """Answers of the same length agree."""
    return len(candidate) == len(reference)
