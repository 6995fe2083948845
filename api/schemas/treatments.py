"""Treatment records (API.md, Members).

Bodies and responses are built from the data map's ``treatments`` table
(``category_model``), so every field and the ``TreatmentCategory`` value set
appear in the OpenAPI schema and nowhere else. Lists page as ``api.paging`` says.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, create_model

from api.schemas.fields import Mode, category_model
from vault import data_map as dm

TreatmentId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque treatment id")]
MemberId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque member id")]

TreatmentCreate = create_model("TreatmentCreate", __base__=category_model(dm.Table.treatments, dm.Category.treatment, Mode.create))
TreatmentResource = create_model(
    "TreatmentResource",
    __base__=category_model(dm.Table.treatments, dm.Category.treatment, Mode.out),
    treatment_id=(TreatmentId, ...),
    member_id=(MemberId, ...),
)
TreatmentPage = create_model("TreatmentPage", items=(list[TreatmentResource], ...), next_cursor=(str | None, ...))  # type: ignore[valid-type]


class TreatmentCreated(BaseModel):
    treatment_id: TreatmentId


__all__ = [
    "TreatmentCreate",
    "TreatmentCreated",
    "TreatmentPage",
    "TreatmentResource",
]
