"""aiohttp routes of the simulated OpenAI-compatible provider."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakellm.answers import count_tokens, embed, encode_embedding, make_answer, prompt_tokens
from fakellm.behaviour import (
    Decision,
    ModelBehaviour,
    Outcome,
    SimConfig,
    decide,
    forced_outcome,
    request_key,
)
from fakellm.parsing import (
    BadRequest,
    ChatRequest,
    parse_chat,
    parse_embeddings,
    parse_json_object,
)
from fakellm.replay import ReplayBook, scripted, scripted_answer
from fakellm.stats import Stats

MAX_BODY_BYTES = 64 * 1024 * 1024
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


@dataclass
class SimState:
    """Mutable state of one simulator: behaviour, counters and request history."""

    config: SimConfig
    stats: Stats = field(default_factory=Stats)
    # How often each exact (model, messages) request has been received.
    occurrences: dict[bytes, int] = field(default_factory=dict)
    # Requests already answered with HTTP 200, for prompt-cache accounting.
    served: set[bytes] = field(default_factory=set)
    # Arrival times of the requests each rate-limited model accepted in the last 60 s.
    windows: dict[str, collections.deque[float]] = field(default_factory=dict)
    # Recorded answers to replay (fakellm.replay); set at start-up, kept by resets and /_sim/config.
    replay: ReplayBook | None = None

    def over_limit(self, model: str, rpm: float) -> float | None:
        """Seconds until `model` accepts another request, or None (and the request counts) if it does now."""
        if rpm <= 0:
            return None
        now = time.monotonic()
        window = self.windows.setdefault(model, collections.deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= rpm:
            return max(0.001, window[0] + 60.0 - now)
        window.append(now)
        return None

    def reset(self) -> None:
        """Forget all counters and history, as if freshly started."""
        self.stats = Stats()
        self.occurrences = {}
        self.served = set()
        self.windows = {}


STATE = web.AppKey("fakellm_state", SimState)


def error_response(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Return an OpenAI-style JSON error."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _bad_request(state: SimState, error: BadRequest) -> web.Response:
    """Count and answer a rejected request."""
    state.stats.bad_requests += 1
    return error_response(400, error.message, "invalid_request_error", error.param)


async def chat_completions(request: web.Request) -> web.Response:
    """Handle POST /v1/chat/completions."""
    stats = request.app[STATE].stats
    stats.enter()
    try:
        return await _chat_completions(request)
    finally:
        # A reset while this request was open replaced the counters; only the live object is touched.
        stats.leave()


async def _chat_completions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        chat = parse_chat(parse_json_object(await request.read()))
        text = scripted(chat.texts, chat.model, state.replay)
    except BadRequest as error:
        return _bad_request(state, error)
    key = request_key(chat.model, chat.canonical_messages)
    occurrence = state.occurrences.get(key, 0)
    state.occurrences[key] = occurrence + 1
    config = state.config
    behaviour = config.behaviour(chat.model)
    decision = decide(config, chat.model, key, occurrence, forced_outcome(chat.texts, chat.model),
                      question=chat.canonical_messages.encode())
    state.stats.model(chat.model).requests += 1
    wait = state.over_limit(chat.model, behaviour.rpm)
    if wait is not None:
        state.stats.model(chat.model).count_status(429)
        return error_response(429, f"Rate limit reached for {chat.model} (rpm {behaviour.rpm:g})", "requests",
                              code="rate_limit_exceeded", headers={"Retry-After": f"{wait:.3f}"})
    if decision.outcome is Outcome.HANG:
        state.stats.model(chat.model).outcomes["hang"] += 1
        await asyncio.sleep(behaviour.hang_s)
        # Stats may have been reset while sleeping, so look the counters up again.
        state.stats.model(chat.model).count_status(504)
        return error_response(504, "The simulated provider timed out.", "timeout")
    if decision.latency_s > 0:
        await asyncio.sleep(decision.latency_s)
    if decision.outcome is Outcome.ERROR_429:
        state.stats.model(chat.model).count_status(429)
        return error_response(
            429,
            f"Rate limit reached for {chat.model}",
            "requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(behaviour.retry_after_s)},
        )
    if decision.outcome is Outcome.ERROR_500:
        state.stats.model(chat.model).count_status(500)
        return error_response(500, SERVER_ERROR_MESSAGE, "server_error")
    return web.json_response(_billed_completion(state, chat, key, decision, behaviour, text))


def token_logprobs(content: str, decision: Decision) -> dict[str, Any]:
    """Log-probabilities of the answer's tokens (4 characters each), drawn from the request's hash. Each
    answer has a level of confidence, lower for a wrong answer (mean log-probability -0.45 to -1.35)
    than for a right one (-0.15 to -0.75), so the two overlap; tokens vary around it."""

    def uniform(*parts: int) -> float:
        data = b"".join(p.to_bytes(8, "little") for p in parts)
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2**64

    level = uniform(decision.answer_hash, 1 << 62)
    mean = -(0.45 + 0.9 * level) if decision.wrong else -(0.15 + 0.6 * level)
    pieces = [content[i : i + 4] for i in range(0, len(content), 4)]
    tokens = []
    for index, piece in enumerate(pieces):
        value = min(0.0, mean + 0.6 * (uniform(decision.answer_hash, index) - 0.5))
        tokens.append({"token": piece, "logprob": round(value, 4), "bytes": list(piece.encode()), "top_logprobs": []})
    return {"content": tokens, "refusal": None}


def _billed_completion(
    state: SimState,
    chat: ChatRequest,
    key: bytes,
    decision: Decision,
    behaviour: ModelBehaviour,
    text: str | None = None,
) -> dict[str, Any]:
    """Build, bill and record an HTTP 200 chat completion body (from `text` when a marker or replay sets it)."""
    if text is not None:
        answer = scripted_answer(text, decision, behaviour, chat.max_tokens)
    else:
        answer = make_answer(decision, behaviour, chat.max_tokens)
    prompt = prompt_tokens(chat.texts)
    cached = math.floor(prompt * behaviour.cached_fraction) if key in state.served else 0
    state.served.add(key)
    call_id = "chatcmpl-" + os.urandom(12).hex()
    usage = (prompt, answer.completion_tokens, cached)
    state.stats.record_billed(call_id, chat.model, decision.outcome.value, usage)
    message = {"role": "assistant", "content": answer.content, "refusal": answer.refusal}
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": token_logprobs(answer.content, decision) if chat.logprobs and answer.content else None,
    }
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


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


def build_app(config: SimConfig, replay: ReplayBook | None = None) -> web.Application:
    """Create the aiohttp application serving the simulator (loading the config's replay file if not given)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    if replay is None and config.replay is not None:
        replay = ReplayBook.load(config.replay)
    app[STATE] = SimState(config=config, replay=replay)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_post("/_sim/config", sim_config)
    # Registered last so that it only catches what no other route matched.
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
