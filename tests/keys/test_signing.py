"""Ed25519 signing keys on real SQLite and PostgreSQL key stores: first use, rotation overlap, wrapping, KEK rotation."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import make_url

from api.runtime import Runtime
from keys.errors import DecryptionError, KeyNotFoundError
from keys.models import SigningKeyRow
from keys.rotation import retire_unreferenced, rotate_kek
from keys.signing import PublicSigningKey, SigningKey, SigningKeys, SigningPurpose, signing_key_id
from vault.storage.engine import make_engine

AUDIT = SigningPurpose.audit
JWT = SigningPurpose.jwt
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MESSAGE = b"member-vault/audit\n42\n\n"


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signing(runtime: Runtime, clock: Clock) -> SigningKeys:
    return SigningKeys(runtime.keys_engine, runtime.provider, now=clock)


@pytest.fixture
def other_engine(runtime: Runtime) -> Iterator[Engine]:
    """A second engine on the same key store, as another process would have."""
    engine = make_engine(runtime.settings.keys_url)
    yield engine
    engine.dispose()


def stored_rows(engine: Engine) -> list[tuple[str, int, int, bytes, bytes, datetime | None]]:
    t = SigningKeyRow.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.purpose, t.version, t.kek_version, t.wrapped, t.public_key, t.retire_after).order_by(t.purpose, t.version)).all()
    return [(p, v, kv, bytes(w), bytes(pub), None if r is None else r.replace(tzinfo=UTC)) for p, v, kv, w, pub, r in rows]


def raw_public(key: SigningKey | PublicSigningKey) -> bytes:
    return key.public_key().public_bytes_raw() if isinstance(key, SigningKey) else key.public_bytes


def seed_of(key: SigningKey) -> bytes:
    return key.private_key.private_bytes_raw()


def listed(keys: SigningKeys, at: datetime, purpose: SigningPurpose = AUDIT) -> list[int]:
    return [k.version for k in keys.verification_keys(purpose, at)]


# -- first use -----------------------------------------------------------------------------


def test_first_use_creates_version_1_and_another_instance_on_a_new_engine_gets_the_same_key(
    runtime: Runtime, signing: SigningKeys, other_engine: Engine
) -> None:
    assert signing.verification_keys(AUDIT, T0) == []
    first = signing.current(AUDIT)
    again = signing.current(AUDIT)
    other = SigningKeys(other_engine, runtime.provider).current(AUDIT)

    assert (first.purpose, first.version) == (AUDIT, 1)
    assert (again.version, again.key_id, raw_public(again)) == (1, first.key_id, raw_public(first))
    assert (other.version, other.key_id, raw_public(other)) == (1, first.key_id, raw_public(first))
    assert first.key_id == signing_key_id(first.public_key())
    assert [(p, v) for p, v, *_ in stored_rows(runtime.keys_engine)] == [("audit", 1)]
    assert runtime.keys.wrap_counts() == {1: 1}


def test_each_purpose_has_its_own_key(signing: SigningKeys) -> None:
    audit, jwt = signing.current(AUDIT), signing.current(JWT)
    assert audit.key_id != jwt.key_id
    assert listed(signing, T0, JWT) == [1]
    assert [k.key_id for k in signing.verification_keys(JWT, T0)] == [jwt.key_id]


def test_racing_first_uses_agree_on_one_key(runtime: Runtime, other_engine: Engine) -> None:
    """Two instances (two engines) creating the first key at once both end up with the one stored key."""
    instances = [SigningKeys(runtime.keys_engine, runtime.provider), SigningKeys(other_engine, runtime.provider)]
    barrier = threading.Barrier(len(instances))
    found: list[str] = []

    def first_use(keys: SigningKeys) -> None:
        barrier.wait()
        found.append(keys.current(AUDIT).key_id)

    threads = [threading.Thread(target=first_use, args=(keys,)) for keys in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 2
    assert found[0] == found[1]
    assert len(stored_rows(runtime.keys_engine)) == 1
    # Every wrap is counted, also one that lost the race (it spent a nonce): one or two wraps happened.
    assert runtime.keys.wrap_counts() in ({1: 1}, {1: 2})


def test_unknown_purpose_is_refused(signing: SigningKeys) -> None:
    with pytest.raises(KeyNotFoundError):
        signing.current("payroll")  # type: ignore[arg-type]  # an untyped caller's string


def test_naive_time_is_refused(signing: SigningKeys) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        signing.verification_keys(AUDIT, datetime(2026, 11, 23, 9, 0))  # naive: the point of the test


# -- signatures and key ids ---------------------------------------------------------------


def test_a_signature_verifies_with_the_listed_public_key_and_not_after_a_bit_flip(signing: SigningKeys) -> None:
    key = signing.current(AUDIT)
    signature = key.sign(MESSAGE)
    (public,) = signing.verification_keys(AUDIT, T0)

    assert (public.version, public.key_id, public.public_bytes) == (1, key.key_id, raw_public(key))
    assert (public.created_at, public.activated_at, public.retire_after) == (T0, T0, None)
    public.public_key.verify(signature, MESSAGE)
    with pytest.raises(InvalidSignature):
        public.public_key.verify(signature, MESSAGE.replace(b"42", b"43"))


def test_key_id_is_the_rfc_7638_thumbprint_of_the_rfc_8037_example_key() -> None:
    """RFC 8037 appendix A.1 (the example key) and A.3 (its JWK thumbprint)."""
    seed = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert base64.urlsafe_b64encode(public.public_bytes_raw()) == b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert signing_key_id(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_repr_names_the_key_and_never_its_material(signing: SigningKeys) -> None:
    key = signing.current(AUDIT)
    seed = seed_of(key)
    (public,) = signing.verification_keys(AUDIT, T0)
    assert repr(key) == f"SigningKey(purpose=<SigningPurpose.audit: 'audit'>, version=1, key_id='{key.key_id}')"
    for text in (repr(key), str(key), repr(public)):
        for spelling in (seed.hex(), base64.b64encode(seed).decode(), base64.urlsafe_b64encode(seed).decode().rstrip("="), repr(seed)):
            assert spelling not in text


# -- rotation --------------------------------------------------------------------------------


def test_rotation_makes_a_new_current_and_lists_the_old_key_until_retire_after(signing: SigningKeys, clock: Clock) -> None:
    old = signing.current(AUDIT)
    old_signature = old.sign(MESSAGE)
    clock.now = T0 + timedelta(days=30)
    new = signing.rotate(AUDIT, timedelta(days=7))
    end = clock.now + timedelta(days=7)

    assert new.version == 2
    assert new.key_id != old.key_id
    assert signing.current(AUDIT).key_id == new.key_id
    during = signing.verification_keys(AUDIT, clock.now)
    assert [(k.version, k.key_id, k.retire_after) for k in during] == [(2, new.key_id, None), (1, old.key_id, end)]
    during[1].public_key.verify(old_signature, MESSAGE)
    assert listed(signing, end - timedelta(microseconds=1)) == [2, 1]
    assert listed(signing, end) == [2]
    assert listed(signing, end + timedelta(days=365)) == [2]


def test_rotation_before_first_use_starts_from_version_1(signing: SigningKeys) -> None:
    rotated = signing.rotate(AUDIT, timedelta(hours=1))
    assert rotated.version == 2
    assert listed(signing, T0) == [2, 1]


def test_a_later_shorter_overlap_shortens_the_older_windows(runtime: Runtime, signing: SigningKeys, clock: Clock) -> None:
    signing.current(AUDIT)
    signing.rotate(AUDIT, timedelta(days=7))
    clock.now = T0 + timedelta(days=1)
    signing.rotate(AUDIT, timedelta(hours=2))
    assert listed(signing, clock.now) == [3, 2, 1]
    assert [r[-1] for r in stored_rows(runtime.keys_engine)] == [clock.now + timedelta(hours=2), clock.now + timedelta(hours=2), None]

    clock.now += timedelta(hours=1)
    signing.rotate(AUDIT, timedelta(0))
    assert listed(signing, clock.now) == [4]


def test_a_longer_overlap_never_extends_an_older_window(runtime: Runtime, signing: SigningKeys, clock: Clock) -> None:
    signing.current(AUDIT)
    signing.rotate(AUDIT, timedelta(hours=1))
    signing.rotate(AUDIT, timedelta(days=30))
    assert [r[-1] for r in stored_rows(runtime.keys_engine)] == [T0 + timedelta(hours=1), T0 + timedelta(days=30), None]


def test_negative_overlap_is_refused_and_changes_nothing(runtime: Runtime, signing: SigningKeys) -> None:
    signing.current(AUDIT)
    before = stored_rows(runtime.keys_engine)
    with pytest.raises(ValueError, match="overlap"):
        signing.rotate(AUDIT, timedelta(seconds=-1))
    assert stored_rows(runtime.keys_engine) == before


def test_concurrent_rotations_get_distinct_versions(runtime: Runtime) -> None:
    """Rotations from several processes (an engine each) serialize: every version once, one current, nothing lost."""
    engines = [make_engine(runtime.settings.keys_url) for _ in range(4)]
    instances = [SigningKeys(engine, runtime.provider, now=Clock()) for engine in engines]
    instances[0].current(AUDIT)
    barrier = threading.Barrier(len(instances))
    versions: list[int] = []
    failures: list[BaseException] = []

    def rotate(keys: SigningKeys) -> None:
        barrier.wait()
        try:
            versions.extend(keys.rotate(AUDIT, timedelta(days=1)).version for _ in range(3))
        except Exception as exc:  # noqa: BLE001  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=rotate, args=(keys,)) for keys in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert failures == []
    assert sorted(versions) == list(range(2, 14))
    assert [(v, r is None) for _, v, _, _, _, r in stored_rows(runtime.keys_engine)] == [(v, v == 13) for v in range(1, 14)]
    assert runtime.keys.wrap_counts() == {1: 13}


# -- at rest ---------------------------------------------------------------------------------


def test_the_stored_row_holds_the_seed_only_wrapped(runtime: Runtime, signing: SigningKeys) -> None:
    key = signing.current(AUDIT)
    seed = seed_of(key)
    ((purpose, version, kek_version, wrapped, public, retire_after),) = stored_rows(runtime.keys_engine)

    assert (purpose, version, kek_version, public, retire_after) == ("audit", 1, 1, raw_public(key), None)
    assert len(wrapped) == 12 + 32 + 16
    for column in (wrapped, public):
        assert seed not in column
        assert seed.hex().encode() not in column
    assert seed[:8] not in wrapped


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_seed_appears_nowhere_in_the_sqlite_key_store_files(runtime: Runtime, signing: SigningKeys) -> None:
    seed = seed_of(signing.current(AUDIT))
    signing.rotate(AUDIT, timedelta(days=1))
    path = Path(str(make_url(runtime.settings.keys_url).database))
    files = [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    assert path in files
    for file in files:
        assert seed not in file.read_bytes()


def copy_row(engine: Engine, *, to_purpose: str, to_version: int) -> None:
    with engine.begin() as conn:
        table = SigningKeyRow.__table__
        values = dict(conn.execute(select(table).where(table.c.purpose == "audit", table.c.version == 1)).one()._mapping)
        conn.execute(insert(SigningKeyRow).values(**{**values, "purpose": to_purpose, "version": to_version}))


@pytest.mark.parametrize(("to_purpose", "to_version"), [("jwt", 1), ("audit", 2)], ids=["other-purpose", "other-version"])
def test_a_row_copied_to_another_purpose_or_version_does_not_unwrap(
    runtime: Runtime, signing: SigningKeys, other_engine: Engine, to_purpose: str, to_version: int
) -> None:
    seed = seed_of(signing.current(AUDIT))
    copy_row(runtime.keys_engine, to_purpose=to_purpose, to_version=to_version)
    fresh = SigningKeys(other_engine, runtime.provider)
    purpose = SigningPurpose(to_purpose)

    for attempt in (signing.current, fresh.current, lambda p: signing.verification_keys(p, T0)):
        with pytest.raises(DecryptionError) as caught:
            attempt(purpose)
        assert str(caught.value) == "Decryption failed."
        assert seed.hex() not in repr(caught.value)


def test_a_row_whose_public_key_was_swapped_is_refused_even_with_a_warm_cache(runtime: Runtime, signing: SigningKeys) -> None:
    """Someone who can write the key store but not use the KEK cannot make the vault list their verifier key."""
    signing.current(AUDIT)
    intruder = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with runtime.keys_engine.begin() as conn:
        conn.execute(update(SigningKeyRow).where(SigningKeyRow.purpose == "audit").values(public_key=intruder))

    with pytest.raises(DecryptionError):
        signing.verification_keys(AUDIT, T0)
    with pytest.raises(DecryptionError):
        signing.current(AUDIT)


# -- KEK rotation ------------------------------------------------------------------------------


def test_kek_rotation_rewraps_signing_keys_and_they_still_sign(runtime: Runtime, signing: SigningKeys, other_engine: Engine) -> None:
    audit, jwt = signing.current(AUDIT), signing.current(JWT)
    signing.rotate(AUDIT, timedelta(days=7))
    before = stored_rows(runtime.keys_engine)
    assert runtime.keys.kek_references() == {1: 3}

    report = rotate_kek(runtime.keys)

    assert (report.kek_version, report.started_new_version, report.rewrapped, report.retired) == (2, True, 3, (1,))
    after = stored_rows(runtime.keys_engine)
    assert [(p, v, kv, pub) for p, v, kv, _, pub, _ in after] == [(p, v, 2, pub) for p, v, _, _, pub, _ in before]
    assert all(new[3] != old[3] for new, old in zip(after, before, strict=True))
    assert runtime.keys.kek_references() == {2: 3}
    assert runtime.keys.wrap_counts() == {1: 3, 2: 3}
    assert [info.version for info in runtime.provider.versions() if not info.retired] == [2]

    fresh = SigningKeys(other_engine, runtime.provider, now=Clock())
    assert [k.key_id for k in fresh.verification_keys(AUDIT, T0)] == [signing.current(AUDIT).key_id, audit.key_id]
    assert fresh.current(JWT).key_id == jwt.key_id
    fresh.verification_keys(JWT, T0)[0].public_key.verify(fresh.current(JWT).sign(MESSAGE), MESSAGE)
    assert signing.current(JWT).key_id == jwt.key_id


def test_an_old_kek_is_kept_while_a_signing_key_refers_to_it(runtime: Runtime, signing: SigningKeys, other_engine: Engine) -> None:
    key = signing.current(AUDIT)
    assert runtime.provider.rotate() == 2

    assert retire_unreferenced(runtime.keys) == ()
    assert runtime.keys.kek_references() == {1: 1}
    assert [(info.version, info.retired) for info in runtime.provider.versions()] == [(1, False), (2, False)]
    assert SigningKeys(other_engine, runtime.provider).current(AUDIT).key_id == key.key_id

    report = rotate_kek(runtime.keys)
    assert (report.kek_version, report.started_new_version, report.rewrapped, report.retired) == (2, False, 1, (1,))
    assert runtime.keys.kek_references() == {2: 1}
    assert SigningKeys(other_engine, runtime.provider).current(AUDIT).key_id == key.key_id
