"""Submitting files through the Python API against real Postgres, Redis and a worker: bad input loses nothing good."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import Stack
from sqlalchemy import text

from producer.api import Tierq
from producer.inputs.records import Rejection
from producer.inputs.stream import ReadOptions
from producer.submit import BatchOptions, PartialSubmission


def write(path: Path, lines: Sequence[bytes | str]) -> Path:
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def test_every_kind_of_bad_record_is_reported_and_every_good_one_runs(clean: Stack, tmp_path: Path) -> None:
    too_long = "x" * (clean.config.max_context * 4 + 1)
    path = write(tmp_path / "tickets.jsonl", [
        json.dumps({"id": "g1", "prompt": "Where is my parcel?"}),
        "{not json",
        json.dumps({"id": "g2", "prompt": "Can I pay in instalments?", "task_type": "billing"}),
        "[1, 2]",
        json.dumps({"id": "nothing"}),
        json.dumps({"id": "blank", "prompt": "   "}),
        b'{"id": "latin1", "prompt": "caf\xe9"}',
        json.dumps({"id": "huge", "prompt": too_long}),
        json.dumps({"id": "g1", "prompt": "The same id again"}),
        "",
        json.dumps({"id": "g3", "messages": [{"role": "user", "content": "Do you ship to Norway?"}]}),
    ])
    seen: list[Rejection] = []
    with clean.client() as tq:
        result = tq.submit(path, BatchOptions(tenant="acme"), on_reject=seen.append)
        status = clean.wait(tq, result.batch_id)
        results = {r["id"]: r for r in tq.results(result.batch_id)}
    assert (result.accepted, result.rejected, result.format) == (3, 7, "jsonl")
    assert [(r.line, r.kind.value, r.reason) for r in seen] == [
        (2, "malformed_json", "line 2: malformed JSON (Expecting property name enclosed in double quotes at column 2)"),
        (4, "not_object", "line 4: the record is a JSON list, not an object"),
        (5, "missing_prompt", 'line 5: field "prompt" is missing (give "prompt", "text" or "messages")'),
        (6, "empty_prompt", 'line 6: field "prompt" is empty'),
        (7, "invalid_utf8", 'line 7: field "prompt" has invalid UTF-8 at byte 31; re-encode the file as UTF-8'),
        (8, "too_long", f"line 8: the prompt has {len(too_long)} characters (about {len(too_long) // 4} tokens), more "
                        f"than the largest context window of any configured model ({clean.config.max_context} tokens); "
                        "shorten or split it"),
        (9, "duplicate_id", "line 9: id 'g1' is a duplicate within the batch (first used on line 1); "
                            "give every record its own id"),
    ]
    assert result.rejections == seen
    assert {r.reason.split(":")[0]: r.custom_id for r in seen if r.kind.value == "invalid_utf8"} == {"line 7": "latin1"}
    assert result.rejected_by_kind == {k: 1 for k in ("malformed_json", "not_object", "missing_prompt", "empty_prompt",
                                                      "invalid_utf8", "too_long", "duplicate_id")}
    assert (status.total, status.rejected, status.count_final()) == (3, 7, 3)
    assert {k: (r["status"], r["content"] is not None) for k, r in results.items()} == {
        "g1": ("succeeded", True), "g2": ("succeeded", True), "g3": ("succeeded", True)}
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT custom_id, seq, tenant, task_type FROM jobs ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [("g1", 1, "acme", "default"), ("g2", 3, "acme", "billing"),
                                        ("g3", 11, "acme", "default")]


def test_a_large_file_goes_in_bulk_inserts_and_one_classify_message_per_chunk(clean: Stack, tmp_path: Path) -> None:
    chunk = clean.config.worker.classify_chunk
    count = 2 * chunk + 100
    path = write(tmp_path / "big.csv", ["id,text"] + [f"t{n},Ticket {n}: my parcel is late" for n in range(count)])
    with clean.client() as tq:
        result = tq.submit(path, BatchOptions(force_tier="hot"), read=ReadOptions(format="auto"))
        clean.wait(tq, result.batch_id, timeout=120)
    assert (result.accepted, result.rejected, result.format) == (count, 0, "csv")
    with clean.engine.connect() as conn:
        # The classify step records the message that routed each job as the job's `handoff_from`.
        per_message = sorted(n for (n,) in conn.execute(text("SELECT count(*) FROM jobs GROUP BY handoff_from")))
        states = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
    assert per_message == [100, chunk, chunk]
    assert states == {"succeeded": count}


def test_submitting_python_objects_and_a_stream(clean: Stack, tmp_path: Path) -> None:
    with clean.client() as tq:
        from_objects = tq.submit(["Where is my parcel?", {"id": "x", "prompt": "Refund please"}, 42])
        with open(write(tmp_path / "a.jsonl", ['{"prompt": "hello"}']), "rb") as stream:
            from_stream = tq.submit(stream)
    assert (from_objects.accepted, from_objects.rejected) == (2, 1)
    assert from_objects.rejections[0].reason == "record 3: a int, not a dict or a string"
    assert (from_stream.accepted, from_stream.format) == (1, "jsonl")


def test_values_postgres_cannot_store_are_rejected_lines_not_a_crash(clean: Stack, tmp_path: Path) -> None:
    deep = '{"a": ' * 450 + "1" + "}" * 450
    path = write(tmp_path / "odd.jsonl", [
        json.dumps({"id": "g1", "prompt": "Where is my parcel?"}),
        '{"id": "nan", "prompt": "hi", "metadata": {"score": NaN}}',
        '{"id": "inf", "prompt": "hi", "metadata": {"score": -Infinity}}',
        '{"id": "surrogate", "prompt": "bad \\ud800 text"}',
        '{"id": "bigint", "prompt": "hi", "metadata": {"n": ' + "9" * 5000 + "}}",
        '{"id": "deep", "prompt": "hi", "metadata": ' + deep + "}",
        json.dumps({"id": "type", "prompt": "hi", "task_type": "t" * 201}),
        json.dumps({"id": "g2", "prompt": "Refund please"}),
    ])
    with clean.client() as tq:
        result = tq.submit(path)
        status = clean.wait(tq, result.batch_id)
    reasons = [r.reason for r in result.rejections]
    assert reasons == [
        "line 2: malformed JSON (NaN is not valid JSON; write a number or null)",
        "line 3: malformed JSON (-Infinity is not valid JSON; write a number or null)",
        'line 4: field "prompt" contains a lone surrogate (\\ud800), which is not text; fix the encoding of the file',
        "line 5: malformed JSON (a number has more than 4300 digits)",
        'line 6: field "metadata" is nested deeper than 64 levels',
        'line 7: field "task_type" is longer than 200 characters',
    ]
    assert (result.accepted, status.total, status.rejected, status.by_status) == (2, 2, 6, {"succeeded": 2})


def test_request_parameters_are_checked_at_submit(clean: Stack, tmp_path: Path) -> None:
    def request(custom_id: str, **body: object) -> str:
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                           "body": {"messages": [{"role": "user", "content": "Where is my parcel?"}], **body}})

    path = write(tmp_path / "batch.jsonl", [
        request("ok", max_tokens=50, temperature=0.2),
        request("words", max_tokens="lots"),
        request("list", max_tokens=[1]),
        request("negative", max_completion_tokens=-5),
        request("hot", temperature=7),
        request("format", response_format={"type": "yaml"}),
        json.dumps({"custom_id": "parts", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": [1, "two"]}]}}),
    ])
    with clean.client() as tq:
        result = tq.submit(path)
    assert result.accepted == 1
    assert [r.reason for r in result.rejections] == [
        "line 2: body.max_tokens must be a positive integer, not 'lots'",
        "line 3: body.max_tokens must be a positive integer, not [1]",
        "line 4: body.max_completion_tokens must be a positive integer, not -5",
        "line 5: body.temperature must be a number from 0 to 2, not 7",
        'line 6: body.response_format must be an object with "type" one of text, json_object, json_schema',
        'line 7: field "body.messages[0]" content[0] must be an object with a "type", not int',
    ]


def test_a_submission_that_stops_half_way_names_its_batch_and_what_it_holds(clean: Stack) -> None:
    def records() -> Iterator[dict[str, str]]:
        for n in range(85):
            yield {"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"}
        raise OSError("the network drive went away")

    small = clean.config.model_copy(update={"worker": clean.config.worker.model_copy(update={"classify_chunk": 10})})
    with Tierq(clean.settings, small) as tq:
        with pytest.raises(PartialSubmission) as stopped:
            tq.submit(records())
        batch = str(stopped.value).split()[1]
        status = clean.wait(tq, batch)
    assert str(stopped.value) == (
        f"batch {batch} is partial: 80 jobs accepted (they run), 0 rejected; the submission stopped: OSError: the "
        "network drive went away. Submit the rest of the file (after line 80) as a new batch")
    assert (status.total, status.by_status) == (80, {"succeeded": 80})
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT submit_error, submitted_at FROM batches")).one() == (
            "OSError: the network drive went away", None)
