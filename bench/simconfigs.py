"""Temporary copies of the shipped simulator configuration, with a few settings changed.

The shipped `tierq/configs/sim.toml` is read with tomllib, the changes are applied to the parsed
tables, and the result is written back as TOML, so a benchmark never edits the shipped file and keeps
working when that file gains or reorders entries.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from tierq.config import load_config

SHIPPED = Path(str(resources.files("tierq") / "configs" / "sim.toml"))
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def write_config(path: Path, *, tables: Mapping[str, Mapping[str, Any]] | None = None,
                 tiers: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write sim.toml with `tables` merged into its top-level tables and `tiers` into the named tiers
    (audits off, unless `tables` has a "quality" table that turns them on).

    The copy is loaded with tierq's own loader before it is used, so a bad change fails here.
    """
    data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"), parse_float=Decimal)
    # No audits unless a benchmark asks for them: they re-ask answered jobs at the reference tier, which a
    # benchmark's workers may not serve, and they would add calls to the ones measured.
    data.setdefault("quality", {}).update({"audit_rate": 0, "min_per_stratum": 0})
    for name, changes in (tables or {}).items():
        data.setdefault(name, {}).update(changes)
    for tier in data["tiers"]:
        tier.update((tiers or {}).get(tier["name"], {}))
    path.write_text(dumps(data), encoding="utf-8")
    load_config(path)
    return path


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text of a parsed document (tables, arrays of tables, scalars and lists of scalars)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping) or _is_table_array(v)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested.items():
        sub = [*path, _key(key)]
        if isinstance(value, Mapping):
            if len(value) == 0 or any(not isinstance(v, Mapping) and not _is_table_array(v) for v in value.values()):
                lines += ["", f"[{'.'.join(sub)}]"]  # a table holding only tables needs no header
            _table(lines, sub, value)
        else:
            for item in value:
                lines += ["", f"[[{'.'.join(sub)}]]"]
                _table(lines, sub, item)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    # bool before int: True is an int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
