"""Submitting a batch: validate records as they stream in, bulk-insert jobs, enqueue classify chunks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import Engine, insert, text

from models import Batch, JobStatus
from producer.records import Record, Rejection
from tierq.config import Config
from tierq.errors import InputError
from tierq.queues import CLASSIFY_QUEUE, CLASSIFY_TASK

JOB_COLUMNS = (
    "id", "batch_id", "seq", "custom_id", "tenant", "task_type", "messages", "params", "metadata",
    "prompt_chars", "status", "handoff", "attempts", "escalations",
)


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """Options that apply to every job of a batch."""

    tenant: str = "default"
    task_type: str = "default"
    system_prompt: str | None = None
    force_tier: str | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def check(self, config: Config) -> None:
        """Reject tier options that name no configured tier, or a minimum above the maximum."""
        for label, tier in (("--tier", self.force_tier), ("--min-tier", self.min_tier), ("--max-tier", self.max_tier)):
            if tier is not None and tier not in config.tier_names:
                raise InputError(f"{label} {tier!r} is not a configured tier; use one of {config.tier_names}")
        if self.min_tier and self.max_tier and config.tier_index(self.min_tier) > config.tier_index(self.max_tier):
            raise InputError(f"--min-tier {self.min_tier!r} is above --max-tier {self.max_tier!r}")


@dataclass(slots=True)
class SubmitResult:
    """What a submission accepted and rejected."""

    batch_id: uuid.UUID
    accepted: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The `--json` form."""
        return {"batch_id": str(self.batch_id), "accepted": self.accepted, "rejected": self.rejected}


class Submitter:
    """Streams records into one batch, `chunk` jobs per insert and per classify message."""

    def __init__(self, engine: Engine, app: Celery, config: Config, options: BatchOptions) -> None:
        options.check(config)
        self.engine, self.app, self.config, self.options = engine, app, config, options
        self.chunk = config.worker.classify_chunk
        self.max_chars = config.max_context * 4
        self.result = SubmitResult(uuid.uuid4())
        self._seen: set[str] = set()
        self._pending: list[Record] = []
        self._create_batch()

    def _create_batch(self) -> None:
        o = self.options
        with self.engine.begin() as conn:
            conn.execute(
                insert(Batch).values(
                    id=self.result.batch_id, source=o.source, tenant=o.tenant, task_type=o.task_type,
                    system_prompt=o.system_prompt, force_tier=o.force_tier, min_tier=o.min_tier,
                    max_tier=o.max_tier, params=o.params, total=0, rejected=0, cancelled=False,
                )
            )

    def add(self, item: Record | Rejection) -> None:
        """Accept a record (or count a rejection); flushes a chunk when it is full."""
        if isinstance(item, Record):
            item = self._check(item)
        if isinstance(item, Rejection):
            self.result.rejected += 1
            self.result.rejections.append(item)
            return
        self._pending.append(item)
        if len(self._pending) >= self.chunk:
            self.flush()

    def _check(self, record: Record) -> Record | Rejection:
        if record.custom_id in self._seen:
            return Rejection(record.line, f'line {record.line}: field "id" {record.custom_id!r} is a duplicate within the batch', record.custom_id)
        if record.chars > self.max_chars:
            return Rejection(
                record.line,
                f"line {record.line}: the prompt has {record.chars} characters (about {record.chars // 4} tokens), "
                f"more than the largest context window of any configured model ({self.config.max_context} tokens)",
                record.custom_id,
            )
        self._seen.add(record.custom_id)
        return record

    def flush(self) -> None:
        """Insert the pending jobs with one COPY, commit, then enqueue their classify message."""
        records, self._pending = self._pending, []
        if not records:
            return
        message_id = uuid.uuid4()
        with self.engine.begin() as conn:
            ids = conn.execute(text("SELECT nextval('jobs_id_seq') FROM generate_series(1, :n)"), {"n": len(records)}).scalars().all()
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
                for job_id, record in zip(ids, records, strict=True):
                    copy.write_row(self._row(job_id, record, message_id))
        self.app.send_task(
            CLASSIFY_TASK, args=[list(ids)], kwargs={"batch": str(self.result.batch_id)},
            task_id=str(message_id), queue=CLASSIFY_QUEUE,
        )
        self.result.accepted += len(records)

    def _row(self, job_id: int, record: Record, message_id: uuid.UUID) -> tuple[Any, ...]:
        o = self.options
        return (
            job_id, self.result.batch_id, record.line, record.custom_id, o.tenant, record.task_type or o.task_type,
            json.dumps(record.messages), json.dumps(record.params),
            json.dumps(record.metadata) if record.metadata is not None else None,
            record.chars, JobStatus.PENDING.value, message_id, 0, 0,
        )

    def close(self) -> SubmitResult:
        """Flush the last chunk and store the batch's totals."""
        self.flush()
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE batches SET total = :total, rejected = :rejected WHERE id = :id"),
                {"total": self.result.accepted, "rejected": self.result.rejected, "id": self.result.batch_id},
            )
        return self.result


def submit_records(
    engine: Engine, app: Celery, config: Config, options: BatchOptions, items: Iterable[Record | Rejection],
    progress: Callable[[SubmitResult], None] | None = None,
) -> SubmitResult:
    """Submit every item as one batch; rejections are counted and kept, never fatal."""
    submitter = Submitter(engine, app, config, options)
    for n, item in enumerate(items, start=1):
        submitter.add(item)
        if progress is not None and n % 10_000 == 0:
            progress(submitter.result)
    return submitter.close()
