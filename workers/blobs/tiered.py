"""Two backends as one store: blobs up to ``limit`` bytes in the registry's database, larger ones in the file
(or object) store.

Reads look in both (the database first), so a registry whose blobs all live in files — every registry made
before this tier existed — needs no migration: its old blobs stay where they are, found as before. Writes go
by size. ``deferring()`` gives a view for one command: its small blobs are held in memory (they are at most
``limit`` bytes each) and written by ``commit_deferred(tx)`` inside the log's write transaction, so a
``register`` of a small file commits bytes and events together, once.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import IO, Any

from .base import Blob, BlobStore, Progress, Staged
from .database import DatabaseBlobStore

SMALL = "small"
LARGE = "large"


class TieredBlobStore(BlobStore):
    def __init__(self, small: DatabaseBlobStore, large: BlobStore, limit: int) -> None:
        super().__init__()
        self.small, self.large, self.limit = small, large, limit
        self.statcache = large.statcache
        self.stats = large.stats
        small.stats = large.stats  # one set of counters for the whole store
        self.root_url = large.root_url
        self.local = large.local
        self.parallel_writes = large.parallel_writes
        self._deferred: dict[str, bytes] | None = None
        self._before_large: Callable[[], None] | None = None

    def close(self) -> None:
        self.small.close()

    def guarded_roots(self) -> tuple[str, ...]:
        return self.large.guarded_roots()

    def writes_in_transaction(self, size: int) -> bool:
        """A small blob is held by a ``deferring()`` view and written by the command's transaction; the file
        tier is asked first whether it holds it, which costs a ``stat`` only when it is a local folder."""
        return self.large.local and 0 <= size <= self.limit

    # -- deferral: small blobs written with the command's events --------------------------------------

    def deferring(self, before_large: Callable[[], None] | None = None) -> TieredBlobStore:
        """A view of this store for one command: its small blobs wait in memory for ``commit_deferred``.
        ``before_large`` is called before anything is read for, or written to, the file tier (a blob past the
        limit: written outside the command's transaction); what it raises stops the write."""
        # What ``copy.copy`` does (through ``__getstate__``: a view counts in its own stats, with its own lock),
        # without its generic dispatch: one view per register.
        view = object.__new__(type(self))
        view.__setstate__(self.__getstate__())
        view._deferred = {}
        view._before_large = before_large
        return view

    def _to_large(self) -> None:
        if self._before_large is not None:
            self._before_large()

    @property
    def deferred(self) -> dict[str, bytes]:
        return dict(self._deferred or {})

    def commit_deferred(self, tx: Any) -> list[str]:
        """Write the held small blobs through the log's transaction ``tx``; the digests written."""
        held = self._deferred or {}
        for data in held.values():
            self.small.put_in(tx, data)
        return list(held)

    # -- primitives ---------------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        if self._deferred and digest in self._deferred:
            return True
        return self.small.exists(digest) or self.large.exists(digest)

    def _exists_for_write(self, digest: str) -> bool:
        if self._deferred and digest in self._deferred:
            return True
        return self.small.exists(digest) or self.large._exists_for_write(digest)

    def _where(self, digest: str) -> BlobStore:
        return self.small if self.small.exists(digest) else self.large

    def open_blob(self, digest: str) -> IO[bytes]:
        if self._deferred and digest in self._deferred:
            return io.BytesIO(self._deferred[digest])
        return self._where(digest).open_blob(digest)

    def size_of(self, digest: str) -> int:
        if self._deferred and digest in self._deferred:
            return len(self._deferred[digest])
        return self._where(digest).size_of(digest)

    def put_bytes(self, data: bytes, staged: Staged | None = None) -> Blob:
        if len(data) > self.limit:
            return self._large_put_bytes(data, staged)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self._deferred is not None:
            # Held for the command's transaction, whose ``put_in`` asks the database tier whether the blob is
            # there (under the write lock, so race-free with gc) and writes nothing if it is. Asking here too
            # cost a read transaction on the store's second connection per register (~25 µs, and its cache
            # of the pages the last commit changed read again). Only the file tier is asked now: a blob it
            # holds stays the one copy.
            if digest in self._deferred or self.large._exists_for_write(digest):
                self._count(0, deduplicated=True)
            else:
                self._deferred[digest] = bytes(data)
            return Blob(digest, len(data))
        if self._exists_for_write(digest):
            self._count(0, deduplicated=True)
            return Blob(digest, len(data))
        return self._small_put_bytes(data, staged)

    def _small_put_bytes(self, data: bytes, staged: Staged | None) -> Blob:
        inner: Staged | None = [] if staged is not None else None
        blob = self.small.put_bytes(data, inner)
        if staged is not None:
            staged.extend((SMALL, h) for h in inner or ())
        return blob

    def _large_put_bytes(self, data: bytes, staged: Staged | None) -> Blob:
        self._to_large()
        inner: Staged | None = [] if staged is not None else None
        blob = self.large.put_bytes(data, inner)
        if staged is not None:
            staged.extend((LARGE, h) for h in inner or ())
        return blob

    def write_stream(self, reader: IO[bytes], progress: Progress, expected_hex: str | None,
                     staged: Staged | None = None) -> Blob:
        head = b""
        while len(head) <= self.limit:  # a short read is not the end: only an empty one is
            more = reader.read(self.limit + 1 - len(head))
            if not more:
                break
            head += more
        if len(head) <= self.limit:
            if progress is not None:
                progress(len(head))
            if expected_hex is not None and hashlib.sha256(head).hexdigest() != expected_hex:
                from eventstore.errors import ArtifactError

                raise ArtifactError("artifact source changed while it was being stored; try again")
            return self.put_bytes(head, staged)
        self._to_large()
        inner: Staged | None = [] if staged is not None else None
        blob = self.large.write_stream(_Chained(head, reader), progress, expected_hex, inner)
        if staged is not None:
            staged.extend((LARGE, h) for h in inner or ())
        return blob

    def _put_large_fd(self, fd: int, f: IO[bytes], st: Any, shown: str, progress: Progress,
                      staged: Staged | None, *, in_parallel: bool = False) -> Blob:
        if st.st_size <= self.limit:  # SMALL_FILE is below the limit: not reached with the defaults
            return super()._put_large_fd(fd, f, st, shown, progress, staged)
        self._to_large()
        inner: Staged | None = [] if staged is not None else None
        blob = self.large._put_large_fd(fd, f, st, shown, progress, inner, in_parallel=in_parallel)
        if staged is not None:
            staged.extend((LARGE, h) for h in inner or ())
        return blob

    def _split(self, staged: Staged) -> tuple[Staged, Staged]:
        small = [h for tier, h in staged if tier == SMALL]
        large = [h for tier, h in staged if tier == LARGE]
        staged.clear()
        return small, large

    def publish_staged(self, staged: Staged) -> None:
        small, large = self._split(staged)
        try:
            self.large.publish_staged(large)
            self.small.publish_staged(small)
        finally:
            self.large.discard_staged(large)
            self.small.discard_staged(small)

    def discard_staged(self, staged: Staged) -> None:
        small, large = self._split(staged)
        self.large.discard_staged(large)
        self.small.discard_staged(small)

    def delete(self, digest: str, tx: Any = None) -> bool:
        removed = self.small.delete(digest, tx)
        return self.large.delete(digest, tx) or removed

    def settle_deletes(self) -> bool:
        settled = self.small.settle_deletes()
        return self.large.settle_deletes() or settled

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        yield from self.small.iter_blobs()
        yield from self.large.iter_blobs()

    def sweep_tmp(self, older_than_seconds: float) -> int:
        return self.small.sweep_tmp(older_than_seconds) + self.large.sweep_tmp(older_than_seconds)


class _Chained(io.RawIOBase):
    """``head`` (already read) followed by the rest of ``reader``."""

    def __init__(self, head: bytes, reader: IO[bytes]) -> None:
        super().__init__()
        self._head, self._reader = head, reader

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._reader.read(n)
