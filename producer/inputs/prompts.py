"""Where a record's prompt comes from: a field (column) of its own, or a template over several fields."""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierq.errors import InputError


@dataclass(frozen=True, slots=True)
class Built:
    """A prompt built from a template, or the problem that stopped it."""

    text: str = ""
    problem: str | None = None
    empty: bool = False


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """`field` names the prompt's field or column; `template` ("Summarise: {text}") builds it from several."""

    field: str | None = None
    template: str | None = None
    _parts: tuple[tuple[str, str | None], ...] = dataclasses.field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.template is not None:
            object.__setattr__(self, "_parts", parse_template(self.template))

    @property
    def fields(self) -> list[str]:
        """The field names the template uses, in order of first use."""
        names: list[str] = []
        for _, name in self._parts:
            if name is not None and name not in names:
                names.append(name)
        return names

    def check_columns(self, columns: Sequence[str]) -> None:
        """Fail before reading any row when the template or the prompt field names a column the file lacks."""
        wanted = self.fields if self.template is not None else [self.field] if self.field else []
        missing = [name for name in wanted if name not in columns]
        if missing:
            option = "--template" if self.template is not None else "--prompt-field"
            raise InputError(f"{option} uses column {missing[0]!r}, which the file does not have; "
                             f"its columns are {', '.join(columns)}")

    def render(self, values: Mapping[str, Any]) -> Built:
        """The prompt for one record; a field that is missing or blank is a problem (no half-built prompts)."""
        pieces: list[str] = []
        for literal, name in self._parts:
            pieces.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if value is None:
                return Built(problem=f'field "{name}" used by --template is missing')
            # A JSONL field that is no string goes in as JSON (true, {"a": 1}), not as Python writes it.
            # JSON's own values as JSON; anything else (a library caller's date or Decimal) as str() writes it.
            native = isinstance(value, (bool, int, float, list, dict))
            text = json.dumps(value, ensure_ascii=False, default=str) if native else str(value)
            if not text.strip():
                return Built(problem=f'field "{name}" used by --template is empty', empty=True)
            pieces.append(text)
        return Built("".join(pieces))


def parse_template(template: str) -> tuple[tuple[str, str | None], ...]:
    """Split a template into (literal, field) pairs; only plain `{name}` fields are allowed."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"--template {template!r} is not a valid template ({exc}); write fields as {{name}} "
                         "and literal braces as {{ and }}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (not (name.isidentifier() or _is_column(name)) or spec or conversion):
            raise InputError(f"--template field {{{name}}} is not a plain field name; write it as {{column}}")
        parts.append((literal, name))
    if not any(name for _, name in parts):
        raise InputError(f"--template {template!r} uses no field; write the column to insert as {{text}}")
    return tuple(parts)


def _is_column(name: str) -> bool:
    # CSV headers are often "Ticket Text" or "body-text"; allow them, but nothing that formats or indexes.
    return bool(name.strip()) and not any(ch in name for ch in ".[]!:{}")
