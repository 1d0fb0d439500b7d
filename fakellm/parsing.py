"""Validation of OpenAI-style request bodies into small typed records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULT_DIMENSIONS = 384
FORMATS = ("text", "json_object", "json_schema")  # response_format types
MAX_DIMENSIONS = 8192


class BadRequest(Exception):
    """A request body the simulator rejects with HTTP 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat completion request the simulator uses."""

    model: str
    texts: tuple[str, ...]
    canonical_messages: str
    max_tokens: int | None
    logprobs: bool = False  # the request asked for token log-probabilities
    response_format: dict[str, Any] | None = None  # JSON asked for (fakellm.structured), None for text


@dataclass(frozen=True)
class EmbeddingRequest:
    """The parts of an embeddings request the simulator uses."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int
    encoding_format: str


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"We could not parse the JSON body of your request: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _model(body: dict[str, Any]) -> str:
    """Return the required, non-empty model name."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    return model


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    """Return an optional integer parameter that must be at least 1."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"Invalid '{name}': expected an integer >= 1, got {value!r}.", name)
    return value


def _content_text(content: Any, param: str) -> str:
    """Return the text of a message content given as a string or as parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"Invalid '{param}': expected a string or an array of parts.", param)
    texts: list[str] = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequest(f"Invalid '{param}[{index}]': expected a typed part.", param)
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"Invalid '{param}[{index}].text': expected a string.", param)
            texts.append(text)
    return "".join(texts)


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    """Validate a chat completion request body."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    texts: list[str] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"Invalid '{param}': expected an object with a 'role'.", param)
        texts.append(_content_text(message.get("content"), f"{param}.content"))
    if body.get("stream"):
        raise BadRequest("The simulator does not support 'stream': true.", "stream")
    max_tokens = _positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _positive_int(body, "max_tokens")
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise BadRequest("Invalid 'logprobs': expected a boolean.", "logprobs")
    fmt = _response_format(body)
    if fmt is not None and fmt["type"] == "json_object" and not any("json" in t.casefold() for t in texts):
        # As OpenAI's JSON mode: a model told nothing about JSON may never stop emitting whitespace.
        raise BadRequest("'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                         "'json_object'.", "messages")
    return ChatRequest(model, tuple(texts), canonical, max_tokens, logprobs, fmt)


def parse_embeddings(body: dict[str, Any]) -> EmbeddingRequest:
    """Validate an embeddings request body."""
    model = _model(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'input' must be a string or a non-empty array of strings.", "input")
    for item in inputs:
        if not isinstance(item, str) or not item:
            raise BadRequest("'input' must contain only non-empty strings.", "input")
    dimensions = _positive_int(body, "dimensions") or DEFAULT_DIMENSIONS
    if dimensions > MAX_DIMENSIONS:
        raise BadRequest(f"'dimensions' must be at most {MAX_DIMENSIONS}.", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return EmbeddingRequest(model, tuple(inputs), dimensions, encoding)


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's `response_format` when it asks for JSON (None for text or none), checked."""
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in FORMATS:
        raise BadRequest(f"Invalid 'response_format': expected an object whose 'type' is one of {list(FORMATS)}.",
                         "response_format")
    if value["type"] == "text":
        return None
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(
                spec.get("schema", {}), dict):
            raise BadRequest("Invalid 'response_format.json_schema': expected an object with a 'name' and a "
                             "'schema' object.", "response_format.json_schema")
    return value
