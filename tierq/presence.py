"""Which workers are up, and which queues they consume, as each worker says every few seconds in Redis.

A command that shows a batch uses it to say which of the batch's queues no worker consumes (its jobs
would wait for ever) and how to start one; `tierq doctor` asks the workers through the broker instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)
EVERY_S = 5.0
TTL_S = 20  # a worker silent this long is presumed gone


class Presence:
    """The `{prefix}:{worker}` keys of live workers: their queues and configuration digest."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:w") -> None:
        self.r, self.prefix = client, prefix

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

    def consumers(self) -> dict[str, list[str]]:
        """Queue -> the live workers that consume it."""
        found: dict[str, list[str]] = {}
        for worker, info in self.workers().items():
            for queue in info.get("queues", []):
                found.setdefault(queue, []).append(worker)
        return found

    def keep_announcing(self, worker: str, queues: Sequence[str], digest: str) -> None:
        """Announce now and every EVERY_S seconds from a daemon thread, for the life of the process."""
        self.announce(worker, queues, digest)

        import redis

        def loop() -> None:
            while True:
                time.sleep(EVERY_S)
                try:
                    self.announce(worker, queues, digest)
                except redis.RedisError as exc:
                    log.warning("could not announce this worker (%s); retrying in %.0f s", exc, EVERY_S)

        threading.Thread(target=loop, name="tierq-presence", daemon=True).start()
