"""The archive of an access or portability request: everything the vault holds on the member, in one signed zip.

``ExportBuilder.stream`` writes the archive as a stream of bytes from one
read snapshot, file by file, records read and decrypted in batches, so memory
stays bounded whatever the number of treatments or ledger entries. The
archive holds::

    README.txt                 what is inside and how to check it
    json/<category>.json       the member's fields of each data-map category
    json/treatment.json        every treatment record
    json/financial.json        every card-ledger entry
    json/field_history.json    previous values of rectified fields
    json/consents.json         the consent history, each event with its signed receipt
    json/access_log.json       every audit event about the member up to a checkpoint, each with its inclusion proof
    fhir/bundle.json           FHIR R4B collection Bundle: Patient, a Procedure per treatment, a Consent per consent event
    csv/member.csv, csv/treatments.csv, csv/ledger.csv, csv/field_history.csv, csv/consents.csv
    manifest.json              the manifest: every file above with its SHA-256 and size
    manifest.jws               the same manifest signed by the vault (EdDSA, ``typ: export-manifest+jwt``)

The manifest is signed with the ``certificates`` key that
``/.well-known/jwks.json`` publishes; its claims name the request, the member,
the time and the audit checkpoint the access log is proven against. CSV cells
that a spreadsheet would run as a formula (starting ``=``, ``+``, ``-``, ``@``,
tab or carriage return) are prefixed with ``'``; the JSON files hold every
value exactly.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import jwt
from sqlalchemy import Connection

from audit import queries
from audit.checkpoints import PublishedCheckpoint
from keys.signing import SigningKey
from vault import data_map as dm
from vault.consent import ConsentEvent, ConsentService
from vault.consent.fhir import to_fhir_consent
from vault.data_requests import fhir
from vault.data_requests.archive import ArchivedFile, ArchiveWriter
from vault.data_requests.model import RequestType
from vault.data_requests.spool import Spool
from vault.ledger import Ledger, LedgerEntry
from vault.members.repository import MemberRepository
from vault.times import json_value, rfc3339_seconds
from vault.treatments import Treatment, TreatmentRepository

MANIFEST_TYPE = "export-manifest+jwt"
MANIFEST_VERSION = "member-vault/export-manifest/1"
BATCH = 500
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TREATMENT_FIELDS = [f.name for f in dm.fields_of(dm.Table.treatments)]
_LEDGER_FIELDS = [f.name for f in dm.fields_of(dm.Table.ledger_entries)]

README = """Member Vault — your data

This archive holds everything the vault keeps about you, as of the time in manifest.json.

json/       your data by category (membership, identity, contact, demographic, health, preference),
            your treatment records (treatment.json), your card ledger (financial.json), the previous
            values of fields that were corrected (field_history.json), your consent history with a
            signed receipt for each event (consents.json), and who accessed your data and why
            (access_log.json).
fhir/       the same as a FHIR R4B Bundle (Patient, Procedure, Consent) that health systems can import.
csv/        the same as spreadsheets. A cell that starts with = + - @ is prefixed with ' so that a
            spreadsheet shows it instead of running it; the JSON files hold the exact values.

How to check it:
1. manifest.jws is signed by the vault. Verify it (EdDSA) with the key named by its "kid" header,
   published at /.well-known/jwks.json; its payload is manifest.json.
2. The SHA-256 of every file must equal the one the manifest lists for it.
3. Each event in json/access_log.json carries an RFC 6962 inclusion proof against the signed audit
   checkpoint in that file, so you can check that the vault's audit log really contains it.
"""


@dataclass(frozen=True, slots=True)
class ExportTicket:
    """A request the gate found exportable: completed, of type access or portability, its member live."""

    dsr_id: str
    member_id: str
    type: RequestType


@dataclass(frozen=True, slots=True)
class ExportSigning:
    """What the edge hands in to sign: the manifest key, and how a consent event is shown with its receipt."""

    manifest_key: SigningKey
    consent_view: Callable[[ConsentEvent], dict[str, object]]
    issuer: str
    controller: str


class ExportBuilder:
    def __init__(
        self, members: MemberRepository, treatments: TreatmentRepository, ledger: Ledger, consent: ConsentService, *, spool_dir: Path | None = None
    ) -> None:
        self._members = members
        self._treatments = treatments
        self._ledger = ledger
        self._consent = consent
        self._spool_dir = spool_dir

    def stream(self, conn: Connection, ticket: ExportTicket, *, now: datetime, checkpoint: PublishedCheckpoint, signing: ExportSigning) -> Iterator[bytes]:
        """The archive's bytes; reads only through ``conn``, which should hold one read snapshot.

        Each treatment and ledger entry is read and decrypted once: written to
        its JSON file at once, and spooled (encrypted) for its CSV file and the
        FHIR Bundle, which come later in the stream.
        """
        member_id = ticket.member_id
        view = self._members.read(conn, member_id, dm.categories_of(dm.Table.members))
        history = self._members.history(conn, member_id)
        consents = self._consent.history(conn, member_id)
        writer = ArchiveWriter(modified=now)
        with Spool(self._spool_dir) as procedures, Spool(self._spool_dir) as treatment_rows, Spool(self._spool_dir) as entry_rows:
            files: list[tuple[str, Iterable[bytes]]] = [("README.txt", [README.encode("utf-8")])]
            files += [(f"json/{c.value}.json", [_json({"member_id": member_id, "category": c.value, "fields": fields})]) for c, fields in view.values.items()]
            files += [
                ("json/treatment.json", self._treatments_once(conn, member_id, procedures, treatment_rows)),
                ("json/financial.json", self._entries_once(conn, member_id, entry_rows)),
                ("json/field_history.json", [_json(history)]),
                ("json/consents.json", [_json([signing.consent_view(e) for e in consents])]),
                ("json/access_log.json", self._access_log(conn, member_id, checkpoint)),
                ("fhir/bundle.json", _bundle(ticket, view.values, procedures, consents, now=now, controller=signing.controller)),
                ("csv/member.csv", _csv(["category", "field", "value"], [[c.value, n, v] for c, fields in view.values.items() for n, v in fields.items()])),
                ("csv/treatments.csv", treatment_rows.read()),
                ("csv/ledger.csv", entry_rows.read()),
                (
                    "csv/field_history.csv",
                    _csv(["field", "changed_at", "change_id", "previous"], [[h["field"], h["changed_at"], h["change_id"], h["previous"]] for h in history]),
                ),
                ("csv/consents.csv", _csv(_CONSENT_COLUMNS, [[getattr(e, c) for c in _CONSENT_COLUMNS] for e in consents])),
            ]
            for path, chunks in files:
                yield from writer.add(path, chunks)
        claims = manifest_claims(ticket, writer.files, checkpoint=checkpoint, now=now, issuer=signing.issuer, controller=signing.controller)
        yield from writer.add("manifest.json", [json.dumps(claims, ensure_ascii=False, indent=2).encode("utf-8")])
        yield from writer.add("manifest.jws", [sign_manifest(signing.manifest_key, claims).encode("ascii")])
        yield from writer.close()

    def _treatments_once(self, conn: Connection, member_id: str, procedures: Spool, rows: Spool) -> Iterator[bytes]:
        """``json/treatment.json``; meanwhile each treatment's FHIR ``Procedure`` entry and CSV row go to their spools."""
        yield b"["
        rows.write(_csv_lines([["treatment_id", *_TREATMENT_FIELDS]], header=True))
        first = True
        for batch in self._treatments.batches(conn, member_id, size=BATCH):
            yield (b"" if first else b",") + b",".join(_json(_treatment_view(t)) for t in batch)
            procedures.write(b"".join(b"," + _json(_entry(fhir.procedure(t))) for t in batch))
            rows.write(_csv_lines([[t.treatment_id, *(t.values.get(n) for n in _TREATMENT_FIELDS)] for t in batch]))
            first = False
        yield b"]"

    def _entries_once(self, conn: Connection, member_id: str, rows: Spool) -> Iterator[bytes]:
        """``json/financial.json``; meanwhile each entry's CSV row goes to its spool."""
        yield b"["
        rows.write(_csv_lines([["entry_id", "seq", *_LEDGER_FIELDS]], header=True))
        after = 0
        while batch := self._ledger.entries(conn, member_id, after_seq=after, limit=BATCH):
            yield (b"" if after == 0 else b",") + b",".join(_json(_entry_view(e)) for e in batch)
            rows.write(_csv_lines([[e.entry_id, e.seq, *(e.values.get(n) for n in _LEDGER_FIELDS)] for e in batch]))
            after = batch[-1].seq
        yield b"]"

    def _access_log(self, conn: Connection, member_id: str, checkpoint: PublishedCheckpoint) -> Iterator[bytes]:
        head = {
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
            "checkpoint": checkpoint.note,
            "verifier_keys": list(checkpoint.verifier_keys),
        }
        yield f'{{"checkpoint":{_text(head)},"events":['.encode()
        cursor: str | None = None
        first = True
        while True:
            items, cursor = queries.access_log(conn, member_id, checkpoint.tree_size, cursor=cursor, limit=queries.MAX_LIMIT)
            for i in items:
                item = {"index": i.index, "event": i.event.to_json_obj(), "leaf_hash": i.leaf_hash.hex(), "audit_path": [h.hex() for h in i.audit_path]}
                yield (b"" if first else b",") + _json(item)
                first = False
            if cursor is None:
                break
        yield b"]}"


def _bundle(
    ticket: ExportTicket, values: dict[dm.Category, dict[str, object]], procedures: Spool, consents: Sequence[ConsentEvent], *, now: datetime, controller: str
) -> Iterator[bytes]:
    """The FHIR Bundle: the Patient, the spooled Procedure entries (each with its leading comma), the Consents."""
    flat = {name: value for fields in values.values() for name, value in fields.items()}
    yield fhir.bundle_head(ticket.dsr_id, now).encode("utf-8")
    yield _json(_entry(fhir.patient(ticket.member_id, flat)))
    yield from procedures.read()
    for e in consents:
        yield b"," + _json(_entry(to_fhir_consent(e, controller=controller)))
    yield fhir.BUNDLE_TAIL.encode("utf-8")


_CONSENT_COLUMNS = [
    "consent_id",
    "purpose",
    "decision",
    "notice_version",
    "notice_hash",
    "channel",
    "given_by",
    "recorded_by",
    "recorded_role",
    "recorded_at",
    "evidence",
]


def manifest_claims(
    ticket: ExportTicket, files: Sequence[ArchivedFile], *, checkpoint: PublishedCheckpoint, now: datetime, issuer: str, controller: str
) -> dict[str, object]:
    return {
        "iss": issuer,
        "iat": int(now.timestamp()),
        "jti": ticket.dsr_id,
        "manifest_version": MANIFEST_VERSION,
        "controller": {"id": issuer, "name": controller},
        "request_id": ticket.dsr_id,
        "request_type": ticket.type.value,
        "member_id": ticket.member_id,
        "generated_at": rfc3339_seconds(now),
        "audit_checkpoint": {"tree_size": checkpoint.tree_size, "root_hash": checkpoint.root_hash.hex()},
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files],
    }


def sign_manifest(key: SigningKey, claims: dict[str, object]) -> str:
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"typ": MANIFEST_TYPE, "kid": key.key_id})


def _entry(resource: dict[str, object]) -> dict[str, object]:
    return {"fullUrl": f"{fhir.SYSTEM}/{resource['resourceType']}/{resource['id']}", "resource": resource}


def _treatment_view(t: Treatment) -> dict[str, object]:
    return {"treatment_id": t.treatment_id, **t.values}


def _entry_view(e: LedgerEntry) -> dict[str, object]:
    return {"entry_id": e.entry_id, "seq": e.seq, **e.values}


def _text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=json_value)


def _json(value: object) -> bytes:
    return _text(value).encode("utf-8")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        text = _text(list(value))
    elif isinstance(value, date):
        text = json_value(value)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_lines(rows: Iterable[Sequence[object]], *, header: bool = False) -> bytes:
    """CSV lines (CRLF); a header starts with a byte-order mark, so spreadsheets read the file as UTF-8."""
    buffer = io.StringIO()
    if header:
        buffer.write("\ufeff")
    out = csv.writer(buffer, lineterminator="\r\n")
    out.writerows([_cell(v) for v in row] if not header else list(map(str, row)) for row in rows)
    return buffer.getvalue().encode("utf-8")


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[bytes]:
    """A small CSV file (a handful of rows: the member's fields, field history, consent events)."""
    return [_csv_lines([header], header=True), _csv_lines(rows)]


__all__ = ["MANIFEST_TYPE", "MANIFEST_VERSION", "ExportBuilder", "ExportSigning", "ExportTicket", "manifest_claims", "sign_manifest"]
