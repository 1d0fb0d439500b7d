"""Validation of submitted records: every rejection names the line, the field and the problem."""

from __future__ import annotations

import io

import pytest

from producer.inputs.records import Record, Rejection, RejectKind, decode_json_line
from producer.inputs.stream import read_jsonl


def parse(text: bytes) -> list[Record | Rejection]:
    return list(read_jsonl(io.BytesIO(text)))


def test_prompt_and_messages_records() -> None:
    items = parse(
        b'{"id": "a", "prompt": "hi", "task_type": "triage", "metadata": {"k": 1}}\n'
        b"\n"
        b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    )
    first, second = items
    assert isinstance(first, Record) and first.custom_id == "a" and first.task_type == "triage"
    assert first.messages == [{"role": "user", "content": "hi"}]
    assert isinstance(second, Record) and second.custom_id == "3" and second.line == 3


def test_bad_records_are_rejected_with_reasons() -> None:
    items = parse(
        b'{"prompt": "ok"}\n'
        b"{not json\n"
        b"[1, 2]\n"
        b'{"prompt": ""}\n'
        b'{"id": "x"}\n'
        b'{"prompt": "\xff\xfe"}\n'
        b'{"messages": []}\n'
        b'{"messages": [{"role": "robot", "content": "x"}]}\n'
        b'{"prompt": 5}\n'
    )
    reasons = [i.reason for i in items if isinstance(i, Rejection)]
    assert reasons == [
        "line 2: malformed JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 3: the record is a JSON list, not an object",
        'line 4: field "prompt" is empty',
        'line 5: field "prompt" is missing (give "prompt", "text" or "messages")',
        'line 6: field "prompt" has invalid UTF-8 at byte 12; re-encode the file as UTF-8',
        'line 7: field "messages" must be a non-empty list',
        "line 8: field \"messages[0]\" has role 'robot'; "
        "use one of ['assistant', 'developer', 'system', 'tool', 'user']",
        'line 9: field "prompt" must be a string, not int',
    ]
    assert isinstance(items[0], Record)


def test_malformed_json_names_the_column_once_and_a_raw_nul_as_such() -> None:
    items = parse(
        b'{"id": "a", "prompt": "never closed}\n'
        b'{"id": "b", "prompt": "tab\there"}\n'
        b'{"id": "c", "prompt": "nul \x00 here"}\n'
        b'{"id": "d", "prompt": "fine"}\n'
    )
    assert [(i.kind, i.reason) for i in items if isinstance(i, Rejection)] == [
        (RejectKind.MALFORMED_JSON, "line 1: malformed JSON (Unterminated string starting at column 23)"),
        (RejectKind.MALFORMED_JSON, "line 2: malformed JSON (Invalid control character at column 27)"),
        (RejectKind.NUL_CHARACTER, "line 3: a NUL character at column 28, which cannot be stored; remove it"),
    ]
    assert isinstance(items[-1], Record) and items[-1].custom_id == "d"


def test_a_key_given_twice_rejects_its_record_whichever_object_holds_it() -> None:
    items = parse(
        b'{"id": "a", "prompt": "refund me", "prompt": "cancel my order"}\n'
        b'{"id": "b", "messages": [{"role": "user", "content": "x", "content": "y"}]}\n'
        b'{"id": "c", "prompt": "fine", "metadata": {"k": 1}}\n'
    )
    assert [(i.kind, i.reason) for i in items if isinstance(i, Rejection)] == [
        (RejectKind.MALFORMED_JSON, "line 1: the key \"prompt\" appears twice in one JSON object, so which value is "
                                    "meant is unclear; keep one"),
        (RejectKind.MALFORMED_JSON, "line 2: the key \"content\" appears twice in one JSON object, so which value is "
                                    "meant is unclear; keep one"),
    ]
    assert isinstance(items[-1], Record) and items[-1].custom_id == "c"


def test_jsonl_takes_the_prompt_from_text_when_there_is_no_prompt_field() -> None:
    first, second = parse(b'{"id": "a6", "text": "Where is my parcel?"}\n{"id": "a7", "prompt": "p", "text": "t"}\n')
    assert isinstance(first, Record) and first.messages == [{"role": "user", "content": "Where is my parcel?"}]
    assert isinstance(second, Record) and second.messages == [{"role": "user", "content": "p"}]


def test_a_field_the_format_does_not_have_rejects_its_record_and_only_that_one() -> None:
    items = parse(
        b'{"id": "bad4", "prompt": "x", "temperature": 9}\n'
        b'{"id": "t2", "prompt": "x", "tasktype": "triage"}\n'
        b'{"id": "t3", "prompt": "x", "channel": "mail"}\n'
        b'{"custom_id": "ok", "text": "x", "task_type": "triage", "metadata": {"customer": "acme"}}\n'
    )
    assert [(i.custom_id, i.reason) for i in items if isinstance(i, Rejection)] == [
        ("bad4", "line 1: field \"temperature\" is not a field of tierq's JSONL, which carries no request parameters; "
                 "remove it, or submit an OpenAI batch request file with \"temperature\" in its body"),
        ("t2", "line 2: field \"tasktype\" is not a field of tierq's JSONL; did you mean 'task_type'? (if not, "
               "remove it or move it into \"metadata\")"),
        ("t3", "line 3: field \"channel\" is not a field of tierq's JSONL; remove it or move it into \"metadata\" "
               "(the fields are id, custom_id, prompt, text, messages, task_type, metadata)"),
    ]
    last = items[-1]
    assert isinstance(last, Record) and (last.custom_id, last.task_type) == ("ok", "triage")


def test_a_field_of_the_wrong_type_is_named_with_the_type_it_has() -> None:
    items = parse(
        b'{"id": "a", "prompt": "ok", "task_type": ["triage"]}\n'
        b'{"id": "b", "prompt": "ok", "task_type": " "}\n'
        b'{"id": "c", "prompt": "ok", "metadata": "vip"}\n'
        b'{"id": ["d"], "prompt": "ok"}\n'
        b'{"id": "", "prompt": "ok"}\n'
    )
    # Before, a list was "must be a non-empty string", as if it were empty, and no message named the type.
    assert [i.reason for i in items if isinstance(i, Rejection)] == [
        'line 1: field "task_type" must be a string, not list',
        'line 2: field "task_type" is empty; name a task type or leave it out',
        'line 3: field "metadata" must be an object, not str',
        'line 4: field "id" must be a non-empty string or integer, not list',
        'line 5: field "id" is empty',
    ]


@pytest.mark.parametrize(("raw", "reason", "custom_id"), [
    (b'{"id": "t-42", "prompt": "caf\xe9 au lait"}', 'field "prompt" has invalid UTF-8 at byte 29', "t-42"),
    (b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\xff"}]}',
     'field "messages[1].content" has invalid UTF-8 at byte 78', "4"),
    (b'{"custom_id": "r1", "body": {"messages": [{"role": "user", "content": [{"type": "text", "text": "\xfe"}]}]}}',
     'field "body.messages[0].content[0].text" has invalid UTF-8 at byte 97', "r1"),
    # The id itself cannot be read, so the rejection has none rather than a garbled one.
    (b'{"id": "t\xff", "prompt": "ok"}', 'field "id" has invalid UTF-8 at byte 9', None),
    # A key's bad byte is shown escaped: the reason itself must be text.
    (b'{"pro\xffmpt": "ok"}', 'field "pro\\xffmpt" has invalid UTF-8 at byte 5', "4"),
    # Outside any string the line is no JSON object to name a field of.
    (b'{"prompt": "ok" \xff}', "invalid UTF-8 at byte 16", None),
    (b'["\xff"]', "invalid UTF-8 at byte 2", None),
])
def test_a_line_that_is_not_utf8_names_the_field_and_the_record(raw: bytes, reason: str, custom_id: str | None) -> None:
    rejection = decode_json_line(4, raw)
    assert isinstance(rejection, Rejection) and rejection.kind == RejectKind.INVALID_UTF8
    assert rejection.reason == f"line 4: {reason}; re-encode the file as UTF-8"
    assert rejection.custom_id == custom_id
    rejection.reason.encode("utf-8")  # storable and printable as it is
