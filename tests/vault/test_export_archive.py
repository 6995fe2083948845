"""The export archive's parts: the streamed zip, the encrypted spool, batches that cross page boundaries.

Invariants: ``ArchiveWriter`` yields a valid zip whose every member's bytes
hash to what ``files`` lists, however the input is chunked; a ``Spool`` gives
back exactly what was written, and what it keeps on disk never contains the
plaintext; an archive of a member with more treatments and ledger entries than
one batch — many treatments at the same instant — lists every record once, in
the same order, in its JSON, CSV and FHIR files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from api.runtime import Runtime, make_checkpointer
from audit.sequencer import Sequencer
from keys.signing import SigningPurpose
from tests.vault.factories import other_member_values, treatment_values
from vault.consent import ConsentService, NoticeBook
from vault.data_requests import RequestType
from vault.data_requests.archive import ArchiveWriter
from vault.data_requests.export import BATCH, ExportBuilder, ExportSigning, ExportTicket
from vault.data_requests.spool import Spool
from vault.storage.engine import read_snapshot, write_transaction

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a.json", "b/c.csv", "d.txt", "e/f/g.bin"]), st.lists(st.binary(max_size=3000), max_size=6)),
        max_size=4,
        unique_by=lambda f: f[0],
    )
)
def test_the_streamed_zip_is_valid_and_lists_each_file_s_hash_and_size(files: list[tuple[str, list[bytes]]]) -> None:
    writer = ArchiveWriter(modified=NOW)
    out = b"".join(b"".join(writer.add(path, chunks)) for path, chunks in files) + b"".join(writer.close())

    archive = zipfile.ZipFile(io.BytesIO(out))

    assert archive.testzip() is None
    assert archive.namelist() == [path for path, _ in files]
    for f, (path, chunks) in zip(writer.files, files, strict=True):
        data = archive.read(path)
        assert data == b"".join(chunks)
        assert (f.path, f.sha256, f.size) == (path, hashlib.sha256(data).hexdigest(), len(data))


def _spooled_on_disk(directory: Path) -> bytes:
    """The bytes of the (unlinked) temporary files this process holds open in ``directory``."""
    found = b""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            with open(f"/proc/self/fd/{fd}", "rb") as handle:
                found += handle.read()
    return found


def test_a_spool_gives_back_what_was_written_and_keeps_only_ciphertext_on_disk(tmp_path: Path) -> None:
    secret = "李娜 +8613800138000 11010519491231002X".encode()
    chunks = [secret * n for n in range(1, 40)]
    with Spool(tmp_path) as spool:
        for chunk in chunks:
            spool.write(chunk)
        assert list(spool.read()) == chunks
        on_disk = _spooled_on_disk(tmp_path)  # read() flushed every record to the file
        assert len(on_disk) > sum(map(len, chunks))  # the spool is there, sealed
        assert secret not in on_disk
        assert list(os.scandir(tmp_path)) == []  # anonymous: no name to find it by


def test_an_archive_larger_than_a_batch_lists_every_record_once_in_the_same_order_everywhere(runtime: Runtime, tmp_path: Path) -> None:
    count = 2 * BATCH + 7
    with write_transaction(runtime.data_engine) as conn:
        member_id = runtime.members.create(conn, other_member_values(77))
        # Many treatments share one instant: the batches' keyset must break ties by id.
        ids = [
            runtime.treatments.add(conn, member_id, treatment_values(performed_at=f"2025-0{1 + i % 3}-15T10:30:00+08:00", lot_no=f"L{i:05d}"))
            for i in range(count)
        ]
        runtime.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": 10_000_000})
        entries = [runtime.ledger.append(conn, member_id, {"entry_type": "spend", "amount": 100 + i}).entry_id for i in range(BATCH + 3)]
    Sequencer(runtime.data_engine).run_until_idle(now=NOW)
    checkpointer = make_checkpointer(runtime.settings, runtime.data_engine, runtime.signing)
    checkpointer.make(now=NOW)
    builder = ExportBuilder(runtime.members, runtime.treatments, runtime.ledger, ConsentService(runtime.members, NoticeBook()), spool_dir=tmp_path)
    signing = ExportSigning(runtime.signing.current(SigningPurpose.certificates), lambda e: {"consent_id": e.consent_id}, "iss", "controller")

    with read_snapshot(runtime.data_engine) as conn:
        expected = [t.treatment_id for t in runtime.treatments.list_for_member(conn, member_id)]
        published = checkpointer.latest(conn, NOW)
        assert published is not None
        data = b"".join(builder.stream(conn, ExportTicket("f" * 32, member_id, RequestType.access), now=NOW, checkpoint=published, signing=signing))

    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(expected) == sorted(ids)
    assert [t["treatment_id"] for t in json.loads(archive.read("json/treatment.json"))] == expected
    assert [r["treatment_id"] for r in csv.DictReader(io.StringIO(archive.read("csv/treatments.csv").decode("utf-8-sig")))] == expected
    procedures = [e["resource"]["id"] for e in json.loads(archive.read("fhir/bundle.json"))["entry"] if e["resource"]["resourceType"] == "Procedure"]
    assert procedures == expected
    ledger = json.loads(archive.read("json/financial.json"))
    assert [e["entry_id"] for e in ledger][1:] == entries
    assert [e["seq"] for e in ledger] == list(range(1, len(entries) + 2))
    assert len(list(csv.DictReader(io.StringIO(archive.read("csv/ledger.csv").decode("utf-8-sig"))))) == len(entries) + 1
