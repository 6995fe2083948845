"""The extract's second pass: spooled profiles → released rows, encoded for the writer, with their members and row digests.

Once the plan is known, ``Releaser.release`` takes one chunk of the first
pass's spool (``Profiled.spooled``: its ``SpoolRow`` tuples in member id
order) and returns a ``ReleasedChunk``: the released rows encoded for the
extract's format (``writers.encoder``), the included member ids in order, and
each row's keyed digest. Per row, in order:

* ``Plan.release`` generalizes the quasi-identifiers and withholds the
  sensitive values of a class that is not l-diverse; a row of a suppressed
  class is dropped, and if an earlier extract of the epoch released the
  member (``held_before``) the member is ``withdrawn``: the runner puts it
  in the consumer's deletion feed with the extract, so a member suppressed
  later does not stay with the consumer as it was;
* ``rfm``'s M digit is masked (``M*``) unless ``spend_band`` is released at
  its finest level, so ``rfm`` cannot undo the generalization;
* the row's digest (``RowMac``: HMAC-SHA256 under a key derived per consumer
  and epoch, 128 bits, hex, over the row's compact JSON) is taken;
* for an incremental extract (``since``), a row is kept only if its digest
  differs from the one of the latest extract of the epoch up to ``since``
  that held the member (``held_before``): what the consumer holds.

A chunk's result depends on the chunk alone, so chunks can be released in any
process (``vault.extracts._workers``) and their results appended in spool
order: the same bytes as one process writes. What a worker is sent
(``Releasing``) holds the plan (labels and released classes, no member's
value), names and settings, never a key: a worker derives the digest key from
the pseudonym root key it reads itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import json.encoder
import marshal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from keys.derive import derive_key
from vault.extracts import hierarchies as hi
from vault.extracts.anonymity import Plan
from vault.extracts.profiling import SpoolRow
from vault.extracts.writers import BatchEncoder, Encoded
from vault.storage.schema import extract_members, extracts

OutRow = tuple[str | tuple[str, ...] | None, ...]


def compact_json() -> Callable[[object], str]:
    """``json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode``, with its C encoder made once instead of on every call.

    ``JSONEncoder.encode`` builds a new C encoder for each value: for a
    released row that is about two fifths of its cost. A row (strings, tuples
    of strings, ``None``) is never circular, so the encoder keeps no
    circular-reference check; the text is the same, and so is the row's
    digest. Without the C accelerator this is ``encode`` itself.
    """
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)  # CPython's accelerator (not in the type stubs)
    if make is None:
        return encoder.encode
    chunks = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(chunks(value, 0))


@dataclass(frozen=True, slots=True)
class Releasing:
    """What the second pass applies to every chunk (pickled to worker processes: no key, no member's value)."""

    plan: Plan
    plain_names: tuple[str, ...]  # the released plain attributes, in column order
    encode: BatchEncoder
    consumer_id: str
    epoch: int
    since: str | None  # incremental: the base extract

    @property
    def rfm_masked_at(self) -> int | None:
        """The index of ``rfm`` among the plain attributes when its M digit is to be masked, else None."""
        if "rfm" not in self.plain_names or self.plan.generalization.get("spend_band") == hi.hierarchy("spend_band").levels[0]:
            return None
        return self.plain_names.index("rfm")


@dataclass(frozen=True, slots=True)
class ReleasedChunk:
    encoded: Encoded
    member_ids: tuple[str, ...]  # the rows' members, in order
    row_macs: tuple[str, ...]  # the rows' digests, in order
    # Members of this chunk's suppressed rows that an earlier extract of the epoch released: the consumer must delete them.
    withdrawn: tuple[str, ...] = ()


class RowMac:
    """A keyed digest of a released row (128 bits, hex), per consumer and epoch: compares rows across extracts without keeping them."""

    def __init__(self, root: bytes, consumer_id: str, epoch: int) -> None:
        self._key = derive_key(root, f"extract-rows/{consumer_id}/epoch-{epoch}")
        self._encode = compact_json()

    def __call__(self, row: OutRow) -> str:
        return hmac.digest(self._key, self._encode(row).encode("utf-8"), hashlib.sha256).hex()[:32]


class Releaser:
    """The second pass over one chunk at a time, in whichever process holds the chunk."""

    def __init__(self, job: Releasing, pseudonym_root: bytes, engine: Engine) -> None:
        self._job = job
        self._rfm_at = job.rfm_masked_at
        self._row_mac = RowMac(pseudonym_root, job.consumer_id, job.epoch)
        self._engine = engine  # read only for an incremental extract's held digests

    def release(self, chunk: bytes) -> ReleasedChunk:
        job, rfm_at, release = self._job, self._rfm_at, self._job.plan.release
        ids: list[str] = []
        rows: list[OutRow] = []
        suppressed: list[str] = []
        # The first pass's own rows, from this run's authenticated spool (or this run's pipe): a marshal blob, not outside input.
        spooled: list[SpoolRow] = marshal.loads(chunk)  # noqa: S302 — written by this run's first pass, read back from its AES-GCM spool
        for member_id, pseudonym, qi, sensitive, spooled_plain in spooled:
            released = release(qi, sensitive)  # as the histogram counted them (``hashable`` sensitive values)
            if released is None:
                suppressed.append(member_id)
                continue
            plain = spooled_plain
            if rfm_at is not None and isinstance(rfm := plain[rfm_at], str) and rfm:
                plain = (*plain[:rfm_at], rfm[:-1] + "*", *plain[rfm_at + 1 :])
            ids.append(member_id)
            # The spooled values are a row's values already: ``Plan.release`` returns the spooled (``hashable``)
            # sensitive values or None for a withheld one, and the plain ones are ``Plain``.
            rows.append((pseudonym, *released.qi, *(released.sensitive or ()), *plain))
        macs = [self._row_mac(row) for row in rows]
        withdrawn: tuple[str, ...] = ()
        if suppressed or (job.since is not None and ids):
            with self._engine.connect() as conn:
                if suppressed:
                    held = held_before(conn, job, suppressed)
                    withdrawn = tuple(member_id for member_id in suppressed if member_id in held)
                if job.since is not None and ids:
                    held = held_before(conn, job, ids)
                    keep = [i for i, member_id in enumerate(ids) if held.get(member_id) != macs[i]]
                    ids, rows, macs = [ids[i] for i in keep], [rows[i] for i in keep], [macs[i] for i in keep]
        return ReleasedChunk(job.encode(rows), tuple(ids), tuple(macs), withdrawn)


def held_before(conn: Connection, job: Releasing, member_ids: Sequence[str]) -> dict[str, str]:
    """For each member the consumer holds, the row digest of the last done extract of the epoch that held them.

    An incremental extract's consumer has applied every extract of the epoch up
    to its base (``job.since``), in order: what it holds for a member is what
    the latest of them released. A full extract's consumer may hold any done
    extract of the epoch.
    """
    e, m = extracts.c, extract_members.c
    held = (
        select(m.member_id, m.row_mac)
        .join(extracts, e.extract_id == m.extract_id)
        .where(e.consumer_id == job.consumer_id, e.epoch == job.epoch, e.status == "done", m.member_id.in_(list(member_ids)))
        .order_by(e.created_at, e.extract_id)
    )
    if job.since is not None:
        held = held.where(e.created_at <= select(e.created_at).where(e.extract_id == job.since).scalar_subquery())
    return {str(member_id): str(mac) for member_id, mac in conn.execute(held)}


__all__ = ["OutRow", "ReleasedChunk", "Releaser", "Releasing", "RowMac", "compact_json", "held_before"]
