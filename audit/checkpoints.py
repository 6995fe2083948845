"""The checkpointer: signs, stores and publishes checkpoints of the stored tree, and never forks the log.

Table ``audit_checkpoints`` (``metadata`` here; migration ``0003_audit_checkpoints``;
append-only like the other audit tables): one row per signed checkpoint — tree
size, root hash, the signed note, the signer's key id (``keys.signing``'s
thumbprint) and when it was made. The last published checkpoint is also kept
outside the database, in the state file (``STATE_FILE`` in the data
directory): the signed note, mode 0600, replaced atomically
(``audit._state_file``), written after the row is inserted and before it
commits, so it is never behind a checkpoint the database serves.

Invariant: nothing is signed unless the stored tree extends the published
checkpoint — for its size m and root r_m, m ≤ n (the tree size) and the stored
nodes' root at m is r_m. Otherwise ``CheckpointConflictError`` with a ``code``:
``published_size_ahead`` (the file is beyond the tree: a restore),
``published_root_differs``, ``published_checkpoint_unreadable`` (not a
checkpoint of this origin validly signed by an audit key) or
``published_checkpoint_missing`` (no file, yet the database holds checkpoints;
no file and no stored checkpoint is a first start, and the first checkpoint
creates the file). ``status`` reports this check for readiness. The operator's
resolution is ``accept_restore`` (``vaultctl audit checkpoint --accept-restore``;
SECURITY.md, "Resolving a checkpoint conflict"): it journals an
``audit.checkpoint.reset`` event, keeps the old file under a timestamped name,
and signs a fresh checkpoint that covers the event.

Runs are serialized by a PostgreSQL advisory lock in the transaction, the
SQLite write lock (``BEGIN IMMEDIATE``) when given an engine, and a lock per
``Checkpointer`` in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, func, select

from audit import store
from audit._state_file import keep_aside, read_bounded, replace_atomically
from audit._time import format_utc
from audit.checkpoint import Checkpoint, format_checkpoint, open_note, parse_checkpoint, parse_verifier_key, sign_note, verifier_key_string
from audit.errors import CheckpointConflictError, CheckpointFormatError, NoteFormatError, VerificationError
from audit.event import Actor, AuditEvent, Decision, event_time
from audit.sequencer import Sequencer
from keys.signing import SigningKeys, SigningPurpose

STATE_FILE = Path("audit") / "last-checkpoint"
"""The published checkpoint, relative to the data directory."""
MAX_STATE_BYTES = 64 * 1024
CHECKPOINT_LOCK_KEY = 2471408641320741552
"""The PostgreSQL advisory lock key: the first 8 bytes of SHA-256("member-vault audit checkpointer"), signed."""
DEFAULT_EVERY_EVENTS = 1000
DEFAULT_EVERY_SECONDS = 60
RESET_ACTION = "audit.checkpoint.reset"

metadata = sa.MetaData(naming_convention=store.metadata.naming_convention)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("checkpoint_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(always=True), primary_key=True),
    sa.Column("tree_size", sa.BigInteger(), nullable=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("signer_key_id", sa.String(64), nullable=False),
    sa.Column("created_at", store.UtcDateTime(), nullable=False),
    sa.CheckConstraint("tree_size >= 0", name="tree_size"),
    sa.CheckConstraint("length(root_hash) = 32", name="root_hash"),
    sa.Index(None, "tree_size"),
)
_c = audit_checkpoints.c


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    signer_key_id: str
    created_at: datetime


class PublishedCheckpoint(NamedTuple):
    """What ``GET /v1/audit/checkpoints/latest`` serves."""

    tree_size: int
    root_hash: bytes
    note: str
    verifier_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Readiness:
    ok: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    """The outcome of ``accept_restore``: the fresh checkpoint, where the old state file was kept, and the conflict's code."""

    checkpoint: SignedCheckpoint
    kept_as: Path | None
    code: str


class Checkpointer:
    """Makes the audit log's checkpoints; see the module docstring for the invariant it keeps."""

    def __init__(
        self,
        engine: Engine,
        signing: SigningKeys,
        *,
        origin: str,
        state_file: Path,
        every_events: int,
        every_seconds: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if every_events < 1 or every_seconds < 1:
            raise ValueError("every_events and every_seconds must be at least 1")
        self._engine = engine
        self._signing = signing
        self._origin = origin
        self._state_file = state_file
        self._every_events = every_events
        self._every = timedelta(seconds=every_seconds)
        self._now = now
        self._mutex = threading.Lock()

    # -- making checkpoints ----------------------------------------------------------

    def make(self, conn_or_engine: Connection | Engine | None = None, now: datetime | None = None) -> SignedCheckpoint:
        """Sign, store and publish a checkpoint of the current tree; ``CheckpointConflictError`` signs nothing.

        On a ``Connection`` the row is inserted in the caller's transaction (which must not hold uncommitted leaves).
        """
        at = self._at(now)
        with self._mutex, self._locked(conn_or_engine) as conn:
            self._check(conn)
            return self._sign(conn, at)

    def due(self, now: datetime | None = None) -> bool:
        """At least ``every_events`` new leaves since the last checkpoint, or ``every_seconds`` since it and one new leaf."""
        with self._engine.connect() as conn:
            return self._due(conn, self._at(now))

    def maybe_make(self, now: datetime | None = None) -> SignedCheckpoint | None:
        at = self._at(now)
        with self._mutex, self._locked(None) as conn:
            if not self._due(conn, at):
                return None
            self._check(conn)
            return self._sign(conn, at)

    def status(self) -> Readiness:
        """Ready unless signing would raise ``CheckpointConflictError``; then the reason."""
        try:
            with self._engine.connect() as conn:
                self._check(conn)
        except CheckpointConflictError as conflict:
            return Readiness(ok=False, reason=str(conflict))
        return Readiness(ok=True)

    def accept_restore(self, actor: Actor, *, request_id: str, now: datetime | None = None) -> Reset:
        """The operator's resolution of a conflict: journal the decision, keep the old file aside, sign afresh."""
        at = self._at(now)
        with self._engine.connect() as conn:
            try:
                self._check(conn)
            except CheckpointConflictError as found:
                conflict = found
            else:
                raise ValueError("no checkpoint conflict to resolve")
        event = AuditEvent(
            time=event_time(at),
            request_id=request_id,
            actor=actor,
            action=RESET_ACTION,
            resource_type="audit_checkpoint",
            resource_id=None if conflict.published_size is None else str(conflict.published_size),
            member_id=None,
            fields=(),
            purpose=None,
            decision=Decision.ALLOW,
            reason_code=conflict.code,
            policy_hash="none",  # an operator's procedure, not a policy decision
            outcome="reset",
        )
        with self._engine.begin() as conn:
            store.AuditJournal().append(conn, event, now=at)
        Sequencer(self._engine).run_until_idle(now=at)
        with self._mutex, self._locked(None) as conn:
            kept = keep_aside(self._state_file, f"{self._state_file.name}.conflict-{format_utc(at).replace('-', '').replace(':', '')}")
            return Reset(checkpoint=self._sign(conn, at), kept_as=kept, code=conflict.code)

    # -- reading -----------------------------------------------------------------------

    def latest(self, conn: Connection, now: datetime | None = None) -> PublishedCheckpoint | None:
        row = conn.execute(select(_c.tree_size, _c.root_hash, _c.note).order_by(_c.checkpoint_id.desc()).limit(1)).first()
        if row is None:
            return None
        return PublishedCheckpoint(int(row.tree_size), bytes(row.root_hash), str(row.note), self.verifier_keys(self._at(now)))

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def state_file(self) -> Path:
        return self._state_file

    def verifier_keys(self, since: datetime) -> tuple[str, ...]:
        """The verifier key strings of every audit key not retired at ``since``, current first."""
        return tuple(verifier_key_string(self._origin, k.public_key) for k in self._signing.verification_keys(SigningPurpose.audit, since))

    def published_note(self) -> str | None:
        """The state file's text, unchecked; ``None`` if there is none, ``CheckpointConflictError`` if it cannot be read as text."""
        try:
            data = read_bounded(self._state_file, MAX_STATE_BYTES)
        except OSError as exc:
            raise self._unreadable(f"cannot be read ({exc.strerror})") from None
        if data is None:
            return None
        if len(data) > MAX_STATE_BYTES:
            raise self._unreadable(f"larger than {MAX_STATE_BYTES} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self._unreadable("not UTF-8 text") from None

    def _unreadable(self, why: str) -> CheckpointConflictError:
        return CheckpointConflictError(f"the published checkpoint {self._state_file} cannot be used: {why}", code="published_checkpoint_unreadable")

    # -- internals -------------------------------------------------------------------------

    def _at(self, now: datetime | None) -> datetime:
        at = self._now() if now is None else now
        if at.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return at

    @contextmanager
    def _locked(self, conn_or_engine: Connection | Engine | None) -> Iterator[Connection]:
        if isinstance(conn_or_engine, Connection):
            _lock(conn_or_engine)
            yield conn_or_engine
            return
        with (conn_or_engine or self._engine).connect() as conn:
            conn.execution_options(sqlite_immediate=True)  # vault.storage.engine's hook: BEGIN IMMEDIATE
            with conn.begin():
                _lock(conn)
                yield conn

    def _due(self, conn: Connection, at: datetime) -> bool:
        size = store.tree_size(conn)
        last = conn.execute(select(_c.tree_size, _c.created_at).order_by(_c.checkpoint_id.desc()).limit(1)).first()
        if last is None:
            return size > 0
        fresh = size - int(last.tree_size)
        return fresh >= self._every_events or (fresh > 0 and at - last.created_at >= self._every)

    def _check(self, conn: Connection) -> None:
        """Raise ``CheckpointConflictError`` unless the stored tree extends the published checkpoint."""
        published = self._published()
        if published is None:
            stored = conn.execute(select(func.max(_c.tree_size))).scalar_one()
            if stored is not None:
                reason = f"the published checkpoint {self._state_file} is missing, but the database holds checkpoints up to size {stored}"
                raise CheckpointConflictError(reason, code="published_checkpoint_missing")
            return
        m, size = published.size, store.tree_size(conn)
        extend = f"database does not extend the published checkpoint at size {m}"
        if m > size:
            raise CheckpointConflictError(f"{extend}: the tree has {size} leaves", code="published_size_ahead", published_size=m, tree_size=size)
        if store.root(conn, m) != published.root_hash:
            raise CheckpointConflictError(f"{extend}: the stored root at size {m} differs", code="published_root_differs", published_size=m, tree_size=size)

    def _published(self) -> Checkpoint | None:
        """The published checkpoint, signature checked; ``None`` if there is no state file."""
        text = self.published_note()
        if text is None:
            return None
        claimed = claimed_checkpoint(text)
        if claimed is None:
            raise self._unreadable("not a signed checkpoint note")
        try:
            published = parse_checkpoint(open_note(text, [parse_verifier_key(k) for k in self.verifier_keys(claimed.time)]).body)
        except (NoteFormatError, CheckpointFormatError) as exc:
            raise self._unreadable(str(exc)) from None
        except VerificationError:
            raise self._unreadable("no valid signature from an audit verifier key") from None
        if published.origin != self._origin:
            raise self._unreadable("it names another origin")
        return published

    def _sign(self, conn: Connection, at: datetime) -> SignedCheckpoint:
        size = store.tree_size(conn)
        root = store.root(conn, size)
        key = self._signing.current(SigningPurpose.audit)
        note = sign_note(format_checkpoint(self._origin, size, root, at), self._origin, key.private_key)
        conn.execute(sa.insert(audit_checkpoints).values(tree_size=size, root_hash=root, note=note, signer_key_id=key.key_id, created_at=at))
        replace_atomically(self._state_file, note.encode("utf-8"))
        return SignedCheckpoint(tree_size=size, root_hash=root, note=note, signer_key_id=key.key_id, created_at=at)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(CHECKPOINT_LOCK_KEY)))


def claimed_checkpoint(text: str) -> Checkpoint | None:
    """The checkpoint a note claims to carry, before its signature is checked (to pick the keys of its time)."""
    split = text.rfind("\n\n")
    try:
        return None if split < 0 else parse_checkpoint(text[: split + 1])
    except CheckpointFormatError:
        return None


__all__ = [
    "CHECKPOINT_LOCK_KEY",
    "DEFAULT_EVERY_EVENTS",
    "DEFAULT_EVERY_SECONDS",
    "RESET_ACTION",
    "STATE_FILE",
    "Checkpointer",
    "PublishedCheckpoint",
    "Readiness",
    "Reset",
    "SignedCheckpoint",
    "audit_checkpoints",
    "claimed_checkpoint",
    "metadata",
]
