"""Ctrl-C and SIGTERM while `tierq submit` writes a batch: taken at the next safe point, never in the middle of
a write.

Python raises KeyboardInterrupt wherever the main thread happens to be. In a submission that may be inside
a COPY or its commit, whose rows then roll back after they left the reader's memory: jobs read and never
stored, with nothing said. Here a signal raises at once, except the first one during a shielded write or
while the command says what became of its batch (`quiet`): that one is kept, raised by `check` once the
write has ended, and the command exits with its status when it has had its say. A second signal raises
wherever the command is (a write that hangs can still be stopped). `installed` puts the handler in place
for both signals (SIGTERM: `timeout`, `kill`, a CI job or a container being stopped) unless the command
was started with a signal ignored (a background job of a script), and `exit_code` is the shell's status
for the first signal received. Without `installed` (tierq used as a library) nothing changes: `check` does nothing.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Signals:
    """The signals received, whether a write or a last word is under way, and the batch begun."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.batch: uuid.UUID | None = None  # the batch a submission began, once it has a row
        self._installed = 0
        self._writing = 0
        self._quiet = 0

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if (self._writing or self._quiet) and len(self.received) == 1:
            return  # taken once the write, or the last word, has ended
        raise KeyboardInterrupt  # anywhere else, or asked a second time: now

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM as above until the block ends (the main thread only, as any handler)."""
        self._installed += 1
        previous = {}
        if self._installed == 1:
            self.received.clear()
            self.batch = None
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            self._installed -= 1
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A write that must not be cut by one signal: it waits for `check`."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """The command's last word on its batch: signals are only noted."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def check(self) -> None:
        """Raise KeyboardInterrupt for a signal received during a write (or one whose interrupt Python lost:
        raised inside a finaliser, it is only printed)."""
        if self._installed and self.received and not self._writing and not self._quiet:
            raise KeyboardInterrupt

    def interrupted(self) -> bool:
        """Whether a signal came (a command that finished its work still exits with the signal's status)."""
        return bool(self.received)

    def exit_code(self) -> int:
        """128 + the first signal: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.received[0] if self.received else signal.SIGINT)


SIGNALS = Signals()
