"""Generalization hierarchies of the quasi-identifiers an extract releases.

A ``Hierarchy`` maps a level-0 label (what ``vault.extracts.profile`` produces
for a member) to its label at each coarser level; the anonymity engine picks
one level per attribute. Invariants, checked at import time by ``_check``:

* level names are unique and the last level is always ``*``, where every
  value has the label ``*``;
* each level is a coarsening of the one before: two values with the same label
  at level i have the same label at level i + 1 (a level's label is a function
  of the previous level's label);
* a value outside an attribute's domain is refused (``ValueError`` naming the
  attribute, never the value), so nothing unexpected is ever released.

Level-0 labels and their coarsenings:

* ``gender``: the ``Gender`` value; absent → ``undisclosed``.
* ``age_band``: ``<18``, ``18-19``, ``20-24`` … ``75-79``, ``80+`` → 10-year
  ``<20``, ``20-29`` … ``70-79``, ``80+`` → 20-year ``<20``, ``20-39``,
  ``40-59``, ``60-79``, ``80+``; absent → ``unknown``. Age is counted in
  whole years as of a date; someone born on 29 February turns a year older on
  1 March in a common year.
* ``region``: a gazetteer city (``vault.extracts._gazetteer``) → province →
  region; a city not in the gazetteer is ``other`` at every level, an absent
  or blank one ``unknown``. Free text is never released as written.
* ``education``: the ``Education`` value → ``no_degree`` (primary, secondary,
  vocational), ``degree`` (bachelor), ``postgraduate`` (master, doctorate),
  ``undisclosed``.
* ``income_band``: the ``IncomeBand`` value (monthly yuan) → ``below_10k``,
  ``10k_50k``, ``above_50k``, ``undisclosed``.
* ``spend_band`` and ``balance_band`` (yuan; the lower bound is inclusive):
  ``0``, ``<1k``, ``1k-5k``, ``5k-20k``, ``20k-50k``, ``50k+`` →
  ``0``, ``<5k``, ``5k-50k``, ``50k+``.
* ``member_since``: the joining year ``2021`` → five-year span ``2020-2024``.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType

from vault import value_sets as vs
from vault.extracts._gazetteer import CITY_PROVINCE, PROVINCE_REGION

ANY = "*"
UNKNOWN = "unknown"
OTHER = "other"
UNDISCLOSED = "undisclosed"

Rung = tuple[str, ...]  # a value's labels at every level below "*", level 0 first


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One released quasi-identifier and its generalization levels, finest first."""

    attribute: str
    levels: tuple[str, ...]
    missing: str  # the level-0 label of an absent value
    rung: Callable[[str], Rung | None] = field(repr=False, compare=False)

    def generalize(self, value: str | None, level: int) -> str:
        """The label of a level-0 value at ``level``; ``*`` at the last level."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"{self.attribute}: no generalization level {level}")
        labels = self.rung(self.missing if value is None else value)
        if labels is None:
            raise ValueError(f"{self.attribute}: a value outside the hierarchy's domain")
        return ANY if level == len(labels) else labels[level]

    def __reduce__(self) -> tuple[Callable[[str], Hierarchy], tuple[str]]:
        """Pickled by name (a plan sent to an extract worker carries its hierarchies): only the registered hierarchies pickle."""
        if _BY_ATTRIBUTE.get(self.attribute) is not self:
            raise TypeError(f"{self.attribute}: only a registered hierarchy can be pickled")
        return hierarchy, (self.attribute,)


def _table(rungs: Mapping[str, Rung]) -> Callable[[str], Rung | None]:
    return MappingProxyType(dict(rungs)).get


# ages

_AGE_5 = tuple(f"{lo}-{lo + 4}" for lo in range(20, 80, 5))
AGE_BANDS: tuple[str, ...] = ("<18", "18-19", *_AGE_5, "80+")


def _age_rung(label: str) -> Rung:
    if label in ("<18", "18-19"):
        return (label, "<20", "<20")
    if label == "80+":
        return (label, label, label)
    lo = int(label.partition("-")[0])
    return (label, f"{lo // 10 * 10}-{lo // 10 * 10 + 9}", f"{lo // 20 * 20}-{lo // 20 * 20 + 19}")


def age_band(born: date, as_of: date) -> str:
    """The 5-year band of someone born on ``born``, in whole years as of ``as_of``."""
    age = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
    if age < 0:
        raise ValueError("date_of_birth: after the extract date")
    if age < 18:
        return "<18"
    if age < 20:
        return "18-19"
    if age >= 80:
        return "80+"
    lo = age // 5 * 5
    return f"{lo}-{lo + 4}"


# money (fen in, yuan bands out)

MONEY_BANDS: tuple[str, ...] = ("0", "<1k", "1k-5k", "5k-20k", "20k-50k", "50k+")
_MONEY_WIDE = ("0", "<5k", "<5k", "5k-50k", "5k-50k", "50k+")
_MONEY_FLOORS_FEN = (1, 1_000_00, 5_000_00, 20_000_00, 50_000_00)  # lower bound of each band after "0"


def money_band(fen: int) -> str:
    """The yuan band of an amount in fen (a spend total or a card balance, never negative)."""
    if fen < 0:
        raise ValueError("money band: a negative amount")
    return MONEY_BANDS[bisect.bisect_right(_MONEY_FLOORS_FEN, fen)]


# cities


def city_label(raw: str | None) -> str:
    """The releasable label of a free-text city: a gazetteer city, ``other`` or ``unknown``."""
    if raw is None:
        return UNKNOWN
    if raw in CITY_PROVINCE:
        return raw
    name = "".join(unicodedata.normalize("NFKC", raw).split()).removesuffix("市")
    if not name:
        return UNKNOWN
    return name if name in CITY_PROVINCE else OTHER


def _region_rung(label: str) -> Rung:
    city = label if label in (UNKNOWN, OTHER) else city_label(label)
    if city in (UNKNOWN, OTHER):
        return (city, city, city)
    province = CITY_PROVINCE[city]
    return (city, province, PROVINCE_REGION[province])


# joining year


def _year_rung(label: str) -> Rung | None:
    if label == UNKNOWN:
        return (label, label)
    if len(label) != 4 or not label.isascii() or not label.isdigit():
        return None
    lo = int(label) // 5 * 5
    return (label, f"{lo}-{lo + 4}")


_E, _I = vs.Education, vs.IncomeBand
_DEGREE = {
    _E.primary: "no_degree",
    _E.secondary: "no_degree",
    _E.vocational: "no_degree",
    _E.bachelor: "degree",
    _E.master: "postgraduate",
    _E.doctorate: "postgraduate",
    _E.undisclosed: UNDISCLOSED,
}
_INCOME_WIDE = {
    _I.below_5k: "below_10k",
    _I.from_5k_to_10k: "below_10k",
    _I.from_10k_to_20k: "10k_50k",
    _I.from_20k_to_50k: "10k_50k",
    _I.above_50k: "above_50k",
    _I.undisclosed: UNDISCLOSED,
}
_MONEY_RUNGS = {band: (band, wide) for band, wide in zip(MONEY_BANDS, _MONEY_WIDE, strict=True)} | {UNKNOWN: (UNKNOWN, UNKNOWN)}

QUASI_IDENTIFIERS: tuple[Hierarchy, ...] = (
    Hierarchy("gender", ("gender", ANY), UNDISCLOSED, _table({g.value: (g.value,) for g in vs.Gender})),
    Hierarchy(
        "age_band",
        ("age_band_5", "age_band_10", "age_band_20", ANY),
        UNKNOWN,
        _table({band: _age_rung(band) for band in AGE_BANDS} | {UNKNOWN: (UNKNOWN,) * 3}),
    ),
    Hierarchy("region", ("city", "province", "region", ANY), UNKNOWN, _region_rung),
    Hierarchy("income_band", ("income_band", "income_wide", ANY), UNDISCLOSED, _table({i.value: (i.value, w) for i, w in _INCOME_WIDE.items()})),
    Hierarchy("education", ("education", "degree", ANY), UNDISCLOSED, _table({e.value: (e.value, d) for e, d in _DEGREE.items()})),
    Hierarchy("member_since", ("year", "year_5", ANY), UNKNOWN, _year_rung),
    Hierarchy("spend_band", ("spend_band", "spend_wide", ANY), UNKNOWN, _table(_MONEY_RUNGS)),
    Hierarchy("balance_band", ("balance_band", "balance_wide", ANY), UNKNOWN, _table(_MONEY_RUNGS)),
)

_BY_ATTRIBUTE: Mapping[str, Hierarchy] = MappingProxyType({h.attribute: h for h in QUASI_IDENTIFIERS})


def hierarchy(attribute: str) -> Hierarchy:
    """The hierarchy of a released quasi-identifier (``KeyError`` if it has none)."""
    return _BY_ATTRIBUTE[attribute]


def _check() -> None:
    if len(_BY_ATTRIBUTE) != len(QUASI_IDENTIFIERS):
        raise AssertionError("hierarchies: an attribute is listed twice")
    if set(_DEGREE) != set(vs.Education) or set(_INCOME_WIDE) != set(vs.IncomeBand):
        raise AssertionError("hierarchies: a value set is not covered")
    for h in QUASI_IDENTIFIERS:
        if len(set(h.levels)) != len(h.levels) or h.levels[-1] != ANY or ANY in h.levels[:-1]:
            raise AssertionError(f"{h.attribute}: levels must be unique and end with {ANY!r}")
        rung = h.rung(h.missing)
        if rung is None or len(rung) != len(h.levels) - 1:
            raise AssertionError(f"{h.attribute}: the missing label is outside the domain")


_check()

__all__ = [
    "AGE_BANDS",
    "ANY",
    "MONEY_BANDS",
    "OTHER",
    "QUASI_IDENTIFIERS",
    "UNDISCLOSED",
    "UNKNOWN",
    "Hierarchy",
    "age_band",
    "city_label",
    "hierarchy",
    "money_band",
]
