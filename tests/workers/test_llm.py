"""How a model call's failure is named: a provider that refuses connections is `connection` (the SDK's
aiohttp transport reports it as a timeout), retryable, and counts toward the provider's breaker."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import Stack

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
