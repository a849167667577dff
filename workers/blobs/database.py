"""The database backend of the blob interface: blobs as rows of chunks in SQLite, PostgreSQL or MySQL/MariaDB.

Three tables (each backend's SQL in its own module, ``sql_sqlite``/``sql_postgres``/``sql_mysql``):

- ``blob_chunks(upload, seq, data)``: the bytes, ``CHUNK`` bytes a row (the last one shorter), written and read
  one row at a time, so memory stays flat whatever a blob weighs;
- ``blob_store(digest, upload, size, chunk, created)``: a blob is visible only once this row names its chunks;
- ``blob_uploads(upload, started)``: chunks being written outside a transaction (a big blob is committed every
  ``COMMIT_EVERY`` bytes so that the database's write lock is not held for the whole copy).

A writer killed mid-blob leaves an upload row and its chunks but no ``blob_store`` row: nothing visible; the
next attempt writes a new upload, and ``sweep_tmp`` removes the old one once it is older than its age limit.

Kept in the registry's own database (``MLEDGER_ARTIFACTS=db``, or the small tier of ``tiered.py``), a blob can
also be written and deleted *inside the log's write transaction* (``put_in`` / ``delete(digest, tx)``): the
bytes commit with the events that reference them (one commit, one fsync) and gc's deletion commits with its
``ArtifactPurged`` events. A separate connection could not do that, and on SQLite it would wait for the lock
its own process holds.

MongoDB (GridFS) would be one more module with these primitives; it is not available on these machines.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import IO, Any

from eventstore.errors import ArtifactError, ValidationError

from .base import Blob, BlobStore, Hasher, Progress, Staged, edge, parse_digest

CHUNK = 1024 * 1024
# A blob written outside a transaction is committed every so many bytes (one fsync each, the write lock
# released in between for the registry's commands).
COMMIT_EVERY = 16 * 1024 * 1024


def dialect_for(url: str) -> ModuleType:
    """The SQL module for a database URL (``sqlite:///path``, ``postgresql://…``, ``mysql://…``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from . import sql_sqlite

        return sql_sqlite
    if scheme in ("postgres", "postgresql"):
        from . import sql_postgres

        return sql_postgres
    if scheme in ("mysql", "mariadb", "mysql+pymysql"):
        from . import sql_mysql

        return sql_mysql
    raise ValidationError(f"not a database URL for blobs: {url.split('@')[-1]!r}")


def is_database_url(url: str) -> bool:
    try:
        dialect_for(url)
    except ValidationError:
        return False
    return True


def fixed_chunks(reader: IO[bytes], size: int) -> Iterator[bytes]:
    """``reader``'s bytes in pieces of exactly ``size`` (the last shorter): a blob's n-th row starts at n*size."""
    buf = bytearray()
    while True:
        data = reader.read(size - len(buf) if buf else size)
        if not data:
            break
        if not buf and len(data) == size:
            yield bytes(data)
            continue
        buf += data
        if len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class ChunkReader(io.RawIOBase):
    """A seekable reader over a blob's chunk rows, fetching one row at a time (format sniffers seek)."""

    def __init__(self, fetch: Any, size: int, chunk: int, digest: str) -> None:
        super().__init__()
        self._fetch, self._size, self._chunk, self._digest = fetch, size, chunk, digest
        self._pos = 0
        self._seq = -1
        self._buf = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        if self._pos >= self._size:
            return 0
        seq, off = divmod(self._pos, self._chunk)
        if seq != self._seq:
            data = self._fetch(seq)
            if data is None:
                raise ArtifactError(f"blob is corrupt (a chunk is missing): {self._digest}")
            self._buf, self._seq = bytes(data), seq
        piece = self._buf[off: off + len(b)]
        if not piece:
            raise ArtifactError(f"blob is corrupt (a chunk is short): {self._digest}")
        n = len(piece)
        b[:n] = piece
        self._pos += n
        return n


class DatabaseBlobStore(BlobStore):
    """Blobs in a database. ``url``: ``sqlite:///path``, ``postgresql://…`` or ``mysql://user@host/db``.
    ``shares_log``: the database is the registry's own (its transactions are the log's: ``put_in`` and
    ``delete(digest, tx)`` write through them)."""

    def __init__(self, url: str, *, statcache: str | os.PathLike[str] | None = None,
                 shares_log: bool = False) -> None:
        super().__init__(statcache=statcache)
        self.root_url = url
        self.sql = dialect_for(url)
        self.shares_log = shares_log
        # Writers of one SQLite file take turns anyway; a server database takes the shards side by side.
        self.parallel_writes = self.sql.PARALLEL
        self._local = threading.local()
        self._pid = os.getpid()
        with edge(f"cannot open the blob tables in {self.sql.describe(url)}"):
            self.sql.create_schema(self._conn())

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_local=None, _pid=-1)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()

    # -- connections ------------------------------------------------------------------------------------

    def _conn(self) -> Any:
        """This thread's connection (a connection is never shared by threads, nor kept across a fork)."""
        if self._pid != os.getpid():
            self._local, self._pid = threading.local(), os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.sql.connect(self.root_url)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def _run(self, conn: Any, statement: str, params: tuple[Any, ...] = ()) -> Any:
        cur = conn.cursor()
        cur.execute(self.sql.q(statement), params)
        return cur

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn()
        self.sql.begin(conn)
        try:
            yield conn
        except BaseException:
            self.sql.rollback(conn)
            raise
        self.sql.commit(conn)

    def _tx_conn(self, tx: Any) -> Any:
        if not self.shares_log:
            raise ValidationError("this blob database is not the registry's: it has no part in the log's transaction")
        return tx.connection

    # -- queries ----------------------------------------------------------------------------------------

    def _info(self, conn: Any, digest: str) -> tuple[str, int, int] | None:
        parse_digest(digest)
        row = self._run(conn, "SELECT upload, size, chunk FROM blob_store WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def exists(self, digest: str) -> bool:
        with edge(f"cannot check blob {digest}"):
            return self._info(self._conn(), digest) is not None

    def size_of(self, digest: str) -> int:
        with edge(f"cannot stat blob {digest}"):
            info = self._info(self._conn(), digest)
        if info is None:
            raise ArtifactError(f"blob missing from the store: {digest}")
        return info[1]

    def open_blob(self, digest: str) -> IO[bytes]:
        with edge(f"cannot read blob {digest}"):
            info = self._info(self._conn(), digest)
        if info is None:
            raise ArtifactError(f"blob missing from the store: {digest}")
        upload, size, chunk = info

        def fetch(seq: int) -> bytes | None:
            with edge(f"cannot read blob {digest}"):
                row = self._run(self._conn(), "SELECT data FROM blob_chunks WHERE upload = ? AND seq = ?",
                                (upload, seq)).fetchone()
            return None if row is None else bytes(row[0])

        return io.BufferedReader(ChunkReader(fetch, size, chunk, digest), buffer_size=64 * 1024)

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        with edge("cannot list the blob tables"):
            rows = self._run(self._conn(), "SELECT digest, size, created FROM blob_store ORDER BY digest").fetchall()
        for digest, size, created in rows:
            yield str(digest), int(size), float(created)

    # -- writes -----------------------------------------------------------------------------------------

    def write_stream(self, reader: IO[bytes], progress: Progress, expected_hex: str | None,
                     staged: Staged | None = None) -> Blob:
        upload = uuid.uuid4().hex
        hasher = Hasher(progress)
        published = False
        with edge("cannot write blob"):
            with self._transaction() as conn:
                self._run(conn, "INSERT INTO blob_uploads (upload, started) VALUES (?, ?)", (upload, time.time()))
            try:
                conn = self._conn()
                self.sql.begin(conn)
                try:
                    since = 0
                    for seq, data in enumerate(fixed_chunks(reader, CHUNK)):
                        hasher.update(data)
                        self._run(conn, "INSERT INTO blob_chunks (upload, seq, data) VALUES (?, ?, ?)",
                                  (upload, seq, self.sql.binary(data)))
                        since += len(data)
                        if since >= COMMIT_EVERY:
                            self.sql.commit(conn)
                            self.sql.begin(conn)
                            since = 0
                except BaseException:
                    self.sql.rollback(conn)
                    raise
                self.sql.commit(conn)
                if expected_hex is not None and hasher.hex != expected_hex:
                    raise ArtifactError("artifact source changed while it was being stored; try again")
                blob = Blob(f"sha256:{hasher.hex}", hasher.size)
                if staged is not None:
                    staged.append((upload, blob.digest, blob.size))
                    published = True  # the handle now owns the upload
                    return blob
                created = self._publish(upload, blob.digest, blob.size)
                published = True
            finally:
                if not published:
                    self._drop_upload(upload)
        self._count(blob.size if created else 0, deduplicated=not created)
        return blob

    def _publish(self, upload: str, digest: str, size: int) -> bool:
        """Name the upload's chunks as the blob (one row, in one transaction with the upload's end); a blob
        already stored keeps its rows and this upload's are dropped. True if this call created it."""
        with self._transaction() as conn:
            created = self._run(conn, self.sql.INSERT_BLOB, (digest, upload, size, CHUNK, time.time())).rowcount == 1
            if not created:
                self._run(conn, "DELETE FROM blob_chunks WHERE upload = ?", (upload,))
            self._run(conn, "DELETE FROM blob_uploads WHERE upload = ?", (upload,))
        return created

    def _drop_upload(self, upload: str) -> None:
        try:
            with self._transaction() as conn:
                self._run(conn, "DELETE FROM blob_chunks WHERE upload = ?", (upload,))
                self._run(conn, "DELETE FROM blob_uploads WHERE upload = ?", (upload,))
        except Exception:  # noqa: BLE001, S110 - cleanup after a failure; sweep_tmp removes it later
            pass

    def publish_staged(self, staged: Staged) -> None:
        staged.reverse()
        with edge("cannot write blob"):
            while staged:
                upload, digest, size = staged.pop()
                try:
                    created = self._publish(upload, digest, size)
                except BaseException:
                    self._drop_upload(upload)
                    raise
                self._count(size if created else 0, deduplicated=not created)

    def discard_staged(self, staged: Staged) -> None:
        while staged:
            self._drop_upload(staged.pop()[0])

    def put_in(self, tx: Any, data: bytes) -> Blob:
        """Store ``data`` through the log's write transaction ``tx`` (committed with its events, or not at
        all). Only for a database that is the registry's own.

        The blob's row goes first and its chunks only if the row was new (a blob already stored keeps its
        rows): no read before the write. On PostgreSQL the two are one statement whose result nobody reads
        (``sql_postgres.PUT_IN``), so it rides the command's pipeline: reading whether the blob existed was
        the third round trip of a register of a small file (``scripts/profile_pg.py register``: 3 round
        trips and 10 statements, a tag's 2 and 4)."""
        conn = self._tx_conn(tx)
        blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        row = (blob.digest, uuid.uuid4().hex, blob.size, CHUNK, time.time())
        with edge("cannot write blob"):
            if self.sql.PUT_IN is not None:
                pieces = [self.sql.binary(data[start:start + CHUNK]) for start in range(0, len(data), CHUNK)]
                if len(pieces) == 1:
                    self._run(conn, self.sql.PUT_IN, (*row, pieces[0]))
                else:
                    self._run(conn, self.sql.PUT_IN_CHUNKS, (*row, list(range(len(pieces))), pieces))
                # Whether the blob was new is not read (that is the round trip saved): counted as written.
                created = True
            else:
                created = self._run(conn, self.sql.INSERT_BLOB, row).rowcount == 1
                if created:
                    for seq, start in enumerate(range(0, len(data), CHUNK)):
                        self._run(conn, "INSERT INTO blob_chunks (upload, seq, data) VALUES (?, ?, ?)",
                                  (row[1], seq, self.sql.binary(data[start:start + CHUNK])))
        self._count(blob.size if created else 0, deduplicated=not created)
        return blob

    def delete(self, digest: str, tx: Any = None) -> bool:
        parse_digest(digest)
        with edge(f"cannot delete blob {digest}"):
            if tx is not None and self.shares_log:
                return self._delete(tx.connection, digest)
            with self._transaction() as conn:
                return self._delete(conn, digest)

    def _delete(self, conn: Any, digest: str) -> bool:
        info = self._info(conn, digest)
        if info is None:
            return False
        with self.sql.erasing(conn):  # the freed pages zeroed where the database can (sql_sqlite.erasing)
            self._run(conn, "DELETE FROM blob_store WHERE digest = ?", (digest,))
            self._run(conn, "DELETE FROM blob_chunks WHERE upload = ?", (info[0],))
        return True

    def settle_deletes(self) -> bool:
        with edge("cannot settle the deleted blobs"):
            return self.sql.settle_deletes(self._conn())

    def sweep_tmp(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        with edge("cannot sweep temporary blobs"):
            stale = self._run(self._conn(), "SELECT upload FROM blob_uploads WHERE started <= ?",
                              (cutoff,)).fetchall()
            for (upload,) in stale:
                with self._transaction() as conn, self.sql.erasing(conn):
                    self._run(conn, "DELETE FROM blob_chunks WHERE upload = ?", (upload,))
                    removed += self._run(conn, "DELETE FROM blob_uploads WHERE upload = ?", (upload,)).rowcount
        return removed
