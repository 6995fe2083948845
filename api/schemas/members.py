"""The member resource (API.md, Members): fields grouped by data-map category."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from api.schemas.fields import Mode, category_model
from vault import data_map as dm

MEMBER_CATEGORIES: tuple[dm.Category, ...] = dm.categories_of(dm.Table.members)
MemberId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque member id")]


def _resource(mode: Mode, name: str) -> type[BaseModel]:
    definitions: dict[str, Any] = {c.value: (category_model(dm.Table.members, c, mode) | None, None) for c in MEMBER_CATEGORIES}
    if mode is Mode.out:
        definitions = {"member_id": (MemberId, ...), **definitions, "redacted": (list[dm.Category], ...)}
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=True), **definitions)


MemberResource = _resource(Mode.out, "MemberResource")
MemberCreate = _resource(Mode.create, "MemberCreate")
MemberPatch = _resource(Mode.patch, "MemberPatch")


class MemberCreated(BaseModel):
    member_id: MemberId


class SearchRequest(BaseModel):
    """Exactly one of the blind-indexed fields."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1, "maxProperties": 1})
    # Not nullable in the schema: absent, or a string.
    phone: Annotated[str, Field(max_length=32)] = None  # type: ignore[assignment]
    email: Annotated[str, Field(max_length=254)] = None  # type: ignore[assignment]
    national_id: Annotated[str, Field(max_length=32)] = None  # type: ignore[assignment]
    card_no: Annotated[str, Field(max_length=32)] = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        if len(self.model_fields_set) != 1 or None in (getattr(self, n) for n in self.model_fields_set):
            raise ValueError("give exactly one of phone, email, national_id, card_no")
        return self

    def term(self) -> tuple[str, str]:
        (name,) = self.model_fields_set
        value = getattr(self, name)
        assert isinstance(value, str)  # noqa: S101 - guaranteed by _exactly_one
        return name, value


class SearchHit(BaseModel):
    member_id: MemberId


class SearchResults(BaseModel):
    results: list[SearchHit]


class CheckIn(BaseModel):
    """Link the member to the caller's clinic, with the member's card number as proof of presence."""

    model_config = ConfigDict(extra="forbid", strict=True)
    card_no: Annotated[str, Field(min_length=1, max_length=32)]
    clinic_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class CheckInResult(BaseModel):
    member_id: MemberId
    clinic_id: str
    linked: bool


class MemberChanged(BaseModel):
    member_id: MemberId
    changed: list[str]


def parse_term(raw: bytes) -> tuple[str, str] | None:
    """The one search field and its value, or None when the body is not a valid search (refused after the decision)."""
    try:
        return SearchRequest.model_validate_json(raw, strict=True).term()
    except ValidationError:
        return None


__all__ = [
    "MEMBER_CATEGORIES",
    "CheckIn",
    "CheckInResult",
    "MemberChanged",
    "MemberCreate",
    "MemberCreated",
    "MemberPatch",
    "MemberResource",
    "SearchRequest",
    "SearchResults",
    "parse_term",
]
