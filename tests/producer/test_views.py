"""What people read: progress redrawn in place or as plain lines, status lines, tables, dates."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from producer.commands import parse_since
from producer.progress import Live, SubmitProgress
from producer.status import BatchStatus
from producer.submit import SubmitResult
from producer.views import duration, money, status_line, status_lines, table
from tierq.errors import InputError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_block_is_redrawn_in_place() -> None:
    screen = Terminal()
    live = Live(screen)
    live.update(["one", "two"], force=True)
    live.update(["three", "four"], force=True)
    assert screen.getvalue() == "one\ntwo\n\x1b[2F\x1b[Jthree\nfour\n"


def test_elsewhere_plain_first_lines_at_most_every_interval() -> None:
    log = io.StringIO()
    live = Live(log, every_s=3600)
    live.update(["first", "detail"])
    live.update(["too soon"])
    live.finish(["last"])
    assert log.getvalue() == "first\nlast\n"


def test_submit_progress_shows_a_bar_when_the_size_is_known() -> None:
    result = SubmitResult(uuid.uuid4(), accepted=4_000, rejected=12, bytes_read=500, size=1000)
    line = SubmitProgress(Live(io.StringIO())).line(result)
    assert line.startswith("[############............]  50%  4,012 records, ")
    assert line.endswith("4,000 accepted, 12 rejected")
    result.size = None
    assert SubmitProgress(Live(io.StringIO())).line(result).startswith("4,012 records, ")


def test_status_lines_order_tiers_and_say_rate_and_eta() -> None:
    status = BatchStatus(uuid.uuid4(), 10, 2, {"succeeded": 6, "running": 4}, {"warm": 4, "hot": 6}, 1,
                         Decimal("0.0123"), 11, by_tier_status={"warm": {"running": 4}, "hot": {"succeeded": 6}},
                         elapsed_s=65, rate_per_s=2.0, eta_s=2.0)
    first, jobs, hot, warm, totals = status_lines(status, ["hot", "warm", "cold"])
    assert first.endswith(": 6/10 done, running, 1m 05s, 2.0 jobs/s, ETA 2s, $0.012300 spent")
    assert jobs == "  jobs:  succeeded 6, running 4; 2 rejected at submit"
    assert hot.startswith("  hot:") and warm.startswith("  warm:")
    assert totals == "  escalations 1, calls 11, cache hits 0, cost $0.012300"


def test_status_lines_say_how_many_jobs_wait_in_provider_batches_and_how_many_files_still_fill() -> None:
    status = BatchStatus(uuid.uuid4(), 30, 0, {"queued": 30}, {"warm": 30}, 0, Decimal(0), 0)
    status.provider_batches = {"batches": 3, "requests": 30, "completed": 7, "failed": 1, "filling": 1}
    assert "  in provider batches: 30 jobs in 3 (1 still filling; the provider reports 7 completed, 1 failed)" in (
        status_lines(status, ["hot", "warm", "cold"]))
    status.provider_batches["filling"] = 0
    assert "  in provider batches: 30 jobs in 3 (the provider reports 7 completed, 1 failed)" in (
        status_lines(status, ["hot", "warm", "cold"]))
    # Its poll message lost with a killed worker: the counts stayed those of the last look, for minutes, silently.
    status.provider_batches["polled_s"] = 110
    assert ("  in provider batches: 30 jobs in 3 (the provider reports 7 completed, 1 failed when last looked at, "
            "1m 50s ago)") in status_lines(status, ["hot", "warm", "cold"])
    # The looks fail (a key revoked, say): the counts stand still, and status says what the provider answers.
    status.provider_batches["look_error"] = "HTTP 401: Incorrect API key provided."
    assert ("  in provider batches: 30 jobs in 3 (the provider reports 7 completed, 1 failed when last looked at, "
            "1m 50s ago; since then it answered HTTP 401: Incorrect API key provided.)") in status_lines(
        status, ["hot", "warm", "cold"])


def test_jobs_held_for_a_provider_no_call_reaches_are_told_how_to_check_its_url() -> None:
    status = BatchStatus(uuid.uuid4(), 2, 0, {"queued": 2}, {"hot": 2}, 0, Decimal(0), 10)
    status.held, status.held_s = 2, 122.0
    status.held_reason = "connection: provider 'sim' cannot be reached"
    assert ("  held: 2 jobs wait (the longest for 2m 02s): connection: provider 'sim' cannot be reached; if it should "
            "be up, `tierq doctor` tries each provider's base_url") in status_lines(status, ["hot", "warm", "cold"])
    status.held_reason = "rate limit: sim-nano has no free slot yet"  # nothing to check there
    assert ("  held: 2 jobs wait (the longest for 2m 02s): rate limit: sim-nano has no free slot yet"
            in status_lines(status, ["hot", "warm", "cold"]))


def test_jobs_held_at_two_tiers_for_different_reasons_are_each_told_their_own() -> None:
    status = BatchStatus(uuid.uuid4(), 50, 0, {"queued": 50}, {"hot": 40, "cold": 10}, 0, Decimal(0), 60)
    status.held, status.held_s = 50, 122.0
    status.held_reason = "rate limit: sim-nano asked to wait 20 s (HTTP 429)"  # what most of them share
    status.held_queues = [("hot", 40, 122.0, status.held_reason),
                          ("cold", 10, 31.0, "connection: provider 'big' cannot be reached")]
    lines = status_lines(status, ["hot", "warm", "cold"])
    at = lines.index("  held: 50 jobs wait (the longest for 2m 02s)")
    assert lines[at + 1:at + 3] == [
        "    at hot: 40 (the longest for 2m 02s): rate limit: sim-nano asked to wait 20 s (HTTP 429)",
        "    at cold: 10 (the longest for 31s): connection: provider 'big' cannot be reached; if it should be up, "
        "`tierq doctor` tries each provider's base_url"]
    assert status_line(status).endswith(
        "; held 50 (40 at hot: rate limit: sim-nano asked to wait 20 s (HTTP 429); 10 at other queues)")
    # One reason wherever they wait: the one line of before.
    status.held_queues = [("hot", 40, 122.0, status.held_reason), ("cold", 10, 31.0, status.held_reason)]
    assert ("  held: 50 jobs wait (the longest for 2m 02s): rate limit: sim-nano asked to wait 20 s (HTTP 429)"
            in status_lines(status, ["hot", "warm", "cold"]))


def test_the_one_line_status_says_how_to_fix_a_queue_no_worker_serves() -> None:
    # What `submit --wait` and `status --watch` print where the output is not a terminal (a CI log, say).
    status = BatchStatus(uuid.uuid4(), 2, 0, {"pending": 2}, {}, 0, Decimal(0), 0)
    status.unserved = {"classify": 1}
    status.refused = {"hot": {"w1@host": "tier 'hot' is not in this worker's TOML"}}
    line = status_line(status)
    assert "; PROBLEM: no worker consumes queue classify (start one: celery -A workers worker -Q classify)" in line
    assert ("; PROBLEM: worker w1@host gives the messages of queue hot back (start it with the deployment's TOML)"
            in line)


def test_small_helpers() -> None:
    assert (duration(None), duration(5), duration(125), duration(3725)) == ("?", "5s", "2m 05s", "1h 02m")
    assert money(Decimal("1234.5")) == "$1,234.500000"
    assert table(["model", "calls"], [["sim-nano", 1200], ["sim-mid", 3]]) == [
        "model     calls", "sim-nano  1,200", "sim-mid       3"]


def test_since_takes_dates_times_and_ages() -> None:
    assert parse_since("2026-11-01").date().isoformat() == "2026-11-01"
    assert parse_since("2026-11-01T09:30+00:00").isoformat() == "2026-11-01T09:30:00+00:00"
    assert parse_since("2026-11-01").tzinfo is not None
    week = datetime.now().astimezone() - parse_since("7d")
    assert abs(week - timedelta(days=7)) < timedelta(minutes=1)
    with pytest.raises(InputError, match="--since 'last week' is not a date"):
        parse_since("last week")
