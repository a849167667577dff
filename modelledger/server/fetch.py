"""A small file at an http(s) URL the server may read (under ``MLEDGER_SOURCES``), fetched in one GET.

MLflow's ``model-versions/create`` names a source the server ingests before answering. Through fsspec's HTTP
filesystem a ~400 B file took seven requests to the source (``exists`` for the check before appending, then
``isdir``, which reads the body to look for links, ``exists`` again, an ``info`` and a read for hashing, and
the same for copying), each on a new connection: ~35 ms of the server's CPU per create under the profiler,
two thirds of it in aiohttp and the source's answers (``scripts/profile_http.py --op mlflow-create``). A file
of at most ``INLINE_MAX`` bytes is read here whole with one GET and handed to the store like an upload;
anything else (a larger file, a folder listing, an answer other than 200, a redirect, another scheme) goes the
usual way, through fsspec, whose checks and errors stay those of every ingest.
"""

from __future__ import annotations

import http.client
import posixpath
import ssl
from urllib.parse import urlsplit

from modelledger.jsonhttp import INLINE_MAX
from workers.store import ArtifactInfo, BlobStore, FileEntry

TIMEOUT = 30.0


def fetch_small(store: BlobStore, url: str, *, limit: int = INLINE_MAX) -> ArtifactInfo | None:
    """Put the file at ``url`` into ``store`` and describe it, when one GET answers 200 with at most ``limit``
    bytes that are not an HTML page (a page may be a folder listing: fsspec decides); None otherwise, having
    stored nothing. ``url`` has passed the server's source policy."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or url.endswith("/"):
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=TIMEOUT, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        conn.request("GET", target, headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        declared = response.getheader("Content-Length")
        kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if (response.status != 200 or kind in ("text/html", "application/xhtml+xml")
                or response.getheader("Content-Encoding", "identity").lower() != "identity"
                or declared is None or not declared.isdigit() or int(declared) > limit):
            return None
        data = response.read(limit + 1)
        if len(data) != int(declared):
            return None  # cut short, or more than it said: let fsspec's reading report it
    except (OSError, http.client.HTTPException, ValueError):
        return None  # unreachable or broken: the usual path names the error
    finally:
        conn.close()
    blob = store.put_bytes(data)
    name = posixpath.basename(url.rstrip("/")) or "artifact"  # as BlobStore.ingest names a fetched file
    entry = FileEntry(path=name, digest=blob.digest, size=blob.size, mode=0o644)
    return ArtifactInfo(digest=blob.digest, size=blob.size, kind="file", files=(entry,))
