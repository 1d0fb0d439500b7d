"""One asyncio event loop per worker process, in a thread of its own.

Celery tasks run in pool threads; each hands its model calls to this loop, so hundreds of calls from
many tasks share one loop and one connection pool per provider.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop; `run` blocks the calling thread until a coroutine ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use (and again in a forked child, which has no thread)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop, ready), name="tierq-loop", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result."""
        return self.start(coro).result(timeout)

    def start(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the loop; the caller waits for the future (or cancels it) itself."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop())

    def slots(self, size: int) -> asyncio.Semaphore:
        """The process-wide limit on open calls (`[worker] open_calls`), one per loop; call it on the loop.
        Every task thread's calls share it, so a slot one chunk's answered call frees goes to whichever
        call has waited longest, in any chunk."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(size))
        return self._slots[1]
