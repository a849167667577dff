"""The catalog projector: folds events into the catalog tables.

``apply`` runs inside the caller's write transaction and moves the checkpoint in the same transaction as
the rows, so a crash can neither apply an event twice nor skip one. Each event touches a handful of rows
by primary key: the cost of applying an event does not depend on how long the model's history is.

The fold is total for every event ``eventstore.schemas`` accepts (what ``append_batch`` lets in, and what the
decider is held to): an event about a model or version the catalog does not have (possible only for imported
events, which are checked for their shape but not against history) changes nothing, the same way on every
replay; an alias may point at a deleted version, a version may be ready without bytes — odd, but every read
and command copes. So no imported event can stop the catalog from following the log. An event outside those
shapes (appended around the check) stops it with a ``StoreError`` naming the event's position.
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from eventstore.canonical import canonical_json
from eventstore.errors import StoreError
from eventstore.events import VERSION_CREATING, StoredEvent

CHECKPOINT = "catalog"


def checkpoint(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT position FROM projection_checkpoint WHERE name = ?", (CHECKPOINT,)).fetchone()
    return row[0] if row else 0


def _set_checkpoint(conn: sqlite3.Connection, position: int) -> None:
    conn.execute(
        "INSERT INTO projection_checkpoint (name, position) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        (CHECKPOINT, position),
    )


def tag_text(tags: dict[str, str]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(tags.items()))


def _actor(event: StoredEvent) -> str:
    return str(event.meta.get("actor", ""))


def _load(conn: sqlite3.Connection, sql: str, params: tuple) -> dict[str, Any] | None:
    row = conn.execute(sql, params).fetchone()
    return json.loads(row[0]) if row is not None else None


def _refresh_latest(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        "UPDATE models SET latest = (SELECT max(version) FROM versions WHERE name = ? AND deleted = 0)"
        " WHERE name = ?",
        (name, name),
    )


def _write_files(conn: sqlite3.Connection, name: str, version: int, artifact: dict[str, Any]) -> None:
    conn.execute("DELETE FROM files WHERE name = ? AND version = ?", (name, version))
    conn.execute("DELETE FROM blob_refs WHERE name = ? AND version = ?", (name, version))
    files = [f for f in artifact.get("files") or () if isinstance(f, dict) and isinstance(f.get("path"), str)]
    conn.executemany("INSERT OR IGNORE INTO files (name, version, path, basename) VALUES (?, ?, ?, ?)",
                     [(name, version, f["path"], posixpath.basename(f["path"])) for f in files])
    if not artifact.get("digest"):
        return
    refs = {artifact["digest"]: artifact.get("size") if artifact.get("kind") != "directory" else None}
    for f in files:
        if f.get("digest"):
            refs[f["digest"]] = f.get("size")
    conn.executemany("INSERT OR IGNORE INTO blob_refs (digest, name, version, size) VALUES (?, ?, ?, ?)",
                     [(d, name, version, size) for d, size in refs.items()])


def _write_tags(conn: sqlite3.Connection, name: str, version: int, tags: dict[str, str]) -> None:
    conn.execute("DELETE FROM tags WHERE name = ? AND version = ?", (name, version))
    conn.executemany("INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?)",
                     [(name, version, k, v) for k, v in tags.items()])


def on_model_registered(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    tags = d.get("tags") or {}
    cur = conn.execute(
        "INSERT OR IGNORE INTO models (name, stream_version, description, tags, tag_text, deleted, latest,"
        " last_version, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, 0, NULL, 0, ?, ?, ?)",
        (d["name"], e.version, d.get("description", ""), canonical_json(tags), tag_text(tags), e.recorded_at,
         _actor(e), e.recorded_at),
    )
    if cur.rowcount:
        _write_tags(conn, d["name"], 0, tags)


def on_version_created(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    name, number = d["name"], d["version"]
    tags = d.get("tags") or {}
    artifact = d.get("artifact") or {}
    if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
        return  # a version of a model the log never registered
    cur = conn.execute(
        "INSERT OR IGNORE INTO versions (name, version, parent, status, deleted, description, params, structure,"
        " optimizer,"
        " tags, tag_text, metrics, artifact, created_at, created_by, position, requested_at)"
        " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?)",
        (name, number, d.get("parent"), d.get("status", "pending"), d.get("description", ""),
         canonical_json(d.get("params") or {}), canonical_json(d.get("structure") or {}),
         canonical_json(d.get("optimizer") or {}), canonical_json(tags), tag_text(tags), canonical_json(artifact),
         e.recorded_at, _actor(e), e.position, e.position),
    )
    if not cur.rowcount:
        return  # that version number exists already: the first one stands
    _write_tags(conn, name, number, tags)
    _write_files(conn, name, number, artifact)
    conn.execute(
        "UPDATE models SET last_version = max(last_version, ?), latest = max(coalesce(latest, 0), ?),"
        " version_count = version_count + 1 WHERE name = ?",
        (number, number, name),
    )


_STORED_KEYS = ("digest", "size", "kind", "format", "files", "file_count", "unsafe", "imports", "detail")  # + structure


def on_artifact_stored(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    artifact = _load(conn, "SELECT artifact FROM versions WHERE name = ? AND version = ?", (d["name"], d["version"]))
    if artifact is None:
        return
    artifact.pop("error", None)
    artifact.update({k: d[k] for k in _STORED_KEYS if k in d})
    # What the file's header says (e.g. safetensors tensors) stays in the artifact record: a version's own
    # content never changes after it is created; records show it as the structure when none was given.
    if isinstance(d.get("structure"), dict):
        artifact["structure"] = d["structure"]
    conn.execute("UPDATE versions SET status = 'ready', artifact = ? WHERE name = ? AND version = ?",
                 (canonical_json(artifact), d["name"], d["version"]))
    _write_files(conn, d["name"], d["version"], artifact)


def on_artifact_failed(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    artifact = _load(conn, "SELECT artifact FROM versions WHERE name = ? AND version = ?", (d["name"], d["version"]))
    if artifact is None:
        return
    artifact["error"] = d.get("reason", "")
    conn.execute("UPDATE versions SET status = 'failed', artifact = ? WHERE name = ? AND version = ?",
                 (canonical_json(artifact), d["name"], d["version"]))


def on_artifact_purged(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    conn.execute("UPDATE versions SET status = 'purged' WHERE name = ? AND version = ?", (d["name"], d["version"]))


def on_artifact_requested(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    conn.execute("UPDATE versions SET status = 'pending', requested_at = ? WHERE name = ? AND version = ?",
                 (e.position, d["name"], d["version"]))


def on_metrics(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    metrics = _load(conn, "SELECT metrics FROM versions WHERE name = ? AND version = ?", (d["name"], d["version"]))
    if metrics is None:
        return
    if d.get("replace"):
        # A restore puts back exactly the metrics a version had.
        metrics = {}
        conn.execute("DELETE FROM metrics WHERE name = ? AND version = ?", (d["name"], d["version"]))
    metrics.update(d["metrics"])
    conn.execute("UPDATE versions SET metrics = ? WHERE name = ? AND version = ?",
                 (canonical_json(metrics), d["name"], d["version"]))
    conn.executemany(
        "INSERT INTO metrics (name, version, key, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
        [(d["name"], d["version"], k, v) for k, v in d["metrics"].items()],
    )


def _change_tags(conn: sqlite3.Connection, e: StoredEvent, set_: dict[str, str], remove: list[str]) -> None:
    """Apply a tag change to the JSON column (and so the search index) and, key by key, to ``tags``."""
    d = e.data
    number = d.get("version")
    if number is None:
        tags = _load(conn, "SELECT tags FROM models WHERE name = ?", (d["name"],))
    else:
        tags = _load(conn, "SELECT tags FROM versions WHERE name = ? AND version = ?", (d["name"], number))
    if tags is None:
        return
    tags.update(set_)
    for key in remove:
        tags.pop(key, None)
    if number is None:
        conn.execute("UPDATE models SET tags = ?, tag_text = ? WHERE name = ?",
                     (canonical_json(tags), tag_text(tags), d["name"]))
    else:
        conn.execute("UPDATE versions SET tags = ?, tag_text = ? WHERE name = ? AND version = ?",
                     (canonical_json(tags), tag_text(tags), d["name"], number))
    row = number or 0
    conn.executemany("INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                     [(d["name"], row, k, v) for k, v in set_.items()])
    conn.executemany("DELETE FROM tags WHERE name = ? AND version = ? AND key = ?",
                     [(d["name"], row, k) for k in remove])


def on_tagged(conn: sqlite3.Connection, e: StoredEvent) -> None:
    _change_tags(conn, e, e.data["tags"], [])


def on_untagged(conn: sqlite3.Connection, e: StoredEvent) -> None:
    _change_tags(conn, e, {}, e.data["keys"])


def on_alias_assigned(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    name, alias, number = d["name"], d["alias"], d["version"]
    if conn.execute("SELECT 1 FROM versions WHERE name = ? AND version = ?", (name, number)).fetchone() is None:
        return  # an alias can only point at a version the catalog has
    conn.execute(
        "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?)"
        " ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
        (name, alias, number),
    )
    if d.get("rollback"):
        # A rollback pops the stack down to the newest entry for the version it went back to.
        conn.execute(
            "DELETE FROM alias_history WHERE name = ? AND alias = ? AND seq > coalesce("
            "(SELECT max(seq) FROM alias_history WHERE name = ? AND alias = ? AND version = ?), -1)",
            (name, alias, name, alias, number),
        )
        if conn.execute("SELECT 1 FROM alias_history WHERE name = ? AND alias = ? LIMIT 1", (name, alias)).fetchone():
            return
    conn.execute(
        "INSERT INTO alias_history (name, alias, seq, version) VALUES (?, ?,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM alias_history WHERE name = ? AND alias = ?), ?)",
        (name, alias, name, alias, number),
    )


def on_alias_removed(conn: sqlite3.Connection, e: StoredEvent) -> None:
    conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (e.data["name"], e.data["alias"]))


def on_version_deleted(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    conn.execute("UPDATE versions SET deleted = 1, deleted_at = ? WHERE name = ? AND version = ?",
                 (e.recorded_at, d["name"], d["version"]))
    _refresh_latest(conn, d["name"])


def on_version_restored(conn: sqlite3.Connection, e: StoredEvent) -> None:
    d = e.data
    conn.execute("UPDATE versions SET deleted = 0, deleted_at = NULL WHERE name = ? AND version = ?",
                 (d["name"], d["version"]))
    _refresh_latest(conn, d["name"])


def on_model_deleted(conn: sqlite3.Connection, e: StoredEvent) -> None:
    conn.execute("UPDATE models SET deleted = 1, deleted_at = ? WHERE name = ?", (e.recorded_at, e.data["name"]))


def on_model_restored(conn: sqlite3.Connection, e: StoredEvent) -> None:
    conn.execute("UPDATE models SET deleted = 0, deleted_at = NULL WHERE name = ?", (e.data["name"],))


HANDLERS: dict[str, Callable[[sqlite3.Connection, StoredEvent], None]] = {
    "ModelRegistered": on_model_registered,
    **{t: on_version_created for t in VERSION_CREATING},
    "ArtifactStored": on_artifact_stored,
    "ArtifactFailed": on_artifact_failed,
    "ArtifactPurged": on_artifact_purged,
    "ArtifactRequested": on_artifact_requested,
    "MetricsRecorded": on_metrics,
    "Tagged": on_tagged,
    "Untagged": on_untagged,
    "AliasAssigned": on_alias_assigned,
    "AliasRemoved": on_alias_removed,
    "VersionDeleted": on_version_deleted,
    "VersionRestored": on_version_restored,
    "ModelDeleted": on_model_deleted,
    "ModelRestored": on_model_restored,
}


# Events that name a version without changing its status, tags, metrics or artifact: the version's newest
# state stays the one "as of" any later position, so no new row (and no page written) is needed.
_VERSION_UNCHANGED = frozenset({"AliasAssigned", "AliasRemoved"})
# Events after which a version's artifact record differs (the others leave its newest artifact state valid).
_ARTIFACT_CHANGING = VERSION_CREATING | {"ArtifactStored", "ArtifactFailed"}


def _snapshot(conn: sqlite3.Connection, position: int, name: str | None, version: Any,
              artifact_changed: bool = False) -> None:
    """Record the state after this event of the model it concerns and, if any, of the version."""
    conn.execute(
        "INSERT INTO model_states (name, position, state) SELECT name, ?, json_array(stream_version, description,"
        " json(tags), deleted, latest, last_version, created_at, created_by, updated_at, version_count,"
        " (SELECT coalesce(json_group_object(alias, version), '{}') FROM aliases WHERE aliases.name = models.name))"
        " FROM models WHERE name = ?",
        (position, name),
    )
    if isinstance(version, int):
        conn.execute(
            "INSERT INTO version_states (name, version, position, state)"
            " SELECT name, version, ?, json_array(status, deleted, json(tags), json(metrics))"
            " FROM versions WHERE name = ? AND version = ?",
            (position, name, version),
        )
        if artifact_changed:
            conn.execute(
                "INSERT INTO artifact_states (name, version, position, artifact)"
                " SELECT name, version, ?, artifact FROM versions WHERE name = ? AND version = ?",
                (position, name, version),
            )


def apply_events(conn: sqlite3.Connection, events: Iterable[StoredEvent], *, start: int | None = None) -> int:
    """Fold ``events`` (which must follow the checkpoint without a gap) into the catalog; return the new
    checkpoint. Unknown event types are skipped (a newer writer's), but still advance the checkpoint."""
    position = checkpoint(conn) if start is None else start
    for e in events:
        if e.position <= position:
            continue
        if e.position != position + 1:
            raise StoreError(f"projection gap: at {position}, next event is {e.position}")
        handler = HANDLERS.get(e.type)
        try:
            if handler is not None:
                handler(conn, e)
            name = e.data.get("name")
            conn.execute("UPDATE models SET stream_version = ?, updated_at = ? WHERE name = ?",
                         (e.version, e.recorded_at, name))
            _snapshot(conn, e.position, name, None if e.type in _VERSION_UNCHANGED else e.data.get("version"),
                      e.type in _ARTIFACT_CHANGING)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, sqlite3.InterfaceError,
                sqlite3.ProgrammingError) as exc:
            # Only an event outside the shapes ``eventstore.schemas`` accepts gets here — one appended around
            # ``append_batch``'s check (a log written before it, or by hand): say which.
            raise StoreError(f"the catalog cannot apply event #{e.position} ({e.type}): "
                             f"{type(exc).__name__}: {exc}") from None
        position = e.position
    _set_checkpoint(conn, position)
    return position
