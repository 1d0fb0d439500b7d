"""The raw asyncio anchor: N chat calls at a fixed concurrency from one process, and nothing else.

    .venv/bin/python bench/anchor_client.py BASE_URL --calls 3200 --concurrency 400 [--client sdk|sdk-post|raw]

`sdk` (the anchor): the OpenAI SDK's `chat.completions.create` over aiohttp
(`openai.DefaultAioHttpClient`), the client the tier workers use, with a semaphore for the
concurrency. `sdk-post`: the same client's low-level `post`, which skips the SDK's request
transformation and response model (a candidate for the workers, see docs/benchmarks.md). `raw`: a
bare aiohttp session, the cheapest client there is, which the simulator-capacity check uses so that
the client is not what it measures. Prints one JSON line: calls, errors, seconds, CPU ms per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import httpx2
import openai

from workers.prepared import PreparedChat

MODEL = "sim-nano"
CLIENTS = ("sdk", "sdk-post", "sdk-prepared", "raw")


def prompt(tag: str, n: int) -> list[dict[str, str]]:
    """A distinct prompt per call, shaped like a support ticket."""
    return [{"role": "user", "content": f"Ticket {tag}-{n}: where is my parcel? I ordered it on Monday."}]


async def run(base_url: str, calls: int, concurrency: int, client_kind: str, tag: str) -> dict[str, float]:
    """Make `calls` calls with at most `concurrency` open at once; count failures instead of stopping."""
    gate = asyncio.Semaphore(concurrency)
    errors = 0
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    prepared: PreparedChat | None = None

    async def call(n: int) -> str | None:
        body: dict[str, Any] = {"model": MODEL, "messages": prompt(tag, n)}
        if client_kind == "raw":
            async with session.post(base_url + "/chat/completions", json=body) as response:
                response.raise_for_status()
                return (await response.json())["choices"][0]["message"]["content"]  # type: ignore[no-any-return]
        if client_kind == "sdk-prepared":
            nonlocal prepared
            if prepared is None:
                prepared = await PreparedChat.build(client)
                assert prepared is not None
            answer = await prepared.send(body, 60)
            return json.loads(answer.content)["choices"][0]["message"]["content"]  # type: ignore[no-any-return]
        if client_kind == "sdk-post":
            raw = await client.post("/chat/completions", body=body, cast_to=httpx2.Response, options={"timeout": 60})
            return json.loads(raw.content)["choices"][0]["message"]["content"]  # type: ignore[no-any-return]
        completion = await client.chat.completions.create(model=MODEL, messages=prompt(tag, n),  # type: ignore[arg-type]
                                                          timeout=60)
        return completion.choices[0].message.content

    async def one(n: int) -> None:
        nonlocal errors
        async with gate:
            try:
                await call(n)
            except (aiohttp.ClientError, openai.APIError):
                errors += 1

    started, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(one(n) for n in range(calls)))
    finally:
        await session.close()
        await client.close()
    return {"calls": calls, "errors": errors, "seconds": time.perf_counter() - started,
            "cpu_ms_per_call": (time.process_time() - cpu) * 1000 / calls}


def main(argv: list[str] | None = None) -> int:
    """Run the calls and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the provider's base URL, ending in /v1")
    parser.add_argument("--calls", type=int, default=3200)
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--client", choices=CLIENTS, default="sdk")
    parser.add_argument("--tag", default="anchor", help="makes the prompts distinct from another client's")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.base_url.rstrip("/"), args.calls, args.concurrency, args.client, args.tag))
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
