"""Upcasting: an event stored under an older schema version is upgraded when it is read.

Stored rows are never rewritten (the log is append-only), so a change to an event's shape is made by
registering a function here that turns version N's data into version N+1's. ``upcast`` applies the chain
until the current version of ``events.SCHEMA_VERSIONS`` is reached. The hash chain always covers the
bytes as stored, so upcasting never affects ``audit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import SCHEMA_VERSIONS

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorator: ``fn(data_at_from_version) -> data_at_from_version_plus_one``."""

    def deco(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return deco


def upcast(event_type: str, schema_version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    target = SCHEMA_VERSIONS.get(event_type, schema_version)
    while schema_version < target:
        fn = _UPCASTERS.get((event_type, schema_version))
        if fn is None:
            break
        data = fn(data)
        schema_version += 1
    return schema_version, data
