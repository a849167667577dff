"""Which SQL dialect module serves a catalog: ``projections.sqlite`` or ``projections.postgres``.

The neutral catalog (``catalog``, ``past``, ``projector``, ``storage``, ``audit``) holds no SQL; it asks the
dialect module of its recorder (``Recorder.dialect``, set by each backend: the composition root pairs a log
with its catalog) or of the connection it was handed (tests and tools fold into a bare connection). Each
dialect module offers the same functions (see ``projections/sqlite/__init__.py``); one is imported only
when used, so SQLite never imports psycopg.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from eventstore.errors import StoreError

MODULES = {"sqlite": "projections.sqlite", "postgresql": "projections.postgres"}


def dialect_for(name: str) -> ModuleType:
    try:
        return importlib.import_module(MODULES[name])
    except KeyError:
        raise StoreError(f"no catalog for the {name!r} dialect (known: {', '.join(MODULES)})") from None


def dialect_of(conn: Any) -> ModuleType:
    """The dialect of a driver connection (sqlite3 or psycopg)."""
    module = type(conn).__module__.split(".")[0]
    return dialect_for({"sqlite3": "sqlite", "psycopg": "postgresql"}.get(module, module))


def dialect_part(name: str, part: str) -> ModuleType:
    """A module of the dialect's package beside the catalog's (``access``: the token table), imported on first
    use like the package itself."""
    return importlib.import_module(f"{dialect_for(name).__name__}.{part}")
