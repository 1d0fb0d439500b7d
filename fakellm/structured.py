"""Answers shaped by `response_format`: a JSON object, or an instance of the request's JSON schema.

A provider that supports structured outputs answers in the format asked for; so does the simulator, with
values taken from the answer it would have given (strings) or from its prompt hash (numbers, booleans,
enum choices), so the same request gets the same JSON. Refusals, empty and truncated answers stay as
they are.
"""

from __future__ import annotations

import json
from typing import Any

from fakellm.answers import Answer, count_tokens

MAX_DEPTH = 8


def formatted(answer: Answer, fmt: dict[str, Any], seed: int, max_tokens: int | None) -> Answer:
    """The answer in the format asked for (cut at `max_tokens`, as any answer is: then not valid JSON)."""
    content = shaped(answer.content or "", fmt, seed)
    finish = "stop"
    if max_tokens is not None and count_tokens(content) > max_tokens:
        content, finish = content[: max_tokens * 4], "length"
    return Answer(content, None, finish, count_tokens(content))


def shaped(text: str, fmt: dict[str, Any], seed: int) -> str:
    """`text` as the JSON the format asks for."""
    if fmt["type"] == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    return json.dumps(instance(fmt["json_schema"].get("schema", {}), text, seed, 0), ensure_ascii=False)


def instance(schema: Any, text: str, seed: int, depth: int) -> Any:
    """A value that matches `schema` (the common keywords: type, properties, required, items, enum, const)."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    for combined in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combined), list) and schema[combined]:
            return instance(schema[combined][0], text, seed, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        found = schema.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        names = list(properties) + [n for n in schema.get("required", []) if n not in properties]
        return {name: instance(properties.get(name, {}), text, seed + n + 1, depth + 1) for n, name in enumerate(names)}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [instance(schema.get("items", {}), text, seed + n, depth + 1) for n in range(count)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return low + seed % 100
    if kind == "number":
        return float(schema.get("minimum", 0)) + (seed % 1000) / 10
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    return text
