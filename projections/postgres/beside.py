"""Building a new shape of the catalog beside the stored one (a schema upgrade), in PostgreSQL.

The new catalog is folded into a schema of its own (``mledger_catalog_next``, the only schema on the builder's
``search_path``, so the catalog's statements run there unchanged), page by page on a connection of its own,
without the log's writer lock: the stored catalog keeps serving and other hosts keep writing. Then, in the
write transaction, the tail is folded in and the tables change schema (``ALTER TABLE … SET SCHEMA``: no row
is copied), so the swap costs about nothing under the lock. A builder killed half way leaves the schema with
its checkpoint, and the next one goes on from there; a session advisory lock keeps a second builder (another
host upgrading at the same time) waiting until the first is done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from eventstore.events import StoredEvent
from projections.projector import fold

from .fold import FoldStore
from .schema import TABLES, VERSION, create, drop, stored_version

SCHEMA = "mledger_catalog_next"
_BUILDER_LOCK = 0x6D6C6564676573  # one catalog builder per database at a time


class Beside:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        with conn.transaction():
            if stored_version(conn) != VERSION:  # a leftover of another shape: start again
                drop(conn)
                create(conn)
        self.store = FoldStore(conn)

    def checkpoint(self) -> int:
        return self.store.checkpoint()

    def fold(self, events: Sequence[StoredEvent], position: int) -> int:
        with self.conn.transaction():
            return fold(self.store, events, position)

    def swap(self, tx: Any, tail: Sequence[StoredEvent]) -> None:
        """In the write transaction ``tx``: fold the tail into the new tables, move them into place."""
        main = tx.connection
        home, path = main.execute("SELECT current_schema(), current_setting('search_path')").fetchone()
        # Only the side schema on the path while folding: an unqualified name can never reach the stored tables.
        main.execute("SELECT set_config('search_path', %s, true)", (SCHEMA,))
        store = FoldStore(main)
        fold(store, tail, store.checkpoint())
        main.execute("SELECT set_config('search_path', %s, true)", (path,))
        drop(main)
        for table in TABLES:
            main.execute(pgsql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                pgsql.Identifier(SCHEMA), pgsql.Identifier(table), pgsql.Identifier(home)))
        main.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(pgsql.Identifier(SCHEMA)))


@contextmanager
def beside(recorder: Any) -> Iterator[Beside]:
    """The side catalog of ``recorder`` (an ``eventstore.postgres.PostgresRecorder``), on a connection of its own."""
    conn = psycopg.connect(recorder.url, autocommit=True)
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_BUILDER_LOCK,))  # a second builder waits here
        conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(SCHEMA)))
        # Only the side schema on the path: an unqualified name can never reach the stored catalog's tables.
        conn.execute("SELECT set_config('search_path', %s, false)", (SCHEMA,))
        yield Beside(conn)
    finally:
        conn.close()  # ends the session: its advisory lock goes with it
