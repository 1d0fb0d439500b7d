"""End-to-end tests of fakellm embeddings, /_sim endpoints and errors."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from simsupport import module_server, sdk_client

import fakellm
from fakellm.testing import SimServer

CONFIG_TOML = """
[models.unrelated]
provider = "sim"

[simulator]
seed = 7

[simulator.models."sim-small"]

[simulator.models."sim-large"]
cached_fraction = 0.5
"""
SIMULATOR_TABLE: dict[str, Any] = tomllib.loads(CONFIG_TOML)["simulator"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """One simulator subprocess shared by this module's tests."""
    yield from module_server(tmp_path_factory.mktemp("fakellm-endpoints"), CONFIG_TOML)


@pytest.fixture()
def client(sim: SimServer) -> openai.OpenAI:
    """An OpenAI SDK client pointed at the simulator, with no retries."""
    return sdk_client(sim, reset=False)


def user(text: str) -> list[ChatCompletionMessageParam]:
    """Return a one-message conversation."""
    return [{"role": "user", "content": text}]


def _cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors."""
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_embeddings_via_sdk(client: openai.OpenAI) -> None:
    texts = [
        "How do I reset my account password?",
        "How do I reset my account password ?",
        "Quarterly revenue of the shipping division grew twelve percent.",
    ]
    result = client.embeddings.create(model="sim-embed", input=texts)  # base64 on the wire
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(v) == 384 and abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors)
    assert _cosine(vectors[0], vectors[1]) > 0.9
    assert abs(_cosine(vectors[0], vectors[2])) < 0.5
    floats = client.embeddings.create(
        model="sim-embed", input=texts[0], encoding_format="float", dimensions=64
    )
    assert len(floats.data[0].embedding) == 64
    assert result.usage.prompt_tokens == sum(math.ceil(len(t) / 4) for t in texts)
    again = client.embeddings.create(model="sim-embed", input=texts[0], encoding_format="float")
    assert np.allclose(again.data[0].embedding, vectors[0], atol=1e-6)


def test_embeddings_base64_wire_format(sim: SimServer) -> None:
    body = {"model": "e", "input": ["same text", "same text"], "encoding_format": "base64"}
    status, _, reply = sim.call("POST", "/v1/embeddings", body)
    assert status == 200 and reply["object"] == "list"
    first = np.frombuffer(base64.b64decode(reply["data"][0]["embedding"]), dtype="<f4")
    assert first.shape == (384,) and abs(float(np.linalg.norm(first)) - 1) < 1e-5
    assert reply["data"][0]["embedding"] == reply["data"][1]["embedding"]


def test_stats_match_returned_usage(sim: SimServer, client: openai.OpenAI) -> None:
    assert sim.call("POST", "/_sim/reset")[2] == {"ok": True}
    totals: Counter[str] = Counter()
    ids = []
    prompts = ["plain", "[[sim:refuse]]", "[[sim:empty]]", "[[sim:truncate]]", "plain"]
    for text in prompts:
        reply = client.chat.completions.create(model="sim-large", messages=user(text))
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        totals["prompt"] += reply.usage.prompt_tokens
        totals["completion"] += reply.usage.completion_tokens
        totals["cached"] += reply.usage.prompt_tokens_details.cached_tokens or 0
        ids.append(reply.id)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="sim-large", messages=user("[[sim:429]]"))
    client.embeddings.create(model="sim-embed", input=["a", "b"])
    stats = sim.call("GET", "/_sim/stats")[2]
    model = stats["models"]["sim-large"]
    assert stats["requests"] == 6 and model["requests"] == 6
    assert model["status"]["200"] == 5 and model["status"]["429"] == 1
    assert model["outcomes"] == {"ok": 2, "refusal": 1, "empty": 1, "truncate": 1, "hang": 0}
    assert model["prompt_tokens"] == totals["prompt"]
    assert model["completion_tokens"] == totals["completion"]
    assert model["cached_tokens"] == totals["cached"] > 0
    assert [call["id"] for call in stats["calls"]] == ids
    assert sum(call["prompt_tokens"] for call in stats["calls"]) == totals["prompt"]
    assert stats["embeddings"] == {"requests": 1, "inputs": 2}
    assert "calls" not in sim.call("GET", "/_sim/stats?calls=0")[2]


def test_runtime_config_change(sim: SimServer, client: openai.OpenAI) -> None:
    messages = user("A question whose answer we will see cut short.")
    full = client.chat.completions.create(model="sim-runtime", messages=messages)
    change = {"seed": 7, "models": {"sim-runtime": {"truncate_rate": 1.0}}}
    try:
        status, _, reply = sim.call("POST", "/_sim/config", change)
        assert (status, reply) == (200, {"ok": True})
        listed = [m["id"] for m in sim.call("GET", "/v1/models")[2]["data"]]
        assert listed == ["sim-runtime", "unrelated"]
        cut = client.chat.completions.create(model="sim-runtime", messages=messages)
        assert cut.choices[0].finish_reason == "length"
        prefix = cut.choices[0].message.content
        assert prefix and (full.choices[0].message.content or "").startswith(prefix)
        bad = {"models": {"sim-runtime": {"refusal_rate": 0.7, "empty_rate": 0.7}}}
        status, _, reply = sim.call("POST", "/_sim/config", bad)
        assert status == 400 and "sim-runtime" in reply["error"]["message"]
        status, _, reply = sim.call("POST", "/_sim/config", {"models": {"m": {"colour": 1}}})
        assert status == 400 and "colour" in reply["error"]["message"]
    finally:
        assert sim.call("POST", "/_sim/config", SIMULATOR_TABLE)[0] == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", {"model": "sim-small"}),
        ("/v1/chat/completions", {"model": "sim-small", "messages": []}),
        ("/v1/chat/completions", {"model": "sim-small", "messages": [{"content": "no role"}]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": 5}]}),
        ("/v1/chat/completions", {"model": "sim-small", "messages": user("x"), "max_tokens": 0}),
        ("/v1/chat/completions", {"model": "m", "messages": user("x"), "stream": True}),
        ("/v1/embeddings", {"model": "e"}),
        ("/v1/embeddings", {"model": "e", "input": [1, 2]}),
        ("/v1/embeddings", {"model": "e", "input": "x", "encoding_format": "int8"}),
    ],
)
def test_bad_requests_get_400(sim: SimServer, path: str, body: dict[str, Any]) -> None:
    status, _, reply = sim.call("POST", path, body)
    assert status == 400
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["type"] == "invalid_request_error"


def test_invalid_json_and_unknown_paths(sim: SimServer, client: openai.OpenAI) -> None:
    status, _, reply = sim.call("POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and reply["error"]["type"] == "invalid_request_error"
    status, _, reply = sim.call("GET", "/v1/nothing-here")
    assert status == 404 and "error" in reply
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="", messages=user("hi"))


def test_bad_config_file_exits_with_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[simulator]\nrefusal_rate = 2.0\n")
    command = [sys.executable, "-m", "fakellm", "--port", "0", "--config", str(config)]
    package_parent = Path(fakellm.__file__).resolve().parents[1]
    done = subprocess.run(command, capture_output=True, timeout=30, cwd=package_parent)
    assert done.returncode == 2
    assert b"refusal_rate" in done.stderr


def test_answers_come_in_the_json_format_asked_for(client: openai.OpenAI) -> None:
    schema = {"type": "object", "required": ["intent", "urgent", "items"], "properties": {
        "intent": {"enum": ["refund", "delivery", "other"]}, "urgent": {"type": "boolean"},
        "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"$ref": "#/$defs/stars"}},
        "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "note": {"type": "string", "maxLength": 12}},
        "$defs": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}}}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}}
    first = client.chat.completions.create(model="sim-small", messages=user("Where is my parcel?"), response_format=fmt)
    again = client.chat.completions.create(model="sim-small", messages=user("Where is my parcel?"), response_format=fmt)
    value = json.loads(first.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    assert set(value) == {"intent", "urgent", "items", "share", "note"} and len(value["items"]) == 2 and value["note"]
    for n in range(20):  # bounds, lengths and references hold whatever the prompt
        other = client.chat.completions.create(model="sim-small", messages=user(f"Ticket {n}"), response_format=fmt)
        jsonschema.validate(json.loads(other.choices[0].message.content or ""), schema)
    assert again.choices[0].message.content == first.choices[0].message.content  # the same request, the same JSON
    assert first.usage is not None and first.usage.completion_tokens == math.ceil(
        len(first.choices[0].message.content or "") / 4)
    plain = client.chat.completions.create(model="sim-small", messages=user("Where is my parcel? Reply in JSON."),
                                           response_format={"type": "json_object"})
    assert set(json.loads(plain.choices[0].message.content or "")) == {"answer"}
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):  # as OpenAI's JSON mode
        client.chat.completions.create(model="sim-small", messages=user("Where is my parcel?"),
                                       response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="sim-small", messages=user("hi"),
                                       response_format={"type": "xml"})  # type: ignore[arg-type,typeddict-item]
