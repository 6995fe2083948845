"""Member data keys and retention keys: creation, wrapping, a bounded cache, shredding.

Invariants:

* A member key exists in clear only in process memory; at rest it is wrapped by
  a KEK version with associated data binding it to (owner, scope, version), so
  a wrapped key copied to another member's row does not unwrap.
* A cached key is used only after the key store confirmed, in the same call,
  that its row still exists with the same wrapped bytes: a key shredded by one
  process is dead in every process on the next read.
* Shredding deletes rows; on SQLite the WAL is checkpointed afterwards
  (``secure_delete`` zeroes the freed pages) so the wrapped key does not linger.
* Every wrap is counted per KEK version in ``kek_wraps`` (the AES-GCM nonce
  budget of the KEK), in the same transaction as the wrap it counts.
* KEK rotation re-wraps member keys, root keys and signing keys
  (``keys.signing``); ``kek_references`` counts all three.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, Connection, Engine, Select, String, bindparam, delete, func, insert, literal_column, select, tuple_, update
from sqlalchemy.exc import DBAPIError, OperationalError

from keys._store import count_wraps, hold_kek, insert_ignore, write_transaction
from keys.errors import KeyNotFoundError
from keys.field_cipher import FieldCipher
from keys.models import KekWrapsRow, MemberKeyRow, RootKeyRow, SigningKeyRow
from keys.provider import KekProvider
from keys.signing import rewrap_signing_keys

DATA_SCOPE = "data"
RewrapCursor = tuple[str, str, int]
_REWRAP = "UPDATE member_keys SET kek_version = ?, wrapped = ? WHERE owner_id = ? AND scope = ? AND version = ? AND wrapped = ?"


def _driver_sql(conn: Connection, sql: str) -> str:
    """``sql`` (``?`` placeholders) in the driver's positional parameter style: bulk writes go straight to ``executemany``, no SQL compiler."""
    style = conn.dialect.paramstyle
    if style == "qmark":
        return sql
    if style in ("format", "pyformat"):
        return sql.replace("?", "%s")
    raise ValueError(f"unsupported parameter style {style}")


_KEY_COLUMNS = (MemberKeyRow.scope, MemberKeyRow.version, MemberKeyRow.kek_version, MemberKeyRow.wrapped)
_LOAD_ALL = select(*_KEY_COLUMNS).where(MemberKeyRow.owner_id == bindparam("owner"))
_LOAD_ONE_SCOPE = _LOAD_ALL.where(MemberKeyRow.scope == bindparam("scope"))
# The two load statements compiled for PostgreSQL's driver, by statement (module constants: their ids are stable).
_PG_SQL: dict[int, str] = {}


def _load_many_statement(dialect: str) -> Select[str, str, int, int, bytes]:
    """``load_many``'s query: the owners as one bound value (``= ANY`` of an array on PostgreSQL, a JSON array read by ``json_each`` on SQLite)."""
    owner = MemberKeyRow.owner_id
    if dialect == "postgresql":
        among = owner == func.any(bindparam("owners", type_=ARRAY(String)))
    else:
        among = owner.in_(select(literal_column("value")).select_from(func.json_each(bindparam("owners", type_=String))).scalar_subquery())
    return select(owner, *_KEY_COLUMNS).where(MemberKeyRow.scope == bindparam("scope"), among)


_LOAD_MANY_SQLITE = (  # ``_load_many_statement`` on SQLite, for the driver
    "SELECT owner_id, scope, version, kek_version, wrapped FROM member_keys WHERE scope = ? AND owner_id IN (SELECT value FROM json_each(?))"
)


def _owners_param(dialect: str, owners: Sequence[str]) -> list[str] | str:
    return list(owners) if dialect == "postgresql" else json.dumps(list(owners))


def retention_scope(expiry_year: int) -> str:
    return f"retention-{expiry_year:04d}"


def _member_aad(owner: str, scope: str, version: int) -> bytes:
    o, s = owner.encode(), scope.encode()
    return b"member-vault/member-key/v1" + struct.pack(">H", len(o)) + o + struct.pack(">H", len(s)) + s + struct.pack(">I", version)


def _root_aad(name: str, version: int) -> bytes:
    n = name.encode()
    return b"member-vault/root-key/v1" + struct.pack(">H", len(n)) + n + struct.pack(">I", version)


@dataclass(frozen=True, slots=True)
class MemberKeySet:
    """The live keys of one member, by (scope, version)."""

    owner_id: str
    ciphers: dict[tuple[str, int], FieldCipher]

    def get(self, scope: str, version: int) -> FieldCipher:
        cipher = self.ciphers.get((scope, version))
        if cipher is None:
            raise KeyNotFoundError(f"no live {scope} key version {version} for this member")
        return cipher


# Seconds a driver-level key read waits for SQLite's locks before it fails (it may be running on the event loop).
_READ_BUSY_TIMEOUT_S = 0.25


class _SqliteKeyReader:
    """The one-owner key read on an embedded key store, straight on the driver: one read-only connection per thread.

    Every member read asks the key store whether the member's key row is still
    live (the shredding rule above). Through SQLAlchemy's pool that one SELECT
    costs a checkout, a ``BEGIN``, a reset and a check-in — most of a member
    read's overhead. In autocommit mode a SELECT on a WAL database sees the
    last committed state when it starts, which is all the rule needs. It may
    run on the API's event loop (embedded databases), so its busy timeout is
    short, as ``vault.storage.readers``' is (a WAL reader waits only in rare
    cases, such as recovery after a crash), and a failure is SQLAlchemy's
    ``OperationalError``, which the edge answers with 503.
    """

    _ONE_SCOPE = "SELECT scope, version, kek_version, wrapped FROM member_keys WHERE owner_id = ? AND scope = ?"
    _ALL = "SELECT scope, version, kek_version, wrapped FROM member_keys WHERE owner_id = ?"

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=_READ_BUSY_TIMEOUT_S)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def fetch(self, owner: str, scope: str | None) -> list[tuple[str, int, int, bytes]]:
        sql, params = (self._ALL, (owner,)) if scope is None else (self._ONE_SCOPE, (owner, scope))
        try:
            rows = self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise OperationalError(sql, None, exc) from exc
        return [(str(s), int(v), int(k), bytes(w)) for s, v, k, w in rows]


class _Cache:
    """A bounded LRU of unwrapped keys, keyed by the wrapped bytes they came from."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, str, int, bytes], FieldCipher] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int, bytes]) -> FieldCipher | None:
        with self._lock:
            cipher = self._items.get(key)
            if cipher is not None:
                self._items.move_to_end(key)
            return cipher

    def put(self, key: tuple[str, str, int, bytes], cipher: FieldCipher) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self._items[key] = cipher
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def evict_owner(self, owner: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == owner]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


_INSERT_KEYS = "INSERT INTO member_keys (owner_id, scope, version, kek_version, wrapped, created_at) VALUES (?, ?, ?, ?, ?, ?)"


def _bound_created_at(conn: Connection, now: datetime) -> object:
    """``now`` as ``member_keys.created_at``'s type binds it on this driver (what an ORM insert stores)."""
    process = MemberKeyRow.__table__.c.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return now if process is None else process(now)


class MemberKeys:
    """The member key store: its own engine, a KEK provider, a bounded cache."""

    def __init__(
        self,
        engine: Engine,
        provider: KekProvider,
        *,
        cache_size: int = 10_000,
        random: Callable[[int], bytes] = os.urandom,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.provider = provider
        self._sqlite = (
            _SqliteKeyReader(str(engine.url.database)) if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:") else None
        )
        self._cache = _Cache(cache_size)
        self._random = random
        self._now = now

    # -- creating keys -------------------------------------------------------

    def create(self, owners: Sequence[str], scope: str = DATA_SCOPE) -> dict[str, FieldCipher]:
        """Create version 1 of ``scope`` for each owner, in one transaction."""
        made: dict[str, FieldCipher] = {}
        if not owners:
            return made
        rows, fresh = [], []
        with write_transaction(self.engine) as conn:
            hold_kek(conn)
            kek_version = 0
            for owner in owners:
                key = self._random(32)
                kek_version, blob = self.provider.wrap(key, _member_aad(owner, scope, 1))
                rows.append({"owner_id": owner, "scope": scope, "version": 1, "kek_version": kek_version, "wrapped": blob, "created_at": self._now()})
                fresh.append((owner, blob, FieldCipher(key, 1)))
            conn.execute(insert(MemberKeyRow), rows)
            count_wraps(conn, kek_version, len(rows))
        for owner, blob, cipher in fresh:
            self._cache.put((owner, scope, 1, blob), cipher)
            made[owner] = cipher
        return made

    def create_scopes(self, owners_by_scope: Mapping[str, Sequence[str]]) -> dict[str, dict[str, FieldCipher]]:
        """``create`` for several scopes at once: version 1 of each scope for each of its owners, in one transaction.

        The rows are ``create``'s (the same wrapping and associated data, the
        wraps counted in the same transaction) with one creation time, inserted
        by one ``executemany`` on the driver; the keys are drawn from the random
        source at once. All or nothing: a failure (a key that exists already, an
        unusable provider) writes no key of any scope. Returns the new keys by
        scope, then owner.
        """
        made: dict[str, dict[str, FieldCipher]] = {scope: {} for scope in owners_by_scope}
        wanted = [(owner, scope) for scope, owners in owners_by_scope.items() for owner in owners]
        if not wanted:
            return made
        rows: list[tuple[str, str, int, int, bytes, object]] = []
        fresh: list[tuple[str, str, bytes, FieldCipher]] = []
        wraps: dict[int, int] = {}
        with write_transaction(self.engine) as conn:
            hold_kek(conn)
            created_at = _bound_created_at(conn, self._now())
            material = self._random(32 * len(wanted))  # every key from one draw of the random source
            if len(material) != 32 * len(wanted):
                raise ValueError("random source returned short key material")
            for at, (owner, scope) in enumerate(wanted):
                key = material[32 * at : 32 * at + 32]
                kek_version, blob = self.provider.wrap(key, _member_aad(owner, scope, 1))
                rows.append((owner, scope, 1, kek_version, blob, created_at))
                fresh.append((owner, scope, blob, FieldCipher(key, 1)))
                wraps[kek_version] = wraps.get(kek_version, 0) + 1
            conn.exec_driver_sql(_driver_sql(conn, _INSERT_KEYS), rows)
            for kek_version, n in wraps.items():
                count_wraps(conn, kek_version, n)
        for owner, scope, blob, cipher in fresh:
            self._cache.put((owner, scope, 1, blob), cipher)
            made[scope][owner] = cipher
        return made

    def get_or_create(self, owner: str, scope: str) -> FieldCipher:
        """The live version 1 key of ``scope`` (used for per-year retention keys)."""
        found = self.load(owner, scopes=(scope,))
        if (scope, 1) in found.ciphers:
            return found.ciphers[(scope, 1)]
        with write_transaction(self.engine) as conn:
            hold_kek(conn)
            kek_version, blob = self.provider.wrap(self._random(32), _member_aad(owner, scope, 1))
            row = {"owner_id": owner, "scope": scope, "version": 1, "kek_version": kek_version, "wrapped": blob, "created_at": self._now()}
            conn.execute(insert_ignore(conn, MemberKeyRow).values(**row))
            count_wraps(conn, kek_version, 1)  # a wrap that lost a creation race still spent a nonce
        return self.load(owner, scopes=(scope,)).get(scope, 1)

    # -- reading keys --------------------------------------------------------

    def load(self, owner: str, scopes: Iterable[str] | None = None) -> MemberKeySet:
        """Every live key of ``owner`` (or of the given scopes), unwrapped; one query."""
        wanted = None if scopes is None else tuple(scopes)
        if wanted is not None and len(wanted) == 1:
            rows = self._fetch(_LOAD_ONE_SCOPE, {"owner": owner, "scope": wanted[0]})
        else:
            rows = [r for r in self._fetch(_LOAD_ALL, {"owner": owner}) if wanted is None or r[0] in wanted]
        ciphers: dict[tuple[str, int], FieldCipher] = {}
        for scope, version, kek_version, wrapped in rows:
            ciphers[(scope, version)] = self._unwrap(owner, scope, version, kek_version, bytes(wrapped))
        return MemberKeySet(owner, ciphers)

    def load_many(self, owners: Sequence[str], scope: str = DATA_SCOPE) -> dict[str, MemberKeySet]:
        """The live ``scope`` keys of many owners in one query (bulk readers such as extracts); an owner without one is absent.

        The owners are one bound value (the statement compiles once, whatever
        their number), and the keys are unwrapped without the cache: a bulk
        reader reads each owner once, so caching would only evict the keys of
        interactive readers. Liveness holds as in ``load``: every key returned
        was read from the key store in this call, and the provider checks its
        KEKs once for the batch (``unwrap_many``: on the local keyring, one
        ``stat`` and, if the file changed, one re-read with its permission
        check).
        """
        if not owners:
            return {}
        rows: Sequence[tuple[str, str, int, int, bytes]]
        if self._sqlite is not None:  # straight on the driver, as ``load`` reads (no pool checkout, no ``Row`` per key)
            rows = self._sqlite._connection().execute(_LOAD_MANY_SQLITE, (scope, json.dumps(list(owners)))).fetchall()
        else:
            with self.engine.connect() as conn:
                rows = conn.execute(_load_many_statement(conn.dialect.name), {"scope": scope, "owners": _owners_param(conn.dialect.name, owners)}).all()
        aead_data = _member_aad
        keys = self.provider.unwrap_many([(kek_version, bytes(wrapped), aead_data(owner, s, version)) for owner, s, version, kek_version, wrapped in rows])
        found: dict[str, MemberKeySet] = {}
        for (owner, key_scope, version, _, _), key in zip(rows, keys, strict=True):
            keyset = found.get(owner)
            if keyset is None:
                keyset = found[owner] = MemberKeySet(owner, {})
            keyset.ciphers[(key_scope, version)] = FieldCipher(key, version)
        return found

    def _fetch(self, stmt: Select[str, int, int, bytes], params: dict[str, str]) -> Sequence[tuple[str, int, int, bytes]]:
        if self._sqlite is not None:
            return self._sqlite.fetch(params["owner"], params.get("scope"))
        with self.engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                return [(str(s), int(v), int(k), bytes(w)) for s, v, k, w in conn.execute(stmt, params)]
            # One statement, in autocommit (no BEGIN and ROLLBACK round trips), on psycopg's cursor: SQLAlchemy's
            # execution context and result cost twice the round trip (vault.storage.readers.DriverRow says more).
            conn.execution_options(isolation_level="AUTOCOMMIT")
            sql = _PG_SQL.get(id(stmt))
            if sql is None:
                sql = _PG_SQL[id(stmt)] = stmt.compile(dialect=conn.dialect).string
            driver: Any = conn.connection.driver_connection
            error: Any = conn.dialect.loaded_dbapi.Error  # the driver's base exception class
            try:
                with driver.cursor() as cursor:
                    cursor.execute(sql, params)
                    rows = cursor.fetchall()
            except error as exc:
                gone = conn.dialect.is_disconnect(exc, driver, None)
                if gone:
                    conn.invalidate(exc)
                raise DBAPIError.instance(sql, None, exc, error, connection_invalidated=gone, dialect=conn.dialect) from exc
            return [(str(s), int(v), int(k), bytes(w)) for s, v, k, w in rows]

    def live_owners(self, owners: Iterable[str], scope: str = DATA_SCOPE) -> set[str]:
        """The subset of ``owners`` whose ``scope`` key is live."""
        wanted = list(dict.fromkeys(owners))
        if not wanted:
            return set()
        stmt = select(MemberKeyRow.owner_id).where(MemberKeyRow.scope == scope, MemberKeyRow.owner_id.in_(wanted))
        with self.engine.connect() as conn:
            return set(conn.scalars(stmt))

    def _unwrap(self, owner: str, scope: str, version: int, kek_version: int, wrapped: bytes) -> FieldCipher:
        cache_key = (owner, scope, version, wrapped)
        cipher = self._cache.get(cache_key)
        if cipher is None:
            key = self.provider.unwrap(kek_version, wrapped, _member_aad(owner, scope, version))
            cipher = FieldCipher(key, version)
            self._cache.put(cache_key, cipher)
        return cipher

    # -- root keys -----------------------------------------------------------

    def root_key(self, name: str) -> bytes:
        """The current version of a root key, created on first use."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RootKeyRow.version, RootKeyRow.kek_version, RootKeyRow.wrapped)
                .where(RootKeyRow.name == name)
                .order_by(RootKeyRow.version.desc())
                .limit(1)
            ).first()
        if row is None:
            with write_transaction(self.engine) as conn:
                hold_kek(conn)
                kek_version, blob = self.provider.wrap(self._random(32), _root_aad(name, 1))
                values = {"name": name, "version": 1, "kek_version": kek_version, "wrapped": blob, "created_at": self._now()}
                conn.execute(insert_ignore(conn, RootKeyRow).values(**values))
                count_wraps(conn, kek_version, 1)  # a wrap that lost a creation race still spent a nonce
            return self.root_key(name)
        version, kek_version, wrapped = row
        return self.provider.unwrap(kek_version, bytes(wrapped), _root_aad(name, version))

    # -- shredding -----------------------------------------------------------

    def shred(self, owner: str, scopes: Iterable[str]) -> int:
        """Destroy the owner's keys of the given scopes; idempotent. Returns rows deleted."""
        scope_list = list(scopes)
        with write_transaction(self.engine) as conn:
            deleted = conn.execute(delete(MemberKeyRow).where(MemberKeyRow.owner_id == owner, MemberKeyRow.scope.in_(scope_list))).rowcount
        self._cache.evict_owner(owner)
        self.checkpoint()
        return int(deleted)

    def scopes_of(self, owner: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(MemberKeyRow.scope).where(MemberKeyRow.owner_id == owner).distinct()))

    def owners(self, scope: str = DATA_SCOPE, *, after: str = "", limit: int = 1000) -> list[str]:
        """Owners with a live key of ``scope``, in id order, for paged sweeps."""
        stmt = select(MemberKeyRow.owner_id).where(MemberKeyRow.scope == scope, MemberKeyRow.owner_id > after).order_by(MemberKeyRow.owner_id).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.scalars(stmt))

    def checkpoint(self) -> None:
        """On SQLite, fold the WAL into the main file and truncate it (shredded keys must not linger)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- KEK rotation --------------------------------------------------------

    def rewrap_batch(self, limit: int = 5000) -> int:
        """Re-wrap up to ``limit`` keys not under the current KEK; returns how many (0: done)."""
        return self.rewrap_from(None, limit)[0]

    def rewrap_from(self, after: RewrapCursor | None, limit: int = 5000) -> tuple[int, RewrapCursor | None]:
        """Re-wrap up to ``limit`` keys past ``after`` (primary-key order) not under the current KEK.

        Returns how many were re-wrapped and the cursor to continue from (None at
        the end), so a full pass reads each row once instead of rescanning the
        table per batch. Each batch is one transaction; an update applies only if
        the row still holds the blob it was read with, so concurrent shredding or
        another rewrapper is never overwritten. Safe to interrupt and resume.
        """
        current = self.provider.current_version()
        done = 0
        pk = tuple_(MemberKeyRow.owner_id, MemberKeyRow.scope, MemberKeyRow.version)
        stmt = select(MemberKeyRow.owner_id, MemberKeyRow.scope, MemberKeyRow.version, MemberKeyRow.kek_version, MemberKeyRow.wrapped)
        if after is not None:
            stmt = stmt.where(pk > tuple_(*after))
        stmt = stmt.where(MemberKeyRow.kek_version != current).order_by(*pk.clauses).limit(limit)
        with write_transaction(self.engine) as conn:
            rows = conn.execute(stmt).all()
            if rows:
                aads = [_member_aad(owner, scope, version) for owner, scope, version, _, _ in rows]
                fresh = self.provider.rewrap([(kv, bytes(w), aad) for (_, _, _, kv, w), aad in zip(rows, aads, strict=True)])
                params = [(kv, blob, o, s, v, bytes(old)) for (kv, blob), (o, s, v, _, old) in zip(fresh, rows, strict=True)]
                conn.exec_driver_sql(_driver_sql(conn, _REWRAP), params)
                count_wraps(conn, current, len(params))
                done += len(params)
            done += self._rewrap_roots(conn, current)
        last = rows[-1] if len(rows) == limit else None
        return done, (None if last is None else (str(last[0]), str(last[1]), int(last[2])))

    def _rewrap_roots(self, conn: Connection, current: int) -> int:
        rows = conn.execute(
            select(RootKeyRow.name, RootKeyRow.version, RootKeyRow.kek_version, RootKeyRow.wrapped).where(RootKeyRow.kek_version != current)
        ).all()
        for name, version, kek_version, wrapped in rows:
            aad = _root_aad(name, version)
            key = self.provider.unwrap(kek_version, bytes(wrapped), aad)
            new_version, blob = self.provider.wrap(key, aad)
            conn.execute(update(RootKeyRow).where(RootKeyRow.name == name, RootKeyRow.version == version).values(kek_version=new_version, wrapped=blob))
        wraps = len(rows) + rewrap_signing_keys(conn, self.provider, current)
        if wraps:
            count_wraps(conn, current, wraps)
        return wraps

    def retire_unreferenced_keks(self) -> tuple[int, ...]:
        """Retire every KEK version that is not current and wraps no stored key.

        The reference check and the retirement run under the exclusive KEK lock
        (see keys._store): no key wrapped under a version can commit between the
        check and the retirement.
        """
        retired = []
        with write_transaction(self.engine) as conn:
            hold_kek(conn, exclusive=True)
            refs = self._kek_references(conn)
            current = self.provider.current_version()
            for info in self.provider.versions():
                if info.version != current and not info.retired and refs.get(info.version, 0) == 0:
                    self.provider.retire(info.version)
                    retired.append(info.version)
        return tuple(retired)

    def kek_references(self) -> dict[int, int]:
        """How many stored keys each KEK version wraps."""
        with self.engine.connect() as conn:
            return self._kek_references(conn)

    @staticmethod
    def _kek_references(conn: Connection) -> dict[int, int]:
        counts: dict[int, int] = {}
        for column in (MemberKeyRow.kek_version, RootKeyRow.kek_version, SigningKeyRow.kek_version):
            for version, n in conn.execute(select(column, func.count()).group_by(column)):
                counts[int(version)] = counts.get(int(version), 0) + int(n)
        return counts

    def wrap_counts(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            return {int(v): int(n) for v, n in conn.execute(select(KekWrapsRow.kek_version, KekWrapsRow.wraps))}


__all__ = ["DATA_SCOPE", "MemberKeySet", "MemberKeys", "retention_scope"]
