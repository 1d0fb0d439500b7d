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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis
from celery import Celery
from sqlalchemy import Engine

from models import lifecycle, make_engine
from producer.bill import Bill, build_bill
from producer.broker import make_sender
from producer.control import CancelResult, cancel_batch, retry_failed
from producer.inputs import LineSource, ReadOptions, from_objects, read_records
from producer.openai_output import as_openai
from producer.records import Record, Rejection
from producer.results import RESULT_FORMATS, as_result, iter_rows
from producer.status import BatchStatus, batch_status, parse_batch_id
from producer.submit import BatchOptions, SubmitResult, submit_records
from tierq.config import Config
from tierq.errors import InputError
from tierq.live import LiveMessages
from tierq.publish import Publisher
from tierq.settings import Settings, get_settings
from tierq.vault import TextVault

Source = str | Path | IO[bytes] | Iterable[Any]


class Tierq:
    """A connection to one tierq deployment (its Postgres and broker), from the settings by default."""

    def __init__(self, settings: Settings | None = None, config: Config | None = None) -> None:
        self.settings = settings or get_settings()
        self.config = config or self.settings.load_config()

    @cached_property
    def engine(self) -> Engine:
        """Connection pool to the jobs database."""
        return make_engine(self.settings.database_url)

    @cached_property
    def sender(self) -> Celery:
        """Publisher of classify messages."""
        return make_sender(self.config, self.settings.broker, self.settings.visibility_timeout_s)

    @cached_property
    def publisher(self) -> Publisher:
        """Sends task messages (after their jobs are committed) and records them as live."""
        return Publisher(self.sender, LiveMessages(self.vault.r))

    @cached_property
    def vault(self) -> TextVault:
        """Where private batches keep their texts (the Redis at TIERQ_REDIS_URL)."""
        return TextVault(redis.Redis.from_url(self.settings.redis_url))

    def submit(
        self, source: Source, options: BatchOptions | None = None, *, read: ReadOptions | None = None,
        items: Iterable[Record | Rejection] | None = None, progress: Callable[[SubmitResult], None] | None = None,
        on_reject: Callable[[Rejection], None] | None = None, every: int = 10_000,
    ) -> SubmitResult:
        """Submit a file (a path, "-" for standard input, or a binary stream) or an iterable of records.

        Records are dicts with `prompt` or `messages` (optional `id`, `task_type`, `metadata`) or strings;
        files are JSONL, CSV or OpenAI batch request files (`read` picks the format and the prompt's field).
        """
        read = read or ReadOptions()
        spec = read.spec
        batch = options or BatchOptions()
        if isinstance(source, (str, Path)) and not batch.source:
            batch = replace(batch, source="<stdin>" if str(source) == "-" else str(source))

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

    @staticmethod
    def _submit_stream(
        stream: Any, read: ReadOptions, run: Callable[[Iterable[Record | Rejection], LineSource], SubmitResult]
    ) -> SubmitResult:
        line_source = LineSource(stream)
        fmt, records = read_records(line_source, read.format, read.spec)
        result = run(records, line_source)
        result.format = fmt
        return result

    def status(self, batch_id: uuid.UUID | str) -> BatchStatus:
        """Counts of the batch's jobs by state and tier, with cost so far, rate and ETA."""
        status = batch_status(self.engine, _uuid(batch_id))
        if not status.done:
            status.stuck = self.stuck(status.batch_id)
        return status

    def stuck(self, batch_id: uuid.UUID | str | None = None) -> int:
        """Jobs (of one batch, or of all) that no message will move: unchanged for `stuck_after_s` with no
        live message. The workers' reconciler publishes their messages again; `recover` does it now."""
        with self.engine.connect() as conn:
            groups = lifecycle.lost(conn, LiveMessages(self.vault.r), self.config.worker.stuck_after_s,
                                    _uuid(batch_id) if batch_id else None)
        return sum(len(group.ids) for group in groups)

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

    def results(self, batch_id: uuid.UUID | str, format: str = "jsonl") -> Iterator[dict[str, Any]]:
        """Finished jobs' results in input order, as tierq's JSONL lines or OpenAI batch output lines."""
        if format not in RESULT_FORMATS:
            raise InputError(f"--format {format!r} is not a results format; use one of {', '.join(RESULT_FORMATS)}")
        convert = as_openai if format == "openai" else as_result
        self.status(batch_id)  # an unknown batch is an error, not an empty file
        return (convert(row) for row in iter_rows(self.engine, _uuid(batch_id), self.vault))

    def cancel(self, batch_id: uuid.UUID | str) -> CancelResult:
        """Cancel the batch's waiting jobs; running ones finish their current call."""
        return cancel_batch(self.engine, _uuid(batch_id), self.vault)

    def retry_failed(self, batch_id: uuid.UUID | str) -> int:
        """Route the batch's failed jobs again from the start; returns how many."""
        return retry_failed(self.engine, self.publisher, self.config, _uuid(batch_id))

    def report(self, batch_id: uuid.UUID | str | None = None, since: datetime | None = None) -> Bill:
        """The bill of one batch or of all, optionally from `since` on."""
        bill = build_bill(self.engine, self.config, _uuid(batch_id) if batch_id else None, since)
        bill.stuck = self.stuck(batch_id)
        return bill

    def close(self) -> None:
        """Release database connections and the broker pool."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "sender" in self.__dict__:
            self.sender.close()
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
