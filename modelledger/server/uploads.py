"""Artifact bytes over HTTP: ask, upload, describe, download.

Upload: the client first asks ``HEAD /api/v1/blobs/{digest}?size=N`` whether the server has a blob; only a
missing one is sent, ``PUT /api/v1/blobs/{digest}?size=N``, streamed into the store while it is hashed
(``BlobStore.put_stream``: a temp name, then the digest's name), so the server holds one chunk at a time
whatever the size. A folder is sent file by file the same way, then named by its file list. Registering then
names the uploaded blobs; the server never reads a path a client names, and fetches a URL source only under
a prefix its operator allowed (``MLEDGER_SOURCES``).

Download: ``GET /api/v1/blobs/{digest}`` streams a blob with its digest as ``ETag`` and honours one
``Range`` (a cut download resumes where it stopped); the client rehashes what it wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import IO, Any

from anyio import from_thread

from eventstore.errors import ArtifactError, PermissionDeniedError, TooLargeError, ValidationError
from modelledger.jsonhttp import INLINE_MAX
from workers.ingest import describe, normalize_source
from workers.sources import SourcePolicy
from workers.store import (
    ArtifactInfo,
    BlobStore,
    FileEntry,
    check_relpath,
    manifest_bytes,
    normalize_mode,
    parse_digest,
)

MAX_BLOB = 1 << 40  # 1 TiB: a declared size above this is refused before a byte is read
MAX_FILES = 100_000  # files of one uploaded folder (the manifest must fit an event's limits downstream)
UPLOAD_SCHEME = "upload://"
DOWNLOAD_CHUNK = 1024 * 1024
GATHER = 1024 * 1024  # what an upload hands the store's writer at a time


class BodyReader:
    """A blocking ``read()`` over the request's async body, for a store write running in a worker thread:
    each read waits for the next chunk on the event loop. Refuses more bytes than declared."""

    def __init__(self, chunks: AsyncIterator[bytes], declared: int) -> None:
        self._chunks = chunks
        self._declared = declared
        self._buffer = b""
        self.received = 0
        self._done = False

    async def _next(self) -> bytes:
        """Up to ``GATHER`` bytes of what arrived: one hop between the thread and the event loop per
        megabyte, not per network chunk (tens of kilobytes)."""
        parts: list[bytes] = []
        gathered = 0
        while gathered < GATHER:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            gathered += len(chunk)
        return b"".join(parts)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._done:
            chunk = from_thread.run(self._next)
            if not chunk:
                self._done = True
                break
            self.received += len(chunk)
            if self.received > self._declared:
                raise TooLargeError(f"the upload is larger than its declared size ({self._declared:,} bytes)")
            self._buffer = chunk
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def check_declared(digest: str, size: Any) -> tuple[str, int]:
    parse_digest(digest)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValidationError("size must be a whole number of bytes (0 or more)")
    if size > MAX_BLOB:
        raise TooLargeError(f"a blob of {size:,} bytes is larger than this server takes ({MAX_BLOB:,})")
    return digest, size


def has_blob(store: BlobStore, digest: str, size: int) -> bool:
    """Does the store hold this blob with this size? (a different size: not the same bytes)."""
    if not store.exists(digest):
        return False
    return store.size_of(digest) == size


def receive_blob(store: BlobStore, reader: BodyReader, digest: str, size: int) -> dict[str, Any]:
    """Stream an upload into the store (runs in a worker thread); refuse it unless its bytes are the digest
    and the size the client declared. Bytes that hash to another digest stay stored under their own name,
    referenced by nothing: gc frees them after its grace period."""
    blob = store.put_stream(reader)  # type: ignore[arg-type]
    if blob.size != size:
        raise ValidationError(f"the upload was {blob.size:,} bytes, not the declared {size:,}")
    if blob.digest != digest:
        raise ValidationError(f"the upload's bytes hash to {blob.digest}, not {digest}")
    return {"digest": blob.digest, "size": blob.size}


def inline_artifact(store: BlobStore, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a small file sent inside the register's own body (``content_base64``, at most
    ``INLINE_MAX`` bytes): the bytes are checked against the digest and size the client computed, put into
    ``store`` and described as an uploaded file. With the tiered store's ``deferring()`` view the bytes are
    only held here, and the command's transaction writes them with the version's events (one commit)."""
    encoded = spec.get("content_base64")
    digest, size = check_declared(spec.get("digest"), spec.get("size"))
    if size > INLINE_MAX:
        raise TooLargeError(f"a file sent inside the request is at most {INLINE_MAX:,} bytes, not {size:,}: "
                            "upload it first (PUT /api/v1/blobs/{digest}?size=N)")
    if not isinstance(encoded, str):
        raise ValidationError("artifact.content_base64 must be the file's bytes in base64")
    if len(encoded) > 4 * (INLINE_MAX // 3 + 1):
        raise TooLargeError(f"a file sent inside the request is at most {INLINE_MAX:,} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("artifact.content_base64 is not valid base64") from None
    if len(data) != size:
        raise ValidationError(f"artifact.content_base64 holds {len(data):,} bytes, not the declared {size:,}")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ValidationError(f"the bytes sent hash to {actual}, not {digest}")
    store.put_bytes(data)
    return uploaded_artifact(store, {k: v for k, v in spec.items() if k != "content_base64"})


def _entry(item: Any, index: int) -> FileEntry:
    if not isinstance(item, Mapping):
        raise ValidationError(f"files[{index}] must be an object with path, digest, size (and mode)")
    unknown = set(item) - {"path", "digest", "size", "mode"}
    if unknown:
        raise ValidationError(f"files[{index}]: unknown field {sorted(unknown)[0]!r}")
    path = item.get("path")
    if not isinstance(path, str) or not path:
        raise ValidationError(f"files[{index}].path must be a relative path")
    try:
        check_relpath(path)
    except ArtifactError as exc:
        raise ValidationError(f"files[{index}].path: {exc}") from None
    digest, size = check_declared(item.get("digest"), item.get("size"))  # type: ignore[arg-type]
    mode = item.get("mode", 0o644)
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValidationError(f"files[{index}].mode must be a file mode (e.g. 420 for 0644)")
    return FileEntry(path=path, digest=digest, size=size, mode=normalize_mode(mode))


def uploaded_artifact(store: BlobStore, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of an artifact whose blobs the client uploaded: ``{"digest", "size", "filename"}`` for a
    file, ``{"files": [{"path", "digest", "size", "mode"}, ...]}`` for a folder. Every blob must be in the
    store with its size (``ArtifactError`` names the first one missing: upload it first)."""
    if "files" in spec:
        extra = set(spec) - {"files", "name"}
        if extra:
            raise ValidationError(f"artifact: unknown field {sorted(extra)[0]!r}")
        items = spec["files"]
        if not isinstance(items, list) or not items:
            raise ValidationError("artifact.files must be a non-empty list")
        if len(items) > MAX_FILES:
            raise TooLargeError(f"a folder of more than {MAX_FILES:,} files")
        entries = sorted((_entry(item, i) for i, item in enumerate(items)), key=lambda e: e.path)
        paths = [e.path for e in entries]
        if len(set(paths)) != len(paths):
            raise ValidationError("artifact.files lists a path twice")
        _require_blobs(store, entries)
        label = spec.get("name") or "folder"
        manifest = store.put_bytes(manifest_bytes(entries))
        info = ArtifactInfo(digest=manifest.digest, size=sum(e.size for e in entries), kind="directory",
                            files=tuple(entries))
    else:
        extra = set(spec) - {"digest", "size", "filename"}
        if extra:
            raise ValidationError(f"artifact: unknown field {sorted(extra)[0]!r}")
        digest, size = check_declared(spec.get("digest"), spec.get("size"))  # type: ignore[arg-type]
        label = spec.get("filename") or "artifact"
        if not isinstance(label, str) or "/" in label:
            raise ValidationError("artifact.filename must be a file name (no folders)")
        try:
            check_relpath(label)
        except ArtifactError as exc:
            raise ValidationError(f"artifact.filename: {exc}") from None
        entry = FileEntry(path=label, digest=digest, size=size, mode=0o644)
        _require_blobs(store, [entry])
        info = ArtifactInfo(digest=digest, size=size, kind="file", files=(entry,))
    if not isinstance(label, str) or not label or len(label) > 255 or any(ord(ch) < 32 for ch in label):
        raise ValidationError("the artifact's name must be 1 to 255 printable characters")
    return describe(store, info, UPLOAD_SCHEME + label)


def _require_blobs(store: BlobStore, entries: list[FileEntry]) -> None:
    for e in entries:
        if not has_blob(store, e.digest, e.size):
            raise ArtifactError(f"blob {e.digest} ({e.size:,} bytes, {e.path}) is not on the server: upload it "
                                "first (PUT /api/v1/blobs/{digest}?size=N)")


def allowed_source(policy: SourcePolicy, source: Any) -> str:
    """A URL the server may fetch for a client: only under ``MLEDGER_SOURCES``, never a local path."""
    if not isinstance(source, str) or not source:
        raise ValidationError("artifact.source must be a URL")
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) or source.lower().startswith("file://"):
        raise PermissionDeniedError("the server never reads a path a client names: upload the bytes instead")
    normalized = normalize_source(source)
    if not policy.allows(normalized):
        raise PermissionDeniedError(f"the server's operator did not allow fetching {source[:200]!r} "
                                    "(MLEDGER_SOURCES); upload the bytes instead")
    return normalized


# -- downloads ------------------------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one ``Range: bytes=a-b`` (also ``a-`` and ``-n``); None without one.
    ``ValueError`` when it cannot be satisfied (the route answers 416)."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if m is None:
        return None  # several ranges or another unit: RFC 9110 lets a server send the whole body
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, end


def stream_blob(f: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    """The bytes ``start..end`` of an open blob, a chunk at a time; closes it."""
    try:
        f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = f.read(min(DOWNLOAD_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        f.close()
