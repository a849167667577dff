"""The artifact store's names as they were before the blob interface (``workers/blobs/``).

``BlobStore(url)`` here is the fsspec backend (``workers.blobs.fsspec_store.FsspecBlobStore``); new code opens
stores with ``workers.blobs.open_store``, which also knows the database backends and the small-blob tier.
"""

from __future__ import annotations

from .blobs.base import (
    CHUNK,
    FOLDER_THREADS,
    MANIFEST_KIND,
    MAX_FOLDER_FILES,
    MAX_MANIFEST_BYTES,
    PARALLEL_FOLDER_BYTES,
    SMALL_FILE,
    TMP_DIR,
    TMP_SUFFIX,
    ArtifactInfo,
    Blob,
    FileEntry,
    StoreStats,
    check_relpath,
    is_local_path,
    local_fs,
    manifest_bytes,
    normalize_mode,
    parse_digest,
)
from .blobs.base import BlobStore as BlobInterface
from .blobs.fsspec_store import FsspecBlobStore as BlobStore
from .blobs.fsspec_store import oss_as_s3
from .blobs.localcopy import PIPE_BUFFERS, PIPE_CHUNK, copy_hashing

__all__ = [
    "CHUNK", "FOLDER_THREADS", "MANIFEST_KIND", "MAX_FOLDER_FILES", "MAX_MANIFEST_BYTES", "PARALLEL_FOLDER_BYTES",
    "PIPE_BUFFERS", "PIPE_CHUNK", "SMALL_FILE", "TMP_DIR", "TMP_SUFFIX", "ArtifactInfo", "Blob", "BlobInterface",
    "BlobStore", "FileEntry", "StoreStats", "check_relpath", "copy_hashing", "is_local_path", "local_fs",
    "manifest_bytes", "normalize_mode", "oss_as_s3", "parse_digest",
]
