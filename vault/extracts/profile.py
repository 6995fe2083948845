"""A member's extract profile (用户画像), built from already decrypted facts.

``ATTRIBUTES`` is the one list of what an extract can release. Each attribute
belongs to one of the four profiling dimensions, has an extract role (a
quasi-identifier, generalized along its hierarchy and counted for k; a
sensitive, health-derived attribute released only under l-diversity and
``health_data`` consent; or a plain attribute) and names the data-map member
fields it is derived from (none when it comes from treatments or the ledger).

Invariants, checked at import time by ``_check``:

* no attribute reads a data-map ``direct_identifier`` or ``not_released``
  field, and an attribute's role is the extract role the data map gives every
  field it reads (so ``date_of_birth`` → ``age_band`` and ``city`` →
  ``region`` are quasi-identifiers because the data map says so);
* an attribute is health-derived exactly when it reads a ``health`` field,
  and exactly the health-derived attributes are sensitive;
* the quasi-identifiers are exactly the attributes of
  ``hierarchies.QUASI_IDENTIFIERS``, and where the data map declares a
  field's generalization levels the hierarchy starts with them.

``build_profile`` reads only the source fields of the requested attributes,
so a direct identifier handed to it in ``MemberFacts.values`` is never copied.
Free text is never released: a city outside the gazetteer becomes ``other``
and an interest tag outside ``INTEREST_TAGS`` is dropped. Closed value sets
(gender, tier, …) are checked; a value outside its set is a ``ValueError``
naming the field, never the value.

Consumption attributes use fixed thresholds (no quantiles, so a label means
the same in every extract):

* ``visit_frequency`` (treatments in the 12 months before the extract date):
  ``none``, ``1-2``, ``3-5``, ``6-11``, ``12+``;
* ``recency`` (days since the last treatment): ``<30d``, ``30-89d``,
  ``90-179d``, ``180-364d``, ``365d+``, ``never``;
* ``top_categories``: up to three treatment categories of the last 12 months,
  most frequent first, ties by name;
* ``rfm`` ``R{r}F{f}M{m}``, each digit 1–5: R 5 <30d, 4 30–89d, 3 90–179d,
  2 180–364d, 1 365d+ or never; F 1 none, 2 1–2, 3 3–5, 4 6–11, 5 12+;
  M (12-month spend) 1 <1k yuan, 2 1k–5k, 3 5k–20k, 4 20k–50k, 5 50k+.
"""

from __future__ import annotations

import bisect
import functools
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from vault import data_map as dm
from vault import value_sets as vs
from vault.extracts import hierarchies as hi


class Dimension(StrEnum):
    static = "static"
    dynamic = "dynamic"
    consumption = "consumption"
    stated_preference = "stated_preference"


class Role(StrEnum):
    quasi_identifier = "quasi_identifier"
    sensitive = "sensitive"
    attribute = "attribute"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One releasable profile attribute."""

    name: str
    dimension: Dimension
    role: Role
    health_derived: bool = False
    source_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the integrator gathers for one member, already decrypted."""

    values: Mapping[str, object]  # member fields by data-map name
    spend_12m: int  # fen of 'spend' ledger entries in the 12 months before as_of
    balance: int  # current card balance, fen
    visits_12m: int  # treatments in the 12 months before as_of
    last_visit: date | None  # most recent treatment day
    categories_12m: Mapping[str, int]  # treatment category -> count in the 12 months before as_of


Sensitive = str | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Profile:
    """Level-0 quasi-identifier labels, sensitive values and plain attributes of one member."""

    qi: tuple[str | None, ...]  # in hierarchies.QUASI_IDENTIFIERS order; None when not requested
    sensitive: tuple[Sensitive, ...]  # in SENSITIVE order; None when not requested, withheld or unknown
    plain: dict[str, Plain]  # requested plain attributes, in ATTRIBUTES order


# A plain attribute's value: a label, a sorted tuple of labels, or None (the form a released row and its digest take).
Plain = str | tuple[str, ...] | None
# What an extract keeps of a profile (``ProfileBuilder.released``): released quasi-identifier labels, released sensitive
# values, the requested plain attributes' values (in ``ATTRIBUTES`` order, the extract's column order).
Released = tuple[tuple[str | None, ...], tuple[Sensitive, ...], tuple[Plain, ...]]

D, R = Dimension, Role
QI, SENS, ATTR = R.quasi_identifier, R.sensitive, R.attribute

ATTRIBUTES: tuple[Attribute, ...] = (
    # static
    Attribute("gender", D.static, QI, source_fields=("gender",)),
    Attribute("age_band", D.static, QI, source_fields=("date_of_birth",)),
    Attribute("region", D.static, QI, source_fields=("city",)),
    Attribute("income_band", D.static, QI, source_fields=("income_band",)),
    Attribute("education", D.static, QI, source_fields=("education",)),
    Attribute("member_since", D.static, QI, source_fields=("joined_at",)),
    # dynamic
    Attribute("interest_tags", D.dynamic, ATTR, source_fields=("interest_tags",)),
    Attribute("preferred_channel", D.dynamic, ATTR, source_fields=("preferred_channel",)),
    # consumption
    Attribute("tier", D.consumption, ATTR, source_fields=("tier",)),
    Attribute("spend_band", D.consumption, QI),
    Attribute("balance_band", D.consumption, QI),
    Attribute("visit_frequency", D.consumption, ATTR),
    Attribute("recency", D.consumption, ATTR),
    Attribute("top_categories", D.consumption, ATTR),
    Attribute("rfm", D.consumption, ATTR),
    # stated preferences
    Attribute("preferred_categories", D.stated_preference, ATTR, source_fields=("preferred_categories",)),
    # health-derived
    Attribute("skin_type", D.static, SENS, health_derived=True, source_fields=("skin_type",)),
    Attribute("has_allergies", D.static, SENS, health_derived=True, source_fields=("allergies",)),
    Attribute("has_contraindications", D.static, SENS, health_derived=True, source_fields=("contraindications",)),
)

SENSITIVE: tuple[Attribute, ...] = tuple(a for a in ATTRIBUTES if a.role is SENS)

# The released interest-tag vocabulary: the demo's tags and a few more of the trade. Anything else is dropped.
INTEREST_TAGS: frozenset[str] = frozenset(
    ("抗衰", "美白", "祛痘", "紧致", "补水", "塑形", "祛斑", "脱毛", "嫩肤", "除皱", "提升", "瘦脸", "丰唇", "毛孔", "淡纹", "焕肤")
)

_BY_NAME = {a.name: a for a in ATTRIBUTES}
_QI_INDEX = {h.attribute: i for i, h in enumerate(hi.QUASI_IDENTIFIERS)}
_SENSITIVE_INDEX = {a.name: i for i, a in enumerate(SENSITIVE)}
_CATEGORIES = frozenset(c.value for c in vs.TreatmentCategory)

# thresholds (lower bounds) of the consumption bands
_VISIT_FLOORS, _VISIT_BANDS = (1, 3, 6, 12), ("none", "1-2", "3-5", "6-11", "12+")
_RECENCY_FLOORS, _RECENCY_BANDS = (30, 90, 180, 365), ("<30d", "30-89d", "90-179d", "180-364d", "365d+")
_M_FLOORS_FEN = (1_000_00, 5_000_00, 20_000_00, 50_000_00)


# reading fields


def _enum(values: Mapping[str, object], name: str, allowed: frozenset[str]) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: a value outside its value set")
    return str(value)


def _date(values: Mapping[str, object], name: str) -> date | None:
    value = values.get(name)
    if value is None or isinstance(value, date):
        return value
    raise TypeError(f"{name}: not a date")


def _texts(values: Mapping[str, object], name: str) -> Sequence[str] | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise TypeError(f"{name}: not a list of text")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{name}: not a list of text")
    return value


def _count(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name}: negative")
    return value


def _days_since(f: MemberFacts, as_of: date) -> int | None:
    if f.last_visit is None:
        return None
    days = (as_of - f.last_visit).days
    if days < 0:
        raise ValueError("last_visit: after the extract date")
    return days


# quasi-identifiers: level-0 labels

QiCompute = Callable[[MemberFacts, date], str]


def _qi_enum(name: str, value_set: type[StrEnum]) -> QiCompute:
    allowed = frozenset(v.value for v in value_set)

    def read(f: MemberFacts, _as_of: date) -> str:
        value = _enum(f.values, name, allowed)
        return hi.UNDISCLOSED if value is None else value

    return read


def _age(f: MemberFacts, as_of: date) -> str:
    born = _date(f.values, "date_of_birth")
    return hi.UNKNOWN if born is None else hi.age_band(born, as_of)


def _region(f: MemberFacts, _as_of: date) -> str:
    city = f.values.get("city")
    if city is not None and not isinstance(city, str):
        raise TypeError("city: not text")
    return hi.city_label(city)


def _member_since(f: MemberFacts, _as_of: date) -> str:
    joined = _date(f.values, "joined_at")
    return hi.UNKNOWN if joined is None else f"{joined.year:04d}"


def _spend_band(f: MemberFacts, _as_of: date) -> str:
    return hi.money_band(_count("spend_12m", f.spend_12m))


def _balance_band(f: MemberFacts, _as_of: date) -> str:
    return hi.money_band(_count("balance", f.balance))


_QI_COMPUTE: dict[str, QiCompute] = {
    "gender": _qi_enum("gender", vs.Gender),
    "age_band": _age,
    "region": _region,
    "income_band": _qi_enum("income_band", vs.IncomeBand),
    "education": _qi_enum("education", vs.Education),
    "member_since": _member_since,
    "spend_band": _spend_band,
    "balance_band": _balance_band,
}


# sensitive (health-derived) values

SensitiveCompute = Callable[[MemberFacts, date], Sensitive]
_SKIN_TYPES = frozenset(v.value for v in vs.SkinType)


def _skin_type(f: MemberFacts, _as_of: date) -> Sensitive:
    return _enum(f.values, "skin_type", _SKIN_TYPES)


def _flag(name: str) -> SensitiveCompute:
    def read(f: MemberFacts, _as_of: date) -> Sensitive:
        items = _texts(f.values, name)
        if items is None:
            return None
        return "yes" if any(s.strip() for s in items) else "no"

    return read


_SENSITIVE_COMPUTE: dict[str, SensitiveCompute] = {
    "skin_type": _skin_type,
    "has_allergies": _flag("allergies"),
    "has_contraindications": _flag("contraindications"),
}


# plain attributes

PlainCompute = Callable[[MemberFacts, date], Plain]


def _plain_enum(name: str, value_set: type[StrEnum]) -> PlainCompute:
    allowed = frozenset(v.value for v in value_set)
    return lambda f, _as_of: _enum(f.values, name, allowed)


def _interest_tags(f: MemberFacts, _as_of: date) -> tuple[str, ...] | None:
    tags = _texts(f.values, "interest_tags")
    if tags is None:
        return None
    return tuple(sorted({t if t in INTEREST_TAGS else _normalized(t) for t in tags} & INTEREST_TAGS))


def _normalized(tag: str) -> str:
    return "".join(unicodedata.normalize("NFKC", tag).split())


def _preferred_categories(f: MemberFacts, _as_of: date) -> tuple[str, ...] | None:
    items = _texts(f.values, "preferred_categories")
    if items is None:
        return None
    chosen = set(items)
    if not chosen <= _CATEGORIES:
        raise ValueError("preferred_categories: a value outside its value set")
    return tuple(sorted(chosen))


def _visit_frequency(f: MemberFacts, _as_of: date) -> str:
    return _VISIT_BANDS[bisect.bisect_right(_VISIT_FLOORS, _count("visits_12m", f.visits_12m))]


def _recency(f: MemberFacts, as_of: date) -> str:
    days = _days_since(f, as_of)
    return "never" if days is None else _RECENCY_BANDS[bisect.bisect_right(_RECENCY_FLOORS, days)]


def _top_categories(f: MemberFacts, _as_of: date) -> tuple[str, ...]:
    if not f.categories_12m.keys() <= _CATEGORIES:
        raise ValueError("categories_12m: a category outside its value set")
    ranked = sorted((-n, c) for c, n in f.categories_12m.items() if n > 0)
    return tuple(c for _, c in ranked[:3])


def _rfm(f: MemberFacts, as_of: date) -> str:
    days = _days_since(f, as_of)
    r = 1 if days is None else 5 - bisect.bisect_right(_RECENCY_FLOORS, days)
    freq = 1 + bisect.bisect_right(_VISIT_FLOORS, _count("visits_12m", f.visits_12m))
    m = 1 + bisect.bisect_right(_M_FLOORS_FEN, _count("spend_12m", f.spend_12m))
    return f"R{r}F{freq}M{m}"


_PLAIN_COMPUTE: dict[str, PlainCompute] = {
    "interest_tags": _interest_tags,
    "preferred_channel": _plain_enum("preferred_channel", vs.Channel),
    "tier": _plain_enum("tier", vs.Tier),
    "visit_frequency": _visit_frequency,
    "recency": _recency,
    "top_categories": _top_categories,
    "rfm": _rfm,
    "preferred_categories": _preferred_categories,
}


class ProfileBuilder:
    """Builds profiles for one attribute selection; validate once, build per member."""

    __slots__ = ("_plain", "_qi", "_sensitive")

    def __init__(self, attributes: Collection[str], *, health: bool) -> None:
        if isinstance(attributes, str):
            raise TypeError("attributes: a collection of names, not one string")
        unknown = sorted(set(attributes) - _BY_NAME.keys())
        if unknown:
            raise ValueError(f"unknown profile attribute: {unknown[0]}")
        chosen = [a for a in ATTRIBUTES if a.name in attributes and (health or not a.health_derived)]
        self._qi = tuple((_QI_INDEX[a.name], _QI_COMPUTE[a.name]) for a in chosen if a.role is QI)
        self._sensitive = tuple((_SENSITIVE_INDEX[a.name], _SENSITIVE_COMPUTE[a.name]) for a in chosen if a.role is SENS)
        self._plain = tuple((a.name, _PLAIN_COMPUTE[a.name]) for a in chosen if a.role is ATTR)

    @property
    def plain_names(self) -> tuple[str, ...]:
        """The requested plain attributes, in the order ``released`` gives their values (``ATTRIBUTES`` order)."""
        return tuple(name for name, _ in self._plain)

    def build(self, facts: MemberFacts, as_of: date) -> Profile:
        """The profile of one member as of a date."""
        qi: list[str | None] = [None] * len(_QI_INDEX)
        for i, qi_compute in self._qi:
            qi[i] = qi_compute(facts, as_of)
        sensitive: list[Sensitive] = [None] * len(_SENSITIVE_INDEX)
        for j, sensitive_compute in self._sensitive:
            sensitive[j] = sensitive_compute(facts, as_of)
        return Profile(tuple(qi), tuple(sensitive), {name: compute(facts, as_of) for name, compute in self._plain})

    def released(self, qi_index: Sequence[int], sensitive_index: Sequence[int]) -> Callable[[MemberFacts, date], Released]:
        """``build`` cut to what an extract keeps: ``(qi, sensitive, plain)``.

        ``qi`` and ``sensitive`` are the entries of ``Profile.qi`` at
        ``qi_index`` and of ``Profile.sensitive`` at ``sensitive_index``;
        ``plain`` is ``Profile.plain``'s values in its order (a tuple: no
        dict per member to build, spool and look up). The same computations in the same
        order (so the same values and the same errors), without building the
        full tuples and a ``Profile`` per member.
        """
        qi_at = {i: at for at, (i, _) in enumerate(self._qi)}
        sensitive_at = {j: at for at, (j, _) in enumerate(self._sensitive)}
        qi_computes, sensitive_computes, plain = [c for _, c in self._qi], [c for _, c in self._sensitive], [c for _, c in self._plain]
        qi_pick, sensitive_pick = [qi_at.get(i) for i in qi_index], [sensitive_at.get(j) for j in sensitive_index]
        qi_whole, sensitive_whole = qi_pick == list(range(len(qi_computes))), sensitive_pick == list(range(len(sensitive_computes)))

        def build(facts: MemberFacts, as_of: date) -> Released:
            labels = [compute(facts, as_of) for compute in qi_computes]
            values = [compute(facts, as_of) for compute in sensitive_computes]
            return (
                tuple(labels) if qi_whole else tuple([None if at is None else labels[at] for at in qi_pick]),
                tuple(values) if sensitive_whole else tuple([None if at is None else values[at] for at in sensitive_pick]),
                tuple([compute(facts, as_of) for compute in plain]),
            )

        return build


@functools.lru_cache(maxsize=64)
def _builder(attributes: frozenset[str], health: bool) -> ProfileBuilder:
    return ProfileBuilder(attributes, health=health)


def build_profile(facts: MemberFacts, as_of: date, *, attributes: Collection[str], health: bool) -> Profile:
    """The profile of one member as of a date: requested attributes only; health-derived ones only if ``health``."""
    if isinstance(attributes, str):
        raise TypeError("attributes: a collection of names, not one string")
    return _builder(frozenset(attributes), health).build(facts, as_of)


def _check() -> None:
    member_fields = dm.fields_by_name(dm.Table.members)
    expected = {R.quasi_identifier: dm.ExtractRole.quasi_identifier, R.sensitive: dm.ExtractRole.sensitive, R.attribute: dm.ExtractRole.attribute}
    computed = {R.quasi_identifier: _QI_COMPUTE.keys(), R.sensitive: _SENSITIVE_COMPUTE.keys(), R.attribute: _PLAIN_COMPUTE.keys()}
    if len(_BY_NAME) != len(ATTRIBUTES):
        raise AssertionError("profile: an attribute is listed twice")
    for role, names in computed.items():
        if names != {a.name for a in ATTRIBUTES if a.role is role}:
            raise AssertionError(f"profile: the {role.value} attributes and their computations differ")
    for a in ATTRIBUTES:
        sources = [member_fields[name] for name in a.source_fields]
        if any(f.extract is not expected[a.role] for f in sources):
            raise AssertionError(f"{a.name}: a source field's extract role is not {a.role.value}")
        if a.health_derived != any(f.category is dm.Category.health for f in sources) or a.health_derived != (a.role is SENS):
            raise AssertionError(f"{a.name}: health-derived exactly when it reads a health field, and then sensitive")
        if a.role is QI:
            levels = hi.hierarchy(a.name).levels
            for f in sources:
                if f.generalization and levels[: len(f.generalization)] != f.generalization:
                    raise AssertionError(f"{a.name}: hierarchy does not start with the data map's levels of {f.name}")
    if [a.name for a in ATTRIBUTES if a.role is QI] != [h.attribute for h in hi.QUASI_IDENTIFIERS]:
        raise AssertionError("profile: the quasi-identifiers are exactly the hierarchies, in the same order")


_check()

__all__ = [
    "ATTRIBUTES",
    "INTEREST_TAGS",
    "SENSITIVE",
    "Attribute",
    "Dimension",
    "MemberFacts",
    "Profile",
    "ProfileBuilder",
    "Released",
    "Role",
    "Sensitive",
    "build_profile",
]
