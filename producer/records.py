"""Turning input lines into job records, or into rejections that name the line, the field and the problem."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_ID_CHARS = 512


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
        return sum(len(_text(m.get("content"))) for m in self.messages)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that was not accepted, with a reason a person can act on."""

    line: int
    reason: str
    custom_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to the rejects file."""
        return {"line": self.line, "id": self.custom_id, "reason": self.reason}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def parse_jsonl_line(line_no: int, raw: bytes) -> Record | Rejection:
    """Parse one JSONL line of tierq's own format (`prompt` or `messages`, optional `id`, ...)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(line_no, f"line {line_no}: invalid UTF-8 at byte {exc.start}; re-encode the file as UTF-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejection(line_no, f"line {line_no}: malformed JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return Rejection(line_no, f"line {line_no}: JSON nested too deeply")
    if not isinstance(obj, dict):
        return Rejection(line_no, f"line {line_no}: the record is a JSON {type(obj).__name__}, not an object")
    return record_from_object(line_no, obj)


def record_from_object(line_no: int, obj: dict[str, Any]) -> Record | Rejection:
    """Validate a decoded record; the first problem found is the rejection's reason."""
    custom_id = obj.get("id", obj.get("custom_id"))
    if custom_id is None:
        custom_id = str(line_no)
    elif not isinstance(custom_id, (str, int)) or isinstance(custom_id, bool) or str(custom_id) == "":
        return Rejection(line_no, f'line {line_no}: field "id" must be a non-empty string or integer')
    custom_id = str(custom_id)
    if len(custom_id) > MAX_ID_CHARS:
        return Rejection(line_no, f'line {line_no}: field "id" is longer than {MAX_ID_CHARS} characters')
    messages = _messages(line_no, obj)
    if isinstance(messages, Rejection):
        return Rejection(messages.line, messages.reason, custom_id)
    task_type = obj.get("task_type")
    if task_type is not None and (not isinstance(task_type, str) or not task_type.strip()):
        return Rejection(line_no, f'line {line_no}: field "task_type" must be a non-empty string', custom_id)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return Rejection(line_no, f'line {line_no}: field "metadata" must be an object', custom_id)
    return Record(line_no, custom_id, messages, task_type, metadata)


def _messages(line_no: int, obj: dict[str, Any]) -> list[dict[str, Any]] | Rejection:
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            return Rejection(line_no, f'line {line_no}: field "messages" must be a non-empty list')
        for index, message in enumerate(messages):
            problem = _message_problem(message)
            if problem:
                return Rejection(line_no, f'line {line_no}: field "messages[{index}]" {problem}')
        if not any(_text(m.get("content")).strip() for m in messages if m.get("role") == "user"):
            return Rejection(line_no, f'line {line_no}: field "messages" has no user message with text')
        return [dict(m) for m in messages]
    prompt = obj.get("prompt")
    if prompt is None:
        return Rejection(line_no, f'line {line_no}: field "prompt" is missing (give "prompt" or "messages")')
    if not isinstance(prompt, str):
        return Rejection(line_no, f'line {line_no}: field "prompt" must be a string, not {type(prompt).__name__}')
    if not prompt.strip():
        return Rejection(line_no, f'line {line_no}: field "prompt" is empty')
    return [{"role": "user", "content": prompt}]


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
