"""``MemberKeys.create_scopes``, the keys of several scopes in one transaction, on real SQLite and PostgreSQL key stores.

Its rows are the rows ``create`` writes scope by scope, its keys load back in
another instance, and it is all or nothing: a failure in any scope leaves no
key of any scope and no counted wrap.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from api.runtime import Runtime
from keys.field_cipher import FieldCipher, FieldContext
from keys.member_keys import DATA_SCOPE, MemberKeys, retention_scope
from vault.storage.engine import make_engine

NOW = datetime(2026, 11, 23, 7, 30, 15, 250_000, tzinfo=UTC)
RETENTION = [retention_scope(2031), retention_scope(2032)]


@pytest.fixture
def keys(runtime: Runtime) -> MemberKeys:
    """The runtime's key store with a fixed clock."""
    return MemberKeys(runtime.keys_engine, runtime.provider, now=lambda: NOW)


@pytest.fixture
def other_keys(runtime: Runtime) -> Iterator[MemberKeys]:
    """A second MemberKeys (own engine, own cache) on the same key store, as another process would have."""
    engine: Engine = make_engine(runtime.settings.keys_url)
    yield MemberKeys(engine, runtime.provider)
    engine.dispose()


def _stored(keys: MemberKeys, owner_prefix: str) -> list[tuple[object, ...]]:
    """The owners' key rows as the driver returns them, the owner's prefix and the wrapped key's bytes left out (its length kept)."""
    with keys.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT owner_id, scope, version, kek_version, wrapped, created_at FROM member_keys ORDER BY owner_id, scope").all()
    return [
        (owner[len(owner_prefix) :], scope, version, kek, len(wrapped), created)
        for owner, scope, version, kek, wrapped, created in rows
        if owner.startswith(owner_prefix)
    ]


def _where(owner: str, scope: str) -> FieldContext:
    return FieldContext("members", owner, scope)


def test_create_scopes_writes_the_rows_create_writes_scope_by_scope(keys: MemberKeys) -> None:
    keys.create(["a-1", "a-2", "a-3"])
    keys.create(["a-1", "a-3"], RETENTION[0])
    keys.create(["a-2"], RETENTION[1])

    keys.create_scopes({DATA_SCOPE: ["b-1", "b-2", "b-3"], RETENTION[0]: ["b-1", "b-3"], RETENTION[1]: ["b-2"]})

    assert _stored(keys, "b-") == _stored(keys, "a-")
    assert len(_stored(keys, "b-")) == 6


def test_keys_of_several_scopes_load_back_in_another_instance_and_decrypt(keys: MemberKeys, other_keys: MemberKeys) -> None:
    wanted = {DATA_SCOPE: ["m-1", "m-2"], RETENTION[0]: ["m-2"], RETENTION[1]: ["m-1", "m-2"]}
    counted = sum(keys.wrap_counts().values())

    made = keys.create_scopes(wanted)

    assert {scope: sorted(ciphers) for scope, ciphers in made.items()} == wanted
    for owner in ("m-1", "m-2"):
        loaded = other_keys.load(owner)
        assert sorted(loaded.ciphers) == sorted((scope, 1) for scope, owners in wanted.items() if owner in owners)
        for (scope, version), cipher in loaded.ciphers.items():
            sealed = made[scope][owner].encrypt(owner.encode(), _where(owner, scope))
            assert cipher.decrypt(sealed, _where(owner, scope)) == owner.encode()
            assert version == made[scope][owner].key_version == 1
    assert sum(keys.wrap_counts().values()) == counted + 5


def test_a_key_that_exists_in_one_scope_fails_the_call_and_writes_no_key_of_any_scope(keys: MemberKeys) -> None:
    keys.create(["m-2"], RETENTION[1])
    before, counted = _stored(keys, "m-"), keys.wrap_counts()

    with pytest.raises(IntegrityError):
        keys.create_scopes({DATA_SCOPE: ["m-1", "m-2"], RETENTION[0]: ["m-1"], RETENTION[1]: ["m-1", "m-2"]})

    assert _stored(keys, "m-") == before
    assert keys.wrap_counts() == counted
    assert keys.scopes_of("m-1") == []


def test_keys_are_drawn_from_the_random_source_at_once_and_short_material_writes_nothing(runtime: Runtime, keys: MemberKeys) -> None:
    drawn: list[int] = []

    def stream(n: int) -> bytes:
        drawn.append(n)
        return bytes(i % 251 for i in range(n))

    made = MemberKeys(runtime.keys_engine, runtime.provider, random=stream).create_scopes({DATA_SCOPE: ["m-1", "m-2"], RETENTION[0]: ["m-1"]})
    assert drawn == [96]
    sealed = made[RETENTION[0]]["m-1"].encrypt(b"x", _where("m-1", RETENTION[0]))
    assert FieldCipher(bytes(range(64, 96)), 1).decrypt(sealed, _where("m-1", RETENTION[0])) == b"x"  # the third key is the third 32 bytes

    counted = keys.wrap_counts()
    short = MemberKeys(runtime.keys_engine, runtime.provider, random=lambda n: bytes(n - 1))
    with pytest.raises(ValueError, match="short key material"):
        short.create_scopes({DATA_SCOPE: ["s-1", "s-2"], RETENTION[0]: ["s-1"]})
    assert _stored(keys, "s-") == []
    assert keys.wrap_counts() == counted


def test_create_scopes_of_no_owners_writes_nothing(keys: MemberKeys) -> None:
    counted = keys.wrap_counts()
    assert keys.create_scopes({}) == {}
    assert keys.create_scopes({DATA_SCOPE: [], RETENTION[0]: []}) == {DATA_SCOPE: {}, RETENTION[0]: {}}
    assert keys.wrap_counts() == counted


def test_the_returned_ciphers_are_the_cached_ones(keys: MemberKeys) -> None:
    """``create_scopes`` caches its keys as ``create`` does: the next load of the owner gives the very same ciphers."""
    made = keys.create_scopes({DATA_SCOPE: ["m-1"], RETENTION[0]: ["m-1"]})
    loaded = keys.load("m-1")
    assert loaded.get(DATA_SCOPE, 1) is made[DATA_SCOPE]["m-1"]
    assert loaded.get(RETENTION[0], 1) is made[RETENTION[0]]["m-1"]
    assert isinstance(made[DATA_SCOPE]["m-1"], FieldCipher)
