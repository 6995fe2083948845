"""The card ledger (API.md, Members): entries built from the data map's ``ledger_entries`` table.

A caller gives the entry type and its amount (fen) or points; the time and
the balances after the entry are set by the ledger (``LEDGER_SET``). The
``LedgerEntryType`` value set comes from the data map. A created entry is
answered with ids only (``entry_id``, ``seq``), so a stored idempotent
response holds no amount.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.schemas.fields import Mode, category_model, python_type
from vault import data_map as dm
from vault.ledger_gate import LEDGER_SET

SEQ_PATTERN = re.compile(r"[1-9][0-9]{0,15}")
EntryId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque ledger entry id")]
Seq = Annotated[int, Field(ge=1, description="the entry's number in the member's ledger, from 1")]


def _create_fields() -> dict[str, Any]:
    given = (f for f in dm.fields_of(dm.Table.ledger_entries) if f.name not in LEDGER_SET)
    return {f.name: (python_type(f), ...) if f.required else (python_type(f) | None, None) for f in given}


LedgerEntryCreate = create_model("LedgerEntryCreate", __config__=ConfigDict(extra="forbid", strict=True), **_create_fields())
LedgerEntryResource = create_model(
    "LedgerEntryResource",
    __base__=category_model(dm.Table.ledger_entries, dm.Category.financial, Mode.out),
    entry_id=(EntryId, ...),
    seq=(Seq, ...),
)
LedgerPage = create_model("LedgerPage", items=(list[LedgerEntryResource], ...), next_cursor=(str | None, ...))  # type: ignore[valid-type]


class LedgerEntryCreated(BaseModel):
    entry_id: EntryId
    seq: Seq


__all__ = ["SEQ_PATTERN", "LedgerEntryCreate", "LedgerEntryCreated", "LedgerEntryResource", "LedgerPage"]
