"""What a batch does once created: validate its input, answer its lines, write its result files.

A batch is one asyncio task. Its lines are answered by the same chat logic as interactive calls
(fakellm.chat), each at its due time within `in_progress_s`; the batch expires when its `window_s` has
passed with lines unanswered, and stops answering as soon as it is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

from fakellm.batch_config import Progress
from fakellm.batch_input import RequestLine, parse_input
from fakellm.batch_job import BatchJob, BatchStatus, LineResult
from fakellm.batch_stray import stray_lines
from fakellm.chat import Origin, answer_chat
from fakellm.state import SimState

log = logging.getLogger(__name__)


async def run_batch(state: SimState, job: BatchJob, data: bytes) -> None:
    """Take a batch from `validating` to a final status; a bug of the simulator fails the batch, logged."""
    try:
        await _run(state, job, data)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a simulator bug: fail the batch visibly rather than leave it in progress
        log.exception("batch %s stopped by a simulator error", job.id)
        job.errors = [{"code": "simulator_error", "message": f"{type(error).__name__}: {error}",
                       "param": None, "line": None}]
        job.move(BatchStatus.FAILED)


async def _cancelled_within(job: BatchJob, seconds: float) -> bool:
    """Wait `seconds`, or less if the batch is cancelled meanwhile; say whether it was."""
    if job.cancel_requested.is_set():
        return True
    try:
        await asyncio.wait_for(job.cancel_requested.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _run(state: SimState, job: BatchJob, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job.timing.window_s
    if await _cancelled_within(job, job.timing.validating_s):
        await _finish_cancelled(state, job, [])
        return
    parsed = parse_input(data, job.endpoint)
    if parsed.errors:
        job.errors = parsed.errors
        job.move(BatchStatus.FAILED)
        return
    job.model = parsed.model
    job.total = len(parsed.lines)
    job.move(BatchStatus.IN_PROGRESS)
    answered = await _answer(state, job, parsed.lines, deadline)
    if job.cancel_requested.is_set():
        await _finish_cancelled(state, job, _results(state, job, parsed.lines, answered, "batch_cancelled"))
        return
    if len(answered) < len(parsed.lines):
        _write_files(state, job, _results(state, job, parsed.lines, answered, "batch_expired"))
        job.move(BatchStatus.EXPIRED)
        return
    job.move(BatchStatus.FINALIZING)
    await asyncio.sleep(job.timing.finalizing_s)
    _write_files(state, job, _results(state, job, parsed.lines, answered, "batch_expired"))
    job.move(BatchStatus.COMPLETED)


async def _answer(
    state: SimState, job: BatchJob, lines: list[RequestLine], deadline: float
) -> dict[int, LineResult]:
    """Answer the lines at their due times until all are answered, the batch is cancelled or it expires."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    answered: dict[int, LineResult] = {}
    all_done = asyncio.Event()
    remaining = len(lines)

    async def answer_line(index: int, line: RequestLine) -> None:
        nonlocal remaining
        share = 1.0 if job.timing.progress is Progress.AT_END else (index + 1) / len(lines)
        try:
            await asyncio.sleep(max(0.0, start + job.timing.in_progress_s * share - loop.time()))
            reply = await answer_chat(state, line.body, Origin(job.id, line.custom_id))
            result = LineResult(line.custom_id, reply.status, reply.body)
            answered[index] = result
            job.count(result)
        finally:
            remaining -= 1
            if remaining == 0:
                all_done.set()

    tasks = [asyncio.create_task(answer_line(i, line)) for i, line in enumerate(lines)]
    waiters = [asyncio.create_task(event.wait()) for event in (all_done, job.cancel_requested)]
    timeout = deadline - loop.time() if math.isfinite(deadline) else None
    try:
        if timeout is None or timeout > 0:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.result()  # re-raises a failure of the chat logic, which is a simulator bug
    finally:
        for pending in (*tasks, *waiters):
            pending.cancel()
        await asyncio.gather(*tasks, *waiters, return_exceptions=True)
    return answered


def _results(
    state: SimState, job: BatchJob, lines: list[RequestLine], answered: dict[int, LineResult], missing_code: str
) -> list[LineResult]:
    """Every line's result in input order; the unanswered ones get `missing_code` and count as failed."""
    results: list[LineResult] = []
    for index, line in enumerate(lines):
        result = answered.get(index)
        if result is None:
            result = LineResult(line.custom_id, None, error_code=missing_code)
            job.count(result)
            state.stats.batch.unanswered[missing_code] += 1
        results.append(result)
    return results


async def _finish_cancelled(state: SimState, job: BatchJob, results: list[LineResult]) -> None:
    """Spend `cancelling_s` in `cancelling` (set by the cancel route), then keep what was answered."""
    await asyncio.sleep(job.timing.cancelling_s)
    _write_files(state, job, results)
    job.move(BatchStatus.CANCELLED)


def _write_files(state: SimState, job: BatchJob, results: list[LineResult]) -> None:
    """Store the output file (HTTP 200 lines, and any `batch_stray_lines`) and the error file (the rest); each
    only if it has lines."""
    output = [r for r in results if r.succeeded]
    errors = [r for r in results if not r.succeeded]
    if output:
        data = _jsonl(output) + b"".join(stray_lines(state, job, output))
        job.output_file_id = state.files.add(f"{job.id}_output.jsonl", "batch_output", data).id
    if errors:
        job.error_file_id = state.files.add(f"{job.id}_error.jsonl", "batch_output", _jsonl(errors)).id


def _jsonl(results: list[LineResult]) -> bytes:
    """Results as JSON lines."""
    return b"".join(json.dumps(r.as_json(), ensure_ascii=False).encode() + b"\n" for r in results)
