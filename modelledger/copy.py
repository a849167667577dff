"""``mledger copy --to DATABASE``: this registry's log into another, empty database (SQLite → PostgreSQL and
back), then the target's catalog built from it and audited.

The rows travel verbatim (``Transaction.append_rows``): positions, stream versions, recorded times, the
canonical text and the hashes are the source's, and the target checks the chain as they arrive. The
idempotency keys travel with their batches, so a pipeline retrying a command against the new database
still appends once. The copy is one write transaction on the target: a failure (or Ctrl-C) leaves it
without a single event.

The registry id: the target keeps the id it was created with, its own. Workers and brokers key their state
by it (the Redis namespace of ingest jobs): with the source's id, the workers of the old and of the new
database would take each other's jobs for as long as both run. The report names both ids.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from eventstore.errors import ConflictError, ModelLedgerError, ValidationError

from .config import database_location, is_postgres_url, mask_url
from .database import occupied, open_recorder, same_database
from .registry import Registry

PAGE = 5_000  # rows per read of the source and per insert into the target


@dataclass(frozen=True)
class CopyReport:
    target: str          # where, password masked
    events: int
    keys: int
    head_hash: str
    source_id: str
    target_id: str
    audit_ok: bool
    audit: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        verdict = "audit passed" if self.audit_ok else "AUDIT FAILED: " + str(
            (self.audit.get("first_failure") or {}).get("detail", "?"))
        return (f"copied {self.events} events and {self.keys} idempotency keys to {self.target} in "
                f"{self.seconds:.1f} s; last hash {self.head_hash}; target registry id {self.target_id} "
                f"(source {self.source_id}); catalog built; {verdict}")


class _Progress:
    """``copy: N / M events`` on ``stream``: redrawn in place on a terminal, else a line every few seconds."""

    def __init__(self, stream: IO[str] | None, total: int) -> None:
        self.stream, self.total = stream, total
        self.tty = bool(stream) and stream.isatty()
        self.last = 0.0

    def __call__(self, what: str, done: int, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        line = f"copy: {what} {done} / {self.total} events"
        self.stream.write(("\r" + line + ("\n" if final else "   ")) if self.tty else line + "\n")
        self.stream.flush()


def _pages(source: Registry, head: int, keys: list[tuple]) -> Any:
    """The source's rows up to ``head`` in pages that never split a keyed batch (its key travels with it)."""
    inside: dict[int, int] = {}  # a position inside a keyed batch (not its last) -> the batch's last position
    for _key, _fp, first, last in keys:
        for position in range(first, last):
            inside[position] = last
    by_last: dict[int, list[tuple]] = {}
    for row in keys:
        by_last.setdefault(row[3], []).append(row)
    since = 0
    while since < head:
        end = min(since + PAGE, head)
        while end in inside:
            end = inside[end]
        rows = source.recorder.raw_rows(since=since, limit=end - since)
        if not rows or rows[-1][0] != end:
            raise ModelLedgerError(f"the source log changed under the copy near #{since + 1}: run `mledger audit`")
        yield rows, [k for p in range(since + 1, end + 1) for k in by_last.get(p, ())]
        since = end


def _copy_database_blobs(source: Registry, target: Registry) -> int:
    """Blobs the source keeps in its own database (small artifacts, or ``MLEDGER_ARTIFACTS=db``) go with the
    log: the target's store gets each one it lacks, checked against its digest as it is written. Blobs in a
    shared store (files, S3, ...) are already where the target looks."""
    src = source.store()
    in_database = getattr(src, "small", None) or (src if source.config.artifacts == "db" else None)
    if in_database is None:
        return 0
    dst = target.store()
    copied = 0
    for digest, size, _mtime in in_database.iter_blobs():
        if dst.exists(digest):
            continue
        with in_database.open_blob(digest) as f:
            # Small ones (the tier's) as bytes, so the target's tier keeps them in its database too; large
            # ones (MLEDGER_ARTIFACTS=db) streamed.
            stored = dst.put_bytes(f.read()) if size <= (1 << 20) else dst.put_stream(f)
        if stored.digest != digest:
            raise ModelLedgerError(f"blob {digest} read back as {stored.digest} while copying: run `mledger audit --deep`")
        copied += 1
    return copied


def copy_registry(source: Registry, to: str, *, progress: IO[str] | None = None) -> CopyReport:
    """Copy ``source``'s log to the database ``to`` (a URL or a SQLite file), build and audit its catalog."""
    started = time.monotonic()
    target = database_location(to.strip(), Path.cwd())
    label = mask_url(target) if is_postgres_url(target) else target
    if same_database(source.config.location, target):
        raise ValidationError(f"{label} is this registry's own database: copy to another one")
    why = occupied(target)
    if why is not None:
        raise ConflictError(f"copy refused: the target must be an empty database: {why}; nothing was written")
    created = not is_postgres_url(target) and not os.path.exists(target)
    head = source.recorder.head()
    keys = [tuple(k) for k in source.recorder.raw_keys() if k[3] <= head]
    shown = _Progress(progress, head)
    try:
        recorder = open_recorder(target)
        try:
            target_id = recorder.registry_id
            with recorder.write() as tx:
                if tx.head() != 0:  # someone wrote to it since the check
                    raise ConflictError(f"copy refused: {label} received events meanwhile; nothing was written")
                for rows, batch_keys in _pages(source, head, keys):
                    tx.append_rows(rows, batch_keys)
                    shown("copied", rows[-1][0])
            shown("copied", head, final=True)
            head_hash = (recorder.raw_rows(since=head - 1)[0][8]) if head else ""
        finally:
            recorder.close()
    except BaseException:
        if created:  # a new SQLite file holding no event: do not leave it behind
            for suffix in ("", "-wal", "-shm"):
                Path(target + suffix).unlink(missing_ok=True)
        raise
    config = dataclasses.replace(source.config, database=target)
    with Registry(config, client="copy") as copy:
        blobs = _copy_database_blobs(source, copy)
        if progress is not None and blobs:
            progress.write(f"copy: {blobs} blob(s) kept in the source's database copied\n")
        if progress is not None:
            progress.write("copy: building the target's catalog\n")
        copy.rebuild_projections()
        if progress is not None:
            progress.write("copy: auditing the target\n")
        report = copy.audit()
    return CopyReport(target=label, events=head, keys=len(keys), head_hash=head_hash, source_id=source.registry_id,
                      target_id=target_id, audit_ok=report.ok, audit=report.to_json(),
                      seconds=round(time.monotonic() - started, 3))
