"""Turning input lines into job records, or into rejections that name the line, the field and the problem."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from producer.inputs.prompts import PromptSpec
from tierq.config import did_you_mean
from tierq.messages import content_text
from tierq.params import PASSED_PARAMS

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_ID_CHARS = 512
MAX_NAME_CHARS = 200  # task types and tenants (their columns)
MAX_DEPTH = 64  # nesting of metadata, messages and parameters
MAX_DIGITS = 100
# The fields of tierq's own JSONL (docs/producer.md). A record with any other field is rejected rather than
# run without it: a misspelt "tasktype" or a "temperature" the format cannot carry would be lost silently.
JSONL_FIELDS = ("id", "custom_id", "prompt", "text", "messages", "task_type", "metadata")


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

    def storage_problem(self) -> tuple[str, str, RejectKind] | None:
        """The first field Postgres could not store as it is (field, problem, kind), or None."""
        fields = {"id": self.custom_id, "prompt": self.messages, "task_type": self.task_type,
                  "metadata": self.metadata, "params": self.params}
        for name, value in fields.items():
            problem = value_problem(value)
            if problem is not None:
                kind = RejectKind.NUL_CHARACTER if "NUL" in problem else RejectKind.INVALID
                return name, problem, kind
        if self.task_type is not None and len(self.task_type) > MAX_NAME_CHARS:
            return "task_type", f"is longer than {MAX_NAME_CHARS} characters", RejectKind.INVALID
        return None


def value_problem(value: Any) -> str | None:
    """Why a decoded value cannot be stored as JSON text in Postgres, or None. Iterative, so no nesting
    depth can exhaust the interpreter's stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            problem = _text_problem(item)
        elif isinstance(item, dict):
            problem = _keys_problem(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            problem = None
            stack.extend((v, depth + 1) for v in item)
        else:
            problem = _scalar_problem(item)
        if problem is not None:
            return problem
    return None


def _keys_problem(mapping: dict[Any, Any]) -> str | None:
    for key in mapping:
        problem = _text_problem(key) if isinstance(key, str) else "has a key that is not a string"
        if problem is not None:
            return problem
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored; remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate (\\u{ord(text[exc.start]):04x}), which is not text; "
                "fix the encoding of the file")
    return None


def _scalar_problem(item: Any) -> str | None:
    if item is None or isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if abs(item) < 10**MAX_DIGITS else f"holds a number with more than {MAX_DIGITS} digits"
    if isinstance(item, float):
        return None if math.isfinite(item) else "holds NaN or Infinity, which JSON cannot store"
    return f"holds a {type(item).__name__}, which is not a JSON value"


class Overlong(bytes):
    """A line longer than the reader's limit, read past without keeping it: its first bytes (to sniff a
    file's format), its length and the limit."""

    size: int
    limit: int

    def __new__(cls, head: bytes, size: int, limit: int) -> Overlong:
        line = super().__new__(cls, head)
        line.size, line.limit = size, limit
        return line

    @property
    def reason(self) -> str:
        """Why the line is rejected (without its line number)."""
        return (f"the line has {self.size:,} bytes, more than the limit of {self.limit:,} (8 bytes per character "
                "of the largest context window); split the record")


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


def reject(
    line_no: int, problem: str, kind: RejectKind = RejectKind.INVALID, custom_id: str | None = None
) -> Rejection:
    """A rejection whose reason starts with the line number."""
    return Rejection(line_no, f"line {line_no}: {problem}", custom_id, kind)


def _malformed(line_no: int, text: str, exc: json.JSONDecodeError) -> Rejection:
    """The rejection of a line the JSON parser stopped on, at the column it names."""
    if text[exc.pos:exc.pos + 1] == "\0":  # a raw NUL byte, as a file of binary garbage or a C string holds
        return reject(line_no, f"a NUL character at column {exc.colno}, which cannot be stored; remove it",
                      RejectKind.NUL_CHARACTER)
    # Some of the parser's messages end in "at" ("Unterminated string starting at"): name the column once.
    message = exc.msg.removesuffix(" at")
    return reject(line_no, f"malformed JSON ({message} at column {exc.colno})", RejectKind.MALFORMED_JSON)


def decode_json_line(line_no: int, raw: bytes) -> dict[str, Any] | Rejection:
    """One line as a JSON object, or the rejection that says why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _invalid_utf8(line_no, raw, exc.start)
    try:
        obj = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return _malformed(line_no, text, exc)
    except _DuplicateKey as exc:
        return reject(line_no, f"the key {json.dumps(exc.key)} appears twice in one JSON object, so which value "
                               "is meant is unclear; keep one", RejectKind.MALFORMED_JSON)
    except RecursionError:
        return reject(line_no, "JSON nested too deeply", RejectKind.MALFORMED_JSON)
    except ValueError as exc:  # NaN or Infinity, or an integer too long to convert
        problem = "a number has more than 4300 digits" if "digits" in str(exc) else str(exc)
        return reject(line_no, f"malformed JSON ({problem})", RejectKind.MALFORMED_JSON)
    if not isinstance(obj, dict):
        return reject(line_no, f"the record is a JSON {type(obj).__name__}, not an object", RejectKind.NOT_OBJECT)
    return obj


def _invalid_utf8(line_no: int, raw: bytes, at: int) -> Rejection:
    """The rejection of a line that is not UTF-8, naming the record's id and the field the bad byte is in
    where the rest of the line still reads as a JSON object."""
    problem = f"invalid UTF-8 at byte {at}; re-encode the file as UTF-8"
    try:  # each undecodable byte becomes a lone surrogate, which marks where it was
        obj = json.loads(raw.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        return reject(line_no, problem, RejectKind.INVALID_UTF8)
    where = undecodable_path(obj)
    if where is not None:
        problem = f'field "{where}" has {problem}'
    given = next((obj[k] for k in ("id", "custom_id") if obj.get(k) is not None), None)
    return reject(line_no, problem, RejectKind.INVALID_UTF8, readable_id(line_no, given))


def readable_id(line_no: int, value: Any) -> str | None:
    """The id of a record with undecodable bytes, as `check_id` gives it, or None when the id is unusable or
    holds such bytes itself (a rejection names no garbled id)."""
    custom_id = check_id(line_no, value)
    return custom_id if isinstance(custom_id, str) and undecodable_path(custom_id) is None else None


def shown_name(name: str) -> str:
    """A name read with "surrogateescape" as printable text: its undecodable bytes escaped (`\\xff`), at most
    100 characters."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:100]


def undecodable_path(value: Any) -> str | None:
    """Where in a value decoded with "surrogateescape" the first undecodable byte is (`body.messages[0].content`;
    "" for the value itself; a key's own bytes count as its value's), or None when it has none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if any("\udc80" <= c <= "\udcff" for c in item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                name = f"{path}.{shown_name(key)}" if path else shown_name(key)
                stack.append((child, name))
                stack.append((key, name))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{n}]") for n, child in reversed(list(enumerate(item))))
    return None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, each once: JSON parsers keep the last of two values for one key, others the first,
    and a record's meaning must not depend on which (`{"prompt": "a", "prompt": "b"}`)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write a number or null")


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
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return reject(line_no, f'field "{name}" must be a non-empty string or integer, not {type(value).__name__}')
    if str(value) == "":
        return reject(line_no, f'field "{name}" is empty')
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        return reject(line_no, f'field "{name}" is longer than {MAX_ID_CHARS} characters')
    return text


def record_from_object(line_no: int, obj: dict[str, Any], spec: PromptSpec | None = None) -> Record | Rejection:
    """Validate a decoded record; the first problem found is the rejection's reason."""
    custom_id = check_id(line_no, obj.get("id", obj.get("custom_id")))
    if isinstance(custom_id, Rejection):
        return custom_id
    spec = spec or PromptSpec()
    unknown = None if spec.field or spec.template else next((k for k in obj if k not in JSONL_FIELDS), None)
    if unknown is not None:
        return reject(line_no, unknown_field(unknown), custom_id=custom_id)
    messages = prompt_messages(line_no, obj, spec)
    if isinstance(messages, Rejection):
        return Rejection(messages.line, messages.reason, custom_id, messages.kind)
    task_type = obj.get("task_type")
    if task_type is not None and not isinstance(task_type, str):
        return reject(line_no, f'field "task_type" must be a string, not {type(task_type).__name__}',
                      custom_id=custom_id)
    if task_type is not None and not task_type.strip():
        return reject(line_no, 'field "task_type" is empty; name a task type or leave it out', custom_id=custom_id)
    if task_type is not None and len(task_type) > MAX_NAME_CHARS:
        return reject(line_no, f'field "task_type" is longer than {MAX_NAME_CHARS} characters', custom_id=custom_id)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return reject(line_no, f'field "metadata" must be an object, not {type(metadata).__name__}',
                      custom_id=custom_id)
    return Record(line_no, custom_id, messages, task_type, metadata)


def unknown_field(name: str) -> str:
    """Why a field that tierq's JSONL does not have rejects the record, and what to do instead."""
    if name in PASSED_PARAMS:
        return (f'field "{name}" is not a field of tierq\'s JSONL, which carries no request parameters; remove it, '
                f'or submit an OpenAI batch request file with "{name}" in its body')
    guess = did_you_mean(name, JSONL_FIELDS)
    fix = (f'{guess} (if not, remove it or move it into "metadata")' if guess else
           f'; remove it or move it into "metadata" (the fields are {", ".join(JSONL_FIELDS)})')
    return f'field "{name}" is not a field of tierq\'s JSONL{fix}'


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
    name = spec.field or ("text" if "prompt" not in obj and "text" in obj else "prompt")
    prompt = obj.get(name)
    if prompt is None:
        hint = "" if spec.field else ' (give "prompt", "text" or "messages")'
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
    if isinstance(content, list):
        for index, part in enumerate(content):
            problem = _part_problem(part)
            if problem is not None:
                return f"content[{index}] {problem}"
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        return f"name must be a string, not {type(name).__name__}"
    return None


# What each kind of content part must carry (the OpenAI chat format).
PART_FIELDS = {"text": "text", "image_url": "image_url", "input_audio": "input_audio", "file": "file",
               "refusal": "refusal"}


def _part_problem(part: Any) -> str | None:
    if not isinstance(part, dict):
        return f'must be an object with a "type", not {type(part).__name__}'
    kind = part.get("type")
    if not isinstance(kind, str) or not kind:
        return 'has no "type" (e.g. "text" or "image_url")'
    field = PART_FIELDS.get(kind)
    if field is None:
        return f'has type {kind!r}; use one of {", ".join(sorted(PART_FIELDS))}'
    value = part.get(field)
    if kind in ("text", "refusal"):
        return None if isinstance(value, str) else f'of type "{kind}" needs "{field}" as a string'
    if kind == "image_url" and isinstance(value, str):
        return None
    if not isinstance(value, dict):
        return f'of type "{kind}" needs "{field}" as an object'
    if kind == "image_url" and not isinstance(value.get("url"), str):
        return 'of type "image_url" needs "image_url.url" as a string'
    return None
