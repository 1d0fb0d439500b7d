"""OpenAI Batch API request files: one `{"custom_id", "method", "url", "body"}` line per chat completion.

The body's `model` is not used (tierq chooses the model by tier); the parameters that change an answer
(temperature, max_tokens, response_format, ...) become the job's parameters. A body parameter tierq
cannot honour is rejected rather than silently dropped, so no job runs differently from what was asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from producer.inputs.records import (
    Overlong,
    Record,
    Rejection,
    RejectKind,
    check_id,
    check_messages,
    decode_json_line,
    reject,
)
from tierq.params import PASSED_PARAMS, param_problem

CHAT_URLS = frozenset({"/v1/chat/completions", "/chat/completions"})
# Sent to the model with every call of the job.
PASSED = PASSED_PARAMS
# Accepted and dropped: they do not change the answer (or tierq decides them).
IGNORED = frozenset({"model", "store", "metadata", "service_tier", "stream_options", "prompt_cache_key",
                     "safety_identifier"})
# Accepted only with their default value.
DEFAULTS: dict[str, Any] = {"stream": False, "n": 1, "logprobs": False}


def read_openai_batch(lines: Iterable[bytes]) -> Iterator[Record | Rejection]:
    """Records of an OpenAI Batch API request file; blank lines are skipped."""
    for line_no, raw in enumerate(lines, start=1):
        if isinstance(raw, Overlong):
            yield reject(line_no, raw.reason, RejectKind.TOO_LONG)
        elif raw.strip():
            obj = decode_json_line(line_no, raw.rstrip(b"\r\n"))
            yield obj if isinstance(obj, Rejection) else batch_request(line_no, obj)


def batch_request(line_no: int, obj: dict[str, Any]) -> Record | Rejection:
    """Validate one request line of a batch file."""
    if obj.get("custom_id") is None:
        return reject(line_no, 'field "custom_id" is missing; every request of a batch file needs one')
    custom_id = check_id(line_no, obj["custom_id"], "custom_id")
    if isinstance(custom_id, Rejection):
        return custom_id
    problem = _request_problem(obj)
    if problem is not None:
        return Rejection(line_no, f"line {line_no}: {problem[0]}", custom_id, problem[1])
    body: dict[str, Any] = obj["body"]
    if "messages" not in body:
        return reject(line_no, 'field "body.messages" is missing', RejectKind.MISSING_PROMPT, custom_id)
    messages = check_messages(line_no, body["messages"], "body.messages")
    if isinstance(messages, Rejection):
        return Rejection(messages.line, messages.reason, custom_id, messages.kind)
    params = _params(body)
    if isinstance(params, str):
        return reject(line_no, params, custom_id=custom_id)
    return Record(line_no, custom_id, messages, params=params)


def _request_problem(obj: dict[str, Any]) -> tuple[str, RejectKind] | None:
    url = obj.get("url")
    if url is None and "body" not in obj and ("response" in obj or "error" in obj):
        return ('an output line of a Batch API run (it has "response" or "error", no "url" and "body"), not a '
                "request; submit the input file the requests came from", RejectKind.INVALID)
    if url not in CHAT_URLS:
        return (f'url {url!r} is not chat completions; tierq runs only "/v1/chat/completions" requests',
                RejectKind.UNSUPPORTED_URL)
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        return f'method {method!r} is not supported; batch requests use "POST"', RejectKind.INVALID
    if not isinstance(obj.get("body"), dict):
        return 'field "body" must be an object with "messages"', RejectKind.INVALID
    return None


def _params(body: dict[str, Any]) -> dict[str, Any] | str:
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key == "messages" or key in IGNORED:
            continue
        if key in PASSED:
            problem = param_problem(key, value)
            if problem is not None:
                return f"body.{key} {problem}"
            params[key] = value
        elif key in DEFAULTS:
            if value is not None and value != DEFAULTS[key]:
                return f'body.{key} = {value!r} is not supported; remove it or set it to {DEFAULTS[key]!r}'
        else:
            return f'body.{key} is not supported by tierq; remove it (supported: {", ".join(sorted(PASSED))})'
    return params
