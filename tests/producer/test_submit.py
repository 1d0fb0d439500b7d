"""Submitting files through the Python API against real Postgres, Redis and a worker: bad input loses nothing good."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from conftest import Stack
from sqlalchemy import text

from producer.inputs import ReadOptions
from producer.records import Rejection
from producer.submit import BatchOptions


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
        (5, "missing_prompt", 'line 5: field "prompt" is missing (give "prompt" or "messages")'),
        (6, "empty_prompt", 'line 6: field "prompt" is empty'),
        (7, "invalid_utf8", "line 7: invalid UTF-8 at byte 31; re-encode the file as UTF-8"),
        (8, "too_long", f"line 8: the prompt has {len(too_long)} characters (about {len(too_long) // 4} tokens), more "
                        f"than the largest context window of any configured model ({clean.config.max_context} tokens); "
                        "shorten or split it"),
        (9, "duplicate_id", "line 9: id 'g1' is a duplicate within the batch (first used on line 1); "
                            "give every record its own id"),
    ]
    assert result.rejections == seen
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
