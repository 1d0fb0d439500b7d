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

A broker can also lose a message it took: the Redis transport pops it from the queue before it records
it as unacknowledged, so a worker killed (or a Redis gone) in between drops it, and its entry stays.
So a live message is also checked for being overdue (`overdue`): due `age_s` ago (its score is when it
became due: publish time plus any countdown), and either its queue is empty or a message of the same
queue that became due `age_s` after it has already started (`started` keeps, per queue, the latest due
time of a message a worker started). Queues are first in, first out, so such a message is not waiting in
its queue; it is lost, or at worst held by a worker, where a copy again changes nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

DEFAULT_MAX_AGE_S = 24 * 3600.0
DEFAULT_SEND_GRACE_S = 60.0  # far longer than any publish takes
# KEYS: the live set, the per-queue marks; ARGV: queue, message id. Raise the queue's mark to the message's due time.
_STARTED = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not due then return 0 end
local mark = redis.call('HGET', KEYS[2], ARGV[1])
if not mark or tonumber(mark) < tonumber(due) then redis.call('HSET', KEYS[2], ARGV[1], due) end
return 1
"""


class LiveMessages:
    """A sorted set in Redis: message id -> when it was (last) published, plus its countdown."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:m", max_age_s: float = DEFAULT_MAX_AGE_S,
                 send_grace_s: float = DEFAULT_SEND_GRACE_S) -> None:
        self.r, self.key, self.sending, self.max_age_s = client, f"{prefix}:live", f"{prefix}:sending", max_age_s
        self.send_grace_s, self.marks = send_grace_s, f"{prefix}:started"
        self._started: Any = None  # registered on first use: `tierq status` reads with a client without scripts

    def add(self, messages: Iterable[tuple[uuid.UUID, float | None]]) -> None:
        """Mark messages (id, countdown) as published now, due after their countdown, and as being sent
        until `sent`."""
        now = time.time()
        due = {str(i): now + (countdown or 0.0) for i, countdown in messages}
        if due:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.zadd(self.key, due)
                pipe.zadd(self.sending, dict.fromkeys(due, now))
                pipe.execute()

    def started(self, queue: str, message: uuid.UUID | str) -> None:
        """A worker started `message`, taken from `queue`: messages of that queue due well before it are not
        waiting there any more."""
        if self._started is None:
            self._started = self.r.register_script(_STARTED)
        self._started(keys=[self.key, self.marks], args=[queue, str(message)])

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

    def overdue(self, messages: Sequence[tuple[uuid.UUID, str]], age_s: float,
                lengths: Callable[[Sequence[str]], Mapping[str, int]] | None = None) -> set[uuid.UUID]:
        """The live messages among `messages` (id, queue) that a broker has lost, by the test in the module
        docstring; `lengths` (queue -> messages waiting) is asked only about queues with a late message."""
        if not messages:
            return set()
        queues = sorted({queue for _, queue in messages})
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zmscore(self.key, [str(i) for i, _ in messages])
            pipe.hmget(self.marks, queues)
            scores, found = pipe.execute()
        marks = {q: float(m) for q, m in zip(queues, found, strict=True) if m is not None}
        late_before = time.time() - age_s
        late = [(i, q, due) for (i, q), due in zip(messages, scores, strict=True)
                if due is not None and due < late_before]
        passed = {i for i, q, due in late if marks.get(q, -math.inf) > due + age_s}
        rest = [(i, q) for i, q, _ in late if i not in passed]
        if rest and lengths is not None:
            waiting = lengths(sorted({q for _, q in rest}))
            passed |= {i for i, q in rest if waiting.get(q, 0) == 0}
        return passed

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
