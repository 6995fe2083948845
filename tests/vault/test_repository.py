"""The member repository on real SQLite and PostgreSQL: round trips, history, search, tamper."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, update

from api.runtime import Runtime
from vault import data_map as dm
from vault.errors import RecordIntegrityError, ValidationError
from vault.storage.schema import members

ALL_MEMBER_CATEGORIES = set(dm.categories_of(dm.Table.members))


def member_values(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "card_no": "mv-0000000001",
        "tier": "gold",
        "status": "active",
        "joined_at": "2024-03-01",
        "home_clinic_id": "sh-001",
        "full_name": "李娜",
        "id_type": "resident_id",
        "national_id": "11010519491231002X",
        "date_of_birth": "1949-12-31",
        "gender": "female",
        "phone": "+86 138 0013 8000",
        "email": "Li.Na@Example.COM",
        "address": "上海市黄浦区南京东路 1 号",
        "wechat_id": "lina_1990",
        "preferred_channel": "wechat",
        "city": "上海",
        "occupation": "教师",
        "education": "master",
        "income_band": "20k_50k",
        "marital_status": "married",
        "allergies": ["青霉素", "花粉"],
        "medical_history": "无特殊病史",
        "contraindications": ["瘢痕体质"],
        "skin_type": "combination",
        "pregnancy_status": "not_pregnant",
        "interest_tags": ["抗衰", "美白"],
        "preferred_categories": ["laser", "injectable"],
        "preferred_clinic_id": "sh-002",
    }
    values.update(overrides)
    return values


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
