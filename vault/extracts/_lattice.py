"""The generalization lattice of an extract's quasi-identifiers, its class tables, and the search for the lowest passing height.

A *node* picks one level per quasi-identifier. A node's equivalence classes
are kept as a ``Classes`` table: one row per class, the class key packed into
int64 *words* (each attribute has its own bit field, inside one word, wide
enough for its level-0 codes; a coarser level has no more labels) and the
class's row count ``n``. A roll-up raises one attribute by some levels: it
moves that attribute's code inside its word by a looked-up delta and sums the
rows of classes that now share a key. Both steps run in Arrow
(``pyarrow.compute`` and a hash group-by), never one Python operation per
class, which is what makes near-unique data (hundreds of thousands of distinct
tuples) searchable in seconds.

``Search`` finds the lowest height holding a node whose suppression (rows in
classes smaller than k) meets the cap, evaluating as few nodes as it can; see
its docstring. Nothing here knows about rows, values or sensitive attributes:
``vault.extracts.anonymity`` builds the bottom table from its histogram and
plans from the chosen node.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

ANY = "*"
WORD_BITS = 62  # bits of an int64 word used by packed codes (deltas may be negative: keep clear of the sign)
COUNT = "n"

Node = tuple[int, ...]
Key = tuple[int, ...]  # a class key: its words


class Generalizer(Protocol):
    """A quasi-identifier's generalization hierarchy, as the engine sees it."""

    @property
    def attribute(self) -> str: ...  # the released attribute name

    @property
    def levels(self) -> tuple[str, ...]: ...  # level names, finest first; the last is "*"

    def generalize(self, value: str | None, level: int) -> str: ...  # a level-0 value's label at ``level``


class Classes:
    """A node's equivalence classes: packed keys (one int64 column per word) and row counts (``n``); keys are unique."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @classmethod
    def build(cls, words: int, keys: Sequence[Key], counts: Sequence[int]) -> Classes:
        """The classes of (key, count) pairs, summing the counts of equal keys."""
        columns = {f"w{i}": pa.array([key[i] for key in keys], type=pa.int64()) for i in range(words)}
        columns[COUNT] = pa.array(counts, type=pa.int64())
        return cls(pa.table(columns)).grouped()

    def grouped(self) -> Classes:
        names = [name for name in self.table.column_names if name != COUNT]
        summed = self.table.group_by(names, use_threads=False).aggregate([(COUNT, "sum")])
        return Classes(summed.select([*names, f"{COUNT}_sum"]).rename_columns([*names, COUNT]))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def suppressed(self, k: int) -> int:
        """Rows in classes smaller than ``k``."""
        counts = self.table.column(COUNT)
        total = pc.sum(pc.filter(counts, pc.less(counts, k))).as_py()
        return int(total or 0)

    def sizes(self) -> dict[Key, int]:
        """Class key → row count."""
        words = [self.table.column(name).to_pylist() for name in self.table.column_names if name != COUNT]
        return dict(zip(zip(*words, strict=True), self.table.column(COUNT).to_pylist(), strict=True))


class Lattice:
    """The codes of every level of every attribute; a class is a tuple of int64 words, ``Σ code_j << shift_j`` in word ``word_j``.

    Codes number a level's labels in sorted order. Each attribute has its own
    bit field inside one word, so moving one attribute's code is one addition
    to one word of the key.
    """

    def __init__(self, hierarchies: Sequence[Generalizer], domains: Sequence[Iterable[str | None]]) -> None:
        self.top = tuple(len(h.levels) - 1 for h in hierarchies)
        self.labels: list[list[list[str]]] = []  # [attribute][level][code] → label
        self.up: list[list[list[int]]] = []  # [attribute][level][code] → its code at level + 1
        self.values: list[list[str | None]] = []  # [attribute] → the raw values seen, sorted
        self.coded: list[list[list[int]]] = []  # [attribute][level] → code of each raw value
        self.word: list[int] = []
        self.shift: list[int] = []
        self.mask: list[int] = []
        word, shift = 0, 0
        for h, domain in zip(hierarchies, domains, strict=True):
            values = sorted(set(domain), key=lambda v: (v is not None, v or ""))
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
            if width > WORD_BITS:
                raise ValueError(f"hierarchy {h.attribute}: too many distinct values")
            if shift + width > WORD_BITS:
                word, shift = word + 1, 0
            self.word.append(word)
            self.shift.append(shift)
            self.mask.append((1 << width) - 1)
            shift += width
        self.words = word + 1
        self._deltas: dict[tuple[int, int, int], pa.Array] = {}
        self._heights: dict[int, list[Node]] = {}
        self.narrowing = [[len(labels[level + 1]) / len(labels[level]) if labels[level] else 1.0 for level in range(len(labels) - 1)] for labels in self.labels]

    @staticmethod
    def _nested(h: Generalizer, level: int, finer: list[int], coarser: list[int], size: int) -> list[int]:
        up = [-1] * size
        for a, b in zip(finer, coarser, strict=True):
            if up[a] not in (-1, b):
                raise ValueError(f"hierarchy {h.attribute}: level {h.levels[level + 1]} is not a coarsening of {h.levels[level]}")
            up[a] = b
        return up

    def keyer(self, node: Node) -> Callable[[tuple[str | None, ...]], Key]:
        """The class key at ``node`` of a raw (level-0 value) tuple."""
        places = [{v: c << self.shift[j] for v, c in zip(self.values[j], self.coded[j][level], strict=True)} for j, level in enumerate(node)]
        if self.words == 1:
            return lambda raw: (sum(map(dict.__getitem__, places, raw)),)
        by_word = [[(j, places[j]) for j in range(len(node)) if self.word[j] == w] for w in range(self.words)]
        return lambda raw: tuple(sum(place[raw[j]] for j, place in attributes) for attributes in by_word)

    def roll_up(self, classes: Classes, attribute: int, source: int, target: int) -> Classes:
        """The class counts with ``attribute`` raised from level ``source`` to ``target`` (the same table if equal)."""
        if source == target:
            return classes
        delta = self._deltas.get((attribute, source, target))
        if delta is None:
            moves = []
            for code in range(len(self.labels[attribute][source])):
                moved = code
                for level in range(source, target):
                    moved = self.up[attribute][level][moved]
                moves.append((moved - code) << self.shift[attribute])
            delta = self._deltas[attribute, source, target] = pa.array(moves, type=pa.int64())
        name = f"w{self.word[attribute]}"
        table = classes.table
        column = table.column(name)
        codes = pc.bit_wise_and(pc.shift_right(column, self.shift[attribute]), self.mask[attribute])
        moved = pc.add(column, pc.take(delta, codes))
        return Classes(table.set_column(table.column_names.index(name), name, moved)).grouped()

    def decode(self, key: Key, node: Node) -> tuple[str, ...]:
        return tuple(self.labels[j][level][(key[self.word[j]] >> self.shift[j]) & self.mask[j]] for j, level in enumerate(node))

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


Visit = Callable[[Node, Classes], bool]  # called for each node a walk evaluates, with its classes; True stops the walk


class Search:
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

    def __init__(self, lattice: Lattice, bottom: Classes, k: int, cap_rows: int) -> None:
        self.lattice = lattice
        self.bottom = bottom
        self.k = k
        self.cap_rows = cap_rows
        self.root: Node = (0,) * len(lattice.top)
        self.floor = sum(lattice.top)
        self.lowest = self.floor  # the lowest height known to hold a passing node (the top always passes here)
        self.tagged: set[Node] = set()
        self.suppressed: dict[Node, int] = {}
        self._record(self.root, bottom.suppressed(k))

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
            self._record(child, rolled.suppressed(self.k))
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


__all__ = ["ANY", "Classes", "Generalizer", "Key", "Lattice", "Node", "Search", "Visit"]
