"""Cost rows as the workers write them: the typed row and the one statement that inserts rows.

The table is `models.call.Call`; a row's fields are its columns, less `created_at` (the server sets it).
Rows carry ids made before the call and are inserted with ON CONFLICT DO NOTHING, so a replayed write adds
nothing. Only SQLAlchemy's core is used here: the workers do not load the ORM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from models.enums import CallOutcome

_BIGINT = {"sql": "bigint"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CostRow:
    """One row of `calls`: a real model call (failed ones too), or a cache hit at zero cost."""

    id: uuid.UUID
    job_id: int = field(metadata=_BIGINT)
    batch_id: uuid.UUID
    attempt: int
    tier: str
    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: Decimal
    saved_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    outcome: CallOutcome
    error: str | None = None
    via_batch: bool = False  # answered through a provider's batch API, at its batch prices


# The annotations are strings (postponed evaluation), so the array type of a column follows from its text.
_SQL_TYPES = {"uuid.UUID": "uuid", "int": "int", "str": "text", "str | None": "text", "bool": "bool",
              "Decimal": "numeric", "CallOutcome": "text"}
_COLUMNS = {f.name: f.metadata.get("sql") or _SQL_TYPES[str(f.type)] for f in fields(CostRow)}
# One statement per chunk, its columns as arrays: an executemany would send one INSERT per row.
_INSERT_CALLS = text(
    f"INSERT INTO calls ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _COLUMNS.items())
    + ") ON CONFLICT (id) DO NOTHING"
)


def _plain(value: Any) -> Any:
    """The value the driver is given: an outcome as its text."""
    return value.value if isinstance(value, CallOutcome) else value


def record_calls(conn: Connection, rows: Iterable[CostRow]) -> None:
    """Insert cost rows; a row whose id is already there (a replayed write) is skipped."""
    values = list(rows)
    if values:
        conn.execute(_INSERT_CALLS, {name: [_plain(getattr(row, name)) for row in values] for name in _COLUMNS})
