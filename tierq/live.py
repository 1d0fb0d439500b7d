"""Which task messages are live: published and not yet finished by a worker.

The reconciler's test of a lost message. A message is added just before it is published and removed
when a worker has finished it (successfully or not); a job that is not final, whose message is not
live, and that has not changed for a while has nothing that will ever move it. Entries of messages
whose worker died stay until the broker delivers them again and they finish; entries older than
`max_age_s` count as lost (a broker that lost its queues).

Publishing is two steps: an entry is also marked "sending" until the broker took the message. A process
killed between the two (after its transaction committed, before its publish finished) leaves a mark
that outlives `send_grace_s`; such a message was maybe never sent, so it does not count as live and the
reconciler publishes it again (a copy that did get through makes no difference: ownership guards).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

DEFAULT_MAX_AGE_S = 24 * 3600.0
DEFAULT_SEND_GRACE_S = 60.0  # far longer than any publish takes


class LiveMessages:
    """A sorted set in Redis: message id -> when it was (last) published."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:m", max_age_s: float = DEFAULT_MAX_AGE_S,
                 send_grace_s: float = DEFAULT_SEND_GRACE_S) -> None:
        self.r, self.key, self.sending, self.max_age_s = client, f"{prefix}:live", f"{prefix}:sending", max_age_s
        self.send_grace_s = send_grace_s

    def add(self, ids: Iterable[uuid.UUID]) -> None:
        """Mark messages as published now, and as being sent until `sent`."""
        now = time.time()
        mapping = {str(i): now for i in ids}
        if mapping:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.zadd(self.key, mapping)
                pipe.zadd(self.sending, mapping)
                pipe.execute()

    def sent(self, ids: Iterable[uuid.UUID]) -> None:
        """The broker has these messages."""
        members = [str(i) for i in ids]
        if members:
            self.r.zrem(self.sending, *members)

    def finish(self, ids: Iterable[uuid.UUID | str]) -> None:
        """Messages a worker has finished, or that were never published after all."""
        members = [str(i) for i in ids]
        if members:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.zrem(self.key, *members)
                pipe.zrem(self.sending, *members)
                pipe.execute()

    def live(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The messages among `ids` that are live (published, not finished, not too old, and not stuck
        half-sent by a process that died while publishing)."""
        if not ids:
            return set()
        members = [str(i) for i in ids]
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zmscore(self.key, members)
            pipe.zmscore(self.sending, members)
            scores, sending = pipe.execute()
        now = time.time()
        oldest, abandoned = now - self.max_age_s, now - self.send_grace_s
        return {i for i, score, started in zip(ids, scores, sending, strict=True)
                if score is not None and score >= oldest and (started is None or started >= abandoned)}

    def prune(self) -> int:
        """Drop entries older than `max_age_s`, and those whose sending was abandoned (they count as lost);
        returns how many entries."""
        now = time.time()
        abandoned = [m.decode() if isinstance(m, bytes) else str(m)
                     for m in self.r.zrangebyscore(self.sending, "-inf", now - self.send_grace_s)]
        if abandoned:
            self.finish(abandoned)
        return int(self.r.zremrangebyscore(self.key, "-inf", now - self.max_age_s)) + len(abandoned)

    def count(self) -> int:
        """How many messages are live."""
        return int(self.r.zcard(self.key))
