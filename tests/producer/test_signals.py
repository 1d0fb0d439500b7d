"""How `tierq submit` takes Ctrl-C and SIGTERM (producer/signals.py): never inside a write unless asked twice,
never while it says what became of its batch, and not at all when it was started with the signal ignored."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from producer.signals import Signals


@pytest.fixture(autouse=True)
def as_a_command_starts() -> Iterator[None]:
    """SIGINT and SIGTERM as an interactive command starts with them: a test run in a script's background
    (CI, nohup) inherits SIGINT ignored, which `installed` would rightly keep ignored."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _send(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)  # the handler runs in this, the main, thread before os.kill returns


def test_one_signal_waits_for_the_write_and_a_second_stops_it() -> None:
    signals = Signals()
    with signals.installed():
        with signals.shielded():
            _send()  # taken later
        with pytest.raises(KeyboardInterrupt):
            signals.check()
        with signals.shielded(), pytest.raises(KeyboardInterrupt):
            _send()  # the second, during a write: at once
        with pytest.raises(KeyboardInterrupt):
            _send()  # and anywhere else
        assert signals.exit_code() == 128 + signal.SIGTERM and len(signals.received) == 3
    with signals.installed():
        with signals.quiet():
            _send()  # the first, during the last word on the batch: it is not cut
        assert signals.interrupted()  # and the command's status says the signal came
        with signals.quiet(), pytest.raises(KeyboardInterrupt):
            _send()  # a second one stops even that
    with pytest.raises(KeyboardInterrupt), signals.installed():
        _send(signal.SIGINT)  # outside a write: at once
    assert signals.exit_code() == 130


def test_outside_installed_nothing_changes_and_an_ignored_signal_stays_ignored() -> None:
    signals = Signals()
    with signals.installed(), signals.shielded():
        _send()
    signals.check()  # left over from a finished command: no effect once the handler is gone
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a script's background job starts
    try:
        with signals.installed():
            _send()
            signals.check()
            assert signals.received == []
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
