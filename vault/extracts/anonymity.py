"""Full-domain generalization with suppression: k-anonymity and distinct l-diversity for an extract.

An extract is planned in two passes over its rows, with memory bounded by the
number of distinct level-0 quasi-identifier tuples, never by the row count:

1. ``Histogram.add`` counts each row's level-0 quasi-identifier tuple and, per
   tuple, the set of distinct values of each sensitive attribute (as a bit set);
2. ``choose`` picks one level per quasi-identifier (a lattice *node*) and
   returns a ``Plan``; ``Plan.release`` then maps each row to its released form.

Semantics the plan guarantees:

* a row whose equivalence class (its tuple of generalized labels over all
  released quasi-identifiers) has fewer than ``k`` rows is suppressed; at most
  ``suppression_limit(cap, rows)`` = floor(cap · rows) rows are suppressed, else
  ``AnonymityRefusedError`` is raised and nothing is planned — ``k`` is never
  weakened;
* for each released class and sensitive attribute, the rows carrying a value
  (not ``None``) for it hold at least ``l`` distinct values, or the attribute is
  withheld (released as ``None``) for every row of that class; a pair whose rows
  carry no value at all is neither released nor withheld;
* the chosen node has the lowest height (sum of levels) meeting the cap; ties go
  to fewer suppressed rows, then fewer withheld (class, attribute) pairs, then
  the lexicographically smallest level tuple. The choice depends only on the
  multiset of rows, never on their order;
* a *fixed* node (the generalization of the consumer's epoch) is evaluated
  alone and refused if it misses the cap;
* ``release`` keeps a positive list of released classes: a row counted in no
  released class is suppressed, so a row that missed the first pass can only
  join a class that already has ``k`` rows and ``l`` distinct values.

With no rows the plan is the bottom node (or the fixed one), releases nothing,
and reports ``k_achieved`` and ``l_achieved`` as ``None``; they are also
``None`` when every row is suppressed or no sensitive value is released.

Search: raising a level only merges classes, so suppression never grows with
height; the top node (one class of every row) is the best any node can do, and
if it misses the cap the request is refused at once. Otherwise the search
descends from the top while the height below holds a node meeting the cap
(``Search`` in ``vault.extracts._lattice``), then evaluates every node of the
lowest such height that is not known to fail. A node with a failing successor
fails, so it is tagged, never evaluated. A node's class counts are rolled up
from a parent's one level finer (never from the rows): a class key packs one
bit field per attribute into int64 words, and a roll-up is a shift, mask,
look-up and addition per class of the parent followed by a hash group-by, all
in Arrow. Hierarchies are checked to be nested (a level's label is a function
of the previous level's) and to end in ``*``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from operator import getitem
from typing import NamedTuple

from vault.extracts._lattice import Classes, Generalizer, Key, Lattice, Node, Search

# A row's sensitive values as an extract spools and releases them (``profiling.hashable``): a label, a tuple of labels, None.
Sensitive = tuple[str | tuple[str, ...] | None, ...]


class AnonymityRefusedError(Exception):
    """No generalization (or not the fixed one) meets ``k`` within the suppression cap; counts only."""

    def __init__(self, reason: str, *, k: int, rows: int, best_suppressed: int, cap_rows: int) -> None:
        self.reason = reason
        self.k = k
        self.rows = rows
        self.best_suppressed = best_suppressed
        self.cap_rows = cap_rows
        super().__init__(f"{reason}: k={k}, rows={rows}, at best {best_suppressed} rows suppressed, cap {cap_rows} rows")


class Histogram:
    """First pass: counts per distinct level-0 quasi-identifier tuple, and per tuple the distinct sensitive values.

    Each (sensitive attribute, value) seen gets one bit; a distinct sensitive
    tuple is coded once as the OR of its values' bits, and a quasi-identifier
    tuple keeps the OR of its rows' codes. Memory grows with the distinct
    quasi-identifier tuples and the sensitive values' domain, never with the
    rows: a new tuple is stored with each attribute's one copy of each value
    (rows arriving from worker processes carry their own copies).
    """

    __slots__ = ("_bits", "_codes", "_counts", "_masks", "_rows", "_values", "_width", "attributes", "sensitive_attributes")

    def __init__(self, attributes: Sequence[str], sensitive_attributes: Sequence[str] = ()) -> None:
        self.attributes = tuple(attributes)
        self.sensitive_attributes = tuple(sensitive_attributes)
        self._width = len(self.attributes)
        self._rows = 0
        self._counts: dict[tuple[str | None, ...], int] = {}
        self._values: tuple[dict[str | None, str | None], ...] = tuple({} for _ in self.attributes)  # per attribute, each value seen (its one copy)
        self._masks: dict[tuple[str | None, ...], int] = {}  # quasi-identifier tuple → bits of its sensitive values
        self._codes: dict[Sensitive, int] = {}  # a sensitive tuple → the bits of its values
        self._bits: tuple[dict[Hashable, int], ...] = tuple({} for _ in self.sensitive_attributes)  # per attribute, value → bit

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def distinct(self) -> int:
        """The number of distinct level-0 quasi-identifier tuples."""
        return len(self._counts)

    def domains(self) -> tuple[list[str | None], ...]:
        """Per attribute, the level-0 values seen."""
        return tuple(list(values) for values in self._values)

    def add(self, qi: tuple[str | None, ...], sensitive: Sensitive | None = None) -> None:
        """Count one row: its level-0 quasi-identifiers (in ``attributes`` order) and its sensitive values or ``None``."""
        counts = self._counts
        seen = counts.get(qi)
        if seen is None:
            if len(qi) != self._width:
                raise ValueError(f"histogram: a row with {len(qi)} quasi-identifiers, expected {self._width}")
            qi = tuple(map(dict.setdefault, self._values, qi, qi))
            counts[qi] = 1
        else:
            counts[qi] = seen + 1
        self._rows += 1
        if sensitive is None:
            return
        code = self._codes.get(sensitive)
        if code is None:
            code = self._code(sensitive)
        if code:
            masks = self._masks
            held = masks.get(qi)
            if held is None:
                masks[tuple(map(dict.setdefault, self._values, qi, qi))] = code
            else:
                masks[qi] = held | code

    def _code(self, sensitive: Sensitive) -> int:
        if len(sensitive) != len(self._bits):
            raise ValueError(f"histogram: a row with {len(sensitive)} sensitive values, expected {len(self._bits)}")
        code = 0
        for bits, value in zip(self._bits, sensitive, strict=True):
            if value is not None:
                if value not in bits:
                    bits[value] = 1 << sum(map(len, self._bits))
                code |= bits[value]
        self._codes[sensitive] = code
        return code

    def _attribute_bits(self) -> list[int]:
        """Per sensitive attribute, the OR of its values' bits."""
        return [sum(bits.values()) for bits in self._bits]


class Released(NamedTuple):
    """One released row (a named tuple, not a dataclass: one is built per row on the hot path)."""

    qi: tuple[str, ...]  # generalized labels, in hierarchy order
    sensitive: Sensitive | None  # the row's sensitive values, withheld ones set to None


@dataclass(frozen=True, slots=True)
class Plan:
    """The chosen generalization, what it achieves, and the second pass's ``release``."""

    attributes: tuple[str, ...]
    levels: tuple[int, ...]
    level_names: tuple[str, ...]
    sensitive_attributes: tuple[str, ...]
    k: int
    l: int  # noqa: E741 — the l of l-diversity
    rows: int
    suppressed: int
    cap_rows: int
    classes: int  # released equivalence classes
    k_achieved: int | None  # smallest released class; None when nothing is released
    l_achieved: int | None  # fewest distinct values of a released (class, sensitive attribute); None when none is released
    withheld: int  # released classes with at least one sensitive attribute withheld
    withheld_by_attribute: tuple[int, ...]  # per sensitive attribute, the released classes where it is withheld
    _hierarchies: tuple[Generalizer, ...] = field(repr=False, compare=False)
    _labels: tuple[Mapping[str | None, str], ...] = field(repr=False, compare=False)
    _released: Mapping[tuple[str, ...], tuple[int, ...]] = field(repr=False, compare=False)

    @property
    def generalization(self) -> dict[str, str]:
        """Attribute → chosen level name (what a later extract of the same epoch passes as ``fixed``)."""
        return dict(zip(self.attributes, self.level_names, strict=True))

    def release(self, qi: tuple[str | None, ...], sensitive: Sensitive | None = None) -> Released | None:
        """The released form of one row, or ``None`` if its class is suppressed."""
        maps = self._labels
        if len(qi) != len(maps):
            raise ValueError(f"release: a row with {len(qi)} quasi-identifiers, expected {len(maps)}")
        try:
            labels = tuple(map(getitem, maps, qi))
        except KeyError:  # a level-0 value the first pass did not see
            labels = tuple(h.generalize(v, level) for h, v, level in zip(self._hierarchies, qi, self.levels, strict=True))
        withheld = self._released.get(labels)
        if withheld is None:
            return None
        if sensitive is None:
            return Released(labels, None)
        if len(sensitive) != len(self.sensitive_attributes):
            raise ValueError(f"release: a row with {len(sensitive)} sensitive values, expected {len(self.sensitive_attributes)}")
        if not withheld:
            return Released(labels, sensitive)
        values = list(sensitive)
        for i in withheld:
            values[i] = None
        return Released(labels, tuple(values))

    def to_json(self) -> dict[str, object]:
        """The manifest's view: names and counts only (no floats)."""
        return {
            "generalization": self.generalization,
            "levels": list(self.levels),
            "k": self.k,
            "k_achieved": self.k_achieved,
            "l": self.l if self.sensitive_attributes else None,
            "l_achieved": self.l_achieved,
            "rows": self.rows,
            "released": self.rows - self.suppressed,
            "suppressed": self.suppressed,
            "suppression_cap_rows": self.cap_rows,
            "classes": self.classes,
            "withheld_classes": self.withheld,
            "withheld": dict(zip(self.sensitive_attributes, self.withheld_by_attribute, strict=True)),
        }


def suppression_limit(cap: float | Fraction | Decimal, rows: int) -> int:
    """floor(cap · rows), reading a float cap as the decimal it prints as (0.29 is 29/100, not 0.28999…)."""
    exact = Fraction(repr(cap)) if isinstance(cap, float) else Fraction(cap)
    if not 0 <= exact <= 1:
        raise ValueError("suppression cap: not a fraction in [0, 1]")
    return math.floor(exact * rows)


@dataclass(frozen=True, slots=True)
class _Diversity:
    withheld: dict[Key, tuple[int, ...]]  # released class key → withheld sensitive attribute indices (only when some)
    l_achieved: int | None

    @property
    def pairs(self) -> int:
        return sum(map(len, self.withheld.values()))


def _diversity(histogram: Histogram, lattice: Lattice, node: Node, sizes: Mapping[Key, int], *, k: int, l: int) -> _Diversity:  # noqa: E741
    merged: dict[Key, int] = {}
    key_of = lattice.keyer(node)
    for raw, mask in histogram._masks.items():
        key = key_of(raw)
        if sizes[key] >= k:
            merged[key] = merged.get(key, 0) | mask
    attribute_bits = histogram._attribute_bits()
    withheld: dict[Key, tuple[int, ...]] = {}
    fewest: int | None = None
    for key, mask in merged.items():
        distinct = [(mask & bits).bit_count() for bits in attribute_bits]
        low = tuple(i for i, d in enumerate(distinct) if 0 < d < l)
        if low:
            withheld[key] = low
        kept = [d for d in distinct if d >= l]
        if kept and (fewest is None or min(kept) < fewest):
            fewest = min(kept)
    return _Diversity(withheld, fewest)


def _check(histogram: Histogram, hierarchies: Sequence[Generalizer], k: int, l: int) -> None:  # noqa: E741
    if tuple(h.attribute for h in hierarchies) != histogram.attributes:
        raise ValueError("anonymity: the hierarchies do not match the histogram's attributes")
    if k < 1:
        raise ValueError("anonymity: k must be at least 1")
    if l < 1:
        raise ValueError("anonymity: l must be at least 1")


def _fixed_node(hierarchies: Sequence[Generalizer], fixed: Mapping[str, str]) -> Node:
    if set(fixed) != {h.attribute for h in hierarchies}:
        raise ValueError("anonymity: the fixed generalization names other attributes than the hierarchies")
    node = []
    for h in hierarchies:
        if fixed[h.attribute] not in h.levels:
            raise ValueError(f"anonymity: {h.attribute} has no level named {fixed[h.attribute]}")
        node.append(h.levels.index(fixed[h.attribute]))
    return tuple(node)


def _bottom(histogram: Histogram, lattice: Lattice) -> Classes:
    key_of = lattice.keyer((0,) * len(lattice.top))
    return Classes.build(lattice.words, [key_of(raw) for raw in histogram._counts], list(histogram._counts.values()))


def choose(
    histogram: Histogram,
    hierarchies: Sequence[Generalizer],
    *,
    k: int,
    l: int = 1,  # noqa: E741 — the l of l-diversity
    cap: float | Fraction | Decimal,
    fixed: Mapping[str, str] | None = None,
) -> Plan:
    """The generalization to release ``histogram``'s rows at ``k`` (and ``l``) within the suppression cap.

    ``hierarchies`` are in the histogram's attribute order; ``fixed`` (attribute →
    level name) restricts the choice to that one node. Raises
    ``AnonymityRefusedError`` when no allowed node suppresses at most
    ``suppression_limit(cap, rows)`` rows, and ``ValueError`` for inconsistent
    arguments or a hierarchy that is not nested.
    """
    _check(histogram, hierarchies, k, l)
    rows = histogram.rows
    cap_rows = suppression_limit(cap, rows)
    lattice = Lattice(hierarchies, histogram.domains())
    search = Search(lattice, _bottom(histogram, lattice), k, cap_rows)
    if fixed is not None:
        node = _fixed_node(hierarchies, fixed)
        classes = search.classes(node)
        if search.suppressed[node] > cap_rows:
            reason = "the fixed generalization does not meet k within the suppression cap"
            raise AnonymityRefusedError(reason, k=k, rows=rows, best_suppressed=search.suppressed[node], cap_rows=cap_rows)
        return _plan(histogram, hierarchies, lattice, node, classes, k=k, l=l, cap_rows=cap_rows)
    best = rows if 0 < rows < k else 0  # the top node: one class of every row
    if best > cap_rows:
        raise AnonymityRefusedError("no generalization meets k within the suppression cap", k=k, rows=rows, best_suppressed=best, cap_rows=cap_rows)
    passing = search.run()
    fewest = min(search.suppressed[node] for node in passing)
    tied = {node for node in passing if search.suppressed[node] == fewest}
    if len(tied) > 1 and histogram._masks:
        pairs: dict[Node, int] = {}

        def count_withheld(node: Node, classes: Classes) -> bool:
            if node in tied:
                pairs[node] = _diversity(histogram, lattice, node, classes.sizes(), k=k, l=l).pairs
            return False

        search.sweep(tied, count_withheld)
        tied = {node for node in tied if pairs[node] == min(pairs.values())}
    node = min(tied)
    return _plan(histogram, hierarchies, lattice, node, search.classes(node), k=k, l=l, cap_rows=cap_rows)


def _plan(
    histogram: Histogram,
    hierarchies: Sequence[Generalizer],
    lattice: Lattice,
    node: Node,
    classes: Classes,
    *,
    k: int,
    l: int,  # noqa: E741 — the l of l-diversity
    cap_rows: int,
) -> Plan:
    by_key = classes.sizes()
    diversity = _diversity(histogram, lattice, node, by_key, k=k, l=l)
    released = {lattice.decode(key, node): diversity.withheld.get(key, ()) for key, count in by_key.items() if count >= k}
    sizes = [count for count in by_key.values() if count >= k]
    by_attribute = [0] * len(histogram.sensitive_attributes)
    for low in diversity.withheld.values():
        for i in low:
            by_attribute[i] += 1
    return Plan(
        attributes=histogram.attributes,
        levels=node,
        level_names=tuple(h.levels[level] for h, level in zip(hierarchies, node, strict=True)),
        sensitive_attributes=histogram.sensitive_attributes,
        k=k,
        l=l,
        rows=histogram.rows,
        suppressed=histogram.rows - sum(sizes),
        cap_rows=cap_rows,
        classes=len(sizes),
        k_achieved=min(sizes, default=None),
        l_achieved=diversity.l_achieved,
        withheld=len(diversity.withheld),
        withheld_by_attribute=tuple(by_attribute),
        _hierarchies=tuple(hierarchies),
        _labels=tuple(
            {v: lattice.labels[j][level][c] for v, c in zip(lattice.values[j], lattice.coded[j][level], strict=True)} for j, level in enumerate(node)
        ),
        _released=released,
    )


__all__ = ["AnonymityRefusedError", "Generalizer", "Histogram", "Plan", "Released", "choose", "suppression_limit"]
