"""Answer validators per task type: JSON (optionally against a schema), a regular expression, or a callable.

They run after `judge` found an answer usable; a failure turns the call into outcome `invalid`, which
escalates like a refusal and never reaches the cache. A batch's `--json-schema` (kept in the batch's
params under RESERVED_PARAMS, which is never sent to a model) replaces its task type's validator.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from models.enums import CallOutcome
from tierq.config import RESERVED_PARAMS, Config
from tierq.errors import ConfigError
from tierq.validator_config import ValidatorConfig, import_callable, schema_problem
from workers.llm import CallRecord

# Per-batch schemas compiled and kept per process; more distinct schemas than this start over.
MAX_BATCH_SCHEMAS = 256
MAX_REASON = 500

Test = Callable[[str, list[dict[str, Any]]], str | None]


@dataclass(frozen=True, slots=True)
class AnswerCheck:
    """One compiled validator: `test` returns why an answer is invalid, or None when it passes."""

    name: str
    test: Test
    tiers: frozenset[str] = frozenset()

    def applies(self, tier: str) -> bool:
        """Whether answers given at `tier` are checked (every tier when none are named)."""
        return not self.tiers or tier in self.tiers

    def reason(self, answer: str, messages: list[dict[str, Any]]) -> str | None:
        """Why the answer fails, as a cost-row error ("invalid: ..."), or None."""
        problem = self.test(answer, messages)
        return None if problem is None else f"invalid: {problem}"[:MAX_REASON]


def json_test(schema: dict[str, Any] | None) -> Test:
    """Valid JSON, and an instance of `schema` when one is given."""
    validator = None
    if schema is not None:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)

    def test(answer: str, _: list[dict[str, Any]]) -> str | None:
        try:
            value = json.loads(answer)
        except json.JSONDecodeError as exc:
            return f"answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        if validator is None:
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return None
        at = "/".join(str(p) for p in error.absolute_path) or "the top level"
        return f"answer does not match the JSON schema at {at}: {error.message}"

    return test


def regex_test(pattern: str, flags: int) -> Test:
    """The pattern is found somewhere in the answer (anchor it with ^ and $ to match the whole)."""
    compiled = re.compile(pattern, flags)

    def test(answer: str, _: list[dict[str, Any]]) -> str | None:
        return None if compiled.search(answer) else f"answer does not match the pattern {pattern!r}"

    return test


def callable_test(target: str, where: str) -> Test:
    """A function `f(answer)` or `f(answer, messages)`: True passes; False, a reason string or an exception fails."""
    function = import_callable(target, where)
    try:
        positional = [p for p in inspect.signature(function).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        positional = []
    with_messages = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)

    def test(answer: str, messages: list[dict[str, Any]]) -> str | None:
        try:
            verdict = function(answer, messages) if with_messages else function(answer)
        except Exception as exc:  # the user's code may raise anything; raising is how it says "invalid"
            return f"{target} raised {type(exc).__name__}: {exc}"
        if verdict is True:
            return None
        if isinstance(verdict, str) and verdict:
            return verdict
        if verdict is False or verdict == "":
            return f"{target} rejected the answer"
        return f"{target} returned {type(verdict).__name__}; it must return True, False or a reason string"

    return test


def compile_check(name: str, cfg: ValidatorConfig, source: str) -> AnswerCheck:
    """Build the check a [validators.NAME] table describes (schemas already loaded by the config)."""
    where = f"{source}: validators.{name}"
    tiers = frozenset(cfg.tiers)
    if cfg.kind == "regex":
        assert cfg.pattern is not None  # the config's own validation requires it
        return AnswerCheck(name, regex_test(cfg.pattern, cfg.regex_flags), tiers)
    if cfg.kind == "callable":
        assert cfg.callable is not None
        return AnswerCheck(name, callable_test(cfg.callable, where), tiers)
    schema = cfg.json_schema if isinstance(cfg.json_schema, dict) else None
    return AnswerCheck(name, json_test(schema), tiers)


class Checks:
    """The validators of one configuration by task type, and the per-batch schemas seen so far."""

    def __init__(self, config: Config) -> None:
        self.by_task = {task: compile_check(task, cfg, config.source) for task, cfg in config.validators.items()}
        self._batch: dict[str, AnswerCheck] = {}
        self._lock = threading.Lock()

    def for_job(self, task_type: str | None, params: dict[str, Any]) -> AnswerCheck | None:
        """The batch's schema check when it has one, else the task type's validator, else None."""
        schema = batch_schema(params)
        if schema is None:
            return self.by_task.get(task_type) if task_type is not None else None
        key = hashlib.blake2b(json.dumps(schema, sort_keys=True).encode(), digest_size=16).hexdigest()
        with self._lock:
            check = self._batch.get(key)
            if check is None:
                if len(self._batch) >= MAX_BATCH_SCHEMAS:
                    self._batch.clear()
                check = self._batch[key] = _batch_check(schema)
        return check


def _batch_check(schema: dict[str, Any]) -> AnswerCheck:
    try:
        schema_problem(schema, "the batch's --json-schema")
    except ConfigError as exc:
        # `tierq submit` checks the schema; one that got past it (params set by hand) fails its jobs, clearly.
        problem = str(exc)
        return AnswerCheck("--json-schema", lambda answer, messages: problem)
    return AnswerCheck("--json-schema", json_test(schema))


def batch_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a batch was submitted with (`--json-schema`), if any."""
    options = params.get(RESERVED_PARAMS)
    schema = options.get("json_schema") if isinstance(options, dict) else None
    return schema if isinstance(schema, dict) else None


def validate(record: CallRecord, check: AnswerCheck | None, tier: str, messages: list[dict[str, Any]]) -> None:
    """Turn a usable answer that fails its check into an `invalid` call (which escalates)."""
    if check is None or record.outcome is not CallOutcome.OK or not check.applies(tier):
        return
    reason = check.reason(record.content or "", messages)
    if reason is not None:
        record.outcome, record.error = CallOutcome.INVALID, reason
