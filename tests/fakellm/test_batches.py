"""The simulator's Batch API, driven by the openai package against a real subprocess: statuses, result
files, per-line outcomes from the chat logic, expiry, cancelling, listing and what /_sim/stats counts."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from simsupport import module_server, sdk_client

from fakellm.answers import REFUSAL_CONTENT
from fakellm.testing import SimServer

CONFIG_TOML = """
[simulator]
seed = 3

[simulator.batch]
validating_s = 0.1
in_progress_s = 0.4
finalizing_s = 0.1
cancelling_s = 0.1
"""
FINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """One simulator subprocess with short batch timings, shared by this module's tests."""
    yield from module_server(tmp_path_factory.mktemp("fakellm-batches"), CONFIG_TOML)


@pytest.fixture()
def client(sim: SimServer) -> openai.OpenAI:
    """An OpenAI SDK client pointed at the simulator, with no retries, on a simulator with no batches."""
    return sdk_client(sim)


def request_line(custom_id: str, text: str, model: str = "sim-batch") -> dict[str, Any]:
    """One line of a batch input file: a chat completion asking `text`."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes) -> str:
    """Upload an input file for batches (lines as JSONL, or raw bytes) and return its id."""
    data = lines if isinstance(lines, bytes) else b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return client.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch").id


def start(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes, **metadata: str) -> Batch:
    """Upload the lines and create a batch of them."""
    return client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT, completion_window="24h",
                                 metadata=metadata or None)


def wait_final(client: openai.OpenAI, created: Batch, timeout_s: float = 10) -> tuple[Batch, list[Batch]]:
    """Poll every 10 ms until the batch reaches a final status; return it and every snapshot seen, the
    one `created` (as the create or cancel call returned it) first."""
    snapshots = [created]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(created.id)
        snapshots.append(batch)
        if batch.status in FINAL:
            return batch, snapshots
        time.sleep(0.01)
    raise AssertionError(f"batch {created.id} still {snapshots[-1].status} after {timeout_s} s")


def statuses(snapshots: list[Batch]) -> list[str]:
    """The distinct statuses the snapshots went through, in order."""
    seen: list[str] = []
    for batch in snapshots:
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
    return seen


def read_lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """The lines of a result file, by custom_id."""
    assert file_id is not None
    lines = [json.loads(raw) for raw in client.files.content(file_id).text.splitlines()]
    return {line["custom_id"]: line for line in lines}


def stats(sim: SimServer) -> dict[str, Any]:
    """The simulator's counters."""
    status, _, body = sim.call("GET", "/_sim/stats")
    assert status == 200
    result: dict[str, Any] = body
    return result


def test_a_batch_answers_every_line_once_through_the_chat_logic(client: openai.OpenAI, sim: SimServer) -> None:
    texts = {"plain-1": "Where is my parcel?", "plain-2": "How do I reset my password?",
             "refused": "[[sim:refuse]] something", "cut": "[[sim:truncate]] a long story",
             "said": "[[sim:say=forty-two]]", "broken": "[[sim:500]]", "limited": "[[sim:429]]"}
    lines = [request_line(cid, text) for cid, text in texts.items()]
    lines.append({"custom_id": "no-messages", "method": "POST", "url": ENDPOINT, "body": {"model": "sim-batch"}})
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": texts["plain-1"]}]
    interactive = client.chat.completions.create(model="sim-batch", messages=question)

    created = start(client, lines, purpose="nightly")
    assert (created.status, created.object, created.endpoint, created.completion_window) == (
        "validating", "batch", ENDPOINT, "24h")
    assert created.metadata == {"purpose": "nightly"} and created.expires_at == created.created_at + 86400
    batch, snapshots = wait_final(client, created)

    assert statuses(snapshots) == ["validating", "in_progress", "finalizing", "completed"]
    progress = {s.request_counts.completed + s.request_counts.failed for s in snapshots
                if s.status == "in_progress" and s.request_counts}
    assert len(progress - {0, len(lines)}) >= 2, f"gradual progress expected, saw {sorted(progress)}"
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 8, "completed": 5, "failed": 3}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.model == "sim-batch"

    output = read_lines(client, batch.output_file_id)
    assert set(output) == {"plain-1", "plain-2", "refused", "cut", "said"}
    answers = {}
    for cid, line in output.items():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        answers[cid] = ChatCompletion.model_validate(line["response"]["body"])
        assert answers[cid].usage is not None and answers[cid].usage.prompt_tokens > 0
    # The same question gets the same answer as an interactive call: it is the same logic.
    assert answers["plain-1"].choices[0].message.content == interactive.choices[0].message.content
    refused = answers["refused"].choices[0]
    assert (refused.message.refusal is not None or refused.message.content == REFUSAL_CONTENT
            or refused.finish_reason == "content_filter")
    assert answers["cut"].choices[0].finish_reason == "length"
    assert answers["said"].choices[0].message.content == "forty-two"

    errors = read_lines(client, batch.error_file_id)
    assert {cid: line["response"]["status_code"] for cid, line in errors.items()} == {
        "broken": 500, "limited": 429, "no-messages": 400}
    assert all(line["error"] is None for line in errors.values())
    assert errors["no-messages"]["response"]["body"]["error"]["param"] == "messages"
    assert errors["limited"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"

    billed = [a.usage for a in answers.values() if a.usage is not None]
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(u.prompt_tokens for u in billed)
    assert batch.usage.output_tokens == sum(u.completion_tokens for u in billed)

    counted = stats(sim)
    assert counted["requests"] == 1 and counted["models"]["sim-batch"]["status"]["200"] == 1
    counted_batch = counted["batch"]
    assert counted_batch["seen"] == {batch.id: dict.fromkeys([*texts, "no-messages"], 1)}
    assert counted_batch["lines"] == 8 and counted_batch["batches"] == 1 and counted_batch["bad_requests"] == 1
    model = counted_batch["models"]["sim-batch"]
    assert model["requests"] == 7 and model["status"] == {"200": 5, "429": 1, "500": 1}
    assert model["outcomes"]["refusal"] == 1 and model["outcomes"]["truncate"] == 1
    assert model["prompt_tokens"] == batch.usage.input_tokens
    assert model["completion_tokens"] == batch.usage.output_tokens
    assert sorted(call["custom_id"] for call in counted_batch["calls"]) == sorted(output)
    assert all(call["batch_id"] == batch.id for call in counted_batch["calls"])


def test_progress_at_end_answers_every_line_at_once(client: openai.OpenAI, sim: SimServer) -> None:
    lines = [request_line(f"q{i}", f"question {i}") for i in range(6)]
    batch, snapshots = wait_final(client, start(client, lines, sim_progress="at_end"))
    assert batch.status == "completed" and batch.request_counts and batch.request_counts.completed == 6
    in_progress = [s.request_counts.completed for s in snapshots if s.status == "in_progress" and s.request_counts]
    assert in_progress and set(in_progress) <= {0, 6}


def test_an_invalid_input_file_fails_the_batch_with_line_errors(client: openai.OpenAI, sim: SimServer) -> None:
    good = json.dumps(request_line("a", "hello"))
    data = "\n".join([
        good,
        "{not json",
        json.dumps({"method": "POST", "url": ENDPOINT, "body": {}}),
        good,
        json.dumps(request_line("b", "hello") | {"url": "/v1/embeddings"}),
        json.dumps(request_line("c", "hello", model="another-model")),
        "",
    ]).encode()
    batch, snapshots = wait_final(client, start(client, data))
    assert statuses(snapshots) == ["validating", "failed"] and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    found = {(e.line, e.code, e.param) for e in batch.errors.data}
    assert found == {(2, "invalid_json_line", None), (3, "missing_required_parameter", "custom_id"),
                     (4, "duplicate_custom_id", "custom_id"), (5, "mismatched_endpoint", "url"),
                     (6, "mismatched_model", "body.model")}
    messages = {e.line: e.message for e in batch.errors.data}
    assert messages[4] == "line 4: custom_id 'a' is already used on line 1; each line needs its own"
    assert batch.output_file_id is None and batch.error_file_id is None
    assert stats(sim)["batch"]["lines"] == 0


def test_an_expired_batch_keeps_its_answers_and_reports_the_rest(client: openai.OpenAI, sim: SimServer) -> None:
    # Hanging lines never finish, so the 0.6 s window closes on them while the others are answered.
    lines = [request_line("fast-1", "one"), request_line("stuck-1", "[[sim:hang]] two"),
             request_line("fast-2", "three"), request_line("stuck-2", "[[sim:hang]] four")]
    batch, snapshots = wait_final(client, start(client, lines, sim_window_s="0.6"))
    assert statuses(snapshots) == ["validating", "in_progress", "expired"]
    assert batch.expired_at and batch.expires_at == batch.created_at
    assert batch.request_counts and batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}
    assert set(read_lines(client, batch.output_file_id)) == {"fast-1", "fast-2"}
    errors = read_lines(client, batch.error_file_id)
    assert set(errors) == {"stuck-1", "stuck-2"}
    for line in errors.values():
        assert line["response"] is None
        assert line["error"]["code"] == "batch_expired" and "completion window" in line["error"]["message"]
    counted = stats(sim)["batch"]
    assert counted["seen"][batch.id] == {"fast-1": 1, "stuck-1": 1, "fast-2": 1, "stuck-2": 1}
    assert counted["unanswered"] == {"batch_expired": 2, "batch_cancelled": 0}
    assert counted["models"]["sim-batch"]["outcomes"]["hang"] == 2


def test_a_cancelled_batch_keeps_what_it_answered(client: openai.OpenAI, sim: SimServer) -> None:
    lines = [request_line(f"q{i}", f"question {i}") for i in range(4)]
    created = start(client, lines, sim_in_progress_s="2")  # a line every half second
    deadline = time.monotonic() + 5
    batch = created
    while not (batch.request_counts and batch.request_counts.completed) and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = client.batches.retrieve(created.id)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch, _ = wait_final(client, created)
    assert batch.status == "cancelled" and batch.cancelled_at
    assert batch.request_counts and batch.request_counts.model_dump() == {"total": 4, "completed": 1, "failed": 3}
    assert set(read_lines(client, batch.output_file_id)) == {"q0"}
    errors = read_lines(client, batch.error_file_id)
    assert {cid: line["error"]["code"] for cid, line in errors.items()} == dict.fromkeys(["q1", "q2", "q3"],
                                                                                         "batch_cancelled")
    counted = stats(sim)["batch"]
    assert counted["seen"] == {created.id: {"q0": 1}}
    assert counted["unanswered"]["batch_cancelled"] == 3
    assert client.batches.cancel(created.id).status == "cancelled"  # cancelling twice changes nothing
    done, _ = wait_final(client, start(client, lines[:1]))
    with pytest.raises(openai.ConflictError, match="'completed'"):
        client.batches.cancel(done.id)


def test_a_batch_cancelled_while_validating_answers_nothing(client: openai.OpenAI, sim: SimServer) -> None:
    created = start(client, [request_line("only", "hello")], sim_validating_s="5")
    batch, snapshots = wait_final(client, client.batches.cancel(created.id))
    assert statuses([created, *snapshots]) == ["validating", "cancelling", "cancelled"]
    assert batch.in_progress_at is None
    assert batch.request_counts and batch.request_counts.total == 0
    assert batch.output_file_id is None and batch.error_file_id is None
    assert stats(sim)["batch"]["seen"] == {}


def test_batches_are_listed_newest_first_in_pages(client: openai.OpenAI) -> None:
    ids = [start(client, [request_line("a", f"list {i}")], sim_validating_s="5").id for i in range(3)]
    newest_first = ids[::-1]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    rest = client.batches.list(limit=2, after=newest_first[1])
    assert [b.id for b in rest.data] == newest_first[2:] and not rest.has_more
    assert [b.id for b in client.batches.list(limit=1)] == newest_first  # the SDK follows the pages
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.list(after="batch_unknown")
    assert caught.value.param == "after"
    with pytest.raises(openai.NotFoundError, match="No such Batch object: batch_unknown"):
        client.batches.retrieve("batch_unknown")


def test_runtime_config_sets_the_timings_of_new_batches(client: openai.OpenAI, sim: SimServer) -> None:
    try:
        status, _, reply = sim.call("POST", "/_sim/config", {"batch": {"window_s": 0}})
        assert (status, reply) == (200, {"ok": True})
        batch, _ = wait_final(client, start(client, [request_line("a", "hi"), request_line("b", "ho")]))
        assert batch.status == "expired" and batch.output_file_id is None
        assert set(read_lines(client, batch.error_file_id)) == {"a", "b"}
        assert stats(sim)["batch"]["seen"] == {}
        status, _, reply = sim.call("POST", "/_sim/config", {"batch": {"progress": "sometimes"}})
        assert status == 400 and "progress" in reply["error"]["message"]
    finally:
        assert sim.call("POST", "/_sim/config", {"seed": 3, "batch": {"validating_s": 0.1, "in_progress_s": 0.4,
                                                 "finalizing_s": 0.1, "cancelling_s": 0.1}})[0] == 200


def test_batch_api_errors_fail_the_requests_not_the_batches(client: openai.OpenAI, sim: SimServer) -> None:
    created = start(client, [request_line("a", "hi")], sim_in_progress_s="0.3")
    try:
        assert sim.call("POST", "/_sim/config", {"seed": 3, "batch_api_error_500_rate": 1})[0] == 200
        with pytest.raises(openai.InternalServerError) as caught:
            client.batches.retrieve(created.id)
        assert caught.value.code is None and caught.value.type == "server_error"
        for request in (lambda: client.batches.cancel(created.id), lambda: client.batches.list(),
                        lambda: start(client, [request_line("b", "ho")])):
            with pytest.raises(openai.InternalServerError):
                request()
        counted = stats(sim)["batch"]
        assert (counted["api_requests"], counted["api_errors"], counted["batches"]) == (5, 4, 1)
        assert sim.call("POST", "/_sim/config", {"seed": 3, "batch_api_error_500_rate": 0.5})[0] == 200
        answers = [sim.call("GET", f"/v1/batches/{created.id}")[0] for _ in range(40)]
        assert set(answers) == {200, 500} and stats(sim)["batch"]["api_errors"] == 4 + answers.count(500)
    finally:
        assert sim.call("POST", "/_sim/config", {"seed": 3, "batch": {"validating_s": 0.1, "in_progress_s": 0.4,
                                                 "finalizing_s": 0.1, "cancelling_s": 0.1}})[0] == 200
    assert wait_final(client, created)[0].status == "completed"


def test_stray_lines_in_the_output_file_match_no_request_and_two_are_billed(
        client: openai.OpenAI, sim: SimServer) -> None:
    kinds = ["malformed", "no_custom_id", "unknown_custom_id"]
    assert sim.call("POST", "/_sim/config", {"seed": 3, "batch_stray_lines": kinds})[0] == 200
    try:
        before = stats(sim)["batch"]["models"].get("sim-batch", {}).get("completion_tokens", 0)
        done, _ = wait_final(client, start(client, [request_line("a", "hi")], sim_in_progress_s="0"))
    finally:
        assert sim.call("POST", "/_sim/config", {"seed": 3, "batch": {"validating_s": 0.1, "in_progress_s": 0.4,
                                                 "finalizing_s": 0.1, "cancelling_s": 0.1}})[0] == 200
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.total == 1
    raw = client.files.content(done.output_file_id or "").text.splitlines()
    assert len(raw) == 4
    answer = json.loads(raw[0])
    with pytest.raises(ValueError):
        json.loads(raw[1])
    no_id, unknown = json.loads(raw[2]), json.loads(raw[3])
    assert "custom_id" not in no_id and unknown["custom_id"] == f"stray-{done.id}-3"
    assert no_id["response"]["body"] == unknown["response"]["body"] == answer["response"]["body"]
    billed = stats(sim)["batch"]["models"]["sim-batch"]["completion_tokens"] - before
    assert billed == 3 * answer["response"]["body"]["usage"]["completion_tokens"]  # the answer and its two copies


@pytest.mark.parametrize(
    ("change", "status", "param", "words"),
    [
        ({"input_file_id": "file-missing"}, 404, "input_file_id", "No such File object: file-missing"),
        ({"input_file_id": "WRONG_PURPOSE"}, 400, "input_file_id", "purpose 'user_data'"),
        ({"input_file_id": None}, 400, "input_file_id", "Missing required parameter"),
        ({"endpoint": "/v1/embeddings"}, 400, "endpoint", "'/v1/embeddings'"),
        ({"completion_window": "48h"}, 400, "completion_window", "'48h'"),
        ({"metadata": {"sim_window_s": "soon"}}, 400, "metadata", "metadata.sim_window_s"),
        ({"metadata": {"sim_colour": "red"}}, 400, "metadata", "sim_colour"),
        ({"metadata": {"count": 3}}, 400, "metadata.count", "values strings"),
    ],
)
def test_bad_batch_requests_name_the_field(
    client: openai.OpenAI, sim: SimServer, change: dict[str, Any], status: int, param: str, words: str
) -> None:
    body = {"input_file_id": upload(client, [request_line("a", "hi")]), "endpoint": ENDPOINT,
            "completion_window": "24h"} | change
    if body["input_file_id"] == "WRONG_PURPOSE":
        body["input_file_id"] = client.files.create(file=("x.jsonl", io.BytesIO(b"{}")), purpose="user_data").id
    code, _, reply = sim.call("POST", "/v1/batches", {k: v for k, v in body.items() if v is not None})
    assert code == status and reply["error"]["param"] == param, reply
    assert words in reply["error"]["message"]
    assert client.batches.list().data == []
