"""The member repository on real SQLite and PostgreSQL: round trips, history, search, tamper."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from api.runtime import Runtime
from tests.vault.factories import member_values, other_member_values, resident_id
from vault import data_map as dm
from vault.errors import MemberErasedError, NotFoundError, RecordIntegrityError, ValidationError
from vault.members import MemberRepository
from vault.storage.schema import blind_index, members

ALL_MEMBER_CATEGORIES = set(dm.categories_of(dm.Table.members))


def test_every_member_field_round_trips_normalized(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    with runtime.data_engine.connect() as conn:
        view = runtime.members.read(conn, member_id, ALL_MEMBER_CATEGORIES)
    assert view.values[dm.Category.contact]["phone"] == "+8613800138000"
    assert view.values[dm.Category.contact]["email"] == "li.na@example.com"
    assert view.values[dm.Category.membership]["card_no"] == "MV-0000000001"
    assert view.values[dm.Category.membership]["joined_at"] == date(2024, 3, 1)
    assert view.values[dm.Category.identity] == {
        "full_name": "李娜",
        "id_type": "resident_id",
        "national_id": "11010519491231002X",
        "date_of_birth": date(1949, 12, 31),
        "gender": "female",
    }
    assert view.values[dm.Category.health]["allergies"] == ["青霉素", "花粉"]
    assert view.values[dm.Category.preference]["preferred_categories"] == ["laser", "injectable"]


def test_read_decrypts_only_the_categories_asked_for(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        view = runtime.members.read(conn, member_id, {dm.Category.contact})
    assert set(view.values) == {dm.Category.contact}


def test_read_field_opens_that_field_alone(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        phone = conn.execute(select(members.c.phone).where(members.c.member_id == member_id)).scalar_one()
        conn.execute(update(members).where(members.c.member_id == member_id).values(full_name=phone))  # another identity field broken
    with runtime.data_engine.connect() as conn:
        assert runtime.members.read_field(conn, member_id, "date_of_birth") == date(1949, 12, 31)
        assert runtime.members.read_field(conn, member_id, "tier") == member_values()["tier"]  # a plain column as stored
        with pytest.raises(RecordIntegrityError):
            runtime.members.read(conn, member_id, {dm.Category.identity})  # the category read opens the broken one too
        with pytest.raises(KeyError):
            runtime.members.read_field(conn, member_id, "is_admin")
        with pytest.raises(NotFoundError):
            runtime.members.read_field(conn, "0" * 32, "date_of_birth")
    with runtime.data_engine.begin() as conn:
        conn.execute(update(members).where(members.c.member_id == member_id).values(erased_at=datetime(2026, 1, 1, tzinfo=UTC)))
    with runtime.data_engine.connect() as conn, pytest.raises(MemberErasedError):
        runtime.members.read_field(conn, member_id, "date_of_birth")


def test_ciphertext_moved_to_another_field_fails_with_integrity_error(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        phone = conn.execute(select(members.c.phone).where(members.c.member_id == member_id)).scalar_one()
        conn.execute(update(members).where(members.c.member_id == member_id).values(email=phone))
    with runtime.data_engine.connect() as conn, pytest.raises(RecordIntegrityError) as caught:
        runtime.members.read(conn, member_id, {dm.Category.contact})
    assert (caught.value.table, caught.value.field) == ("members", "email")


def test_bad_input_writes_nothing(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.create(conn, member_values(phone="12345", national_id="110105194912310021"))
    assert set(caught.value.problems) == {"phone", "national_id"}
    with runtime.data_engine.connect() as conn:
        assert conn.execute(select(members.c.member_id)).all() == []


# -- rectification (merge-patch update) and field history ---------------------------


class SteppingClock:
    """A clock that moves one second per call, so history order never depends on timing."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def __call__(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now


def _clocked(runtime: Runtime) -> MemberRepository:
    return MemberRepository(runtime.keys, now=SteppingClock(datetime(2026, 1, 1, tzinfo=UTC)))


def _read_all(runtime: Runtime, member_id: str) -> dict[dm.Category, dict[str, object]]:
    with runtime.data_engine.connect() as conn:
        return runtime.members.read(conn, member_id, ALL_MEMBER_CATEGORIES).values


def test_update_changes_fields_and_keeps_every_previous_value_oldest_first(runtime: Runtime) -> None:
    repo = _clocked(runtime)
    with runtime.data_engine.begin() as conn:
        member_id = repo.create(conn, member_values())
    with runtime.data_engine.begin() as conn:
        assert repo.update(conn, member_id, {"city": "杭州", "tier": "platinum"}) == ["city", "tier"]
    with runtime.data_engine.begin() as conn:
        assert repo.update(conn, member_id, {"city": "南京"}) == ["city"]
    with runtime.data_engine.begin() as conn:
        assert repo.update(conn, member_id, {"email": "NEW@example.org", "occupation": "医生"}) == ["email", "occupation"]
    values = _read_all(runtime, member_id)
    assert values[dm.Category.demographic]["city"] == "南京"
    assert values[dm.Category.demographic]["occupation"] == "医生"
    assert values[dm.Category.membership]["tier"] == "platinum"
    assert values[dm.Category.contact]["email"] == "new@example.org"
    with runtime.data_engine.connect() as conn:
        history = repo.history(conn, member_id)
    # Oldest change first; fields changed together share a change id (their order inside one change is not defined).
    changes = [sorted((h["field"], h["previous"]) for h in history if h["change_id"] == cid) for cid in dict.fromkeys(h["change_id"] for h in history)]
    assert changes == [
        [("city", "上海"), ("tier", "gold")],
        [("city", "杭州")],
        [("email", "li.na@example.com"), ("occupation", "教师")],
    ]


def test_update_with_unchanged_values_changes_nothing_and_keeps_no_history(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        assert runtime.members.update(conn, member_id, {"phone": "13800138000", "city": "上海"}) == []
        assert runtime.members.history(conn, member_id) == []


def test_update_with_none_clears_an_optional_field_and_keeps_its_value_in_history(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    with runtime.data_engine.begin() as conn:
        assert runtime.members.update(conn, member_id, {"wechat_id": None, "allergies": None}) == ["wechat_id", "allergies"]
    values = _read_all(runtime, member_id)
    assert values[dm.Category.contact]["wechat_id"] is None
    assert values[dm.Category.health]["allergies"] is None
    with runtime.data_engine.connect() as conn:
        history = runtime.members.history(conn, member_id)
        raw = conn.execute(select(members.c.wechat_id, members.c.allergies).where(members.c.member_id == member_id)).one()
    assert sorted((h["field"], h["previous"]) for h in history) == [("allergies", ["青霉素", "花粉"]), ("wechat_id", "lina_1990")]
    assert tuple(raw) == (None, None)


def test_update_with_none_on_a_required_field_is_refused(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.update(conn, member_id, {"full_name": None})
    assert caught.value.problems == {"full_name": "required"}
    assert _read_all(runtime, member_id)[dm.Category.identity]["full_name"] == "李娜"


def test_updating_phone_moves_the_blind_index(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    with runtime.data_engine.begin() as conn:
        assert runtime.members.update(conn, member_id, {"phone": "+86 139 1234 5678"}) == ["phone"]
    with runtime.data_engine.connect() as conn:
        assert runtime.members.search(conn, "phone", "+86 138 0013 8000") == []
        assert runtime.members.search(conn, "phone", "13912345678") == [member_id]
        assert conn.execute(select(func.count()).select_from(blind_index).where(blind_index.c.member_id == member_id)).scalar_one() == 4


def test_clearing_phone_removes_it_from_the_blind_index(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        runtime.members.update(conn, member_id, {"phone": None})
        assert runtime.members.search(conn, "phone", "13800138000") == []
        assert runtime.members.search(conn, "email", "li.na@example.com") == [member_id]


# -- search --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "query"),
    [
        ("phone", "13800138000"),
        ("phone", "+86 138 0013 8000"),
        ("phone", "+86-138-0013-8000"),
        ("phone", "+8613800138000"),
        ("email", "li.na@example.com"),
        ("email", "LI.NA@EXAMPLE.COM"),
        ("national_id", "11010519491231002X"),
        ("national_id", "11010519491231002x"),
        ("card_no", "MV-0000000001"),
        ("card_no", "mv-0000000001"),
    ],
)
def test_search_finds_the_member_by_any_notation_of_an_indexed_value(runtime: Runtime, field: str, query: str) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        runtime.members.create(conn, other_member_values(7))
    with runtime.data_engine.connect() as conn:
        assert runtime.members.search(conn, field, query) == [member_id]


@pytest.mark.parametrize(
    ("field", "query"),
    [
        ("phone", "13800138001"),
        ("phone", "not a phone"),
        ("email", "someone.else@example.com"),
        ("national_id", "110105194912310029"),
        ("card_no", "MV-0000000002"),
    ],
)
def test_search_for_an_unknown_value_finds_nobody(runtime: Runtime, field: str, query: str) -> None:
    with runtime.data_engine.begin() as conn:
        runtime.members.create(conn, member_values())
    with runtime.data_engine.connect() as conn:
        assert runtime.members.search(conn, field, query) == []


@pytest.mark.parametrize("field", ["full_name", "address", "city", "tier", "member_id", "no_such_field"])
def test_search_on_a_field_without_blind_index_is_refused(runtime: Runtime, field: str) -> None:
    with runtime.data_engine.connect() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.search(conn, field, "李娜")
    assert caught.value.problems == {field: "not_searchable"}


# -- combined validation and mass assignment (H14, H15) -----------------------------------


def test_updating_national_id_that_contradicts_the_stored_birth_date_is_refused_and_changes_nothing(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    before = _read_all(runtime, member_id)
    contradicting = resident_id(date(1950, 1, 1), 2)
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.update(conn, member_id, {"national_id": contradicting})
    assert caught.value.problems == {"national_id": "birth_date_mismatch"}
    assert _read_all(runtime, member_id) == before
    with runtime.data_engine.connect() as conn:
        assert runtime.members.history(conn, member_id) == []
        assert runtime.members.search(conn, "national_id", contradicting) == []
        assert runtime.members.search(conn, "national_id", "11010519491231002X") == [member_id]


def test_updating_birth_date_away_from_the_stored_national_id_is_refused(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    before = _read_all(runtime, member_id)
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.update(conn, member_id, {"date_of_birth": "1950-01-01"})
    assert caught.value.problems == {"national_id": "birth_date_mismatch"}
    assert _read_all(runtime, member_id) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [("member_id", "0" * 32), ("redacted", ["health"]), ("created_at", "2020-01-01T00:00:00Z"), ("is_admin", True), ("erased_at", None)],
)
def test_create_with_a_field_outside_the_data_map_is_refused_and_stores_nothing(runtime: Runtime, name: str, value: object) -> None:
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.create(conn, member_values(**{name: value}))
    assert caught.value.problems == {name: "unknown_field"}
    with runtime.data_engine.connect() as conn:
        assert conn.execute(select(members.c.member_id)).all() == []
        assert conn.execute(select(blind_index.c.member_id)).all() == []
    assert runtime.keys.owners() == []


@pytest.mark.parametrize("name", ["member_id", "redacted", "created_at", "key_version", "is_admin"])
def test_update_with_a_field_outside_the_data_map_is_refused_and_changes_nothing(runtime: Runtime, name: str) -> None:
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
    before = _read_all(runtime, member_id)
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.members.update(conn, member_id, {"city": "北京", name: "x"})
    assert caught.value.problems == {name: "unknown_field"}
    assert _read_all(runtime, member_id) == before
    with runtime.data_engine.connect() as conn:
        assert conn.execute(select(members.c.member_id)).scalars().all() == [member_id]
        assert runtime.members.history(conn, member_id) == []


# -- ciphertext tamper and relocation (H18, H19) ----------------------------------------

ENCRYPTED_MEMBER_FIELDS = [f for f in dm.fields_of(dm.Table.members) if f.encrypted]
TAMPER_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _two_members(runtime: Runtime) -> tuple[str, str]:
    with runtime.data_engine.begin() as conn:
        victim = runtime.members.create(conn, member_values())
        bystander = runtime.members.create(conn, other_member_values(8))
    return victim, bystander


def _raw(runtime: Runtime, member_id: str, name: str) -> bytes:
    with runtime.data_engine.connect() as conn:
        return bytes(conn.execute(select(members.c[name]).where(members.c.member_id == member_id)).scalar_one())


def _overwrite(runtime: Runtime, member_id: str, name: str, raw: bytes) -> None:
    with runtime.data_engine.begin() as conn:
        conn.execute(update(members).where(members.c.member_id == member_id).values({name: raw}))


def _assert_fails_closed(runtime: Runtime, member_id: str, f: dm.Field, bystander: str) -> None:
    with runtime.data_engine.connect() as conn:
        with pytest.raises(RecordIntegrityError) as caught:
            runtime.members.read(conn, member_id, {f.category})
        assert (caught.value.table, caught.value.record_id, caught.value.field) == ("members", member_id, f.name)
        untouched = [c for c in ALL_MEMBER_CATEGORIES if c is not f.category]
        assert set(runtime.members.read(conn, member_id, untouched).values) == set(untouched)
        assert runtime.members.read(conn, bystander, ALL_MEMBER_CATEGORIES).values[dm.Category.identity]["full_name"] == "会员8"


@TAMPER_SETTINGS
@given(data=st.data(), f=st.sampled_from(ENCRYPTED_MEMBER_FIELDS))
def test_flipping_any_bit_of_any_stored_ciphertext_fails_closed_for_that_field_only(runtime: Runtime, data: st.DataObject, f: dm.Field) -> None:
    """H18: header, nonce, body or tag — one flipped bit makes that field unreadable, nothing else."""
    victim, bystander = _two_members(runtime)
    raw = bytearray(_raw(runtime, victim, f.name))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    _overwrite(runtime, victim, f.name, bytes(raw))
    _assert_fails_closed(runtime, victim, f, bystander)


@TAMPER_SETTINGS
@given(data=st.data(), f=st.sampled_from(ENCRYPTED_MEMBER_FIELDS))
def test_truncating_any_stored_ciphertext_fails_closed_for_that_field_only(runtime: Runtime, data: st.DataObject, f: dm.Field) -> None:
    """H18: a ciphertext cut short anywhere, down to empty bytes, is an integrity failure."""
    victim, bystander = _two_members(runtime)
    raw = _raw(runtime, victim, f.name)
    keep = data.draw(st.integers(0, len(raw) - 1), label="keep")
    _overwrite(runtime, victim, f.name, raw[:keep])
    _assert_fails_closed(runtime, victim, f, bystander)


def test_phone_ciphertext_copied_into_another_members_row_fails_closed(runtime: Runtime) -> None:
    """H19: A's phone ciphertext in B's phone column does not decrypt (the record id is bound)."""
    a, b = _two_members(runtime)
    _overwrite(runtime, b, "phone", _raw(runtime, a, "phone"))
    with runtime.data_engine.connect() as conn:
        with pytest.raises(RecordIntegrityError) as caught:
            runtime.members.read(conn, b, {dm.Category.contact})
        assert (caught.value.table, caught.value.record_id, caught.value.field) == ("members", b, "phone")
        assert runtime.members.read(conn, a, {dm.Category.contact}).values[dm.Category.contact]["phone"] == "+8613800138000"
