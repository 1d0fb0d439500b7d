"""Which task messages are live: published and not yet finished by a worker.

The reconciler's test of a lost message. A message is added just before it is published and removed
when a worker has finished it (successfully or not); a job that is not final, whose message is not
live, and that has not changed for a while has nothing that will ever move it. Entries of messages
whose worker died stay until the broker delivers them again and they finish; entries older than
`max_age_s` count as lost (a broker that lost its queues).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

DEFAULT_MAX_AGE_S = 24 * 3600.0


class LiveMessages:
    """A sorted set in Redis: message id -> when it was (last) published."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:m", max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.r, self.key, self.max_age_s = client, f"{prefix}:live", max_age_s

    def add(self, ids: Iterable[uuid.UUID]) -> None:
        """Mark messages as published now."""
        now = time.time()
        mapping = {str(i): now for i in ids}
        if mapping:
            self.r.zadd(self.key, mapping)

    def finish(self, ids: Iterable[uuid.UUID | str]) -> None:
        """Messages a worker has finished, or that were never published after all."""
        members = [str(i) for i in ids]
        if members:
            self.r.zrem(self.key, *members)

    def live(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The messages among `ids` that are live (published, not finished, not too old)."""
        if not ids:
            return set()
        scores: list[float | None] = self.r.zmscore(self.key, [str(i) for i in ids])
        oldest = time.time() - self.max_age_s
        return {i for i, score in zip(ids, scores, strict=True) if score is not None and score >= oldest}

    def prune(self) -> int:
        """Drop entries older than `max_age_s`; returns how many."""
        return int(self.r.zremrangebyscore(self.key, "-inf", time.time() - self.max_age_s))

    def count(self) -> int:
        """How many messages are live."""
        return int(self.r.zcard(self.key))
