"""Results in tierq's JSONL and in the OpenAI Batch API output format, read back with the OpenAI SDK's types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Stack
from openai.types import BatchError
from openai.types.chat import ChatCompletion
from sqlalchemy import text

from producer.submit import BatchOptions
from tierq.errors import InputError

PARCEL = "Where is my parcel? I ordered it on Monday."


def test_openai_output_round_trips_through_the_sdk_with_the_answering_calls_usage(clean: Stack, tmp_path: Path) -> None:
    requests = [
        {"custom_id": "plain", "prompt": PARCEL},
        {"custom_id": "escalated", "prompt": f"{PARCEL} [[sim:refuse@sim-nano]]"},
        {"custom_id": "doomed", "prompt": f"{PARCEL} [[sim:refuse]]"},
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "custom_id": r["custom_id"],
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "any", "messages": [{"role": "user", "content": r["prompt"]}]},
                }
            )
            for r in requests
        )
        + "\n"
    )
    with clean.client() as tq:
        batch = tq.submit(path, BatchOptions(use_cache=False))
        clean.wait(tq, batch.batch_id)
        out = tmp_path / "out.jsonl"
        out.write_text("".join(json.dumps(line) + "\n" for line in tq.results(batch.batch_id, "openai")))
        ours = {r["id"]: r for r in tq.results(batch.batch_id)}
    lines = {line["custom_id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert list(lines) == ["plain", "escalated", "doomed"]
    with clean.engine.connect() as conn:
        answers = {row.custom_id: row for row in conn.execute(text(
            "SELECT j.custom_id, c.model, c.prompt_tokens, c.completion_tokens, c.cached_tokens FROM calls c "
            "JOIN jobs j ON j.id = c.job_id WHERE c.outcome = 'ok'"))}
    for custom_id in ("plain", "escalated"):
        line = lines[custom_id]
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_") and line["response"]["request_id"].startswith("req_")
        completion = ChatCompletion.model_validate(line["response"]["body"])
        answer = answers[custom_id]
        assert completion.choices[0].message.content == ours[custom_id]["content"]
        assert completion.model == answer.model == ours[custom_id]["model"]
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
                completion.usage.prompt_tokens_details.cached_tokens) == (
            answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens)
        assert completion.usage.total_tokens == answer.prompt_tokens + answer.completion_tokens
    assert lines["escalated"]["response"]["body"]["model"] == "sim-mid"
    doomed = lines["doomed"]
    assert doomed["response"] is None
    error = BatchError.model_validate(doomed["error"])
    assert error.code == "content_refused" and error.message == ours["doomed"]["error"]


def test_cancelled_jobs_are_reported_as_such_and_unknown_formats_refused(clean: Stack) -> None:
    with clean.client() as tq:
        batch = tq.submit([{"id": "a", "prompt": PARCEL}])
        clean.wait(tq, batch.batch_id)
        with clean.engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET status = 'cancelled', content = NULL, error = 'cancelled: tierq cancel'")
            )
        (line,) = tq.results(batch.batch_id, "openai")
        with pytest.raises(InputError, match="is not a results format"):
            tq.results(batch.batch_id, "csv")
    assert line["response"] is None
    assert line["error"] == {"code": "batch_cancelled", "message": "cancelled: tierq cancel"}
