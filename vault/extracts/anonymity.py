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
(``_Search``), then evaluates every node of the lowest such height that is not
known to fail. A node with a failing successor fails, so it is tagged, never
evaluated. A node's class counts are rolled up from a parent's one level finer
(never from the rows), a class being an ``int`` with one bit field per
attribute, so a roll-up costs one shift, mask, look-up and addition per class
of the parent. Hierarchies are checked to be nested (a level's label is a
function of the previous level's) and to end in ``*``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from operator import getitem
from typing import NamedTuple, Protocol

ANY = "*"

Node = tuple[int, ...]
Sensitive = tuple[Hashable | None, ...]
Classes = dict[int, int]  # packed class key → row count


class Generalizer(Protocol):
    """A quasi-identifier's generalization hierarchy, as the engine sees it."""

    @property
    def attribute(self) -> str: ...  # the released attribute name

    @property
    def levels(self) -> tuple[str, ...]: ...  # level names, finest first; the last is "*"

    def generalize(self, value: str | None, level: int) -> str: ...  # a level-0 value's label at ``level``


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
    quasi-identifier tuples and the sensitive values' domain, never with the rows.
    """

    __slots__ = ("_bits", "_codes", "_counts", "_masks", "_rows", "_width", "attributes", "sensitive_attributes")

    def __init__(self, attributes: Sequence[str], sensitive_attributes: Sequence[str] = ()) -> None:
        self.attributes = tuple(attributes)
        self.sensitive_attributes = tuple(sensitive_attributes)
        self._width = len(self.attributes)
        self._rows = 0
        self._counts: dict[tuple[str | None, ...], int] = {}
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

    def add(self, qi: tuple[str | None, ...], sensitive: Sensitive | None = None) -> None:
        """Count one row: its level-0 quasi-identifiers (in ``attributes`` order) and its sensitive values or ``None``."""
        if len(qi) != self._width:
            raise ValueError(f"histogram: a row with {len(qi)} quasi-identifiers, expected {self._width}")
        counts = self._counts
        counts[qi] = counts.get(qi, 0) + 1
        self._rows += 1
        if sensitive is None:
            return
        code = self._codes.get(sensitive)
        if code is None:
            code = self._code(sensitive)
        if code:
            self._masks[qi] = self._masks.get(qi, 0) | code

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


class _Lattice:
    """The codes of every level of every attribute; a class is one int, ``Σ code_j << shift_j``.

    Codes number a level's labels in sorted order. Each attribute has its own
    bit field, wide enough for its level-0 codes (a coarser level has no more
    labels), so moving one attribute's code is one addition to the key.
    """

    def __init__(self, hierarchies: Sequence[Generalizer], raw: Iterable[tuple[str | None, ...]]) -> None:
        self.top = tuple(len(h.levels) - 1 for h in hierarchies)
        domains: list[set[str | None]] = [set() for _ in hierarchies]
        for row in raw:
            for domain, value in zip(domains, row, strict=True):
                domain.add(value)
        self.labels: list[list[list[str]]] = []  # [attribute][level][code] → label
        self.up: list[list[list[int]]] = []  # [attribute][level][code] → its code at level + 1
        self.values: list[list[str | None]] = []  # [attribute] → the raw values seen, sorted
        self.coded: list[list[list[int]]] = []  # [attribute][level] → code of each raw value
        self.shift: list[int] = []
        self.mask: list[int] = []
        shift = 0
        for h, domain in zip(hierarchies, domains, strict=True):
            values = sorted(domain, key=lambda v: (v is not None, v or ""))
            names = [[h.generalize(v, level) for v in values] for level in range(len(h.levels))]
            if len(h.levels) == 0 or h.levels[-1] != ANY or any(label != ANY for label in names[-1]):
                raise ValueError(f"hierarchy {h.attribute}: the last level is not '*'")
            labels = [sorted(set(level)) for level in names]
            index = [{label: code for code, label in enumerate(level)} for level in labels]
            coded = [[index[level][label] for label in names[level]] for level in range(len(names))]
            self.labels.append(labels)
            self.values.append(values)
            self.coded.append(coded)
            self.up.append([self._nested(h, level, coded[level], coded[level + 1], len(labels[level])) for level in range(len(names) - 1)])
            width = max(1, (len(labels[0]) - 1).bit_length())
            self.shift.append(shift)
            self.mask.append((1 << width) - 1)
            shift += width
        self._deltas: dict[tuple[int, int, int], list[int]] = {}
        self._heights: dict[int, list[Node]] = {}
        self.narrowing = [[len(labels[level + 1]) / len(labels[level]) if labels[level] else 1.0 for level in range(len(labels) - 1)] for labels in self.labels]

    def place(self, attribute: int, code: int) -> int:
        """What a code of ``attribute`` adds to a class key."""
        return code << self.shift[attribute]

    @staticmethod
    def _nested(h: Generalizer, level: int, finer: list[int], coarser: list[int], size: int) -> list[int]:
        up = [-1] * size
        for a, b in zip(finer, coarser, strict=True):
            if up[a] not in (-1, b):
                raise ValueError(f"hierarchy {h.attribute}: level {h.levels[level + 1]} is not a coarsening of {h.levels[level]}")
            up[a] = b
        return up

    def roll_up(self, classes: Classes, attribute: int, source: int, target: int) -> Classes:
        """The class counts with ``attribute`` raised from level ``source`` to ``target`` (the same table if equal)."""
        if source == target:
            return classes
        delta = self._deltas.get((attribute, source, target))
        if delta is None:
            delta = []
            for code in range(len(self.labels[attribute][source])):
                moved = code
                for level in range(source, target):
                    moved = self.up[attribute][level][moved]
                delta.append(self.place(attribute, moved) - self.place(attribute, code))
            self._deltas[attribute, source, target] = delta
        return _roll_up(classes, self.shift[attribute], self.mask[attribute], delta)

    def nodes_at(self, height: int) -> list[Node]:
        """Every node of ``height``, in lexicographic order."""
        nodes = self._heights.get(height)
        if nodes is None:
            nodes = self._heights[height] = self._enumerate(height)
        return nodes

    def _enumerate(self, height: int) -> list[Node]:
        room = [sum(self.top[j:]) for j in range(len(self.top) + 1)]
        nodes: list[Node] = []

        def extend(prefix: Node, left: int) -> None:
            j = len(prefix)
            if j == len(self.top):
                nodes.append(prefix)
                return
            for level in range(max(0, left - room[j + 1]), min(self.top[j], left) + 1):
                extend((*prefix, level), left - level)

        if 0 <= height <= room[0]:
            extend((), height)
        return nodes

    def predecessors(self, node: Node) -> Iterator[Node]:
        """The nodes one level below ``node`` in one attribute."""
        return ((*node[:j], level - 1, *node[j + 1 :]) for j, level in enumerate(node) if level > 0)

    def successors(self, node: Node) -> Iterator[Node]:
        """The nodes one level above ``node`` in one attribute."""
        return ((*node[:j], level + 1, *node[j + 1 :]) for j, level in enumerate(node) if level < self.top[j])

    def key(self, node: Node) -> list[dict[str | None, int]]:
        """Per attribute, raw value → what it adds to a class key at ``node``."""
        return [{v: self.place(j, c) for v, c in zip(self.values[j], self.coded[j][level], strict=True)} for j, level in enumerate(node)]

    def decode(self, key: int, node: Node) -> tuple[str, ...]:
        return tuple(self.labels[j][level][(key >> self.shift[j]) & self.mask[j]] for j, level in enumerate(node))


def _roll_up(classes: Classes, shift: int, mask: int, delta: list[int]) -> Classes:
    out: Classes = {}
    get = out.get
    for key, count in classes.items():
        moved = key + delta[(key >> shift) & mask]
        out[moved] = get(moved, 0) + count
    return out


def _suppressed(classes: Classes, k: int) -> int:
    return sum(count for count in classes.values() if count < k)


@dataclass(frozen=True, slots=True)
class _Diversity:
    withheld: dict[int, tuple[int, ...]]  # released class key → withheld sensitive attribute indices (only when some)
    l_achieved: int | None

    @property
    def pairs(self) -> int:
        return sum(map(len, self.withheld.values()))


def _diversity(histogram: Histogram, lattice: _Lattice, node: Node, classes: Classes, *, k: int, l: int) -> _Diversity:  # noqa: E741
    merged: dict[int, int] = {}
    codes = lattice.key(node)
    for raw, mask in histogram._masks.items():
        key = sum(map(getitem, codes, raw))
        if classes[key] >= k:
            merged[key] = merged.get(key, 0) | mask
    attribute_bits = histogram._attribute_bits()
    withheld: dict[int, tuple[int, ...]] = {}
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


def _bottom(histogram: Histogram, lattice: _Lattice) -> Classes:
    bottom: Classes = {}
    codes = lattice.key((0,) * len(lattice.top))
    for raw, count in histogram._counts.items():
        key = sum(map(getitem, codes, raw))
        bottom[key] = bottom.get(key, 0) + count
    return bottom


Visit = Callable[[Node, Classes], bool]  # called for each node a walk evaluates, with its classes; True stops the walk


class _Search:
    """Find the lowest height holding a node that meets the cap, evaluating as few nodes as it can.

    Nodes are evaluated along a cover tree: the targets (of one height), then
    parents one level below picked greedily to cover the most nodes of the level
    above, and so on down to the bottom; a depth-first walk rolls each child up
    from its parent's classes and keeps one class table per height in memory.
    Every node on the way has its suppression count recorded.

    Raising a level never adds suppression, so a node with a failing successor
    fails: ``tagged`` holds the nodes known to fail at heights ≥ ``floor``,
    which are never evaluated.
    """

    def __init__(self, lattice: _Lattice, bottom: Classes, k: int, cap_rows: int) -> None:
        self.lattice = lattice
        self.bottom = bottom
        self.k = k
        self.cap_rows = cap_rows
        self.root: Node = (0,) * len(lattice.top)
        self.floor = sum(lattice.top)
        self.lowest = self.floor  # the lowest height known to hold a passing node (the top always passes here)
        self.tagged: set[Node] = set()
        self.suppressed: dict[Node, int] = {}
        self._record(self.root, _suppressed(bottom, k))

    def passes(self, node: Node) -> bool:
        return self.suppressed[node] <= self.cap_rows

    def _record(self, node: Node, suppressed: int) -> None:
        self.suppressed[node] = suppressed
        if suppressed <= self.cap_rows:
            self.lowest = min(self.lowest, sum(node))
            return
        todo = [node]
        while todo:
            n = todo.pop()
            if n not in self.tagged and sum(n) >= self.floor:
                self.tagged.add(n)
                todo.extend(self.lattice.predecessors(n))

    def _lower_floor(self, height: int) -> None:
        while self.floor > height:
            self.floor -= 1
            for n in self.lattice.nodes_at(self.floor):
                if (n in self.suppressed and not self.passes(n)) or any(s in self.tagged for s in self.lattice.successors(n)):
                    self.tagged.add(n)

    def untried(self, height: int) -> list[Node]:
        self._lower_floor(height)
        return [n for n in self.lattice.nodes_at(height) if n not in self.tagged and n not in self.suppressed]

    def sweep(self, targets: Iterable[Node], visit: Visit | None = None) -> bool:
        """Evaluate ``targets`` (all of one height); True when ``visit`` stopped the walk."""
        wanted = set(targets)
        if not wanted:
            return False
        if self.root in wanted:
            return visit is not None and visit(self.root, self.bottom)
        return self._walk(self.root, self.bottom, self._cover(wanted), visit)

    def classes(self, node: Node) -> Classes:
        """The class counts of one node."""
        if node == self.root:
            return self.bottom
        found: list[Classes] = []
        self._walk(self.root, self.bottom, self._cover({node}), None, found)
        return found[0]

    def _cover(self, targets: set[Node]) -> dict[Node, list[Node]]:
        tree: dict[Node, list[Node]] = {}
        level = targets
        while level != {self.root}:
            candidates: dict[Node, set[Node]] = {}
            for node in level:
                for parent in self.lattice.predecessors(node):
                    candidates.setdefault(parent, set()).add(node)
            heap = [(-self._worth(parent, covered), parent) for parent, covered in candidates.items()]
            heapq.heapify(heap)
            uncovered = set(level)
            chosen: set[Node] = set()
            while uncovered:
                worth, parent = heapq.heappop(heap)
                covered = candidates[parent] & uncovered
                if not covered:
                    continue
                if self._worth(parent, covered) < -worth:
                    heapq.heappush(heap, (-self._worth(parent, covered), parent))
                    continue
                tree[parent] = sorted(covered, reverse=True)
                uncovered -= covered
                chosen.add(parent)
            level = chosen
        return tree

    def _worth(self, parent: Node, children: set[Node]) -> float:
        """How much a parent saves: per child, 1 / the branching of the level it rolls up (a cheap roll-up is worth more)."""
        worth = 0.0
        for child in children:
            j = next(j for j, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b)
            worth += self.lattice.narrowing[j][parent[j]]
        return worth

    def _walk(self, node: Node, classes: Classes, tree: dict[Node, list[Node]], visit: Visit | None, leaf: list[Classes] | None = None) -> bool:
        for child in tree[node]:
            j = next(j for j, (a, b) in enumerate(zip(node, child, strict=True)) if a != b)
            rolled = self.lattice.roll_up(classes, j, node[j], child[j])
            self._record(child, _suppressed(rolled, self.k))
            if visit is not None and visit(child, rolled):
                return True
            if child in tree:
                if self._walk(child, rolled, tree, visit, leaf):
                    return True
            elif leaf is not None:
                leaf.append(rolled)
        return False

    def run(self) -> list[Node]:
        """The nodes of the lowest height meeting the cap (the top node is known to meet it).

        Descends while the height below holds a passing node, jumping to the
        lowest passing node any walk met on the way, then evaluates every node of
        the final height not known to fail.
        """
        height = self.lowest
        while height > 0:
            if not self._holds_passing(height - 1):
                break
            height = self.lowest
        self.sweep(self.untried(height))
        return [n for n in self.lattice.nodes_at(height) if n in self.suppressed and self.passes(n)]

    def _holds_passing(self, height: int) -> bool:
        """Whether ``height`` (one below the lowest known to hold a passing node) holds one too.

        A passing node's successors all pass, so the likeliest candidates are the
        predecessors of passing nodes; failing those, the height above is swept in
        full (it is then likely the answer, and its failures tag most of this one).
        """
        promising = [n for n in self.untried(height) if any(s in self.suppressed and self.passes(s) for s in self.lattice.successors(n))]
        if self._until_pass(promising):
            return True
        self.sweep(self.untried(height + 1), lambda *_: self.lowest <= height)  # a node passing on the way ends the need
        return self.lowest <= height or self._until_pass(self.untried(height))

    def _until_pass(self, targets: list[Node]) -> bool:
        """Sweep ``targets`` until a node passes; whether one (or a lower node met on the way) did."""
        self.sweep(targets, lambda node, _: self.passes(node))
        return bool(targets) and self.lowest <= sum(targets[0])


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
    lattice = _Lattice(hierarchies, histogram._counts)
    search = _Search(lattice, _bottom(histogram, lattice), k, cap_rows)
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
                pairs[node] = _diversity(histogram, lattice, node, classes, k=k, l=l).pairs
            return False

        search.sweep(tied, count_withheld)
        tied = {node for node in tied if pairs[node] == min(pairs.values())}
    node = min(tied)
    return _plan(histogram, hierarchies, lattice, node, search.classes(node), k=k, l=l, cap_rows=cap_rows)


def _plan(
    histogram: Histogram,
    hierarchies: Sequence[Generalizer],
    lattice: _Lattice,
    node: Node,
    classes: Classes,
    *,
    k: int,
    l: int,  # noqa: E741 — the l of l-diversity
    cap_rows: int,
) -> Plan:
    diversity = _diversity(histogram, lattice, node, classes, k=k, l=l)
    released = {lattice.decode(key, node): diversity.withheld.get(key, ()) for key, count in classes.items() if count >= k}
    sizes = [count for count in classes.values() if count >= k]
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
