"""Request and response models generated from the data map.

For each table and category the data map declares, ``category_model`` builds
a pydantic model whose fields are exactly that category's fields, typed by
``Kind`` (every enum with its closed value set, so the OpenAPI schema lists
each value). Models refuse unknown keys (``extra="forbid"``): no mass
assignment. The vault's own validation still runs on every value; these
models give the schema and a first, typed shape check.
"""

from __future__ import annotations

import datetime as dt
import functools
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from vault import data_map as dm

_STRING_KINDS = {
    dm.Kind.text,
    dm.Kind.phone,
    dm.Kind.email,
    dm.Kind.document_number,
    dm.Kind.card_no,
    dm.Kind.clinic_id,
    dm.Kind.staff_id,
}


class Mode(StrEnum):
    create = "create"  # data-map required fields are required
    patch = "patch"  # every field optional; null clears it (RFC 7396)
    out = "out"  # what a response may carry


def python_type(f: dm.Field) -> Any:  # noqa: ANN401, PLR0911 - a type expression for create_model; one return per kind
    match f.kind:
        case dm.Kind.enum:
            return f.value_set
        case dm.Kind.enum_list:
            return Annotated[list[f.value_set], Field(max_length=f.max_items)]  # type: ignore[name-defined]
        case dm.Kind.text_list:
            return Annotated[list[Annotated[str, Field(max_length=f.max_length)]], Field(max_length=f.max_items)]
        case dm.Kind.date:
            return dt.date
        case dm.Kind.datetime:
            return dt.datetime
        case dm.Kind.money | dm.Kind.integer:
            return int
        case kind if kind in _STRING_KINDS:
            return Annotated[str, Field(max_length=f.max_length)]
    raise ValueError(f"no API type for kind {f.kind}")


def _title(*parts: str) -> str:
    return "".join(p.title().replace("_", "") for p in parts)


@functools.cache
def category_model(table: dm.Table, category: dm.Category, mode: Mode) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for f in dm.fields_of(table):
        if f.category is not category:
            continue
        typ = python_type(f)
        if mode is Mode.create and f.required:
            definitions[f.name] = (typ, ...)
        else:
            definitions[f.name] = (typ | None, None)
    suffix = {Mode.create: "Create", Mode.patch: "Patch", Mode.out: ""}[mode]
    name = _title(table.value if table is not dm.Table.members else "member", category.value, suffix)
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(name, __config__=config, **definitions)


__all__ = ["Mode", "category_model", "python_type"]
