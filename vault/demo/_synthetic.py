"""The synthetic values of the demo members: who they are, their treatments and their card ledgers.

A batch's values come from its own generator state (``seed`` and the batch's
number), so they depend only on ``seed``, the member's number and the batch
size, however the batches are spread over processes. Names, addresses and
occupations come from Faker's ``zh_CN`` locale; phone and resident ID numbers
are valid (E.164 mobile numbers, GB 11643 checksums that agree with the date of
birth). Each member gets about 3 treatments at one or two clinics and about 10
card-ledger entries whose balances never go negative. Nothing here touches a
database or a key.
"""

from __future__ import annotations

import itertools
import random
from datetime import date, datetime, timedelta

from faker import Faker

from vault import value_sets as vs
from vault.demo import catalog

Values = dict[str, object]
Plan = tuple[list[Values], list[Values]]  # a member's treatments and ledger entries

_WEIGHTS_11 = [pow(2, 17 - i, 11) for i in range(17)]


def batch_values(fake: Faker, *, seed: int, batch: int, start: int, end: int, now: datetime) -> tuple[list[Values], list[Plan]]:
    """Members ``start`` up to ``end`` (exclusive) of the batch beginning at ``start``: their values, then their treatments and ledgers."""
    state = seed * 1_000_003 + start // batch
    rng = random.Random(state)
    fake.seed_instance(state)
    people = [_member_values(fake, rng, now, i) for i in range(start, min(start + batch, end))]
    return people, [(_treatments(rng, p, now), _ledger(rng, now)) for p in people]


def resident_id(area: str, born: date, sequence: int, *, female: bool) -> str:
    """A GB 11643 resident ID number with a correct MOD 11-2 check character."""
    seq = sequence % 500 * 2 + (0 if female else 1)
    body = f"{area}{born:%Y%m%d}{seq:03d}"
    check = (12 - sum(int(c) * w for c, w in zip(body, _WEIGHTS_11, strict=True)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


# The value sets as sequences, built once (a choice from a list of the same items in the same order draws the same).
_CLINIC_IDS = list(catalog.CLINICS)
_CATEGORIES = list(catalog.TREATMENTS)
_TIERS, _TIER_CUM_WEIGHTS = list(vs.Tier), list(itertools.accumulate((40, 25, 18, 12, 5)))  # ``choices`` accumulates weights the same way
_CHANNELS, _EDUCATION, _INCOME, _MARITAL = list(vs.Channel), list(vs.Education), list(vs.IncomeBand), list(vs.MaritalStatus)
_SKIN, _PREGNANCY, _TREATMENT_CATEGORIES = list(vs.SkinType), list(vs.PregnancyStatus), list(vs.TreatmentCategory)


def _member_values(fake: Faker, rng: random.Random, now: datetime, i: int) -> Values:
    clinic = rng.choice(_CLINIC_IDS)
    city, area = catalog.CLINICS[clinic]
    female = rng.random() < 0.82
    born = date(rng.randint(1965, 2006), rng.randint(1, 12), rng.randint(1, 28))
    joined = (now - timedelta(days=rng.randint(10, 3000))).date()
    return {
        "card_no": f"MV{i:010d}",
        "tier": rng.choices(_TIERS, cum_weights=_TIER_CUM_WEIGHTS)[0],
        "status": vs.MemberStatus.active if rng.random() < 0.95 else vs.MemberStatus.suspended,
        "joined_at": joined,
        "home_clinic_id": clinic,
        "full_name": fake.name_female() if female else fake.name_male(),
        "id_type": vs.IdType.resident_id,
        "national_id": resident_id(area, born, i, female=female),
        "date_of_birth": born,
        "gender": vs.Gender.female if female else vs.Gender.male,
        "phone": f"+86{rng.choice(catalog.MOBILE_PREFIXES)}{rng.randint(0, 99_999_999):08d}",
        "email": f"{fake.user_name()}{i}@example.cn",
        "address": fake.address(),
        "wechat_id": f"wx_{fake.user_name()}_{i}",
        "preferred_channel": rng.choice(_CHANNELS),
        "city": city,
        "occupation": fake.job(),
        "education": rng.choice(_EDUCATION),
        "income_band": rng.choice(_INCOME),
        "marital_status": rng.choice(_MARITAL),
        "allergies": rng.sample(catalog.ALLERGIES, rng.randint(0, 2)),
        "medical_history": rng.choice(catalog.HISTORY),
        "contraindications": rng.sample(catalog.CONTRAINDICATIONS, rng.randint(0, 1)),
        "skin_type": rng.choice(_SKIN),
        "pregnancy_status": vs.PregnancyStatus.not_applicable if not female else rng.choice(_PREGNANCY),
        "interest_tags": rng.sample(catalog.INTEREST_TAGS, rng.randint(1, 4)),
        "preferred_categories": rng.sample(_TREATMENT_CATEGORIES, rng.randint(1, 3)),
        "preferred_clinic_id": clinic,
    }


def _treatments(rng: random.Random, person: Values, now: datetime) -> list[Values]:
    home = str(person["home_clinic_id"])
    out = []
    for _ in range(rng.choice((2, 3, 3, 4))):
        category = rng.choice(_CATEGORIES)
        procedure, product, dose, area = rng.choice(catalog.TREATMENTS[category])
        performed = (now - timedelta(days=rng.randint(1, 2500), minutes=rng.randint(0, 600))).replace(microsecond=0)
        out.append(
            {
                "performed_at": performed,
                "clinic_id": home if rng.random() < 0.8 else rng.choice(_CLINIC_IDS),
                "category": category.value,
                "practitioner_id": f"dr-{rng.randint(1, 40):03d}",
                "procedure": procedure,
                "product": product,
                "lot_no": f"L{rng.randint(100000, 999999)}",
                "dose": dose,
                "body_area": area,
                "clinical_notes": rng.choice(catalog.NOTES),
                "adverse_events": rng.choice(catalog.ADVERSE) or None,
                "follow_up_at": (performed + timedelta(days=28)).date().isoformat(),
                "price": rng.randint(8, 300) * 10_000,
            }
        )
    return out


def _ledger(rng: random.Random, now: datetime) -> list[Values]:
    balance = points = 0
    when = now - timedelta(days=rng.randint(400, 2000))
    out = []
    for _ in range(rng.randint(8, 12)):
        when += timedelta(days=rng.randint(1, 40), minutes=rng.randint(0, 600))
        kind, amount, pts = _next_entry(rng, balance, points)
        balance += _MONEY_SIGN.get(kind, 0) * amount
        points += _POINTS_SIGN.get(kind, 0) * pts
        out.append(
            {
                "entry_type": kind,
                "occurred_at": min(when, now).replace(microsecond=0),
                "amount": amount,
                "points": pts,
                "balance_after": balance,
                "points_balance_after": points,
            }
        )
    return out


_MONEY_SIGN = {"top_up": 1, "spend": -1, "refund": -1}
_POINTS_SIGN = {"points_earn": 1, "points_redeem": -1}


def _next_entry(rng: random.Random, balance: int, points: int) -> tuple[str, int, int]:
    roll = rng.random()
    if balance >= 10_000 and roll < 0.45:
        return "spend", rng.randint(1, balance // 10_000) * 10_000, 0
    if points >= 100 and roll < 0.55:
        return "points_redeem", rng.randint(1, points // 100) * 100, 0
    if roll < 0.75:
        return "top_up", rng.choice((100_000, 200_000, 500_000, 1_000_000)), 0
    return "points_earn", 0, rng.randint(1, 30) * 10


__all__ = ["Plan", "Values", "batch_values", "resident_id"]
