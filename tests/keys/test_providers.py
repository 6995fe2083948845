"""The KEK provider contract, run against the local keyring and a real SoftHSM2 token, then each provider's hostile cases."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import PKCS11Error

from keys.errors import DecryptionError, KeyNotFoundError, KeyringError, KeysError, ProviderUnavailableError
from keys.local import LocalKeyring
from keys.pkcs11 import Pkcs11Provider
from keys.provider import KekProvider

KEY = bytes(range(32))
AAD = b"member-vault/member-key/v1|owner-a|data|1"
OTHER_AAD = b"member-vault/member-key/v1|owner-b|data|1"
BLOB_LEN = 12 + 32 + 16  # nonce, wrapped key, tag

# retire(current) is refused with the provider's own error type; both are KeysErrors.
REFUSES_CURRENT_WITH = {"local": KeyringError, "pkcs11": ProviderUnavailableError}


@pytest.fixture(params=["local", pytest.param("pkcs11", marks=pytest.mark.pkcs11)])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KekProvider]:
    """A provider with exactly one KEK, version 1."""
    made: KekProvider
    if request.param == "local":
        made = LocalKeyring.create(tmp_path / "keys" / "keyring.json")
    else:
        made = request.getfixturevalue("hsm_token").open()
        made.rotate()
    yield made
    made.close()


class Token(Protocol):
    """What the ``hsm_token`` fixture gives: a fresh SoftHSM2 token of the test's own."""

    module: Path
    label: str
    pin_file: Path

    def open(self) -> Pkcs11Provider: ...


def live_versions(provider: KekProvider) -> list[int]:
    return [info.version for info in provider.versions() if not info.retired]


# -- the contract ------------------------------------------------------------------


def test_wrap_then_unwrap_with_the_same_aad_returns_the_key(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    assert version == 1
    assert len(blob) == BLOB_LEN
    assert KEY not in blob
    assert provider.unwrap(version, blob, AAD) == KEY


def test_each_wrap_draws_a_fresh_nonce(provider: KekProvider) -> None:
    _, first = provider.wrap(KEY, AAD)
    _, second = provider.wrap(KEY, AAD)

    assert first[:12] != second[:12]
    assert first != second


def test_unwrap_with_other_aad_fails(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    with pytest.raises(DecryptionError) as caught:
        provider.unwrap(version, blob, OTHER_AAD)
    assert str(caught.value) == "Decryption failed."


def test_unwrap_of_a_blob_with_any_bit_flipped_fails(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    for bit in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            provider.unwrap(version, bytes(tampered), AAD)


def test_unwrap_of_a_truncated_blob_fails(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    for length in range(len(blob)):
        with pytest.raises(DecryptionError):
            provider.unwrap(version, blob[:length], AAD)


def test_unwrap_of_a_blob_with_bytes_appended_fails(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    with pytest.raises(DecryptionError):
        provider.unwrap(version, blob + b"\0", AAD)


@pytest.mark.parametrize("unknown", [0, 2, 99, -1])
def test_unwrap_under_an_unknown_kek_version_fails(provider: KekProvider, unknown: int) -> None:
    _, blob = provider.wrap(KEY, AAD)

    with pytest.raises(DecryptionError):
        provider.unwrap(unknown, blob, AAD)


def test_unwrap_many_returns_each_key_in_order(provider: KekProvider) -> None:
    keys = [bytes([i]) * 32 for i in range(3)]
    aads = [AAD, OTHER_AAD, AAD + b"|2"]
    wrapped = [(*provider.wrap(key, aad), aad) for key, aad in zip(keys, aads, strict=True)]

    assert provider.unwrap_many(wrapped) == keys
    assert provider.unwrap_many([]) == []


def test_unwrap_many_with_one_tampered_blob_fails_the_whole_batch(provider: KekProvider) -> None:
    good = (*provider.wrap(KEY, AAD), AAD)
    version, blob = provider.wrap(KEY, OTHER_AAD)
    tampered = bytearray(blob)
    tampered[-1] ^= 1

    with pytest.raises(DecryptionError) as caught:
        provider.unwrap_many([good, (version, bytes(tampered), OTHER_AAD), good])
    assert str(caught.value) == "Decryption failed."


def test_unwrap_many_with_another_blob_s_aad_or_an_unknown_version_fails(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    with pytest.raises(DecryptionError):
        provider.unwrap_many([(version, blob, OTHER_AAD)])
    with pytest.raises(DecryptionError):
        provider.unwrap_many([(version + 1, blob, AAD)])
    with pytest.raises(DecryptionError):
        provider.unwrap_many([(version, blob[:12], AAD)])


def test_a_fresh_provider_lists_one_live_version(provider: KekProvider) -> None:
    assert provider.current_version() == 1
    assert [(info.version, info.retired) for info in provider.versions()] == [(1, False)]


def test_check_passes_on_a_working_provider(provider: KekProvider) -> None:
    provider.check()  # raises unless a wrap and unwrap work now


def test_rotate_makes_a_new_current_version_and_old_blobs_still_unwrap(provider: KekProvider) -> None:
    old_version, old_blob = provider.wrap(KEY, AAD)

    assert provider.rotate() == 2

    assert provider.current_version() == 2
    assert live_versions(provider) == [1, 2]
    new_version, new_blob = provider.wrap(KEY, AAD)
    assert new_version == 2
    assert provider.unwrap(old_version, old_blob, AAD) == KEY
    assert provider.unwrap(new_version, new_blob, AAD) == KEY


def test_a_blob_relabelled_with_another_live_kek_version_fails(provider: KekProvider) -> None:
    _, old_blob = provider.wrap(KEY, AAD)
    provider.rotate()
    _, new_blob = provider.wrap(KEY, AAD)

    with pytest.raises(DecryptionError):
        provider.unwrap(2, old_blob, AAD)
    with pytest.raises(DecryptionError):
        provider.unwrap(1, new_blob, AAD)


def test_retired_version_no_longer_unwraps_and_the_current_one_does(provider: KekProvider) -> None:
    old_version, old_blob = provider.wrap(KEY, AAD)
    provider.rotate()
    new_version, new_blob = provider.wrap(KEY, AAD)

    provider.retire(old_version)

    with pytest.raises(DecryptionError):
        provider.unwrap(old_version, old_blob, AAD)
    assert provider.unwrap(new_version, new_blob, AAD) == KEY
    assert live_versions(provider) == [2]
    assert provider.current_version() == 2
    provider.check()


def test_retire_of_the_current_version_is_refused_and_it_keeps_working(provider: KekProvider) -> None:
    version, blob = provider.wrap(KEY, AAD)

    with pytest.raises(KeysError) as caught:
        provider.retire(1)

    assert type(caught.value) is REFUSES_CURRENT_WITH[provider.name]
    assert str(caught.value) == "KEK version 1 is current and cannot be retired"
    assert provider.unwrap(version, blob, AAD) == KEY
    assert live_versions(provider) == [1]


def test_retire_of_an_unknown_version_raises_key_not_found(provider: KekProvider) -> None:
    provider.rotate()

    with pytest.raises(KeyNotFoundError) as caught:
        provider.retire(7)
    assert str(caught.value) == "no KEK version 7"
    assert live_versions(provider) == [1, 2]


# -- local keyring -------------------------------------------------------------------


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


def stored_keys(path: Path) -> list[str]:
    """The base64 KEK values in a keyring file (to prove they never reach an error message)."""
    return [entry["key"] for entry in json.loads(path.read_text())["keks"] if entry["key"]]


def test_local_keyring_file_is_created_with_mode_0600(keyring_path: Path) -> None:
    LocalKeyring.create(keyring_path).close()

    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600


def test_local_keyring_stays_0600_after_rotate_and_retire(keyring_path: Path) -> None:
    keyring = LocalKeyring.create(keyring_path)
    keyring.rotate()
    keyring.retire(1)

    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    assert not keyring_path.with_name("keyring.json.tmp").exists()


def test_local_retire_keeps_the_number_and_drops_the_key_from_the_file(keyring_path: Path) -> None:
    keyring = LocalKeyring.create(keyring_path)
    keyring.rotate()
    keyring.retire(1)

    doc = json.loads(keyring_path.read_text())
    assert [(k["version"], k["key"] is None, k["retired"]) for k in doc["keks"]] == [(1, True, True), (2, False, False)]
    assert [(info.version, info.retired) for info in keyring.versions()] == [(1, True), (2, False)]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601, 0o610])
def test_local_keyring_readable_by_group_or_others_is_refused_at_open(keyring_path: Path, mode: int) -> None:
    LocalKeyring.create(keyring_path).close()
    secrets_in_file = stored_keys(keyring_path)
    keyring_path.chmod(mode)

    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)

    message = str(caught.value)
    assert message == f"keyring is accessible by group or others (mode {mode:o}); chmod 600 {keyring_path}"
    assert all(secret not in message for secret in secrets_in_file)


def test_local_keyring_made_group_readable_after_open_is_refused_on_next_reload(keyring_path: Path) -> None:
    """A keyring whose mode is loosened while in use is refused at the next reload, not trusted from memory."""
    keyring = LocalKeyring.create(keyring_path)
    keyring_path.chmod(0o640)

    with pytest.raises(KeyringError) as caught:
        keyring.check()
    assert str(caught.value) == f"keyring is accessible by group or others (mode 640); chmod 600 {keyring_path}"


def test_local_unwrap_many_refuses_a_keyring_made_world_readable_after_open(keyring_path: Path) -> None:
    """A bulk read re-reads a changed keyring once per batch, with the permission check, rather than trusting it from memory."""
    keyring = LocalKeyring.create(keyring_path)
    wrapped = (*keyring.wrap(KEY, AAD), AAD)
    assert keyring.unwrap_many([wrapped]) == [KEY]
    keyring_path.chmod(0o604)
    os.utime(keyring_path, ns=(0, 0))  # the change a rewrite by another process would make

    with pytest.raises(KeyringError) as caught:
        keyring.unwrap_many([wrapped])
    assert str(caught.value) == f"keyring is accessible by group or others (mode 604); chmod 600 {keyring_path}"


def test_local_unwrap_many_after_a_retire_by_another_instance_fails(keyring_path: Path) -> None:
    """Liveness: a KEK version retired by another process is dead for the next batch here."""
    first = LocalKeyring.create(keyring_path)
    old = (*first.wrap(KEY, AAD), AAD)
    first.rotate()
    second = LocalKeyring(keyring_path)
    assert second.unwrap_many([old]) == [KEY]

    first.retire(old[0])

    with pytest.raises(DecryptionError):
        second.unwrap_many([old])


def test_local_keyring_missing_is_refused(keyring_path: Path) -> None:
    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)
    assert str(caught.value) == f"keyring missing: {keyring_path}"


def test_local_keyring_deleted_while_open_is_refused(keyring_path: Path) -> None:
    keyring = LocalKeyring.create(keyring_path)
    keyring_path.unlink()

    with pytest.raises(KeyringError) as caught:
        keyring.wrap(KEY, AAD)
    assert str(caught.value) == f"keyring missing: {keyring_path}"


def test_local_keyring_that_is_a_symlink_is_refused(keyring_path: Path, tmp_path: Path) -> None:
    LocalKeyring.create(keyring_path).close()
    link = tmp_path / "link.json"
    link.symlink_to(keyring_path)

    with pytest.raises(KeyringError) as caught:
        LocalKeyring(link)
    assert str(caught.value) == f"keyring unreadable: {link}"


VALID_KEK = {"version": 1, "created_at": "2025-01-01T00:00:00+00:00", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "retired": False}


def _valid_doc() -> dict[str, object]:
    return {"format": "member-vault-keyring/1", "current": 1, "keks": [VALID_KEK]}


def _with(**changes: object) -> str:
    doc = _valid_doc()
    doc.update(changes)
    return json.dumps(doc)


def _with_kek(**changes: object) -> str:
    return _with(keks=[{**VALID_KEK, **changes}])


MALFORMED = {
    "not json": "{not json",
    "not utf-8": b"\xff\xfe{}",
    "a json list": "[]",
    "empty": "",
    "unknown format": _with(format="member-vault-keyring/2"),
    "keks not a list": _with(keks={}),
    "no current": json.dumps({k: v for k, v in _valid_doc().items() if k != "current"}),
    "key not base64": _with_kek(key="not base64!"),
    "key of 16 bytes": _with_kek(key="AAECAwQFBgcICQoLDA0ODw=="),
    "key null but live": _with_kek(key=None),
    "entry without version": json.dumps({**_valid_doc(), "keks": [{"created_at": "x", "key": None, "retired": True}]}),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_local_keyring_malformed_is_refused(keyring_path: Path, content: str | bytes) -> None:
    keyring_path.parent.mkdir(mode=0o700)
    fd = os.open(keyring_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content.encode() if isinstance(content, str) else content)

    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)
    assert str(caught.value) == f"keyring malformed: {keyring_path}"


@pytest.mark.parametrize("current", [2, 0])
def test_local_keyring_whose_current_version_has_no_key_is_refused(keyring_path: Path, current: int) -> None:
    keyring_path.parent.mkdir(mode=0o700)
    fd = os.open(keyring_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_with(current=current))

    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)
    assert str(caught.value) == f"keyring has no usable current KEK: {keyring_path}"


def test_local_create_refuses_to_overwrite_an_existing_keyring(keyring_path: Path) -> None:
    LocalKeyring.create(keyring_path).close()
    before = keyring_path.read_bytes()

    with pytest.raises(KeyringError) as caught:
        LocalKeyring.create(keyring_path)

    assert str(caught.value) == f"keyring already exists: {keyring_path}"
    assert keyring_path.read_bytes() == before


def test_local_second_instance_sees_a_rotation_made_by_the_first(keyring_path: Path) -> None:
    first = LocalKeyring.create(keyring_path)
    second = LocalKeyring(keyring_path)
    assert second.current_version() == 1

    assert first.rotate() == 2
    version, blob = first.wrap(KEY, AAD)

    assert version == 2
    assert second.unwrap(version, blob, AAD) == KEY
    assert second.current_version() == 2
    assert second.wrap(KEY, AAD)[0] == 2
    assert live_versions(second) == [1, 2]


def test_local_second_instance_that_wraps_first_still_picks_up_the_new_version(keyring_path: Path) -> None:
    """The reload happens on wrap too: a process never keeps wrapping under a superseded KEK."""
    first = LocalKeyring.create(keyring_path)
    second = LocalKeyring(keyring_path)
    first.rotate()

    version, blob = second.wrap(KEY, AAD)

    assert version == 2
    assert first.unwrap(version, blob, AAD) == KEY


def test_local_retire_by_another_instance_stops_unwrap_here(keyring_path: Path) -> None:
    """H20: once a KEK version is retired (by any process), its blobs no longer unwrap anywhere."""
    first = LocalKeyring.create(keyring_path)
    old_version, old_blob = first.wrap(KEY, AAD)
    first.rotate()
    second = LocalKeyring(keyring_path)
    assert second.unwrap(old_version, old_blob, AAD) == KEY

    first.retire(old_version)

    with pytest.raises(DecryptionError):
        second.unwrap(old_version, old_blob, AAD)


# -- PKCS#11 (SoftHSM2) ----------------------------------------------------------------


def _pin(token: Token) -> str:
    return token.pin_file.read_text().strip()


@pytest.mark.pkcs11
def test_pkcs11_wrong_pin_is_unavailable_and_the_pin_is_not_in_the_error(hsm_token: Token, tmp_path: Path) -> None:
    wrong = "7e1f0c9a-wrong-pin-2b44"
    pin_file = tmp_path / "wrong-pin"
    pin_file.write_text(wrong)

    with pytest.raises(ProviderUnavailableError) as caught:
        Pkcs11Provider(hsm_token.module, hsm_token.label, pin_file)

    assert str(caught.value) == f"PKCS#11 token {hsm_token.label!r} unavailable: PinIncorrect"
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)
    assert _pin(hsm_token) not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.pkcs11
def test_pkcs11_unknown_token_label_is_unavailable(hsm_token: Token) -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        Pkcs11Provider(hsm_token.module, "mv-no-such-token", hsm_token.pin_file)
    assert str(caught.value) == "PKCS#11 token 'mv-no-such-token' unavailable: NoSuchToken"


@pytest.mark.pkcs11
def test_pkcs11_module_path_that_does_not_exist_is_unavailable(hsm_token: Token, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-libsofthsm2.so"

    with pytest.raises(ProviderUnavailableError) as caught:
        Pkcs11Provider(missing, hsm_token.label, hsm_token.pin_file)

    assert str(caught.value) == f"PKCS#11 token {hsm_token.label!r} unavailable: PKCS11Error"
    assert str(missing) not in str(caught.value)


@pytest.mark.pkcs11
def test_pkcs11_missing_pin_file_is_unavailable(hsm_token: Token, tmp_path: Path) -> None:
    missing = tmp_path / "no-pin-here"

    with pytest.raises(ProviderUnavailableError) as caught:
        Pkcs11Provider(hsm_token.module, hsm_token.label, missing)
    assert str(caught.value) == f"PKCS#11 PIN file unreadable: {missing}"


@pytest.mark.pkcs11
def test_pkcs11_unreadable_pin_file_is_unavailable(hsm_token: Token, tmp_path: Path) -> None:
    """A PIN path that cannot be read as a file (here a directory, which fails even for root) is refused."""
    not_a_file = tmp_path / "pin-dir"
    not_a_file.mkdir()

    with pytest.raises(ProviderUnavailableError) as caught:
        Pkcs11Provider(hsm_token.module, hsm_token.label, not_a_file)
    assert str(caught.value) == f"PKCS#11 PIN file unreadable: {not_a_file}"


@pytest.mark.pkcs11
def test_pkcs11_token_without_a_kek_fails_check_and_wrap(hsm_token: Token) -> None:
    provider = hsm_token.open()
    try:
        assert list(provider.versions()) == []
        with pytest.raises(ProviderUnavailableError) as caught:
            provider.check()
        assert str(caught.value) == "no KEK on the PKCS#11 token; run vaultctl init"
        with pytest.raises(ProviderUnavailableError):
            provider.wrap(KEY, AAD)
    finally:
        provider.close()


@pytest.mark.pkcs11
def test_pkcs11_kek_is_sensitive_and_its_value_cannot_be_read(hsm_token: Token) -> None:
    provider = hsm_token.open()
    provider.rotate()
    provider.close()  # PKCS#11 logins are per application: log the provider out before logging in raw.

    token = pkcs11.lib(str(hsm_token.module)).get_token(token_label=hsm_token.label)
    with token.open(user_pin=_pin(hsm_token)) as session:
        kek = session.get_key(object_class=ObjectClass.SECRET_KEY, label="member-vault-kek-v1")
        assert kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.ALWAYS_SENSITIVE] is True
        assert kek[Attribute.NEVER_EXTRACTABLE] is True
        assert kek[Attribute.PRIVATE] is True
        assert kek[Attribute.TOKEN] is True
        with pytest.raises(PKCS11Error) as caught:
            kek[Attribute.VALUE]
        assert type(caught.value).__name__ == "AttributeSensitive"


@pytest.mark.pkcs11
def test_pkcs11_kek_is_invisible_without_login(hsm_token: Token) -> None:
    provider = hsm_token.open()
    provider.rotate()
    provider.close()

    token = pkcs11.lib(str(hsm_token.module)).get_token(token_label=hsm_token.label)
    with token.open() as session:
        assert list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})) == []


def _destroy_on_token(token: Token, label: str) -> None:
    """Destroy a KEK through a raw session of this process (which shares the provider's login)."""
    raw = pkcs11.lib(str(token.module)).get_token(token_label=token.label)
    with raw.open(rw=True) as session:
        session.get_key(object_class=ObjectClass.SECRET_KEY, label=label).destroy()


@pytest.mark.pkcs11
def test_pkcs11_kek_destroyed_on_the_token_stops_unwrap_of_its_blobs(hsm_token: Token) -> None:
    provider = hsm_token.open()
    try:
        provider.rotate()
        old_version, old_blob = provider.wrap(KEY, AAD)
        provider.rotate()
        new_version, new_blob = provider.wrap(KEY, AAD)

        _destroy_on_token(hsm_token, "member-vault-kek-v1")

        with pytest.raises(DecryptionError):
            provider.unwrap(old_version, old_blob, AAD)
        assert provider.unwrap(new_version, new_blob, AAD) == KEY
    finally:
        provider.close()


@pytest.mark.pkcs11
def test_pkcs11_current_kek_destroyed_on_the_token_fails_closed(hsm_token: Token) -> None:
    """No silent fallback: with the current KEK gone, unwrap, wrap and check all fail."""
    provider = hsm_token.open()
    try:
        provider.rotate()
        version, blob = provider.wrap(KEY, AAD)

        _destroy_on_token(hsm_token, "member-vault-kek-v1")

        with pytest.raises(DecryptionError):
            provider.unwrap(version, blob, AAD)
        with pytest.raises(ProviderUnavailableError):
            provider.wrap(KEY, AAD)
        with pytest.raises(ProviderUnavailableError):
            provider.check()
    finally:
        provider.close()


@pytest.mark.pkcs11
def test_pkcs11_retire_by_another_instance_stops_unwrap_here(hsm_token: Token) -> None:
    """H20/H31: a second provider on the same token (same process) retires a version; the first can no longer unwrap it."""
    first = hsm_token.open()
    try:
        first.rotate()
        old_version, old_blob = first.wrap(KEY, AAD)
        second = hsm_token.open()
        try:
            assert second.rotate() == 2
            second.retire(old_version)
        finally:
            second.close()

        with pytest.raises(DecryptionError):
            first.unwrap(old_version, old_blob, AAD)
    finally:
        first.close()


@pytest.mark.pkcs11
def test_pkcs11_retire_destroys_the_object_on_the_token(hsm_token: Token) -> None:
    provider = hsm_token.open()
    provider.rotate()
    provider.rotate()
    provider.retire(1)
    provider.close()

    token = pkcs11.lib(str(hsm_token.module)).get_token(token_label=hsm_token.label)
    with token.open(user_pin=_pin(hsm_token)) as session:
        labels = sorted(obj[Attribute.LABEL] for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
    assert labels == ["member-vault-kek-v2"]


@pytest.mark.pkcs11
def test_pkcs11_versions_survive_reopening_the_token(hsm_token: Token) -> None:
    provider = hsm_token.open()
    provider.rotate()
    version, blob = provider.wrap(KEY, AAD)
    provider.rotate()
    provider.close()

    reopened = hsm_token.open()
    try:
        assert reopened.current_version() == 2
        assert live_versions(reopened) == [1, 2]
        assert reopened.unwrap(version, blob, AAD) == KEY
    finally:
        reopened.close()
