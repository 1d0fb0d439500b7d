"""Reading chat messages: the text of a message's content, whether a string or a list of parts."""

from __future__ import annotations

from typing import Any

from tierq.money import estimate_tokens


def content_text(content: Any) -> str:
    """The text of a content field: a string as it is, text parts joined by newlines, else nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the user's turns: what routing rules and the learned router look at (never the system
    prompt)."""
    return "\n".join(content_text(m.get("content")) for m in messages if m.get("role") == "user")


def estimated_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens estimated from characters (4 per token), for routing and limits before a call."""
    return sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
