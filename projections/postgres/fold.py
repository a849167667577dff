"""Reading and writing the rows a page of events touches (``projections.projector.Fold``), in PostgreSQL:
a few ``= ANY(...)`` reads up front, then one ``executemany`` per table, all sent in one pipeline (so a
page costs a handful of round trips, whatever its length)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from projections.projector import CHECKPOINT, MODEL_FIELDS, VERSION_FIELDS, VERSION_LOADED, Changes

from .text import json_param, text_param

_JSON_MODEL = {"tags"}
_JSON_VERSION = {"params", "structure", "optimizer", "tags", "metrics", "artifact"}


def _placeholder(column: str, json_columns: set[str]) -> str:
    if column in json_columns:
        return "%s::jsonb"
    if column == "deleted":
        return "(%s <> 0)"  # the fold keeps flags as 0/1 (as its states do); the column is boolean
    return "%s"


_LOAD_MODELS = (f"SELECT {', '.join(MODEL_FIELDS)} FROM models WHERE name = ANY(%s::text[])")  # noqa: S608
_LOAD_VERSIONS = (f"SELECT {', '.join(VERSION_LOADED)} FROM versions"  # noqa: S608
                  " WHERE (name, version) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))")
_INSERT_MODEL = (f"INSERT INTO models ({', '.join(MODEL_FIELDS)})"  # noqa: S608
                 f" VALUES ({', '.join(_placeholder(c, _JSON_MODEL) for c in MODEL_FIELDS)})")
_UPDATE_MODEL = ("UPDATE models SET stream_version = %s, tags = %s::jsonb, deleted = (%s <> 0), latest = %s,"
                 " last_version = %s, updated_at = %s, version_count = %s, deleted_at = %s WHERE name = %s")
_INSERT_VERSION = (f"INSERT INTO versions ({', '.join(VERSION_FIELDS)})"  # noqa: S608
                   f" VALUES ({', '.join(_placeholder(c, _JSON_VERSION) for c in VERSION_FIELDS)})")
_UPDATE_VERSION = ("UPDATE versions SET status = %s, deleted = (%s <> 0), tags = %s::jsonb, metrics = %s::jsonb,"
                   " artifact = %s::jsonb, deleted_at = %s, requested_at = %s WHERE name = %s AND version = %s")
_STATEMENTS: tuple[tuple[str, str], ...] = (
    ("models_new", _INSERT_MODEL),
    ("models_changed", _UPDATE_MODEL),
    ("versions_new", _INSERT_VERSION),
    ("versions_changed", _UPDATE_VERSION),
    ("tags_removed", "DELETE FROM tags WHERE name = %s AND version = %s AND key = %s"),
    ("tags_set", "INSERT INTO tags (name, version, key, value) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (name, version, key) DO UPDATE SET value = EXCLUDED.value"),
    ("metrics_removed", "DELETE FROM metrics WHERE name = %s AND version = %s AND key = %s"),
    ("metrics_set", "INSERT INTO metrics (name, version, key, value) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (name, version, key) DO UPDATE SET value = EXCLUDED.value"),
    ("files_cleared", "DELETE FROM files WHERE name = %s AND version = %s"),
    ("files_cleared", "DELETE FROM blob_refs WHERE name = %s AND version = %s"),
    ("files", "INSERT INTO files (name, version, path, basename) VALUES (%s, %s, %s, %s)"),
    ("blob_refs", "INSERT INTO blob_refs (digest, name, version, size) VALUES (%s, %s, %s, %s)"),
    ("aliases_removed", "DELETE FROM aliases WHERE name = %s AND alias = %s"),
    ("aliases_set", "INSERT INTO aliases (name, alias, version) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name, alias) DO UPDATE SET version = EXCLUDED.version"),
    ("alias_history_cut", "DELETE FROM alias_history WHERE name = %s AND alias = %s AND seq > %s"),
    ("alias_history", "INSERT INTO alias_history (name, alias, seq, version) VALUES (%s, %s, %s, %s)"),
    ("model_states", "INSERT INTO model_states (name, position, state) VALUES (%s, %s, %s::jsonb)"),
    ("version_states", "INSERT INTO version_states (name, version, position, state) VALUES (%s, %s, %s, %s::jsonb)"),
    ("artifact_states", "INSERT INTO artifact_states (name, version, position, artifact)"
                        " VALUES (%s, %s, %s, %s::jsonb)"),
    ("model_words", "INSERT INTO model_search (name, words) VALUES (%s, array_to_tsvector(%s::text[]))"
                    " ON CONFLICT (name) DO UPDATE SET words = EXCLUDED.words"),
    ("version_words", "INSERT INTO version_search (name, version, words)"
                      " VALUES (%s, %s, array_to_tsvector(%s::text[]))"
                      " ON CONFLICT (name, version) DO UPDATE SET words = EXCLUDED.words"),
)
_CHECKPOINT = ("INSERT INTO projection_checkpoint (name, position) VALUES (%s, %s)"
               " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position")


def _clean(row: tuple) -> tuple:
    """A row's values as PostgreSQL can hold them (no NUL in text: ``projections.postgres.text``)."""
    return tuple(text_param(v) if isinstance(v, str) else v for v in row)


class FoldStore:
    """``projections.projector``'s access to the catalog tables on one psycopg connection (in its transaction)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def checkpoint(self) -> int:
        row = self.conn.execute("SELECT position FROM projection_checkpoint WHERE name = %s", (CHECKPOINT,)).fetchone()
        return row[0] if row else 0

    def load_models(self, names: Iterable[str]) -> list[list[Any]]:
        out = []
        for row in self.conn.execute(_LOAD_MODELS, (sorted(names),)):
            values = list(row)
            values[4] = int(values[4])  # deleted: 0/1 in the fold and its states, on every dialect
            out.append(values)
        return out

    def load_versions(self, keys: Iterable[tuple[str, int]]) -> list[list[Any]]:
        keys = sorted(keys)
        if not keys:
            return []
        out = []
        for row in self.conn.execute(_LOAD_VERSIONS, ([k[0] for k in keys], [k[1] for k in keys])):
            values = list(row)
            values[3] = int(values[3])
            out.append(values)
        return out

    def load_aliases(self, names: Iterable[str]) -> list[tuple[str, str, int]]:
        return self.conn.execute("SELECT name, alias, version FROM aliases WHERE name = ANY(%s::text[])",
                                 (sorted(names),)).fetchall()

    def load_alias_tops(self, stacks: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        keys = sorted(stacks)
        tops = dict.fromkeys(keys, 0)
        if keys:
            for name, alias, top in self.conn.execute(
                    "SELECT name, alias, max(seq) FROM alias_history WHERE (name, alias) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::text[])) GROUP BY name, alias",
                    ([k[0] for k in keys], [k[1] for k in keys])):
                tops[(name, alias)] = top
        return tops

    def live_versions(self, name: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT version FROM versions WHERE name = %s AND NOT deleted",
                                                (name,))]

    def alias_seq_of(self, name: str, alias: str, version: int, below: int | None) -> int | None:
        row = self.conn.execute(
            "SELECT max(seq) FROM alias_history WHERE name = %s AND alias = %s AND version = %s AND seq <= %s",
            (name, alias, version, below if below is not None else 2**63 - 1)).fetchone()
        return row[0]

    def write(self, changes: Changes) -> None:
        conn = self.conn
        with conn.pipeline(), conn.cursor() as cur:
            for name, statement in _STATEMENTS:
                rows = getattr(changes, name)
                if not rows:
                    continue
                if name in ("model_words", "version_words"):
                    rows = [(*key[:-1], [text_param(t) for t in key[-1]]) for key in rows]
                elif name in _JSON_AT:
                    rows = [_json_row(r, _JSON_AT[name]) for r in rows]
                cur.executemany(statement, [_clean(r) for r in rows])
            cur.execute(_CHECKPOINT, (CHECKPOINT, changes.position))


# Which parameters of each statement are JSON text (as ``Changes`` holds its rows).
_JSON_AT: dict[str, frozenset[int]] = {
    "models_new": frozenset({MODEL_FIELDS.index("tags")}),
    "models_changed": frozenset({1}),
    "versions_new": frozenset(VERSION_FIELDS.index(c) for c in _JSON_VERSION),
    "versions_changed": frozenset({2, 3, 4}),
    "model_states": frozenset({2}),
    "version_states": frozenset({3}),
    "artifact_states": frozenset({3}),
}


def _json_row(row: tuple, at: frozenset[int]) -> tuple:
    """JSON text holding ``\\u0000`` made storable in ``jsonb`` (``projections.postgres.text``)."""
    return tuple(json_param(v) if i in at and v is not None else v for i, v in enumerate(row))
