"""The reads a command's ``Target`` needs (``projections.prefetch``): SQLite's side.

On SQLite a read is a function call, not a round trip, so nothing is sent ahead: the statements run when the
command first asks (after the catch-up, under the write lock). What the prefetch saves here is reading the same
rows twice: the decision read its model and aliases, then the command's fold read the model, the aliases and
its versions again, and the catalog's checkpoint a second time: a register read the catalog 7 times before
its fold wrote (the checkpoint twice, model and aliases for the decision, aliases, model and versions for the
fold), 4 with the prefetch (checkpoint, model, aliases, the new version's number).

The rows come in the ``FoldStore``'s shapes (a test compares them): the model's tags parsed, the versions'
JSON columns as text until the fold asks for them (a register's fold asks for none, and its decision for no
version at all), since ``projections.rows`` parses text or parsed values alike.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from eventstore.state import Target
from projections.prefetch import PREFETCH_MODEL, PREFETCH_VERSION, Prefetched
from projections.projector import CHECKPOINT, VERSION_LOADED

_MODEL = f"SELECT {', '.join(PREFETCH_MODEL)} FROM models WHERE name = ?"  # noqa: S608 - names from constants
_TAGS = PREFETCH_MODEL.index("tags")
_LAST_VERSION = PREFETCH_MODEL.index("last_version")
_ALIASES = "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias"
_VERSION = f"SELECT {', '.join(PREFETCH_VERSION)} FROM versions WHERE name = ? AND version = ?"  # noqa: S608
_TOP = "SELECT max(seq) FROM alias_history WHERE name = ? AND alias = ?"
_CHECKPOINT = "SELECT position FROM projection_checkpoint WHERE name = ?"
# The fold's JSON columns of a loaded version that ``FoldStore.load_versions`` parses (the artifact stays text
# until the fold reads it: ``VersionRow.parsed_artifact``).
_LOADED_JSON = tuple(VERSION_LOADED.index(c) for c in ("tags", "metrics"))


class SQLitePrefetched(Prefetched):
    """``Prefetched`` that reads a version of its model when first asked for it (a read here costs no round
    trip, so nothing is guessed ahead: a tag or an alias move no longer reads the register's next number), and
    keeps the JSON columns of the rows as text until the fold loads them."""

    def __init__(self, conn: sqlite3.Connection, target: Target, **rows: Any) -> None:
        super().__init__(target, versions=list, **rows)
        self._conn = conn

    def _read(self, number: int) -> None:
        """Read version ``number`` of the target's model once, unless the model's row says it cannot exist: the
        fold creates a version only under its model's row and raises the model's ``last_version`` to it, and
        neither row is ever removed, so no model or a higher number means no version (a register's new number:
        one read of its command's seven saved)."""
        if number not in self._versions:
            model = self._model
            if model is None or number > model[_LAST_VERSION]:
                self._versions[number] = None
                return
            found = self._conn.execute(_VERSION, (self.target.name, number)).fetchone()
            self._versions[number] = None if found is None else tuple(found)

    def knows_version(self, name: str, number: int) -> bool:
        if name != self.target.name or type(number) is not int:
            return False
        self._take()
        self._read(number)
        return True

    def fold_versions(self, keys: set[tuple[str, int]]) -> list[list[Any]] | None:
        if keys and all(name == self.target.name for name, _ in keys):
            self._take()
            for _, number in keys:
                self._read(number)
        rows = super().fold_versions(keys)
        if rows:
            for values in rows:
                for i in _LOADED_JSON:
                    if isinstance(values[i], str):
                        values[i] = json.loads(values[i])
        return rows


def prefetch(conn: sqlite3.Connection, target: Target) -> Prefetched:
    """The reads for ``target`` on ``conn``, run when the command first asks for any of them.

    A version of the target's model is read when the decision or the fold first asks for it, once (its row or
    its absence: a register's new number has none, which the decision and the fold both use as an answer).
    Before, the one named by number or ``ref_alias`` and the next new one were read ahead, so a tag or an alias
    move read the next number for nothing; PostgreSQL's single statement resolves them for nothing too, but
    there that saves a round trip. Here one statement that resolved the numbers in SQL cost 17 µs in a
    register against 4–5 µs for each plain read it saved."""
    name = target.name
    got: dict[str, Any] = {}

    def model() -> list[tuple[Any, ...]]:
        if "model" not in got:
            row = conn.execute(_MODEL, (name,)).fetchone()
            if row is not None:
                values = list(row)
                values[_TAGS] = {} if values[_TAGS] == "{}" else json.loads(values[_TAGS])  # most models: none
                row = tuple(values)
            got["model"] = row
        return [] if got["model"] is None else [got["model"]]

    def aliases() -> list[tuple[Any, ...]]:
        if "aliases" not in got:
            got["aliases"] = conn.execute(_ALIASES, (name,)).fetchall()
        return got["aliases"]

    def top() -> list[tuple[Any, ...]]:
        return conn.execute(_TOP, (name, target.alias)).fetchall()

    return SQLitePrefetched(
        conn,
        target,
        model=model,
        aliases=aliases,
        top=top if target.alias is not None else None,
        checkpoint=lambda: conn.execute(_CHECKPOINT, (CHECKPOINT,)).fetchall(),
    )
