"""Reading and writing the rows a page of events touches (``projections.projector.Fold``), in SQLite:
a few ``IN (...)`` reads up front, then one ``executemany`` per table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from projections.projector import (
    CHECKPOINT,
    MODEL_FIELDS,
    MODEL_MUTABLE,
    VERSION_FIELDS,
    VERSION_LOADED,
    Changes,
)

_first = itemgetter(0)
_CHUNK = 400  # bound parameters per statement stay far below SQLite's limit (32,766; 999 before 3.32)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_LOAD_MODELS = f"SELECT {', '.join(MODEL_FIELDS)} FROM models WHERE name IN ({{}})"  # noqa: S608
# The keys drive the join (CROSS JOIN keeps them the outer loop): one primary-key probe per key. Written as
# ``WHERE (name, version) IN (VALUES ...)`` SQLite's planner probed ``versions_live`` on the name alone and
# read every version of the model: 366 µs per command for a model of 5,000 versions (3.2 µs this way), a
# cost that grew with the model's history for every register, tag or alias move.
_LOAD_VERSIONS = (f"SELECT {', '.join('v.' + c for c in VERSION_LOADED)} FROM (VALUES {{}}) AS k"  # noqa: S608
                  " CROSS JOIN versions AS v ON v.name = k.column1 AND v.version = k.column2")
_INSERT_MODEL = f"INSERT INTO models ({', '.join(MODEL_FIELDS)}) VALUES ({_marks(len(MODEL_FIELDS))})"  # noqa: S608
_UPDATE_MODEL = f"UPDATE models SET {', '.join(c + ' = ?' for c in MODEL_MUTABLE)} WHERE name = ?"  # noqa: S608
_INSERT_VERSION = (f"INSERT INTO versions ({', '.join(VERSION_FIELDS)}, words)"  # noqa: S608
                   f" VALUES ({_marks(len(VERSION_FIELDS) + 1)})")
_UPDATE_VERSION = ("UPDATE versions SET status = ?, deleted = ?, tags = ?, metrics = ?, artifact = ?, deleted_at = ?,"
                   " requested_at = ?, description = ? WHERE name = ? AND version = ?")
# A changed version whose status and deleted are as loaded (``Changes.versions_unindexed``): without them in
# its SET, SQLite leaves the entries of ``versions_live`` and ``versions_status`` alone (a tag or a metric
# wrote both index pages for nothing). The parameters are ``VersionRow.mutable()``'s after those two.
_UPDATE_VERSION_UNINDEXED = ("UPDATE versions SET tags = ?, metrics = ?, artifact = ?, deleted_at = ?,"
                             " requested_at = ?, description = ? WHERE name = ? AND version = ?")
_STATEMENTS: tuple[tuple[str, str], ...] = (
    # (the Changes field, its statement), in the order they run
    ("models_new", _INSERT_MODEL),
    ("models_changed", _UPDATE_MODEL),
    ("versions_new", _INSERT_VERSION),
    ("versions_changed", _UPDATE_VERSION),
    ("tags_removed", "DELETE FROM tags WHERE name = ? AND version = ? AND key = ?"),
    ("tags_set", "INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value"),
    ("metrics_removed", "DELETE FROM metrics WHERE name = ? AND version = ? AND key = ?"),
    ("metrics_set", "INSERT INTO metrics (name, version, key, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value"),
    ("files_cleared", "DELETE FROM files WHERE name = ? AND version = ?"),
    ("files_cleared", "DELETE FROM blob_refs WHERE name = ? AND version = ?"),
    ("files", "INSERT INTO files (name, version, path, basename) VALUES (?, ?, ?, ?)"),
    ("blob_refs", "INSERT INTO blob_refs (digest, name, version, size) VALUES (?, ?, ?, ?)"),
    ("aliases_removed", "DELETE FROM aliases WHERE name = ? AND alias = ?"),
    ("aliases_set", "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?)"
                    " ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version"),
    ("alias_history_cut", "DELETE FROM alias_history WHERE name = ? AND alias = ? AND seq > ?"),
    ("alias_history", "INSERT INTO alias_history (name, alias, seq, version) VALUES (?, ?, ?, ?)"),
    ("model_states", "INSERT INTO model_states (name, position, state) VALUES (?, ?, ?)"),
    ("version_states", "INSERT INTO version_states (name, version, position, state) VALUES (?, ?, ?, ?)"),
    ("artifact_states", "INSERT INTO artifact_states (name, version, position, artifact) VALUES (?, ?, ?, ?)"),
)
# A page's temporal states come in log order, interleaving its models; in key order each row lands next to
# the one before it in the b-tree (3 states tables: 0.11 s of CPU instead of 0.13 s in a 30,000-event rebuild).
_IN_KEY_ORDER = frozenset({"model_states", "version_states", "artifact_states"})
# Words written again only when they differ: a tag or a description whose tokens the entity has already (a
# value set again, a key whose words are there) left the row as it was but fired its FTS5 trigger (delete and
# insert the same tokens: the full-text index's pages and a segment to merge later, for nothing).
_MODEL_WORDS = ("INSERT INTO model_words (name, words) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET words = excluded.words WHERE words <> excluded.words")
# A new version's words go in with its row (``_INSERT_VERSION``); a stored version's only when they changed.
_VERSION_WORDS = "UPDATE versions SET words = ? WHERE name = ? AND version = ? AND words <> ?"


# The log's rows for a rebuild (the catalog lives in the log's file, and a rebuild holds its write lock).


def words_text(tokens: Iterable[str]) -> str:
    return " ".join([t.encode("utf-8").hex() for t in tokens])  # hex_token, inlined: a call per token


class FoldStore:
    """``projections.projector``'s access to the catalog tables on one SQLite connection (in its transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def checkpoint(self) -> int:
        row = self.conn.execute("SELECT position FROM projection_checkpoint WHERE name = ?", (CHECKPOINT,)).fetchone()
        return row[0] if row else 0

    def load_models(self, names: Iterable[str]) -> list[list[Any]]:
        out = []
        for chunk in _chunks(sorted(names)):
            for row in self.conn.execute(_LOAD_MODELS.format(_marks(len(chunk))), chunk):
                values = list(row)
                values[3] = json.loads(values[3])
                out.append(values)
        return out

    def load_versions(self, keys: Iterable[tuple[str, int]]) -> list[list[Any]]:
        out = []
        for chunk in _chunks(sorted(keys)):
            params = [x for key in chunk for x in key]
            for row in self.conn.execute(_LOAD_VERSIONS.format(", ".join(["(?, ?)"] * len(chunk))), params):
                values = list(row)
                values[5], values[6] = json.loads(values[5]), json.loads(values[6])  # the artifact: as text
                out.append(values)
        return out

    def load_aliases(self, names: Iterable[str]) -> list[tuple[str, str, int]]:
        out = []
        for chunk in _chunks(sorted(names)):
            out += self.conn.execute(f"SELECT name, alias, version FROM aliases WHERE name IN ({_marks(len(chunk))})",  # noqa: S608
                                     chunk).fetchall()
        return out

    def load_alias_tops(self, stacks: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        keys = sorted(stacks)
        tops = dict.fromkeys(keys, 0)
        for chunk in _chunks(keys):
            params = [x for key in chunk for x in key]
            for name, alias, top in self.conn.execute(
                    "SELECT name, alias, max(seq) FROM alias_history WHERE (name, alias) IN"  # noqa: S608
                    f" (VALUES {', '.join(['(?, ?)'] * len(chunk))}) GROUP BY name, alias", params):
                tops[(name, alias)] = top
        return tops

    def live_versions(self, name: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT version FROM versions WHERE name = ? AND deleted = 0",
                                                (name,))]

    def alias_seq_of(self, name: str, alias: str, version: int, below: int | None) -> int | None:
        """The newest entry of the stack for ``version`` (at or below ``below``, if given)."""
        row = self.conn.execute(
            "SELECT max(seq) FROM alias_history WHERE name = ? AND alias = ? AND version = ? AND seq <= ?",
            (name, alias, version, below if below is not None else 2**63 - 1)).fetchone()
        return row[0]

    def write(self, changes: Changes) -> None:
        conn = self.conn
        words = {(name, number): words_text(t) for name, number, t in changes.version_words}
        for name, statement in _STATEMENTS:
            rows = getattr(changes, name)
            if rows:
                if name == "versions_new":
                    rows = [(*row, words.pop((row[0], row[1]), "")) for row in rows]
                elif name == "model_states":
                    # (name, position) order: the states come in position order, so a stable sort on the name
                    # alone gives it, comparing strings rather than tuples (2.2 % of a rebuild's samples)
                    rows = sorted(rows, key=_first)
                elif name in _IN_KEY_ORDER:
                    rows = sorted(rows)
                elif name == "versions_changed" and changes.versions_unindexed:
                    unindexed = changes.versions_unindexed
                    conn.executemany(_UPDATE_VERSION_UNINDEXED, [r[2:] for r in rows if r[-2:] in unindexed])
                    rows = [r for r in rows if r[-2:] not in unindexed]
                    if not rows:
                        continue
                conn.executemany(statement, rows)
        if changes.model_words:
            conn.executemany(_MODEL_WORDS, [(name, words_text(t)) for name, t in changes.model_words])
        if words:
            conn.executemany(_VERSION_WORDS, [(text, name, number, text) for (name, number), text in words.items()])
        conn.execute("INSERT INTO projection_checkpoint (name, position) VALUES (?, ?)"
                     " ON CONFLICT (name) DO UPDATE SET position = excluded.position", (CHECKPOINT, changes.position))
