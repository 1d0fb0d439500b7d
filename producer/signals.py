"""Ctrl-C and SIGTERM while `tierq submit` writes a batch: taken at the next safe point, never in the middle
of a write.

Python raises KeyboardInterrupt wherever the main thread happens to be. In a submission that may be inside
a COPY or its commit, whose rows then roll back after they left the reader's memory: jobs read and never
stored, with nothing said. Here the handler raises only outside the shielded writes; a signal that comes
during one is kept and raised by `check` once the write has ended. `installed` puts the handler in place for
both signals (SIGTERM: `timeout`, `kill`, a CI job or a container being stopped), and `exit_code` is the
shell's status for the first signal received. Without `installed` (tierq used as a library) nothing changes.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Signals:
    """The signals received and whether a write is under way."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._shielded = 0

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self._shielded:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM as above until the block ends (the main thread only, as any handler)."""
        self.received.clear()
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A write that must not be cut: a signal during it waits for `check`."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1

    def check(self) -> None:
        """Raise KeyboardInterrupt for a signal received during a write (or one whose interrupt Python lost:
        raised inside a finaliser, it is only printed)."""
        if self.received and not self._shielded:
            raise KeyboardInterrupt

    def exit_code(self) -> int:
        """128 + the first signal: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.received[0] if self.received else signal.SIGINT)


SIGNALS = Signals()
