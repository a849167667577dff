"""The current catalog: keeping it in step with the log, and answering queries from it.

``CatalogProjection`` is the read model the command handler drives (catch up, view, apply).
``Catalog`` answers the questions people ask: one version by reference, a model with its versions, and
searches by keyword (FTS5 over names, descriptions and tags), tags, artifact file name and alias.
Every read first catches up with the log, so a command that returned is always visible (and a crash
between an append and its projection heals on the next read).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventstore.canonical import canonical_json
from eventstore.decider import resolve
from eventstore.errors import NotFoundError, StoreError, ValidationError
from eventstore.events import StoredEvent
from eventstore.names import parse_ref, validate_alias, validate_name, validate_tags
from eventstore.recorder import Transaction
from eventstore.sqlite import SQLiteRecorder

from . import schema
from .past import PastCatalog
from .projector import apply_events, checkpoint
from .records import ModelRecord, VersionRecord
from .rows import (
    MODEL_COLUMNS,
    VERSION_COLUMNS,
    SQLiteStateView,
    aliases_of,
    model_record,
    sorted_aliases,
    version_record,
)

PAGE = 5_000


class CatalogProjection:
    """The catalog as a read model of the log (see ``eventstore.handler.ReadModel``)."""

    def __init__(self, recorder: SQLiteRecorder) -> None:
        self.recorder = recorder
        with recorder.write() as tx:
            # A catalog built by another shape of this code is simply rebuilt from the log.
            if schema.stored_version(tx.connection) != schema.VERSION:
                schema.drop(tx.connection)
                schema.create(tx.connection)
        self.ensure_current()

    def catch_up(self, tx: Transaction, limit: int | None = None) -> int:
        """Fold the events after the checkpoint (at most ``limit`` of them) into the catalog."""
        conn = tx.connection
        position = checkpoint(conn)
        head = tx.head() if limit is None else min(tx.head(), position + limit)
        while position < head:
            page = list(tx.read(since=position, limit=min(PAGE, head - position)))
            if not page:
                break
            position = apply_events(conn, page, start=position)
        return position

    def apply(self, tx: Transaction, events: list[StoredEvent]) -> None:
        apply_events(tx.connection, events)

    def version_record(self, tx: Transaction, name: str, number: int) -> VersionRecord:
        """One version as the catalog holds it inside ``tx`` (after ``apply``: the command's own result)."""
        return _version_record(tx.connection, name, number)

    def view(self, tx: Transaction) -> SQLiteStateView:
        return SQLiteStateView(tx.connection)

    def lag(self) -> int:
        conn = self.recorder.connection()
        return self.recorder.head() - checkpoint(conn)

    def ensure_current(self) -> None:
        """Apply whatever the log holds beyond the checkpoint (cheap when there is nothing to do). A long
        lag (a bulk import) is folded in one commit per page, so other writers never wait for all of it."""
        folded = -1
        while self.lag() > 0:
            with self.recorder.write() as tx:
                position = self.catch_up(tx, limit=PAGE)
            if position == folded:
                raise StoreError(f"the catalog cannot follow the log after #{position}")
            folded = position

    def rebuild(self) -> int:
        """Drop every catalog table and replay the whole log, atomically; returns the events applied."""
        with self.recorder.write() as tx:
            schema.drop(tx.connection)
            schema.create(tx.connection)
            return self.catch_up(tx)


def _version_record(conn: sqlite3.Connection, name: str, number: int) -> VersionRecord:
    row = conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?",  # noqa: S608
                       (name, number)).fetchone()
    if row is None:
        raise NotFoundError(f"model {name!r} has no version {number}")
    return version_record(row, aliases_of(conn, name))


def fts_query(words: str) -> str:
    """User words → an FTS5 query that cannot be misread as FTS syntax: every word quoted, prefix-matched,
    all of them required."""
    if "\x00" in words:  # SQLite ends a string at NUL ("unterminated string"): refuse it as input here too
        raise ValidationError("the search words contain a NUL character")
    tokens = [w for w in words.replace('"', " ").split() if w]
    if not tokens:
        raise ValidationError("--search needs at least one word")
    return " ".join('"' + t + '"*' for t in tokens)


def catalog_digest_rows(conn: sqlite3.Connection) -> Iterator[str]:
    """Every catalog row in a canonical order, for comparing two catalogs (audit, rebuild tests)."""
    yield from (canonical_json(list(r)) for r in conn.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY name"))  # noqa: S608
    yield from (canonical_json(list(r)) for r in conn.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions ORDER BY name, version"))  # noqa: S608
    for table, order in (("aliases", "name, alias"), ("alias_history", "name, alias, seq"),
                         ("tags", "name, version, key"), ("metrics", "name, version, key"),
                         ("files", "name, version, path"), ("blob_refs", "digest, name, version"),
                         ("model_states", "name, position"), ("version_states", "name, version, position"),
                         ("artifact_states", "name, version, position")):
        yield from (canonical_json([table, *r]) for r in conn.execute(
            f"SELECT * FROM {table} ORDER BY {order}"))  # noqa: S608 - fixed table names


class Catalog:
    """Read-only queries over the current catalog."""

    def __init__(self, projection: CatalogProjection) -> None:
        self.projection = projection
        self.recorder = projection.recorder

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self.projection.ensure_current()
        with self.recorder.read_snapshot() as conn:
            yield conn

    def at(self, position: int) -> PastCatalog:
        """The catalog right after the event at ``position``."""
        return PastCatalog(self._read, position)

    # -- single things -----------------------------------------------------------------------------
    def get(self, ref: str) -> VersionRecord:
        """One version: ``NAME``, ``NAME@7`` or ``NAME@alias``. An explicit number also finds a deleted one."""
        parsed = parse_ref(ref)
        with self._read() as conn:
            view = SQLiteStateView(conn)
            _, state = resolve(view, parsed, allow_deleted=parsed.version is not None)
            return _version_record(conn, parsed.name, state.version)

    def model(self, name: str, *, versions: bool = True, include_deleted: bool = True) -> ModelRecord:
        validate_name(name)
        with self._read() as conn:
            row = conn.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()  # noqa: S608
            if row is None:
                raise NotFoundError(f"no model named {name!r}")
            aliases = aliases_of(conn, name)
            sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?"  # noqa: S608
            if not include_deleted:
                sql += " AND deleted = 0"
            records = None
            if versions:
                records = tuple(version_record(r, aliases) for r in conn.execute(sql + " ORDER BY version", (name,)))
            return model_record(row, aliases, records)

    def exists(self, name: str) -> bool:
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None

    # -- searches ----------------------------------------------------------------------------------
    def list(
        self,
        *,
        search: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[ModelRecord]:
        """Models matching every filter given. A filter is met by the model itself or by any of its live
        versions (a tag on version 3 makes the model match)."""
        where: list[str] = []
        params: list[Any] = []
        if not include_deleted:
            where.append("m.deleted = 0")
        if search is not None:
            q = fts_query(search)
            where.append(
                "(m.id IN (SELECT rowid FROM models_fts WHERE models_fts MATCH ?)"
                " OR m.name IN (SELECT v.name FROM versions_fts f JOIN versions v ON v.id = f.rowid"
                " WHERE versions_fts MATCH ? AND v.deleted = 0))"
            )
            params += [q, q]
        for key, value in validate_tags(dict(tags or {})).items():
            where.append(
                "EXISTS (SELECT 1 FROM tags t LEFT JOIN versions v ON v.name = t.name AND v.version = t.version"
                " WHERE t.name = m.name AND t.key = ? AND t.value = ? AND (t.version = 0 OR v.deleted = 0))"
            )
            params += [key, value]
        if file is not None:
            where.append(
                "EXISTS (SELECT 1 FROM files f JOIN versions v ON v.name = f.name AND v.version = f.version"
                " WHERE f.name = m.name AND (f.basename = ? OR f.path = ?) AND v.deleted = 0)"
            )
            params += [file, file]
        if alias is not None:
            where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = m.name AND a.alias = ?)")
            params.append(validate_alias(alias))
        # A model's aliases come with its row (one query for the whole listing).
        sql = (f"SELECT {', '.join('m.' + c.strip() for c in MODEL_COLUMNS.split(','))},"  # noqa: S608
               " (SELECT json_group_object(alias, version) FROM aliases a WHERE a.name = m.name) FROM models m")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.name"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read() as conn:
            return [model_record(row, sorted_aliases(row[-1])) for row in conn.execute(sql, params).fetchall()]

    def search(
        self,
        *,
        keyword: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        limit: int | None = None,
    ) -> list[VersionRecord]:
        """Live versions of live models matching every filter (a model's own tags count for its versions)."""
        where = ["v.deleted = 0", "m.deleted = 0"]
        params: list[Any] = []
        if name is not None:
            where.append("v.name = ?")
            params.append(validate_name(name))
        if keyword is not None:
            q = fts_query(keyword)
            where.append(
                "(v.id IN (SELECT rowid FROM versions_fts WHERE versions_fts MATCH ?)"
                " OR m.id IN (SELECT rowid FROM models_fts WHERE models_fts MATCH ?))"
            )
            params += [q, q]
        for key, value in validate_tags(dict(tags or {})).items():
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                " AND t.key = ? AND t.value = ?)"
            )
            params += [key, value]
        if file is not None:
            where.append(
                "EXISTS (SELECT 1 FROM files f WHERE f.name = v.name AND f.version = v.version"
                " AND (f.basename = ? OR f.path = ?))"
            )
            params += [file, file]
        if alias is not None:
            where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = v.name AND a.version = v.version"
                         " AND a.alias = ?)")
            params.append(validate_alias(alias))
        cols = ", ".join("v." + c.strip() for c in VERSION_COLUMNS.split(","))
        sql = (f"SELECT {cols} FROM versions v JOIN models m ON m.name = v.name"  # noqa: S608
               f" WHERE {' AND '.join(where)} ORDER BY v.name, v.version")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
            alias_cache: dict[str, dict[str, int]] = {}
            out = []
            for row in rows:
                if row[0] not in alias_cache:
                    alias_cache[row[0]] = aliases_of(conn, row[0])
                out.append(version_record(row, alias_cache[row[0]]))
            return out

    def best(self, name: str, metric: str, *, minimize: bool = False,
             tags: Mapping[str, str] | None = None) -> VersionRecord:
        """The live version with the highest (or lowest) value of ``metric``; ties go to the newest."""
        validate_name(name)
        order = "ASC" if minimize else "DESC"
        where = ["mt.name = ?", "mt.key = ?", "v.deleted = 0"]
        params: list[Any] = [name, metric]
        for key, value in validate_tags(dict(tags or {})).items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version IN (0, v.version)"
                         " AND t.key = ? AND t.value = ?)")
            params += [key, value]
        sql = (f"SELECT v.version FROM metrics mt JOIN versions v ON v.name = mt.name AND v.version = mt.version"  # noqa: S608
               f" WHERE {' AND '.join(where)} ORDER BY mt.value {order}, v.version DESC LIMIT 1")
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
                raise NotFoundError(f"no model named {name!r}")
            row = conn.execute(sql, params).fetchone()
            if row is None:
                raise NotFoundError(f"no live version of {name!r} has the metric {metric!r}")
            return _version_record(conn, name, row[0])

    def request_position(self, name: str, number: int) -> int:
        """The log position of the latest event asking for this version's artifact."""
        with self._read() as conn:
            row = conn.execute("SELECT requested_at FROM versions WHERE name = ? AND version = ?",
                               (name, number)).fetchone()
        if row is None:
            raise NotFoundError(f"model {name!r} has no version {number}")
        return row[0]

    def pending_positions(self, older_than: float = 0.0, limit: int = 10_000) -> list[int]:
        """Log positions of the versions whose artifact outcome is still missing, oldest first — what the
        sweep re-drives. ``older_than`` (seconds) leaves just-created versions to their own message."""
        from datetime import UTC, datetime, timedelta

        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._read() as conn:
            return [r[0] for r in conn.execute(
                "SELECT requested_at FROM versions WHERE status = 'pending' AND created_at <= ?"
                " ORDER BY requested_at LIMIT ?", (cutoff, limit))]

    def digest(self) -> str:
        """SHA-256 over every catalog row in canonical order: equal digests, equal catalogs."""
        import hashlib

        h = hashlib.sha256()
        with self._read() as conn:
            for line in catalog_digest_rows(conn):
                h.update(line.encode("utf-8"))
                h.update(b"\n")
        return h.hexdigest()
