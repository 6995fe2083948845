"""``MemberKeys.load_many``, the bulk read of extracts, on real SQLite and PostgreSQL key stores: liveness, scope, the cache left alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, update

from api.runtime import Runtime
from keys.errors import DecryptionError
from keys.field_cipher import FieldContext
from keys.member_keys import DATA_SCOPE, MemberKeys, retention_scope
from keys.models import MemberKeyRow
from vault.storage.engine import make_engine

WHERE = FieldContext("members", "m-0001", "city")


@pytest.fixture
def other_keys(runtime: Runtime) -> Iterator[MemberKeys]:
    """A second MemberKeys (own engine, own cache) on the same key store, as another process would have."""
    engine: Engine = make_engine(runtime.settings.keys_url)
    yield MemberKeys(engine, runtime.provider)
    engine.dispose()


def test_load_many_returns_each_owners_live_key_of_the_scope_and_leaves_out_the_rest(runtime: Runtime, other_keys: MemberKeys) -> None:
    made = runtime.keys.create(["m-1", "m-2", "m-3"])
    runtime.keys.create(["m-1"], retention_scope(2031))
    found = other_keys.load_many(["m-3", "m-1", "m-2", "m-unknown"])
    assert sorted(found) == ["m-1", "m-2", "m-3"]
    for owner, keyset in found.items():
        assert list(keyset.ciphers) == [(DATA_SCOPE, 1)]
        sealed = made[owner].encrypt(owner.encode(), WHERE)
        assert keyset.get(DATA_SCOPE, 1).decrypt(sealed, WHERE) == owner.encode()
    assert other_keys.load_many([]) == {}


def test_a_key_shredded_by_another_instance_is_absent_from_the_next_bulk_read(runtime: Runtime, other_keys: MemberKeys) -> None:
    """The liveness rule: a key shredded by one process is dead in every process on the next read, bulk reads included."""
    runtime.keys.create(["m-a", "m-b"])
    assert sorted(other_keys.load_many(["m-a", "m-b"])) == ["m-a", "m-b"]
    assert runtime.keys.shred("m-a", [DATA_SCOPE]) == 1
    assert sorted(other_keys.load_many(["m-a", "m-b"])) == ["m-b"]


def test_a_bulk_read_leaves_the_cache_of_interactive_readers_alone(runtime: Runtime) -> None:
    keys = MemberKeys(runtime.keys_engine, runtime.provider, cache_size=2)
    keys.create(["m-x"])
    runtime.keys.create([f"m-{i:03d}" for i in range(50)])
    cached = keys.load("m-x").get(DATA_SCOPE, 1)
    assert len(keys.load_many([f"m-{i:03d}" for i in range(50)])) == 50
    assert keys.load("m-x").get(DATA_SCOPE, 1) is cached  # still the cached cipher: the bulk read put nothing in the cache


def test_a_wrapped_key_moved_to_another_owner_does_not_unwrap_in_a_bulk_read(runtime: Runtime, other_keys: MemberKeys) -> None:
    runtime.keys.create(["m-a", "m-b"])
    with runtime.keys_engine.begin() as conn:
        wrapped = conn.execute(MemberKeyRow.__table__.select().where(MemberKeyRow.owner_id == "m-a")).one().wrapped
        conn.execute(update(MemberKeyRow).where(MemberKeyRow.owner_id == "m-b").values(wrapped=wrapped))
    with pytest.raises(DecryptionError):
        other_keys.load_many(["m-a", "m-b"])
