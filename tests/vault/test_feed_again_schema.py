"""Migration ``0012_feed_again`` on real SQLite and PostgreSQL: the feed's unique key goes, done extracts get a feed position.

* At ``0011`` a second entry for one (consumer, epoch, pseudonym) is refused;
  at ``0012`` it is taken, the feed's rows keep their ``seq``, and the
  extracts done before the upgrade record the feed's last ``seq`` then (a
  member they held who leaves again is fed again: told twice, never not at
  all); others record none.
* Downgrade refuses while a pseudonym has two entries for one consumer and
  epoch, and changes nothing; without such entries it restores the key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from api.runtime import Runtime
from tests.vault.factories import migrate_data, stored_extract
from vault.clients import ROOT_KEY, ClientRegistry
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import deletion_feed, extracts

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
BEFORE = "0011_extract_members_by_extract"


def _entry(pseudonym: str) -> dict[str, object]:
    return {"consumer_id": "loyalty-app", "epoch": 1, "pseudonym": pseudonym, "reason": "withdrawn", "at": NOW}


def test_the_upgrade_takes_a_pseudonym_again_and_gives_done_extracts_the_feed_position(runtime: Runtime, owner: Engine) -> None:
    migrate_data(owner, BEFORE, down=True)
    engine = runtime.data_engine
    with write_transaction(engine) as conn:
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        done, failed = stored_extract(conn, NOW), stored_extract(conn, NOW)
        conn.execute(update(extracts).where(extracts.c.extract_id == failed).values(status="failed"))
        seqs = [conn.execute(insert(deletion_feed).values(**_entry(p)).returning(deletion_feed.c.seq)).scalar_one() for p in ("aa" * 16, "bb" * 16)]
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        conn.execute(insert(deletion_feed).values(**_entry("aa" * 16)))

    migrate_data(owner, "head")

    with engine.connect() as conn:
        positions = dict(conn.execute(select(extracts.c.extract_id, extracts.c.feed_seq)).all())
    assert positions == {done: max(seqs), failed: None}
    with write_transaction(engine) as conn:
        again = conn.execute(insert(deletion_feed).values(**_entry("aa" * 16)).returning(deletion_feed.c.seq)).scalar_one()
    with engine.connect() as conn:
        rows = conn.execute(select(deletion_feed.c.seq, deletion_feed.c.pseudonym).order_by(deletion_feed.c.seq)).all()
    assert [tuple(r) for r in rows] == [(seqs[0], "aa" * 16), (seqs[1], "bb" * 16), (again, "aa" * 16)]

    with pytest.raises(RuntimeError, match="more than once"):
        migrate_data(owner, BEFORE, down=True)
    with engine.connect() as conn:
        assert conn.execute(select(deletion_feed.c.seq)).scalars().all() == [seqs[0], seqs[1], again]
        assert dict(conn.execute(select(extracts.c.extract_id, extracts.c.feed_seq)).all()) == positions


def test_a_downgrade_without_repeated_pseudonyms_restores_the_unique_key(runtime: Runtime, owner: Engine) -> None:
    with write_transaction(runtime.data_engine) as conn:
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        conn.execute(insert(deletion_feed).values(**_entry("aa" * 16)))

    migrate_data(owner, BEFORE, down=True)

    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(deletion_feed).values(**_entry("aa" * 16)))
    with owner.connect() as conn:
        assert not conn.dialect.has_table(conn, "extract_departures")
        assert "feed_seq" not in {c["name"] for c in owner.dialect.get_columns(conn, "extracts")}
