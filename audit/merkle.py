"""The RFC 6962 Merkle tree: hashes, stored nodes, proofs and their verification.

Hashes (RFC 6962 §2.1, SHA-256, 32 bytes each)::

    leaf_hash(d)    = SHA-256(0x00 ‖ d)
    node_hash(l, r) = SHA-256(0x01 ‖ l ‖ r)
    MTH({})         = SHA-256("")

Node addressing, for storage. The node ``(level, index)`` is the complete
subtree over the leaves ``[index · 2^level, (index + 1) · 2^level)``; level 0
holds the leaf hashes. A node exists once its last leaf is appended and never
changes afterwards, so a store keeps each node once, append-only, keyed by
``(level, index)``. ``CompactRange.append`` returns exactly the nodes a new
leaf completes (the leaf itself and every parent it closes, at most
log2(n) + 1), which the sequencer stores.

Every subtree that RFC 6962's recursion visits in a tree of size ``n`` is a
range ``[begin, end)`` with ``begin`` a multiple of the smallest power of two
≥ ``end − begin``. Its hash is the right fold (``node_hash(a, node_hash(b, …))``)
of the complete nodes that tile it, largest first — one per set bit of
``end − begin``. A proof therefore reads O(log n) stored nodes through a
``get_node(level, index) -> bytes`` callback: the path's complete siblings
plus the tiles of at most one incomplete right-edge sibling. ``get_node`` is
only asked for nodes that are complete at the size in question.

Proof generation raises ``ProofRangeError`` for numbers that name no leaf or
tree. Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) never raises: any
malformed input — a negative number, ``index ≥ size``, ``m > n``, a proof of
the wrong length, a hash that is not 32 bytes — simply does not verify and
gives ``False``. The trivial consistency cases: ``m = n`` needs an empty proof
and equal roots; ``m = 0`` needs an empty proof and ``root_m = MTH({})``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from audit.errors import NodeStoreError, ProofRangeError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeReader = Callable[[int, int], bytes]
"""``get_node(level, index)``: the stored hash of a complete node."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, slots=True)
class Node:
    """A complete subtree: ``level``, ``index`` (see the module docstring) and its hash."""

    level: int
    index: int
    hash: bytes


class CompactRange:
    """The right edge of a growing tree: O(log n) state, one append per leaf.

    Holds the hashes of the complete nodes that tile ``[0, size)``, largest
    first — one per set bit of ``size``.
    """

    __slots__ = ("_edge", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._edge: list[tuple[int, bytes]] = []

    @classmethod
    def from_stored(cls, size: int, get_node: NodeReader) -> CompactRange:
        """Resume at ``size`` from stored nodes (popcount(size) reads)."""
        if size < 0:
            raise ProofRangeError("tree size must not be negative")
        compact = cls()
        compact._size = size
        compact._edge = [(node.level, node.hash) for node in _tiles(0, size, get_node)]
        return compact

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[Node]:
        """Add the next leaf hash; return the nodes it completes, the leaf first, each parent after its children."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        index = self._size
        completed = [Node(0, index, leaf)]
        level, current = 0, leaf
        while self._edge and self._edge[-1][0] == level:
            _, left = self._edge.pop()
            current = node_hash(left, current)
            level += 1
            completed.append(Node(level, index >> level, current))
        self._edge.append((level, current))
        self._size += 1
        return completed

    def append_subtree(self, level: int, subtree: bytes) -> None:
        """Add a complete subtree of ``2**level`` leaves whose root is ``subtree``, at a size that is a multiple of its width.

        ``append_subtree(0, leaf)`` adds one leaf without listing the nodes it
        completes (what offline verification needs, and faster).
        """
        width = 1 << level
        if len(subtree) != HASH_SIZE or self._size % width:
            raise ValueError("a subtree is a 32-byte hash appended at a multiple of its width")
        current = subtree
        while self._edge and self._edge[-1][0] == level:
            _, left = self._edge.pop()
            current = node_hash(left, current)
            level += 1
        self._edge.append((level, current))
        self._size += width

    def root(self) -> bytes:
        return _fold([h for _, h in self._edge])


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of the leaves with these hashes (any number, zero included)."""
    compact = CompactRange()
    for leaf in leaf_hashes:
        compact.append(leaf)
    return compact.root()


def root_at(size: int, get_node: NodeReader) -> bytes:
    """MTH of the first ``size`` leaves, from stored nodes (popcount(size) reads)."""
    if size < 0:
        raise ProofRangeError("tree size must not be negative")
    return _range_hash(0, size, get_node)


def inclusion_proof(index: int, size: int, get_node: NodeReader) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf side first."""
    if not 0 <= index < size:
        raise ProofRangeError("leaf index must be at least 0 and below the tree size")
    path: list[bytes] = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + _split(end - begin)
        if index < mid:
            path.append(_range_hash(mid, end, get_node))
            end = mid
        else:
            path.append(_range_hash(begin, mid, get_node))
            begin = mid
    path.reverse()
    return path


def consistency_proof(first: int, second: int, get_node: NodeReader) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second]) for 1 ≤ first ≤ second (empty when they are equal)."""
    if not 1 <= first <= second:
        raise ProofRangeError("consistency proof needs 1 ≤ first ≤ second")
    proof: list[bytes] = []
    begin, end, whole = 0, second, True
    while first - begin != end - begin:
        mid = begin + _split(end - begin)
        if first <= mid:
            proof.append(_range_hash(mid, end, get_node))
            end = mid
        else:
            proof.append(_range_hash(begin, mid, get_node))
            begin, whole = mid, False
    if not whole:
        proof.append(_range_hash(begin, end, get_node))
    proof.reverse()
    return proof


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` place ``leaf_hash`` at ``index`` in the tree of ``size`` with ``root``?"""
    if not 0 <= index < size or not _hashes(leaf_hash, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of size ``second`` with ``second_root`` an extension of ``first``'s?"""
    if not 0 <= first <= second or not _hashes(first_root, second_root, *proof):
        return False
    if first == second:
        return not proof and hmac.compare_digest(first_root, second_root)
    if first == 0:
        return not proof and hmac.compare_digest(first_root, EMPTY_ROOT)
    if not proof:
        return False
    path = [first_root, *proof] if first & (first - 1) == 0 else list(proof)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root)


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _tiles(begin: int, end: int, get_node: NodeReader) -> list[Node]:
    """The complete nodes tiling ``[begin, end)``, largest first (``begin`` aligned as the module docstring says)."""
    tiles: list[Node] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        index = begin >> level
        value = get_node(level, index)
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise NodeStoreError(f"stored node ({level}, {index}) is not a 32-byte hash")
        tiles.append(Node(level, index, value))
        begin += 1 << level
    return tiles


def _range_hash(begin: int, end: int, get_node: NodeReader) -> bytes:
    return _fold([node.hash for node in _tiles(begin, end, get_node)])


def _fold(hashes: list[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    current = hashes[-1]
    for left in reversed(hashes[:-1]):
        current = node_hash(left, current)
    return current


def _hashes(*values: bytes) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Node",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_at",
    "verify_consistency",
    "verify_inclusion",
]
