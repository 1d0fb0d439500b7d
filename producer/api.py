"""The Python API: submit a batch, watch it, read its results.

    from producer import Tierq
    with Tierq() as tq:
        batch = tq.submit([{"id": "t1", "prompt": "Where is my parcel?"}])
        tq.wait(batch.batch_id)
        for result in tq.results(batch.batch_id):
            print(result["id"], result["content"])
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from celery import Celery
from sqlalchemy import Engine

from models import make_engine
from producer.broker import make_sender
from producer.inputs import from_objects, read_jsonl
from producer.records import Record, Rejection
from producer.results import iter_results
from producer.status import BatchStatus, batch_status, parse_batch_id
from producer.submit import BatchOptions, SubmitResult, submit_records
from tierq.config import Config
from tierq.settings import Settings, get_settings


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
        return make_sender(self.config, self.settings.broker)

    def submit(
        self, source: str | Path | Iterable[Any], options: BatchOptions | None = None, *,
        items: Iterable[Record | Rejection] | None = None, progress: Callable[[SubmitResult], None] | None = None,
    ) -> SubmitResult:
        """Submit a JSONL file (path) or an iterable of records (dicts with prompt/messages, or strings)."""
        options = options or BatchOptions()
        if items is not None:
            return submit_records(self.engine, self.sender, self.config, options, items, progress)
        if isinstance(source, (str, Path)):
            with open(source, "rb") as stream:
                options = options if options.source else _with_source(options, str(source))
                return submit_records(self.engine, self.sender, self.config, options, read_jsonl(stream), progress)
        return submit_records(self.engine, self.sender, self.config, options, from_objects(source), progress)

    def status(self, batch_id: uuid.UUID | str) -> BatchStatus:
        """Counts of the batch's jobs by state and tier, with cost so far."""
        return batch_status(self.engine, _uuid(batch_id))

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

    def results(self, batch_id: uuid.UUID | str) -> Iterator[dict[str, Any]]:
        """Finished jobs' results in input order."""
        return iter_results(self.engine, _uuid(batch_id))

    def close(self) -> None:
        """Release database connections and the broker pool."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "sender" in self.__dict__:
            self.sender.close()

    def __enter__(self) -> Tierq:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else parse_batch_id(value)


def _with_source(options: BatchOptions, source: str) -> BatchOptions:
    return replace(options, source=source)
