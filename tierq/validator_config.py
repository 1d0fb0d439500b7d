"""The `[validators]` tables of the TOML configuration, and loading what they name: JSON schemas and callables.

The answer checks built from them live in `workers.validators`; `schema_problem` and `import_callable` also
check a batch's `--json-schema` and a quality comparator's callable.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tierq.errors import ConfigError

REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidatorConfig(_Strict):
    """A check the answers of one task type must pass after the usual ones; a failure escalates as `invalid`."""

    kind: Literal["json", "regex", "callable"]
    json_schema: dict[str, Any] | str | None = Field(default=None, alias="schema",
                                                     description="a table, or a JSON file relative to the TOML")
    pattern: str | None = None
    flags: str = Field(default="", pattern=r"^[imsxa]*$", description="letters: i m s x a, as in (?imsxa)")
    callable: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    tiers: tuple[str, ...] = Field(default=(), description="tiers whose answers it checks; default every tier")

    @model_validator(mode="after")
    def _fits_kind(self) -> ValidatorConfig:
        given = {"schema": self.json_schema is not None, "pattern": self.pattern is not None,
                 "callable": self.callable is not None}
        allowed = {"json": {"schema"}, "regex": {"pattern"}, "callable": {"callable"}}[self.kind]
        if self.kind != "json" and not given[next(iter(allowed))]:
            raise ValueError(f"kind = \"{self.kind}\" needs {next(iter(allowed))} = ...")
        extra = sorted(k for k, v in given.items() if v and k not in allowed)
        if extra:
            raise ValueError(f"{', '.join(extra)} does not apply to kind = \"{self.kind}\"; remove it")
        if self.pattern is not None:
            try:
                re.compile(self.pattern, self.regex_flags)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self

    @property
    def regex_flags(self) -> int:
        """The `re` flags the `flags` letters name."""
        value = 0
        for letter in self.flags:
            value |= REGEX_FLAGS[letter]
        return value


def resolve_validators(validators: Mapping[str, ValidatorConfig], source: str) -> dict[str, ValidatorConfig]:
    """Read schema files, check schemas and import callables, so a bad validator stops start-up."""
    resolved: dict[str, ValidatorConfig] = {}
    for task, check in validators.items():
        where = f"{source}: validators.{task}"
        schema = check.json_schema
        if isinstance(schema, str):
            base = Path(source).parent if Path(source).exists() else Path.cwd()
            schema = read_json_schema(base / schema, where)
        elif schema is not None:
            # TOML numbers were read as Decimal; a JSON schema compares them with JSON's floats.
            schema = json.loads(json.dumps(schema, default=float))
            schema_problem(schema, where)
        if check.callable is not None:
            import_callable(check.callable, where)
        resolved[task] = check.model_copy(update={"json_schema": schema})
    return resolved


def read_json_schema(path: Path, where: str) -> dict[str, Any]:
    """A JSON schema from a file, checked against its meta-schema; ConfigError says what to fix."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the JSON schema {path}: {exc.strerror}; check the path") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not valid JSON ({exc}); fix the schema file") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: {path} holds a JSON {type(schema).__name__}, not a schema object")
    schema_problem(schema, where)
    return schema


def schema_problem(schema: dict[str, Any], where: str) -> None:
    """Raise ConfigError when `schema` is not a valid JSON schema of the draft it declares (default 2020-12)."""
    import jsonschema  # here: only a TOML with validators needs it, and it costs 0.1 s to import

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.path) or "the top level"
        raise ConfigError(f"{where}: the JSON schema is invalid at {at}: {exc.message}; fix the schema") from None


def import_callable(target: str, where: str) -> Callable[..., Any]:
    """The function named by "package.module:function"; ConfigError when it cannot be imported."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r} for callable {target!r} ({exc}); "
                          "install it or add its folder to PYTHONPATH") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"{where}: {module_name!r} has no function {attr!r}; check callable = {target!r}")
    return function  # type: ignore[no-any-return]
