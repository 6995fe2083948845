"""Field cipher, HKDF sub-keys and the blind index: properties, format pins and known answers."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.blind_index import BlindIndex
from keys.derive import derive_key
from keys.errors import CiphertextFormatError, DecryptionError
from keys.field_cipher import FORMAT_V1, FieldCipher, FieldContext, read_header

# Wall-clock deadlines are not assertions we make; hypothesis would fail a slow example otherwise.
props = settings(deadline=None)

keys_ = st.binary(min_size=32, max_size=32)
key_versions = st.integers(min_value=0, max_value=2**32 - 1)
plaintexts = st.binary(max_size=512)
contexts = st.builds(FieldContext, table=st.text(), record_id=st.text(), field=st.text())
roots = st.binary(min_size=32, max_size=64)

HEADER_LEN = 1 + 4 + 12
TAG_LEN = 16


def documented_aad(where: FieldContext, key_version: int) -> bytes:
    """The associated data of ciphertext format v1, built here byte by byte.

    As keys/field_cipher.py documents it since format v1 was committed (b2d031c)::

        b"member-vault/field/v1" ‖ for each of (table, record id, field): u16 length ‖ utf-8 ‖ u32 key version

    Stored ciphertexts depend on this exact layout, so it may only change together
    with the format byte or the AAD label.
    """
    out = b"member-vault/field/v1"
    for part in (where.table, where.record_id, where.field):
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(2, "big") + raw
    return out + key_version.to_bytes(4, "big")


class CountingRandom:
    """An injected random source that records every request and what it returned."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.returned: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.requests.append(n)
        out = os.urandom(n)
        self.returned.append(out)
        return out


# -- round trip and format ------------------------------------------------------------


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts)
def test_encrypt_then_decrypt_returns_the_plaintext(key: bytes, version: int, plaintext: bytes, where: FieldContext) -> None:
    cipher = FieldCipher(key, version)

    assert cipher.decrypt(cipher.encrypt(plaintext, where), where) == plaintext


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts)
def test_header_is_format_byte_key_version_and_nonce(key: bytes, version: int, plaintext: bytes, where: FieldContext) -> None:
    source = CountingRandom()

    ciphertext = FieldCipher(key, version, random=source).encrypt(plaintext, where)

    assert ciphertext[0] == 0x01 == FORMAT_V1
    assert int.from_bytes(ciphertext[1:5], "big") == version
    assert ciphertext[5:17] == source.returned[0]
    assert len(ciphertext) == 17 + len(plaintext) + 16
    assert read_header(ciphertext) == (1, version)


@props
@given(version=key_versions, where=contexts)
def test_aad_is_exactly_the_documented_layout(version: int, where: FieldContext) -> None:
    """Pins the associated data: changing it silently makes every stored ciphertext unreadable."""
    assert where.aad(version) == documented_aad(where, version)


def test_aad_of_a_known_context_is_pinned_byte_for_byte() -> None:
    assert FieldContext("members", "m-0042", "phone").aad(3) == (
        b"member-vault/field/v1" + b"\x00\x07members" + b"\x00\x06m-0042" + b"\x00\x05phone" + b"\x00\x00\x00\x03"
    )


def test_aad_length_prefixes_count_utf8_bytes_not_characters() -> None:
    assert FieldContext("会员", "", "电话").aad(0) == (
        b"member-vault/field/v1" + b"\x00\x06" + "会员".encode() + b"\x00\x00" + b"\x00\x06" + "电话".encode() + b"\x00\x00\x00\x00"
    )


@pytest.mark.parametrize(
    ("plaintext", "where", "version"),
    [
        (b"", FieldContext("members", "m-0001", "email"), 1),
        (b"+86 138 0013 8000", FieldContext("members", "m-0042", "phone"), 3),
        ("上海市黄浦区南京东路 1 号".encode(), FieldContext("members", "m-0042", "address"), 2**32 - 1),
    ],
)
def test_known_answer_with_fixed_key_and_nonce(plaintext: bytes, where: FieldContext, version: int) -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    nonce = bytes.fromhex("cafebabefacedbaddecaf888")

    ciphertext = FieldCipher(key, version, random=lambda n: nonce[:n]).encrypt(plaintext, where)

    header = b"\x01" + struct.pack(">I", version) + nonce
    assert ciphertext == header + AESGCM(key).encrypt(nonce, plaintext, where.aad(version))


# -- nonces and the injected random source ---------------------------------------------


def test_each_encryption_asks_the_random_source_once_for_12_bytes_and_uses_them_as_nonce() -> None:
    source = CountingRandom()
    cipher = FieldCipher(bytes(32), 1, random=source)
    where = FieldContext("members", "m-1", "phone")

    first = cipher.encrypt(b"same plaintext", where)
    second = cipher.encrypt(b"same plaintext", where)

    assert source.requests == [12, 12]
    assert [first[5:17], second[5:17]] == source.returned
    assert first[5:17] != second[5:17]
    assert first != second
    assert cipher.decrypt(first, where) == cipher.decrypt(second, where) == b"same plaintext"


def test_decrypt_does_not_draw_randomness() -> None:
    source = CountingRandom()
    cipher = FieldCipher(bytes(32), 1, random=source)
    where = FieldContext("members", "m-1", "phone")
    ciphertext = cipher.encrypt(b"x", where)

    cipher.decrypt(ciphertext, where)

    assert source.requests == [12]


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16])
def test_a_random_source_returning_the_wrong_nonce_length_is_refused(length: int) -> None:
    cipher = FieldCipher(bytes(32), 1, random=lambda n: b"\x07" * length)

    with pytest.raises(ValueError, match=r"^random source returned a short nonce$"):
        cipher.encrypt(b"secret", FieldContext("members", "m-1", "phone"))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_field_key_that_is_not_256_bit_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match=r"^field keys are 256-bit$"):
        FieldCipher(bytes(length), 1)


# -- tampering, truncation, relocation ------------------------------------------------


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, data=st.data())
def test_any_single_flipped_bit_fails_to_decrypt(key: bytes, version: int, plaintext: bytes, where: FieldContext, data: st.DataObject) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = bytearray(cipher.encrypt(plaintext, where))
    bit = data.draw(st.integers(min_value=0, max_value=len(ciphertext) * 8 - 1), label="bit")
    ciphertext[bit // 8] ^= 1 << (bit % 8)

    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(bytes(ciphertext), where)
    assert str(caught.value) == "Decryption failed."


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, data=st.data())
def test_any_truncation_fails_to_decrypt(key: bytes, version: int, plaintext: bytes, where: FieldContext, data: st.DataObject) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = cipher.encrypt(plaintext, where)
    length = data.draw(st.integers(min_value=0, max_value=len(ciphertext) - 1), label="length")

    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext[:length], where)


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, extra=st.binary(min_size=1, max_size=32))
def test_bytes_appended_to_a_ciphertext_fail_to_decrypt(key: bytes, version: int, plaintext: bytes, where: FieldContext, extra: bytes) -> None:
    cipher = FieldCipher(key, version)

    with pytest.raises(DecryptionError):
        cipher.decrypt(cipher.encrypt(plaintext, where) + extra, where)


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, data=st.data())
def test_a_ciphertext_moved_to_another_table_fails(key: bytes, version: int, plaintext: bytes, where: FieldContext, data: st.DataObject) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = cipher.encrypt(plaintext, where)
    elsewhere = replace(where, table=data.draw(st.text().filter(lambda t: t != where.table), label="table"))

    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext, elsewhere)


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, data=st.data())
def test_a_ciphertext_moved_to_another_record_fails(key: bytes, version: int, plaintext: bytes, where: FieldContext, data: st.DataObject) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = cipher.encrypt(plaintext, where)
    elsewhere = replace(where, record_id=data.draw(st.text().filter(lambda t: t != where.record_id), label="record_id"))

    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext, elsewhere)


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, data=st.data())
def test_a_ciphertext_moved_to_another_field_fails(key: bytes, version: int, plaintext: bytes, where: FieldContext, data: st.DataObject) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = cipher.encrypt(plaintext, where)
    elsewhere = replace(where, field=data.draw(st.text().filter(lambda t: t != where.field), label="field"))

    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext, elsewhere)


@props
@given(a=st.text(min_size=2), b=st.text())
def test_moving_text_between_adjacent_context_parts_changes_the_aad(a: str, b: str) -> None:
    """Length prefixes keep ("ab", "c") and ("a", "bc") apart, so a shifted boundary does not decrypt."""
    left = FieldContext("members", a[:1], a[1:] + b)
    right = FieldContext("members", a, b)

    assert left.aad(1) != right.aad(1)


@props
@given(key=keys_, version=key_versions, other=key_versions, plaintext=plaintexts, where=contexts)
def test_decrypting_under_another_key_version_fails(key: bytes, version: int, other: int, plaintext: bytes, where: FieldContext) -> None:
    if other == version:
        other = (version + 1) % 2**32
    ciphertext = FieldCipher(key, version).encrypt(plaintext, where)

    with pytest.raises(DecryptionError):
        FieldCipher(key, other).decrypt(ciphertext, where)


@props
@given(key=keys_, version=key_versions, other=key_versions, plaintext=plaintexts, where=contexts)
def test_a_header_relabelled_to_another_key_version_fails(key: bytes, version: int, other: int, plaintext: bytes, where: FieldContext) -> None:
    """Rewriting the key version in the header (to match the reader) still fails: the AAD binds the version."""
    if other == version:
        other = (version + 1) % 2**32
    ciphertext = FieldCipher(key, version).encrypt(plaintext, where)
    relabelled = ciphertext[:1] + struct.pack(">I", other) + ciphertext[5:]

    with pytest.raises(DecryptionError):
        FieldCipher(key, other).decrypt(relabelled, where)


@props
@given(key=keys_, other_key=keys_, version=key_versions, plaintext=plaintexts, where=contexts)
def test_decrypting_under_another_key_fails(key: bytes, other_key: bytes, version: int, plaintext: bytes, where: FieldContext) -> None:
    if other_key == key:
        other_key = bytes(b ^ 0xFF for b in key)
    ciphertext = FieldCipher(key, version).encrypt(plaintext, where)

    with pytest.raises(DecryptionError):
        FieldCipher(other_key, version).decrypt(ciphertext, where)


@props
@given(key=keys_, version=key_versions, plaintext=plaintexts, where=contexts, fmt=st.integers(0, 255).filter(lambda b: b != 0x01))
def test_an_unknown_format_byte_is_a_format_error(key: bytes, version: int, plaintext: bytes, where: FieldContext, fmt: int) -> None:
    cipher = FieldCipher(key, version)
    ciphertext = bytes([fmt]) + cipher.encrypt(plaintext, where)[1:]

    with pytest.raises(CiphertextFormatError) as caught:
        cipher.decrypt(ciphertext, where)
    assert isinstance(caught.value, DecryptionError)
    assert str(caught.value) == "Decryption failed."
    with pytest.raises(CiphertextFormatError):
        read_header(ciphertext)


@pytest.mark.parametrize("length", [0, 1, 5, 17, 32])
def test_read_header_of_a_ciphertext_shorter_than_header_and_tag_fails(length: int) -> None:
    with pytest.raises(DecryptionError):
        read_header(b"\x01" * length)


# -- HKDF sub-keys ----------------------------------------------------------------------


def rfc5869_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF as RFC 5869 §2.2-2.3 constructs it, from HMAC alone."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@props
@given(root=roots, label=st.text())
def test_derive_key_is_deterministic_and_256_bit(root: bytes, label: str) -> None:
    first = derive_key(root, label)

    assert len(first) == 32
    assert derive_key(root, label) == first


@props
@given(root=roots, label=st.text(), other=st.text())
def test_different_labels_derive_different_keys(root: bytes, label: str, other: str) -> None:
    if other == label:
        other = label + "/other"

    assert derive_key(root, label) != derive_key(root, other)


@props
@given(root=roots, other_root=roots, label=st.text())
def test_different_roots_derive_different_keys(root: bytes, other_root: bytes, label: str) -> None:
    if other_root == root:
        other_root = bytes(b ^ 0xFF for b in root)

    assert derive_key(root, label) != derive_key(other_root, label)


@props
@given(root=roots, label=st.text(), length=st.integers(min_value=1, max_value=255 * 32))
def test_derive_key_is_rfc5869_hkdf_sha256_with_the_vault_salt(root: bytes, label: str, length: int) -> None:
    """Pins the derivation: a changed salt or info would orphan every blind index and pseudonym."""
    assert derive_key(root, label, length) == rfc5869_hkdf_sha256(root, b"member-vault/hkdf/v1", label.encode(), length)


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_derive_key_refuses_a_root_shorter_than_256_bit(length: int) -> None:
    with pytest.raises(ValueError, match=r"^root keys are at least 256-bit$"):
        derive_key(bytes(length), "blind-index/members.phone/v1")


# -- blind index ------------------------------------------------------------------------


@props
@given(root=roots, field=st.text(), value=st.text())
def test_blind_index_of_the_same_value_is_the_same_digest(root: bytes, field: str, value: str) -> None:
    assert BlindIndex(root, field).digest(value) == BlindIndex(root, field).digest(value)


@props
@given(root=roots, field=st.text(), other_field=st.text(), value=st.text())
def test_blind_index_of_the_same_value_in_another_field_differs(root: bytes, field: str, other_field: str, value: str) -> None:
    if other_field == field:
        other_field = field + ".other"

    assert BlindIndex(root, field).digest(value) != BlindIndex(root, other_field).digest(value)


@props
@given(root=roots, field=st.text(), value=st.text(), other=st.text())
def test_blind_index_of_different_values_differs(root: bytes, field: str, value: str, other: str) -> None:
    if other == value:
        other = value + "0"

    assert BlindIndex(root, field).digest(value) != BlindIndex(root, field).digest(other)


@props
@given(root=roots, field=st.text(), value=st.text())
def test_blind_index_is_hmac_sha256_under_the_field_subkey(root: bytes, field: str, value: str) -> None:
    digest = BlindIndex(root, field).digest(value)

    field_key = derive_key(root, f"blind-index/{field}/v1")
    assert len(digest) == 32
    assert digest == hmac.new(field_key, value.encode("utf-8"), hashlib.sha256).digest()


def test_blind_index_of_a_known_phone_is_pinned() -> None:
    root = bytes(range(32))
    field_key = rfc5869_hkdf_sha256(root, b"member-vault/hkdf/v1", b"blind-index/members.phone/v1", 32)

    digest = BlindIndex(root, "members.phone").digest("+8613800138000")

    assert digest == hmac.new(field_key, b"+8613800138000", hashlib.sha256).digest()
