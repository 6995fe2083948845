"""The extracts' bulk read path: ``FieldCipher.decrypt_record`` and ``vault.codec.RowOpener`` open what ``decrypt`` and ``open_sealed`` open, and fail alike."""

from __future__ import annotations

import json
import os
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.errors import CiphertextFormatError, DecryptionError
from keys.field_cipher import FieldCipher, FieldContext
from vault import data_map as dm
from vault.codec import RowOpener, open_sealed, to_columns
from vault.errors import RecordIntegrityError

props = settings(deadline=None)  # wall-clock deadlines are not assertions we make
MEMBER = dm.fields_by_name(dm.Table.members)
LEDGER = dm.fields_by_name(dm.Table.ledger_entries)
# Every kind a profile reads: enum, date, text, text and enum lists, plus a plain (unencrypted) enum and date.
FIELDS = [MEMBER[n] for n in ("tier", "joined_at", "gender", "date_of_birth", "city", "income_band", "interest_tags", "preferred_categories")]
VALUES: dict[str, object] = {
    "gender": "female",
    "date_of_birth": date(1990, 2, 28),
    "city": "杭州",
    "income_band": "10k-20k",
    "interest_tags": ["抗衰", "补水"],
    "preferred_categories": ["skin_care"],
}
STORED_PLAIN = {"tier": "gold", "joined_at": date(2020, 1, 2)}


def stored_row(cipher: FieldCipher, record_id: str, values: dict[str, object]) -> list[object]:
    """The row as the repositories store it: encrypted fields sealed, plain ones as they are, absent ones None."""
    columns = to_columns(cipher, FIELDS, record_id, {**STORED_PLAIN, **values})
    return [columns.get(f.name) for f in FIELDS]


def as_sealed(value: object) -> bytes | None:
    """A stored column value that ``open_sealed`` reads: a ciphertext or nothing."""
    assert value is None or isinstance(value, bytes)
    return value


def test_decrypt_record_returns_what_decrypt_returns_field_by_field() -> None:
    cipher = FieldCipher(os.urandom(32), 3)
    names = ["gender", "city", "email"]
    sealed = [cipher.encrypt(f"v-{n}".encode(), FieldContext("members", "m-1", n)) for n in names]

    assert cipher.decrypt_record("members", "m-1", names, sealed) == [b"v-gender", b"v-city", b"v-email"]
    assert cipher.decrypt_record("members", "m-1", [], []) == []


@props
@given(plaintexts=st.lists(st.binary(max_size=64), min_size=1, max_size=5), record=st.text(), version=st.integers(0, 2**32 - 1))
def test_decrypt_record_round_trips_encrypt_record(plaintexts: list[bytes], record: str, version: int) -> None:
    cipher = FieldCipher(bytes(32), version)
    names = [f"f{i}" for i in range(len(plaintexts))]

    assert cipher.decrypt_record("t", record, names, cipher.encrypt_record("t", record, names, plaintexts)) == plaintexts


@pytest.mark.parametrize(
    ("table", "record", "swap"),
    [("ledger_entries", "m-1", False), ("members", "m-2", False), ("members", "m-1", True)],
    ids=["other-table", "other-record", "fields-swapped"],
)
def test_decrypt_record_of_ciphertexts_moved_elsewhere_fails(table: str, record: str, swap: bool) -> None:
    cipher = FieldCipher(os.urandom(32), 1)
    sealed = cipher.encrypt_record("members", "m-1", ["gender", "city"], [b"female", b"x"])

    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt_record(table, record, ["gender", "city"], sealed[::-1] if swap else sealed)
    assert str(caught.value) == "Decryption failed."


def test_decrypt_record_under_another_key_version_or_of_an_unknown_format_fails() -> None:
    key = os.urandom(32)
    sealed = FieldCipher(key, 1).encrypt_record("members", "m-1", ["gender"], [b"female"])

    with pytest.raises(DecryptionError):
        FieldCipher(key, 2).decrypt_record("members", "m-1", ["gender"], sealed)
    with pytest.raises(CiphertextFormatError):
        FieldCipher(key, 1).decrypt_record("members", "m-1", ["gender"], [b"\x02" + sealed[0][1:]])
    with pytest.raises(ValueError, match="one ciphertext per field"):
        FieldCipher(key, 1).decrypt_record("members", "m-1", ["gender", "city"], sealed)


def test_row_opener_returns_what_open_sealed_returns_for_every_kind() -> None:
    cipher = FieldCipher(os.urandom(32), 1)
    stored = stored_row(cipher, "m-1", VALUES)

    opened = RowOpener(FIELDS).row(cipher, "m-1", stored)

    expected = [open_sealed(cipher, f, "m-1", as_sealed(v)) if f.encrypted else v for f, v in zip(FIELDS, stored, strict=True)]
    assert opened == expected
    assert dict(zip([f.name for f in FIELDS], opened, strict=True)) == {**STORED_PLAIN, **VALUES}


def test_row_opener_keeps_absent_values_none() -> None:
    cipher = FieldCipher(os.urandom(32), 1)

    opened = RowOpener(FIELDS).row(cipher, "m-1", stored_row(cipher, "m-1", {"gender": "male"}))

    assert opened == ["gold", date(2020, 1, 2), "male", None, None, None, None, None]


@pytest.mark.parametrize("amount", [0, 7, 1_000_00, 12_345_678_90, -250])
def test_row_opener_decodes_money_as_open_sealed_does(amount: int) -> None:
    cipher = FieldCipher(os.urandom(32), 1)
    field = LEDGER["amount"]
    stored = to_columns(cipher, [field], "e-1", {"amount": amount})["amount"]

    assert RowOpener([field]).row(cipher, "e-1", [stored]) == [amount] == [open_sealed(cipher, field, "e-1", as_sealed(stored))]


def test_row_opener_names_the_tampered_field_and_no_value() -> None:
    cipher = FieldCipher(os.urandom(32), 1)
    stored = stored_row(cipher, "m-1", VALUES)
    city = [f.name for f in FIELDS].index("city")
    sealed = stored[city]
    assert isinstance(sealed, bytes)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    stored[city] = bytes(tampered)

    with pytest.raises(RecordIntegrityError) as caught:
        RowOpener(FIELDS).row(cipher, "m-1", stored)
    assert (caught.value.table, caught.value.record_id, caught.value.field) == ("members", "m-1", "city")
    assert str(caught.value) == "integrity check failed: members.city of record m-1"
    assert "杭州" not in str(caught.value)


def test_row_opener_of_a_row_moved_to_another_member_fails() -> None:
    cipher = FieldCipher(os.urandom(32), 1)

    with pytest.raises(RecordIntegrityError) as caught:
        RowOpener(FIELDS).row(cipher, "m-2", stored_row(cipher, "m-1", VALUES))
    assert caught.value.field == "gender"  # the first encrypted field, as ``open_sealed`` field by field finds it


def test_row_opener_refuses_fields_of_two_tables() -> None:
    with pytest.raises(ValueError, match="one table"):
        RowOpener([MEMBER["gender"], LEDGER["amount"]])


@props
@given(
    tags=st.lists(st.text(max_size=8), max_size=4),
    before=st.sampled_from(["", " ", "\n", "\t "]),
    after=st.sampled_from(["", " ", "\r\n"]),
)
def test_row_opener_decodes_json_as_open_sealed_does_whatever_its_spacing(tags: list[str], before: str, after: str) -> None:
    """A list stored with whitespace around it (not as ``encode`` writes it) still opens as ``json.loads`` reads it."""
    cipher = FieldCipher(os.urandom(32), 1)
    field = MEMBER["interest_tags"]
    text = before + json.dumps(tags, ensure_ascii=False) + after
    sealed = cipher.encrypt(text.encode(), FieldContext("members", "m-1", "interest_tags"))

    assert RowOpener([field]).row(cipher, "m-1", [sealed]) == [tags] == [open_sealed(cipher, field, "m-1", sealed)]


@pytest.mark.parametrize("text", ["", " ", '["a"] x', '["a"', '["a"]]', "nope"])
def test_row_opener_names_a_field_whose_json_does_not_parse(text: str) -> None:
    cipher = FieldCipher(os.urandom(32), 1)
    sealed = cipher.encrypt(text.encode(), FieldContext("members", "m-1", "interest_tags"))

    with pytest.raises(RecordIntegrityError) as caught:
        RowOpener([MEMBER["interest_tags"]]).row(cipher, "m-1", [sealed])
    assert caught.value.field == "interest_tags"
