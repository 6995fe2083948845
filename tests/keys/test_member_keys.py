"""Member data keys on real SQLite and PostgreSQL key stores: wrap, load, shred, count, rotate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from api.runtime import Runtime
from keys.errors import DecryptionError, KeyNotFoundError
from keys.field_cipher import FieldCipher, FieldContext
from keys.member_keys import DATA_SCOPE, MemberKeys, retention_scope
from keys.models import MemberKeyRow
from keys.rotation import RotationReport, rotate_kek
from vault.storage.engine import make_engine

OWNERS = ["m-0001", "m-0002", "m-0003", "m-0004", "m-0005"]
RETENTION = retention_scope(2031)


def where(owner: str) -> FieldContext:
    return FieldContext("members", owner, "phone")


def plaintext(owner: str) -> bytes:
    return f"+86 138 0013 {owner[-4:]}".encode()


@pytest.fixture
def other_engine(runtime: Runtime) -> Iterator[Engine]:
    """A second engine on the same key store, as another process would have."""
    engine = make_engine(runtime.settings.keys_url)
    yield engine
    engine.dispose()


@pytest.fixture
def other_keys(runtime: Runtime, other_engine: Engine) -> MemberKeys:
    """A second MemberKeys (own engine, own cache) with the same KEK provider."""
    return MemberKeys(other_engine, runtime.provider)


def encrypt_for(made: dict[str, FieldCipher]) -> dict[str, bytes]:
    return {owner: cipher.encrypt(plaintext(owner), where(owner)) for owner, cipher in made.items()}


def assert_all_decrypt(keys: MemberKeys, ciphertexts: dict[str, bytes]) -> None:
    for owner, ciphertext in ciphertexts.items():
        assert keys.load(owner).get(DATA_SCOPE, 1).decrypt(ciphertext, where(owner)) == plaintext(owner)


def stored_row(engine: Engine, owner: str, scope: str = DATA_SCOPE) -> tuple[int, bytes]:
    with engine.connect() as conn:
        kek_version, wrapped = conn.execute(
            select(MemberKeyRow.kek_version, MemberKeyRow.wrapped).where(MemberKeyRow.owner_id == owner, MemberKeyRow.scope == scope)
        ).one()
    return int(kek_version), bytes(wrapped)


def overwrite_row(engine: Engine, owner: str, scope: str, kek_version: int, wrapped: bytes) -> None:
    with engine.begin() as conn:
        changed = conn.execute(
            update(MemberKeyRow).where(MemberKeyRow.owner_id == owner, MemberKeyRow.scope == scope).values(kek_version=kek_version, wrapped=wrapped)
        ).rowcount
    assert changed == 1


# -- create and load ----------------------------------------------------------------------


def test_created_keys_load_back_in_another_instance_and_decrypt(runtime: Runtime, other_keys: MemberKeys) -> None:
    made = runtime.keys.create(OWNERS)
    ciphertexts = encrypt_for(made)

    assert sorted(made) == OWNERS
    for owner in OWNERS:
        assert set(other_keys.load(owner).ciphers) == {(DATA_SCOPE, 1)}
        assert set(other_keys.load(owner, scopes=(DATA_SCOPE,)).ciphers) == {(DATA_SCOPE, 1)}
    assert_all_decrypt(other_keys, ciphertexts)
    assert_all_decrypt(runtime.keys, ciphertexts)


def test_each_owner_gets_a_key_of_their_own(runtime: Runtime) -> None:
    made = runtime.keys.create(["m-a", "m-b"])
    ciphertext = made["m-a"].encrypt(b"secret", where("m-a"))

    with pytest.raises(DecryptionError):
        made["m-b"].decrypt(ciphertext, where("m-a"))


def test_the_stored_row_holds_only_the_wrapped_key(runtime: Runtime, other_keys: MemberKeys) -> None:
    runtime.keys.create(["m-a"])

    kek_version, wrapped = stored_row(runtime.keys_engine, "m-a")

    assert kek_version == 1
    assert len(wrapped) == 12 + 32 + 16
    # The raw key is not in the row: a FieldCipher built from the row's bytes does not decrypt.
    ciphertext = other_keys.load("m-a").get(DATA_SCOPE, 1).encrypt(b"x", where("m-a"))
    for start in range(len(wrapped) - 31):
        with pytest.raises(DecryptionError):
            FieldCipher(wrapped[start : start + 32], 1).decrypt(ciphertext, where("m-a"))


def test_load_of_an_owner_without_keys_is_empty(runtime: Runtime) -> None:
    found = runtime.keys.load("m-nobody")

    assert found.owner_id == "m-nobody"
    assert found.ciphers == {}
    with pytest.raises(KeyNotFoundError) as caught:
        found.get(DATA_SCOPE, 1)
    assert str(caught.value) == "no live data key version 1 for this member"


# -- shredding ------------------------------------------------------------------------------


def test_shred_in_one_instance_kills_the_key_cached_in_another(runtime: Runtime, other_keys: MemberKeys) -> None:
    made = runtime.keys.create(["m-a", "m-b"])
    ciphertexts = encrypt_for(made)
    assert_all_decrypt(other_keys, ciphertexts)  # other_keys now holds both keys in its cache

    assert runtime.keys.shred("m-a", [DATA_SCOPE]) == 1

    after = other_keys.load("m-a")
    assert after.ciphers == {}
    with pytest.raises(KeyNotFoundError):
        after.get(DATA_SCOPE, 1)
    with pytest.raises(KeyNotFoundError):
        runtime.keys.load("m-a").get(DATA_SCOPE, 1)
    assert_all_decrypt(other_keys, {"m-b": ciphertexts["m-b"]})


def test_shred_is_idempotent_and_only_touches_the_named_scopes(runtime: Runtime) -> None:
    runtime.keys.create(["m-a"])
    runtime.keys.get_or_create("m-a", RETENTION)

    assert runtime.keys.shred("m-a", [RETENTION]) == 1
    assert runtime.keys.shred("m-a", [RETENTION]) == 0
    assert runtime.keys.scopes_of("m-a") == [DATA_SCOPE]
    assert runtime.keys.shred("m-a", [DATA_SCOPE, RETENTION]) == 1
    assert runtime.keys.scopes_of("m-a") == []


def test_live_owners_excludes_shredded_and_unknown_owners(runtime: Runtime) -> None:
    runtime.keys.create(["m-a", "m-b", "m-c"])
    runtime.keys.shred("m-b", [DATA_SCOPE])

    assert runtime.keys.live_owners(["m-a", "m-b", "m-c", "m-unknown", "m-a"]) == {"m-a", "m-c"}
    assert runtime.keys.live_owners([]) == set()
    assert runtime.keys.live_owners(["m-a", "m-c"], scope=RETENTION) == set()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_shredded_wrapped_key_does_not_linger_in_the_sqlite_files(runtime: Runtime) -> None:
    runtime.keys.create(["m-a", "m-b"])
    _, wrapped = stored_row(runtime.keys_engine, "m-a")

    runtime.keys.shred("m-a", [DATA_SCOPE])

    database = Path(str(make_url(runtime.settings.keys_url).database))
    files = [p for p in (database, database.with_name(database.name + "-wal")) if p.exists()]
    assert files[0] == database
    for path in files:
        assert wrapped not in path.read_bytes(), path.name


# -- relocation ------------------------------------------------------------------------------


def test_wrapped_key_copied_onto_another_owners_row_does_not_unwrap(runtime: Runtime, other_keys: MemberKeys) -> None:
    made = runtime.keys.create(["m-a", "m-b"])
    ciphertexts = encrypt_for(made)
    assert_all_decrypt(runtime.keys, ciphertexts)  # both keys cached under their own rows
    kek_version, wrapped = stored_row(runtime.keys_engine, "m-a")

    overwrite_row(runtime.keys_engine, "m-b", DATA_SCOPE, kek_version, wrapped)

    for keys in (runtime.keys, other_keys):
        with pytest.raises(DecryptionError):
            keys.load("m-b")
    assert_all_decrypt(other_keys, {"m-a": ciphertexts["m-a"]})


def test_wrapped_key_copied_onto_another_scope_of_the_same_owner_does_not_unwrap(runtime: Runtime, other_keys: MemberKeys) -> None:
    runtime.keys.create(["m-a"])
    runtime.keys.get_or_create("m-a", RETENTION)
    kek_version, wrapped = stored_row(runtime.keys_engine, "m-a", DATA_SCOPE)

    overwrite_row(runtime.keys_engine, "m-a", RETENTION, kek_version, wrapped)

    with pytest.raises(DecryptionError):
        other_keys.load("m-a", scopes=(RETENTION,))
    assert set(other_keys.load("m-a", scopes=(DATA_SCOPE,)).ciphers) == {(DATA_SCOPE, 1)}


def test_wrapped_key_relabelled_with_an_unknown_kek_version_does_not_unwrap(runtime: Runtime, other_keys: MemberKeys) -> None:
    runtime.keys.create(["m-a"])
    _, wrapped = stored_row(runtime.keys_engine, "m-a")

    overwrite_row(runtime.keys_engine, "m-a", DATA_SCOPE, 9, wrapped)

    with pytest.raises(DecryptionError):
        other_keys.load("m-a")


# -- the KEK wrap counter ------------------------------------------------------------------


def test_every_wrap_is_counted_and_the_count_survives_a_restart(runtime: Runtime) -> None:
    base = runtime.keys.wrap_counts()
    assert set(base) <= {1}  # only KEK version 1 has wrapped anything yet
    roots = base.get(1, 0)

    runtime.keys.create(OWNERS[:3])
    assert runtime.keys.wrap_counts() == {1: roots + 3}
    runtime.keys.get_or_create("m-0001", RETENTION)
    assert runtime.keys.wrap_counts() == {1: roots + 4}
    runtime.keys.get_or_create("m-0001", RETENTION)  # exists already: no wrap
    assert runtime.keys.wrap_counts() == {1: roots + 4}
    runtime.keys.root_key("pseudonym-test")
    assert runtime.keys.wrap_counts() == {1: roots + 5}
    runtime.keys.create([])
    assert runtime.keys.wrap_counts() == {1: roots + 5}

    restarted_engine = make_engine(runtime.settings.keys_url)
    try:
        assert MemberKeys(restarted_engine, runtime.provider).wrap_counts() == {1: roots + 5}
    finally:
        restarted_engine.dispose()


def test_rewrapping_counts_wraps_under_the_new_kek(runtime: Runtime) -> None:
    roots = runtime.keys.wrap_counts().get(1, 0)
    runtime.keys.create(OWNERS)
    runtime.provider.rotate()

    runtime.keys.rewrap_batch()

    assert runtime.keys.wrap_counts() == {1: roots + 5, 2: roots + 5}


# -- the bounded cache ------------------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [0, 1, 2])
def test_a_small_cache_still_loads_every_key(runtime: Runtime, cache_size: int) -> None:
    keys = MemberKeys(runtime.keys_engine, runtime.provider, cache_size=cache_size)
    ciphertexts = encrypt_for(keys.create(OWNERS))

    assert_all_decrypt(keys, ciphertexts)
    assert_all_decrypt(keys, dict(reversed(ciphertexts.items())))
    assert_all_decrypt(keys, ciphertexts)


# -- retention keys ----------------------------------------------------------------------------


def test_get_or_create_returns_the_same_retention_key_twice(runtime: Runtime, other_keys: MemberKeys) -> None:
    runtime.keys.create(["m-a"])
    first = runtime.keys.get_or_create("m-a", RETENTION)
    ciphertext = first.encrypt(b"treatment", where("m-a"))

    again = runtime.keys.get_or_create("m-a", RETENTION)
    elsewhere = other_keys.get_or_create("m-a", RETENTION)

    assert again.decrypt(ciphertext, where("m-a")) == b"treatment"
    assert elsewhere.decrypt(ciphertext, where("m-a")) == b"treatment"
    assert sorted(runtime.keys.scopes_of("m-a")) == [DATA_SCOPE, RETENTION]
    with pytest.raises(DecryptionError):
        runtime.keys.load("m-a").get(DATA_SCOPE, 1).decrypt(ciphertext, where("m-a"))


def test_retention_scope_names_the_year() -> None:
    assert retention_scope(2031) == "retention-2031"
    assert retention_scope(999) == "retention-0999"


# -- KEK rotation ---------------------------------------------------------------------------------


def test_rewrap_batch_moves_every_key_to_the_new_kek_and_then_returns_zero(runtime: Runtime, other_keys: MemberKeys) -> None:
    root_before = runtime.keys.root_key("blind-index")
    roots = runtime.keys.kek_references().get(1, 0)
    ciphertexts = encrypt_for(runtime.keys.create(OWNERS))
    assert runtime.keys.kek_references() == {1: roots + 5}

    assert runtime.provider.rotate() == 2
    assert runtime.keys.rewrap_batch() == roots + 5

    assert runtime.keys.kek_references() == {2: roots + 5}
    assert runtime.keys.rewrap_batch() == 0
    assert_all_decrypt(other_keys, ciphertexts)
    assert_all_decrypt(runtime.keys, ciphertexts)
    assert other_keys.root_key("blind-index") == root_before


def test_rewrap_batch_respects_its_limit(runtime: Runtime) -> None:
    runtime.keys.create(OWNERS)
    runtime.provider.rotate()
    roots = runtime.keys.kek_references().get(1, 0) - 5

    first = runtime.keys.rewrap_batch(limit=2)
    assert first == 2 + roots
    assert runtime.keys.kek_references() == {1: 3, 2: 2 + roots}
    assert runtime.keys.rewrap_batch(limit=2) == 2
    assert runtime.keys.rewrap_batch(limit=2) == 1
    assert runtime.keys.rewrap_batch(limit=2) == 0
    assert runtime.keys.kek_references() == {2: 5 + roots}


def test_rotate_kek_rewraps_everything_retires_the_old_version_and_keys_still_load(runtime: Runtime, other_keys: MemberKeys) -> None:
    roots = runtime.keys.kek_references().get(1, 0)
    ciphertexts = encrypt_for(runtime.keys.create(OWNERS))
    progress: list[tuple[int, int]] = []

    report = rotate_kek(runtime.keys, batch=2, progress=lambda done, total: progress.append((done, total)))

    assert report == RotationReport(kek_version=2, started_new_version=True, rewrapped=roots + 5, retired=(1,))
    assert runtime.keys.kek_references() == {2: roots + 5}
    assert [(info.version, info.retired) for info in runtime.provider.versions()] == [(1, True), (2, False)]
    assert progress[0] == (0, roots + 5)
    assert progress[-1] == (roots + 5, roots + 5)
    assert_all_decrypt(other_keys, ciphertexts)
    assert_all_decrypt(runtime.keys, ciphertexts)


def test_a_key_store_row_restored_from_before_rotation_no_longer_unwraps(runtime: Runtime, other_keys: MemberKeys) -> None:
    """H20: after the old KEK is retired, a pre-rotation backup of a wrapped key is dead."""
    runtime.keys.create(["m-a"])
    old_kek_version, old_wrapped = stored_row(runtime.keys_engine, "m-a")
    rotate_kek(runtime.keys)

    overwrite_row(runtime.keys_engine, "m-a", DATA_SCOPE, old_kek_version, old_wrapped)

    with pytest.raises(DecryptionError):
        other_keys.load("m-a")


def test_rotate_kek_twice_starts_a_new_version_each_time(runtime: Runtime) -> None:
    ciphertexts = encrypt_for(runtime.keys.create(OWNERS))

    first = rotate_kek(runtime.keys)
    second = rotate_kek(runtime.keys)

    assert (first.kek_version, first.started_new_version, first.retired) == (2, True, (1,))
    assert (second.kek_version, second.started_new_version, second.retired) == (3, True, (2,))
    assert set(runtime.keys.kek_references()) == {3}
    assert_all_decrypt(runtime.keys, ciphertexts)


def test_an_interrupted_rotation_resumes_without_a_new_kek_version(runtime: Runtime, other_keys: MemberKeys) -> None:
    ciphertexts = encrypt_for(runtime.keys.create(OWNERS))
    roots = runtime.keys.kek_references().get(1, 0) - 5
    assert runtime.provider.rotate() == 2
    assert runtime.keys.rewrap_batch(limit=2) == 2 + roots  # then the process dies

    report = rotate_kek(runtime.keys)

    assert report == RotationReport(kek_version=2, started_new_version=False, rewrapped=3, retired=(1,))
    assert runtime.provider.current_version() == 2
    assert [(info.version, info.retired) for info in runtime.provider.versions()] == [(1, True), (2, False)]
    assert runtime.keys.kek_references() == {2: 5 + roots}
    assert_all_decrypt(other_keys, ciphertexts)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_failed_driver_read_of_an_embedded_key_store_is_sqlalchemys_error(runtime: Runtime) -> None:
    """The one-owner read runs on the driver (possibly on the API's event loop): its failure must be the 503 kind, not a 500."""
    runtime.keys.create(["m-a"])
    assert runtime.keys.load("m-a").ciphers
    with runtime.keys.engine.begin() as conn:  # the key store loses its table under the reader
        conn.exec_driver_sql("ALTER TABLE member_keys RENAME TO member_keys_gone")
    with pytest.raises(OperationalError):
        runtime.keys.load("m-a")
