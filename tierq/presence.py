"""Which workers are up, and which queues they consume, as each worker says every few seconds in Redis.

A command that shows a batch uses it to say which of the batch's queues no worker consumes (its jobs
would wait for ever) and how to start one, and which worker gives a queue's messages back because its
configuration cannot run them (`refuse`); `tierq doctor` asks the workers through the broker instead.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tierq.quietlog import Repeats, held_note

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)
EVERY_S = 5.0
TTL_S = 20  # a worker silent this long is presumed gone
REFUSAL_TTL_S = 120  # a worker gives a message it cannot run back for 30 s (workers/tasks.py): a few rounds
STARTUP_TTL_S = 3600  # a worker that refused to start is named for an hour, or until one of that name starts


EVICTION_FIX = "set maxmemory-policy noeviction (redis-cli CONFIG SET maxmemory-policy noeviction; docs/deployment.md)"


def eviction_policy(client: redis.Redis) -> str | None:
    """The policy by which the Redis of `client` evicts keys at maxmemory (allkeys-lru, ...), or None when it
    evicts nothing. Evicting, it drops the workers' records here with queued messages and live-message records."""
    from tierq.resp import RespRefused

    refused: tuple[type[Exception], ...] = (RespRefused,)
    loaded = sys.modules.get("redis")  # a redis-py client has loaded it; `tierq status` does without
    if loaded is not None:
        refused += (loaded.ResponseError,)
    try:
        memory = client.info("memory")
    except refused:  # a user without INFO (an ACL's -@dangerous): the policy is unknown, not trouble
        return None
    limit, policy = int(memory.get("maxmemory", 0)), str(memory.get("maxmemory_policy", "noeviction"))
    return policy if limit and policy != "noeviction" else None


class Presence:
    """The `{prefix}:{worker}` keys of live workers: their queues and configuration digest."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:w", refusals: str = "tq:refused",
                 unstarted: str = "tq:unstarted") -> None:
        self.r, self.prefix, self.refusals_key, self.unstarted_key = client, prefix, refusals, unstarted

    def announce(self, worker: str, queues: Sequence[str], digest: str) -> None:
        """Say that `worker` consumes `queues` (for the next TTL_S seconds)."""
        info = {"queues": list(queues), "digest": digest, "at": time.time()}
        self.r.set(f"{self.prefix}:{worker}", json.dumps(info), ex=TTL_S)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Every live worker and what it announced."""
        keys = list(self.r.scan_iter(match=f"{self.prefix}:*", count=1000))
        values = cast(list[bytes | None], self.r.mget(keys)) if keys else []
        return {key.decode().removeprefix(f"{self.prefix}:"): json.loads(value)
                for key, value in zip(keys, values, strict=True) if value is not None}

    def consumers(self, live: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
        """Queue -> the live workers that consume it (`live`: `workers()`, when the caller has it already)."""
        found: dict[str, list[str]] = {}
        for worker, info in (self.workers() if live is None else live).items():
            for queue in info.get("queues", []):
                found.setdefault(queue, []).append(worker)
        return found

    def refuse(self, worker: str, queue: str, reason: str, digest: str, batch: str | None = None) -> None:
        """Say that `worker`, running the configuration of `digest`, gave a message of `queue` (of `batch`)
        back, for `reason` (that configuration cannot run it). One hash for every note, so that `status`
        reads them in one round trip whatever else the Redis holds (the cache's entries)."""
        note = json.dumps({"reason": reason, "digest": digest, "at": time.time()})
        self._note(self.refusals_key, {f"{queue}|{worker}|{batch or ''}": note}, REFUSAL_TTL_S)

    def _note(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        """Set `fields` (JSON notes, each with its time `at`) in the hash `key`. Each note keeps the whole hash
        another `ttl_s`, so the notes older than that go here, or notes under names never used again (workers
        gone, a rollout's hostnames) would stay for as long as new ones keep coming."""
        now = time.time()
        old = [field for field, value in cast(dict[bytes, bytes], self.r.hgetall(key)).items()
               if now - float(json.loads(value).get("at", 0)) > ttl_s]
        pipe = self.r.pipeline(transaction=False)
        if old:
            pipe.hdel(key, *old)
        for field, note in fields.items():
            pipe.hset(key, field, note)
        pipe.expire(key, int(ttl_s))
        pipe.execute()

    def refusals(self, live: Mapping[str, Any] | None = None, batch: str | None = None) -> dict[str, dict[str, str]]:
        """Queue -> live worker -> why it gives that queue's messages back, for `batch` (or any batch); notes
        older than REFUSAL_TTL_S, of a worker gone, or of one started again with another configuration under
        the same name, say nothing. `live` is `workers()` when the caller has it already."""
        notes = cast(dict[bytes, bytes], self.r.hgetall(self.refusals_key))
        if not notes:
            return {}
        live = self.workers() if live is None else live
        now, found = time.time(), cast(dict[str, dict[str, str]], {})
        for field, value in notes.items():
            queue, rest = field.decode().split("|", 1)  # a queue name holds no |; a host name might
            worker, about = rest.rsplit("|", 1)
            note = json.loads(value)
            if batch is not None and about and about != batch:
                continue
            fresh = now - float(note.get("at", 0)) <= REFUSAL_TTL_S
            if fresh and worker in live and live[worker].get("digest") == note.get("digest"):
                found.setdefault(queue, {})[worker] = note["reason"]
        return found

    def did_not_start(self, worker: str, queues: Sequence[str], reason: str) -> None:
        """Say that `worker` refused to start for `queues`, and why (a missing API key, say): a queue with no
        worker then says what became of the one started for it, where only that worker's terminal said it."""
        note = json.dumps({"reason": reason, "at": time.time()})
        if queues:
            self._note(self.unstarted_key, {f"{queue}|{worker}": note for queue in queues}, STARTUP_TTL_S)

    def started(self, worker: str, queues: Sequence[str]) -> None:
        """Forget that a worker of this name refused to start for `queues`: it runs now."""
        if queues:
            self.r.hdel(self.unstarted_key, *(f"{queue}|{worker}" for queue in queues))

    def not_started(self, live: Mapping[str, Any] | None = None) -> dict[str, dict[str, tuple[str, float]]]:
        """Queue -> worker that refused to start for it, and is not up since -> (why, seconds ago), for the
        last STARTUP_TTL_S seconds."""
        notes = cast(dict[bytes, bytes], self.r.hgetall(self.unstarted_key))
        if not notes:
            return {}
        live = self.workers() if live is None else live
        now, found = time.time(), cast(dict[str, dict[str, tuple[str, float]]], {})
        for field, value in notes.items():
            queue, worker = field.decode().split("|", 1)
            note = json.loads(value)
            ago = now - float(note.get("at", 0))
            if ago <= STARTUP_TTL_S and worker not in live:
                found.setdefault(queue, {})[worker] = (str(note["reason"]), ago)
        return found

    def keep_announcing(self, worker: str, queues: Sequence[str], digest: str) -> Callable[[], None]:
        """Announce now and every EVERY_S seconds from a daemon thread, until the returned `withdraw` is
        called: then the thread says that `worker` is gone. A worker stopping warmly takes no new message
        while its running tasks end, which may take minutes; announcing it until then hid that its queues
        had no worker left. `withdraw` only sets an event, so a signal handler may call it."""
        import redis

        withdrawn = threading.Event()
        failures = Repeats()

        # At start-up only an outage (Redis away or full) is waited out; a refusal (a read-only replica, an
        # ACL without SET) stops the worker there, as it would never pass.
        outages = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)

        def announced(passing: tuple[type[redis.RedisError], ...] = (redis.RedisError,)) -> None:
            try:
                self.announce(worker, queues, digest)
            except passing as exc:  # the worker serves its queues all the same
                held = failures.due("announce")
                if held is not None:
                    log.warning("could not announce this worker (%s); retrying every %.0f s%s", exc, EVERY_S,
                                held_note(held))

        def loop() -> None:
            while not withdrawn.wait(EVERY_S):
                announced()
            try:
                self.r.delete(f"{self.prefix}:{worker}")
            except redis.RedisError as exc:  # its announcement then lapses in TTL_S
                log.warning("could not withdraw this worker's announcement (%s)", exc)

        announced(outages)  # now, so that a producer that saw this worker ready sees its queues served
        threading.Thread(target=loop, name="tierq-presence", daemon=True).start()
        return withdrawn.set
