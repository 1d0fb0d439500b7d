"""How a model call's failure is named: a provider that refuses connections is `connection` (the SDK's
aiohttp transport reports it as a timeout), retryable, and counts toward the provider's breaker; and a
tier none of whose models can be reached holds its job, never escalates it."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis
from conftest import Stack

from workers.budget import BudgetGate
from workers.calls import JobWork, TierResult, answer_at_tier
from workers.gates import Gates, HoldKind
from workers.llm import CallRecord, ModelClient


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_named_as_such(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERQ_SIM_URL", f"http://127.0.0.1:{closed_port()}/v1")

    async def call() -> CallRecord:
        client = ModelClient(stack.settings, stack.config)
        try:
            return await client.call("sim-nano", [{"role": "user", "content": "hi"}], {}, 3, stack.config.answers)
        finally:
            await client.close()

    record = asyncio.run(call())
    assert (record.outcome.value, record.error, record.retryable) == (
        "connection", "connection: the provider refused the connection (is it running?)", True)


def test_a_tier_that_cannot_reach_its_provider_holds_the_job_before_its_breaker_opens(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: with the breaker still closed (other workers had not failed often enough yet), each model's
    # retries ran out on refused connections and the job escalated, as if the model had failed it.
    monkeypatch.setenv("TIERQ_SIM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    config = stack.config.model_copy(update={"worker": stack.config.worker.model_copy(
        update={"breaker_failures": 1000})})
    hot = config.tier("hot").model_copy(update={"max_retries": 1, "retry_base_s": 0.01})
    gates_redis = stack.dbs.url(3)  # breaker counts of its own, apart from the session's workers
    redis.Redis.from_url(gates_redis).flushdb()

    async def answer() -> TierResult:
        client = ModelClient(stack.settings, config)
        gates = Gates(gates_redis, config, BudgetGate(stack.engine), horizon_s=5)
        try:
            return await answer_at_tier(client, config, hot, JobWork(1, [{"role": "user", "content": "hi"}], {}), gates)
        finally:
            await client.close()
            await gates.close()

    try:
        result = asyncio.run(answer())
    finally:
        redis.Redis.from_url(gates_redis).flushdb()
    assert [r.outcome.value for r in result.records] == ["connection"] * 2 * len(hot.models)
    assert result.answer is None and result.hold is not None and result.hold.kind is HoldKind.OUTAGE
    assert "refused the connection" in result.hold.reason


def test_warm_builds_each_providers_client_and_template_without_calling_it(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker builds them at start-up (workers/startup.py), so its first wave of calls does not wait on the
    # loop for a client's TLS set-up; nothing is sent, so an unreachable provider does not stop it.
    monkeypatch.setenv("TIERQ_SIM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    provider = stack.config.models["sim-nano"].provider

    async def warm_then_call() -> tuple[bool, bool, CallRecord]:
        client = ModelClient(stack.settings, stack.config)
        try:
            await client.warm({provider})
            built = client._clients.get(provider)
            ready = client._prepared.get(provider) is not None
            record = await client.call("sim-nano", [{"role": "user", "content": "hi"}], {}, 3, stack.config.answers)
            return built is not None, ready and client._clients.get(provider) is built, record
        finally:
            await client.close()

    built, reused, record = asyncio.run(warm_then_call())
    assert built and reused
    assert record.outcome.value == "connection"  # the first network use is the call's


def test_clients_warmed_on_one_loop_call_from_another(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Warming sends nothing and opens no connection, so it binds no client to the loop it ran on: a child
    # of a prefork pool (clients warmed in the parent, calls on the child's own loop) can use them.
    monkeypatch.setenv("TIERQ_SIM_URL", stack.sim.base_url)
    client = ModelClient(stack.settings, stack.config)
    asyncio.run(client.warm({stack.config.models["sim-nano"].provider}))  # that loop is closed when it returns

    async def call() -> CallRecord:
        try:
            question = [{"role": "user", "content": "Where is my parcel? I ordered it on Monday."}]
            return await client.call("sim-nano", question, {}, 10, stack.config.answers)
        finally:
            await client.close()

    record = asyncio.run(call())
    # The simulator answered (it refuses or truncates some answers on purpose).
    assert record.outcome.value in {"ok", "refusal", "empty", "truncated", "invalid"}, record.error
    assert record.usage.prompt_tokens > 0


@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after": "20"}, 20.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 86400.0),  # far off: a day at most (found by a review)
    ({"retry-after": "Mon, 01 Jan 2001 00:00:00 GMT"}, 0.0),  # past
    ({"retry-after": "inf"}, None),
    ({"retry-after-ms": "nan"}, None),
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after": "soon"}, None),
])
def test_a_retry_after_is_read_as_a_wait_between_none_and_a_day(headers: dict[str, str], wait: float | None) -> None:
    import openai

    from workers.llm import _retry_after
    from workers.prepared import http

    request = http.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    refused = openai.RateLimitError("slow down", response=http.Response(429, headers=headers, request=request),
                                    body=None)
    assert _retry_after(refused) == wait
