"""Cache keys: a namespace that holds everything that changes an answer, and the exact request hash.

The namespace is the tenant, the task type, the system prompt, the earlier turns of the conversation,
everything of the last user turn except its text (its image, audio and file parts by content digest,
its `name`, any other field), the request parameters that change an answer and the lowest tier the
batch allows, so one tenant never receives another's answer, a batch that asked for a strong model never
gets a cheap one, and two requests whose texts are alike but whose pictures or speakers differ are never
compared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tierq.cache.identifiers import content_words, fingerprint, names, word_hash, word_hashes
from tierq.config import DEADLINE_KEY, RESERVED_PARAMS
from tierq.messages import content_text
from tierq.params import ANSWER_PARAMS


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a request lives in the cache."""

    namespace: str
    exact: str
    text: str
    ids: str
    tenant: str
    names: frozenset[str] = frozenset()  # places, acronyms, proper names, kind asked: a hit may not swap them
    words: frozenset[int] = frozenset()  # content words' hashes: a hit may not add or drop more than a few

    def says(self, stem: str) -> bool:
        """Whether the text has this word (by its stem, as `content_words` gives it)."""
        return word_hash(stem) in self.words


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _beyond_text(message: dict[str, Any]) -> dict[str, Any]:
    """What a message says besides its text: its other fields and its non-text parts (digested)."""
    content = message.get("content")
    parts = (
        [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
        if isinstance(content, list)
        else []
    )
    return {"fields": {k: v for k, v in message.items() if k != "content"}, "parts": _digest(parts) if parts else None}


def _answer_options(options: Any) -> Any:
    if isinstance(options, dict) and DEADLINE_KEY in options:
        options = {k: v for k, v in options.items() if k != DEADLINE_KEY} or None
    return options


def cache_key(
    *, tenant: str, task_type: str, system_prompt: str | None, messages: list[dict[str, Any]],
    params: dict[str, Any], tier_floor: str | None,
) -> CacheKey:
    """The key of one request; the last user turn is what the semantic layer compares."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    context = [messages[i] for i in range(len(messages)) if i != last_user]
    namespace = _digest({
        "tenant": tenant, "task": task_type, "system": system_prompt, "context": context, "floor": tier_floor,
        "last": _beyond_text(messages[last_user]) if messages else None,
        "params": {k: params[k] for k in ANSWER_PARAMS if k in params},
        # tierq's own batch options (a JSON schema the answer must match...) change which answers are kept;
        # a deadline changes only how the answer is fetched.
        "tierq": _answer_options(params.get(RESERVED_PARAMS)),
    })
    text = content_text(messages[last_user].get("content")) if messages else ""
    return CacheKey(namespace, _digest([namespace, messages]), text, fingerprint(text), tenant, names(text),
                    word_hashes(content_words(text)))
