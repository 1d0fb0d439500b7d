"""Provider batches as a worker leaves them, made at the simulator by a test, and what to look at after a
tier step (workers/provider_batches.py) ran on them in the test's process."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
from conftest import Stack, insert_job, published
from sqlalchemy import text

from workers.context import WorkerContext
from workers.provider_batches import call_id

TIER = "cold"  # mode "deadline" in sim.toml: a delivery for a provider batch goes through the batch steps
MODEL = "sim-flagship"


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.sim.base_url, api_key="sk-test", max_retries=0)


def cancelled_provider_batch(stack: Stack, prompts: list[str], hours_ago: float = 0,
                             **timing: str) -> tuple[uuid.UUID, list[int], str]:
    """Cancelled jobs of one batch whose requests a provider batch (created with `timing`, its sim_ metadata
    without the prefix) still holds, as a worker left them: (message id, job ids, provider batch id)."""
    return provider_batch(stack, prompts, "cancelled", hours_ago, **timing)


def provider_batch(stack: Stack, prompts: list[str], status: str, hours_ago: float = 0,
                   params: dict[str, Any] | None = None, body: dict[str, Any] | None = None,
                   **timing: str) -> tuple[uuid.UUID, list[int], str]:
    """Jobs of one batch, in `status` (with `params`), whose requests (`body` added to each) a provider
    batch (created with `timing`, its sim_ metadata without the prefix) holds, as a worker left them:
    (message id, job ids, provider batch id)."""
    message = uuid.uuid4()
    jobs = [insert_job(stack, prompt, status=status, tier=TIER, handoff=message, params=params)
            for prompt in prompts]
    with stack.engine.begin() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": jobs[0]}).scalar_one()
        conn.execute(text("UPDATE jobs SET batch_id = :b, custom_id = 'j' || id WHERE id = ANY(:ids)"),
                     {"b": batch, "ids": jobs})
    requests = {str(call_id(message, job)): job for job in jobs}
    lines = "".join(json.dumps({"custom_id": custom, "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                                         **(body or {})}}) + "\n"
                    for (custom, _), prompt in zip(requests.items(), prompts, strict=True))
    client = sdk(stack)
    uploaded = client.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
    created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h",
                                    metadata={"tierq_message": str(message),
                                              **{f"sim_{key}": value for key, value in timing.items()}})
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO provider_batches (message_id, batch_id, tier, model, provider, requests, state, "
                          "input_file_id, provider_batch_id, provider_status, created_at) VALUES (:m, :b, :t, :model, "
                          "'sim', CAST(:r AS jsonb), 'open', :f, :p, 'in_progress', "
                          "now() - make_interval(secs => :age))"),
                     {"m": message, "b": batch, "t": TIER, "model": MODEL, "r": json.dumps(requests),
                      "f": uploaded.id, "p": created.id, "age": hours_ago * 3600})
    return message, jobs, created.id


def row(stack: Stack, message: uuid.UUID) -> tuple[str, str]:
    """(state, provider_status) of the message's provider batch."""
    with stack.engine.connect() as conn:
        state, status = conn.execute(text("SELECT state, provider_status FROM provider_batches WHERE message_id = :m"),
                                     {"m": message}).one()
    return str(state), str(status)


def polls(ctx: WorkerContext) -> list[tuple[str, list[int], bool]]:
    """The tier messages published so far: (message id, job ids, whether it has an ETA)."""
    found = []
    for message in published(ctx, TIER):
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["id"], args[1], bool(message["headers"]["eta"])))
    return found


def set_sim(stack: Stack, behaviour: dict[str, Any]) -> None:
    """Change the simulator's behaviour, keeping its batches (`Stack.simulate` would reset them)."""
    assert stack.sim.call("POST", "/_sim/config", behaviour)[0] == 200


def provider_status(stack: Stack, batch: str) -> str:
    return str(sdk(stack).batches.retrieve(batch).status)


def answered(stack: Stack, batch: str) -> int:
    counts = sdk(stack).batches.retrieve(batch).request_counts
    return counts.completed if counts is not None else 0


def wait_for(what: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, f"still not so after {timeout_s} s"
        time.sleep(0.05)
