"""The prepared chat request (workers/prepared.py) sends what the SDK's own `post` sends and fails as it
fails: the same URL, headers and JSON body, and the same SDK errors for a status, a timeout and a refused
connection. Both are sent to a small real HTTP server that records each request and answers as told. A
client the template cannot stand for still gets its calls made, through `post`."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest
from aiohttp import web
from conftest import Stack

from workers.llm import CallRecord, ModelClient
from workers.prepared import PATH, PreparedChat

BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 5}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}


@asynccontextmanager
async def recording_server(status: int = 200, delay_s: float = 0.0) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A server on a free port that records every request's path, headers and JSON body, and sets a cookie
    on its first answer (as a provider behind a CDN does)."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()},
                     "body": json.loads(await request.read())})
        await asyncio.sleep(delay_s)
        if status >= 300:
            return web.json_response({"error": {"message": f"told to answer {status}", "type": "x"}}, status=status,
                                     headers={"retry-after": "7"})
        response = web.json_response(ANSWER)
        if len(seen) == 1:
            response.set_cookie("edge", "c00kie")
        return response

    async with serving({"/v1/chat/completions": handle}) as url:
        yield f"{url}/v1", seen


@asynccontextmanager
async def serving(routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]]) -> AsyncIterator[str]:
    """A real HTTP server on a free port answering POSTs to `routes`; its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client_for(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="sk-test-prepared-0123456789", max_retries=0,
                              http_client=openai.DefaultAioHttpClient())


async def both(base_url: str, act: Callable[[openai.AsyncOpenAI, PreparedChat], Awaitable[Any]]) -> Any:
    client = client_for(base_url)
    try:
        prepared = await PreparedChat.build(client)
        assert prepared is not None
        return await act(client, prepared)
    finally:
        await client.close()


def test_a_prepared_request_sends_what_the_sdk_sends() -> None:
    async def run() -> list[dict[str, Any]]:
        async with recording_server() as (url, seen):
            async def act(client: openai.AsyncOpenAI, prepared: PreparedChat) -> None:
                await client.post(PATH, body=BODY, cast_to=httpx2.Response, options={"timeout": 12})  # a cookie
                answer = await prepared.send(BODY, 12)
                assert json.loads(answer.content) == ANSWER
                await client.post(PATH, body=BODY, cast_to=httpx2.Response, options={"timeout": 12})

            await both(url, act)
            return seen

    _, ours, sdk = asyncio.run(run())
    assert ours["path"] == sdk["path"] == "/v1/chat/completions"
    assert ours["body"] == sdk["body"] == BODY
    assert ours["headers"]["authorization"] == "Bearer sk-test-prepared-0123456789"
    assert ours["headers"]["x-stainless-read-timeout"] == "12"
    # The SDK's own per-request headers it sets the same way each time: everything else must match.
    assert ours["headers"] == sdk["headers"]


def status_errors(status: int) -> tuple[openai.APIStatusError, openai.APIStatusError]:
    """The error `post` raises for an answer of `status`, and the one the prepared request raises."""
    async def run() -> tuple[openai.APIStatusError, openai.APIStatusError]:
        async with recording_server(status=status) as (url, _):
            async def act(client: openai.AsyncOpenAI, prepared: PreparedChat) -> tuple[Any, Any]:
                with pytest.raises(openai.APIStatusError) as sdk:
                    await client.post(PATH, body=BODY, cast_to=httpx2.Response, options={"timeout": 5})
                with pytest.raises(openai.APIStatusError) as ours:
                    await prepared.send(BODY, 5)
                return sdk.value, ours.value

            return await both(url, act)  # type: ignore[no-any-return]

    return asyncio.run(run())


def test_a_status_error_is_the_sdks_own_error_with_its_body_and_headers() -> None:
    sdk, ours = status_errors(429)
    assert type(ours) is type(sdk) is openai.RateLimitError
    assert (ours.status_code, ours.body, str(ours)) == (sdk.status_code, sdk.body, str(sdk))
    assert ours.response.headers["retry-after"] == "7"


def test_a_redirect_is_an_error_as_with_the_sdk() -> None:
    sdk, ours = status_errors(302)
    assert (type(ours), ours.status_code, str(ours)) == (type(sdk), 302, str(sdk))


def test_a_cookie_the_provider_set_goes_back_with_later_calls_as_with_the_sdk() -> None:
    async def run() -> list[dict[str, Any]]:
        async with recording_server() as (url, seen):
            async def act(client: openai.AsyncOpenAI, prepared: PreparedChat) -> None:
                await prepared.send(BODY, 5)  # answered with a cookie
                await client.post(PATH, body=BODY, cast_to=httpx2.Response, options={"timeout": 5})
                await prepared.send(BODY, 5)

            await both(url, act)
            return seen

    first, sdk, ours = asyncio.run(run())
    assert "cookie" not in first["headers"]
    assert ours["headers"].get("cookie") == sdk["headers"].get("cookie") == "edge=c00kie"


def test_a_slow_answer_is_the_sdks_timeout_error() -> None:
    async def run() -> None:
        async with recording_server(delay_s=2) as (url, _):
            async def act(_: openai.AsyncOpenAI, prepared: PreparedChat) -> None:
                with pytest.raises(openai.APITimeoutError):
                    await prepared.send(BODY, 0.2)

            await both(url, act)

    asyncio.run(run())


def test_a_refused_connection_is_the_sdks_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def act(_: openai.AsyncOpenAI, prepared: PreparedChat) -> None:
        with pytest.raises(openai.APIConnectionError) as caught:
            await prepared.send(BODY, 3)
        assert caught.value.__cause__ is not None

    asyncio.run(both(f"http://127.0.0.1:{port}/v1", act))


def test_a_client_the_template_cannot_stand_for_gets_none() -> None:
    async def token() -> str:
        return "sk-fresh-for-each-request"

    async def run() -> list[PreparedChat | None]:
        keyed = client_for("http://127.0.0.1:9/v1")
        keyed._idempotency_header = "Idempotency-Key"  # a key per request: one template cannot carry it
        # An API key from a function: the SDK asks it again for every request.
        fresh = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key=token, max_retries=0)
        try:
            return [await PreparedChat.build(keyed), await PreparedChat.build(fresh)]
        finally:
            await keyed.close()
            await fresh.close()

    assert asyncio.run(run()) == [None, None]


def test_a_worker_whose_client_needs_a_header_per_request_sends_through_the_sdks_post(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERQ_SIM_URL", stack.sim.base_url)

    async def call() -> tuple[CallRecord, bool]:
        client = ModelClient(stack.settings, stack.config)
        provider = stack.config.models["sim-nano"].provider
        client.provider_client(provider)._idempotency_header = "Idempotency-Key"
        try:
            record = await client.call("sim-nano", [{"role": "user", "content": "hi"}], {}, 10, stack.config.answers)
            return record, await client._prepared_for(provider) is None
        finally:
            await client.close()

    record, fell_back = asyncio.run(call())
    assert fell_back
    # The simulator answered (it may refuse now and then): the provider's own usage, no transport failure.
    assert record.status is None and record.outcome.value not in ("connection", "timeout", "error")
    assert (record.usage.prompt_tokens > 0, record.usage.estimated) == (True, False)


@asynccontextmanager
async def odd_server() -> AsyncIterator[str]:
    """A server whose chat endpoint redirects (307, as an API moved behind a new path does) to one that
    answers gzip-compressed JSON."""
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/v2/chat/completions")

    async def compressed(request: web.Request) -> web.Response:
        assert json.loads(await request.read()) == BODY  # a 307 keeps the method and the body
        return web.Response(body=gzip.compress(json.dumps(ANSWER).encode()), content_type="application/json",
                            headers={"content-encoding": "gzip"})

    async with serving({"/v1/chat/completions": moved, "/v2/chat/completions": compressed}) as url:
        yield url


@pytest.mark.parametrize("path", ["/v1", "/v2"])  # redirected, then compressed; compressed
def test_a_redirect_the_client_follows_and_a_compressed_answer_read_as_with_the_sdk(path: str) -> None:
    async def run() -> tuple[Any, Any, bool]:
        async with odd_server() as server:
            url = server + path
            async def act(client: openai.AsyncOpenAI, prepared: PreparedChat) -> tuple[Any, Any, bool]:
                sdk = await client.post(PATH, body=BODY, cast_to=httpx2.Response, options={"timeout": 5})
                ours = await prepared.send(BODY, 5)
                return json.loads(sdk.content), json.loads(ours.content), prepared.direct

            return await both(url, act)  # type: ignore[no-any-return]

    sdk, ours, direct = asyncio.run(run())
    assert direct  # the workers' client: sent to its aiohttp session, not through httpx2's client
    assert ours == sdk == ANSWER


def test_a_client_with_an_event_hook_sends_through_httpx2_and_its_hook_sees_each_request() -> None:
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(str(request.url))

    async def run() -> tuple[bool, bool]:
        async with recording_server() as (url, _):
            plain = client_for(url)
            hooked = openai.AsyncOpenAI(base_url=url, api_key="sk-test-prepared-0123456789", max_retries=0,
                                        http_client=openai.DefaultAioHttpClient(event_hooks={"request": [hook]}))
            try:
                direct, through = await PreparedChat.build(plain), await PreparedChat.build(hooked)
                assert direct is not None and through is not None
                answer = await through.send(BODY, 5)
                assert json.loads(answer.content) == ANSWER
                return direct.direct, through.direct
            finally:
                await plain.close()
                await hooked.close()

    assert asyncio.run(run()) == (True, False)
    assert seen == [seen[0]] and seen[0].endswith("/v1/chat/completions")


def test_an_answer_that_is_not_json_can_still_be_reported_with_its_response() -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>a proxy's login page</html>", content_type="text/html")

    async def run() -> tuple[bool, Any]:
        async def act(_: openai.AsyncOpenAI, prepared: PreparedChat) -> tuple[bool, Any]:
            answer = await prepared.send(BODY, 5)
            return prepared.direct, openai.APIResponseValidationError(answer.response(), None, message="not JSON")

        async with serving({"/v1/chat/completions": html}) as url:
            return await both(f"{url}/v1", act)  # type: ignore[no-any-return]

    direct, error = asyncio.run(run())
    assert direct
    assert (error.status_code, error.response.text) == (200, "<html>a proxy's login page</html>")
    assert error.response.headers["content-type"].startswith("text/html")
    assert str(error.request.url).endswith("/v1/chat/completions")
