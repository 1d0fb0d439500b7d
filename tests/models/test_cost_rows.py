"""The typed cost row the workers write matches the `calls` table."""

from __future__ import annotations

from dataclasses import fields

from models.call import Call
from models.costs import CostRow


def test_a_cost_row_has_every_column_the_server_does_not_set() -> None:
    columns = [c.name for c in Call.__table__.columns if c.server_default is None]
    assert [f.name for f in fields(CostRow)] == columns
