"""Checking the log itself: the hash chain, gapless positions, time that never goes backwards, gapless
per-stream versions, and stored text that is exactly the canonical form the chain hashes.

``verify_rows`` works on rows exactly as stored (no upcasting), so it needs nothing but the rows: the same
function verifies the live database and an exported copy. ``check_log`` runs every check of a live log
through the neutral ``Recorder`` interface (the rows, the guards, the idempotency keys), so it works on any
backend; ``mledger audit`` adds the catalog's and the blobs' checks to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from .canonical import GENESIS_HASH, canonical_json, envelope_json, hash_envelope_json
from .recorder import Recorder


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    last_hash: str
    position: int | None = None  # the first position that fails
    problem: str = ""
    # Where the check stopped, so the next page can carry on from here.
    last_recorded_at: str = ""
    stream_versions: dict[str, int] = field(default_factory=dict, repr=False)


def verify_rows(rows: Iterable[tuple], *, start_position: int = 0, start_hash: str = GENESIS_HASH,
                start_recorded_at: str = "", start_versions: dict[str, int] | None = None) -> ChainReport:
    """``rows``: (position, stream, version, type, schema_version, data, meta, recorded_at, hash) in order.
    To check a log page by page, pass the previous page's report as ``**resume(report)``."""
    expected_position = start_position
    previous_hash = start_hash
    previous_at = start_recorded_at
    stream_versions: dict[str, int] = dict(start_versions or {})
    checked = 0
    for position, stream, version, type_, schema_version, data, meta, recorded_at, stored_hash in rows:
        expected_position += 1
        if position != expected_position:
            return ChainReport(False, checked, previous_hash, expected_position,
                               f"position {expected_position} is missing (next stored is {position})")
        if recorded_at < previous_at:
            return ChainReport(False, checked, previous_hash, position, "recorded_at goes backwards")
        want_version = stream_versions.get(stream, 0) + 1
        if version != want_version:
            return ChainReport(False, checked, previous_hash, position,
                               f"stream {stream} jumps to version {version} (expected {want_version})")
        try:
            data_json = canonical_json(json.loads(data)) if isinstance(data, str) else canonical_json(data)
            meta_json = canonical_json(json.loads(meta)) if isinstance(meta, str) else canonical_json(meta)
        except (TypeError, ValueError, RecursionError):
            return ChainReport(False, checked, previous_hash, position, "data or meta is not valid JSON")
        # The hash covers the canonical form, so stored text must BE that form: otherwise an edit that keeps
        # the meaning for Python (a duplicate key, whose first copy SQLite's json_extract reads; white space)
        # would pass the chain. The recorder only ever stores canonical text, so an honest log always passes.
        if isinstance(data, str) and data != data_json or isinstance(meta, str) and meta != meta_json:
            which = "data" if isinstance(data, str) and data != data_json else "meta"
            return ChainReport(False, checked, previous_hash, position,
                               f"{which} is not stored in canonical form (edited outside modelledger: a duplicate "
                               "key, white space or key order)")
        envelope = envelope_json(position, stream, version, type_, schema_version, data_json, meta_json, recorded_at)
        computed = hash_envelope_json(previous_hash, envelope)
        if computed != stored_hash:
            return ChainReport(False, checked, previous_hash, position, "hash does not match the event's content")
        previous_hash, previous_at = stored_hash, recorded_at
        stream_versions[stream] = version
        checked += 1
    return ChainReport(True, checked, previous_hash, last_recorded_at=previous_at, stream_versions=stream_versions)


def resume(report: ChainReport, position: int) -> dict:
    """Keyword arguments that continue a check after ``report`` ended at ``position``."""
    return {"start_position": position, "start_hash": report.last_hash,
            "start_recorded_at": report.last_recorded_at, "start_versions": report.stream_versions}


class LogCheck(NamedTuple):
    """One check of the log: ``name`` (``chain``, ``append_only``, ``idempotency``), whether it passed, what
    it found, and the first failing position."""

    name: str
    ok: bool
    detail: str
    position: int | None = None


@dataclass(frozen=True)
class LogReport:
    checks: tuple[LogCheck, ...]  # chain, append_only, idempotency: in this order
    chain: ChainReport
    last_position: int  # the last position read (the head of the snapshot when the chain is whole)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def log_pages(recorder: Recorder, page: int = 10_000) -> Iterator[list[tuple]]:
    """The whole log as stored (``Recorder.raw_rows``), one page of rows at a time."""
    since = 0
    while rows := recorder.raw_rows(since=since, limit=page):
        yield rows
        since = rows[-1][0]


def check_log(
    recorder: Recorder,
    *,
    page: int = 10_000,
    on_page: Callable[[list[tuple]], None] | None = None,
    watch: Callable[[Iterable[tuple]], Iterator[tuple]] | None = None,
) -> LogReport:
    """Check a live log, streamed page by page through one ``verify_rows`` (so memory stays flat and the
    per-stream versions and ``recorded_at`` are checked across pages): the chain, then the append-only guards
    (``Recorder.guard_problems``) and the idempotency keys (``Recorder.key_problems``).

    The caller holds ``recorder.read_snapshot()`` if the rows must be one snapshot (an audit does). Every page
    read goes to ``on_page`` (an audit's replay of the catalog), also the pages after a chain failure;
    ``watch`` sees every row the chain check reads (anchors)."""
    where = [0]

    def rows() -> Iterator[tuple]:
        for rows_ in log_pages(recorder, page):
            if on_page is not None:
                on_page(rows_)
            for row in rows_:
                where[0] = row[0]
                yield row

    stream = watch(rows()) if watch is not None else rows()
    try:
        chain = verify_rows(stream)
    except (TypeError, ValueError) as exc:  # a column of the wrong type, stored by hand
        chain = ChainReport(False, max(where[0] - 1, 0), "", where[0], f"malformed row ({type(exc).__name__}: {exc})")
    for _ in stream:  # the chain stopped at a failure: ``on_page`` still gets the rest of the log
        pass
    if chain.ok:
        checks = [LogCheck("chain", True, f"{chain.checked} events, hash chain intact")]
    else:
        checks = [LogCheck("chain", False, f"position {chain.position}: {chain.problem}", chain.position)]
    checks += [_check_guards(recorder), _check_keys(recorder)]
    return LogReport(tuple(checks), chain, where[0])


def _check_guards(recorder: Recorder) -> LogCheck:
    problems = recorder.guard_problems()
    if problems:
        return LogCheck("append_only", False, f"append-only guards changed: {'; '.join(map(str, problems))} "
                        "(the log could have been edited; appends are refused until `mledger audit "
                        "--restore-guards`)")
    return LogCheck("append_only", True, "guards as the schema defines them")


def _check_keys(recorder: Recorder) -> LogCheck:
    first, count = None, 0
    for problem in recorder.key_problems():
        count += 1
        if first is None or problem.position < first.position:
            first = problem
    if first is not None:
        more = f" ({count} keys fail)" if count > 1 else ""
        return LogCheck("idempotency", False, f"{first}{more}", first.position)
    return LogCheck("idempotency", True, "every idempotency key points at the events recorded under it")
