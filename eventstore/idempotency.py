"""What ties an idempotency key to the events recorded under it.

The ``idempotency`` table maps a key to the positions of its batch (``first_position``..``last_position``).
The events themselves say which key they were recorded under, so the table can be checked against the log
(``mledger audit``) and a retry never hands back events that are not the first result:

- a command's events carry the key in ``meta.idempotency_key`` (``eventstore.handler``);
- an outcome recorded on behalf of an earlier request (a worker's ``ArtifactStored`` / ``ArtifactFailed``)
  carries ``meta.causation_id`` = the request's position, and its key ends in ``#<that position>``
  (``artifact-stored:#12``); its ``idempotency_key``, if any, is the request's own.

The recorder refuses a keyed batch whose events do not say so (``check_keyed_batch``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import ValidationError
from .events import NewEvent
from .recorder import KeyProblem


def recorded_under(key: str, meta: Mapping[str, Any]) -> bool:
    """Does an event with ``meta`` say it was recorded under ``key``?"""
    if not isinstance(meta, Mapping):
        return False
    if meta.get("idempotency_key") == key:
        return True
    cause = meta.get("causation_id")
    return isinstance(cause, int) and not isinstance(cause, bool) and key.endswith(f"#{cause}")


def batch_problem(key: str, first: int, last: int, found: Iterable[tuple[int, Any]],
                  head: int) -> tuple[int, str] | None:
    """What is wrong with ``key``'s batch, if anything: ``(position, problem)``. ``found``: (position, meta) of
    the events the log holds in ``first``..``last``, in order; ``head``: the log's last position."""
    if first < 1 or last < first:
        return max(first, 1), f"points at #{first}..#{last}, which is not a range of positions"
    if last > head:
        return max(first, head + 1), (f"points at #{first}..#{last} but the log ends at #{head}: events were "
                                      "removed from the log")
    expected = first
    for position, meta in found:
        if position != expected:
            break
        if not recorded_under(key, meta):
            return position, f"points at #{position}, whose event was not recorded under it"
        expected += 1
    if expected <= last:
        return expected, f"points at #{expected}, which the log does not hold"
    return None


def check_keyed_batch(events: Sequence[NewEvent], key: str) -> None:
    """``ValidationError`` unless every event of a batch appended under ``key`` says so in its meta."""
    for event in events:
        if not recorded_under(key, event.meta):
            raise ValidationError(f"an event appended under idempotency key {key!r} must carry it in "
                                  "meta.idempotency_key (or answer the request #N its key ends with, in "
                                  "meta.causation_id)")


def key_problems_of(rows: Iterable[tuple[str, int, int, int | None, Any]], head: int) -> Iterator[KeyProblem]:
    """Every key whose batch is wrong, from rows ``(key, first, last, position, meta text)`` — each key joined
    with the events of its range, in key then position order (a key with no events has one row, position
    None). Both backends' ``Recorder.key_problems`` read such rows with one query."""
    current: tuple[str, int, int] | None = None
    found: list[tuple[int, Any]] = []
    for key, first, last, position, meta in rows:
        if current is None or current[0] != key:
            if current is not None:
                yield from _problem(current, found, head)
            current, found = (key, first, last), []
        if position is not None:
            found.append((position, _meta_of(meta)))
    if current is not None:
        yield from _problem(current, found, head)


def _problem(current: tuple[str, int, int], found: list[tuple[int, Any]], head: int) -> Iterator[KeyProblem]:
    key, first, last = current
    wrong = batch_problem(key, first, last, found, head)
    if wrong is not None:
        yield KeyProblem(key, wrong[0], wrong[1])


def _meta_of(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None  # not JSON: the chain check names it; here it simply does not name the key
