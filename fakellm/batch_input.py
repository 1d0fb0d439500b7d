"""Validation of a batch's input file: JSONL request lines, as the `validating` status checks them.

A file with any invalid line fails the whole batch (status `failed`, the lines in `errors`); what a
valid line's `body` holds is only checked when the line is answered, by the chat logic, so a bad body is
one HTTP 400 line of the error file, as on OpenAI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True)
class RequestLine:
    """One valid line of an input file."""

    number: int  # 1-based line number in the file
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ParsedInput:
    """The valid lines of an input file, or the errors that fail its batch."""

    lines: list[RequestLine]
    errors: list[dict[str, Any]]
    model: str | None  # the one model every line names, if any does


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    """One entry of a failed batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


def _check_line(number: int, raw: bytes, endpoint: str) -> RequestLine | dict[str, Any]:
    """The request on one non-blank line, or the error that makes it invalid."""
    try:
        item = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _error("invalid_json_line", f"line {number}: not valid UTF-8", number)
    except ValueError as error:
        return _error("invalid_json_line", f"line {number}: not valid JSON ({error})", number)
    if not isinstance(item, dict):
        return _error("invalid_json_line", f"line {number}: expected a JSON object, got {type(item).__name__}", number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        message = f"line {number}: field \"custom_id\" must be a non-empty string, got {custom_id!r}"
        return _error("missing_required_parameter", message, number, "custom_id")
    method = item.get("method")
    if method != "POST":
        message = f"line {number}: field \"method\" must be \"POST\", got {method!r}"
        return _error("invalid_request", message, number, "method")
    url = item.get("url")
    if url != endpoint:
        message = f"line {number}: field \"url\" is {url!r}, but this batch's endpoint is {endpoint!r}"
        return _error("mismatched_endpoint", message, number, "url")
    body = item.get("body")
    if not isinstance(body, dict):
        message = f"line {number}: field \"body\" must be a JSON object, got {type(body).__name__}"
        return _error("invalid_request", message, number, "body")
    return RequestLine(number, custom_id, body)


def parse_input(data: bytes, endpoint: str) -> ParsedInput:
    """Check every line of an input file against the batch's endpoint."""
    lines: list[RequestLine] = []
    errors: list[dict[str, Any]] = []
    first_line_of: dict[str, int] = {}
    model: str | None = None
    model_line = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        checked = _check_line(number, raw, endpoint)
        if isinstance(checked, dict):
            errors.append(checked)
            continue
        if checked.custom_id in first_line_of:
            message = (f"line {number}: custom_id {checked.custom_id!r} is already used on line "
                       f"{first_line_of[checked.custom_id]}; each line needs its own")
            errors.append(_error("duplicate_custom_id", message, number, "custom_id"))
            continue
        first_line_of[checked.custom_id] = number
        named = checked.body.get("model")
        if isinstance(named, str):
            if model is None:
                model, model_line = named, number
            elif named != model:
                message = (f"line {number}: model {named!r} differs from {model!r} on line {model_line}; "
                           "a batch holds requests for one model")
                errors.append(_error("mismatched_model", message, number, "body.model"))
                continue
        lines.append(checked)
    if not lines and not errors:
        errors.append(_error("empty_file", "the input file holds no request lines", None))
    return ParsedInput(lines, errors[:MAX_REPORTED_ERRORS], model)
