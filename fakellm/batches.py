"""Routes of the Batch API: create, retrieve, list and cancel batches of chat completions."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import web

from fakellm.batch_job import BatchJob, BatchStatus, new_id
from fakellm.batch_runner import run_batch
from fakellm.chat import SERVER_ERROR_MESSAGE
from fakellm.errors import ApiError, not_found
from fakellm.listing import cursor_page, query_limit
from fakellm.parsing import BadRequest, parse_json_object
from fakellm.state import STATE, SimState

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_METADATA_PAIRS = 16


def _required_string(body: dict[str, Any], name: str) -> str:
    """A required string field of the request body."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"Missing required parameter: '{name}'.", name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Invalid '{name}': expected a non-empty string, got {value!r}.", name)
    return value


def _metadata(body: dict[str, Any]) -> dict[str, str] | None:
    """The optional metadata: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS:
        raise ApiError(400, f"Invalid 'metadata': expected an object of at most {MAX_METADATA_PAIRS} pairs.",
                       "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            message = (f"Invalid 'metadata.{key[:64]}': keys are at most 64 characters and values strings "
                       f"of at most 512, got {value!r}.")
            raise ApiError(400, message, f"metadata.{key[:64]}")
    return metadata


def _input_file(state: SimState, file_id: str) -> bytes:
    """The bytes of a batch's input file, which must exist and have been uploaded for batches."""
    stored = state.files.get(file_id, "input_file_id")
    if stored.purpose != "batch":
        message = (f"Invalid 'input_file_id': {file_id} was uploaded with purpose {stored.purpose!r}; "
                   "upload the requests with purpose 'batch'.")
        raise ApiError(400, message, "input_file_id")
    return stored.data


def fail_now_and_then(state: SimState) -> None:
    """Count a Batch API request (or a download of a batch's output or error file); answer it with HTTP 500
    at the rate `batch_api_error_500_rate` says (drawn from the seed and the request's number, so a run
    repeats). The batches themselves run on."""
    stats = state.stats.batch
    stats.api_requests += 1
    rate = state.config.batch_api_error_500_rate
    if rate <= 0:
        return
    digest = hashlib.blake2b(f"{state.config.seed}:batch-api:{stats.api_requests}".encode(), digest_size=8).digest()
    if int.from_bytes(digest, "little") / 2**64 < rate:
        stats.api_errors += 1
        raise ApiError(500, SERVER_ERROR_MESSAGE, kind="server_error")


async def create(request: web.Request) -> web.Response:
    """Handle POST /v1/batches: check the request, then run the batch in the background."""
    state = request.app[STATE]
    fail_now_and_then(state)
    try:
        body = parse_json_object(await request.read())
    except BadRequest as error:
        raise ApiError(400, error.message) from None
    file_id = _required_string(body, "input_file_id")
    endpoint = _required_string(body, "endpoint")
    if endpoint != ENDPOINT:
        raise ApiError(400, f"Invalid 'endpoint': {endpoint!r}; the simulator runs batches of {ENDPOINT!r} only.",
                       "endpoint")
    window = _required_string(body, "completion_window")
    if window != COMPLETION_WINDOW:
        raise ApiError(400, f"Invalid 'completion_window': {window!r}; only {COMPLETION_WINDOW!r} is supported.",
                       "completion_window")
    metadata = _metadata(body)
    data = _input_file(state, file_id)
    try:
        timing = state.config.batch.for_metadata(metadata or {})
    except ValueError as error:
        raise ApiError(400, f"Invalid 'metadata': {error}", "metadata") from None
    job = BatchJob(new_id("batch_"), file_id, endpoint, window, metadata, timing)
    state.batches[job.id] = job
    state.stats.batch.batches += 1
    job.task = asyncio.create_task(run_batch(state, job, data))
    return web.json_response(job.as_json())


def _job(request: web.Request) -> BatchJob:
    """The batch named by the path; a 404 naming it if there is none."""
    batch_id = request.match_info["batch_id"]
    job = request.app[STATE].batches.get(batch_id)
    if job is None:
        raise not_found("Batch", batch_id)
    return job


async def retrieve(request: web.Request) -> web.Response:
    """Handle GET /v1/batches/{batch_id}."""
    fail_now_and_then(request.app[STATE])
    return web.json_response(_job(request).as_json())


async def list_batches(request: web.Request) -> web.Response:
    """Handle GET /v1/batches: newest first, `after` and `limit` (default 20, at most 100)."""
    fail_now_and_then(request.app[STATE])
    newest_first = list(reversed(request.app[STATE].batches.values()))
    limit = query_limit(request.query, 20, 100)
    return web.json_response(cursor_page(newest_first, request.query, BatchJob.as_json, limit))


async def cancel(request: web.Request) -> web.Response:
    """Handle POST /v1/batches/{batch_id}/cancel: a validating or in-progress batch starts cancelling."""
    fail_now_and_then(request.app[STATE])
    job = _job(request)
    if job.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
        job.move(BatchStatus.CANCELLING)
        job.cancel_requested.set()
    elif job.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        raise ApiError(409, f"Cannot cancel batch {job.id}: its status is {job.status.value!r}.", code="conflict")
    return web.json_response(job.as_json())


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the Batch API."""
    router.add_post("/v1/batches", create)
    router.add_get("/v1/batches", list_batches)
    router.add_get("/v1/batches/{batch_id}", retrieve)
    router.add_post("/v1/batches/{batch_id}/cancel", cancel)
