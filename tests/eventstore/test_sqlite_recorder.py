"""The recorder contract on the SQLite backend (one file, WAL)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from contracts.recorder import GuardChecks, Opener, RecorderContract

import eventstore.sqlite as sqlite_backend
from eventstore.sqlite import SQLiteRecorder


class TestSQLiteRecorder(RecorderContract, GuardChecks):
    drop_guard_sql = "DROP TRIGGER events_no_delete"
    noop_guard_sql = ("DROP TRIGGER events_no_delete",
                      "CREATE TRIGGER events_no_delete BEFORE DELETE ON events WHEN 0 BEGIN SELECT 1; END")

    backend_module = sqlite_backend
    refused_statements = (
        *RecorderContract.refused_statements,
        # INSERT OR REPLACE deletes the old row without firing DELETE triggers: refused on its own.
        "INSERT OR REPLACE INTO events (position, stream, version, type, schema_version, data, meta,"
        " recorded_at, hash) SELECT position, stream, version, type, schema_version, '{\"forged\":1}',"
        " meta, recorded_at, hash FROM events WHERE position = 1",
        "INSERT OR REPLACE INTO idempotency (key, fingerprint, first_position, last_position)"
        " VALUES ('k-b', 'f', 1, 1)",
    )

    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "store" / "registry.db"

    def opener(self, location: Path, *, lock_timeout: float | None = None) -> Opener:
        if lock_timeout is None:
            return functools.partial(SQLiteRecorder, location)
        return functools.partial(SQLiteRecorder, location, timeout=lock_timeout)

    def raw_execute(self, location: Path, sql: str) -> list[tuple]:
        conn = sqlite3.connect(location, isolation_level=None)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    @contextmanager
    def hold_write_lock(self, location: Path) -> Iterator[None]:
        conn = sqlite3.connect(location, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def unreachable(self, tmp_path: Path) -> Opener:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the registry folder should be")
        return functools.partial(SQLiteRecorder, blocker / "registry.db")
