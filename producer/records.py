"""Turning input lines into job records, or into rejections that name the line, the field and the problem."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from producer.prompts import PromptSpec
from tierq.messages import content_text

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_ID_CHARS = 512


class RejectKind(StrEnum):
    """Why a record was rejected, as a stable code for scripts (the reason says it for people)."""

    MALFORMED_JSON = "malformed_json"
    NOT_OBJECT = "not_object"
    MISSING_PROMPT = "missing_prompt"
    EMPTY_PROMPT = "empty_prompt"
    INVALID_UTF8 = "invalid_utf8"
    TOO_LONG = "too_long"
    DUPLICATE_ID = "duplicate_id"
    RAGGED_ROW = "ragged_row"
    UNSUPPORTED_URL = "unsupported_url"
    NUL_CHARACTER = "nul_character"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Record:
    """One accepted job."""

    line: int
    custom_id: str
    messages: list[dict[str, Any]]
    task_type: str | None = None
    metadata: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        """Characters of text in the messages (the basis of token estimates)."""
        return sum(len(content_text(m.get("content"))) for m in self.messages)

    def nul_field(self) -> str | None:
        """The first field holding a NUL character, which Postgres text and JSON cannot store."""
        fields = {"id": self.custom_id, "prompt": self.messages, "task_type": self.task_type,
                  "metadata": self.metadata, "params": self.params}
        for name, value in fields.items():
            if _has_nul(value):
                return name
        return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that was not accepted, with a reason a person can act on."""

    line: int
    reason: str
    custom_id: str | None = None
    kind: RejectKind = RejectKind.INVALID

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to the rejects file."""
        return {"line": self.line, "id": self.custom_id, "kind": self.kind.value, "reason": self.reason}


def reject(line_no: int, problem: str, kind: RejectKind = RejectKind.INVALID, custom_id: str | None = None) -> Rejection:
    """A rejection whose reason starts with the line number."""
    return Rejection(line_no, f"line {line_no}: {problem}", custom_id, kind)


def decode_json_line(line_no: int, raw: bytes) -> dict[str, Any] | Rejection:
    """One line as a JSON object, or the rejection that says why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(line_no, f"invalid UTF-8 at byte {exc.start}; re-encode the file as UTF-8", RejectKind.INVALID_UTF8)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return reject(line_no, f"malformed JSON ({exc.msg} at column {exc.colno})", RejectKind.MALFORMED_JSON)
    except RecursionError:
        return reject(line_no, "JSON nested too deeply", RejectKind.MALFORMED_JSON)
    if not isinstance(obj, dict):
        return reject(line_no, f"the record is a JSON {type(obj).__name__}, not an object", RejectKind.NOT_OBJECT)
    return obj


def parse_jsonl_line(line_no: int, raw: bytes, spec: PromptSpec | None = None) -> Record | Rejection:
    """Parse one JSONL line of tierq's own format (`prompt` or `messages`, optional `id`, ...)."""
    obj = decode_json_line(line_no, raw)
    if isinstance(obj, Rejection):
        return obj
    return record_from_object(line_no, obj, spec)


def check_id(line_no: int, value: Any, name: str = "id") -> str | Rejection:
    """The record's id as text (the line number when absent), or why it is unusable."""
    if value is None:
        return str(line_no)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        return reject(line_no, f'field "{name}" must be a non-empty string or integer')
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        return reject(line_no, f'field "{name}" is longer than {MAX_ID_CHARS} characters')
    return text


def record_from_object(line_no: int, obj: dict[str, Any], spec: PromptSpec | None = None) -> Record | Rejection:
    """Validate a decoded record; the first problem found is the rejection's reason."""
    custom_id = check_id(line_no, obj.get("id", obj.get("custom_id")))
    if isinstance(custom_id, Rejection):
        return custom_id
    messages = prompt_messages(line_no, obj, spec or PromptSpec())
    if isinstance(messages, Rejection):
        return Rejection(messages.line, messages.reason, custom_id, messages.kind)
    task_type = obj.get("task_type")
    if task_type is not None and (not isinstance(task_type, str) or not task_type.strip()):
        return reject(line_no, 'field "task_type" must be a non-empty string', custom_id=custom_id)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return reject(line_no, 'field "metadata" must be an object', custom_id=custom_id)
    return Record(line_no, custom_id, messages, task_type, metadata)


def prompt_messages(line_no: int, obj: dict[str, Any], spec: PromptSpec) -> list[dict[str, Any]] | Rejection:
    """The chat messages of a record: built by the template, from `messages`, or from the prompt field."""
    if spec.template is not None:
        built = spec.render(obj)
        if built.problem is not None:
            kind = RejectKind.EMPTY_PROMPT if built.empty else RejectKind.MISSING_PROMPT
            return reject(line_no, built.problem, kind)
        return [{"role": "user", "content": built.text}]
    if spec.field is None and "messages" in obj:
        return check_messages(line_no, obj["messages"])
    name = spec.field or "prompt"
    prompt = obj.get(name)
    if prompt is None:
        hint = "" if spec.field else ' (give "prompt" or "messages")'
        return reject(line_no, f'field "{name}" is missing{hint}', RejectKind.MISSING_PROMPT)
    if not isinstance(prompt, str):
        return reject(line_no, f'field "{name}" must be a string, not {type(prompt).__name__}')
    if not prompt.strip():
        return reject(line_no, f'field "{name}" is empty', RejectKind.EMPTY_PROMPT)
    return [{"role": "user", "content": prompt}]


def check_messages(line_no: int, messages: Any, name: str = "messages") -> list[dict[str, Any]] | Rejection:
    """A validated copy of a chat `messages` list."""
    if not isinstance(messages, list) or not messages:
        kind = RejectKind.EMPTY_PROMPT if messages == [] else RejectKind.INVALID
        return reject(line_no, f'field "{name}" must be a non-empty list', kind)
    for index, message in enumerate(messages):
        problem = _message_problem(message)
        if problem:
            return reject(line_no, f'field "{name}[{index}]" {problem}')
    if not any(content_text(m.get("content")).strip() for m in messages if m.get("role") == "user"):
        return reject(line_no, f'field "{name}" has no user message with text', RejectKind.EMPTY_PROMPT)
    return [dict(m) for m in messages]


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "must be an object with role and content"
    role = message.get("role")
    if role not in ROLES:
        return f"has role {role!r}; use one of {sorted(ROLES)}"
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        return "content must be a string or a list of parts"
    return None
