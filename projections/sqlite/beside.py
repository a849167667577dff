"""Building a new shape of the catalog beside the stored one (a schema upgrade), in SQLite.

The new catalog is folded into a file of its own next to the registry (``registry.db-catalog-next``), page by
page, without the log's write lock: the stored catalog keeps serving and other writers keep appending. Then,
under the write lock, the tail is folded in and the tables are copied into the registry's file in one
transaction (an ``executemany`` of the side's rows per table, far cheaper than folding). A builder killed half way
leaves the file with its checkpoint, and the next one goes on from there. An exclusive lock on a lock file
keeps a second builder (another process upgrading at the same time) waiting until the first is done.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventstore.events import StoredEvent
from projections.projector import fold

from .fold import FoldStore
from .schema import TABLES, VERSION, create, drop, stored_version


class Beside:
    def __init__(self, recorder: Any, path: Path) -> None:
        self.recorder = recorder
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        if stored_version(self.conn) != VERSION:  # a leftover of another shape: start again
            self.conn.execute("BEGIN")
            drop(self.conn)
            create(self.conn)
            self.conn.execute("COMMIT")
        self.store = FoldStore(self.conn)

    def checkpoint(self) -> int:
        return self.store.checkpoint()

    def fold(self, events: Sequence[StoredEvent], position: int) -> int:
        """Fold a page into the side catalog and commit it (no lock of the registry's is held)."""
        return self._fold(events, position)

    def _fold(self, events: Sequence[StoredEvent], position: int) -> int:
        self.conn.execute("BEGIN")
        try:
            position = fold(self.store, events, position)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return position

    def swap(self, tx: Any, tail: Sequence[StoredEvent]) -> None:
        """Under the write lock (``tx``): fold the tail, copy every table into the registry's file."""
        self._fold(tail, self.checkpoint())
        main = tx.connection
        drop(main)
        create(main)
        # Copied through this process (the side file is not ATTACHed: an unqualified name on an attached
        # connection can resolve to the other file's table, and ATTACH cannot run inside the transaction).
        for table in TABLES:
            where = " WHERE name <> 'schema'" if table == "projection_checkpoint" else ""
            cursor = self.conn.execute(f"SELECT * FROM {table}{where}")  # noqa: S608 - names from the schema
            marks = ", ".join("?" * len(cursor.description))
            verb = "INSERT OR REPLACE" if table == "projection_checkpoint" else "INSERT"
            while rows := cursor.fetchmany(5_000):
                main.executemany(f"{verb} INTO {table} VALUES ({marks})", rows)  # noqa: S608

    def close(self) -> None:
        self.conn.close()


@contextmanager
def beside(recorder: Any) -> Iterator[Beside]:
    """The side catalog of ``recorder`` (an ``eventstore.sqlite.SQLiteRecorder``), next to its file."""
    path = Path(str(recorder.path) + "-catalog-next")
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here for the first
        side = Beside(recorder, path)
        done = False
        try:
            yield side
            done = True
        finally:
            side.close()
            if done:  # the lock file stays: unlinking it would let a waiting builder lock a file no one sees
                for leftover in (path, Path(str(path) + "-journal")):
                    leftover.unlink(missing_ok=True)
