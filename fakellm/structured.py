"""Answers shaped by `response_format`: a JSON object, or an instance of the request's JSON schema.

A provider that supports structured outputs answers in the format asked for; so does the simulator, with
values taken from the answer it would have given (strings) or from its prompt hash (numbers, booleans,
enum choices), so the same request gets the same JSON. Refusals, empty and truncated answers stay as
they are.
"""

from __future__ import annotations

import json
import math
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
    schema = fmt["json_schema"].get("schema", {})
    return json.dumps(instance(schema, text, seed, 0, schema), ensure_ascii=False)


def instance(schema: Any, text: str, seed: int, depth: int, root: Any = None) -> Any:
    """A value that matches `schema`: type, properties, required, items, min/maxItems, minimum, maximum
    (and their exclusive forms), min/maxLength, enum, const, local $ref and the first of anyOf/oneOf/allOf."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return text
    if isinstance(schema.get("$ref"), str):
        return instance(_resolve(root, schema["$ref"]), text, seed, depth + 1, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    for combined in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combined), list) and schema[combined]:
            return instance(schema[combined][0], text, seed, depth + 1, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        found = schema.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        names = list(properties) + [n for n in schema.get("required", []) if n not in properties]
        return {name: instance(properties.get(name, {}), text, seed + n + 1, depth + 1, root)
                for n, name in enumerate(names)}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        count = min(count, int(schema.get("maxItems", count)))
        return [instance(schema.get("items", {}), text, seed + n, depth + 1, root) for n in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, seed, kind == "integer")
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    value = text.ljust(low, ".")
    return value[: int(high)] if high is not None else value


def _number(schema: dict[str, Any], seed: int, integer: bool) -> int | float:
    """A number inside the schema's bounds (inclusive or exclusive), picked by `seed`."""
    step = 1.0 if integer else 0.1
    low: float | None = None
    high: float | None = None
    if isinstance(schema.get("minimum"), (int, float)):
        low = float(schema["minimum"])
    elif isinstance(schema.get("exclusiveMinimum"), (int, float)):
        low = float(schema["exclusiveMinimum"]) + step
    if isinstance(schema.get("maximum"), (int, float)):
        high = float(schema["maximum"])
    elif isinstance(schema.get("exclusiveMaximum"), (int, float)):
        high = float(schema["exclusiveMaximum"]) - step
    bottom = low if low is not None else (high - 99 if high is not None else 0.0)
    top = high if high is not None else bottom + 99
    if integer:
        first, last = math.ceil(bottom), math.floor(top)
        return first + seed % (last - first + 1) if last >= first else first
    return round(bottom + (seed % 1000) / 999 * (top - bottom), 3) if top >= bottom else bottom


def _resolve(root: Any, ref: str) -> Any:
    """The schema a local reference (`#/$defs/Item`) points at, or {} (any string) for any other."""
    if not ref.startswith("#/") or not isinstance(root, dict):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
