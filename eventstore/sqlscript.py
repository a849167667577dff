"""Run a multi-statement SQL script on a ``sqlite3`` connection, statement by statement.

``sqlite3.Connection.executescript`` COMMITs an open transaction first; the schema scripts run inside the
caller's ``BEGIN IMMEDIATE``, so they go one complete statement at a time (``sqlite3.complete_statement``
knows that the ``;`` inside a ``CREATE TRIGGER ... BEGIN ... END`` body, a string or a comment ends
nothing). ``run_script`` is what every open runs (the log's ``CREATE ... IF NOT EXISTS``); it replaced
``sqlite_utils.Database.executescript`` there because importing sqlite-utils (with numpy, click, dateutil and
pluggy behind it) was most of the cold start of every command — 0.58 s of ``python -X importtime`` on a
loaded machine. Creating a schema (a new registry, a catalog built or rebuilt) is rare and still goes
through sqlite-utils, the project's SQLite toolkit (``create_schema``), imported only then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator


def statements(script: str) -> Iterator[str]:
    """The complete statements of ``script``, in order (a trailing incomplete one last, as written)."""
    pieces = script.split(";")
    pending = ""
    for piece in pieces[:-1]:
        pending += piece
        if not pending.strip():
            pending = ""  # an empty statement (";;", or the script's last ";" followed by nothing)
            continue
        pending += ";"
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    rest = (pending + pieces[-1]).strip()
    if rest:
        yield rest


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute every statement of ``script`` inside the connection's open transaction (if any)."""
    cursor = conn.cursor()
    for statement in statements(script):
        cursor.execute(statement)


def create_schema(conn: sqlite3.Connection, script: str) -> None:
    """Create a schema inside the connection's open transaction, through sqlite-utils (imported only here:
    a new registry or a catalog (re)build, never a plain read)."""
    import sqlite_utils

    sqlite_utils.Database(conn).executescript(script)
