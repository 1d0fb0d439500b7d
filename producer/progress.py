"""Live progress on a terminal (redrawn in place), plain lines when the output is a file or a pipe."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from producer.submit import SubmitResult

BAR_WIDTH = 24


class Live:
    """A block of lines: redrawn in place on a terminal; elsewhere its first line, at most every `every_s`."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, every_s: float = 5.0, redraw_s: float = 0.1) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every_s = every_s if not self.tty else redraw_s
        self._shown = 0
        self._last = float("-inf")

    def update(self, lines: list[str], *, force: bool = False) -> None:
        """Show `lines` now if enough time has passed since the last update (or `force`)."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if not self.tty:
            self.stream.write(lines[0] + "\n")
        else:
            # Move to the start of the block drawn last time and clear to the end of the screen.
            rewind = f"\x1b[{self._shown}F\x1b[J" if self._shown else ""
            self.stream.write(rewind + "\n".join(lines) + "\n")
            self._shown = len(lines)
        self.stream.flush()

    def finish(self, lines: list[str]) -> None:
        """Show the final state, whatever the time since the last update."""
        self.update(lines, force=True)


class SubmitProgress:
    """The progress of reading and submitting a file: a bar when its size is known, counts and rate always."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.started = time.monotonic()

    def __call__(self, result: SubmitResult) -> None:
        """Show the progress so far (the submitter calls this every few thousand records)."""
        self.live.update([self.line(result)])

    def line(self, result: SubmitResult) -> str:
        """One line: bar and percentage (when the size is known), records, rate, accepted and rejected."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = max(result.records_read, result.accepted + result.rejected)
        text = (f"{done:,} records, {done / elapsed:,.0f}/s, {done - result.rejected:,} accepted, "
                f"{result.rejected:,} rejected")
        if result.size:
            share = min(result.bytes_read / result.size, 1.0)
            filled = int(share * BAR_WIDTH)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%}  " + text
        return text
