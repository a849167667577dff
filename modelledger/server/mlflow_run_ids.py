"""The run id MLflow shows for a version: the ``run_id`` in the meta of the event that created it (or in its
``origin``, for a version imported from MLflow). The catalog's rows do not hold it, so it is read from the log.

Reading the event at each version's position cost a search of 100 versions 100 statements (1.25 ms of CPU,
in-process, load ~10), and a cache of those answers per worker process was cold for most searches of a
served registry (the bench's 60 searches draw from 100 name + tag pairs, over two workers). So each process
keeps, per registry, the run ids of the log read so far in position order: the positions that name a run id,
and how far it has read (``upto``). Everything at or below ``upto`` is answered from memory; the reading goes
on only as far as a call needs, at most ``STEP`` events per call (a long log is read over several calls, no
call waits for the whole of it), and a row is decoded only when its stored data or meta holds the text
``"run_id"`` (canonical JSON writes the key so, or there is none). Past ``MOST`` positions with a run id the
reading stops there (bounded memory) and later positions are read one row at a time, as they are beyond
``upto`` in the meantime. The log is append-only, so nothing read here goes stale.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventstore.recorder import Recorder
from eventstore.sealing import event_from_row

KEY = '"run_id"'
PAGE = 2_000  # rows per statement while reading on
STEP = 10_000  # at most this many events read on per call (~5-20 ms of CPU on this machine)
MOST = 100_000  # positions with a run id kept per registry


def run_id_of_row(row: Sequence[Any]) -> str:
    """The run id an event names, from its stored row (``Recorder.raw_rows``' columns); ``""`` if none."""
    data, meta = row[5], row[6]
    if isinstance(data, str) and isinstance(meta, str) and KEY not in data and KEY not in meta:
        return ""
    event = event_from_row(row)  # as ``Recorder.event_at`` reads it (upcast to this code's schema)
    origin = event.data.get("origin")
    found = (origin.get("run_id") if isinstance(origin, dict) else None) or event.meta.get("run_id")
    return str(found or "")


class RunIds:
    """One registry's run ids by position, read from its log on demand (see the module's docstring)."""

    def __init__(self) -> None:
        self.upto = 0
        self.found: dict[int, str] = {}
        self.beyond: dict[int, str] = {}  # positions read one at a time, above ``upto`` when asked
        self.full = False
        self.lock = threading.Lock()

    def of(self, recorder: Recorder, positions: Sequence[int]) -> list[str]:
        if positions and not self.full:
            highest = max(positions)
            # One reader at a time; a call that finds another reading answers its positions one row at a time.
            if highest > self.upto and self.lock.acquire(blocking=False):
                try:
                    self._read_on(recorder, highest)
                finally:
                    self.lock.release()
        upto = self.upto
        return [self.found.get(p, "") if p <= upto else self._one(recorder, p) for p in positions]

    def _read_on(self, recorder: Recorder, highest: int) -> None:
        stop = min(highest, self.upto + STEP)
        while self.upto < stop:
            rows = recorder.raw_rows(self.upto, min(PAGE, stop - self.upto))
            for row in rows:
                if row[0] != self.upto + 1:
                    return  # not the next position (not committed yet): read on from here next time
                found = run_id_of_row(row)
                if found:
                    if len(self.found) >= MOST:
                        self.full = True
                        return
                    self.found[row[0]] = found
                self.upto = row[0]  # after the entry: a reader that sees ``upto`` sees what lies below it
            if not rows:
                return

    def _one(self, recorder: Recorder, position: int) -> str:
        found = self.beyond.get(position)
        if found is None:
            rows = recorder.raw_rows(position - 1, 1)
            if not rows or rows[0][0] != position:
                return ""  # no event there (yet): nothing to keep
            found = run_id_of_row(rows[0])
            if len(self.beyond) >= MOST:
                self.beyond.clear()
            self.beyond[position] = found
        return found


_BY_REGISTRY: dict[str, RunIds] = {}
_BY_REGISTRY_LOCK = threading.Lock()


def run_ids(registry_id: str) -> RunIds:
    """This process's ``RunIds`` of the registry ``registry_id``."""
    found = _BY_REGISTRY.get(registry_id)
    if found is None:
        with _BY_REGISTRY_LOCK:
            found = _BY_REGISTRY.setdefault(registry_id, RunIds())
    return found
