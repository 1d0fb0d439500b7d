"""Request parameters: which ones tierq passes to the model, which ones change the answer, and what
values each accepts (checked at submit, so a bad value is a rejected line, not six failing calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Passed to the chat completions call; anything else in a job's parameters is not sent.
PASSED_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "response_format", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "reasoning_effort",
})

# Part of the cache namespace: two requests that differ in one of these may get different answers.
ANSWER_PARAMS = tuple(sorted(PASSED_PARAMS - {"user"}))

_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
           "frequency_penalty": (-2.0, 2.0)}
MAX_OUTPUT_TOKENS = 10_000_000
FORMATS = ("text", "json_object", "json_schema")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def param_problem(name: str, value: Any) -> str | None:
    """What is wrong with `value` for parameter `name` ("must be ..."), or None when it is fine."""
    if value is None:
        return None
    if name in ("max_tokens", "max_completion_tokens"):
        if not _integer(value) or not 1 <= value <= MAX_OUTPUT_TOKENS:
            return f"must be a positive integer, not {_shown(value)}"
    elif name in _RANGES:
        low, high = _RANGES[name]
        if not _number(value) or not low <= value <= high:
            return f"must be a number from {low:g} to {high:g}, not {_shown(value)}"
    elif name == "seed":
        if not _integer(value):
            return f"must be an integer, not {_shown(value)}"
    elif name == "stop":
        if not (isinstance(value, str) or (isinstance(value, list) and 0 < len(value) <= 4
                                           and all(isinstance(v, str) for v in value))):
            return f"must be a string or a list of up to 4 strings, not {_shown(value)}"
    elif name == "logit_bias":
        if not isinstance(value, dict) or not all(_number(v) and -100 <= v <= 100 for v in value.values()):
            return "must be an object of token ids to numbers from -100 to 100"
    elif name in ("user", "reasoning_effort"):
        if not isinstance(value, str):
            return f"must be a string, not {_shown(value)}"
    elif name == "response_format":
        return _format_problem(value)
    return None


def _format_problem(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in FORMATS:
        return f'must be an object with "type" one of {", ".join(FORMATS)}'
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        return 'of type "json_schema" needs a "json_schema" object (with "name" and "schema")'
    return None


def params_problem(params: Mapping[str, Any], prefix: str = "parameter ") -> str | None:
    """The first invalid parameter of `params`, as `<prefix><name> <problem>`, or None."""
    for name, value in params.items():
        if name in PASSED_PARAMS:
            problem = param_problem(name, value)
            if problem is not None:
                return f"{prefix}{name} {problem}"
    return None
