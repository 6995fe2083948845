"""Small factories for the audit tests: event strategies, signing keys, an in-memory node store."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from audit.checkpoint import format_checkpoint, sign_note, verifier_key_string
from audit.event import Actor, AuditEvent, Decision, event_time
from audit.merkle import CompactRange, NodeReader, leaf_hash

ORIGIN = "member-vault/audit"
NOW = datetime(2026, 11, 22, 16, 0, 0, tzinfo=UTC)

codes = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,20}", fullmatch=True)
idents = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(event_time)

actors = st.builds(
    Actor,
    subject=idents,
    roles=st.lists(codes, max_size=3).map(tuple),
    client_id=st.none() | idents,
    acting_staff=st.none() | idents,
)

events = st.builds(
    AuditEvent,
    time=times,
    request_id=idents,
    actor=actors,
    action=codes,
    resource_type=codes,
    resource_id=st.none() | idents,
    member_id=st.none() | idents,
    fields=st.lists(codes, max_size=5).map(tuple),
    purpose=st.none() | codes,
    decision=st.sampled_from(Decision),
    reason_code=codes,
    policy_hash=idents,
    outcome=codes,
)


def sample_event(n: int = 0, /, **changes: object) -> AuditEvent:
    """A plausible event; ``n`` varies the request id and member id."""
    values: dict[str, object] = {
        "time": "2026-11-22T16:00:00Z",
        "request_id": f"req-{n:04d}",
        "actor": Actor(subject="staff:17", roles=("practitioner",), client_id="front-desk", acting_staff="staff:17"),
        "action": "read",
        "resource_type": "member",
        "resource_id": f"m-{n}",
        "member_id": f"m-{n}",
        "fields": ("allergies", "skin_type"),
        "purpose": "care",
        "decision": Decision.ALLOW,
        "reason_code": "policy_allow",
        "policy_hash": "sha256:" + "ab" * 32,
        "outcome": "ok",
    }
    values.update(changes)
    return AuditEvent(**values)  # type: ignore[arg-type]


def signing_key(label: str) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key per label (tests only)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def signed_checkpoint(size: int, root: bytes, key: Ed25519PrivateKey, name: str = ORIGIN, origin: str = ORIGIN) -> str:
    return sign_note(format_checkpoint(origin, size, root, NOW), name, key)


def verifier(key: Ed25519PrivateKey, name: str = ORIGIN) -> str:
    return verifier_key_string(name, key.public_key())


class MemoryTree:
    """The stored-node side of the tree, as a database would keep it: each node once, never changed."""

    def __init__(self) -> None:
        self.compact = CompactRange()
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    def append_leaf(self, data: bytes) -> None:
        for node in self.compact.append(leaf_hash(data)):
            assert (node.level, node.index) not in self.nodes
            self.nodes[(node.level, node.index)] = node.hash

    def reader(self, size: int) -> NodeReader:
        """A ``get_node`` that refuses any node not complete at ``size``, and counts reads."""

        def get_node(level: int, index: int) -> bytes:
            assert (index + 1) << level <= size, f"node ({level}, {index}) is not complete at size {size}"
            self.reads += 1
            return self.nodes[(level, index)]

        return get_node
