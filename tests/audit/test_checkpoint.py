"""Checkpoints and signed notes: round trip, forgery, pinning, known answers, strict parsing."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    Checkpoint,
    VerifierKey,
    format_checkpoint,
    key_id,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key_string,
)
from audit.errors import CheckpointFormatError, NoteFormatError, VerificationError, VerifierKeyError
from audit.merkle import EMPTY_ROOT, leaf_hash
from tests.audit.factories import NOW, ORIGIN, signing_key

ROOT = leaf_hash(b"root")

# RFC 8032 §7.1, TEST 1: secret key (seed) and public key.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

# The signed-note example published in the golang.org/x/mod/sumdb/note package documentation:
# signer key "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz" is base64(0x01 ‖ seed).
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def checkpoint_note(key: Ed25519PrivateKey, size: int = 12, root: bytes = ROOT, name: str = ORIGIN) -> str:
    return sign_note(format_checkpoint(ORIGIN, size, root, NOW), name, key)


def pinned(*keys: Ed25519PrivateKey, name: str = ORIGIN) -> list[VerifierKey]:
    return [parse_verifier_key(verifier_key_string(name, key.public_key())) for key in keys]


def test_checkpoint_body_is_pinned() -> None:
    body = format_checkpoint(ORIGIN, 12, EMPTY_ROOT, NOW)
    assert body == "member-vault/audit\n12\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\ntime 2026-11-22T16:00:00Z\n"


def test_round_trip() -> None:
    key = signing_key("a")
    opened = open_note(checkpoint_note(key), pinned(key))
    assert opened.signers == (ORIGIN,)
    assert parse_checkpoint(opened.body) == Checkpoint(origin=ORIGIN, size=12, root_hash=ROOT, time=NOW)


def test_note_layout() -> None:
    key = signing_key("a")
    note = checkpoint_note(key)
    body, blank, signature = note.partition("\n\n")
    assert blank == "\n\n"
    assert body + "\n" == format_checkpoint(ORIGIN, 12, ROOT, NOW)
    assert signature.startswith("\u2014 member-vault/audit ")
    assert signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[2])
    assert blob[:4] == key_id(ORIGIN, key.public_key())
    key.public_key().verify(blob[4:], (body + "\n").encode())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n12\n", "\n13\n"),
        ("\n12\n", "\n11\n"),
        ("time 2026-11-22T16:00:00Z", "time 2026-11-22T16:00:01Z"),
        (base64.b64encode(ROOT).decode(), base64.b64encode(EMPTY_ROOT).decode()),
        ("member-vault/audit\n", "member-vault/other\n"),
    ],
)
def test_a_forged_checkpoint_is_rejected(old: str, new: str) -> None:
    key = signing_key("a")
    note = checkpoint_note(key)
    assert old in note
    with pytest.raises(VerificationError, match=r"^Verification failed\.$"):
        open_note(note.replace(old, new, 1), pinned(key))


def test_a_note_re_signed_with_another_key_is_rejected_by_the_pinned_verifier() -> None:
    with pytest.raises(VerificationError):
        open_note(checkpoint_note(signing_key("intruder")), pinned(signing_key("a")))


def test_a_note_signed_under_the_pinned_name_with_another_key_is_rejected() -> None:
    ours, theirs = signing_key("a"), signing_key("b")
    forged = checkpoint_note(theirs)
    kid_ours = key_id(ORIGIN, ours.public_key())
    body, _, line = forged.partition("\n\n")
    blob = base64.b64decode(line.split(" ")[2])
    spoofed = f"{body}\n\n\u2014 {ORIGIN} {base64.b64encode(kid_ours + blob[4:]).decode()}\n"
    with pytest.raises(VerificationError):
        open_note(spoofed, pinned(ours))


def test_unknown_signatures_are_ignored_and_known_ones_counted() -> None:
    old, new = signing_key("old"), signing_key("new")
    note = checkpoint_note(old)
    second = sign_note(format_checkpoint(ORIGIN, 12, ROOT, NOW), "witness.example/w1", new).split("\n\n")[1]
    cosigned = note + second
    assert open_note(cosigned, pinned(old)).signers == (ORIGIN,)
    assert open_note(cosigned, [*pinned(old), *pinned(new, name="witness.example/w1")]).signers == (ORIGIN, "witness.example/w1")
    with pytest.raises(VerificationError):
        open_note(cosigned, pinned(new))


def test_a_bad_signature_from_a_known_key_rejects_the_note_even_beside_a_good_one() -> None:
    key = signing_key("a")
    note = checkpoint_note(key)
    line = note.partition("\n\n")[2]
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[10] ^= 1
    bad_line = f"\u2014 {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(VerificationError):
        open_note(note + bad_line, pinned(key))


def test_a_short_signature_from_a_known_key_is_rejected() -> None:
    key = signing_key("a")
    kid = key_id(ORIGIN, key.public_key())
    note = format_checkpoint(ORIGIN, 1, ROOT, NOW) + f"\n\u2014 {ORIGIN} {base64.b64encode(kid + b'sig').decode()}\n"
    with pytest.raises(VerificationError):
        open_note(note, pinned(key))


# -- known answers ------------------------------------------------------------------------


def test_verifier_key_from_a_fixed_seed_matches_a_hand_computation() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    assert key.public_key().public_bytes_raw() == RFC8032_PUBLIC
    by_hand = hashlib.sha256(b"member-vault/audit" + b"\x0a" + b"\x01" + RFC8032_PUBLIC).digest()[:4]
    assert key_id(ORIGIN, key.public_key()) == by_hand == bytes.fromhex("7f6118de")
    text = verifier_key_string(ORIGIN, key.public_key())
    assert text == "member-vault/audit+7f6118de+" + base64.b64encode(b"\x01" + RFC8032_PUBLIC).decode()
    assert text == "member-vault/audit+7f6118de+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
    parsed = parse_verifier_key(text)
    assert (parsed.name, parsed.key_id, parsed.public_key.public_bytes_raw()) == (ORIGIN, by_hand, RFC8032_PUBLIC)


def test_published_sumdb_note_example_is_reproduced_and_opened() -> None:
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    assert verifier_key_string("PeterNeumann", key.public_key()) == GO_VERIFIER
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE
    assert open_note(GO_NOTE, [parse_verifier_key(GO_VERIFIER)]) == (GO_TEXT, ("PeterNeumann",))


# -- strict parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("member-vault/audit+7f6118de", "must be <name>"),
        ("+7f6118de+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "key name must not be empty"),
        ("member-vault/audit+7f6118d+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "8 hex digits"),
        ("member vault+7f6118de+AddamAGCsQq31Uv", "no space"),
        ("member-vault/audit+7f6118dg+AddamAGCsQq31UvA", "8 hex digits"),
        ("member-vault/audit+7f6118de+AddamAGCsQq31Uv*08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "standard base64"),
        ("member-vault/audit+7f6118de+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1E", "standard base64"),
        ("member-vault/audit+7f6118de+" + base64.b64encode(b"\x02" + RFC8032_PUBLIC).decode(), "0x01 followed by a 32-byte"),
        ("member-vault/audit+7f6118de+" + base64.b64encode(b"\x01" + RFC8032_PUBLIC[:31]).decode(), "0x01 followed by a 32-byte"),
        ("member-vault/audit+7f6118de+" + base64.b64encode(b"\x01" + RFC8032_PUBLIC + b"\x00").decode(), "0x01 followed by a 32-byte"),
        ("member-vault/audit+00000000+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "key id does not match"),
        ("audit.example+7f6118de+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "key id does not match"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(VerifierKeyError, match=message):
        parse_verifier_key(text)


def test_a_key_id_in_upper_case_hex_is_accepted() -> None:
    assert parse_verifier_key(GO_VERIFIER.replace("c74f20a3", "C74F20A3")).key_id == bytes.fromhex("c74f20a3")


def test_two_pinned_keys_with_one_name_and_id_are_ambiguous() -> None:
    key = pinned(signing_key("a"))[0]
    with pytest.raises(VerifierKeyError, match="share a name and key id"):
        open_note(checkpoint_note(signing_key("a")), [key, key])


NOTE = f"{format_checkpoint(ORIGIN, 1, ROOT, NOW)}\n\u2014 {ORIGIN} {base64.b64encode(bytes(68)).decode()}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (NOTE.replace("\n\n", "\n"), "no blank line before the signatures"),
        (NOTE[:-1], "signature lines must end with a newline"),
        (NOTE.replace("\u2014 ", "-- "), "signature line 1: must start with an em dash"),
        (NOTE.replace(f"{ORIGIN} ", f"{ORIGIN}  "), "signature line 1: must be a key name and a signature"),
        (NOTE.replace(f"\u2014 {ORIGIN} ", "\u2014 a+b "), "signature line 1: key name must hold no space, no plus"),
        (NOTE.replace(f"\u2014 {ORIGIN} ", "\u2014 a\u00a0b "), "signature line 1: key name must hold no space"),
        (NOTE[:-2] + "*\n", "signature line 1: signature must be the base64"),
        (NOTE[:-3] + "B=\n", "signature line 1: signature must be the base64"),
        (NOTE + "\u2014 x AAAA\n", "signature line 2: signature must be the base64 of a key id and a signature"),
        (NOTE.replace("\n1\n", "\r1\n"), "control character"),
        (NOTE.replace("member", "\ud800member", 1), "not valid UTF-8"),
        (NOTE + NOTE.split("\n\n")[1] * 100, "more than 100 signature lines"),
    ],
)
def test_malformed_notes_are_refused_with_a_precise_reason(text: str, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        open_note(text, pinned(signing_key("a")))


def test_the_last_blank_line_separates_text_and_signatures() -> None:
    key = signing_key("a")
    text = "first paragraph\n\nsecond paragraph\n"
    assert open_note(sign_note(text, "n", key), pinned(key, name="n")).body == text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("member-vault/audit\n12\n", "checkpoint has 2 lines, expected 4"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW)[:-1], "must end with a newline"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW) + "extra\n", "line 5: unexpected extension line"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace(ORIGIN, ""), "line 1: origin must not be empty"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("\n1\n", "\n01\n"), "line 2: tree size"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("\n1\n", "\n-1\n"), "line 2: tree size"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("\n1\n", "\n1e3\n"), "line 2: tree size"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("\n1\n", f"\n{2**63}\n"), "line 2: tree size"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()), "line 3: root hash"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace(base64.b64encode(ROOT).decode(), ROOT.hex()), "line 3: root hash"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("time ", "when "), "line 4: expected the time extension line"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("16:00:00Z", "16:00:00.1Z"), "line 4: time must be RFC 3339"),
        (format_checkpoint(ORIGIN, 1, ROOT, NOW).replace("\n1\n", "\n1\x00\n"), "control character"),
    ],
)
def test_malformed_checkpoints_are_refused_with_a_precise_reason(body: str, message: str) -> None:
    with pytest.raises(CheckpointFormatError, match=message):
        parse_checkpoint(body)


def test_non_canonical_base64_of_the_root_is_refused() -> None:
    body = format_checkpoint(ORIGIN, 1, EMPTY_ROOT, NOW)
    encoded = base64.b64encode(EMPTY_ROOT).decode()
    assert encoded.endswith("U=")
    with pytest.raises(CheckpointFormatError, match="line 3: root hash"):
        parse_checkpoint(body.replace(encoded, encoded[:-2] + "V="))


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("member vault", 1, ROOT, NOW), CheckpointFormatError, "origin must hold no space"),
        ((ORIGIN, -1, ROOT, NOW), CheckpointFormatError, "tree size out of range"),
        ((ORIGIN, 1, ROOT[:16], NOW), CheckpointFormatError, "root hash must be 32 bytes"),
        ((ORIGIN, 1, ROOT, datetime(2026, 1, 1)), CheckpointFormatError, "timezone-aware"),
    ],
)
def test_format_checkpoint_refuses_bad_input(args: tuple[str, int, bytes, datetime], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        format_checkpoint(*args)


def test_sign_note_refuses_bad_input() -> None:
    key = signing_key("a")
    with pytest.raises(NoteFormatError, match="must end with a newline"):
        sign_note("text", ORIGIN, key)
    with pytest.raises(NoteFormatError, match="control character"):
        sign_note("te\txt\n", ORIGIN, key)
    with pytest.raises(NoteFormatError, match="key name must hold no space"):
        sign_note("text\n", "a b", key)


def test_checkpoint_time_is_kept_in_utc() -> None:
    body = format_checkpoint(ORIGIN, 0, EMPTY_ROOT, datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    assert parse_checkpoint(body).time == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
