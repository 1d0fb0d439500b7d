"""aiohttp routes of the simulated OpenAI-compatible provider."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fakellm import batches, files
from fakellm.answers import count_tokens, embed, encode_embedding
from fakellm.behaviour import SimConfig
from fakellm.chat import answer_chat
from fakellm.errors import api_errors, error_response
from fakellm.parsing import BadRequest, parse_embeddings, parse_json_object
from fakellm.replay import ReplayBook
from fakellm.state import STATE, SimState

MAX_BODY_BYTES = 64 * 1024 * 1024


def _bad_request(state: SimState, error: BadRequest) -> web.Response:
    """Count and answer a rejected request."""
    state.stats.bad_requests += 1
    return error_response(400, error.message, "invalid_request_error", error.param)


@web.middleware
async def api_key(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With `api_key` configured, answer a /v1/ request that does not carry it with HTTP 401 (OpenAI's
    `invalid_api_key`); the key sent is not echoed."""
    state = request.app[STATE]
    expected = state.config.api_key
    if expected is not None and request.path.startswith("/v1/") \
            and request.headers.get("Authorization") != f"Bearer {expected}":
        if request.path == "/v1/chat/completions":
            state.stats.unauthorized += 1
        return error_response(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
    return await handler(request)


async def chat_completions(request: web.Request) -> web.Response:
    """Handle POST /v1/chat/completions."""
    state = request.app[STATE]
    stats = state.stats
    stats.enter()
    try:
        try:
            body = parse_json_object(await request.read())
        except BadRequest as error:
            return _bad_request(state, error)
        reply = await answer_chat(state, body)
        return web.json_response(reply.body, status=reply.status, headers=dict(reply.headers))
    finally:
        # A reset while this request was open replaced the counters; only the live object is touched.
        stats.leave()


async def embeddings(request: web.Request) -> web.Response:
    """Handle POST /v1/embeddings."""
    state = request.app[STATE]
    try:
        parsed = parse_embeddings(parse_json_object(await request.read()))
    except BadRequest as error:
        return _bad_request(state, error)
    data: list[dict[str, Any]] = []
    for index, text in enumerate(parsed.inputs):
        vector = embed(text, parsed.dimensions)
        encoded = encode_embedding(vector, parsed.encoding_format)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(max(1, count_tokens(text)) for text in parsed.inputs)
    state.stats.embedding_requests += 1
    state.stats.embedding_inputs += len(parsed.inputs)
    body = {
        "object": "list",
        "data": data,
        "model": parsed.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return web.json_response(body)


async def list_models(request: web.Request) -> web.Response:
    """Handle GET /v1/models: every model named in the simulator config."""
    names = request.app[STATE].config.model_names()
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "tierq-sim"} for name in names
    ]
    return web.json_response({"object": "list", "data": data})


async def sim_stats(request: web.Request) -> web.Response:
    """Handle GET /_sim/stats (`?calls=0` leaves out the per-call list)."""
    include_calls = request.query.get("calls", "1") not in ("0", "false", "no")
    return web.json_response(request.app[STATE].stats.as_json(include_calls))


async def sim_reset(request: web.Request) -> web.Response:
    """Handle POST /_sim/reset: zero every counter and the request history."""
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def sim_config(request: web.Request) -> web.Response:
    """Handle POST /_sim/config: replace the behaviour at runtime."""
    state = request.app[STATE]
    try:
        parsed = SimConfig.from_mapping(parse_json_object(await request.read()))
    except BadRequest as error:
        return error_response(400, error.message, "invalid_request_error")
    except ValueError as error:
        return error_response(400, f"invalid simulator config: {error}", "invalid_request_error")
    # The project's model names come from the file and stay advertised.
    state.config = dataclasses.replace(parsed, extra_model_names=state.config.extra_model_names)
    return web.json_response({"ok": True})


async def not_found(request: web.Request) -> web.Response:
    """Answer any unknown route with an OpenAI-style 404."""
    message = f"Invalid URL ({request.method} {request.path})"
    return error_response(404, message, "invalid_request_error")


async def _stop_batches(app: web.Application) -> None:
    """Cancel the batches still running when the server shuts down, and wait for them to stop."""
    await asyncio.gather(*app[STATE].stop_batches(), return_exceptions=True)


def build_app(config: SimConfig, replay: ReplayBook | None = None) -> web.Application:
    """Create the aiohttp application serving the simulator (loading the config's replay file if not given)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[api_key, api_errors])
    if replay is None and config.replay is not None:
        replay = ReplayBook.load(config.replay)
    app[STATE] = SimState(config=config, replay=replay)
    app.on_cleanup.append(_stop_batches)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    files.add_routes(app.router)
    batches.add_routes(app.router)
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_post("/_sim/config", sim_config)
    # Registered last so that it only catches what no other route matched.
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
