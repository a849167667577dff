"""The blob interface: what every artifact store does, and the algorithms built once on top of it.

A backend implements the primitives — ``exists``, ``open_blob``, ``size_of``, ``write_stream`` (put a stream,
optionally staged: written but not yet visible), ``publish_staged``/``discard_staged``, ``delete`` (inside the
log's transaction where the blobs live in the log's database), ``iter_blobs`` and ``sweep_tmp``. On them,
``BlobStore`` builds, once for every backend: ingest of files and folders with manifests, pull with
verification and move-into-place, ``verify``, ``read_blob`` and ``manifest``. A backend may replace a write
step with a faster one of its own (the local store's one-pass copy, ``_put_large_fd``) but never the
algorithm: what is hashed, when a blob becomes visible, how a folder is published.

Blobs are named by digest only (``sha256:<hex>``); events carry digests and never locations, so a blob may
live in any backend and a new backend needs no event change. Nothing here unpickles, imports or otherwise
interprets an artifact's bytes. Driver errors (OS, fsspec, botocore, Azure, the database drivers) become
``ArtifactError`` once, at ``edge``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eventstore.destinations import (
    FORCE_HINT,
    Destination,
    check_destination,
    move_into_place,
    remove_entry,
    set_pull_mark,
)
from eventstore.errors import ArtifactError, ModelLedgerError, PurgedError, ValidationError

from .. import localsource
from ..statcache import FileKey, StatCache, now_ns

CHUNK = 8 * 1024 * 1024
# A folder's files are copied by this many threads at once (a local store's copy then hashes in its own thread).
FOLDER_THREADS = max(1, min(os.cpu_count() or 1, 8))
# ... when it holds at least this many bytes (below, the threads cost more than they bring).
PARALLEL_FOLDER_BYTES = 32 * 1024 * 1024
SMALL_FILE = 1024 * 1024  # read into memory once instead of hashed, then copied (two passes)
MANIFEST_KIND = "manifest"
TMP_DIR = "tmp"
TMP_SUFFIX = ".part"
# A manifest lists paths and digests only; anything far larger than this is not one of ours.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
# A folder artifact's files; checked (with the manifest's size) before any byte is copied.
MAX_FOLDER_FILES = 1_000_000

_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")

Progress = Callable[[int], None] | None
T = TypeVar("T")
# Blobs written for a folder, published together once all of it was copied: each backend's own handles
# (the file stores' are (temp, final path, bytes)).
Staged = list[Any]

_LOCAL_FS: LocalFileSystem | None = None


def local_fs() -> LocalFileSystem:
    """The one local filesystem object (fsspec's URL parsing costs more than a small file's copy)."""
    global _LOCAL_FS
    if _LOCAL_FS is None:
        _LOCAL_FS = LocalFileSystem()
    return _LOCAL_FS


def is_local_path(source: str) -> bool:
    """An absolute local path, as ``ingest.normalize_source`` leaves it (no URL scheme)."""
    return os.path.isabs(source) and "://" not in source


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class FileEntry:
    path: str
    digest: str
    size: int
    mode: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "size": self.size, "mode": self.mode}


@dataclass(frozen=True)
class ArtifactInfo:
    digest: str
    size: int
    kind: str  # "file" or "directory"
    files: tuple[FileEntry, ...]


@dataclass
class StoreStats:
    """Counters of what actually reached the store; mutable on purpose (they are counters, not records)."""

    bytes_written: int = 0
    blobs_written: int = 0
    blobs_deduplicated: int = 0


def parse_digest(digest: str) -> str:
    """Return the hex part of ``sha256:<hex>``; refuse anything else (it would become a path)."""
    m = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if not m:
        raise ValidationError(f"not a sha256 digest: {digest!r}")
    return m.group(1)


def normalize_mode(st_mode: int) -> int:
    # Like git, keep only the executable bit: the umask of whoever copied a folder must not change its digest.
    return 0o755 if st_mode & 0o111 else 0o644


def check_relpath(rel: str) -> str:
    """Refuse a manifest path that could land outside its directory when pulled."""
    if not rel or "\x00" in rel or rel.startswith("/"):
        raise ArtifactError(f"refused artifact path: {rel!r}")
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise ArtifactError(f"refused artifact path: {rel!r}")
    return rel


def manifest_bytes(files: list[FileEntry] | tuple[FileEntry, ...]) -> bytes:
    doc = {"kind": MANIFEST_KIND, "files": [f.to_json() for f in sorted(files, key=lambda f: f.path)]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def is_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, ModelLedgerError):
        return False
    if isinstance(exc, OSError):
        return True
    # botocore/aiobotocore are not imported here (workers may only use fsspec); recognise them by module.
    mod = type(exc).__module__ or ""
    if mod.startswith(("botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp", "azure", "adlfs", "sqlite3",
                       "psycopg", "pymysql")):
        return True
    # adlfs wraps a failed block upload in a plain RuntimeError ("Failed to upload block: ...") from the
    # Azure SDK's error: the cause says whose error it is.
    return isinstance(exc, RuntimeError) and exc.__cause__ is not None and is_driver_error(exc.__cause__)


@contextlib.contextmanager
def edge(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{what}: {detail}") from exc


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself was fsynced
    finally:
        os.close(fd)


class Hasher:
    def __init__(self, progress: Progress) -> None:
        self.h = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def update(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.size += len(chunk)
        if self.progress is not None:
            self.progress(self.size)

    @property
    def hex(self) -> str:
        return self.h.hexdigest()


def read_chunks(reader: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return
        yield chunk




def _read_upto(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of ``fd`` from its start (``pread``: the offset is left alone).

    Sized by the file, not by ``SMALL_FILE``: for a register of a 400 B file, ``fdopen`` + ``read(SMALL_FILE +
    1)`` cost 100–150 µs (a 1 MiB buffer allocated, mapped and shrunk), ``read(401)`` 27–40 µs, ``pread`` 1–2 µs,
    where the whole register costs ~0.9 ms of CPU. A read that comes back short with ``limit - 1`` bytes in
    hand (``_put_fd`` asks for the size ``fstat`` gave plus one) met the end of the file: reading again only to
    be told so was one more system call per register."""
    parts: list[bytes] = []
    got = 0
    while got < limit:
        part = os.pread(fd, limit - got, got)
        if not part:
            break
        parts.append(part)
        got += len(part)
        if got == limit - 1:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def sizeof(result: Any) -> int:
    return result.size if isinstance(result, Blob) else int(result)


def run_parallel(listing: list[Any], put: Callable[[Any, Progress], T], progress: Progress, threads: int) -> list[T]:
    """``put`` every item (``threads`` at a time; in order with one) with its own progress, summed into
    ``progress``. On a pool, the first failure cancels what has not started and is raised
    once the running copies stopped (their temps are staged, so the caller discards them)."""
    if threads <= 1 or len(listing) < 2:
        out: list[T] = []
        done = 0
        for item in listing:
            def sub(n: int, base: int = done) -> None:
                if progress is not None:
                    progress(base + n)

            out.append(put(item, sub))
            done += sizeof(out[-1])
        return out
    lock = threading.Lock()
    seen = [0] * len(listing)
    total = [0]

    def sub_for(i: int) -> Progress:
        if progress is None:
            return None

        def sub(n: int) -> None:
            with lock:
                total[0] += n - seen[i]
                seen[i] = n
                progress(total[0])

        return sub

    with ThreadPoolExecutor(threads, thread_name_prefix="mledger-ingest") as pool:
        futures = [pool.submit(put, item, sub_for(i)) for i, item in enumerate(listing)]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in finished and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            wait(futures)
            raise failed.exception()  # type: ignore[misc]
    return [f.result() for f in futures]


class BlobStore(ABC):
    """A content-addressed store of blobs (see the module's docstring for the split of work)."""

    root_url: str = ""
    # A local filesystem store: pulls refuse to write inside it (``guarded_roots``).
    local: bool = False
    # Several files of a folder may be written at once (threads): False where writers serialise anyway.
    parallel_writes: bool = False

    def __init__(self, *, statcache: str | os.PathLike[str] | None = None) -> None:
        """``statcache``: the stat cache file (``workers/statcache.py``) that lets an unchanged local source
        skip its hashing; None: every source is read."""
        self.statcache = StatCache(statcache) if statcache is not None else None
        self.stats = StoreStats()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, stats=StoreStats())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _count(self, written: int, deduplicated: bool) -> None:
        with self._lock:
            self.stats.bytes_written += written
            if deduplicated:
                self.stats.blobs_deduplicated += 1
            else:
                self.stats.blobs_written += 1

    def guarded_roots(self) -> tuple[str, ...]:
        """Local folders a pull must never write into (the store's own files)."""
        return ()

    def writes_in_transaction(self, size: int) -> bool:
        """Would a blob of ``size`` bytes be written by the log's write transaction of the command that records
        it, with nothing else reached on the way (no network, no file written)? Then that command touches the
        registry's database alone (the server runs such writes on its event loop). No, here: a blob is written
        by the store itself."""
        del size
        return False

    def _exists_for_write(self, digest: str) -> bool:
        """``exists`` as a write's dedup check sees it (its errors are the write's: "cannot write blob")."""
        return self.exists(digest)

    # -- primitives (each backend) ----------------------------------------------------------------------

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """Is the blob stored (whole: a blob is visible only once all its bytes are)?"""

    @abstractmethod
    def open_blob(self, digest: str) -> IO[bytes]:
        """A seekable binary reader of the blob; ``ArtifactError`` ("missing") if it is not stored."""

    @abstractmethod
    def size_of(self, digest: str) -> int:
        """The blob's size; ``ArtifactError`` ("missing") if it is not stored."""

    @abstractmethod
    def write_stream(self, reader: IO[bytes], progress: Progress, expected_hex: str | None,
                     staged: Staged | None = None) -> Blob:
        """Copy ``reader`` while hashing it and publish it under its digest (a stored digest is kept and
        counted deduplicated) — or, with ``staged``, write it where nobody sees it and append a handle that
        ``publish_staged`` makes visible. ``expected_hex``: the digest an earlier pass computed; a
        mismatch means the source changed: nothing is published."""

    @abstractmethod
    def publish_staged(self, staged: Staged) -> None:
        """Make every staged blob visible (one already stored is kept)."""

    @abstractmethod
    def discard_staged(self, staged: Staged) -> None:
        """Drop what ``staged`` still holds (after a failure, or after ``publish_staged``: nothing)."""

    @abstractmethod
    def delete(self, digest: str, tx: Any = None) -> bool:
        """Remove a blob (gc); idempotent; True if something was removed. ``tx``: the log's write transaction;
        a backend keeping blobs in the log's database deletes through it, so the deletion commits with
        gc's ``ArtifactPurged`` events (the others ignore it)."""

    def settle_deletes(self) -> bool:
        """After gc's deletions committed: leave no other copy of the deleted bytes where this backend keeps
        one it can drop (SQLite's write-ahead log). True when done; False when nothing could be done now, or
        there is nothing of the kind (files, object stores: the deleted object is the only copy)."""
        return False

    @abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """Every stored blob as (digest, size, modified time): what gc compares with the catalog."""

    @abstractmethod
    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Remove what killed writers left (never visible as blobs), older than the given age; how many."""

    # -- built on the primitives, once ------------------------------------------------------------------

    def read_blob(self, digest: str, limit: int | None = None) -> bytes:
        """Read a whole (small) blob, verified against its digest."""
        hexd = parse_digest(digest)
        with self.open_blob(digest) as f, edge(f"cannot read blob {digest}"):
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise ArtifactError(f"blob too large to read whole: {digest}")
        if hashlib.sha256(data).hexdigest() != hexd:
            raise ArtifactError(f"blob is corrupt (digest mismatch): {digest}")
        return data

    def verify(self, digest: str) -> bool:
        """Rehash the blob: True only if it is present and its bytes match its name."""
        hexd = parse_digest(digest)
        try:
            f = self.open_blob(digest)
        except ArtifactError:
            return False
        h = hashlib.sha256()
        with f, edge(f"cannot read blob {digest}"):
            for chunk in read_chunks(f):
                h.update(chunk)
        return h.hexdigest() == hexd

    def manifest(self, digest: str) -> list[FileEntry]:
        data = self.read_blob(digest, limit=MAX_MANIFEST_BYTES)
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
                raise ValueError("not a manifest")
            entries = [
                FileEntry(path=str(e["path"]), digest=str(e["digest"]), size=int(e["size"]), mode=int(e["mode"]))
                for e in doc["files"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"blob is not a directory manifest: {digest}") from exc
        seen = set()
        for e in entries:
            check_relpath(e.path)
            parse_digest(e.digest)
            if e.path in seen:
                raise ArtifactError(f"manifest {digest} lists {e.path!r} twice")
            seen.add(e.path)
        return entries

    # -- writes -----------------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, staged: Staged | None = None) -> Blob:
        hexd = hashlib.sha256(data).hexdigest()
        blob = Blob(f"sha256:{hexd}", len(data))
        with edge("cannot write blob"):
            if self._exists_for_write(blob.digest):
                self._count(0, deduplicated=True)
                return blob
            return self.write_stream(io.BytesIO(data), None, expected_hex=hexd, staged=staged)

    def put_stream(self, reader: IO[bytes], progress: Progress = None) -> Blob:
        """Store what ``reader`` yields (single pass: the bytes go to a temp name before dedup is known)."""
        with edge("cannot write blob"):
            return self.write_stream(reader, progress, expected_hex=None)

    def put_file(self, source: str, progress: Progress = None, staged: Staged | None = None) -> Blob:
        """Store one file given as a local path or fsspec URL; an already stored content writes nothing.

        Two passes: hash first and stop if the blob exists (re-registering an unchanged artifact copies
        nothing), else copy through a temp name while hashing again, which also catches a source that
        changed between the passes. A local file is read through one descriptor, checked on it.
        """
        fs, path = self._source(source)
        if isinstance(fs, LocalFileSystem):
            fd, _st = localsource.open_root(path, source)
            try:
                if stat.S_ISDIR(_st.st_mode):
                    raise ArtifactError(f"artifact source is a folder, not a file: {source}")
                return self._put_fd(fd, source, progress, staged)
            finally:
                os.close(fd)
        with edge(f"cannot read artifact source {source}"):
            hasher = Hasher(progress)
            with self._open_source(fs, path, source) as f:
                for chunk in read_chunks(f):
                    hasher.update(chunk)
        blob = Blob(f"sha256:{hasher.hex}", hasher.size)
        with edge(f"cannot write blob for {source}"):
            if self._exists_for_write(blob.digest):
                self._count(0, deduplicated=True)
                return blob
            with self._open_source(fs, path, source) as f:
                return self.write_stream(f, progress, expected_hex=hasher.hex, staged=staged)

    def _put_fd(self, fd: int, shown: str, progress: Progress, staged: Staged | None, *,
                in_parallel: bool = False) -> Blob:
        """Store the regular file open at ``fd`` (the caller opened and checked it; this never reopens it).

        A file the stat cache knows unchanged is not read at all when its blob is stored. Otherwise the
        backend's ``_put_large_fd`` stores it (a local store copies it in one pass; by default the file is
        hashed first, so a stored blob is never uploaded again). ``in_parallel``: other files are being
        stored at the same time, one per core (a local copy then hashes in its own thread)."""
        st = os.fstat(fd)
        if st.st_size <= SMALL_FILE:
            with edge(f"cannot read artifact source {shown}"):
                data = _read_upto(fd, st.st_size + 1)
            # A file that grew since the fstat takes the path below, which reads it whole and refuses a change.
            if len(data) <= st.st_size:
                # A small file is read once: hashed and, unless stored already, written from memory. (The
                # stat cache would cost more than the hash here: ~2 GB/s means 0.5 ms for 1 MiB.)
                if progress is not None:
                    progress(len(data))
                return self.put_bytes(data, staged)
        with os.fdopen(fd, "rb", closefd=False) as f:
            key = FileKey.of(st)
            cache = self.statcache
            if cache is not None:
                known = cache.lookup(key)
                if known is not None and self._stored_size(known) == st.st_size:
                    self._count(0, deduplicated=True)
                    if progress is not None:
                        progress(st.st_size)
                    return Blob(known, st.st_size)
            started = now_ns()
            with edge(f"cannot read artifact source {shown}"):
                f.seek(0)
            blob = self._put_large_fd(fd, f, st, shown, progress, staged, in_parallel=in_parallel)
        if cache is not None:
            cache.remember(key, blob.digest, started)
        return blob

    def _stored_size(self, digest: str) -> int:
        """The size of a stored blob; -1 if there is none (or it cannot be seen)."""
        try:
            return self.size_of(digest)
        except ArtifactError:
            return -1

    def _put_large_fd(self, fd: int, f: IO[bytes], st: os.stat_result, shown: str, progress: Progress,
                      staged: Staged | None, *, in_parallel: bool = False) -> Blob:
        """Store a local file past ``SMALL_FILE`` (``f`` reads ``fd`` from its start): hash it, then write it
        only if no blob has its digest (the write hashes again and refuses a source that changed)."""
        del fd, st, in_parallel
        hasher = Hasher(progress)
        with edge(f"cannot read artifact source {shown}"):
            for chunk in read_chunks(f):
                hasher.update(chunk)
            f.seek(0)
        blob = Blob(f"sha256:{hasher.hex}", hasher.size)
        with edge(f"cannot write blob for {shown}"):
            if self._exists_for_write(blob.digest):
                self._count(0, deduplicated=True)
                return blob
            return self.write_stream(f, progress, expected_hex=hasher.hex, staged=staged)

    def _source(self, source: str) -> tuple[fsspec.AbstractFileSystem, str]:
        if is_local_path(source):
            return local_fs(), os.path.normpath(source)
        with edge(f"artifact source not usable: {source}"):
            fs, path = fsspec.core.url_to_fs(source)
        if isinstance(fs, LocalFileSystem):
            path = os.path.abspath(path)
        return fs, path

    @staticmethod
    def _open_source(fs: fsspec.AbstractFileSystem, path: str, source: str) -> IO[bytes]:
        try:
            return fs.open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            raise ArtifactError(f"artifact source not found: {source}") from None

    # -- artifacts --------------------------------------------------------------------------------------

    def ingest(self, source: str, progress: Progress = None, *, beneath: str | None = None) -> ArtifactInfo:
        """Store a file or a directory (local path or fsspec URL) and describe it.

        A folder is listed whole first (names, count and manifest size checked before any byte is copied);
        its blobs are copied to temporaries and published together at the end, so a refused folder leaves
        nothing outside the store's temporaries. ``beneath``: a local source must stay inside that folder
        (a worker reading under an ``MLEDGER_SOURCES`` prefix: no link may lead it out)."""
        fs, path = self._source(source)
        if isinstance(fs, LocalFileSystem):
            return self._ingest_local(path, source, progress, beneath)
        with edge(f"artifact source not found: {source}"):
            fs.invalidate_cache(path)
            try:
                is_dir = fs.isdir(path)
                if not is_dir and not fs.exists(path):
                    raise FileNotFoundError(path)
            except FileNotFoundError:
                raise ArtifactError(f"artifact source not found: {source}") from None
        if not is_dir:
            blob = self.put_file(source, progress)
            name = posixpath.basename(path.rstrip("/")) or "artifact"
            entry = FileEntry(path=name, digest=blob.digest, size=blob.size, mode=0o644)
            return ArtifactInfo(digest=blob.digest, size=blob.size, kind="file", files=(entry,))
        listing = self._list_remote(fs, path)
        if len(listing) > MAX_FOLDER_FILES:
            raise ArtifactError(f"the artifact directory has more than {MAX_FOLDER_FILES:,} files")
        for rel, _full, _mode in listing:
            check_relpath(rel)
        staged: Staged = []

        def put(item: tuple[str, str, int], sub: Progress) -> Blob:
            return self.put_file(fs.unstrip_protocol(item[1]), sub, staged)

        return self._ingest_folder(listing, lambda item: (item[0], item[2]), put, staged, progress,
                                   threads=FOLDER_THREADS if self.parallel_writes else 1)

    def _ingest_local(self, path: str, source: str, progress: Progress, beneath: str | None = None) -> ArtifactInfo:
        root_fd, st = localsource.open_root(path, source, beneath)
        try:
            if stat.S_ISREG(st.st_mode):
                name = os.path.basename(path.rstrip(os.sep)) or "artifact"
                localsource.check_name(name, "")
                blob = self._put_fd(root_fd, source, progress, None)
                entry = FileEntry(path=name, digest=blob.digest, size=blob.size, mode=normalize_mode(st.st_mode))
                return ArtifactInfo(digest=blob.digest, size=blob.size, kind="file", files=(entry,))
            try:
                listing = list(localsource.list_folder(root_fd, os.path.realpath(path), max_files=MAX_FOLDER_FILES,
                                                       max_names_bytes=MAX_MANIFEST_BYTES))
            except PermissionError as exc:
                raise ArtifactError(f"artifact source not readable: {source}: {exc.filename or exc}") from None
            for e in listing:
                check_relpath(e.path)
            staged: Staged = []

            parallel = self.parallel_writes and sum(e.size for e in listing) >= PARALLEL_FOLDER_BYTES

            def put(e: localsource.LocalEntry, sub: Progress) -> Blob:
                fd = localsource.open_file(root_fd, e)
                try:
                    return self._put_fd(fd, e.path, sub, staged, in_parallel=parallel)
                finally:
                    os.close(fd)

            return self._ingest_folder(listing, lambda e: (e.path, e.mode), put, staged, progress,
                                       threads=FOLDER_THREADS if parallel else 1)
        finally:
            os.close(root_fd)

    def _ingest_folder(self, listing: list[Any], describe: Callable[[Any], tuple[str, int]],
                       put: Callable[[Any, Progress], Blob], staged: Staged, progress: Progress,
                       threads: int = 1) -> ArtifactInfo:
        """Store every listed file (``threads`` at a time: a sharded checkpoint's shards are hashed and copied
        in parallel), then the manifest; the blobs are published together once all of them were copied."""
        try:
            blobs = run_parallel(listing, put, progress, threads)
            entries = []
            for item, blob in zip(listing, blobs, strict=True):
                rel, mode = describe(item)
                entries.append(FileEntry(path=rel, digest=blob.digest, size=blob.size, mode=mode))
            entries.sort(key=lambda e: e.path)
            man = self.put_bytes(manifest_bytes(entries), staged)
            self.publish_staged(staged)
        finally:
            self.discard_staged(staged)
        return ArtifactInfo(digest=man.digest, size=sum(e.size for e in entries), kind="directory",
                            files=tuple(entries))

    @staticmethod
    def _list_remote(fs: fsspec.AbstractFileSystem, root: str) -> list[tuple[str, str, int]]:
        fs.invalidate_cache(root)
        root = root.rstrip("/")
        found = fs.find(root, withdirs=False, detail=True)
        out = []
        for name, info in sorted(found.items()):
            if info.get("type") == "directory":
                continue
            rel = name[len(root) + 1 :] if name.startswith(root + "/") else name
            out.append((rel, name, 0o644))
        return out

    # -- pull -------------------------------------------------------------------------------------------

    def pull(
        self,
        digest: str,
        kind: str,
        dest: str,
        *,
        overwrite: bool = False,
        purged: bool = False,
        progress: Progress = None,
        protected: tuple[str, ...] = (),
    ) -> None:
        """Write the artifact to ``dest`` verifying every digest; on any failure ``dest`` is as it was.

        A local ``dest`` is checked by ``eventstore.destinations`` (never the current folder or above it,
        never inside ``protected`` or this store; with ``overwrite`` only a regular file or a folder an
        earlier pull wrote is replaced). ``purged=True`` tells us gc freed the bytes, so a missing blob
        becomes ``PurgedError``.
        """
        if kind not in ("file", "directory"):
            raise ValidationError(f"unknown artifact kind: {kind!r}")
        dest = os.fspath(dest)
        if not isinstance(dest, str) or not dest.strip():
            raise ValidationError("destination is empty")  # fsspec would read '' as the current folder
        try:
            fs, path = self._source(dest)
        except ValueError as exc:  # fsspec: "Protocol not known: nosuch"
            raise ValidationError(f"destination not usable: {dest}: {exc}") from None
        target = None
        if isinstance(fs, LocalFileSystem):
            guard = (*protected, *self.guarded_roots())
            # A plain path is checked as typed (its last part may be '.' or '..'); a file:// URL as fsspec read it.
            target = check_destination(dest if "://" not in dest else path, overwrite=overwrite, protected=guard)

        def require(d: str) -> None:
            if not self.exists(d):
                if purged:
                    raise PurgedError(f"artifact {digest} was purged by gc; its record remains")
                raise ArtifactError(f"blob missing from the store: {d}")

        require(digest)
        if kind == "file":
            entries = [FileEntry(path="", digest=digest, size=-1, mode=0o644)]
        else:
            entries = self.manifest(digest)
        for e in entries:
            require(e.digest)
        with edge(f"cannot write {dest}"):
            if target is not None:
                self._pull_local(entries, kind, digest, target, progress)
            else:
                try:
                    self._pull_remote(fs, entries, kind, path, dest, overwrite, progress)
                except NotImplementedError:  # fsspec's answer for a read-only filesystem (http://)
                    raise ArtifactError(f"cannot write {dest}: its filesystem cannot be written to") from None

    @staticmethod
    def _pull_threads(entries: list[FileEntry], remote: bool = False) -> int:
        """Files pulled at once: several for a folder worth it (a remote destination's round trips always
        are), each verified on its own."""
        if len(entries) < 2 or (not remote and sum(max(e.size, 0) for e in entries) < PARALLEL_FOLDER_BYTES):
            return 1
        return FOLDER_THREADS

    def _copy_verified(self, entry: FileEntry, out: IO[bytes], progress: Progress, base: int) -> int:
        hexd = parse_digest(entry.digest)
        h = hashlib.sha256()
        n = 0
        with self.open_blob(entry.digest) as f:
            for chunk in read_chunks(f):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
                if progress is not None:
                    progress(base + n)
        if h.hexdigest() != hexd or (entry.size >= 0 and n != entry.size):
            raise ArtifactError(f"blob is corrupt (digest mismatch): {entry.digest}")
        return n

    @staticmethod
    def _create_pulled(path: str, mode: int) -> IO[bytes]:
        # Only the executable bit comes from the manifest, and the umask applies: a crafted manifest's 0o777
        # must not make the pulled model writable by everyone.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o777 if mode & 0o111 else 0o666)
        return open(fd, "wb")  # noqa: SIM115 - the caller closes it

    def _pull_local(
        self, entries: list[FileEntry], kind: str, digest: str, dest: Destination, progress: Progress
    ) -> None:
        os.makedirs(dest.parent, exist_ok=True)
        tmp = dest.temp_name(TMP_SUFFIX)
        try:
            if kind == "file":
                with self._create_pulled(tmp, 0o644) as out:
                    self._copy_verified(entries[0], out, progress, 0)
                    out.flush()
                    os.fsync(out.fileno())
            else:
                os.mkdir(tmp)
                for e in entries:
                    os.makedirs(os.path.dirname(os.path.join(tmp, *e.path.split("/"))), exist_ok=True)

                def copy(e: FileEntry, sub: Progress) -> int:
                    with self._create_pulled(os.path.join(tmp, *e.path.split("/")), e.mode) as out:
                        n = self._copy_verified(e, out, sub, 0)
                        out.flush()
                        os.fsync(out.fileno())
                    return n

                run_parallel(entries, copy, progress, self._pull_threads(entries))
                set_pull_mark(tmp, digest)
            move_into_place(tmp, dest)
            fsync_dir(dest.parent)
        except BaseException:
            remove_entry(tmp)
            raise

    def _pull_remote(
        self,
        fs: fsspec.AbstractFileSystem,
        entries: list[FileEntry],
        kind: str,
        dest: str,
        shown: str,
        overwrite: bool,
        progress: Progress,
    ) -> None:
        # Object stores have no rename: write everything under a temp prefix, verify, then move. Each object
        # appears atomically; a directory's objects appear one by one during the final move.
        dest = dest.rstrip("/")
        if not dest:
            raise ValidationError(f"refused destination {shown!r}: the root of a filesystem")
        fs.invalidate_cache(dest)
        if fs.exists(dest) and not overwrite:
            raise ArtifactError(f"destination exists: {shown} ({FORCE_HINT})")
        tmp = f"{dest}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            def copy(e: FileEntry, sub: Progress) -> int:
                with fs.open(tmp if kind == "file" else f"{tmp}/{e.path}", "wb") as out:
                    return self._copy_verified(e, out, sub, 0)

            run_parallel(entries, copy, progress, self._pull_threads(entries, remote=True))
            if fs.exists(dest):
                fs.rm(dest, recursive=True)
            if kind == "file":
                fs.mv(tmp, dest)
            else:
                for e in entries:
                    fs.mv(f"{tmp}/{e.path}", f"{dest}/{e.path}")
            fs.invalidate_cache(dest)
        finally:
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.invalidate_cache(tmp)
                if fs.exists(tmp):
                    fs.rm(tmp, recursive=True)
