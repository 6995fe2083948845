"""Treatment records and the card ledger on real SQLite and PostgreSQL: round trips, keys, balances, encryption."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select, update

from api.runtime import Runtime
from keys.models import MemberKeyRow
from tests.vault.factories import member_values, treatment_values
from vault.errors import ConflictError, NotFoundError, RecordIntegrityError, ValidationError
from vault.ids import new_id
from vault.ledger import Balance, LedgerEntry
from vault.storage.schema import ledger_entries, treatments
from vault.treatments import Treatment

_mk = MemberKeyRow.__table__

# treatment_values() after validation, without the plain performed_at (see the time test below)
CLINICAL = {
    "clinic_id": "sh-001",
    "category": "injectable",
    "practitioner_id": "dr-007",
    "procedure": "玻尿酸填充",
    "product": "Restylane Lyft",
    "lot_no": "L123456",
    "dose": "1.0 ml",
    "body_area": "鼻唇沟",
    "clinical_notes": "双侧鼻唇沟各注射 0.5 ml，术后冰敷",
    "adverse_events": "轻微红肿，24 小时内消退",
    "follow_up_at": date(2025, 7, 13),
    "price": 380_000,
}
PERFORMED_AT = datetime(2025, 6, 15, 2, 30, tzinfo=UTC)  # "2025-06-15T10:30:00+08:00"
WHEN = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _member(rt: Runtime) -> str:
    with rt.data_engine.begin() as conn:
        return rt.members.create(conn, member_values())


def _add(rt: Runtime, member_id: str, **overrides: object) -> str:
    with rt.data_engine.begin() as conn:
        return rt.treatments.add(conn, member_id, treatment_values(**overrides))


def _list(rt: Runtime, member_id: str) -> list[Treatment]:
    with rt.data_engine.connect() as conn:
        return rt.treatments.list_for_member(conn, member_id)


def _without_time(t: Treatment) -> dict[str, object]:
    return {k: v for k, v in t.values.items() if k != "performed_at"}


def _count(rt: Runtime, table: object, member_id: str) -> int:
    with rt.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.member_id == member_id)).scalar_one())  # type: ignore[attr-defined]


# -- treatments ------------------------------------------------------------------------


def test_treatment_with_every_field_reads_back_exactly_through_list_and_get(runtime: Runtime) -> None:
    member_id = _member(runtime)
    treatment_id = _add(runtime, member_id)
    listed = _list(runtime, member_id)
    assert [(t.treatment_id, t.member_id, t.retention_year) for t in listed] == [(treatment_id, member_id, 2040)]
    assert _without_time(listed[0]) == CLINICAL
    with runtime.data_engine.connect() as conn:
        got = runtime.treatments.get(conn, treatment_id)
    assert got == listed[0]


def test_treatment_performed_at_reads_back_as_the_aware_utc_instant_written(runtime: Runtime) -> None:
    """The plain ``performed_at`` column must give back the instant written, aware, on both backends."""
    member_id = _member(runtime)
    treatment_id = _add(runtime, member_id)
    with runtime.data_engine.connect() as conn:
        got = runtime.treatments.get(conn, treatment_id)
    assert got.values["performed_at"] == PERFORMED_AT
    assert got.values["performed_at"].utcoffset() is not None  # type: ignore[union-attr]


def test_optional_clinical_fields_may_be_left_out_and_read_back_as_none(runtime: Runtime) -> None:
    member_id = _member(runtime)
    _add(runtime, member_id, product=None, lot_no=None, dose=None, body_area=None, clinical_notes=None, adverse_events=None, follow_up_at=None, price=None)
    [t] = _list(runtime, member_id)
    assert _without_time(t) == CLINICAL | dict.fromkeys(("product", "lot_no", "dose", "body_area", "clinical_notes", "adverse_events", "follow_up_at", "price"))
    with runtime.data_engine.connect() as conn:
        raw = conn.execute(select(treatments.c.product, treatments.c.price).where(treatments.c.treatment_id == t.treatment_id)).one()
    assert tuple(raw) == (None, None)


def test_treatments_list_in_performed_order_with_one_retention_key_per_expiry_year(runtime: Runtime) -> None:
    member_id = _member(runtime)
    late = _add(runtime, member_id, performed_at="2025-06-15T10:30:00+08:00")
    early = _add(runtime, member_id, performed_at="2024-03-02T09:00:00Z", procedure="光子嫩肤", category="laser")
    same_year = _add(runtime, member_id, performed_at="2025-11-30T08:00:00Z")
    listed = _list(runtime, member_id)
    assert [(t.treatment_id, t.retention_year) for t in listed] == [(early, 2039), (late, 2040), (same_year, 2040)]
    assert [(t.values["procedure"], t.values["category"]) for t in listed] == [
        ("光子嫩肤", "laser"),
        ("玻尿酸填充", "injectable"),
        ("玻尿酸填充", "injectable"),
    ]
    assert sorted(runtime.keys.scopes_of(member_id)) == ["data", "retention-2039", "retention-2040"]
    with runtime.keys_engine.connect() as conn:
        rows = conn.execute(select(_mk.c.scope, _mk.c.version).where(_mk.c.owner_id == member_id).order_by(_mk.c.scope)).all()
    assert [tuple(r) for r in rows] == [("data", 1), ("retention-2039", 1), ("retention-2040", 1)]


def test_retention_year_is_the_utc_year_performed_plus_fifteen(runtime: Runtime) -> None:
    member_id = _member(runtime)
    # 2026-01-01 07:00 in Shanghai is 2025-12-31 23:00 UTC.
    _add(runtime, member_id, performed_at="2026-01-01T07:00:00+08:00")
    [t] = _list(runtime, member_id)
    assert t.retention_year == 2040
    assert sorted(runtime.keys.scopes_of(member_id)) == ["data", "retention-2040"]


def test_treatment_for_an_unknown_member_is_refused_and_creates_no_key(runtime: Runtime) -> None:
    stranger = new_id()
    with runtime.data_engine.begin() as conn, pytest.raises(NotFoundError):
        runtime.treatments.add(conn, stranger, treatment_values())
    assert runtime.keys.scopes_of(stranger) == []
    assert _count(runtime, treatments, stranger) == 0


def test_invalid_treatment_is_refused_and_creates_no_retention_key(runtime: Runtime) -> None:
    member_id = _member(runtime)
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.treatments.add(conn, member_id, treatment_values(procedure=None, price=-1, treatment_id="x"))
    assert caught.value.problems == {"procedure": "required", "price": "out_of_range", "treatment_id": "unknown_field"}
    assert runtime.keys.scopes_of(member_id) == ["data"]
    assert _count(runtime, treatments, member_id) == 0


def test_get_of_an_unknown_treatment_is_not_found(runtime: Runtime) -> None:
    with runtime.data_engine.connect() as conn, pytest.raises(NotFoundError):
        runtime.treatments.get(conn, new_id())


def test_treatment_ciphertext_copied_to_another_treatment_fails_closed(runtime: Runtime) -> None:
    """H19 for treatments: the record id is bound into each clinical field's ciphertext."""
    member_id = _member(runtime)
    first = _add(runtime, member_id, performed_at="2025-01-10T08:00:00Z")
    second = _add(runtime, member_id, performed_at="2025-02-10T08:00:00Z", clinical_notes="另一条记录")
    with runtime.data_engine.begin() as conn:
        notes = conn.execute(select(treatments.c.clinical_notes).where(treatments.c.treatment_id == first)).scalar_one()
        conn.execute(update(treatments).where(treatments.c.treatment_id == second).values(clinical_notes=notes))
    with runtime.data_engine.connect() as conn, pytest.raises(RecordIntegrityError) as caught:
        runtime.treatments.get(conn, second)
    assert (caught.value.table, caught.value.record_id, caught.value.field) == ("treatments", second, "clinical_notes")


# -- ledger -----------------------------------------------------------------------------


def _append(rt: Runtime, member_id: str, entry_type: str, amount: int, points: int | None = None) -> LedgerEntry:
    values: dict[str, object] = {"entry_type": entry_type, "amount": amount, "occurred_at": WHEN}
    if points is not None:
        values["points"] = points
    with rt.data_engine.begin() as conn:
        return rt.ledger.append(conn, member_id, values)


def _balance(rt: Runtime, member_id: str) -> Balance:
    with rt.data_engine.connect() as conn:
        return rt.ledger.balance(conn, member_id)


def _entries(rt: Runtime, member_id: str) -> list[LedgerEntry]:
    with rt.data_engine.connect() as conn:
        return rt.ledger.entries(conn, member_id)


def _summary(entries: list[LedgerEntry]) -> list[tuple[object, ...]]:
    keys = ("entry_type", "amount", "points", "balance_after", "points_balance_after")
    return [(e.seq, *(e.values[k] for k in keys)) for e in entries]


def test_ledger_entries_keep_exact_running_balances(runtime: Runtime) -> None:
    member_id = _member(runtime)
    assert _balance(runtime, member_id) == Balance(0, 0, 0)
    appended = [
        _append(runtime, member_id, "top_up", 100_000),
        _append(runtime, member_id, "spend", 30_000),
        _append(runtime, member_id, "refund", 20_000),
        _append(runtime, member_id, "points_earn", 0, 120),
        _append(runtime, member_id, "points_redeem", 0, 20),
        _append(runtime, member_id, "spend", 50_000),
    ]
    expected = [
        (1, "top_up", 100_000, 0, 100_000, 0),
        (2, "spend", 30_000, 0, 70_000, 0),
        (3, "refund", 20_000, 0, 50_000, 0),
        (4, "points_earn", 0, 120, 50_000, 120),
        (5, "points_redeem", 0, 20, 50_000, 100),
        (6, "spend", 50_000, 0, 0, 100),
    ]
    assert _summary(appended) == expected
    stored = _entries(runtime, member_id)
    assert _summary(stored) == expected
    assert [e.entry_id for e in stored] == [e.entry_id for e in appended]
    assert _balance(runtime, member_id) == Balance(0, 100, 6)


def test_ledger_occurred_at_reads_back_as_the_aware_utc_instant_written(runtime: Runtime) -> None:
    """The plain ``occurred_at`` column must give back the instant written, aware, on both backends."""
    member_id = _member(runtime)
    _append(runtime, member_id, "top_up", 1_000)
    [entry] = _entries(runtime, member_id)
    assert entry.values["occurred_at"] == WHEN
    assert entry.values["occurred_at"].utcoffset() is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry_type", "amount", "points"),
    [("spend", 10_001, None), ("refund", 10_001, None), ("points_redeem", 0, 51)],
)
def test_entry_beyond_the_balance_is_a_conflict_and_writes_nothing(runtime: Runtime, entry_type: str, amount: int, points: int | None) -> None:
    member_id = _member(runtime)
    _append(runtime, member_id, "top_up", 10_000)
    _append(runtime, member_id, "points_earn", 0, 50)
    with pytest.raises(ConflictError):
        _append(runtime, member_id, entry_type, amount, points)
    assert _count(runtime, ledger_entries, member_id) == 2
    assert _balance(runtime, member_id) == Balance(10_000, 50, 2)


def test_spend_on_an_empty_card_is_a_conflict(runtime: Runtime) -> None:
    member_id = _member(runtime)
    with pytest.raises(ConflictError):
        _append(runtime, member_id, "spend", 1)
    assert _count(runtime, ledger_entries, member_id) == 0


@pytest.mark.parametrize("name", ["balance_after", "points_balance_after"])
def test_caller_supplied_balance_is_refused(runtime: Runtime, name: str) -> None:
    member_id = _member(runtime)
    with runtime.data_engine.begin() as conn, pytest.raises(ValidationError) as caught:
        runtime.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": 1_000, name: 999_999})
    assert caught.value.problems == {"balance_after": "read_only"}
    assert _count(runtime, ledger_entries, member_id) == 0


@pytest.mark.parametrize(
    ("entry_type", "amount", "points", "problems"),
    [
        ("points_earn", 100, 10, {"points": "out_of_range"}),
        ("points_redeem", 100, 10, {"points": "out_of_range"}),
        ("points_earn", 0, 0, {"points": "out_of_range"}),
        ("points_earn", 0, -5, {"points": "out_of_range"}),
        ("top_up", 1_000, 5, {"amount": "out_of_range"}),
        ("spend", 1_000, 5, {"amount": "out_of_range"}),
        ("refund", 1_000, 5, {"amount": "out_of_range"}),
        ("top_up", 0, None, {"amount": "out_of_range"}),
        ("top_up", -1_000, None, {"amount": "out_of_range"}),
        ("cash_out", 1_000, None, {"entry_type": "not_in_value_set"}),
    ],
)
def test_amounts_and_points_of_the_wrong_kind_are_refused(runtime: Runtime, entry_type: str, amount: int, points: int | None, problems: dict[str, str]) -> None:
    member_id = _member(runtime)
    _append(runtime, member_id, "top_up", 50_000)
    with pytest.raises(ValidationError) as caught:
        _append(runtime, member_id, entry_type, amount, points)
    assert caught.value.problems == problems
    assert _count(runtime, ledger_entries, member_id) == 1
    assert _balance(runtime, member_id) == Balance(50_000, 0, 1)


def test_ledger_for_an_unknown_member_is_not_found(runtime: Runtime) -> None:
    stranger = new_id()
    with pytest.raises(NotFoundError):
        _append(runtime, stranger, "top_up", 1_000)
    with pytest.raises(NotFoundError):
        _balance(runtime, stranger)
    assert _count(runtime, ledger_entries, stranger) == 0


def test_ledger_amounts_are_stored_encrypted(runtime: Runtime) -> None:
    member_id = _member(runtime)
    entry = _append(runtime, member_id, "top_up", 987_654)
    with runtime.data_engine.connect() as conn:
        row = conn.execute(select(ledger_entries).where(ledger_entries.c.entry_id == entry.entry_id)).one()._mapping
    amount = bytes(row["amount"])
    assert amount != b"987654"
    # format 1, key version 1, 12-byte nonce, the 6-byte JSON number, 16-byte tag
    assert amount[:5] == b"\x01\x00\x00\x00\x01"
    assert len(amount) == 5 + 12 + len(b"987654") + 16
    assert row["entry_type"] == "top_up"
    for name, value in row.items():
        if isinstance(value, bytes | memoryview):
            assert b"987654" not in bytes(value), name
        else:
            assert "987654" not in str(value), name


def test_ledger_balance_ciphertext_moved_to_another_entry_fails_closed(runtime: Runtime) -> None:
    """H19 for the ledger: a balance copied from an older entry onto the latest does not decrypt."""
    member_id = _member(runtime)
    first = _append(runtime, member_id, "top_up", 900_000)
    last = _append(runtime, member_id, "spend", 800_000)
    with runtime.data_engine.begin() as conn:
        richer = conn.execute(select(ledger_entries.c.balance_after).where(ledger_entries.c.entry_id == first.entry_id)).scalar_one()
        conn.execute(update(ledger_entries).where(ledger_entries.c.entry_id == last.entry_id).values(balance_after=richer))
    with pytest.raises(RecordIntegrityError) as caught:
        _balance(runtime, member_id)
    assert (caught.value.table, caught.value.record_id, caught.value.field) == ("ledger_entries", last.entry_id, "balance_after")
    with pytest.raises(RecordIntegrityError):
        _append(runtime, member_id, "spend", 100_000)
    assert _count(runtime, ledger_entries, member_id) == 2
