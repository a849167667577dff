"""The catalog backends the catalog laws run on: one line per backend in ``BACKENDS``.

``catalog_backend`` (a fixture, parametrised) gives a ``Backend``: ``backend.open(home, **kwargs)`` opens a
``Registry`` whose log and catalog live in that backend (SQLite: the home's file; PostgreSQL: a database of
its own per home — a schema with a random name in the run's database on the machine's server —, dropped by
``backend.drop_all()`` and at the end of the test); ``backend.copy_prefix(src, dst, upto)`` puts the first ``upto`` stored events of one
registry into another, byte for byte, behind its catalog's back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["sqlite", "postgresql"]


class Backend:
    name = "sqlite"

    def open(self, home: Path, **kwargs: Any) -> Any:
        from modelledger import Registry

        return Registry.open(home, **kwargs)

    def copy_prefix(self, src: Any, dst: Any, upto: int) -> None:
        conn = sqlite3.connect(dst.config.db_path, isolation_level=None)
        try:
            conn.execute("ATTACH DATABASE ? AS src", (str(src.config.db_path),))
            conn.execute("INSERT INTO main.events SELECT * FROM src.events WHERE position <= ?", (upto,))
            conn.execute("DETACH DATABASE src")
        finally:
            conn.close()

    def drop_all(self) -> None:
        pass


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, base: str) -> None:
        self.monkeypatch = monkeypatch
        self.base = base  # the run's database (``shared_postgres_database``)
        self.schemas: dict[Path, tuple[str, str]] = {}

    def url(self, home: Path) -> str:
        from contracts.databases import create_schema

        home = Path(home).resolve()
        if home not in self.schemas:
            self.schemas[home] = create_schema(self.base)
        return self.schemas[home][1]

    def open(self, home: Path, **kwargs: Any) -> Any:
        import modelledger.registry as registry_module
        from modelledger import Registry

        url = self.url(home)
        if hasattr(registry_module, "open_recorder"):  # MLEDGER_DATABASE wired into the Registry
            # As --database: not through the environment, which the next example's SQLite registry would read.
            return Registry.open(home, database=url, **kwargs)
        # Until then: the same Registry with its recorder made for PostgreSQL (the composition root's one line).
        from eventstore.postgres import PostgresRecorder

        def recorder(path: Any) -> PostgresRecorder:
            made = PostgresRecorder(url)
            made.path = Path(path)  # type: ignore[attr-defined] - what workers.context keys wake-ups by
            return made

        with self.monkeypatch.context() as m:
            m.setattr(registry_module, "SQLiteRecorder", recorder)
            return Registry.open(home, **kwargs)

    def copy_prefix(self, src: Any, dst: Any, upto: int) -> None:
        import psycopg

        rows = [r for r in src.recorder.raw_rows() if r[0] <= upto]
        with psycopg.connect(self.url(dst.config.home)) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO events (position, stream, version, type, schema_version, data, meta,"
                            " recorded_at, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)

    def drop_all(self) -> None:
        from contracts.databases import drop_schema

        while self.schemas:
            drop_schema(self.base, self.schemas.popitem()[1][0])


def require_postgres() -> None:
    """The machine's PostgreSQL answers, else ``services.unavailable`` (skips here, fails in CI)."""
    from services import unavailable

    try:
        import psycopg
    except ImportError as exc:
        unavailable(f"PostgreSQL (psycopg is not installed: {exc}; pip install -e '.[postgres]')")
    from contracts.databases import ADMIN_URL, admin_connection

    try:
        with admin_connection() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} ({type(exc).__name__}: {str(exc).strip()})")


@pytest.fixture(params=BACKENDS)
def catalog_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend()
        return
    require_postgres()
    backend = PostgresBackend(monkeypatch, request.getfixturevalue("shared_postgres_database"))
    try:
        yield backend
    finally:
        backend.drop_all()
