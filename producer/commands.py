"""The bodies of the `tierq` batch commands, kept out of `cli.py` so that it only declares options."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

import click

from models.enums import JobStatus
from producer.api import Tierq
from producer.progress import Live, SubmitProgress
from producer.status import BatchStatus
from producer.views import bill_lines, status_line, status_lines
from tierq.errors import InputError

if TYPE_CHECKING:  # submitting loads Celery and the input readers; reading a batch does not need them
    from producer.inputs.records import Rejection
    from producer.inputs.stream import ReadOptions
    from producer.submit import BatchOptions, SubmitResult

SHOWN_REJECTIONS = 20
# `submit --wait` when the batch ended with jobs failed or cancelled: apart from 1 (nothing submitted, or a
# tierq error), 2 (bad input, config or a service down), 130 (Ctrl-C) and 143 (SIGTERM), so
# `submit --wait && next` stops.
EXIT_UNFINISHED_JOBS = 3
_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")


@contextlib.contextmanager
def _rejects_file(path: Path | None) -> Iterator[Callable[[Rejection], None] | None]:
    if path is None:
        yield None
        return
    try:
        sink = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by this context manager)
    except OSError as exc:
        raise InputError(f"cannot write the rejects file {path}: {exc.strerror}") from None
    def write(rejection: Rejection) -> None:
        sink.write(json.dumps(rejection.as_dict(), ensure_ascii=False) + "\n")

    with sink:
        yield write


def run_submit(source: str, options: BatchOptions, read: ReadOptions, rejects: Path | None, wait: bool,
               as_json: bool) -> int:
    """Submit, report what was rejected and why, optionally watch the batch to its end; the exit code."""
    from producer.signals import SIGNALS

    submitted: list[SubmitResult] = []
    with SIGNALS.installed():
        try:
            code = _submit(source, options, read, rejects, wait, as_json, submitted)
            return SIGNALS.exit_code() if SIGNALS.interrupted() else code  # one that came during its last word
        except KeyboardInterrupt:  # outside the submission itself, which says what it kept
            with SIGNALS.quiet():
                if submitted:
                    click.echo(f"\ninterrupted: batch {submitted[0].batch_id} was submitted whole", err=True)
                elif SIGNALS.batch is not None:
                    if as_json:
                        click.echo(json.dumps({"batch_id": str(SIGNALS.batch), "interrupted": True}))
                    click.echo(f"\ninterrupted: batch {SIGNALS.batch} was begun; `tierq status {SIGNALS.batch}` "
                               f"says what it holds, `tierq cancel {SIGNALS.batch}` stops it", err=True)
                else:
                    click.echo("\ninterrupted: nothing was submitted", err=True)
                return SIGNALS.exit_code()


def _submit(source: str, options: BatchOptions, read: ReadOptions, rejects: Path | None, wait: bool,
            as_json: bool, submitted: list[SubmitResult]) -> int:
    from producer.signals import SIGNALS
    from producer.submit import SubmitInterrupted

    live = Live(sys.stderr)
    progress = SubmitProgress(live)
    with Tierq() as tq, _rejects_file(rejects) as on_reject:
        lowest = options.force_tier or options.min_tier  # jobs start there or above, and escalate upwards
        reachable = tq.config.tiers[tq.config.tier_index(lowest) if lowest in tq.config.tier_names else 0:]
        if options.budget_usd is not None and any(t.uses_batch_api(options.deadline_s) for t in reachable):
            click.echo("note: a batch with --budget-usd does not use the providers' Batch APIs (a budget reserves "
                       "each call's worst case just before it is made), so its calls are at list price; leave out "
                       "--budget-usd for the batch price", err=True)
        try:
            result = tq.submit(source, options, read=read, progress=progress, on_reject=on_reject, every=2000)
        except SubmitInterrupted as stop:
            with SIGNALS.quiet():  # a second signal must not cut the one line that names the batch
                done = stop.result
                if done.records_read >= 2000:
                    live.finish([progress.line(done)])  # the last progress line, counting every record read
                if as_json:
                    click.echo(json.dumps({**done.as_dict(), "interrupted": True, "last_line": done.last_line}))
                upto = (f" (the input through its record at line {done.last_line:,}; the rest is not in it)"
                        if done.last_line else "")
                if done.accepted:
                    click.echo(f"\ninterrupted: batch {done.batch_id} keeps the {done.accepted:,} jobs accepted so "
                               f"far{upto}, and they will run; stop them with `tierq cancel {done.batch_id}`",
                               err=True)
                else:
                    click.echo(f"\ninterrupted: batch {done.batch_id} holds no job, so nothing will run", err=True)
                return SIGNALS.exit_code()
        submitted.append(result)
        with SIGNALS.quiet():  # submitted whole: what is said about it is not cut short
            if result.accepted + result.rejected >= 2000:
                live.finish([progress.line(result)])  # the last line shows the whole file, on a terminal or not
            _show_rejections(result, rejects)
            if result.accepted == 0:
                return _nothing_accepted(source, result, as_json)
            if not wait:
                click.echo(json.dumps(result.as_dict()) if as_json else
                           f"batch {result.batch_id}: {result.accepted:,} accepted, {result.rejected:,} rejected")
                return 0
        try:
            SIGNALS.check()  # a signal while the submission was being reported: no watching then
            final = _watch(tq, result, as_json)
        except KeyboardInterrupt:
            with SIGNALS.quiet():
                if as_json:
                    click.echo(json.dumps(result.as_dict()))
                click.echo(_stopped_watching(result.batch_id), err=True)
                return SIGNALS.exit_code()
    with SIGNALS.quiet():
        if as_json:
            click.echo(json.dumps({**result.as_dict(), "status": final.as_dict()}))
        line, code = waited_outcome(final)
        click.echo(line, err=as_json)
        return code


def waited_outcome(status: BatchStatus) -> tuple[str, int]:
    """The last line of `submit --wait` and its exit code: 0 when every job succeeded, else
    EXIT_UNFINISHED_JOBS."""
    failed, cancelled = status.count(JobStatus.FAILED), status.count(JobStatus.CANCELLED)
    if not failed and not cancelled:
        return f"batch {status.batch_id}: all {status.total:,} jobs succeeded", 0
    return (f"batch {status.batch_id}: {status.count(JobStatus.SUCCEEDED):,} of {status.total:,} jobs succeeded, "
            f"{failed:,} failed, {cancelled:,} cancelled; exit status {EXIT_UNFINISHED_JOBS} "
            f"(`tierq results {status.batch_id}` gives each job's reason)"), EXIT_UNFINISHED_JOBS


def _show_rejections(result: SubmitResult, rejects: Path | None) -> None:
    for rejection in result.rejections[:SHOWN_REJECTIONS]:
        click.echo(f"rejected: {rejection.reason}", err=True)
    if result.rejected > SHOWN_REJECTIONS:
        where = f"; all of them are in {rejects}" if rejects else "; --rejects FILE writes all of them"
        click.echo(f"... and {result.rejected - SHOWN_REJECTIONS:,} more rejected records{where}", err=True)


def _nothing_accepted(source: str, result: SubmitResult, as_json: bool) -> int:
    name = "standard input" if source == "-" else source
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    if result.rejected == 0:
        click.echo(f"error: {name} has no records (it is empty or has only blank lines)", err=True)
    else:
        click.echo(f"error: none of the {result.rejected:,} records of {name} was accepted; "
                   "fix the lines named above and submit again", err=True)
    return 1


def _watch(tq: Tierq, result: SubmitResult, as_json: bool) -> BatchStatus:
    click.echo(f"batch {result.batch_id}: {result.accepted:,} accepted, {result.rejected:,} rejected; waiting",
               err=as_json)
    show = _Shown(sys.stderr if as_json else sys.stdout, tq.outline.tier_names)
    status = tq.wait(result.batch_id, poll_s=1.0, on_progress=show)
    show.final(status)
    return status


def _stopped_watching(batch: object) -> str:
    """What Ctrl-C while a command waits on a batch says: the command stops, the batch does not."""
    return (f"\nstopped watching: batch {batch} goes on (`tierq status {batch} --watch` follows it again, "
            f"`tierq cancel {batch}` stops it)")


class _Shown:
    """A batch's status as it changes: redrawn in place on a terminal, else a line whenever it changes."""

    def __init__(self, stream: TextIO, tiers: list[str]) -> None:
        self.live = Live(stream, every_s=0.0)
        self.tiers, self.last = tiers, ""

    def __call__(self, status: BatchStatus) -> None:
        if self.live.tty:
            self.live.update(status_lines(status, self.tiers))
            return
        line = status_line(status, self.tiers)
        if line != self.last:
            self.live.stream.write(line + "\n")
            self.live.stream.flush()
            self.last = line

    def final(self, status: BatchStatus) -> None:
        """The full block, once, at the end."""
        if self.live.tty:
            self.live.finish(status_lines(status, self.tiers))
        else:
            self.live.stream.write("\n".join(status_lines(status, self.tiers)) + "\n")


def watch_status(batch: str, as_json: bool, watch: bool, interval: float) -> int:
    """Print the batch's status once (exit code 0), or refresh it until the batch is done (JSON: one line per
    refresh; a pipe gets a line whenever the status changes, then the whole block at the end) and end as
    `submit --wait` does: its last line and exit code."""
    with Tierq() as tq:
        show = _Shown(sys.stdout, tq.outline.tier_names)
        try:
            while True:
                status = tq.status(batch)
                if as_json:
                    click.echo(json.dumps(status.as_dict()))
                elif not watch or status.done:
                    show.final(status)
                else:
                    show(status)
                if not watch:
                    return 0
                if status.done:  # watched to its end: ends as `submit --wait` does, so `&& next-step` can rely on it
                    line, code = waited_outcome(status)
                    click.echo(line, err=as_json)
                    return code
                time.sleep(interval)
        except KeyboardInterrupt:
            click.echo(_stopped_watching(batch), err=True)
            return 130


def write_results(batch: str, output: IO[str], fmt: str) -> None:
    """Stream the batch's finished jobs to `output`, one JSON line each."""
    with Tierq() as tq:
        lines = tq.results(batch, fmt)
        try:
            for row in lines:
                output.write(json.dumps(row, ensure_ascii=False) + "\n")
                if lines.private:
                    output.flush()  # a private answer counts as delivered once it has left the process
        finally:
            lines.close()
    if lines.unfinished:
        click.echo(f"note: batch {batch} is not finished: its {lines.unfinished:,} jobs still waiting or running "
                   f"have no line here; `tierq status {batch} --watch` follows it to its end", err=True)
    if lines.gone:
        click.echo(f"note: {lines.gone:,} succeeded jobs come without their answer: the batch was submitted with "
                   "--no-store-text, whose answers are kept in Redis until an earlier `tierq results` took them "
                   "or they expired", err=True)


def parse_age(value: str, option: str) -> float:
    """Seconds of a duration such as `30m`, `2h` or `1d` (`0m`: none); `option` is the option an error names."""
    relative = _RELATIVE.match(value.strip())
    if not relative:
        raise InputError(f"{option} {value!r} is not a duration; use 30m, 2h or 1d")
    return int(relative.group(1)) * {"d": 86400.0, "h": 3600.0, "m": 60.0}[relative.group(2)]


def parse_since(value: str) -> datetime:
    """`2026-11-01`, `2026-11-01T09:30` (local time unless it names a zone), or `7d` / `12h` / `30m` ago."""
    relative = _RELATIVE.match(value.strip())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
        return datetime.now().astimezone() - delta
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"--since {value!r} is not a date; use 2026-11-01, 2026-11-01T09:30 or 7d, 12h, 30m") from None
    return moment if moment.tzinfo else moment.astimezone()


def print_report(batch: str | None, since: str | None, as_json: bool, plot: Path | None) -> None:
    """Print the bill as a table or JSON, and draw it when asked."""
    from producer.status import parse_batch_id

    with Tierq() as tq:
        batch_id = parse_batch_id(batch) if batch else None
        if batch_id is not None:
            tq.status(batch_id)  # an unknown batch is an error, not an empty bill
        bill = tq.report(batch_id, parse_since(since) if since else None)
        if plot is not None:
            from producer.bill.plot import render_bill

            try:
                render_bill(bill, plot, tq.config.tier_names)
            except OSError as exc:
                raise InputError(f"--plot {plot}: cannot write it ({exc.strerror or exc}); name a file in a "
                                 "directory that exists and that you may write to") from None
            click.echo(f"plot written to {plot}", err=True)
    if as_json:
        click.echo(json.dumps(bill.as_dict()))
    else:
        click.echo("\n".join(bill_lines(bill)))

