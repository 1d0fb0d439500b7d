"""End-to-end tests of fakellm chat completions, against a real subprocess."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from fakellm.testing import SimServer, running_server

CONFIG_TOML = """
[providers.sim]
base_url = "http://127.0.0.1:1/v1"

[models."sim-small"]
provider = "sim"

[models."sim-listed"]
provider = "sim"

[[tiers]]
name = "cheap"

[simulator]
seed = 7

[simulator.models."sim-small"]

[simulator.models."sim-large"]
cached_fraction = 0.5
answer_words = [20, 30]

[simulator.models."sim-flaky"]
refusal_rate = 0.1
error_429_rate = 0.1
empty_rate = 0.05
retry_after_s = 0.2
"""

MIXED_TOML = """
[simulator]
seed = %d
refusal_rate = 0.15
empty_rate = 0.15
truncate_rate = 0.15
error_429_rate = 0.15
error_500_rate = 0.15
"""

# (HTTP status, finish_reason, content) of one reply.
Summary = list[tuple[int, str | None, str | None]]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """One simulator subprocess shared by this module's tests."""
    workdir = tmp_path_factory.mktemp("fakellm-chat")
    (workdir / "tierq.toml").write_text(CONFIG_TOML)
    with running_server(workdir / "tierq.toml", stderr_path=workdir / "stderr") as server:
        assert server.banner == f"fake-llm listening on {server.base_url}"
        yield server
    assert server.returncode == 0, (workdir / "stderr").read_text()


@pytest.fixture()
def client(sim: SimServer) -> openai.OpenAI:
    """An OpenAI SDK client pointed at the simulator, with no retries."""
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


def user(text: str) -> list[ChatCompletionMessageParam]:
    """Return a one-message conversation."""
    return [{"role": "user", "content": text}]


def billed(messages: list[ChatCompletionMessageParam]) -> int:
    """Expected prompt tokens: 4 + ceil(len/4) per message (string contents only)."""
    return sum(4 + math.ceil(len(str(m.get("content") or "")) / 4) for m in messages)


def test_models_lists_every_configured_model(sim: SimServer) -> None:
    status, _, body = sim.call("GET", "/v1/models")
    assert status == 200
    assert body["object"] == "list"
    names = [m["id"] for m in body["data"]]
    assert names == ["sim-small", "sim-large", "sim-flaky", "sim-listed"]
    assert all(m["object"] == "model" and m["owned_by"] == "tierq-sim" for m in body["data"])


def test_ok_answer_shape_and_usage(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How do I keep my tests fast?"},
    ]
    reply = client.chat.completions.create(model="sim-small", messages=messages)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == "sim-small"
    choice = reply.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    content = choice.message.content
    assert content and choice.message.role == "assistant" and choice.message.refusal is None
    assert 8 <= len(content.split()) <= 40
    assert content[0].isupper() and content.endswith(".")
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens == billed(messages)
    assert usage.completion_tokens == math.ceil(len(content) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    again = client.chat.completions.create(model="sim-small", messages=messages)
    assert again.choices[0].message.content == content


def test_content_parts_are_billed_like_strings(sim: SimServer) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world, parts!"}]
    body = {"model": "sim-small", "messages": [{"role": "user", "content": parts}]}
    status, _, reply = sim.call("POST", "/v1/chat/completions", body)
    assert status == 200
    assert reply["usage"]["prompt_tokens"] == 4 + math.ceil(len("Hello world, parts!") / 4)


def _outcome_sequence(sim: SimServer) -> Summary:
    """Send a fixed request sequence (with repeats) and summarise every reply."""
    seen: Summary = []
    for index in range(40):
        body = {"model": "sim-any", "messages": user(f"question {index % 25}")}
        status, _, reply = sim.call("POST", "/v1/chat/completions", body)
        if status == 200:
            choice = reply["choices"][0]
            seen.append((status, choice["finish_reason"], choice["message"]["content"]))
        else:
            seen.append((status, None, None))
    return seen


def _fresh_sequence(tmp_path: Path, name: str, seed: int) -> Summary:
    """Run the fixed sequence against a brand-new server with the given seed."""
    config = tmp_path / f"{name}.toml"
    config.write_text(MIXED_TOML % seed)
    with running_server(config, stderr_path=tmp_path / f"{name}.err") as fresh:
        sequence = _outcome_sequence(fresh)
    assert fresh.returncode == 0
    return sequence


def test_fresh_servers_replay_identically(tmp_path: Path) -> None:
    sequence_a = _fresh_sequence(tmp_path, "a", seed=1)
    sequence_b = _fresh_sequence(tmp_path, "b", seed=1)
    sequence_c = _fresh_sequence(tmp_path, "c", seed=2)
    assert sequence_a == sequence_b
    assert len({entry[:2] for entry in sequence_a}) >= 4
    assert sequence_c != sequence_a


def _refusal_form(client: openai.OpenAI, model: str, text: str) -> str:
    """Classify the refusal shape a request came back with."""
    choice = client.chat.completions.create(model=model, messages=user(text)).choices[0]
    if choice.finish_reason == "content_filter":
        assert choice.message.content == ""
        return "content_filter"
    assert choice.finish_reason == "stop"
    if choice.message.content is None:
        assert choice.message.refusal == "I'm sorry, but I can't help with that request."
        return "refusal_field"
    assert choice.message.content == "I'm sorry, but I can't help with that."
    return "refusal_text"


def test_refuse_marker_produces_all_three_forms(client: openai.OpenAI) -> None:
    forms = {_refusal_form(client, "sim-small", "please [[sim:refuse]] now") for _ in range(3)}
    assert forms == {"content_filter", "refusal_field", "refusal_text"}


def test_model_specific_marker_only_hits_that_model(client: openai.OpenAI) -> None:
    text = "targeted [[sim:refuse@sim-large]]"
    _refusal_form(client, "sim-large", text)
    other = client.chat.completions.create(model="sim-small", messages=user(text))
    assert other.choices[0].finish_reason == "stop"
    assert other.choices[0].message.content and "sorry" not in other.choices[0].message.content


def test_empty_and_truncate_markers(client: openai.OpenAI) -> None:
    empty = client.chat.completions.create(model="sim-large", messages=user("[[sim:empty]]"))
    assert empty.choices[0].message.content == "" and empty.choices[0].finish_reason == "stop"
    assert empty.usage is not None and empty.usage.completion_tokens == 0
    cut = client.chat.completions.create(model="sim-large", messages=user("[[sim:truncate]]"))
    content = cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "length"
    assert content and len(content.split()) < 20
    assert cut.usage is not None and cut.usage.completion_tokens == math.ceil(len(content) / 4)


def test_429_marker_carries_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="sim-small", messages=user("[[sim:429]]"))
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as flaky:
        client.chat.completions.create(model="sim-flaky", messages=user("[[sim:429]]"))
    assert flaky.value.response.headers["retry-after"] == "0.2"


def test_500_marker(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="sim-small", messages=user("x [[sim:500]]"))
    assert caught.value.status_code == 500


def test_hang_marker_makes_the_client_time_out(sim: SimServer) -> None:
    impatient = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="sim-small", messages=user("[[sim:hang]]"))
    assert time.monotonic() - started < 5


def test_rates_are_roughly_honoured(sim: SimServer) -> None:
    counts: Counter[str] = Counter()
    for index in range(500):
        body = {"model": "sim-flaky", "messages": user(f"rate probe {index}")}
        status, headers, reply = sim.call("POST", "/v1/chat/completions", body)
        if status == 429:
            assert headers["Retry-After"] == "0.2"
            counts["429"] += 1
            continue
        assert status == 200
        choice = reply["choices"][0]
        message = choice["message"]
        if (
            choice["finish_reason"] == "content_filter"
            or message["refusal"]
            or (message["content"] or "").startswith("I'm sorry")
        ):
            counts["refusal"] += 1
        elif message["content"] == "":
            counts["empty"] += 1
    assert 25 <= counts["refusal"] <= 75
    assert 25 <= counts["429"] <= 75
    assert 8 <= counts["empty"] <= 45


def test_max_tokens_cuts_the_answer(client: openai.OpenAI) -> None:
    messages = user("Tell me everything.")
    capped = client.chat.completions.create(model="sim-large", messages=messages, max_tokens=5)
    newer = client.chat.completions.create(
        model="sim-large", messages=messages, max_completion_tokens=5
    )
    for reply in (capped, newer):
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        assert len(reply.choices[0].message.content or "") <= 20
    roomy = client.chat.completions.create(model="sim-large", messages=messages, max_tokens=1000)
    assert roomy.choices[0].finish_reason == "stop"


def test_repeated_request_reports_cached_tokens(client: openai.OpenAI) -> None:
    messages = user("A long shared prefix that a provider would cache. " * 4)
    cached = []
    for _ in range(2):
        reply = client.chat.completions.create(model="sim-large", messages=messages)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        cached.append(reply.usage.prompt_tokens_details.cached_tokens)
    assert cached == [0, billed(messages) // 2]
    other = client.chat.completions.create(model="sim-small", messages=messages)
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0


def test_a_port_in_use_is_one_line(sim: SimServer) -> None:
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    done = subprocess.run([sys.executable, "-m", "fakellm", "--port", str(port)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"fakellm: cannot listen on 127.0.0.1:{port} (")
    assert done.stderr.endswith("; pick another --port (0: any free one) or stop what uses it\n")
    assert "Traceback" not in done.stderr
