"""``column IN (ids…)`` with the ids as one bound value, for bulk readers' batches.

An expanding ``IN`` renders one placeholder per id, so each batch size is a
new statement to compile and cache. Here the list is one parameter whatever
its length: an array compared with ``= ANY`` on PostgreSQL, a JSON array read
by ``json_each`` on SQLite; the statement compiles once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import ARRAY, String, bindparam, func, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement


def among(dialect: Dialect, column: ColumnElement[str], ids: Sequence[str], *, name: str = "ids") -> ColumnElement[bool]:
    """``column`` is one of ``ids``; ``name`` is the bound parameter's (distinct per condition of one statement)."""
    if dialect.name == "postgresql":
        return column == func.any(bindparam(name, list(ids), type_=ARRAY(String)))
    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name, json.dumps(list(ids)), type_=String))).scalar_subquery())


__all__ = ["among"]
