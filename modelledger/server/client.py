"""The client side of uploads and downloads (httpx): what a remote CLI or SDK sends, and what tests and
scripts/bench use to talk to a server.

Upload: hash the file locally, ask whether the server has the blob, send it only if not (streamed from the
file, never read whole). Download: stream to a temporary file, resume a cut transfer with ``Range`` and
``If-Range`` (the digest as ETag), and accept the result only if it hashes to its digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from modelledger.jsonhttp import HTTPError

API = "/api/v1"
CHUNK = 1024 * 1024


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def _chunks(path: str | os.PathLike[str]) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": "http", "message": response.text[:200]}
        raise HTTPError(response.status_code, payload.get("error", "http"), payload.get("message", ""))
    return response


def upload_blob(http: httpx.Client, path: str | os.PathLike[str]) -> tuple[str, int, bool]:
    """Make sure the server holds ``path``'s bytes; ``(digest, size, sent)`` — ``sent`` is False when the
    server already had them."""
    digest, size = file_digest(path)
    head = http.head(f"{API}/blobs/{digest}", params={"size": size})
    if head.status_code == 200:
        return digest, size, False
    if head.status_code != 404:
        _check(head)
    _check(http.put(f"{API}/blobs/{digest}", params={"size": size}, content=_chunks(path),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}))
    return digest, size, True


def upload_artifact(http: httpx.Client, path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The ``artifact`` of a register/update body for a local file or folder, after uploading whatever the
    server lacks; also how many blobs were sent."""
    root = Path(path)
    if root.is_dir():
        files: list[dict[str, Any]] = []
        sent = 0
        for item in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            digest, size, was_sent = upload_blob(http, item)
            sent += was_sent
            files.append({"path": item.relative_to(root).as_posix(), "digest": digest, "size": size,
                          "mode": item.stat().st_mode & 0o777})
        return {"files": files, "name": root.name}, sent
    digest, size, was_sent = upload_blob(http, root)
    return {"digest": digest, "size": size, "filename": root.name}, int(was_sent)


def download_blob(http: httpx.Client, digest: str, dest: str | os.PathLike[str], *, url: str | None = None) -> int:
    """Write the blob to ``dest``, resuming a partial ``dest + '.part'`` left by a cut transfer; verify the
    digest before the file takes its name. Returns the bytes received in this call."""
    part = Path(f"{dest}.part")
    have = part.stat().st_size if part.exists() else 0
    h = hashlib.sha256()
    if have:
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{digest}"'} if have else {}
    received = 0
    with http.stream("GET", url or f"{API}/blobs/{digest}", headers=headers) as response:
        if response.status_code == 416:
            response.read()
        else:
            if response.status_code >= 400:
                response.read()
                _check(response)
            mode = "ab" if response.status_code == 206 else "wb"
            if mode == "wb":
                h = hashlib.sha256()
            with open(part, mode) as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
    if f"sha256:{h.hexdigest()}" != digest:
        part.unlink(missing_ok=True)
        raise ValueError(f"downloaded bytes do not hash to {digest}")
    os.replace(part, dest)
    return received
