"""Rows of the catalog tables → the decider's state and the catalog's records (one mapping, used by both)."""

from __future__ import annotations

import json
from typing import Any

from eventstore.state import ModelState, VersionState

from .records import ModelRecord, VersionRecord

MODEL_COLUMNS = ("name, stream_version, description, tags, deleted, latest, last_version, created_at, created_by,"
                 " updated_at, version_count")
VERSION_COLUMNS = (
    "name, version, parent, status, deleted, description, params, structure, optimizer, tags, metrics, artifact,"
    " created_at, created_by, position"
)


# The decoder's C scanner, called directly: ``json.loads`` wraps the same scanner in two Python calls, a
# regular expression for leading whitespace and another for trailing text, which for the short texts of a
# catalog row cost more than the parse. A version row holds six JSON columns; over a search of 100 versions
# (the MLflow search of scripts/bench_peers.py --only mlflowclient) their decoding took 0.75 of the 1.4 ms of
# CPU the catalog spent turning rows into records (in-process, medians of 200); see docs/performance.md.
_SCAN = json.JSONDecoder().scan_once


def obj(value: Any) -> Any:
    """A JSON column as stored (text) or as nested in a state (already parsed): parse it once either way."""
    if not isinstance(value, str):
        return value
    if value == "{}":  # most columns of most versions (no params, structure, optimizer or metrics)
        return {}
    try:
        parsed, end = _SCAN(value, 0)
    except StopIteration:
        return json.loads(value)  # not JSON from its first character: json.loads reads it, or says why not
    # Text after the value (whitespace, or more than one value): as json.loads would (same value, same error).
    return parsed if end == len(value) else json.loads(value)


# The artifact record's fields the read side (records, listings, human output, diff, restore) relies on, with
# their types. The import check (``eventstore.schemas``) keeps any other type out of the log; a log written
# before that check may still hold one, and a read must not fail on it.
_ARTIFACT_TYPES: dict[str, type | tuple[type, ...]] = {
    "source": str, "digest": str, "size": int, "kind": str, "format": str, "unsafe": bool, "detail": str,
    "error": str, "structure": dict, "files": list, "imports": list,
}


def _file_ok(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("path"), str)


def _plain(art: dict[str, Any]) -> bool:
    """Every field of ``_ARTIFACT_TYPES`` present holds exactly its type (as ``json`` makes them) and every
    ``files`` entry has a text path: the record as the log holds it, nothing to leave out. One pass over the
    record's own keys (100 records: 0.153 → 0.108 ms, in-process, medians of 200); the general check below
    decides every other case."""
    for key, value in art.items():
        kind = _ARTIFACT_TYPES.get(key)
        if kind is not None and value is not None and type(value) is not kind:
            return False
    files, imports = art.get("files"), art.get("imports")
    if files and not all(type(f) is dict and type(f.get("path")) is str for f in files):
        return False
    return not imports or all(type(i) is str for i in imports)


def artifact_record(value: Any) -> dict[str, Any]:
    """A version's artifact record (JSON text or parsed) as the read side may use it: a field of the wrong
    type is left out (the log keeps it as written), ``files`` keeps only entries with a text ``path``."""
    art = obj(value)
    if not isinstance(art, dict):
        return {}
    if _plain(art):
        return art
    odd = [k for k, kind in _ARTIFACT_TYPES.items()
           if art.get(k) is not None and (not isinstance(art[k], kind) or (kind is int and isinstance(art[k], bool)))]
    files, imports = art.get("files"), art.get("imports")
    bad_files = isinstance(files, list) and not all(_file_ok(f) for f in files)
    bad_imports = isinstance(imports, list) and not all(isinstance(i, str) for i in imports)
    if not (odd or bad_files or bad_imports):
        return art
    art = {k: v for k, v in art.items() if k not in odd}
    if bad_files:
        art["files"] = [f for f in files if _file_ok(f)]
    if bad_imports:
        art["imports"] = [i for i in imports if isinstance(i, str)]
    return art


def model_state(row: tuple[Any, ...], aliases: dict[str, int]) -> ModelState:
    return ModelState(
        name=row[0], stream_version=row[1], description=row[2], tags=obj(row[3]), deleted=bool(row[4]),
        latest=row[5], last_version=row[6], aliases=aliases,
    )


def version_state(row: tuple[Any, ...]) -> VersionState:
    return VersionState(
        name=row[0], version=row[1], parent=row[2], status=row[3], deleted=bool(row[4]), description=row[5],
        params=obj(row[6]), structure=obj(row[7]), optimizer=obj(row[8]),
        tags=obj(row[9]), metrics=obj(row[10]), artifact=artifact_record(row[11]),
    )


def version_record(row: tuple[Any, ...], aliases: dict[str, int], state: str | None = None,
                   artifact_state: str | None = None) -> VersionRecord:
    """``state`` / ``artifact_state``: the ``version_states`` / ``artifact_states`` entries (JSON) overriding
    the mutable fields — a past version (a version has both from the event that created it on)."""
    status, deleted, tags, metrics, artifact, description = row[3], row[4], row[9], row[10], row[11], row[5]
    if state is not None:
        # Entries written before descriptions could change (``Described``) have four fields.
        status, deleted, tags, metrics, *rest = obj(state)
        if rest:
            description = rest[0]
    if artifact_state is not None:
        artifact = artifact_state
    mine = tuple(sorted(a for a, n in aliases.items() if n == row[1]))
    artifact = artifact_record(artifact)
    structure = obj(row[7]) or artifact.get("structure") or {}
    return VersionRecord(
        name=row[0], version=row[1], parent=row[2], status=status, deleted=bool(deleted), description=description,
        params=obj(row[6]), structure=structure, optimizer=obj(row[8]),
        tags=obj(tags), aliases=mine, metrics=obj(metrics), artifact=artifact,
        created_at=row[12], created_by=row[13], position=row[14],
    )


def sorted_aliases(value: Any) -> dict[str, int]:
    """A model's aliases aggregated by SQL (JSON text, parsed JSON or NULL), in alias order like ``aliases_of``."""
    aliases = obj(value) or {}
    return dict(sorted(aliases.items())) if len(aliases) > 1 else aliases


def model_row_at(name: str, state: str) -> tuple[tuple[Any, ...], dict[str, int]]:
    """A ``model_states`` entry → (a row shaped like MODEL_COLUMNS, the aliases then)."""
    values = list(obj(state))
    aliases = values.pop()
    return (name, *values), sorted_aliases(aliases)


def model_record(row: tuple[Any, ...], aliases: dict[str, int],
                 versions: tuple[VersionRecord, ...] | None = None) -> ModelRecord:
    return ModelRecord(
        name=row[0], description=row[2], tags=obj(row[3]), deleted=bool(row[4]), latest=row[5],
        aliases=aliases, created_at=row[7], created_by=row[8], updated_at=row[9], version_count=row[10],
        versions=versions,
    )


class CatalogStateView:
    """The decider's ``StateView`` over the decision tables (models, versions, aliases, alias history), read
    on ``conn`` — inside the write transaction — through its dialect module."""

    def __init__(self, conn: Any, prefetched: Any = None) -> None:
        from .dialects import dialect_of

        self.conn = conn
        self.sql = dialect_of(conn)
        # ``projections.prefetch.Prefetched``: the rows of the command's target, read in one round trip
        self.prefetched = prefetched

    def model(self, name: str) -> ModelState | None:
        pre = self.prefetched
        if pre is not None and pre.knows_model(name):
            row = pre.model_row(name)
            return None if row is None else model_state(row, pre.aliases(name))
        row = self.sql.model_row(self.conn, name)
        return None if row is None else model_state(row, self.sql.aliases_of(self.conn, name))

    def version(self, name: str, number: int) -> VersionState | None:
        pre = self.prefetched
        if pre is not None and pre.knows_version(name, number):
            row = pre.version_row(name, number)
        else:
            row = self.sql.version_row(self.conn, name, number)
        return version_state(row) if row else None

    def alias_history(self, name: str, alias: str) -> list[int]:
        return self.sql.alias_history(self.conn, name, alias)

    def purged_live_versions(self, name: str) -> list[VersionState]:
        return [version_state(r) for r in self.sql.purged_live_versions(self.conn, name)]


# The name tools and tests have used (the view is no longer SQLite's own).
SQLiteStateView = CatalogStateView


def aliases_of(conn: Any, name: str) -> dict[str, int]:
    """A model's aliases, by alias, on a bare connection of any dialect."""
    from .dialects import dialect_of

    return dialect_of(conn).aliases_of(conn, name)
