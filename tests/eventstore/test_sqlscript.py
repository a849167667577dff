"""The schema scripts run statement by statement inside the caller's transaction (``eventstore.sqlscript``),
and the recorder's connections are set up as sqlite-utils set them up before it was dropped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from eventstore.sqlite import TABLES, SQLiteRecorder
from eventstore.sqlscript import run_script, statements
from projections import schema

TRIGGER_SCRIPT = """
CREATE TABLE t (a TEXT);  -- a comment; with a semicolon
CREATE TABLE log (a TEXT);
CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN
  INSERT INTO log (a) VALUES ('inserted; ' || new.a);
  INSERT INTO log (a) VALUES (';');
END;
INSERT INTO t (a) VALUES ('x;y');
"""


def test_statements_keep_trigger_bodies_strings_and_comments_whole() -> None:
    found = list(statements(TRIGGER_SCRIPT))
    assert len(found) == 4
    assert found[0] == "CREATE TABLE t (a TEXT);"
    assert found[2].startswith("CREATE TRIGGER t_ai") and found[2].endswith("END;")
    assert found[3] == "INSERT INTO t (a) VALUES ('x;y');"
    assert list(statements("SELECT 1;;  ;\n")) == ["SELECT 1;"]
    assert list(statements("SELECT 1; SELECT 2")) == ["SELECT 1;", "SELECT 2"]


def test_run_script_stays_inside_the_open_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    run_script(conn, TRIGGER_SCRIPT)
    assert conn.in_transaction  # sqlite3's executescript would have committed
    assert conn.execute("SELECT a FROM log ORDER BY rowid").fetchall() == [("inserted; x;y",), (";",)]
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_the_log_script_splits_into_complete_statements() -> None:
    found = list(statements(TABLES))
    assert found and all(sqlite3.complete_statement(s) for s in found)
    assert "".join(found).replace(" ", "").replace("\n", "") == TABLES.replace(" ", "").replace("\n", "")


def test_the_catalog_schema_is_created_inside_the_callers_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    schema.create(conn)
    assert conn.in_transaction
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {*schema.TABLES, *schema.FTS_TABLES, "versions_fts_ai", "models_fts_ad"} <= names
    schema.drop(conn)
    assert not {*schema.TABLES, *schema.FTS_TABLES} & {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_recorder_connections_are_wal_with_recursive_triggers(tmp_path: Path) -> None:
    recorder = SQLiteRecorder(tmp_path / "registry.db")
    try:
        conn = recorder.connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] > 0
    finally:
        recorder.close()
