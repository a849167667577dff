"""Blob storage: one interface (``base.BlobStore``), backends beside it, and ``open_store`` choosing one.

- ``fsspec_store``: local folders, ``memory://``, S3, Azure Blob (adlfs), Aliyun OSS (s3fs);
- ``database``: chunk rows in SQLite, PostgreSQL or MySQL/MariaDB (SQL per backend in ``sql_*.py``);
- ``tiered``: small blobs in the registry's database, the rest in a file or object store.
"""

from __future__ import annotations

import os
from typing import Any

from eventstore.errors import ValidationError

from .base import ArtifactInfo, Blob, BlobStore, FileEntry
from .database import DatabaseBlobStore, dialect_for, is_database_url

__all__ = ["ArtifactInfo", "Blob", "BlobStore", "FileEntry", "open_store", "database_url_of", "small_blob_limit"]

# ``MLEDGER_ARTIFACTS=db``: every blob in the registry's own database.
IN_REGISTRY = "db"
# A new registry keeps blobs up to this size in its database (MLEDGER_SMALL_BLOBS; 0 turns the tier off).
SMALL_BLOBS = 64 * 1024


def small_blob_limit(value: str | None = None) -> int | None:
    """The small-blob limit set by ``MLEDGER_SMALL_BLOBS`` (bytes, or with a K/M suffix); None when unset."""
    text = (os.environ.get("MLEDGER_SMALL_BLOBS") if value is None else value) or ""
    text = text.strip().upper()
    if not text:
        return None
    scale = 1
    if text[-1:] in ("K", "M"):
        scale = 1024 if text[-1] == "K" else 1024 * 1024
        text = text[:-1]
    try:
        limit = int(text) * scale
    except ValueError:
        raise ValidationError(f"MLEDGER_SMALL_BLOBS must be a size in bytes (or with K/M): {value or text!r}") from None
    if limit < 0 or limit > 16 * 1024 * 1024:
        raise ValidationError("MLEDGER_SMALL_BLOBS must be between 0 and 16M")
    return limit


def database_url_of(recorder: Any) -> str | None:
    """The URL of the log's database, for blobs kept in it (SQLite: its file; PostgreSQL: its URL)."""
    url = getattr(recorder, "url", None)
    if isinstance(url, str) and url.startswith(("postgres://", "postgresql://")):
        return url
    path = getattr(recorder, "path", None)
    return f"sqlite://{os.fspath(path)}" if path is not None else None


def open_store(url: str, *, statcache: str | os.PathLike[str] | None = None, database: str | None = None,
               new_registry: bool = False) -> BlobStore:
    """The blob store ``url`` names (``MLEDGER_ARTIFACTS``).

    ``db``: the registry's own database (``database``, from ``database_url_of``). A database URL
    (``sqlite:///…``, ``postgresql://…``, ``mysql://…``): that database. Anything else: an fsspec URL or path —
    tiered with the registry's database for small blobs when ``database`` is given and the tier is on: set by
    ``MLEDGER_SMALL_BLOBS``, else on for a ``new_registry`` and for one whose database already holds blobs."""
    from .fsspec_store import FsspecBlobStore

    if url == IN_REGISTRY:
        if database is None:
            raise ValidationError("MLEDGER_ARTIFACTS=db keeps blobs in the registry's database: none is open here")
        return DatabaseBlobStore(database, statcache=statcache, shares_log=True)
    if is_database_url(url):
        return DatabaseBlobStore(url, statcache=statcache, shares_log=url == database)
    large = FsspecBlobStore(url, statcache=statcache)
    if database is None:
        return large
    limit = small_blob_limit()
    if limit is None:
        limit = SMALL_BLOBS if new_registry or _holds_blobs(database) else 0
    if limit <= 0:
        return large
    from .tiered import TieredBlobStore

    return TieredBlobStore(DatabaseBlobStore(database, shares_log=True), large, limit)


def _holds_blobs(database: str) -> bool:
    sql = dialect_for(database)
    conn = sql.connect(database)
    try:
        return bool(sql.has_tables(conn))
    finally:
        conn.close()
