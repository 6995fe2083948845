"""Field validation at the domain boundary: exact values, hostile input, invariants."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone

import phonenumbers
import pytest
from email_validator import EmailNotValidError
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from vault.data_map import FIELDS, Field, Table, field
from vault.errors import ValidationError
from vault.validation import (
    blind_index_normal_form,
    normalize_email,
    normalize_phone,
    parse_resident_id,
    validate_document,
    validate_values,
)
from vault.value_sets import Gender, IdType, Tier

M, TR, LE = Table.members, Table.treatments, Table.ledger_entries
TODAY = date(2025, 6, 1)
PROPERTY = settings(database=None, deadline=None)
REASON = re.compile(r"[a-z_]+")

MEMBER = {
    "card_no": " vip-000123 ",
    "tier": "gold",
    "status": "active",
    "joined_at": "2024-03-01",
    "home_clinic_id": "sh-jingan-01",
    "full_name": " 李娜 ",
}
MEMBER_OUT = {
    "card_no": "VIP-000123",
    "tier": "gold",
    "status": "active",
    "joined_at": date(2024, 3, 1),
    "home_clinic_id": "sh-jingan-01",
    "full_name": "李娜",
}


def check_char(body: str) -> str:
    """The ISO 7064 MOD 11-2 character c making sum(digit·2^(17-i)) + c ≡ 1 (mod 11)."""
    total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(body))
    return next(c for v, c in enumerate("0123456789X") if (total + v) % 11 == 1)


def resident_id(born: date = date(1990, 5, 17), area: str = "110105", seq: str = "123") -> str:
    body = f"{area}{born:%Y%m%d}{seq}"
    return body + check_char(body)


def problems_of(call: Callable[..., object], *args: object, **kwargs: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    return info.value.problems


def patch(values: Mapping[str, object], current: Mapping[str, object] | None = None) -> dict[str, object]:
    return validate_values(M, values, partial=True, current=current, today=TODAY)


def patch_problems(table: Table, values: dict[str, object]) -> dict[str, str]:
    return problems_of(validate_values, table, values, partial=True)


# --- resident identity numbers -------------------------------------------------


def test_check_char_helper_matches_the_published_gb11643_sample() -> None:
    assert check_char("11010519491231002") == "X"


def test_published_sample_round_trips_upper_case_with_its_birth_date() -> None:
    assert parse_resident_id(" 11010519491231002x ") == ("11010519491231002X", date(1949, 12, 31))


def test_generated_resident_id_round_trips_with_its_birth_date() -> None:
    number = resident_id(date(1990, 5, 17))
    assert parse_resident_id(number, today=TODAY) == (number, date(1990, 5, 17))
    assert validate_document(IdType.resident_id, number, today=TODAY) == number


def test_one_wrong_check_digit_is_an_invalid_checksum() -> None:
    number = resident_id()
    wrong = number[:17] + ("1" if number[17] == "0" else "0")
    assert problems_of(parse_resident_id, wrong) == {"national_id": "invalid_checksum"}


def test_impossible_birth_date_inside_a_resident_id_is_refused() -> None:
    body = "110105" + "19900230" + "123"
    assert problems_of(parse_resident_id, body + check_char(body)) == {"national_id": "invalid_birth_date"}


@pytest.mark.parametrize("born", [TODAY + timedelta(days=1), date(1899, 12, 31)], ids=["future", "before-1900"])
def test_birth_date_in_the_future_or_before_1900_is_refused(born: date) -> None:
    number = resident_id(born)
    assert problems_of(parse_resident_id, number, today=TODAY) == {"national_id": "invalid_birth_date"}


def test_birth_date_today_is_accepted() -> None:
    assert parse_resident_id(resident_id(TODAY), today=TODAY)[1] == TODAY


@pytest.mark.parametrize(
    "raw",
    ["1101051990051712", "11010519900517123X1", "11010519900517A23X", "１１０１０５１９９００５１７１２３X"],
    ids=["17-chars", "19-chars", "letter-in-body", "full-width-digits"],
)
def test_malformed_resident_id_is_invalid_format(raw: str) -> None:
    assert problems_of(parse_resident_id, raw) == {"national_id": "invalid_format"}


# --- other documents -------------------------------------------------------------

FPR_NEW = "9" + "31" + "156" + "19850315" + "123"
FPR_NEW += check_char(FPR_NEW)


@pytest.mark.parametrize(
    ("id_type", "raw", "expected"),
    [
        (IdType.passport, " e1234567 ", "E1234567"),
        (IdType.passport, "AB123", "AB123"),
        (IdType.passport, "A" * 17, "A" * 17),
        (IdType.hk_macau_permit, "h12345678", "H12345678"),
        (IdType.hk_macau_permit, "M1234567890", "M1234567890"),
        (IdType.taiwan_permit, "12345678", "12345678"),
        (IdType.taiwan_permit, "ab12345678", "AB12345678"),
        (IdType.foreign_permanent_resident, "usa123456789012", "USA123456789012"),
        (IdType.foreign_permanent_resident, FPR_NEW.lower(), FPR_NEW),
    ],
)
def test_accepted_documents_are_normalized_upper_case(id_type: IdType, raw: str, expected: str) -> None:
    assert validate_document(id_type, raw) == expected


@pytest.mark.parametrize(
    ("id_type", "raw"),
    [
        (IdType.passport, "E123"),
        (IdType.passport, "E" + "1" * 17),
        (IdType.passport, "E1234567!"),
        (IdType.passport, "ＥＡ１２３４５"),
        (IdType.passport, "ßABCD"),
        (IdType.hk_macau_permit, "H123456789"),
        (IdType.hk_macau_permit, "X12345678"),
        (IdType.hk_macau_permit, "H1234567"),
        (IdType.taiwan_permit, "1234567"),
        (IdType.taiwan_permit, "123456789"),
        (IdType.taiwan_permit, "12345678901"),
        (IdType.foreign_permanent_resident, "US1234567890123"),
        (IdType.foreign_permanent_resident, "USA12345678901"),
        (IdType.foreign_permanent_resident, "8" + FPR_NEW[1:]),
    ],
)
def test_malformed_documents_are_invalid_format(id_type: IdType, raw: str) -> None:
    assert problems_of(validate_document, id_type, raw) == {"national_id": "invalid_format"}


def test_new_foreign_permanent_resident_card_checksum_is_checked() -> None:
    wrong = FPR_NEW[:17] + ("1" if FPR_NEW[17] == "0" else "0")
    assert problems_of(validate_document, IdType.foreign_permanent_resident, wrong) == {"national_id": "invalid_checksum"}


def test_unknown_id_type_is_not_in_value_set() -> None:
    assert problems_of(validate_document, "drivers_license", "E1234567") == {"id_type": "not_in_value_set"}


# --- national_id against id_type and date_of_birth --------------------------------


def test_national_id_disagreeing_with_date_of_birth_is_a_mismatch() -> None:
    values = {**MEMBER, "id_type": "resident_id", "national_id": resident_id(), "date_of_birth": "1990-05-18"}
    assert problems_of(validate_values, M, values, partial=False) == {"national_id": "birth_date_mismatch"}


def test_national_id_agreeing_with_date_of_birth_is_stored_normalized() -> None:
    number = resident_id()
    values = {**MEMBER, "id_type": "resident_id", "national_id": number.lower(), "date_of_birth": "1990-05-17"}
    expected = {**MEMBER_OUT, "id_type": "resident_id", "national_id": number, "date_of_birth": date(1990, 5, 17)}
    assert validate_values(M, values, partial=False) == expected


def test_patched_date_of_birth_is_checked_against_the_stored_resident_id() -> None:
    current = {"id_type": "resident_id", "national_id": resident_id(), "date_of_birth": date(1990, 5, 17)}
    assert problems_of(patch, {"date_of_birth": "1991-01-01"}, current=current) == {"national_id": "birth_date_mismatch"}


def test_patched_national_id_uses_the_stored_id_type() -> None:
    assert patch({"national_id": " e1234567 "}, current={"id_type": "passport"}) == {"national_id": "E1234567"}


def test_national_id_without_any_id_type_is_refused() -> None:
    assert patch_problems(M, {"national_id": "E1234567"}) == {"national_id": "id_type_required"}


def test_patched_id_type_rechecks_the_stored_number() -> None:
    current = {"id_type": "resident_id", "national_id": resident_id()}
    assert problems_of(patch, {"id_type": "hk_macau_permit"}, current=current) == {"national_id": "invalid_format"}


def test_clearing_id_type_while_a_number_is_stored_is_refused() -> None:
    current = {"id_type": "passport", "national_id": "E1234567"}
    assert problems_of(patch, {"id_type": None}, current=current) == {"national_id": "id_type_required"}


def test_invalid_id_type_is_reported_once_not_also_on_the_number() -> None:
    assert patch_problems(M, {"id_type": "visa", "national_id": "E1234567"}) == {"id_type": "not_in_value_set"}


# --- phone and e-mail -------------------------------------------------------------


@pytest.mark.parametrize("raw", ["13800138000", "+86 138 0013 8000", "138-0013-8000", "+8613800138000"])
def test_chinese_mobile_normalizes_to_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+8613800138000"


def test_foreign_number_keeps_its_country_code() -> None:
    assert normalize_phone("+1 650-253-0000") == "+16502530000"


@pytest.mark.parametrize("raw", ["12345", "not a phone", "13800138000 ext. 12", "13800138000#12", "138OO138OOO", ""])
def test_invalid_phone_is_refused(raw: str) -> None:
    assert problems_of(normalize_phone, raw) == {"phone": "invalid_phone"}


def test_unparseable_phone_chains_the_library_cause() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_phone("+999 1234")
    assert isinstance(info.value.__cause__, phonenumbers.NumberParseException)


def test_email_is_lower_cased_entirely() -> None:
    assert normalize_email("Li.Na@Example.COM") == "li.na@example.com"


def test_internationalized_email_round_trips() -> None:
    assert normalize_email("张伟@例子.中国") == "张伟@例子.中国"


@pytest.mark.parametrize("raw", ["li.na@", "@example.com", "a b@example.com", "x@example.test"])
def test_invalid_email_is_refused_with_the_cause_chained(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_email(raw)
    assert info.value.problems == {"email": "invalid_email"}
    assert isinstance(info.value.__cause__, EmailNotValidError)


# --- validate_values: create and patch ---------------------------------------------


def test_valid_create_is_normalized() -> None:
    assert validate_values(M, MEMBER, partial=False) == MEMBER_OUT


def test_required_field_missing_on_create_is_reported() -> None:
    values = {k: v for k, v in MEMBER.items() if k != "full_name"}
    assert problems_of(validate_values, M, values, partial=False) == {"full_name": "required"}


def test_all_problems_of_a_call_are_reported_at_once() -> None:
    values = {**MEMBER, "full_name": None, "tier": "GOLD", "email": "li.na@", "favourite_colour": "red"}
    assert problems_of(validate_values, M, values, partial=False) == {
        "full_name": "required",
        "tier": "not_in_value_set",
        "email": "invalid_email",
        "favourite_colour": "unknown_field",
    }


def test_none_clears_an_optional_field_in_a_patch() -> None:
    assert patch({"email": None, "allergies": None}) == {"email": None, "allergies": None}


@pytest.mark.parametrize("value", [None, "   "])
def test_required_field_cannot_be_cleared_in_a_patch(value: object) -> None:
    assert patch_problems(M, {"full_name": value}) == {"full_name": "required"}


def test_blank_optional_text_becomes_none() -> None:
    assert patch({"address": " \u3000\n "}) == {"address": None}


def test_unknown_field_is_refused() -> None:
    assert patch_problems(M, {"amount": 100}) == {"amount": "unknown_field"}


def test_ledger_entry_create_is_normalized() -> None:
    values = {"entry_type": "top_up", "occurred_at": "2025-01-01T08:00:00+08:00", "amount": 50_000}
    assert validate_values(LE, values, partial=False) == {
        "entry_type": "top_up",
        "occurred_at": datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
        "amount": 50_000,
    }


# --- per kind --------------------------------------------------------------------


def test_chinese_text_round_trips_with_inner_tab_and_newline() -> None:
    text = "过敏史：\n\t青霉素（2019 年）"
    assert patch({"medical_history": f"  {text}  "}) == {"medical_history": text}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("李\x00娜", "control_character"),
        ("Li\x1b[31mNa", "control_character"),
        ("Li\rNa", "control_character"),
        ("Li\x85Na", "control_character"),
        ("Li\x7fNa", "control_character"),
        ("Li\ud800Na", "invalid_text"),
        (b"Li Na", "invalid_type"),
        (42, "invalid_type"),
        ("娜" * 101, "too_long"),
    ],
    ids=["nul", "esc", "cr", "c1-nel", "del", "lone-surrogate", "bytes", "int", "101-chars"],
)
def test_bad_text_is_refused(value: object, reason: str) -> None:
    assert patch_problems(M, {"full_name": value}) == {"full_name": reason}


def test_text_of_exactly_max_length_characters_is_accepted() -> None:
    assert patch({"full_name": "娜" * 100}) == {"full_name": "娜" * 100}


@pytest.mark.parametrize(
    ("value", "reason"),
    [("GOLD", "not_in_value_set"), ("platinum-plus", "not_in_value_set"), (Gender.female, "not_in_value_set"), (1, "invalid_type")],
)
def test_enum_outside_its_value_set_is_refused(value: object, reason: str) -> None:
    assert patch_problems(M, {"tier": value}) == {"tier": reason}


def test_enum_member_is_returned_as_plain_str() -> None:
    tier = patch({"tier": Tier.gold})["tier"]
    assert tier == "gold"
    assert type(tier) is str


@pytest.mark.parametrize(("value", "expected"), [("2024-02-29", date(2024, 2, 29)), (date(1990, 5, 17), date(1990, 5, 17))])
def test_date_is_accepted(value: object, expected: date) -> None:
    assert patch({"date_of_birth": value}) == {"date_of_birth": expected}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-02-30", "invalid_date"),
        ("2025-13-01", "invalid_date"),
        ("2024-2-1", "invalid_format"),
        ("20240201", "invalid_format"),
        ("2024-02-01T00:00:00", "invalid_format"),
        ("1899-12-31", "out_of_range"),
        ("2201-01-01", "out_of_range"),
        (datetime(2024, 2, 1, tzinfo=UTC), "invalid_type"),
        (20240201, "invalid_type"),
    ],
)
def test_bad_date_is_refused(value: object, reason: str) -> None:
    assert patch_problems(M, {"date_of_birth": value}) == {"date_of_birth": reason}


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, 20, 30, tzinfo=timezone(timedelta(hours=8))),
        "2025-01-01T20:30:00+08:00",
        "2025-01-01 20:30:00+08:00",
        "2025-01-01T12:30:00Z",
        "2025-01-01t12:30:00.000z",
    ],
)
def test_aware_datetime_is_converted_to_utc(value: object) -> None:
    performed_at = validate_values(TR, {"performed_at": value}, partial=True)["performed_at"]
    assert performed_at == datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
    assert isinstance(performed_at, datetime)
    assert performed_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (datetime(2025, 1, 1, 12, 30), "naive_datetime"),  # naive: the input under test
        ("2025-01-01T12:30:00", "naive_datetime"),
        ("2025-02-30T12:30:00Z", "invalid_date"),
        ("2025-01-01T24:00:00Z", "invalid_date"),
        ("yesterday", "invalid_format"),
        ("2025-01-01T12:30Z", "invalid_format"),
        ("1899-12-31T12:00:00Z", "out_of_range"),
        (date(2025, 1, 1), "invalid_type"),
    ],
)
def test_bad_datetime_is_refused(value: object, reason: str) -> None:
    assert patch_problems(TR, {"performed_at": value}) == {"performed_at": reason}


@pytest.mark.parametrize(
    ("value", "reason"), [(True, "invalid_type"), (100.0, "invalid_type"), ("100", "invalid_type"), (-1, "out_of_range"), (10**12 + 1, "out_of_range")]
)
def test_bad_money_is_refused(value: object, reason: str) -> None:
    assert patch_problems(LE, {"amount": value}) == {"amount": reason}


@pytest.mark.parametrize("value", [0, 10**12])
def test_money_bounds_are_inclusive(value: int) -> None:
    assert validate_values(LE, {"amount": value}, partial=True) == {"amount": value}


@pytest.mark.parametrize(("value", "reason"), [(2**53 + 1, "out_of_range"), (-(2**53) - 1, "out_of_range"), (False, "invalid_type"), (1.5, "invalid_type")])
def test_bad_integer_is_refused(value: object, reason: str) -> None:
    assert patch_problems(LE, {"points": value}) == {"points": reason}


@pytest.mark.parametrize("value", [2**53, -(2**53)])
def test_integer_bounds_are_inclusive(value: int) -> None:
    assert validate_values(LE, {"points": value}, partial=True) == {"points": value}


@pytest.mark.parametrize("value", ["abc12", "A" * 33, "卡12345678", "AB 123456", 123456])
def test_bad_card_no_is_refused(value: object) -> None:
    reason = "invalid_type" if isinstance(value, int) else "invalid_format"
    assert patch_problems(M, {"card_no": value}) == {"card_no": reason}


@pytest.mark.parametrize(("name", "value"), [("home_clinic_id", "sh-jingan-01"), ("preferred_clinic_id", "a" * 32)])
def test_clinic_id_is_accepted_as_is(name: str, value: str) -> None:
    assert patch({name: value}) == {name: value}


@pytest.mark.parametrize("value", ["SH-01", "-sh", "a" * 33, "sh_01", " sh-01"])
def test_bad_clinic_id_is_refused(value: str) -> None:
    assert patch_problems(M, {"home_clinic_id": value}) == {"home_clinic_id": "invalid_format"}


def test_staff_id_allows_dots_and_underscores_up_to_64_characters() -> None:
    assert validate_values(TR, {"practitioner_id": "dr.li_01"}, partial=True) == {"practitioner_id": "dr.li_01"}
    assert patch_problems(TR, {"practitioner_id": "d" * 65}) == {"practitioner_id": "invalid_format"}
    assert patch_problems(TR, {"practitioner_id": "Dr.Li"}) == {"practitioner_id": "invalid_format"}


def test_text_list_drops_empties_and_duplicates_keeping_order() -> None:
    assert patch({"allergies": ["青霉素", " 青霉素 ", "", "花粉", "青霉素"]}) == {"allergies": ["青霉素", "花粉"]}


@pytest.mark.parametrize(
    ("value", "reason"),
    [(["x"] * 51, "too_many_items"), ("青霉素", "invalid_type"), (["x" * 101], "too_long"), ([1], "invalid_type"), (["a\x00"], "control_character")],
)
def test_bad_text_list_is_refused(value: object, reason: str) -> None:
    assert patch_problems(M, {"allergies": value}) == {"allergies": reason}


def test_enum_list_is_deduplicated_in_order() -> None:
    assert patch({"preferred_categories": ["laser", "laser", "injectable"]}) == {"preferred_categories": ["laser", "injectable"]}


@pytest.mark.parametrize(("value", "reason"), [(["botox"], "not_in_value_set"), (["laser"] * 8, "too_many_items"), ("laser", "invalid_type")])
def test_bad_enum_list_is_refused(value: object, reason: str) -> None:
    assert patch_problems(M, {"preferred_categories": value}) == {"preferred_categories": reason}


# --- no values in errors ------------------------------------------------------------

_WRONG_CHECKSUM = resident_id()[:17] + ("1" if resident_id()[17] == "0" else "0")


@pytest.mark.parametrize(
    ("secret", "call"),
    [
        ("555-0199-abc", lambda: normalize_phone("555-0199-abc")),
        ("Li.Na@@Example.COM", lambda: normalize_email("Li.Na@@Example.COM")),
        ("wang.fang@example", lambda: patch({"email": "wang.fang@example"})),
        (_WRONG_CHECKSUM, lambda: parse_resident_id(_WRONG_CHECKSUM)),
        ("SECRET-PASS-001", lambda: validate_document(IdType.passport, "SECRET-PASS-001")),
        ("李娜", lambda: patch({"full_name": "李娜\x00"})),
        ("2026-02-30", lambda: patch({"date_of_birth": "2026-02-30"})),
        ("platinum-plus", lambda: patch({"tier": "platinum-plus"})),
        ("李娜 13800138000", lambda: patch({"李娜 13800138000": "x"})),
    ],
    ids=["phone", "email", "email-in-values", "resident-id", "passport", "text", "date", "enum", "field-name"],
)
def test_errors_never_contain_the_input(secret: str, call: Callable[[], object]) -> None:
    with pytest.raises(ValidationError) as info:
        call()
    err = info.value
    rendered = [str(err), repr(err), *map(str, err.args), *err.problems, *err.problems.values()]
    assert [text for text in rendered if secret in text] == []
    assert all(REASON.fullmatch(reason) for reason in err.problems.values())


def test_collected_errors_chain_nothing() -> None:
    with pytest.raises(ValidationError) as info:
        patch({"phone": "not a phone", "email": "li.na@"})
    assert info.value.problems == {"phone": "invalid_phone", "email": "invalid_email"}
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# --- blind index ---------------------------------------------------------------------


def test_blind_index_normal_forms() -> None:
    assert blind_index_normal_form(field(M, "phone"), "+86 138 0013 8000") == "+8613800138000"
    assert blind_index_normal_form(field(M, "email"), "Li.Na@Example.COM") == "li.na@example.com"
    assert blind_index_normal_form(field(M, "national_id"), " 11010519491231002x ") == "11010519491231002X"
    assert blind_index_normal_form(field(M, "card_no"), " vip-000123 ") == "VIP-000123"


def test_blind_index_normal_form_refuses_a_field_that_is_not_blind_indexed() -> None:
    with pytest.raises(ValueError, match=r"^members\.full_name is not blind-indexed$"):
        blind_index_normal_form(field(M, "full_name"), "李娜")


# --- properties ----------------------------------------------------------------------

births = st.dates(date(1900, 1, 1), TODAY)
areas = st.integers(110000, 659999).map(str)
sequences = st.integers(0, 999).map("{:03d}".format)


@PROPERTY
@given(born=births, area=areas, seq=sequences)
def test_any_generated_resident_id_validates(born: date, area: str, seq: str) -> None:
    number = resident_id(born, area, seq)
    assert parse_resident_id(number.lower(), today=TODAY) == (number, born)


@PROPERTY
@given(born=births, area=areas, seq=sequences, index=st.integers(0, 16), shift=st.integers(1, 9))
def test_any_single_digit_change_is_detected(born: date, area: str, seq: str, index: int, shift: int) -> None:
    number = resident_id(born, area, seq)
    changed = number[:index] + str((int(number[index]) + shift) % 10) + number[index + 1 :]
    assert problems_of(parse_resident_id, changed, today=TODAY) == {"national_id": "invalid_checksum"}


def _cased(draw: st.DrawFn, text: str) -> str:
    return draw(st.sampled_from([text, text.lower(), text.upper()]))


@st.composite
def documents(draw: st.DrawFn) -> tuple[IdType, str]:
    id_type = draw(st.sampled_from(list(IdType)))
    if id_type is IdType.resident_id:
        raw = resident_id(draw(births), draw(areas), draw(sequences))
    elif id_type is IdType.foreign_permanent_resident and draw(st.booleans()):
        body = "9" + draw(st.from_regex(r"[0-9]{16}", fullmatch=True))
        raw = body + check_char(body)
    else:
        pattern = {
            IdType.passport: r"[A-Z0-9]{5,17}",
            IdType.hk_macau_permit: r"[HM]([0-9]{8}|[0-9]{10})",
            IdType.taiwan_permit: r"[0-9A-Z]{8}|[0-9A-Z]{10}",
            IdType.foreign_permanent_resident: r"[A-Z]{3}[0-9]{12}",
        }[id_type]
        raw = draw(st.from_regex(rf"(?a:{pattern})", fullmatch=True))
    return id_type, f" {_cased(draw, raw)} "


@PROPERTY
@given(document=documents())
def test_national_id_blind_index_form_is_idempotent_and_matches_validation(document: tuple[IdType, str]) -> None:
    id_type, raw = document
    normalized = validate_document(id_type, raw, today=TODAY)
    national_id = field(M, "national_id")
    assert blind_index_normal_form(national_id, raw) == normalized
    assert blind_index_normal_form(national_id, normalized) == normalized


@PROPERTY
@given(raw=st.from_regex(r"(?a:[A-Za-z0-9-]{6,32})", fullmatch=True), pad=st.sampled_from(["", " ", "\t "]))
def test_card_no_blind_index_form_is_idempotent_and_matches_validation(raw: str, pad: str) -> None:
    normalized = patch({"card_no": pad + raw + pad})["card_no"]
    card_no = field(M, "card_no")
    assert blind_index_normal_form(card_no, pad + raw) == normalized == raw.upper()
    assert blind_index_normal_form(card_no, raw.upper()) == normalized


@st.composite
def phones(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        raw = draw(st.from_regex(r"(?a:1[3-9][0-9]{9})", fullmatch=True))
        number = phonenumbers.parse(raw, "CN")
    else:
        region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
        example = phonenumbers.example_number(region)
        assume(example is not None)
        assert example is not None
        number = example
    assume(phonenumbers.is_valid_number(number))
    style = draw(st.sampled_from([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]))
    return phonenumbers.format_number(number, style)


@PROPERTY
@given(raw=phones())
def test_phone_blind_index_form_is_idempotent(raw: str) -> None:
    normalized = normalize_phone(raw)
    phone = field(M, "phone")
    assert normalized.startswith("+")
    assert blind_index_normal_form(phone, raw) == normalized
    assert blind_index_normal_form(phone, normalized) == normalized


@PROPERTY
@given(raw=st.emails(), upper=st.booleans())
def test_email_blind_index_form_is_idempotent(raw: str, upper: bool) -> None:
    raw = raw.upper() if upper else raw
    try:
        normalized = normalize_email(raw)
    except ValidationError:
        reject()  # e.g. a reserved domain that st.emails() may produce
    email = field(M, "email")
    assert normalized == normalized.lower()
    assert blind_index_normal_form(email, raw) == normalized
    assert blind_index_normal_form(email, normalized) == normalized


@PROPERTY
@given(text=st.text(st.characters(exclude_categories=["Cs", "Cc"]) | st.sampled_from("\t\n"), max_size=300))
def test_clean_text_round_trips_stripped(text: str) -> None:
    assert patch({"address": text}) == {"address": text.strip() or None}


hostile_text = st.text() | st.text(st.characters(categories=["Cs", "Cc", "Nd", "Lu", "Zs"]))
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda children: st.lists(children, max_size=60) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=60,
)


@st.composite
def hostile_writes(draw: st.DrawFn) -> tuple[Field, dict[str, object], Mapping[str, object] | None]:
    """One field of any table with any JSON-like value, maybe an id type, stray keys and stored values."""
    target = draw(st.sampled_from(FIELDS))
    values: dict[str, object] = {**draw(st.dictionaries(st.text(max_size=8), json_like, max_size=2)), target.name: draw(json_like)}
    id_type = draw(st.none() | st.sampled_from([*IdType, "visa"]))
    if id_type is not None:
        values["id_type"] = id_type
    current = draw(st.none() | st.dictionaries(st.sampled_from(["id_type", "national_id", "date_of_birth"]), json_like))
    return target, values, current


@settings(PROPERTY, max_examples=500)
@given(write=hostile_writes(), partial=st.booleans())
def test_validate_values_raises_only_validation_error_on_json_like_input(
    write: tuple[Field, dict[str, object], Mapping[str, object] | None], partial: bool
) -> None:
    target, values, current = write
    problems: dict[str, str] = {}
    try:
        out = validate_values(target.table, values, partial=partial, current=current, today=TODAY)
    except ValidationError as err:
        problems = err.problems
    else:
        assert set(out) <= set(values)
        return
    assert problems
    assert all(isinstance(name, str) for name in problems)
    assert all(REASON.fullmatch(reason) for reason in problems.values())
