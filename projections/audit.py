"""Audit: is the log intact, and does the catalog follow from it?

``audit`` runs four checks over a live registry and reports the first failure of each, with the position
(or line) where it was found:

- ``chain``: the hash chain from the first event, gapless positions, ``recorded_at`` never going
  backwards, gapless per-stream versions (``eventstore.verify.verify_rows``). The log is streamed page by
  page through ONE ``verify_rows`` call (a lazy generator), so memory stays flat however long the log is
  and the per-stream versions and the last ``recorded_at`` are checked across page boundaries too.
- ``append_only``: the guards (triggers) that keep the log append-only are exactly the schema's, compared by
  definition: any missing, altered or extra one is named (``Recorder.guard_problems``).
- ``idempotency``: every idempotency key points at events the log holds, recorded under that key
  (``Recorder.key_problems``): a key beyond the head is the trace of a truncated log.
- ``replay``: the catalog rebuilt from the log in a scratch database equals the stored catalog
  (row by row over ``catalog_digest_rows``; the first differing row is named).
- ``blobs``: every blob of every ``ready`` version exists in the store; with ``blob_rehash`` (deep) each
  distinct digest is also rehashed once.

With ``expected_hash`` the log's last hash must be that one (``final_hash``); each of ``expect``
(``eventstore.anchor``: ``#N:hash``, kept outside the registry) must still hold on a log that may have grown
since (``anchors``). Only these catch a truncated tail or a history rewritten to the head and rebuilt.

``export`` writes the evidence bundle (JSON Lines: a header, then every stored event row as stored) and
``verify_export`` checks such a file with nothing but ``eventstore.canonical``/``eventstore.verify`` — no
registry needed, so a third party can do the same from ``docs/events.md``.

The blob checks arrive as callables (``BlobStore.exists`` / ``BlobStore.verify``): projections do not
import workers.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, NamedTuple

from eventstore.anchor import Anchor, anchor_problem, parse_hash
from eventstore.canonical import GENESIS_HASH, canonical_json
from eventstore.destinations import check_destination, move_into_place, remove_entry
from eventstore.errors import StoreError, ValidationError
from eventstore.events import StoredEvent
from eventstore.recorder import Recorder
from eventstore.sealing import event_from_row
from eventstore.userfiles import bounded_lines, open_regular
from eventstore.verify import ChainReport, check_log, verify_rows

from . import sqlite as scratch_dialect
from .dialects import dialect_of
from .digest import catalog_digest_rows
from .projector import fold
from .rows import VERSION_COLUMNS

EXPORT_FORMAT = "modelledger-audit-export"
EXPORT_VERSION = 1
_VERSION_WIDTH = len(VERSION_COLUMNS.split(","))
ROW_FIELDS = ("position", "stream", "version", "type", "schema_version", "data", "meta", "recorded_at", "hash")
_FIELD_TYPES: dict[str, type] = {"position": int, "stream": str, "version": int, "type": str, "schema_version": int,
                                 "data": dict, "meta": dict, "recorded_at": str, "hash": str}


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    position: int | None = None  # the first failing position (a line number for an export's header/format)


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    checks: tuple[Check, ...]
    events_checked: int
    last_hash: str
    first_failure: Check | None = None

    @classmethod
    def of(cls, checks: list[Check], chain: ChainReport) -> AuditReport:
        failures = [c for c in checks if not c.ok]
        return cls(not failures, tuple(checks), chain.checked, chain.last_hash, failures[0] if failures else None)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "last_hash": self.last_hash,
            "checks": [c._asdict() for c in self.checks],
            "first_failure": self.first_failure._asdict() if self.first_failure else None,
        }


@dataclass(frozen=True)
class ExportSummary:
    path: str
    events: int
    final_hash: str
    bytes: int = field(default=0)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "events": self.events, "final_hash": self.final_hash, "bytes": self.bytes}


# -- the live registry -------------------------------------------------------------------------------------

def _event(row: tuple) -> StoredEvent:
    """A raw row → the event the projector folds (upcast, as the recorder's own reads do)."""
    return event_from_row(row)


@contextmanager
def _snapshot(recorder: Recorder, conn: Any | None) -> Iterator[Any]:
    """One read snapshot of the stored catalog for the whole audit: the recorder's own (any backend), or one
    on a bare SQLite connection the caller handed in (reused if the caller already holds one)."""
    if conn is None:
        with recorder.read_snapshot() as snapshot:
            yield snapshot
        return
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


class _Replay:
    """The catalog rebuilt from the log in a scratch database, fed page by page.

    The scratch database is SQLite's anonymous temporary database (``sqlite3.connect("")``): it lives in
    the page cache while it is small and spills to a private temp file (deleted on close) when it grows,
    so a million-event catalog does not have to fit in memory. It is SQLite whatever the stored catalog's
    dialect: the fold is the same code on every dialect and the digest's lines are dialect-neutral
    (``projections.digest``), so a PostgreSQL catalog is compared with a SQLite replay row for row.
    """

    def __init__(self, upto: int, scratch: str) -> None:
        self.upto = upto
        self._scratch = scratch_dialect.scratch(scratch)
        self.conn = self._scratch.__enter__()
        self.store = scratch_dialect.fold_store(self.conn)
        self.position = 0
        self.failure: Check | None = None

    def feed(self, rows: list[tuple]) -> None:
        if self.failure is not None:
            return
        events = []
        for row in rows:
            if row[0] > self.upto:
                break
            try:
                events.append(_event(row))
            except (TypeError, ValueError) as exc:
                self.failure = Check("replay", False, f"the event at position {row[0]} cannot be read: {exc}",
                                     row[0])
                break
        if not events:
            return
        # One transaction per page: the rollback journal never holds more than a page's changes.
        self.conn.execute("BEGIN")
        try:
            self.position = fold(self.store, events, self.position)
            self.conn.execute("COMMIT")
            return
        except Exception:  # noqa: BLE001 - any failure of the projector is a finding; locate it below
            self.conn.execute("ROLLBACK")
        for e in events:  # the page again, one event at a time, to name the event that breaks the replay
            try:
                self.conn.execute("BEGIN")
                self.position = fold(self.store, [e], self.position)
                self.conn.execute("COMMIT")
            except Exception as exc:  # noqa: BLE001
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self.failure = Check("replay", False, f"replaying the log fails at position {e.position}: "
                                     f"{type(exc).__name__}: {exc}", e.position)
                return

    def close(self) -> None:
        self._scratch.__exit__(None, None, None)


def _compare_catalogs(stored: Any, replayed: Any) -> tuple[str, str, tuple[str | None, str | None] | None]:
    """Digest of each catalog and, if they differ, the first differing pair of rows (stored, replayed)."""
    hs, hr = hashlib.sha256(), hashlib.sha256()
    first: tuple[str | None, str | None] | None = None
    for s, r in zip_longest(catalog_digest_rows(stored), catalog_digest_rows(replayed)):
        if s is not None:
            hs.update(s.encode("utf-8") + b"\n")
        if r is not None:
            hr.update(r.encode("utf-8") + b"\n")
        if first is None and s != r:
            first = (s, r)
    return hs.hexdigest(), hr.hexdigest(), first


def _version_row_position(*lines: str | None) -> int | None:
    """The log position that created a ``versions`` row (its last column, see ``VERSION_COLUMNS``), if one
    of ``lines`` is such a row."""
    for line in lines:
        try:
            row = json.loads(line) if line is not None else None
        except ValueError:
            continue
        if isinstance(row, list) and len(row) == _VERSION_WIDTH and isinstance(row[-1], int):
            return row[-1]
    return None


class _Seen:
    """What the chain check read: the last row's position and hash, and the hash at each anchored position."""

    def __init__(self, anchors: Sequence[Anchor]) -> None:
        self.wanted = {a.position for a in anchors}
        self.hashes: dict[int, str] = {}
        self.last = (0, GENESIS_HASH)

    def watch(self, rows: Iterable[tuple]) -> Iterator[tuple]:
        for row in rows:
            if row[0] in self.wanted:
                self.hashes[row[0]] = row[8]
            self.last = (row[0], row[8])
            yield row


def _check_expectations(checks: list[Check], seen: _Seen, *, head: int, complete: bool,
                        expected_hash: str | None, anchors: Sequence[Anchor]) -> None:
    """``final_hash`` (the log ends at ``expected_hash``) and ``anchors`` (each still holds). ``complete``: the
    whole log was read (an export's chain stops reading at its first failure)."""
    if expected_hash is not None:
        if not complete:
            checks.append(Check("final_hash", False, "not checked: the chain fails first"))
        elif seen.last[1] != expected_hash:
            checks.append(Check("final_hash", False, f"the log ends at #{seen.last[0]} with hash {seen.last[1]}, "
                                f"expected {expected_hash} (a log that may have grown since is checked with "
                                "--expect '#N:HASH')", seen.last[0]))
        else:
            checks.append(Check("final_hash", True, f"#{seen.last[0]}:{expected_hash}"))
    if anchors:
        for anchor in sorted(anchors, key=lambda a: a.position):
            if not complete and anchor.position not in seen.hashes:
                checks.append(Check("anchors", False, f"anchor #{anchor.position}: not checked: the chain fails "
                                    "first", anchor.position))
                return
            problem = anchor_problem(anchor, seen.hashes.get(anchor.position), head)
            if problem is not None:
                checks.append(Check("anchors", False, problem, anchor.position))
                return
        held = ", ".join(f"#{a.position}" for a in sorted(anchors, key=lambda a: a.position))
        checks.append(Check("anchors", True, f"{len(anchors)} anchor(s) hold: {held}"))


def anchor(recorder: Recorder) -> Anchor:
    """The head's anchor, ``#N:hash``: keep it outside the registry, check it later with ``expect``."""
    with recorder.read_snapshot():
        head = recorder.head()
        rows = recorder.raw_rows(since=head - 1, limit=1) if head else []
    return Anchor(head, rows[0][8] if rows else GENESIS_HASH)


def expectations(expected_hash: str | None, expect: Iterable[str | Anchor]) -> tuple[str | None, list[Anchor]]:
    """User input → a checked hash and anchors (``ValidationError`` on a malformed one, before any work)."""
    return (parse_hash(expected_hash) if expected_hash is not None else None), [Anchor.parse(a) for a in expect]


def _check_blobs(conn: Any, exists: Callable[[str], bool],
                 rehash: Callable[[str], bool] | None) -> Check:
    seen: set[str] = set()
    first: Check | None = None
    bad = 0
    for digest, name, number, position in dialect_of(conn).ready_blobs(conn):
        if digest in seen:
            continue
        seen.add(digest)
        try:
            problem = None
            if not exists(digest):
                problem = "is missing from the store"
            elif rehash is not None and not rehash(digest):
                problem = "does not match its digest (bytes changed)"
        except Exception as exc:  # noqa: BLE001 - a store error is reported, not raised
            problem = f"cannot be checked ({type(exc).__name__}: {exc})"
        if problem is not None:
            bad += 1
            if first is None:
                first = Check("blobs", False, f"{name}@{number} (created at #{position}): blob {digest} {problem}",
                              position)
    how = "present and rehashed" if rehash is not None else "present"
    if first is not None:
        return first._replace(detail=f"{first.detail}; {bad} of {len(seen)} blobs fail")
    return Check("blobs", True, f"{len(seen)} blobs of ready versions {how}")


def audit(
    recorder: Recorder,
    conn_for_catalog: Any | None = None,
    *,
    blob_exists: Callable[[str], bool],
    blob_rehash: Callable[[str], bool] | None = None,
    page: int = 10_000,
    scratch: str = "",
    expected_hash: str | None = None,
    expect: Iterable[str | Anchor] = (),
) -> AuditReport:
    """Audit a registry: its log (``recorder``) and its catalog (the tables in the recorder's database, or on
    ``conn_for_catalog``, a bare SQLite connection; the caller has caught the catalog up). The catalog and the log are each read in one snapshot (the catalog's taken
    first), and only the events the catalog has applied are replayed, so concurrent writers do not disturb it.

    ``blob_exists(digest)`` / ``blob_rehash(digest)`` (deep: True only if the bytes match the digest) come from
    the blob store. ``scratch``: where the replayed catalog is built (``""``: SQLite's anonymous temporary
    database; ``":memory:"`` keeps it all in memory). ``expected_hash``: the hash the log must end at;
    ``expect``: anchors (``#N:hash``) that must still hold.
    """
    expected_hash, anchors = expectations(expected_hash, expect)
    seen = _Seen(anchors)
    with _snapshot(recorder, conn_for_catalog) as conn_for_catalog:
        # first: the catalog's snapshot is never ahead of the log's
        catalog_at = dialect_of(conn_for_catalog).fold_store(conn_for_catalog).checkpoint()
        with recorder.read_snapshot():
            replay = _Replay(catalog_at, scratch)
            try:
                log = check_log(recorder, page=page, on_page=replay.feed, watch=seen.watch)
                checks: list[Check] = [Check(*c) for c in log.checks]
                chain = log.chain
                head = chain.checked if chain.ok else recorder.head()
                checks.append(_check_replay(conn_for_catalog, replay, catalog_at, head))
            finally:
                replay.close()
        checks.append(_check_blobs(conn_for_catalog, blob_exists, blob_rehash))
    _check_expectations(checks, seen, head=seen.last[0], complete=True, expected_hash=expected_hash,
                        anchors=anchors)
    return AuditReport.of(checks, chain)


def _check_replay(stored: Any, replay: _Replay, catalog_at: int, head: int) -> Check:
    if replay.failure is not None:
        return replay.failure
    if replay.position < catalog_at:
        return Check("replay", False, f"the catalog has applied the log up to #{catalog_at} but the log ends at "
                     f"#{replay.position}: events are missing from the log", replay.position + 1)
    stored_digest, _, first = _compare_catalogs(stored, replay.conn)
    lag = f" (catalog at #{catalog_at}, log head #{head})" if catalog_at != head else ""
    if first is not None:
        s, r = first
        return Check("replay", False, f"the stored catalog differs from the replay of the log{lag}: first "
                     f"difference: stored {s or '(no row)'} vs replayed {r or '(no row)'}",
                     _version_row_position(s, r))
    return Check("replay", True, f"catalog digest {stored_digest[:16]}… equals the replay of #{catalog_at}{lag}")


# -- the evidence bundle ------------------------------------------------------------------------------------

def export(recorder: Recorder, path: str | os.PathLike[str], *, overwrite: bool = False,
           page: int = 10_000) -> ExportSummary:
    """Write every stored event row, exactly as stored, to ``path`` as JSON Lines after a header line
    ``{"format", "version", "events", "final_hash"}``. Written to a temporary file next to ``path``,
    fsynced, then renamed: a reader never sees half a bundle. ``path`` is checked like a pull's DEST
    (``eventstore/destinations.py``): an existing regular file is replaced only with ``overwrite``, and
    never a folder, symlink, FIFO or device, nor anything inside the registry's folder."""
    # A SQLite registry's folder is not overwritten by an export; a server database has no folder here.
    where = getattr(recorder, "path", None)
    protected = (str(where.parent),) if isinstance(where, Path) else ()
    target = check_destination(path, overwrite=overwrite, protected=protected, folder_ok=False)
    tmp = target.temp_name(".tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as out:
            # The header's count and hash and the last row to write, in one snapshot: rows appended while the
            # export runs are after ``last`` and not written, so the header always describes the rows.
            count, last, last_hash = recorder.log_summary()
            final_hash = last_hash or GENESIS_HASH
            header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "events": count, "final_hash": final_hash}
            out.write(canonical_json(header) + "\n")
            since = 0
            while since < last and (rows := recorder.raw_rows(since=since, limit=min(page, last - since))):
                for row in rows:
                    if row[0] > last:
                        break
                    obj = dict(zip(ROW_FIELDS, row, strict=True))
                    obj["data"] = json.loads(obj["data"])
                    obj["meta"] = json.loads(obj["meta"])
                    out.write(canonical_json(obj) + "\n")
                since = rows[-1][0]
            out.flush()
            os.fsync(out.fileno())
        move_into_place(tmp, target)
    except OSError as exc:
        remove_entry(tmp)
        cls = ValidationError if exc.errno in _PATH_ERRNOS else StoreError
        raise cls(f"cannot write the export to {target.shown}: {exc.strerror}") from None
    except BaseException:
        remove_entry(tmp)
        raise
    return ExportSummary(str(path), count, final_hash, os.stat(target.path).st_size)


# The path the user gave is wrong (exit 2), rather than the disk failing (exit 5).
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EISDIR, errno.EROFS,
                          errno.ENAMETOOLONG, errno.ELOOP})
# One exported row holds an event's data (at most 1 MiB canonical) and its meta; far longer is not ours.
EXPORT_LINE_MAX = 8 * 1024 * 1024


class _ExportError(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def _json_line(number: int, raw: bytes | None) -> Any:
    if raw is None:
        raise _ExportError(number, f"longer than {EXPORT_LINE_MAX:,} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _ExportError(number, "not UTF-8 text") from None
    except RecursionError:
        raise _ExportError(number, "JSON nested too deeply") from None
    except ValueError:
        raise _ExportError(number, "not valid JSON") from None


def _export_rows(lines: Iterator[tuple[int, bytes | None]], where: list[int]) -> Iterator[tuple]:
    for number, raw in lines:
        where[0] = number
        obj = _json_line(number, raw)
        if not isinstance(obj, dict) or set(obj) != set(ROW_FIELDS):
            raise _ExportError(number, f"not an event row (fields must be exactly {', '.join(ROW_FIELDS)})")
        for name in ROW_FIELDS:
            want = _FIELD_TYPES[name]
            if not isinstance(obj[name], want) or (want is int and isinstance(obj[name], bool)):
                raise _ExportError(number, f"field {name!r} must be a {want.__name__}")
        if raw != canonical_json(obj).encode("utf-8"):  # as written by export: a same-meaning edit (duplicate key) is caught
            raise _ExportError(number, "not in canonical form (edited: a duplicate key, white space or key order)")
        yield tuple(obj[f] for f in ROW_FIELDS)


def verify_export(path: str | os.PathLike[str], *, expected_final_hash: str | None = None,
                  expect: Iterable[str | Anchor] = ()) -> AuditReport:
    """Recompute the hash chain of an export from the file alone; check the header's count and final hash.

    Every failure names the line (1 is the header, line N + 1 holds position N). A bundle truncated and
    re-headed consistently can only be caught against a hash kept elsewhere: ``expected_final_hash`` (the
    bundle must end there) or ``expect``, anchors ``#N:hash`` that must still hold in a bundle that may hold
    more events since."""
    expected_final_hash, anchors = expectations(expected_final_hash, expect)
    seen = _Seen(anchors)
    checks: list[Check] = []
    empty = ChainReport(False, 0, GENESIS_HASH)
    # A regular file only (never a FIFO or /dev/zero), read line by line with each line bounded.
    with open_regular(path, "--verify-export") as f:
        lines = enumerate(bounded_lines(f, EXPORT_LINE_MAX), start=1)
        first = next(lines, None)
        try:
            header = _json_line(1, first[1]) if first else None
        except _ExportError:
            header = None
        if (not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT
                or header.get("version") != EXPORT_VERSION or not isinstance(header.get("events"), int)
                or not isinstance(header.get("final_hash"), str)):
            checks.append(Check("header", False, f"line 1: not a {EXPORT_FORMAT} version {EXPORT_VERSION} header", 1))
            return AuditReport.of(checks, empty)
        checks.append(Check("header", True, f"{EXPORT_FORMAT} v{EXPORT_VERSION}: {header['events']} events"))
        where = [1]
        try:
            chain = verify_rows(seen.watch(_export_rows(lines, where)))
        except _ExportError as exc:
            checks.append(Check("chain", False, f"line {exc.line}: {exc.problem}", exc.line))
            _check_expectations(checks, seen, head=0, complete=False, expected_hash=expected_final_hash,
                                anchors=anchors)
            return AuditReport.of(checks, empty)
    if not chain.ok:
        checks.append(Check("chain", False, f"line {where[0]} (position {chain.position}): {chain.problem}",
                            chain.position))
        _check_expectations(checks, seen, head=0, complete=False, expected_hash=expected_final_hash,
                            anchors=anchors)
        return AuditReport.of(checks, chain)
    checks.append(Check("chain", True, f"{chain.checked} events, hash chain intact"))
    if chain.checked != header["events"]:
        checks.append(Check("count", False, f"the header says {header['events']} events, the file holds "
                            f"{chain.checked}", 1))
    else:
        checks.append(Check("count", True, f"{chain.checked} events"))
    if chain.last_hash != header["final_hash"]:
        checks.append(Check("final_hash", False, f"line 1: the header's final_hash {header['final_hash']} is not "
                            f"the chain's last hash {chain.last_hash}", 1))
    elif expected_final_hash is not None and chain.last_hash != expected_final_hash:
        checks.append(Check("final_hash", False, f"the chain ends at {chain.last_hash}, expected "
                            f"{expected_final_hash} (a log that may have grown since is checked with "
                            "--expect '#N:HASH')", chain.checked))
    else:
        checks.append(Check("final_hash", True, chain.last_hash))
    _check_expectations(checks, seen, head=chain.checked, complete=True, expected_hash=None, anchors=anchors)
    return AuditReport.of(checks, chain)
