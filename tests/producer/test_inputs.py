"""Reading every input format: detection, CSV, templates, OpenAI batch request files, and every bad record."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from producer.inputs.prompts import PromptSpec
from producer.inputs.records import Record, Rejection, RejectKind
from producer.inputs.stream import LineSource, detect_format, from_objects, read_records
from tierq.errors import InputError


def read(data: bytes, fmt: str = "auto", spec: PromptSpec | None = None) -> tuple[str, list[Record | Rejection]]:
    chosen, items = read_records(LineSource(io.BytesIO(data)), fmt, spec)
    return chosen, list(items)


def reasons(items: list[Record | Rejection]) -> list[tuple[str, str]]:
    return [(i.kind.value, i.reason) for i in items if isinstance(i, Rejection)]


def prompts(items: list[Record | Rejection]) -> dict[str, str]:
    return {i.custom_id: i.messages[-1]["content"] for i in items if isinstance(i, Record)}


def batch_line(custom_id: Any, url: str = "/v1/chat/completions", **body: Any) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {custom_id}"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b'{"prompt": "hi"}', "jsonl"),
        (b'  {"custom_id": "a", "body": {}, "url": "/v1/chat/completions"}', "openai"),
        (b'{"custom_id": "a", "prompt": "no body, so tierq JSONL"}', "jsonl"),
        (b"{not json", "jsonl"),
        (b"id,text", "csv"),
        (b"text", "csv"),
        (None, "jsonl"),
    ],
)
def test_the_format_is_told_by_the_first_line(first: bytes | None, expected: str) -> None:
    assert detect_format(first) == expected


def test_detection_skips_blank_lines_and_a_byte_order_mark_and_loses_no_line() -> None:
    fmt, items = read(b"\xef\xbb\xbf\n\nid,prompt\nA,first\n\nB,second\n")
    assert fmt == "csv"
    assert prompts(items) == {"A": "first", "B": "second"}
    assert [i.line for i in items] == [4, 6]


def test_a_broken_first_line_does_not_decide_the_format_of_the_lines_after_it() -> None:
    # An OpenAI batch file whose first request was broken was read as tierq's JSONL, which rejected every
    # good request after it ("field "method" is not a field of tierq's JSONL").
    requests = "\n".join(batch_line(f"r{n}") for n in range(2, 5)).encode()
    fmt, items = read(b'{"custom_id": "r1", "method": "POST", "body": {"messages": [\n\n' + requests + b"\n")
    assert fmt == "openai"
    assert sorted(prompts(items)) == ["r2", "r3", "r4"]
    assert reasons(items) == [("malformed_json", "line 1: malformed JSON (Expecting value at column 61)")]
    fmt, items = read(b'{"id": "a", "prompt": "never closed\n{"id": "b", "prompt": "fine"}\n')
    assert (fmt, list(prompts(items))) == ("jsonl", ["b"])
    # Nothing after it is JSON: tierq's JSONL, as before, every line a rejection of its own.
    fmt, items = read(b'{"id": "a", "prompt": "never closed\n{oops\n')
    assert fmt == "jsonl" and [i.line for i in items] == [1, 2]
    # A first line that is no JSON at all, before JSON objects, was a CSV header and stopped the whole file.
    fmt, items = read(b'exported 2026-11-30\n' + requests + b"\n")
    assert fmt == "openai" and sorted(prompts(items)) == ["r2", "r3", "r4"]
    assert reasons(items) == [("malformed_json", "line 1: malformed JSON (Expecting value at column 1)")]
    fmt, items = read(b'[1, 2]\n{"id": "b", "prompt": "fine"}\n')
    assert fmt == "jsonl" and list(prompts(items)) == ["b"] and reasons(items)[0][0] == "not_object"
    # A CSV stays a CSV, its rows JSON-looking or not.
    fmt, items = read(b'prompt\n"{""a"": 1}"\nplain\n')
    assert fmt == "csv" and [i.messages[-1]["content"] for i in items if isinstance(i, Record)] == [
        '{"a": 1}', "plain"]


def test_csv_rows_become_jobs_with_metadata_from_the_other_columns() -> None:
    fmt, items = read(b'id,text,customer,task_type\nt1,"Where is, my parcel?",acme,triage\nt2,"two\nlines",bolt,\n')
    first, second = items
    assert fmt == "csv"
    assert isinstance(first, Record) and isinstance(second, Record)
    assert first.messages == [{"role": "user", "content": "Where is, my parcel?"}]
    assert (first.custom_id, first.task_type, first.metadata) == ("t1", "triage", {"customer": "acme"})
    assert (second.line, second.task_type, second.messages[0]["content"]) == (3, None, "two\nlines")


def test_csv_delimiter_is_sniffed_from_the_header() -> None:
    _, items = read(b"id;prompt\n1;Bonjour, o\xc3\xb9 est mon colis ?\n")
    assert prompts(items) == {"1": "Bonjour, où est mon colis ?"}
    _, items = read(b"id\tprompt\n1\tHello, world\n")
    assert prompts(items) == {"1": "Hello, world"}


def test_csv_prompt_column_and_template() -> None:
    data = b"ticket,subject,body\nT-1,Late parcel,It has not arrived.\nT-2,Refund,\n"
    _, items = read(data, spec=PromptSpec(field="body"))
    assert prompts(items) == {"2": "It has not arrived."}
    assert reasons(items) == [("empty_prompt", 'line 3: column "body" is empty')]
    _, items = read(data, spec=PromptSpec(template="Summarise this ticket ({ticket}): {subject}. {body}"))
    assert prompts(items) == {"2": "Summarise this ticket (T-1): Late parcel. It has not arrived."}
    assert reasons(items) == [("empty_prompt", 'line 3: column "body" used by --template is empty')]


def test_csv_bad_rows_are_rejected_with_their_physical_line() -> None:
    data = (
        b"id,text\n"
        b'1,"a quoted\nfield on two lines"\n'
        b"2,ok\n"
        b"3,too,many\n"
        b"4\n"
        b"5,\xff\xfe not utf-8\n"
        b"6,\n"
        b"\n"
        b"7,fine\n"
    )
    _, items = read(data)
    assert prompts(items) == {"1": "a quoted\nfield on two lines", "2": "ok", "7": "fine"}
    assert [i.line for i in items if isinstance(i, Record)] == [2, 4, 10]
    assert reasons(items) == [
        ("ragged_row", "line 5: row has 3 fields, the header has 2"),
        ("ragged_row", "line 6: row has 1 fields, the header has 2"),
        ("invalid_utf8", 'line 7: column "text" has invalid UTF-8 at byte 2; re-encode the file as UTF-8'),
        ("empty_prompt", 'line 8: column "text" is empty'),
    ]
    assert [i.custom_id for i in items if isinstance(i, Rejection) and i.kind == RejectKind.INVALID_UTF8] == ["5"]


def test_csv_problems_with_the_whole_file_stop_before_anything_is_read() -> None:
    with pytest.raises(InputError, match=r'no "prompt" or "text" column; choose .* --prompt-field .*\(columns: a, b\)'):
        read(b"a,b\n1,2\n")
    with pytest.raises(InputError, match="names column 'id' twice"):
        read(b"id,text,id\n1,2,3\n")
    with pytest.raises(InputError, match="--prompt-field uses column 'body', which the file does not have"):
        read(b"id,text\n1,2\n", spec=PromptSpec(field="body"))
    with pytest.raises(InputError, match="--template uses column 'name'"):
        read(b"id,text\n1,2\n", spec=PromptSpec(template="Dear {name}: {text}"))


@pytest.mark.parametrize("template", ["{a.b}", "{x[0]}", "{}", "{x!r}", "{x:>10}", "no fields", "{unclosed"])
def test_templates_are_plain_fields_only(template: str) -> None:
    with pytest.raises(InputError, match="--template"):
        PromptSpec(template=template)


def test_jsonl_prompt_field_and_template() -> None:
    data = (
        b'{"id": "a", "body": "hello", "who": "Ann"}\n{"id": "b", "who": "Bo"}\n{"id": "c", "body": " ", "who": "Cy"}\n'
    )
    _, items = read(data, spec=PromptSpec(field="body"))
    assert prompts(items) == {"a": "hello"}
    assert reasons(items) == [("missing_prompt", 'line 2: field "body" is missing'),
                              ("empty_prompt", 'line 3: field "body" is empty')]
    _, items = read(data, spec=PromptSpec(template="{who} asks: {body}"))
    assert prompts(items) == {"a": "Ann asks: hello"}
    assert reasons(items) == [("missing_prompt", 'line 2: field "body" used by --template is missing'),
                              ("empty_prompt", 'line 3: field "body" used by --template is empty')]
    # Fields that are no strings were written as Python writes them: True, {'qty': 2}.
    _, items = read(b'{"id": "d", "n": 7, "ok": true, "item": {"sku": "\\u00e9-1", "qty": 2.5}, "tags": ["a"]}\n',
                    spec=PromptSpec(template="{n} {ok} {item} {tags}"))
    assert prompts(items) == {"d": '7 true {"sku": "\u00e9-1", "qty": 2.5} ["a"]'}
    # A library caller's values JSON has no form for go in as str() writes them.
    built = list(from_objects([{"id": "o", "text": "hi", "when": date(2026, 12, 1), "n": Decimal("2.50")}],
                              PromptSpec(template="{text} {when} {n}")))
    assert prompts(built) == {"o": "hi 2026-12-01 2.50"}


def test_openai_batch_requests_keep_their_parameters_but_not_the_model() -> None:
    data = "\n".join([
        batch_line("r1", temperature=0.2, max_tokens=64, response_format={"type": "json_object"}, store=False),
        batch_line("r2", url="/chat/completions", stream=False, n=1),
    ]).encode()
    fmt, items = read(data)
    assert fmt == "openai"
    first, second = items
    assert isinstance(first, Record) and isinstance(second, Record)
    assert first.custom_id == "r1" and first.messages == [{"role": "user", "content": "question r1"}]
    assert first.params == {"temperature": 0.2, "max_tokens": 64, "response_format": {"type": "json_object"}}
    assert second.params == {}


def test_openai_batch_bad_lines() -> None:
    lines = [
        batch_line("ok"),
        batch_line("emb", url="/v1/embeddings"),
        batch_line("resp", url="/v1/responses"),
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}),
        json.dumps({"custom_id": "get", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
        json.dumps({"custom_id": "nobody", "method": "POST", "url": "/v1/chat/completions"}),
        json.dumps({"custom_id": "nomsg", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "x"}}),
        batch_line("stream", stream=True),
        batch_line("tools", tools=[{"type": "function"}]),
        json.dumps({"custom_id": "empty", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}),
        "[1]",
        json.dumps({"id": "batch_req_1", "custom_id": "out", "response": {"status_code": 200}, "error": None}),
    ]
    fmt, items = read("\n".join(lines).encode(), fmt="openai")
    assert fmt == "openai"
    assert prompts(items) == {"ok": "question ok"}
    assert reasons(items) == [
        (
            "unsupported_url",
            "line 2: url '/v1/embeddings' is not chat completions; tierq runs only \"/v1/chat/completions\" requests",
        ),
        (
            "unsupported_url",
            "line 3: url '/v1/responses' is not chat completions; tierq runs only \"/v1/chat/completions\" requests",
        ),
        ("invalid", 'line 4: field "custom_id" is missing; every request of a batch file needs one'),
        ("invalid", "line 5: method 'GET' is not supported; batch requests use \"POST\""),
        ("invalid", 'line 6: field "body" must be an object with "messages"'),
        ("missing_prompt", 'line 7: field "body.messages" is missing'),
        ("invalid", "line 8: body.stream = True is not supported; remove it or set it to False"),
        (
            "invalid",
            "line 9: body.tools is not supported by tierq; remove it (supported: frequency_penalty, logit_bias, "
            "max_completion_tokens, max_tokens, presence_penalty, reasoning_effort, response_format, seed, stop, "
            "temperature, top_p, user)",
        ),
        ("empty_prompt", 'line 10: field "body.messages" must be a non-empty list'),
        ("not_object", "line 11: the record is a JSON list, not an object"),
        ("invalid", 'line 12: an output line of a Batch API run (it has "response" or "error", no "url" and "body"), '
                    "not a request; submit the input file the requests came from"),
    ]


def test_prompt_options_do_not_apply_to_openai_batch_files() -> None:
    with pytest.raises(InputError, match="--prompt-field and --template apply to JSONL and CSV"):
        read(batch_line("a").encode(), spec=PromptSpec(field="text"))


def test_line_source_counts_bytes_for_the_progress_bar() -> None:
    source = LineSource(io.BytesIO(b'{"prompt": "a"}\n{"prompt": "b"}\n'))
    _, items = read_records(source)
    assert len(list(items)) == 2
    assert (source.lines, source.bytes, source.size) == (2, 32, None)


def test_every_rejection_kind_has_a_code() -> None:
    assert {k.value for k in RejectKind} >= {
        "malformed_json", "not_object", "missing_prompt", "empty_prompt", "invalid_utf8", "too_long",
        "duplicate_id", "ragged_row", "unsupported_url",
    }


def test_a_binary_file_is_named_as_such() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    with pytest.raises(InputError, match="not a JSONL, CSV or OpenAI batch file: it looks like a PNG image"):
        read_records(LineSource(io.BytesIO(png)))
    with pytest.raises(InputError, match="it looks like binary data"):
        read_records(LineSource(io.BytesIO(b"\x00\x01\x02\x03" * 100)))
    with pytest.raises(InputError) as caught:
        read_records(LineSource(io.BytesIO(gzip.compress(b'{"prompt": "hi"}\n'))))
    assert str(caught.value).endswith("it looks like gzip data (decompress it first: zcat FILE | tierq submit -)")


def test_an_unclosed_csv_quote_names_the_line_where_it_opened() -> None:
    _, items = read(b'id,text,x\n1,"hello,2\n2,world,3\n3,ok,4\n', "auto")
    [problem] = items
    assert isinstance(problem, Rejection) and problem.reason.startswith(
        "line 2: a quoted field that starts on this line is never closed; the 2 lines after it were read into it")


def test_an_unclosed_csv_quote_is_rejected_even_when_the_fields_it_swallowed_add_up() -> None:
    # The last field swallows the rest of the file: as many fields as the header, and it used to be accepted.
    _, items = read(b'id,text,body\n1,Hi,"broken\n2,Hello,World,extra\n3,,\n', "auto")
    [problem] = items
    assert isinstance(problem, Rejection) and problem.reason == (
        'line 2: a quoted field that starts on this line is never closed; the 2 lines after it were read into it. '
        'Close the quote, or write a quote inside a field as two ("")')
    # A quoted field over several lines that does close is a field like any other, at the end of a file too.
    for tail in (b"\n", b""):
        _, items = read(b'id,text\n1,"two\nlines"\n2,"three\nmore\nlines"' + tail, "auto")
        assert [item.messages[0]["content"] for item in items if isinstance(item, Record)] == [
            "two\nlines", "three\nmore\nlines"], items


def test_an_overlong_line_is_rejected_while_read_in_constant_memory() -> None:
    big = b'{"prompt": "' + b"x" * 5_000_000 + b'"}\n'
    ok = b'{"prompt": "fine"}\n'
    source = LineSource(io.BytesIO(ok + big + ok), max_line_bytes=1_000_000)
    tracemalloc.start()
    _, items = read_records(source)
    found = list(items)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [type(i).__name__ for i in found] == ["Record", "Rejection", "Record"]
    assert isinstance(found[1], Rejection) and found[1].reason == (
        "line 2: the line has 5,000,015 bytes, more than the limit of 1,000,000 (8 bytes per character of the "
        "largest context window); split the record")
    assert peak < 4_000_000  # the 5 MB line was never held whole
    csv_source = LineSource(
        io.BytesIO(b"id,text\n1,ok\n2," + b"y" * 3_000_000 + b"\n3,fine\n"), max_line_bytes=1_000_000
    )
    rows = list(read_records(csv_source)[1])
    assert [getattr(r, "line", None) for r in rows] == [2, 3, 4] and isinstance(rows[1], Rejection)
    assert rows[1].reason.startswith("line 3: the line has 3,000,003 bytes")
