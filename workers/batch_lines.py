"""The lines of an ended provider batch's output and error files, each matched to the job whose request it
answers by its `custom_id` (workers/provider_batches.py judges and bills the matched ones).

A line that matches no request (not JSON, not an object, no `custom_id`, or one this batch was never sent)
may still be an answer the provider bills. When it reports usage it is a cost row of its own, at the batch
price of the batch's model, outcome `error`, on the provider batch's first job (a cost row needs a job, and
no job took the answer), its `error` naming the batch, file, line and problem; the row's id comes from the
message and the line, so reading the file again adds nothing. A line without usage is logged in one line.
Either way the rest of the file is read.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from models.costs import record_calls
from models.enums import CallOutcome
from models.provider_batch import ProviderBatch
from tierq.money import ZERO, Usage
from workers.context import WorkerContext
from workers.llm import CallRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stray:
    """A line that matches no request: where it is, what is wrong, and the object it holds (if any)."""

    file_id: str
    number: int
    problem: str
    line: dict[str, Any] | None


def read_lines(ctx: WorkerContext, found: ProviderBatch) -> list[tuple[int, dict[str, Any]]]:
    """(job id, line) of every line of the ended batch's files that answers one of its requests; the lines
    that answer none are billed or logged first (`bill_strays`)."""
    client = ctx.client.provider_client(found.provider)
    lines: list[tuple[int, dict[str, Any]]] = []
    strays: list[Stray] = []
    first: dict[str, str] = {}  # custom_id -> where its first line is
    for file_id in dict.fromkeys(f for f in (found.output_file_id, found.error_file_id) if f):
        content = ctx.loop.run(client.files.content(file_id))
        for number, raw in enumerate(content.text.splitlines(), 1):
            if not raw.strip():
                continue
            line, problem = _match(raw, found)
            if problem is None:
                assert line is not None
                custom_id = str(line["custom_id"])
                if custom_id in first:  # a copy the provider may bill again: its own row, not the job's
                    problem = f"custom_id {custom_id[:100]!r} again (first at {first[custom_id]})"
                else:
                    first[custom_id] = f"file {file_id} line {number}"
                    lines.append((found.requests[custom_id], line))
            if problem is not None:
                strays.append(Stray(file_id, number, problem, line))
    if strays:
        bill_strays(ctx, found, strays)
    return lines


def _match(raw: str, found: ProviderBatch) -> tuple[dict[str, Any] | None, str | None]:
    """(the line's object, what keeps it from matching a request: None when it matches)."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # nested past the parser's depth: unreadable too
        return None, f"not JSON ({type(exc).__name__}: {str(exc)[:100]})"
    if not isinstance(line, dict):
        return None, f"a JSON {type(line).__name__}, not an object"
    custom_id = line.get("custom_id")
    if custom_id is None:
        return line, "no custom_id"
    if str(custom_id) not in found.requests:
        return line, f"custom_id {str(custom_id)[:100]!r} was never sent in this batch"
    return line, None


def _usage(line: dict[str, Any] | None) -> dict[str, Any] | None:
    """The usage a line's response body reports, if it reports any."""
    response = line.get("response") if line is not None else None
    body = response.get("body") if isinstance(response, dict) else None
    usage = body.get("usage") if isinstance(body, dict) else None
    return usage if isinstance(usage, dict) and usage else None


def bill_strays(ctx: WorkerContext, found: ProviderBatch, strays: list[Stray]) -> None:
    """A cost row for each stray line that reports usage; a log line for each of the others."""
    where = f"provider batch {found.provider_batch_id}"
    billed = [stray for stray in strays if _usage(stray.line) is not None]
    for stray in (stray for stray in strays if _usage(stray.line) is None):
        log.error("%s: file %s line %d matches no request: %s; it reports no usage, so nothing is billed",
                  where, stray.file_id, stray.number, stray.problem)
    if not billed or not found.requests:
        return
    first = min(found.requests.values())
    with ctx.engine.connect() as conn:
        batch_id, attempts = conn.execute(text("SELECT batch_id, attempts FROM jobs WHERE id = :j"),
                                          {"j": first}).one()
    model = ctx.config.models[found.model]
    rows = []
    for stray in billed:
        assert stray.line is not None
        record = CallRecord(uuid.uuid5(found.message_id, f"stray:{stray.file_id}:{stray.number}"), found.model,
                            found.provider, Usage(0, 0), ZERO, 0, CallOutcome.OK, via_batch=True)
        ctx.client.answered(stray.line["response"]["body"], record, model, [], ctx.config.answers,
                            model.batch_price)
        record.outcome, record.content = CallOutcome.ERROR, None
        record.error = (f"{where}: file {stray.file_id} line {stray.number} matches no request ({stray.problem}); "
                        f"billed by the provider, no job took its answer")
        rows.append(record.cost_row(job_id=first, batch_id=batch_id, attempt=attempts + 1, tier=found.tier))
        log.warning("%s: file %s line %d matches no request (%s); its usage (%d prompt, %d completion tokens, "
                    "$%s) is recorded on job %d", where, stray.file_id, stray.number, stray.problem,
                    record.usage.prompt_tokens, record.usage.completion_tokens, record.cost_usd, first)
    with ctx.engine.begin() as conn:
        record_calls(conn, rows)
