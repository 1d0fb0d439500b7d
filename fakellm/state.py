"""Mutable state of one simulator: behaviour, counters, request history, files and batches."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from aiohttp import web

from fakellm.batch_job import BatchJob
from fakellm.behaviour import SimConfig
from fakellm.file_store import FileStore
from fakellm.replay import ReplayBook
from fakellm.stats import Stats


@dataclass
class SimState:
    """Everything one simulator remembers, in memory only."""

    config: SimConfig
    stats: Stats = field(default_factory=Stats)
    # How often each exact (model, messages) request has been received.
    occurrences: dict[bytes, int] = field(default_factory=dict)
    # Requests already answered with HTTP 200, for prompt-cache accounting.
    served: set[bytes] = field(default_factory=set)
    # Arrival times of the requests each rate-limited model accepted in the last 60 s.
    windows: dict[str, collections.deque[float]] = field(default_factory=dict)
    # Recorded answers to replay (fakellm.replay); set at start-up, kept by resets and /_sim/config.
    replay: ReplayBook | None = None
    files: FileStore = field(default_factory=FileStore)
    batches: dict[str, BatchJob] = field(default_factory=dict)

    def over_limit(self, model: str, rpm: float) -> float | None:
        """Seconds until `model` accepts another request, or None (and the request counts) if it does now."""
        if rpm <= 0:
            return None
        now = time.monotonic()
        window = self.windows.setdefault(model, collections.deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= rpm:
            return max(0.001, window[0] + 60.0 - now)
        window.append(now)
        return None

    def stop_batches(self) -> list[asyncio.Task[None]]:
        """Cancel every running batch and return their tasks, for the caller to await if it can."""
        tasks = [job.task for job in self.batches.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        return tasks

    def reset(self) -> None:
        """Forget all counters, history, files and batches (running ones are stopped), as if freshly started."""
        self.stop_batches()
        self.stats = Stats()
        self.occurrences = {}
        self.served = set()
        self.windows = {}
        self.files = FileStore()
        self.batches = {}


STATE = web.AppKey("fakellm_state", SimState)
