"""Which recorder a registry's database needs: a ``postgresql://`` URL opens ``eventstore.postgres`` (the
``modelledger[postgres]`` extra), anything else is a SQLite file. The one place outside the backends that
names them (the composition root's choice), so a third backend is one more branch here."""

from __future__ import annotations

from eventstore.errors import StoreError, ValidationError
from eventstore.recorder import Recorder

from .config import is_postgres_url, mask_url

POSTGRES_EXTRA = "pip install 'modelledger[postgres]'"


def _postgres_module():
    try:
        from eventstore import postgres
    except ImportError as exc:  # psycopg or psycopg_pool is not installed
        raise ValidationError(f"a postgresql:// database needs psycopg 3 and psycopg_pool ({exc.name or exc} is "
                              f"missing): {POSTGRES_EXTRA}") from None
    return postgres


def open_recorder(location: str) -> Recorder:
    """The recorder of ``location`` (a ``Config.database``): created empty if there is none yet."""
    if is_postgres_url(location):
        postgres = _postgres_module()
        try:
            return postgres.PostgresRecorder(location)
        except ValueError as exc:  # psycopg refuses a malformed URL before connecting
            raise ValidationError(f"not a valid PostgreSQL URL {mask_url(location)!r}: {exc}") from None
    from eventstore.sqlite import SQLiteRecorder

    return SQLiteRecorder(location)


def occupied(location: str) -> str | None:
    """Why ``location`` cannot receive a copy (it holds events, or is not a registry), or None when it is
    empty or does not exist yet. Reads only: nothing is created."""
    if is_postgres_url(location):
        return _postgres_module().occupied(location)
    from eventstore.sqlite import occupied as sqlite_occupied

    return sqlite_occupied(location)


def same_database(a: str, b: str) -> bool:
    """Whether two locations name the same database (a copy onto itself is refused)."""
    if is_postgres_url(a) != is_postgres_url(b):
        return False
    if not is_postgres_url(a):
        from pathlib import Path

        try:
            return Path(a).resolve() == Path(b).resolve()
        except OSError:
            return False
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return a == b

    def key(url: str) -> tuple:
        info = conninfo_to_dict(url)
        # options: a search_path there puts the registry in another schema of the same database
        return (info.get("host") or "localhost", str(info.get("port") or "5432"), info.get("dbname") or "",
                info.get("options") or "")

    try:
        return key(a) == key(b)
    except Exception as exc:  # noqa: BLE001 - psycopg.ProgrammingError for a malformed URL
        raise StoreError(f"cannot read the database URL {mask_url(b)!r}: {exc}") from None
