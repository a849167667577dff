"""Ingest: an artifact source (file, folder or URL) → blobs in the content-addressed store → the facts
the ``ArtifactStored`` event records (digest, size, kind, files, format, unsafe imports).

This is the body of the ingest actor; the embedded broker runs it in-process, the Redis broker in a
worker. It is idempotent: the store never rewrites a blob, so ingesting the same bytes twice writes
nothing the second time and yields the same digest.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import fsspec

from eventstore.errors import ArtifactError, ModelLedgerError, ValidationError

from .blobs import BlobStore, open_store
from .blobs.base import ArtifactInfo, is_local_path
from .formats import sniff_artifact

MAX_SOURCE = 4096
# A folder's full file list lives in its manifest blob; the event keeps the first paths (sorted) for search
# and diff, at most this many and this many bytes of them, plus ``file_count``. 1,000 entries of typical
# paths weigh about 150 KB, well under the 1 MiB event limit.
EVENT_FILES = 1000
EVENT_FILES_BYTES = 256 * 1024
# A source is checked twice per register (before the command and by the ingest): one regex search; a generator
# over its characters made the check cost 30 µs per call on a 36-character path, 8 µs with the regex.
_CONTROL = re.compile(r"[\x00-\x1f]")


class BlobsVanished(ArtifactError):
    """gc removed a blob this ingest deduplicated against before it was recorded: copy again."""


def normalize_source(source: str) -> str:
    """A local path becomes absolute (so a worker elsewhere in the tree finds it); a URL must name a
    protocol fsspec knows. Refuses empty, over-long and control-character sources."""
    if not isinstance(source, str) or not source.strip():
        raise ValidationError("the artifact source is empty")
    if len(source) > MAX_SOURCE or _CONTROL.search(source):
        raise ValidationError("the artifact source is too long or contains control characters")
    parsed = urlparse(source) if "://" in source else None
    if parsed is not None and parsed.scheme and len(parsed.scheme) > 1:
        if parsed.scheme == "file":
            return os.path.abspath(parsed.path)
        if parsed.scheme not in fsspec.available_protocols():
            raise ValidationError(f"unknown artifact URL scheme {parsed.scheme!r}")
        return source
    return os.path.abspath(os.path.expanduser(source))


def check_source(source: str) -> str:
    """The normalised source, after making sure it can be read — so a missing file is refused before
    anything is appended."""
    return checked_source(source)[0]


def checked_source(source: str) -> tuple[str, bool]:
    """``check_source``, and whether the source is a local regular file (links followed, as the ingest
    follows them), from the same ``stat``."""
    src = normalize_source(source)
    if is_local_path(src):
        try:
            st = os.stat(src)
        except (OSError, ValueError):
            raise ArtifactError(f"artifact source not found: {source}") from None
        return src, stat.S_ISREG(st.st_mode)
    try:
        fs, path = fsspec.core.url_to_fs(src)
        found = fs.exists(path)
    except (OSError, ValueError, ImportError) as exc:
        raise ArtifactError(f"cannot reach the artifact source {source}: {exc}") from None
    if not found:
        raise ArtifactError(f"artifact source not found: {source}")
    return src, False


def source_readable(source: str) -> bool:
    try:
        check_source(source)
    except (ArtifactError, ValidationError):
        return False
    return True


def artifact_blobs(facts: dict[str, Any]) -> set[str]:
    """Every blob an artifact's facts name: the file (or a folder's manifest) and each file of a folder
    (``blobs``, which only a fresh ingest carries, names them all; an event's ``files`` may be bounded)."""
    files = facts.get("blobs") or [f["digest"] for f in facts.get("files") or ()]
    return {facts["digest"], *files}


def event_files(files: Any) -> list[dict[str, Any]]:
    """The first files of a folder, bounded in number and bytes, as the event records them."""
    out: list[dict[str, Any]] = []
    weight = 0
    for f in files:
        weight += len(f.path.encode("utf-8")) + 100
        if len(out) >= EVENT_FILES or weight > EVENT_FILES_BYTES:
            break
        out.append({"path": f.path, "digest": f.digest, "size": f.size})
    return out


def ingest_artifact(
    store: BlobStore | str, source: str, *, progress: Callable[[int], None] | None = None,
    beneath: str | None = None,
) -> dict[str, Any]:
    """Copy ``source`` into ``store`` (a ``BlobStore`` or its URL); return the artifact facts for the event.
    ``beneath``: the folder a local source must not leave (see ``BlobStore.ingest``)."""
    src = normalize_source(source)
    if isinstance(store, str):
        store = open_store(store)
    try:
        info = store.ingest(src, progress=progress, beneath=beneath)
    except ModelLedgerError:
        raise  # ours, as raised (a refusal of the command's checks before a write: ``deferring(before_large)``)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot ingest {source}: {exc}") from None
    return describe(store, info, src)


def describe(store: BlobStore, info: ArtifactInfo, src: str) -> dict[str, Any]:
    """The facts the event records of an artifact whose blobs are in ``store`` (after an ingest, or an
    upload over HTTP): digests, sizes, files, and the format sniffed from the stored bytes."""
    source = src
    artifact: dict[str, Any] = {
        "source": src,
        "digest": info.digest,
        "size": info.size,
        "kind": info.kind,
        "files": event_files(info.files),
        "file_count": len(info.files),
        "blobs": sorted({f.digest for f in info.files}),
    }
    try:
        fmt = sniff_artifact(store, info)
    except ArtifactError:
        # gc may have purged a blob we deduplicated against since the copy (it is not ours until the
        # version is recorded): the caller copies again rather than failing.
        if not all(store.exists(d) for d in artifact_blobs(artifact)):
            raise BlobsVanished(f"blobs of {source} disappeared while sniffing them (gc?)") from None
        raise
    artifact["format"] = fmt.format
    artifact["unsafe"] = bool(fmt.unsafe)
    if fmt.imports:
        artifact["imports"] = list(fmt.imports)
    if fmt.detail:
        artifact["detail"] = fmt.detail
    if fmt.structure:
        artifact["structure"] = fmt.structure
    return artifact
