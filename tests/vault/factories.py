"""Small factories for the vault tests: plain functions returning valid input values."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, insert

import vault.migrations
from vault.ids import new_id
from vault.storage.schema import extracts

_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # GB 11643 / ISO 7064 MOD 11-2


def resident_id(born: date, sequence: int = 2, *, area: str = "110105") -> str:
    """A GB 11643 resident ID number born on ``born`` with a correct check character."""
    body = f"{area}{born:%Y%m%d}{sequence % 1000:03d}"
    check = (12 - sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11) % 11
    return body + "0123456789X"[check]


def member_values(**overrides: object) -> dict[str, object]:
    """Every member field, valid, as a client would send it (not yet normalized)."""
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


def other_member_values(n: int, **overrides: object) -> dict[str, object]:
    """A member whose blind-indexed values (card, ID, phone, e-mail) are unique to ``n`` (1–9999)."""
    born = date(1980 + n % 20, 1 + n % 12, 1 + n % 28)
    values = member_values(
        card_no=f"MV-{n:010d}",
        national_id=resident_id(born, n),
        date_of_birth=born.isoformat(),
        phone=f"+86139{n:08d}",
        email=f"member{n}@example.cn",
        full_name=f"会员{n}",
        wechat_id=f"wx_{n}",
    )
    values.update(overrides)
    return values


def treatment_values(**overrides: object) -> dict[str, object]:
    """Every treatment field, valid, as a client would send it."""
    values: dict[str, object] = {
        "performed_at": "2025-06-15T10:30:00+08:00",
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
        "follow_up_at": "2025-07-13",
        "price": 380_000,
    }
    values.update(overrides)
    return values


__all__ = ["member_values", "other_member_values", "resident_id", "treatment_values"]


def stored_extract(conn: Connection, now: datetime) -> str:
    """A done extract of ``loyalty-app`` (registered by the caller), stored as a row; its id."""
    extract_id = new_id()
    conn.execute(
        insert(extracts).values(
            extract_id=extract_id,
            consumer_id="loyalty-app",
            purpose="loyalty_profiling",
            format="ndjson",
            epoch=1,
            status="done",
            k=5,
            requested_by="t",
            created_at=now,
        )
    )
    return extract_id


def migrate_data(engine: Engine, revision: str, *, down: bool = False) -> None:
    """Move the data database (through ``engine``, its owner's) up or down to ``revision`` with the vault's own migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(vault.migrations.__file__).parent / "data"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
