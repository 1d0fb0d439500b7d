"""Submitting a batch: validate records as they stream in, bulk-insert jobs, enqueue classify chunks."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import SQLAlchemyError

from models import Batch, JobStatus
from producer.inputs.records import MAX_NAME_CHARS, Record, Rejection, RejectKind
from producer.inputs.stream import LineSource
from producer.outages import FULL, FULL_FIX
from producer.signals import SIGNALS
from tierq.config import DEADLINE_KEY, RESERVED_PARAMS, Config, not_a_tier
from tierq.contract import classify_message
from tierq.errors import ConfigError, InputError, TierqError
from tierq.money import amount_problem
from tierq.params import params_problem
from tierq.publish import Publisher
from tierq.validator_config import schema_problem
from tierq.vault import TextVault, redacted

log = logging.getLogger(__name__)
JOB_COLUMNS = (
    "id", "batch_id", "seq", "custom_id", "tenant", "task_type", "messages", "params", "metadata",
    "prompt_chars", "status", "handoff", "attempts", "escalations",
)
# Rejections kept in memory for the summary; every one still reaches `on_reject` (the --rejects file).
KEPT_REJECTIONS = 1000
# Classify chunks per COPY: one transaction per few thousand rows amortises its round trips.
CHUNKS_PER_INSERT = 8
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
    use_cache: bool = True
    budget_usd: Decimal | None = None
    store_text: bool = True  # False: Postgres keeps digests only, texts live in Redis until used
    compress: bool | None = None  # None: as the TOML's [compression] says for each task type
    json_schema: dict[str, Any] | None = None  # answers must match it (replaces the task type's validator)
    deadline_s: float | None = None  # the batch may take this long: batch-API tiers whose window fits are used

    def __post_init__(self) -> None:
        # A budget given as a number (a library caller's 25 or 0.5) is taken as written, never as a binary
        # float's expansion; anything else is for `check` to refuse.
        budget: Any = self.budget_usd
        if isinstance(budget, (int, float, str)) and not isinstance(budget, bool):
            try:
                object.__setattr__(self, "budget_usd", Decimal(str(budget)))
            except ArithmeticError:
                raise InputError(f"--budget-usd {budget!r} is not an amount in USD") from None
        elif budget is not None and not isinstance(budget, Decimal):
            raise InputError(f"--budget-usd must be an amount in USD (a Decimal), not {type(budget).__name__}")

    def check(self, config: Config) -> None:
        """Reject tier options that name no configured tier, a minimum above the maximum or a forced tier
        outside them, names too long to store and invalid request parameters."""
        for label, name in (("--tenant", self.tenant), ("--task-type", self.task_type)):
            if not name or len(name) > MAX_NAME_CHARS:
                raise InputError(f"{label} must be 1 to {MAX_NAME_CHARS} characters, not {len(name)}")
        problem = params_problem(self.params)
        if problem is not None:
            raise InputError(f"batch {problem}")
        for label, tier in (("--tier", self.force_tier), ("--min-tier", self.min_tier), ("--max-tier", self.max_tier)):
            if tier is not None and tier not in config.tier_names:
                raise InputError(f"{label} {tier!r} is not a configured tier{not_a_tier(tier, config.tier_names)}")
        if self.min_tier and self.max_tier and config.tier_index(self.min_tier) > config.tier_index(self.max_tier):
            raise InputError(f"--min-tier {self.min_tier!r} is above --max-tier {self.max_tier!r}")
        # A forced tier is not clamped: --tier cold --max-tier warm would start every job above the ceiling.
        forced = config.tier_index(self.force_tier) if self.force_tier else None
        if forced is not None and self.min_tier and forced < config.tier_index(self.min_tier):
            raise InputError(f"--tier {self.force_tier!r} is below --min-tier {self.min_tier!r}; give one of them")
        if forced is not None and self.max_tier and forced > config.tier_index(self.max_tier):
            raise InputError(f"--tier {self.force_tier!r} is above --max-tier {self.max_tier!r}; give one of them")
        budget_problem = amount_problem(self.budget_usd) if self.budget_usd is not None else None
        if budget_problem is not None:
            raise InputError(f"--budget-usd {self.budget_usd} {budget_problem}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise InputError(f"--deadline must be a positive number of seconds, not {self.deadline_s!r}")
        if self.json_schema is not None:
            try:
                schema_problem(self.json_schema, "--json-schema")
            except ConfigError as exc:
                raise InputError(str(exc)) from None

    def stored_params(self) -> dict[str, Any]:
        """The batch's params, with tierq's own options under RESERVED_PARAMS (never sent to a model); a
        deadline is stored as the time it falls, counted from now."""
        deadline = time.time() + self.deadline_s if self.deadline_s is not None else None
        own = {k: v for k, v in (("compress", self.compress), ("json_schema", self.json_schema),
                                  (DEADLINE_KEY, deadline)) if v is not None}
        return {**self.params, RESERVED_PARAMS: own} if own else self.params


@dataclass(slots=True)
class SubmitResult:
    """What a submission accepted and rejected (`rejections` keeps the first KEPT_REJECTIONS), and how far it read."""

    batch_id: uuid.UUID
    accepted: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    format: str | None = None
    bytes_read: int = 0
    size: int | None = None
    records_read: int = 0  # accepted, rejected, and read but not yet inserted
    last_line: int = 0  # the line (of a file; 0 for objects) of the last record read; once interrupted, stored

    def as_dict(self) -> dict[str, Any]:
        """The `--json` form."""
        return {"batch_id": str(self.batch_id), "accepted": self.accepted, "rejected": self.rejected,
                "rejected_by_kind": dict(sorted(self.rejected_by_kind.items())), "format": self.format}


class SubmitInterrupted(KeyboardInterrupt):
    """Ctrl-C during a submission; `result` is the batch as far as it got (its jobs are queued)."""

    def __init__(self, result: SubmitResult) -> None:
        super().__init__(f"submission of batch {result.batch_id} interrupted")
        self.result = result


class Submitter:
    """Streams records into one batch: one COPY per CHUNKS_PER_INSERT chunks, one classify message per chunk."""

    def __init__(
        self, engine: Engine, publisher: Publisher, config: Config, options: BatchOptions,
        on_reject: Callable[[Rejection], None] | None = None, vault: TextVault | None = None,
    ) -> None:
        options.check(config)
        if not options.store_text and vault is None:
            raise InputError("a batch that keeps no text in Postgres needs the Redis text vault; pass vault=")
        self.vault = vault
        self.engine, self.publisher, self.config, self.options = engine, publisher, config, options
        self.on_reject = on_reject
        self.chunk = config.worker.classify_chunk
        self.max_chars = config.max_context * 4
        self.result = SubmitResult(uuid.uuid4())
        self._seen: dict[str, int] = {}
        self._pending: list[tuple[Record, int]] = []
        self.through_line = 0  # the last line whose record is committed
        self._create_batch()

    def _create_batch(self) -> None:
        o = self.options
        with self.engine.begin() as conn:
            conn.execute(
                insert(Batch).values(
                    id=self.result.batch_id,
                    source=o.source,
                    tenant=o.tenant,
                    task_type=o.task_type,
                    system_prompt=o.system_prompt,
                    force_tier=o.force_tier,
                    min_tier=o.min_tier,
                    max_tier=o.max_tier,
                    params=o.stored_params(),
                    total=0,
                    rejected=0,
                    cancelled=False,
                    use_cache=o.use_cache and o.store_text,
                    store_text=o.store_text,
                    budget_usd=o.budget_usd,
                )
            )

    def add(self, item: Record | Rejection) -> None:
        """Accept a record (or count a rejection); flushes when enough chunks are full."""
        self.result.last_line = max(self.result.last_line, item.line)
        checked = self._check(item) if isinstance(item, Record) else item
        if isinstance(checked, Rejection):
            self._reject(checked)
            return
        self._pending.append(checked)
        if len(self._pending) >= self.chunk * CHUNKS_PER_INSERT:
            self.flush()

    def _reject(self, rejection: Rejection) -> None:
        result = self.result
        result.rejected += 1
        result.rejected_by_kind[rejection.kind.value] = result.rejected_by_kind.get(rejection.kind.value, 0) + 1
        if len(result.rejections) < KEPT_REJECTIONS:
            result.rejections.append(rejection)
        if self.on_reject is not None:
            self.on_reject(rejection)

    def _check(self, record: Record) -> tuple[Record, int] | Rejection:
        """The record with its prompt's length, or why it cannot join this batch."""
        first = self._seen.get(record.custom_id)
        if first is not None:
            return Rejection(
                record.line,
                f"line {record.line}: id {record.custom_id!r} is a duplicate within the batch "
                f"(first used on line {first}); give every record its own id",
                record.custom_id,
                RejectKind.DUPLICATE_ID,
            )
        stored = record.storage_problem()
        if stored is not None:
            name, problem, kind = stored
            return Rejection(record.line, f'line {record.line}: field "{name}" {problem}', record.custom_id, kind)
        params = params_problem(record.params)
        if params is not None:
            return Rejection(record.line, f"line {record.line}: {params}", record.custom_id, RejectKind.INVALID)
        chars = record.chars
        if chars > self.max_chars:
            return Rejection(
                record.line,
                f"line {record.line}: the prompt has {chars} characters (about {chars // 4} tokens), "
                f"more than the largest context window of any configured model ({self.config.max_context} tokens); "
                "shorten or split it",
                record.custom_id, RejectKind.TOO_LONG,
            )
        self._seen[record.custom_id] = record.line
        return record, chars

    def flush(self) -> None:
        """Insert the pending jobs with one COPY, commit, then enqueue one classify message per chunk. A write
        cut short (a second Ctrl-C, an error) rolls back: its records are not stored, and `through_line` says
        where the stored ones end."""
        records, self._pending = self._pending, []
        if not records:
            return
        chunks = [records[i : i + self.chunk] for i in range(0, len(records), self.chunk)]
        messages = [uuid.uuid4() for _ in chunks]
        with self.engine.begin() as conn:
            ids = (
                conn.execute(text("SELECT nextval('jobs_id_seq') FROM generate_series(1, :n)"), {"n": len(records)})
                .scalars()
                .all()
            )
            if not self.options.store_text and self.vault is not None:
                self.vault.put_prompts(
                    {job_id: record.messages for job_id, (record, _) in zip(ids, records, strict=True)}
                )
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
                for job_id, (n, (record, chars)) in zip(ids, enumerate(records), strict=True):
                    copy.write_row(self._row(job_id, record, chars, messages[n // self.chunk]))
            conn.execute(text("UPDATE batches SET total = total + :n, rejected = :rejected WHERE id = :id"),
                         {"n": len(records), "rejected": self.result.rejected, "id": self.result.batch_id})
        self.result.accepted += len(records)
        self.through_line = records[-1][0].line
        log.debug("batch %s: %d jobs inserted through line %d, %d classify messages", self.result.batch_id,
                  len(records), self.through_line, len(messages))
        # Sent only after the commit, so a worker never receives ids it cannot see yet. Were the broker
        # down, the jobs stay pending and the workers' reconciler queues them once it is back.
        self.publisher.publish([classify_message(ids[start : start + self.chunk], self.result.batch_id, message_id)
                                for start, message_id in zip(range(0, len(ids), self.chunk), messages, strict=True)])

    def _row(self, job_id: int, record: Record, chars: int, message_id: uuid.UUID) -> tuple[Any, ...]:
        o = self.options
        return (
            job_id, self.result.batch_id, record.line, record.custom_id, o.tenant, record.task_type or o.task_type,
            _dumps(record.messages if o.store_text else redacted(record.messages)),
            _dumps(record.params) if record.params else "{}",
            _dumps(record.metadata) if record.metadata is not None else None,
            chars, JobStatus.PENDING.value, message_id, 0, 0,
        )

    def close(self) -> SubmitResult:
        """Flush the last chunks and mark the batch as wholly submitted."""
        self.flush()
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE batches SET rejected = :rejected, submitted_at = now() WHERE id = :id"),
                {"rejected": self.result.rejected, "id": self.result.batch_id},
            )
        return self.result

    def stopped(self, exc: Exception) -> PartialSubmission:
        """Record that the submission stopped half-way; the error that says what the batch holds."""
        why = _one_line(exc)
        try:
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE batches SET rejected = :rejected, submit_error = :why WHERE id = :id"),
                             {"rejected": self.result.rejected, "why": why[:1000], "id": self.result.batch_id})
        except SQLAlchemyError as again:
            why += f" (and the batch could not be marked partial: {_one_line(again)})"
        r = self.result
        if not self._pending and self.through_line >= r.last_line:
            # Only the last publish failed: every line is stored, and the reconciler sends the jobs' messages.
            return PartialSubmission(
                f"batch {r.batch_id}: all {r.accepted} jobs accepted, {r.rejected} rejected, but not all could be "
                f"queued: {why}. Nothing to submit again: the workers' reconciler queues them once that is fixed")
        after = f"after line {self.through_line}" if self.through_line else "from its first line"
        return PartialSubmission(
            f"batch {r.batch_id} is partial: {r.accepted} jobs accepted (they run), {r.rejected} rejected; the "
            f"submission stopped: {why}. Submit the rest of the file ({after}) as a new batch")


class PartialSubmission(TierqError):
    """A submission stopped half-way; the jobs it accepted are saved and run."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TierqError):
        return str(exc)
    if FULL in str(exc):  # a Redis at maxmemory (noeviction): "start it" would be no help, it is up
        return f"Redis is full and refuses writes ({FULL}); {FULL_FIX}"
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def submit_records(
    engine: Engine, publisher: Publisher, config: Config, options: BatchOptions, items: Iterable[Record | Rejection],
    progress: Callable[[SubmitResult], None] | None = None, *,
    on_reject: Callable[[Rejection], None] | None = None, source: LineSource | None = None, every: int = 10_000,
    vault: TextVault | None = None,
) -> SubmitResult:
    """Submit every item as one batch; rejections are counted and reported, never fatal. Under
    `SIGNALS.installed()` a signal stops it between records, never inside a write (producer/signals.py)."""
    with SIGNALS.shielded():
        submitter = Submitter(engine, publisher, config, options, on_reject, vault)
        SIGNALS.batch = submitter.result.batch_id
    result = submitter.result
    result.size = source.size if source is not None else None
    try:
        SIGNALS.check()
        for n, item in enumerate(items, start=1):  # reading may be interrupted: nothing is half-written there
            with SIGNALS.shielded():
                submitter.add(item)
                result.records_read = n
                if progress is not None and n % every == 0:
                    result.bytes_read = source.bytes if source is not None else 0
                    progress(result)
            SIGNALS.check()
        with SIGNALS.shielded():
            submitter.close()
        SIGNALS.check()  # a signal while the last rows were written: all of them are, and it still stops here
    except KeyboardInterrupt:
        # Chunks already sent will run; record them (and the rest read so far) so the batch adds up.
        with SIGNALS.shielded():
            submitter.close()
        # Where the stored records end (a write a second signal cut short stored none of its own).
        result.last_line = submitter.through_line
        raise SubmitInterrupted(result) from None
    except (BrokerError, OSError, SQLAlchemyError, RedisError, TierqError) as exc:
        if not result.accepted:
            raise
        raise submitter.stopped(exc) from None
    result.bytes_read = source.bytes if source is not None else 0
    return result
