"""The Python API: submit a batch, watch it, read its results and its bill.

    from producer import Tierq
    with Tierq() as tq:
        batch = tq.submit([{"id": "t1", "prompt": "Where is my parcel?"}])
        tq.wait(batch.batch_id)
        for result in tq.results(batch.batch_id):
            print(result["id"], result["content"])
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast

from models import stale
from models.db import connect, make_engine
from models.query import Connection
from producer.status import BatchStatus, batch_status, open_provider_batches, parse_batch_id
from tierq.errors import InputError
from tierq.live import LiveMessages
from tierq.outline import Outline, read_outline
from tierq.presence import Presence, eviction_policy
from tierq.redact import shown_redis_url
from tierq.settings import Settings, get_settings

if TYPE_CHECKING:  # what the commands that only read a batch do not need loads when first used
    import redis
    from celery import Celery
    from sqlalchemy import Engine

    from producer.bill.build import Bill
    from producer.control import CancelResult
    from producer.inputs.records import Record, Rejection
    from producer.inputs.stream import LineSource, ReadOptions
    from producer.submit import BatchOptions, SubmitResult
    from tierq.config import Config
    from tierq.publish import Publisher
    from tierq.vault import TextVault

Source = str | Path | IO[bytes] | Iterable[Any]


class ResultLines:
    """A batch's result lines, read as they are iterated. Once they are all read, `gone` counts the
    succeeded jobs whose answer was not there: a --no-store-text batch's answers are returned once, and
    `unfinished` the jobs that were not finished, so have no line."""

    def __init__(self, tq: Tierq, batch: uuid.UUID, convert: Callable[[Any], dict[str, Any]], total: int = 0) -> None:
        self.gone = 0
        self.read = 0
        self.total = total
        self.private = False  # known once the first line is read
        self._lines = self._read(tq, batch, convert)

    def _read(self, tq: Tierq, batch: uuid.UUID,
              convert: Callable[[Any], dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        from producer.results import is_private, iter_rows

        with connect(tq.settings.database_url) as conn:
            self.private = is_private(conn, batch)
            # The vault only for a private batch: reading any other needs no Redis (nor asks again).
            rows = iter_rows(conn, batch, (lambda: tq.vault) if self.private else None)
            try:
                for row in rows:
                    self.gone += row.status == "succeeded" and row.content is None
                    self.read += 1
                    yield convert(row)
            finally:
                rows.close()  # a line not handed over keeps its answer in the vault (iter_rows)

    def __iter__(self) -> ResultLines:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._lines)

    def close(self) -> None:
        """Stop reading: the line last returned counts as not handed over (a private batch keeps its answer)."""
        self._lines.close()

    @property
    def unfinished(self) -> int:
        """Once every line is read: the batch's jobs that were not finished, so are not among them."""
        return max(self.total - self.read, 0)


class Tierq:
    """A connection to one tierq deployment (its Postgres and broker), from the settings by default."""

    def __init__(self, settings: Settings | None = None, config: Config | None = None) -> None:
        self.settings = settings or get_settings()
        if config is not None:
            self.config = config

    @cached_property
    def config(self) -> Config:
        """The TOML configuration (TIERQ_CONFIG), read and checked when first used."""
        return self.settings.load_config()

    @cached_property
    def outline(self) -> Outline:
        """What reading a batch needs of the configuration: from `config` once it is loaded, else read on
        its own (tierq.outline), so that `tierq status` and `results` need not load pydantic."""
        if "config" in self.__dict__:
            return self.config.outline
        return read_outline(self.settings.config)

    @cached_property
    def engine(self) -> Engine:
        """Connection pool to the jobs database."""
        return make_engine(self.settings.database_url)

    @cached_property
    def sender(self) -> Celery:
        """Publisher of classify messages."""
        from producer.broker import make_sender

        return make_sender(self.config, self.settings.broker, self.settings.visibility_timeout_s)

    @cached_property
    def publisher(self) -> Publisher:
        """Sends task messages (after their jobs are committed) and records them as live."""
        from tierq.publish import Publisher

        return Publisher(self.sender, LiveMessages(self.vault.r))

    @cached_property
    def vault(self) -> TextVault:
        """Where private batches keep their texts (the Redis at TIERQ_REDIS_URL)."""
        import redis  # here: reading a finished batch needs no Redis (and redis-py takes 0.1 s to import)

        from tierq.vault import TextVault

        return TextVault(redis.Redis.from_url(self.settings.redis_url))

    @cached_property
    def reader(self) -> redis.Redis:
        """What `status` reads from Redis through: the vault's client once there is one, else a small
        read-only one (tierq.resp), since importing redis-py would double the time `tierq status` takes."""
        from tierq.resp import client_for

        light = None if "vault" in self.__dict__ else client_for(self.settings.redis_url)
        # It offers, with redis-py's signatures, the calls Presence and LiveMessages make to read.
        return cast("redis.Redis", light) if light is not None else self.vault.r

    def submit(
        self, source: Source, options: BatchOptions | None = None, *, read: ReadOptions | None = None,
        items: Iterable[Record | Rejection] | None = None, progress: Callable[[SubmitResult], None] | None = None,
        on_reject: Callable[[Rejection], None] | None = None, every: int = 10_000,
    ) -> SubmitResult:
        """Submit a file (a path, "-" for standard input, or a binary stream) or an iterable of records.

        Records are dicts with `prompt` or `messages` (optional `id`, `task_type`, `metadata`) or strings;
        files are JSONL, CSV or OpenAI batch request files (`read` picks the format and the prompt's field).
        """
        from producer.inputs.stream import ReadOptions, from_objects
        from producer.submit import BatchOptions, submit_records

        read = read or ReadOptions()
        spec = read.spec
        batch = options or BatchOptions()
        if isinstance(source, (str, Path)) and not batch.source:
            batch = replace(batch, source="<stdin>" if str(source) == "-" else str(source))

        self._reachable()

        def run(records: Iterable[Record | Rejection], line_source: LineSource | None = None) -> SubmitResult:
            return submit_records(self.engine, self.publisher, self.config, batch, records, progress,
                                  on_reject=on_reject, source=line_source, every=every,
                                  vault=None if batch.store_text else self.vault)

        if items is not None:
            return run(items)
        if isinstance(source, (str, Path)) and str(source) == "-":
            return self._submit_stream(sys.stdin.buffer, read, run)
        if isinstance(source, (str, Path)):
            try:
                stream = open(source, "rb")  # noqa: SIM115 (closed below, after the generator is drained)
            except OSError as exc:
                raise InputError(f"cannot read {source}: {exc.strerror}") from None
            with stream:
                return self._submit_stream(stream, read, run)
        if hasattr(source, "read"):
            return self._submit_stream(source, read, run)
        return run(from_objects(source, spec))

    def _submit_stream(
        self, stream: Any, read: ReadOptions, run: Callable[[Iterable[Record | Rejection], LineSource], SubmitResult]
    ) -> SubmitResult:
        from producer.inputs.stream import LineSource, max_line_bytes, read_records
        from producer.submit import SubmitInterrupted

        line_source = LineSource(stream, max_line_bytes(self.config.max_context))
        fmt, records = read_records(line_source, read.format, read.spec)
        try:
            result = run(records, line_source)
        except SubmitInterrupted as stop:
            stop.result.format = fmt
            raise
        result.format = fmt
        return result

    def _reachable(self) -> None:
        """Redis and the broker answer, before anything is stored: a batch half in Postgres and half not
        queued helps no one. Raises their own errors (the CLI turns them into one line)."""
        self.vault.r.ping()
        if self.settings.broker != self.settings.redis_url:
            with self.sender.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=5)

    def status(self, batch_id: uuid.UUID | str) -> BatchStatus:
        """Counts of the batch's jobs by state and tier, with cost so far, rate and ETA."""
        # Reading a batch goes through libpq alone (models.db.connect): `tierq status` would spend most of its
        # time importing SQLAlchemy or psycopg. A connection per call, like a pooled one checked out, so a
        # database restart between two calls (of `wait`) does no harm.
        with connect(self.settings.database_url) as conn:
            status = batch_status(conn, _uuid(batch_id))
            if status.done and status.total:
                from producer.bill.quality import read_quality
                from producer.bill.queries import Scope

                status.quality = read_quality(conn, Scope(status.batch_id), self.outline)
            if not status.done:
                status.stuck = self._stuck(conn, status.batch_id)
                status.provider_batches = open_provider_batches(conn, status.batch_id)
        if not status.done:
            presence = Presence(self.reader)
            workers = presence.workers()
            consumers, refusals = presence.consumers(workers), presence.refusals(workers, str(status.batch_id))
            waiting = status.waiting_by_queue()
            status.unserved = {q: n for q, n in waiting.items() if q not in consumers}
            status.redis_evicts = eviction_policy(self.reader)
            status.redis_url = shown_redis_url(self.settings.redis_url)
            if status.unserved:
                unstarted = presence.not_started(workers)
                status.not_started = {q: unstarted[q] for q in status.unserved if q in unstarted}
            status.refused = {q: refusals[q] for q in waiting if q in refusals}
            if status.unserved or status.refused or status.provider_batches or status.orphaned or status.resent:
                # Jobs waiting on a queue no worker reads, a provider batch's window or a dead worker's lease
                # do not finish at the recent rate: no ETA rather than a wrong one.
                status.eta_s = None
        return status

    def stuck(self, batch_id: uuid.UUID | str | None = None) -> int:
        """Jobs (of one batch, or of all) that no message will move: unchanged for `stuck_after_s` with no
        live message, or one the broker lost (models.stale.lost). The workers' reconciler publishes their
        messages again; `recover` does it now."""
        with connect(self.settings.database_url) as conn:
            return self._stuck(conn, _uuid(batch_id) if batch_id else None)

    def _stuck(self, conn: Connection, batch_id: uuid.UUID | None) -> int:
        groups = stale.lost(conn, LiveMessages(self.reader), self.outline.stuck_after_s, batch_id,
                            self._queue_lengths)
        return sum(len(group.ids) for group in groups)

    def _queue_lengths(self, queues: Sequence[str]) -> dict[str, int]:
        from tierq.broker import lengths_or_unknown

        return lengths_or_unknown(self.settings.broker, queues)

    def wait(
        self, batch_id: uuid.UUID | str, *, timeout: float | None = None, poll_s: float = 0.5,
        on_progress: Callable[[BatchStatus], None] | None = None,
    ) -> BatchStatus:
        """Block until every job of the batch is final (or `timeout` passes); returns the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(batch_id)
            if on_progress is not None:
                on_progress(status)
            if status.done or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(poll_s)

    def results(self, batch_id: uuid.UUID | str, format: str = "jsonl") -> ResultLines:
        """Finished jobs' results in input order, as tierq's JSONL lines or OpenAI batch output lines."""
        from producer.openai_output import as_openai
        from producer.results import RESULT_FORMATS, as_result

        if format not in RESULT_FORMATS:
            raise InputError(f"--format {format!r} is not a results format; use one of {', '.join(RESULT_FORMATS)}")
        convert = as_openai if format == "openai" else as_result
        batch = _uuid(batch_id)
        total = self.status(batch).total  # an unknown batch is an error, not an empty file
        return ResultLines(self, batch, convert, total)

    def cancel(self, batch_id: uuid.UUID | str) -> CancelResult:
        """Cancel the batch's waiting jobs; running ones finish their current call."""
        from producer.control import cancel_batch

        return cancel_batch(self.engine, _uuid(batch_id), self.vault)

    def retry_failed(self, batch_id: uuid.UUID | str) -> int:
        """Route the batch's failed jobs again from the start; returns how many. Jobs its budget stopped
        stay failed (`failed_for_budget` counts them)."""
        from producer.control import retry_failed

        return retry_failed(self.engine, self.publisher, self.config, _uuid(batch_id))

    def failed_for_budget(self, batch_id: uuid.UUID | str) -> int:
        """The batch's jobs that failed because its budget could not cover them (a retry leaves them)."""
        from models.lifecycle import failed_for_budget

        with self.engine.connect() as conn:
            return failed_for_budget(conn, _uuid(batch_id))

    def report(self, batch_id: uuid.UUID | str | None = None, since: datetime | None = None) -> Bill:
        """The bill of one batch or of all, optionally from `since` on."""
        from producer.bill.build import build_bill

        bill = build_bill(self.engine, self.config, _uuid(batch_id) if batch_id else None, since)
        bill.stuck = self.stuck(batch_id)
        return bill

    def close(self) -> None:
        """Release database connections and the broker pool."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "sender" in self.__dict__:
            self.sender.close()
        if "reader" in self.__dict__:
            self.reader.close()
        if "vault" in self.__dict__:
            self.vault.r.close()

    def __enter__(self) -> Tierq:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else parse_batch_id(value)
