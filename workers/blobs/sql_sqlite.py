"""The blob tables in SQLite (``sqlite:///path``, or the registry's own ``registry.db``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventstore.sqlite import cannot_write, open_read_only

PARALLEL = False  # one writer at a time per file: threads would only queue for the lock

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blob_uploads (upload TEXT PRIMARY KEY, started REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blob_chunks (upload TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, "
    "PRIMARY KEY (upload, seq))",
    "CREATE TABLE IF NOT EXISTS blob_store (digest TEXT PRIMARY KEY, upload TEXT NOT NULL, size INTEGER NOT NULL, "
    "chunk INTEGER NOT NULL, created REAL NOT NULL) WITHOUT ROWID",  # small rows: one b-tree, no extra index
)
INSERT_BLOB = "INSERT OR IGNORE INTO blob_store (digest, upload, size, chunk, created) VALUES (?, ?, ?, ?, ?)"
PUT_IN = None  # DatabaseBlobStore.put_in: the blob's row, then its chunks if the row was new
HAS_TABLES = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob_store'"


def path_of(url: str) -> str:
    return url[len("sqlite://"):] if url.startswith("sqlite://") else url


def describe(url: str) -> str:
    return path_of(url)


def q(statement: str) -> str:
    return statement


def binary(data: bytes) -> Any:
    return data


def connect(url: str) -> sqlite3.Connection:
    path = Path(path_of(url))
    if cannot_write(path):  # a read-only home: its blobs can be read (pull, audit --deep), nothing written
        return open_read_only(path, 30.0)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new file of blobs only (the registry's own registry.db is made by its log first): its freed pages go
        # back to the file system after gc (``settle_deletes``), so a purged model's bytes stop costing disk.
        # Only before the first page is written (WAL mode writes it): afterwards SQLite ignores the setting.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    mode = (os.environ.get("MLEDGER_SYNCHRONOUS") or "FULL").upper()
    if mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        mode = "FULL"
    conn.execute(f"PRAGMA synchronous = {mode}")
    return conn


def has_tables(conn: Any) -> bool:
    return conn.execute(HAS_TABLES).fetchone() is not None


def create_schema(conn: Any) -> None:
    if has_tables(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def begin(conn: Any) -> None:
    # IMMEDIATE: take the write lock up front (a deferred BEGIN that reads then writes can fail with BUSY).
    conn.execute("BEGIN IMMEDIATE")


def commit(conn: Any) -> None:
    conn.execute("COMMIT")


def rollback(conn: Any) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


# What gc's deletions leave readable (``DatabaseBlobStore.erasing`` / ``settle_deletes``). SQLite frees a
# deleted row's pages to the file's freelist with their bytes in them unless it was built with
# SQLITE_SECURE_DELETE (Debian's is; python.org's and many others' are not): measured here with
# ``PRAGMA secure_delete = OFF`` as such a build has it, a purged 28 KB blob's bytes were still in
# ``registry.db`` seven times over after ``gc`` said it freed them. And the write-ahead log keeps the pages
# the blob was written in until a checkpoint restarts it.
SECURE_DELETE_ON = "PRAGMA secure_delete = ON"
SECURE_DELETE_OFF = "PRAGMA secure_delete = OFF"
# A short wait for readers: a reader on an older snapshot (a long export) makes the truncation give up, not gc.
SETTLE_TIMEOUT_MS = 2000
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's answer for INCREMENTAL


@contextmanager
def erasing(conn: Any) -> Iterator[None]:
    """Deleted rows' bytes overwritten with zeros for the statements inside, on any build; the connection's
    own setting back afterwards (the catalog's folds need not pay for it)."""
    was_on = conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    conn.execute(SECURE_DELETE_ON)
    try:
        yield
    finally:
        conn.execute(SECURE_DELETE_ON if was_on else SECURE_DELETE_OFF)


def settle_deletes(conn: Any) -> bool:
    """After deletions committed: in a file of blobs only, give the freed pages back to the file system; copy
    the write-ahead log into the file (the zeroed pages included) and truncate it, so that no earlier copy of
    the deleted pages is left in ``-wal``. False when a reader still needed the log (nothing lost: it stays
    until the next time)."""
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {SETTLE_TIMEOUT_MS}")
    try:
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
            # executescript: it steps the statement to its end (execute frees one page and stops, measured)
            conn.executescript("PRAGMA incremental_vacuum")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    return busy == 0
