"""A small file at an http(s) URL the server may read (under ``MLEDGER_SOURCES``), fetched in one GET over a
connection kept open for the next fetch from the same origin.

MLflow's ``model-versions/create`` names a source the server ingests before answering. Through fsspec's HTTP
filesystem a ~400 B file took seven requests to the source (``exists`` for the check before appending, then
``isdir``, which reads the body to look for links, ``exists`` again, an ``info`` and a read for hashing, and
the same for copying), each on a new connection: ~35 ms of the server's CPU per create under the profiler,
two thirds of it in aiohttp and the source's answers (``scripts/profile_http.py --op mlflow-create``). A file
of at most ``INLINE_MAX`` bytes is read here whole with one GET and handed to the store like an upload;
anything else (a larger file, a folder listing, an answer other than 200, a redirect, another scheme) goes the
usual way, through fsspec, whose checks and errors stay those of every ingest.

Why a pool of connections and httptools rather than a new ``http.client`` connection per GET: a client of the
MLflow API creates versions one after another from one bucket or file server, and an object store or web
server keeps an HTTP/1.1 connection open for the next request. Client CPU per GET of a ~400 B file from a
local HTTP/1.1 server (1,000 GETs, in-process, 2026-12-01): a new ``http.client`` connection each time
216–244 µs, one kept ``http.client`` connection 112–123 µs, a kept socket read by httptools' C parser (what
uvicorn parses requests with, a dependency of the server already) 25–41 µs.
"""

from __future__ import annotations

import posixpath
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import httptools

from modelledger.jsonhttp import INLINE_MAX
from workers.store import ArtifactInfo, BlobStore, FileEntry

TIMEOUT = 30.0
# A kept connection idle longer than this is closed rather than reused: servers close theirs after a few
# seconds (uvicorn 5 s, nginx 75 s), and a request sent on a connection the server is closing is lost.
IDLE_S = 4.0
IDLE_PER_ORIGIN = 8  # kept connections per origin; a fetch finding none opens another, closed if 8 wait already
MAX_ORIGINS = 32  # origins with kept connections; a fetch from yet another closes its connection after
HTML = ("text/html", "application/xhtml+xml")

Origin = tuple[str, str, int]


class Origins:
    """Connections kept open after a fetch, by origin (scheme, host, port), for the next fetch: at most
    ``IDLE_PER_ORIGIN`` per origin and ``MAX_ORIGINS`` origins, none older than ``IDLE_S``. Shared by the
    threads of one server process (``app.state.origins``); ``close()`` at its shutdown."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[tuple[float, socket.socket]]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None  # made once: loading the CA bundle costs milliseconds
        self._closed = False

    def take(self, origin: Origin) -> socket.socket | None:
        """A kept connection to ``origin`` still open, or None."""
        now = time.monotonic()
        while True:
            with self._lock:
                kept = self._idle.get(origin)
                if not kept:
                    return None
                since, sock = kept.pop()
            if now - since <= IDLE_S and _still_open(sock):
                return sock
            sock.close()

    def give(self, origin: Origin, sock: socket.socket) -> None:
        """Keep ``sock`` (a connection whose last answer was read whole) for the next fetch, or close it."""
        with self._lock:
            kept = self._idle.get(origin)
            if kept is None and not self._closed and len(self._idle) < MAX_ORIGINS:
                kept = self._idle[origin] = []
            if kept is not None and not self._closed and len(kept) < IDLE_PER_ORIGIN:
                kept.append((time.monotonic(), sock))
                return
        sock.close()

    def connect(self, origin: Origin) -> socket.socket:
        scheme, host, port = origin
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: send it now
        if scheme == "https":
            with self._lock:
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                context = self._tls
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        return sock

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for kept in idle.values():
            for _since, sock in kept:
                sock.close()


def _still_open(sock: socket.socket) -> bool:
    """An idle connection the server has not closed: nothing to read on it (a close reads as EOF)."""
    try:
        poll = select.poll()  # not select(): a descriptor above 1,023 is refused there
        poll.register(sock, select.POLLIN)
        return not poll.poll(0)
    except (OSError, ValueError):
        return False


@dataclass
class _Answer:
    """httptools' callbacks for one response."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    begun: int = 0
    status: int = 0
    keep: bool = False  # may the connection carry another request after this answer?
    headed: bool = False
    complete: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        # Asked here: once the answer is complete the parser has reset what it knew of the connection.
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        self.headed = True

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)
        self.size += len(chunk)

    def on_message_complete(self) -> None:
        self.complete = True


class _Stale(Exception):
    """The connection was closed before any byte of the answer came back."""


def _acceptable(answer: _Answer, limit: int) -> bool:
    """A 200 with a declared length of at most ``limit`` bytes, sent as is, that is not an HTML page (a page may
    be a folder listing: fsspec decides)."""
    h = answer.headers
    kind = h.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
    declared = h.get(b"content-length", b"")
    return (answer.status == 200 and kind not in HTML and h.get(b"content-encoding", b"identity").lower() == b"identity"
            and b"transfer-encoding" not in h and declared.isdigit() and int(declared) <= limit)


def _exchange(sock: socket.socket, request: bytes, limit: int) -> tuple[bytes | None, bool]:
    """Send one GET on ``sock`` and read its answer: (the body if acceptable, whether ``sock`` may be kept)."""
    answer = _Answer()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    sock.sendall(request)
    received = 0
    while not answer.complete:
        chunk = sock.recv(65536)
        if not chunk:
            if received == 0:
                raise _Stale
            return None, False  # cut short
        received += len(chunk)
        parser.feed_data(chunk)
        if answer.headed and not answer.complete and not _acceptable(answer, limit):
            return None, False  # nothing more is read of it: the connection goes
    keep = answer.keep and answer.begun == 1
    if not _acceptable(answer, limit) or answer.size > limit:
        return None, keep
    return b"".join(answer.body), keep


def _request(parts: SplitResult) -> bytes | None:
    """The GET's bytes, or None for a URL with characters a request line or Host header cannot carry."""
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]  # credentials in the URL are not sent (as before)
    text = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n"
    if not text.isascii() or any(ord(ch) <= 32 or ord(ch) == 127 for ch in target + host):
        return None
    return text.encode("ascii")


def get_small(origins: Origins, url: str, limit: int = INLINE_MAX) -> bytes | None:
    """The body of one GET of ``url`` when it answers 200 with at most ``limit`` bytes that are not an HTML
    page; None for anything else (fsspec's path then reads it, or names the error). A kept connection that
    turns out closed is retried once on a new one: a GET may be sent again."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or url.endswith("/"):
        return None
    request = _request(parts)
    if request is None:
        return None
    origin: Origin = (parts.scheme, parts.hostname, port)
    try:
        for attempt in (0, 1):
            sock = origins.take(origin) if attempt == 0 else None
            reused = sock is not None
            if sock is None:
                sock = origins.connect(origin)
            try:
                data, keep = _exchange(sock, request, limit)
            except _Stale:
                sock.close()
                if reused:
                    continue
                return None
            except BaseException:
                sock.close()
                raise
            if keep:
                origins.give(origin, sock)
            else:
                sock.close()
            return data
    except (OSError, httptools.HttpParserError, ValueError):
        return None  # unreachable or broken: the usual path names the error
    return None


def fetch_small(store: BlobStore, url: str, *, limit: int = INLINE_MAX,
                origins: Origins | None = None) -> ArtifactInfo | None:
    """Put the file at ``url`` into ``store`` and describe it, when one GET answers 200 with at most ``limit``
    bytes that are not an HTML page (a page may be a folder listing: fsspec decides); None otherwise, having
    stored nothing. ``url`` has passed the server's source policy. ``origins``: the server's kept connections
    (else one is opened for this fetch and closed)."""
    pool = origins if origins is not None else Origins()
    try:
        data = get_small(pool, url, limit)
    finally:
        if origins is None:
            pool.close()
    if data is None:
        return None
    blob = store.put_bytes(data)
    name = posixpath.basename(url.rstrip("/")) or "artifact"  # as BlobStore.ingest names a fetched file
    entry = FileEntry(path=name, digest=blob.digest, size=blob.size, mode=0o644)
    return ArtifactInfo(digest=blob.digest, size=blob.size, kind="file", files=(entry,))
