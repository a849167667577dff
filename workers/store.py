"""Content-addressed blob store rooted at any fsspec URL.

Blobs live at ``<root>/sha256/ab/cd/<hex>``. A directory artifact is stored as one blob per file plus a
manifest blob (canonical JSON) whose digest is the artifact's digest. Nothing here unpickles, imports or
otherwise interprets an artifact's bytes.

Errors from fsspec, botocore and the OS are translated into ``ArtifactError`` once, here, so callers only
ever see the project's own exception types.
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
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, Any

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
from eventstore.permissions import Modes, make_folder, make_root, modes_under

from . import localsource
from .statcache import FileKey, StatCache, now_ns

CHUNK = 8 * 1024 * 1024
# One-pass ingest of a local file: PIPE_BUFFERS buffers of PIPE_CHUNK bytes in flight (bounded memory), each
# read, then hashed by a second thread (hashlib releases the GIL) while this one writes it. 1 MiB buffers stay
# in the CPU cache between the write and the hash; in paired runs on the shared 2-core machine (load 5-6)
# they beat 8 MiB ones (median ~370 vs ~270 MB/s for 1 GiB) and 256 KiB ones (~215). copy_file_range with
# the hash thread reading the copy back was not chosen: it hashes what it reads again, not what it wrote.
PIPE_CHUNK = 1024 * 1024
PIPE_BUFFERS = 4
# A folder's files are copied by this many threads at once (each with its own hashing thread).
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
# Temps written for a folder, published together once all of it was copied: (temp, final path, bytes).
Staged = list[tuple[str, str, int]]

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


# -- Aliyun OSS through its S3-compatible API ---------------------------------------------------------------
OSS_SCHEME = "oss://"
_OSS_HOST_RE = re.compile(r"^(?:s3\.)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")


def oss_as_s3(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``oss://bucket/prefix`` as s3fs options for OSS's S3-compatible endpoint.

    fsspec's own ``oss`` protocol needs ossfs (not a dependency); OSS speaks the S3 API, so s3fs does with:
    the endpoint from MLEDGER_OSS_ENDPOINT or OSS_ENDPOINT (else ``https://oss-<OSS_REGION>.aliyuncs.com``);
    virtual-hosted addressing (OSS refuses path-style requests); checksums only when required (botocore
    >= 1.36 otherwise streams uploads with aws-chunked encoding, which OSS refuses: its error 0017-00000804);
    credentials from OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET (/ OSS_SESSION_TOKEN), else the AWS chain.
    """
    env = os.environ
    endpoint = env.get("MLEDGER_OSS_ENDPOINT") or env.get("OSS_ENDPOINT")
    if not endpoint and env.get("OSS_REGION"):
        endpoint = f"https://oss-{env['OSS_REGION']}.aliyuncs.com"
    if not endpoint and "endpoint_url" not in options:
        raise ValidationError("an oss:// artifact store needs MLEDGER_OSS_ENDPOINT "
                              "(https://oss-<region>.aliyuncs.com) or OSS_REGION")
    opts = dict(options)
    if endpoint:
        opts.setdefault("endpoint_url", endpoint if "://" in endpoint else f"https://{endpoint}")
    if env.get("OSS_ACCESS_KEY_ID") and env.get("OSS_ACCESS_KEY_SECRET") and "key" not in opts:
        opts.update(key=env["OSS_ACCESS_KEY_ID"], secret=env["OSS_ACCESS_KEY_SECRET"])
        if env.get("OSS_SESSION_TOKEN"):
            opts.setdefault("token", env["OSS_SESSION_TOKEN"])
    config = dict(opts.get("config_kwargs") or {})
    config["s3"] = {"addressing_style": "virtual", **dict(config.get("s3") or {})}
    config.setdefault("request_checksum_calculation", "when_required")
    config.setdefault("response_checksum_validation", "when_required")
    opts["config_kwargs"] = config
    host = opts["endpoint_url"].split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    region = env.get("OSS_REGION") or (m.group(1) if (m := _OSS_HOST_RE.match(host)) else None)
    if region:
        opts["client_kwargs"] = {"region_name": region, **dict(opts.get("client_kwargs") or {})}
    return "s3://" + url[len(OSS_SCHEME):], opts


def _is_azure(fs: fsspec.AbstractFileSystem) -> bool:
    return type(fs).__module__.startswith("adlfs")


def _await_azure_copy(fs: fsspec.AbstractFileSystem, path: str, timeout: float = 3600.0) -> None:
    """Wait until a Copy Blob into ``path`` finished. adlfs' copy only *starts* it (start_copy_from_url); Azure
    says a copy inside one account "can complete synchronously", not that it must. Returning only once the
    status is success means this process never reports a blob stored before its bytes are all there."""
    from fsspec.asyn import sync

    container, blob, _ = fs.split_path(path)

    async def status() -> tuple[str | None, str | None]:
        async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
            copy = (await bc.get_blob_properties()).copy
            return copy.status, copy.status_description

    deadline = time.monotonic() + timeout
    while True:
        state, detail = sync(fs.loop, status)
        if state in (None, "success"):
            return
        if state != "pending" or time.monotonic() > deadline:
            raise ArtifactError(f"server-side copy to {path} ended {state}: {detail or 'no detail'}")
        time.sleep(0.2)


def _is_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, ModelLedgerError):
        return False
    if isinstance(exc, OSError):
        return True
    # botocore/aiobotocore are not imported here (workers may only use fsspec); recognise them by module.
    mod = type(exc).__module__ or ""
    if mod.startswith(("botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp", "azure", "adlfs")):
        return True
    # adlfs wraps a failed block upload in a plain RuntimeError ("Failed to upload block: ...") from the
    # Azure SDK's error: the cause says whose error it is.
    return isinstance(exc, RuntimeError) and exc.__cause__ is not None and _is_driver_error(exc.__cause__)


@contextlib.contextmanager
def _edge(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not _is_driver_error(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{what}: {detail}") from exc


def _fsync_dir(path: str) -> None:
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


def _makedirs(path: str, mode: int = 0o700) -> list[str]:
    """mkdir -p with exactly ``mode``; returns the folders whose entries changed (to fsync), deepest first."""
    try:
        if not make_folder(path, mode):
            return []
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        above = _makedirs(parent, mode)
        if not make_folder(path, mode):
            return above
        return [parent, *above]
    return [os.path.dirname(path)]


def _link_new(tmp: str, final: str) -> bool:
    """Give a finished temp its final name; False if a blob is already there. (FileNotFoundError: no folder.)"""
    try:
        # link() refuses to overwrite: an existing blob is never rewritten, even in a race.
        os.link(tmp, final)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise
    except OSError:
        # Filesystems without hard links: same-content replace is the best left; check first.
        if os.path.exists(final):
            return False
        os.replace(tmp, final)
    return True


def _makedirs_durable(path: str, mode: int = 0o700) -> None:
    """mkdir -p that fsyncs each parent of a newly created directory, so the new entry survives a crash."""
    for parent in reversed(_makedirs(path, mode)):
        _fsync_dir(parent)


class _Hasher:
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


def _read_chunks(reader: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_hashing(src: int, out: int, progress: Progress = None, shown: str = "") -> tuple[str, int]:
    """Copy the file open at ``src`` (from its current offset) to ``out`` in one pass, hashing what is
    written: each buffer is hashed by a second thread while this one writes it, so the hash costs no extra
    pass; what is hashed is exactly what was written. Returns (hex digest, bytes copied). A read error is
    an ``ArtifactError`` naming ``shown``; a write error (a full disk) stays an ``OSError`` for the caller."""
    h = hashlib.sha256()
    bufs = [bytearray(PIPE_CHUNK) for _ in range(PIPE_BUFFERS)]
    pending: list[Future[None] | None] = [None] * PIPE_BUFFERS
    total = 0
    with ThreadPoolExecutor(1, thread_name_prefix="mledger-sha256") as hasher:
        i = 0
        while True:
            k = i % PIPE_BUFFERS
            done = pending[k]
            if done is not None:
                done.result()  # the buffer's previous bytes are hashed: it may be refilled
            mv = memoryview(bufs[k])
            try:
                n = os.readv(src, [mv])
            except OSError as exc:
                raise ArtifactError(f"cannot read artifact source {shown}: {exc.strerror or exc}") from None
            if n == 0:
                break
            view = mv[:n]
            pending[k] = hasher.submit(h.update, view)
            _write_all(out, view)
            total += n
            if progress is not None:
                progress(total)
            i += 1
        for done in pending:
            if done is not None:
                done.result()
    return h.hexdigest(), total


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (after.st_size, after.st_mtime_ns,
                                                                       after.st_ctime_ns)


def _last_activity(call: Callable[..., Any], bucket: str, key: str, upload_id: str, initiated: Any) -> float:
    """When a multipart upload last made progress: its newest part, else its start. (A long upload started
    hours ago may still be sending parts; the start alone would call it stale.)"""
    newest = initiated.timestamp() if initiated is not None else 0.0
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        page = call("list_parts", **args)
        for part in page.get("Parts") or ():
            if part.get("LastModified") is not None:
                newest = max(newest, part["LastModified"].timestamp())
        if not page.get("IsTruncated"):
            return newest
        args["PartNumberMarker"] = page.get("NextPartNumberMarker")


class BlobStore:
    """A content-addressed store; ``root_url`` is a local path, ``file://``, ``s3://``, ``memory://`` ..."""

    def __init__(self, root_url: str, storage_options: dict[str, Any] | None = None, *,
                 statcache: str | os.PathLike[str] | None = None) -> None:
        """``statcache``: the stat cache file (``workers/statcache.py``) that lets an unchanged local source
        skip its hashing; None: every source is read."""
        if not root_url:
            raise ValidationError("artifact store URL is empty")
        self.root_url = root_url
        self.statcache = StatCache(statcache) if statcache is not None else None
        self.storage_options = dict(storage_options or {})
        self.stats = StoreStats()
        self._lock = threading.Lock()
        self._fs: fsspec.AbstractFileSystem | None = None
        self._pid = -1
        self._file_modes: Modes | None = None
        with _edge(f"cannot open artifact store {root_url}"):
            fs, root = self._make_fs()
        self.local = isinstance(fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.local else root.rstrip("/")

    def __getstate__(self) -> dict[str, Any]:
        # A lock and a live filesystem do not travel between processes; the receiver makes its own.
        state = self.__dict__.copy()
        state.update(_fs=None, _pid=-1, _lock=None, stats=StoreStats())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- filesystem -------------------------------------------------------------------------------------

    def _make_fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        url, options = self.root_url, self.storage_options
        if url.startswith(OSS_SCHEME):
            url, options = oss_as_s3(url, options)
        fs, root = fsspec.core.url_to_fs(url, **options)
        self._fs, self._pid = fs, os.getpid()
        return fs, root

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        # An S3FileSystem made before fork() is unusable in the child: make a fresh one per process.
        if self._fs is None or self._pid != os.getpid():
            self._make_fs()
        assert self._fs is not None
        return self._fs

    def _join(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.root, *parts)
        return "/".join([self.root, *parts])

    def path_of(self, digest: str) -> str:
        """Where the blob lives inside ``self.fs`` (an absolute path for a local store)."""
        hexd = parse_digest(digest)
        return self._join("sha256", hexd[:2], hexd[2:4], hexd)

    def _tmp_path(self) -> str:
        return self._join(TMP_DIR, f"{uuid.uuid4().hex}{TMP_SUFFIX}")

    def _count(self, written: int, deduplicated: bool) -> None:
        with self._lock:
            self.stats.bytes_written += written
            if deduplicated:
                self.stats.blobs_deduplicated += 1
            else:
                self.stats.blobs_written += 1

    # -- queries ----------------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        path = self.path_of(digest)
        with _edge(f"cannot check blob {digest}"):
            return self._exists_path(path)

    def _exists_path(self, path: str) -> bool:
        if self.local:
            return os.path.isfile(path)
        fs = self.fs
        fs.invalidate_cache(path)  # another process may have written it since our last listing
        return fs.exists(path)

    def open_blob(self, digest: str) -> IO[bytes]:
        path = self.path_of(digest)
        with _edge(f"cannot read blob {digest}"):
            try:
                if self.local:
                    return open(path, "rb")  # noqa: SIM115 - the caller closes it
                self.fs.invalidate_cache(path)
                return self.fs.open(path, "rb")
            except FileNotFoundError:
                raise ArtifactError(f"blob missing from the store: {digest}") from None

    def read_blob(self, digest: str, limit: int | None = None) -> bytes:
        """Read a whole (small) blob, verified against its digest."""
        hexd = parse_digest(digest)
        with self.open_blob(digest) as f, _edge(f"cannot read blob {digest}"):
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise ArtifactError(f"blob too large to read whole: {digest}")
        if hashlib.sha256(data).hexdigest() != hexd:
            raise ArtifactError(f"blob is corrupt (digest mismatch): {digest}")
        return data

    def size_of(self, digest: str) -> int:
        path = self.path_of(digest)
        with _edge(f"cannot stat blob {digest}"):
            try:
                if self.local:
                    return os.stat(path).st_size
                self.fs.invalidate_cache(path)
                return int(self.fs.info(path)["size"])
            except FileNotFoundError:
                raise ArtifactError(f"blob missing from the store: {digest}") from None

    def verify(self, digest: str) -> bool:
        """Rehash the blob: True only if it is present and its bytes match its name."""
        hexd = parse_digest(digest)
        try:
            f = self.open_blob(digest)
        except ArtifactError:
            return False
        h = hashlib.sha256()
        with f, _edge(f"cannot read blob {digest}"):
            for chunk in _read_chunks(f):
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
        with _edge("cannot write blob"):
            if self._exists_path(self.path_of(blob.digest)):
                self._count(0, deduplicated=True)
                return blob
            return self._write_new(io.BytesIO(data), None, expected_hex=hexd, staged=staged)

    def put_stream(self, reader: IO[bytes], progress: Progress = None) -> Blob:
        """Store what ``reader`` yields (single pass: the bytes go to a temp name before dedup is known)."""
        with _edge("cannot write blob"):
            return self._write_new(reader, progress, expected_hex=None)

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
        with _edge(f"cannot read artifact source {source}"):
            hasher = _Hasher(progress)
            with self._open_source(fs, path, source) as f:
                for chunk in _read_chunks(f):
                    hasher.update(chunk)
        blob = Blob(f"sha256:{hasher.hex}", hasher.size)
        with _edge(f"cannot write blob for {source}"):
            if self._exists_path(self.path_of(blob.digest)):
                self._count(0, deduplicated=True)
                return blob
            with self._open_source(fs, path, source) as f:
                return self._write_new(f, progress, expected_hex=hasher.hex, staged=staged)

    def _put_fd(self, fd: int, shown: str, progress: Progress, staged: Staged | None) -> Blob:
        """Store the regular file open at ``fd`` (the caller opened and checked it; this never reopens it).

        A file the stat cache knows unchanged is not read at all when its blob is stored. Otherwise a local
        store copies it in one pass (``_copy_new``); a remote store hashes first, so a stored blob is never
        uploaded again."""
        st = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as f:
            with _edge(f"cannot read artifact source {shown}"):
                data = f.read(SMALL_FILE + 1) if st.st_size <= SMALL_FILE else None
            if data is not None and len(data) <= SMALL_FILE:
                # A small file is read once: hashed and, unless stored already, written from memory. (The
                # stat cache would cost more than the hash here: ~2 GB/s means 0.5 ms for 1 MiB.)
                if progress is not None:
                    progress(len(data))
                return self.put_bytes(data, staged)
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
            with _edge(f"cannot read artifact source {shown}"):
                f.seek(0)
            if self.local:
                blob = self._copy_new(fd, st, shown, progress, staged)
            else:
                blob = self._put_remote(f, shown, progress, staged)
        if cache is not None:
            cache.remember(key, blob.digest, started)
        return blob

    def _stored_size(self, digest: str) -> int:
        """The size of a stored blob; -1 if there is none (or it cannot be seen)."""
        try:
            return self.size_of(digest)
        except ArtifactError:
            return -1

    def _put_remote(self, f: IO[bytes], shown: str, progress: Progress, staged: Staged | None) -> Blob:
        hasher = _Hasher(progress)
        with _edge(f"cannot read artifact source {shown}"):
            for chunk in _read_chunks(f):
                hasher.update(chunk)
            f.seek(0)
        blob = Blob(f"sha256:{hasher.hex}", hasher.size)
        with _edge(f"cannot write blob for {shown}"):
            if self._exists_path(self.path_of(blob.digest)):
                self._count(0, deduplicated=True)
                return blob
            return self._write_new(f, progress, expected_hex=hasher.hex, staged=staged)

    def _copy_new(self, fd: int, st: os.stat_result, shown: str, progress: Progress, staged: Staged | None) -> Blob:
        """One pass into a local store: copy to a temp while hashing; if the blob turns out to be stored, drop
        the temp unsynced (its pages mostly never reach the disk); else fsync it and link it into place (or
        stage it). A source that changed while read (size, mtime, ctime on its descriptor) is refused."""
        tmp = self._tmp_path()
        keep = False
        created = False
        try:
            with _edge(f"cannot write blob for {shown}"):
                with self._open_tmp(tmp) as out:
                    hexd, size = copy_hashing(fd, out.fileno(), progress, shown)
                    after = os.fstat(fd)
                    if size != st.st_size or _changed(st, after):
                        raise ArtifactError(f"artifact source changed while it was being stored; try again: {shown}")
                    blob = Blob(f"sha256:{hexd}", size)
                    final = self.path_of(blob.digest)
                    if self._exists_path(final):
                        self._count(0, deduplicated=True)
                        return blob
                    os.fsync(out.fileno())
                if staged is not None:
                    staged.append((tmp, final, size))
                    keep = True
                    return blob
                created = self._publish(tmp, final)
        finally:
            if not keep:
                self._discard_tmp(tmp)
        self._count(size if created else 0, deduplicated=not created)
        return blob

    def _source(self, source: str) -> tuple[fsspec.AbstractFileSystem, str]:
        if is_local_path(source):
            return local_fs(), os.path.normpath(source)
        with _edge(f"artifact source not usable: {source}"):
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

    def _write_new(self, reader: IO[bytes], progress: Progress, expected_hex: str | None,
                   staged: Staged | None = None) -> Blob:
        """Copy ``reader`` to a temp name while hashing it, then publish it under its digest — or, with
        ``staged``, leave the temp for ``publish_staged`` (a folder's blobs appear only once every file of
        it was copied, so a refused folder leaves nothing outside the temporaries)."""
        tmp = self._tmp_path()
        hasher = _Hasher(progress)
        written = 0
        keep = False
        try:
            if self.local:
                with self._open_tmp(tmp) as out:
                    for chunk in _read_chunks(reader):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            else:
                # Object stores: a PUT becomes visible only when it completes, but fsspec's close() also
                # completes a *partial* upload when the source fails mid-stream. So the upload goes to a temp
                # key, is verified, and only then copied to the final key (server-side copy, no re-upload).
                with self.fs.open(tmp, "wb") as out:
                    for chunk in _read_chunks(reader):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
            if expected_hex is not None and hasher.hex != expected_hex:
                raise ArtifactError("artifact source changed while it was being stored; try again")
            blob = Blob(f"sha256:{hasher.hex}", hasher.size)
            if staged is not None:
                staged.append((tmp, self.path_of(blob.digest), written))
                keep = True
                return blob
            created = self._publish(tmp, self.path_of(blob.digest))
        finally:
            if not keep:
                self._discard_tmp(tmp)
        self._count(written + (hasher.size if created and not self.local else 0), deduplicated=not created)
        return blob

    def _modes(self) -> Modes:
        """Modes of what this (local) store creates: those of its root's sharing (eventstore/permissions.py);
        a root that does not exist yet is made private, or group-shared with MLEDGER_SHARE=group."""
        if self._file_modes is None:
            make_root(self.root)
            self._file_modes = modes_under(self.root)
        return self._file_modes

    def publish_staged(self, staged: Staged) -> None:
        """Move every staged temp into place (a blob already there is kept and the temp dropped)."""
        staged.reverse()  # in copy order (the manifest last), popping from the end
        with _edge("cannot write blob"):
            while staged:
                tmp, final, written = staged.pop()
                try:
                    created = self._publish(tmp, final)
                finally:
                    self._discard_tmp(tmp)
                self._count(written + (written if created and not self.local else 0), deduplicated=not created)

    def discard_staged(self, staged: Staged) -> None:
        while staged:
            self._discard_tmp(staged.pop()[0])

    def _open_tmp(self, tmp: str) -> IO[bytes]:
        # The temp folder is made (durably) when an open finds it missing: on first use, or if someone removed it.
        modes = self._modes()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, modes.file)
        except FileNotFoundError:
            _makedirs_durable(os.path.dirname(tmp), modes.folder)
            fd = os.open(tmp, flags, modes.file)
        try:
            os.fchmod(fd, modes.file)  # exactly: the umask may have narrowed a group-shared store's mode
            return open(fd, "wb")  # noqa: SIM115 - the caller closes it
        except BaseException:
            os.close(fd)
            raise

    def _publish(self, tmp: str, final: str) -> bool:
        """Move a verified temp into place unless the blob exists; True if this call created it."""
        if self.local:
            folder = os.path.dirname(final)
            parents: list[str] = []  # fan-out folders made for this blob (sha256/ab/cd), not fsynced yet
            try:
                created = _link_new(tmp, final)
            except FileNotFoundError:
                # The fan-out folder was missing — or another writer of new bytes made it since our link
                # looked (a race seen in CI): make what is still missing and link again. A second
                # FileNotFoundError means the temp itself is gone.
                parents = _makedirs(folder, self._modes().folder)
                created = _link_new(tmp, final)
            if not created:
                return False
            # The data was fsynced before the link, so the name only ever shows whole bytes. The new entries
            # (the blob's, then any new folder's) are made durable after the link: a journaling filesystem
            # commits them together, so the later fsyncs find little left to write.
            _fsync_dir(folder)
            for parent in parents:
                _fsync_dir(parent)
            return True
        if self._exists_path(final):
            return False
        self.fs.copy(tmp, final)
        if _is_azure(self.fs):
            _await_azure_copy(self.fs, final)
        self.fs.invalidate_cache(final)
        return True

    def _discard_tmp(self, tmp: str) -> None:
        try:
            if self.local:
                os.unlink(tmp)
            else:
                self.fs.rm(tmp)
                self.fs.invalidate_cache(tmp)
        except (FileNotFoundError, OSError):
            pass  # already moved, never created, or sweep_tmp will get it

    def delete(self, digest: str) -> bool:
        """Remove a blob (gc); idempotent. True if something was removed."""
        path = self.path_of(digest)
        with _edge(f"cannot delete blob {digest}"):
            if self.local:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    return False
                _fsync_dir(os.path.dirname(path))
                return True
            if not self._exists_path(path):
                return False
            self.fs.rm(path)
            self.fs.invalidate_cache(path)
            return True

    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Remove temp files left by killed writers, older than the given age; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        tmpdir = self._join(TMP_DIR)
        with _edge("cannot sweep temporary blobs"):
            if self.local:
                try:
                    names = os.listdir(tmpdir)
                except FileNotFoundError:
                    return 0
                for name in names:
                    p = os.path.join(tmpdir, name)
                    try:
                        if name.endswith(TMP_SUFFIX) and os.stat(p).st_mtime <= cutoff:
                            os.unlink(p)
                            removed += 1
                    except FileNotFoundError:
                        pass
                return removed
            fs = self.fs
            removed += self._abort_stale_uploads(tmpdir, cutoff)
            fs.invalidate_cache(tmpdir)
            try:
                entries = fs.ls(tmpdir, detail=True, refresh=True)
            except FileNotFoundError:
                return removed
            for e in entries:
                name = e["name"]
                if not name.endswith(TMP_SUFFIX):
                    continue
                try:
                    mtime = fs.modified(name).timestamp()
                except (NotImplementedError, FileNotFoundError, OSError):
                    continue
                if mtime <= cutoff:
                    self._discard_tmp(name)
                    removed += 1
            return removed

    def _abort_stale_uploads(self, tmpdir: str, cutoff: float) -> int:
        """Abort the multipart uploads of temp keys that a killed writer left unfinished. S3 keeps (and bills)
        their parts until aborted, and no listing of objects shows them."""
        call = getattr(self.fs, "call_s3", None)  # s3fs; other object stores have no such uploads here
        if call is None:
            return 0
        bucket, _, prefix = tmpdir.partition("/")
        page_args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
        aborted = 0
        while True:
            try:
                page = call("list_multipart_uploads", **page_args)
            except Exception as exc:
                if not _is_driver_error(exc):
                    raise
                return aborted  # an S3-like store without multipart listing: nothing this sweep can do
            for upload in page.get("Uploads") or ():
                key, upload_id = upload["Key"], upload["UploadId"]
                if _last_activity(call, bucket, key, upload_id, upload.get("Initiated")) <= cutoff:
                    call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            page_args.update(KeyMarker=page.get("NextKeyMarker"), UploadIdMarker=page.get("NextUploadIdMarker"))

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """Every blob in the store as (digest, size, modified time): what gc compares with the catalog."""
        base = self._join("sha256")
        with _edge("cannot list the artifact store"):
            if self.local:
                for dirpath, _dirs, names in os.walk(base):
                    for name in names:
                        if len(name) == 64:
                            st = os.stat(os.path.join(dirpath, name))
                            yield f"sha256:{name}", st.st_size, st.st_mtime
                return
            fs = self.fs
            fs.invalidate_cache(base)
            try:
                found = fs.find(base, detail=True)
            except FileNotFoundError:
                return
            for path, info in found.items():
                name = path.rsplit("/", 1)[-1]
                if len(name) != 64:
                    continue
                try:
                    mtime = fs.modified(path).timestamp()
                except (NotImplementedError, FileNotFoundError, OSError):
                    mtime = 0.0
                yield f"sha256:{name}", int(info.get("size") or 0), mtime

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
        with _edge(f"artifact source not found: {source}"):
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

        return self._ingest_folder(listing, lambda item: (item[0], item[2]), put, staged, progress)

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

            def put(e: localsource.LocalEntry, sub: Progress) -> Blob:
                fd = localsource.open_file(root_fd, e)
                try:
                    return self._put_fd(fd, e.path, sub, staged)
                finally:
                    os.close(fd)

            parallel = self.local and sum(e.size for e in listing) >= PARALLEL_FOLDER_BYTES
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
            if threads > 1 and len(listing) > 1:
                blobs = self._put_parallel(listing, put, progress, threads)
            else:
                blobs = []
                done = 0
                for item in listing:
                    base = done

                    def sub(n: int, base: int = base) -> None:
                        if progress is not None:
                            progress(base + n)

                    blobs.append(put(item, sub))
                    done += blobs[-1].size
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
    def _put_parallel(listing: list[Any], put: Callable[[Any, Progress], Blob], progress: Progress,
                      threads: int) -> list[Blob]:
        """``put`` every item on a small pool; the first failure cancels what has not started and is raised
        once the running copies stopped (their temps are staged, so the caller discards them)."""
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
            guard = (*protected, self.root) if self.local else tuple(protected)
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
        with _edge(f"cannot write {dest}"):
            if target is not None:
                self._pull_local(entries, kind, digest, target, progress)
            else:
                try:
                    self._pull_remote(fs, entries, kind, path, dest, overwrite, progress)
                except NotImplementedError:  # fsspec's answer for a read-only filesystem (http://)
                    raise ArtifactError(f"cannot write {dest}: its filesystem cannot be written to") from None

    def _copy_verified(self, entry: FileEntry, out: IO[bytes], progress: Progress, base: int) -> int:
        hexd = parse_digest(entry.digest)
        h = hashlib.sha256()
        n = 0
        with self.open_blob(entry.digest) as f:
            for chunk in _read_chunks(f):
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
                done = 0
                for e in entries:
                    target = os.path.join(tmp, *e.path.split("/"))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with self._create_pulled(target, e.mode) as out:
                        done += self._copy_verified(e, out, progress, done)
                        out.flush()
                        os.fsync(out.fileno())
                set_pull_mark(tmp, digest)
            move_into_place(tmp, dest)
            _fsync_dir(dest.parent)
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
            done = 0
            for e in entries:
                target = tmp if kind == "file" else f"{tmp}/{e.path}"
                with fs.open(target, "wb") as out:
                    done += self._copy_verified(e, out, progress, done)
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
