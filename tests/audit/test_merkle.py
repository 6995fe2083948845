"""The RFC 6962 tree: published vectors, a direct recursive reference, proofs from stored nodes, tamper detection."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import NodeStoreError, ProofRangeError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_at,
    verify_consistency,
    verify_inclusion,
)
from tests.audit.factories import MemoryTree

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTORS = SHARED / "vectors" / "rfc6962.json"


@dataclass(frozen=True)
class Vectors:
    leaves: list[bytes]
    leaf_hashes: list[bytes]
    roots: dict[int, bytes]
    inclusion: list[tuple[int, int, list[bytes]]]
    consistency: list[tuple[int, int, list[bytes]]]


@pytest.fixture(scope="module")
def vectors() -> Vectors:
    if not VECTORS.is_file():
        pytest.fail(f"RFC 6962 vectors not found at {VECTORS}: shared/ must sit beside the repository checkout")
    raw = json.loads(VECTORS.read_text())
    return Vectors(
        leaves=[bytes.fromhex(x) for x in raw["leaf_inputs"]],
        leaf_hashes=[bytes.fromhex(x) for x in raw["leaf_hashes"]],
        roots={int(n): bytes.fromhex(x) for n, x in raw["roots"].items()},
        inclusion=[(c["leaf_index"], c["tree_size"], [bytes.fromhex(x) for x in c["audit_path"]]) for c in raw["inclusion"]],
        consistency=[(c["first"], c["second"], [bytes.fromhex(x) for x in c["proof"]]) for c in raw["consistency"]],
    )


# -- RFC 6962 §2.1, written out as the RFC defines it ------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _k(len(leaves))
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    return ref_subproof(m, leaves, True)


# -- helpers ---------------------------------------------------------------------


def build(leaves: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for data in leaves:
        tree.append_leaf(data)
    return tree


def leaves_of(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def flips(values: list[bytes]) -> list[list[bytes]]:
    """Every copy of ``values`` with one byte of one element flipped."""
    out = []
    for i, value in enumerate(values):
        for j in range(len(value)):
            changed = bytearray(value)
            changed[j] ^= 0x01
            out.append([*values[:i], bytes(changed), *values[i + 1 :]])
    return out


def flip(value: bytes, at: int) -> bytes:
    changed = bytearray(value)
    changed[at] ^= 0x80
    return bytes(changed)


# -- published vectors -----------------------------------------------------------


def test_vector_leaf_hashes_and_roots(vectors: Vectors) -> None:
    leaves = vectors.leaves
    assert [leaf_hash(x) for x in leaves] == vectors.leaf_hashes
    tree = build(leaves)
    assert sorted(vectors.roots) == list(range(9))
    for size, expected in vectors.roots.items():
        assert root(leaf_hash(x) for x in leaves[:size]) == expected
        assert root_at(size, tree.reader(size)) == expected
        assert ref_mth(leaves[:size]) == expected


def test_vector_inclusion_proofs(vectors: Vectors) -> None:
    tree = build(vectors.leaves)
    assert len(vectors.inclusion) == 36
    for index, size, expected in vectors.inclusion:
        assert inclusion_proof(index, size, tree.reader(size)) == expected, (index, size)
        assert ref_path(index, vectors.leaves[:size]) == expected
        assert verify_inclusion(leaf_hash(vectors.leaves[index]), index, size, expected, vectors.roots[size])


def test_vector_consistency_proofs(vectors: Vectors) -> None:
    tree = build(vectors.leaves)
    assert len(vectors.consistency) == 36
    for first, second, expected in vectors.consistency:
        assert consistency_proof(first, second, tree.reader(second)) == expected, (first, second)
        assert ref_proof(first, vectors.leaves[:second]) == expected
        assert verify_consistency(first, second, expected, vectors.roots[first], vectors.roots[second])


# -- the fast code against the RFC's definitions ------------------------------------


@settings(deadline=None, max_examples=150)
@given(st.integers(0, 300), st.data())
def test_stored_node_proofs_agree_with_the_rfc_definitions(n: int, data: st.DataObject) -> None:
    leaves = data.draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n), label="leaves")
    tree = build(leaves)
    assert tree.compact.root() == ref_mth(leaves)
    assert root(leaf_hash(x) for x in leaves) == ref_mth(leaves)
    size = data.draw(st.integers(0, n), label="size")
    assert root_at(size, tree.reader(size)) == ref_mth(leaves[:size])
    if size:
        index = data.draw(st.integers(0, size - 1), label="index")
        assert inclusion_proof(index, size, tree.reader(size)) == ref_path(index, leaves[:size])
        first = data.draw(st.integers(1, size), label="first")
        assert consistency_proof(first, size, tree.reader(size)) == ref_proof(first, leaves[:size])


def test_appending_leaf_by_leaf_gives_every_root() -> None:
    leaves = leaves_of(130)
    compact = CompactRange()
    assert compact.root() == EMPTY_ROOT
    for n, data in enumerate(leaves, start=1):
        compact.append(leaf_hash(data))
        assert compact.size == n
        assert compact.root() == ref_mth(leaves[:n])


def test_append_returns_exactly_the_nodes_it_completes() -> None:
    compact = CompactRange()
    hashes = [leaf_hash(x) for x in leaves_of(8)]
    returned = [[(node.level, node.index) for node in compact.append(h)] for h in hashes]
    assert returned == [
        [(0, 0)],
        [(0, 1), (1, 0)],
        [(0, 2)],
        [(0, 3), (1, 1), (2, 0)],
        [(0, 4)],
        [(0, 5), (1, 2)],
        [(0, 6)],
        [(0, 7), (1, 3), (2, 1), (3, 0)],
    ]
    top = compact.append(hashes[0])
    assert [(node.level, node.index) for node in top] == [(0, 8)]


def test_every_stored_node_hashes_its_leaf_range() -> None:
    leaves = leaves_of(77)
    tree = build(leaves)
    for (level, index), value in tree.nodes.items():
        assert value == ref_mth(leaves[index << level : (index + 1) << level])
    assert len(tree.nodes) == sum(77 >> level for level in range(8))


def test_compact_range_resumes_from_stored_nodes() -> None:
    leaves = leaves_of(100)
    tree = build(leaves[:61])
    resumed = CompactRange.from_stored(61, tree.reader(61))
    assert resumed.size == 61
    assert resumed.root() == ref_mth(leaves[:61])
    for data in leaves[61:]:
        resumed.append(leaf_hash(data))
    assert resumed.root() == ref_mth(leaves)


def test_proofs_read_a_logarithmic_number_of_nodes() -> None:
    tree = build(leaves_of(1500))
    for size in (1, 2, 3, 1023, 1024, 1025, 1499, 1500):
        bound = 2 * size.bit_length()
        for index in {0, size // 2, size - 1}:
            tree.reads = 0
            inclusion_proof(index, size, tree.reader(size))
            assert tree.reads <= bound
        for first in {1, size // 3 or 1, size - 1 or 1, size}:
            tree.reads = 0
            consistency_proof(first, size, tree.reader(size))
            assert tree.reads <= bound
        tree.reads = 0
        root_at(size, tree.reader(size))
        assert tree.reads == size.bit_count()


# -- every proof verifies, every flipped byte fails ----------------------------------

EVERY = 64  # every size up to this, every index, every pair of sizes


def test_every_inclusion_proof_verifies_and_fails_once_a_byte_flips() -> None:
    leaves = leaves_of(EVERY)
    tree = build(leaves)
    for size in range(1, EVERY + 1):
        root_n = root_at(size, tree.reader(size))
        for index in range(size):
            leaf = leaf_hash(leaves[index])
            proof = inclusion_proof(index, size, tree.reader(size))
            assert verify_inclusion(leaf, index, size, proof, root_n)
            assert not any(verify_inclusion(leaf, index, size, bad, root_n) for bad in flips(proof))
            assert not any(verify_inclusion(leaf, index, size, proof, flip(root_n, at)) for at in range(32))
            assert not any(verify_inclusion(flip(leaf, at), index, size, proof, root_n) for at in range(32))


def test_every_consistency_proof_verifies_and_fails_once_a_byte_flips() -> None:
    tree = build(leaves_of(EVERY))
    roots = [root_at(n, tree.reader(n)) for n in range(EVERY + 1)]
    for second in range(1, EVERY + 1):
        for first in range(1, second + 1):
            proof = consistency_proof(first, second, tree.reader(second))
            assert verify_consistency(first, second, proof, roots[first], roots[second])
            assert not any(verify_consistency(first, second, bad, roots[first], roots[second]) for bad in flips(proof))
            for at in range(32):
                assert not verify_consistency(first, second, proof, flip(roots[first], at), roots[second])
                assert not verify_consistency(first, second, proof, roots[first], flip(roots[second], at))


def test_proofs_for_other_positions_do_not_verify() -> None:
    leaves = leaves_of(EVERY)
    tree = build(leaves)
    for size in range(2, EVERY + 1):
        root_n = root_at(size, tree.reader(size))
        for index in range(size):
            proof = inclusion_proof(index, size, tree.reader(size))
            others = [i for i in range(size) if i != index]
            assert not any(verify_inclusion(leaf_hash(leaves[index]), i, size, proof, root_n) for i in others)


# -- malformed proofs and numbers ---------------------------------------------------


def test_malformed_inclusion_proofs_do_not_verify() -> None:
    tree = build(leaves_of(9))
    r9 = root_at(9, tree.reader(9))
    leaf = leaf_hash(leaves_of(1)[0])
    proof = inclusion_proof(0, 9, tree.reader(9))
    assert verify_inclusion(leaf, 0, 9, proof, r9)
    assert not verify_inclusion(leaf, 0, 9, proof[:-1], r9)
    assert not verify_inclusion(leaf, 0, 9, [*proof, proof[0]], r9)
    assert not verify_inclusion(leaf, 9, 9, proof, r9)
    assert not verify_inclusion(leaf, -1, 9, proof, r9)
    assert not verify_inclusion(leaf, 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(leaf, 0, 9, [*proof[:-1], proof[-1][:31]], r9)
    assert not verify_inclusion(leaf[:31], 0, 9, proof, r9)
    assert not verify_inclusion(leaf, 0, 9, proof, r9 + b"\x00")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [leaf], leaf)


def test_malformed_consistency_proofs_do_not_verify() -> None:
    tree = build(leaves_of(9))
    r = [root_at(n, tree.reader(n)) for n in range(10)]
    proof = consistency_proof(3, 9, tree.reader(9))
    assert verify_consistency(3, 9, proof, r[3], r[9])
    assert not verify_consistency(3, 9, proof[:-1], r[3], r[9])
    assert not verify_consistency(3, 9, [*proof, proof[0]], r[3], r[9])
    assert not verify_consistency(3, 9, [], r[3], r[9])
    assert not verify_consistency(9, 3, proof, r[9], r[3])
    assert not verify_consistency(-1, 9, [], EMPTY_ROOT, r[9])
    assert not verify_consistency(3, 9, [p[:16] for p in proof], r[3], r[9])
    assert not verify_consistency(4, 9, proof, r[3], r[9])


def test_trivial_consistency_cases() -> None:
    tree = build(leaves_of(9))
    r = [root_at(n, tree.reader(n)) for n in range(10)]
    assert verify_consistency(9, 9, [], r[9], r[9])
    assert not verify_consistency(9, 9, [], r[8], r[9])
    assert not verify_consistency(9, 9, [r[9]], r[9], r[9])
    assert verify_consistency(0, 9, [], EMPTY_ROOT, r[9])
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_consistency(0, 9, [], r[1], r[9])
    assert not verify_consistency(0, 9, [r[1]], EMPTY_ROOT, r[9])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)])
def test_inclusion_proof_refuses_out_of_range_numbers(index: int, size: int) -> None:
    tree = build(leaves_of(5))
    with pytest.raises(ProofRangeError, match="leaf index"):
        inclusion_proof(index, size, tree.reader(5))


@pytest.mark.parametrize(("first", "second"), [(0, 5), (6, 5), (-1, 5), (0, 0)])
def test_consistency_proof_refuses_out_of_range_numbers(first: int, second: int) -> None:
    tree = build(leaves_of(5))
    with pytest.raises(ProofRangeError, match="first"):
        consistency_proof(first, second, tree.reader(5))


def test_equal_sizes_give_an_empty_consistency_proof() -> None:
    tree = build(leaves_of(5))
    assert consistency_proof(5, 5, tree.reader(5)) == []


def test_a_corrupt_stored_node_is_reported() -> None:
    with pytest.raises(NodeStoreError, match=r"stored node \(2, 0\) is not a 32-byte hash"):
        root_at(4, lambda level, index: b"short")
    with pytest.raises(ProofRangeError, match="negative"):
        root_at(-1, lambda level, index: b"")


def test_append_refuses_a_hash_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"\x00" * 31)


def test_hash_prefixes_are_domain_separated() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert leaf_hash(left + right) != node_hash(left, right)
