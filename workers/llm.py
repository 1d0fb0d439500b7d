"""Calling a model through the OpenAI-compatible API, one attempt at a time.

Every attempt becomes a `CallRecord` (a cost row), whether it answered, refused or failed; a failure
is `retryable` (the same model again after a pause) or not (this model will not do).
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from models.costs import CostRow
from models.enums import CallOutcome
from tierq.config import Config, ModelConfig
from tierq.messages import estimated_prompt_tokens
from tierq.money import ZERO, Price, Usage, estimate_tokens
from tierq.params import PASSED_PARAMS
from tierq.sections import AnswerConfig
from tierq.settings import Settings
from workers.answers import judge
from workers.prepared import PATH, Answer, PreparedChat

try:  # the HTTP library under the openai package: httpx2 from its 3.x, httpx before
    from httpx2 import Response as RawResponse
except ImportError:  # pragma: no cover (the locked environment has httpx2)
    from httpx import Response as RawResponse  # type: ignore[assignment,no-redef,import-not-found,unused-ignore]

_KEYLIKE = re.compile(r"\b(sk|pk|rk|key)[-_][A-Za-z0-9_\-*]{6,}")


@dataclass(slots=True)
class CallRecord:
    """One model call as it goes into the cost table."""

    id: uuid.UUID
    model: str
    provider: str
    usage: Usage
    cost_usd: Decimal
    latency_ms: int
    outcome: CallOutcome
    error: str | None = None
    content: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    status: int | None = None  # the HTTP status of a failed call
    logprobs: tuple[float, float] | None = None  # mean and least token log-probability, when asked for and given
    via_batch: bool = False  # answered through the provider's batch API

    def cost_row(self, *, job_id: int, batch_id: uuid.UUID, attempt: int, tier: str) -> CostRow:
        """The cost-table row of this call."""
        usage = self.usage
        return CostRow(id=self.id, job_id=job_id, batch_id=batch_id, attempt=attempt, tier=tier, model=self.model,
                       provider=self.provider, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
                       usage_estimated=usage.estimated, cost_usd=self.cost_usd, latency_ms=self.latency_ms,
                       outcome=self.outcome, error=self.error, via_batch=self.via_batch)


def scrub(text: str, secrets: list[str]) -> str:
    """Remove API keys (the configured ones and anything shaped like one) from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)[:500]


class ModelClient:
    """AsyncOpenAI clients per provider, created on the worker's event loop and reused by every call."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self._settings = settings
        self._config = config
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._prepared: dict[str, PreparedChat | None] = {}
        self._secrets: list[str] = []
        for provider in config.providers.values():
            key = settings.api_key(provider.api_key_env) if provider.api_key_env else None
            if key is not None:
                self._secrets.append(key.get_secret_value())

    def _client(self, provider: str) -> openai.AsyncOpenAI:
        client = self._clients.get(provider)
        if client is None:
            cfg = self._config.providers[provider]
            key = self._settings.api_key(cfg.api_key_env) if cfg.api_key_env else None
            client = openai.AsyncOpenAI(
                base_url=self._settings.provider_url(cfg),
                # Local servers (vLLM, Ollama, the simulator) take no key, but the SDK insists on one.
                api_key=key.get_secret_value() if key else "not-needed",
                max_retries=0,
                http_client=openai.DefaultAioHttpClient(),
            )
            self._clients[provider] = client
        return client

    async def call(
        self, name: str, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float, rules: AnswerConfig
    ) -> CallRecord:
        """Make one call to model `name`; the record's outcome says whether the answer is usable."""
        model = self._config.models[name]
        started = time.perf_counter()
        record = CallRecord(uuid.uuid4(), name, model.provider, Usage(0, 0), ZERO, 0, CallOutcome.OK)
        passed = {k: v for k, v in params.items() if k in PASSED_PARAMS}
        if model.logprobs:
            passed.setdefault("logprobs", True)
        try:
            # The request the SDK builds once per provider (workers/prepared.py), sent with this call's
            # body through the same client's transport, auth and errors; the answer is read as plain JSON,
            # without the SDK's response models.
            body = {"model": model.model or name, "messages": messages, **passed}
            prepared = await self._prepared_for(model.provider)
            if prepared is not None:
                answer = await prepared.send(body, timeout)
            else:
                raw = await self._client(model.provider).post(
                    PATH, body=body, cast_to=RawResponse, options={"timeout": timeout})
                answer = Answer(raw.content, raw)
        except openai.APIError as exc:
            record.latency_ms = int((time.perf_counter() - started) * 1000)
            return self._failure(exc, record)
        record.latency_ms = int((time.perf_counter() - started) * 1000)
        try:
            response = json.loads(answer.content)
        except ValueError as exc:  # not JSON
            return self._failure(
                openai.APIResponseValidationError(answer.response(), None, message=f"not JSON ({exc})"), record)
        return self.answered(response, record, model, messages, rules)

    async def warm(self, providers: Iterable[str]) -> None:
        """Make each provider's client and request template now, at start-up, instead of in the first call:
        a client loads its TLS certificates (tens of milliseconds), on the loop every call of the process
        shares, while the first wave of calls waits behind it."""
        for provider in sorted(providers):
            await self._prepared_for(provider)

    async def _prepared_for(self, provider: str) -> PreparedChat | None:
        if provider not in self._prepared:
            self._prepared[provider] = await PreparedChat.build(self._client(provider))
        return self._prepared[provider]

    def answered(self, response: Any, record: CallRecord, model: ModelConfig, messages: list[dict[str, Any]],
                 rules: AnswerConfig, price: Price | None = None) -> CallRecord:
        """Judge a chat completion (parsed JSON) into `record`, priced at `price` (the model's list price)."""
        if not isinstance(response, dict):
            record.outcome, record.error = CallOutcome.ERROR, "invalid response: not a chat completion"
            return record
        choices = response.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = _get(choice, "message")
        content, refusal = _text(_get(message, "content")), _text(_get(message, "refusal"))
        record.usage = _usage(_get(response, "usage"), messages, content or refusal or "")
        record.cost_usd = (price or model.price).cost(record.usage)
        finish = _get(choice, "finish_reason")
        verdict = judge(content, refusal, finish if isinstance(finish, str) else None, rules)
        record.outcome = verdict.outcome
        record.content = content
        record.error = verdict.reason
        record.logprobs = _logprob_summary(_get(choice, "logprobs"))
        return record

    def failed(self, record: CallRecord, status: int | None, message: str) -> CallRecord:
        """Record a failure the provider reported without an exception (a batch's error line)."""
        if status is None:
            record.outcome = CallOutcome.ERROR
        else:
            record.outcome = (CallOutcome.RATE_LIMITED if status == 429 else CallOutcome.HTTP_5XX if status >= 500
                              else CallOutcome.HTTP_4XX)
        record.status, record.error = status, f"HTTP {status}: " if status else ""
        record.error += scrub(message, self._secrets)[:300]
        record.retryable = status is not None and (status in (408, 409, 429) or status >= 500)  # as a call's error
        return record

    def scrub(self, text: str) -> str:
        """`text` without the configured API keys or anything shaped like one."""
        return scrub(text, self._secrets)

    def provider_client(self, provider: str) -> openai.AsyncOpenAI:
        """The provider's client (its files and batches endpoints)."""
        return self._client(provider)

    def _failure(self, exc: openai.APIError, record: CallRecord) -> CallRecord:
        unreachable = _unreachable(exc) if isinstance(exc, openai.APIConnectionError) else None
        if unreachable is not None:
            outcome, message = CallOutcome.CONNECTION, f"connection: {unreachable}"
        elif isinstance(exc, openai.APITimeoutError):
            outcome, message = CallOutcome.TIMEOUT, "timeout: no answer within the tier's timeout"
        elif isinstance(exc, openai.APIConnectionError):
            outcome, message = CallOutcome.CONNECTION, f"connection: {type(exc.__cause__ or exc).__name__}"
        elif isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            outcome = (CallOutcome.RATE_LIMITED if code == 429 else CallOutcome.HTTP_5XX if code >= 500
                       else CallOutcome.HTTP_4XX)
            message = f"HTTP {exc.status_code}: {scrub(_error_text(exc), self._secrets)}"
        else:
            outcome, message = CallOutcome.ERROR, f"invalid response: {scrub(str(exc), self._secrets)}"
        record.outcome, record.error = outcome, message
        status = getattr(exc, "status_code", None)
        record.status = status
        record.retryable = status is None or status in (408, 409, 429) or status >= 500
        record.retry_after = _retry_after(exc)
        return record

    async def close(self) -> None:
        """Close every provider's connections."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        self._prepared.clear()


def _get(value: Any, name: str) -> Any:
    """A field of a JSON object, or None when it is not an object or has no such field."""
    return value.get(name) if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _logprob_summary(logprobs: Any) -> tuple[float, float] | None:
    """(mean, least) of the answer's token log-probabilities; None when the provider gave none."""
    tokens = _get(logprobs, "content")
    values = [float(v) for v in (_get(t, "logprob") for t in (tokens if isinstance(tokens, list) else ()))
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return sum(values) / len(values), min(values)


def _usage(usage: Any, messages: list[dict[str, Any]], answer: str) -> Usage:
    if not isinstance(usage, dict):
        prompt = estimated_prompt_tokens(messages)
        return Usage(prompt, estimate_tokens(answer), 0, estimated=True)
    cached = _count(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), cached)


def _unreachable(exc: BaseException) -> str | None:
    """Why no connection to the provider could be made, when that is what went wrong (the SDK's aiohttp
    transport reports a refused connection as a timeout); never its address, which may carry credentials.
    A connection dropped after it was made is not this: the provider was there (it may be restarting)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "the provider refused the connection (is it running?)"
        if isinstance(cause, socket.gaierror):
            return "the provider's host name does not resolve; check its base_url"
        if type(cause).__name__ == "ClientConnectorError":  # aiohttp: the connection could not be made
            inner = getattr(cause, "os_error", None)
            if not isinstance(inner, (TimeoutError, ConnectionRefusedError, socket.gaierror)):
                return f"no connection to the provider ({type(inner).__name__ if inner else 'connect failed'})"
        cause = cause.__cause__ or cause.__context__
    return None


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("code") or inner.get("type") or "")[:300]
    return type(exc).__name__


# The longest wait a Retry-After is taken for: a far-future date or a clock far off would otherwise pause a
# model for every worker for years (jobs give up on it after `rate_limit_wait_s` and go on anyway).
MAX_RETRY_AFTER_S = 86400.0


def _retry_after(exc: openai.APIError) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return _bounded(float(value) / 1000)
        except ValueError:
            return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        return _bounded(_retry_at(value))


def _bounded(seconds: float | None) -> float | None:
    """A wait between 0 and MAX_RETRY_AFTER_S; None for one that is not a number ("inf", "nan")."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _retry_at(value: str) -> float | None:
    """Seconds until a Retry-After given as an HTTP date (RFC 9110 allows it besides seconds), or None
    when it is neither: read as no Retry-After at all, such a 429 would be retried at once and escalated."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, whatever the sender's zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
