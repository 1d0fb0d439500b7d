"""Fewer log lines while an outage lasts: each thread that waits one out, and Celery's and kombu's own
housekeeping, would otherwise say the same thing several times a second, with a traceback each time from
the libraries (a full Redis: about 6 lines a second, and a 25-line traceback every few seconds)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

EVERY_S = 30.0  # a repeated line is said at most this often per process


class Repeats:
    """Which of a line's repeats to say: the first, then at most one every `every_s` seconds per key, each
    counting the ones held back since the last."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}

    def due(self, key: str) -> int | None:
        """None to hold this one back, else how many were held back since the last one said."""
        now = self._clock()
        with self._lock:
            last, held = self._seen.get(key, (-math.inf, 0))
            if now - last < self.every_s:
                self._seen[key] = (last, held + 1)
                return None
            self._seen[key] = (now, 0)
            return held


def held_note(held: int) -> str:
    """What a repeated line adds about the repeats it stands for (held back since the last one said, which
    may be long ago: the log's own times say when that was)."""
    return f" ({held:,} more like it since the last one)" if held else ""
