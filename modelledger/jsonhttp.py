"""JSON requests and server-sent events over the standard library's ``http.client``: how the CLI and the SDK
read and write over HTTP (``modelledger/remote.py``). Artifact uploads and downloads, which stream files
and resume, keep httpx (``modelledger/server/client.py``), loaded only by a command that moves bytes.

Why not httpx here: a remote ``mledger show`` imported httpx with httpcore, h11, anyio, idna, certifi and
(through ``httpx._main``) rich: 46 ms of ``python -X importtime`` on the project's machine, more than the
request itself, against ~16 ms for ``http.client`` (docs/performance.md, "Cold start").
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from eventstore.errors import ValidationError

from . import __version__

USER_AGENT = f"modelledger/{__version__}"
# A register (or update) may carry a file of at most this many bytes in its own JSON body, base64-encoded
# (``artifact.content_base64``): one request and one commit instead of HEAD + PUT + register and two commits.
# It is the small-blob tier's default threshold (workers/blobs, MLEDGER_SMALL_BLOBS), so such bytes go into
# the database inside the version's transaction. The server refuses more with a 413; larger files are
# uploaded with ``PUT /blobs`` first.
INLINE_MAX = 64 * 1024


class HTTPError(Exception):
    """A refusal from the server: its status and the ``{"error", "message"}`` of its JSON body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"{status} {kind}: {message}")
        self.status = status
        self.kind = kind
        self.message = message


class Unreachable(Exception):
    """No answer: the connection failed, was cut, or timed out."""


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event (``id``, ``event``, ``data`` as the stream gave them)."""

    id: str | None
    event: str
    data: str


def check_url(url: str) -> str:
    """The server's base URL without a trailing slash, or a ``ValidationError`` saying what is wrong."""
    text = str(url or "")
    shown = repr(text[:80])
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"the server URL {shown} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"the server URL must look like http://host:port or https://host, not {shown}")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("the server URL must not hold a user or password: give the token with --token-file "
                              "or MLEDGER_TOKEN")
    if parts.query or parts.fragment or any(c.isspace() for c in text):
        raise ValidationError(f"the server URL must be a plain http(s)://host[:port][/path], not {shown}")
    if port == 0:
        raise ValidationError(f"the server URL has no usable port: {shown}")
    return text.rstrip("/")


def header_value(what: str, value: str) -> str:
    """``value`` if an HTTP header can carry it unchanged (Latin-1 text without control characters), else a
    ``ValidationError`` naming ``what`` (http.client would raise a bare ValueError or UnicodeEncodeError)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} cannot be sent over HTTP: it holds characters outside Latin-1") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{what} cannot be sent over HTTP: it holds a line break or a control character")
    return value


def _query(params: Mapping[str, Any] | None) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is None:
                continue
            pairs.append((key, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return f"?{urlencode(pairs)}" if pairs else ""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    headers: dict[str, str]


def proxy_for(scheme: str, host: str) -> Proxy | None:
    """The HTTP proxy the environment names for ``scheme://host`` (``https_proxy``/``http_proxy``, then
    ``all_proxy``, lower case first, as curl and httpx read them), unless ``no_proxy`` covers the host: the
    same proxy the artifact transfers (httpx) use. Only ``http://`` proxies are spoken."""
    def env(name: str) -> str:
        return os.environ.get(name) or os.environ.get(name.upper()) or ""

    for entry in env("no_proxy").split(","):
        entry = entry.strip().lower().lstrip(".")
        if entry == "*" or entry and (host.lower() == entry or host.lower().endswith("." + entry)):
            return None
    url = env(f"{scheme}_proxy") or env("all_proxy")
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http" or not parts.hostname or not port:
        raise ValidationError(f"{scheme}_proxy must be an http://host:port proxy, not {url[:80]!r}")
    headers = {}
    if parts.username is not None:
        pair = f"{parts.username}:{parts.password or ''}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(parts.hostname, port, headers)


class Wire:
    """One keep-alive connection to the server, made on first use; ``request`` answers ``(status, body)``."""

    def __init__(self, url: str, token: str | None, *, timeout: float) -> None:
        self.url = check_url(url)
        parts = urlsplit(self.url)
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._proxy = proxy_for(parts.scheme.lower(), self._host)
        self.timeout = timeout
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {header_value('the token', token)}"
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        proxy = self._proxy
        if proxy is None:
            if self._https:
                return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        if self._https:  # a CONNECT tunnel through the proxy; TLS (and its host check) with the server itself
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout)
            conn.set_tunnel(self._host, self._port, headers=proxy.headers)
            return conn
        return http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)

    def path(self, route: str, params: Mapping[str, Any] | None = None) -> str:
        """The request target: the path, or the absolute URL when a plain-HTTP proxy is asked."""
        path = self._base + "/" + quote(route.lstrip("/"), safe="/") + _query(params)
        if self._proxy is not None and not self._https:
            host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 address
            return f"http://{host}{'' if self._port is None else f':{self._port}'}{path}"
        return path

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        via = self._proxy.headers if self._proxy is not None and not self._https else {}
        return {**self.headers, **via, **{k: header_value(f"the {k}", v) for k, v in (extra or {}).items()}}

    def request(self, method: str, route: str, params: Mapping[str, Any] | None = None,
                body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer. A GET on a kept-alive connection the server has closed
        meanwhile is sent once more on a new one; a POST is not (it may have been applied: the caller's
        idempotency key is what makes a retry safe)."""
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        sent = self._headers(headers)
        if payload is not None:
            sent["Content-Type"] = "application/json"
        target = self.path(route, params)
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect(self.timeout)
            try:
                self._conn.request(method, target, body=payload, headers=sent)
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 0 and method in ("GET", "HEAD"):
                    continue
                raise Unreachable(_reason(exc)) from None
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def stream(self, route: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
               *, timeout: float | None = None) -> Iterator[ServerEvent]:
        """The server-sent events of ``route``, on a connection of their own, until the server ends the
        stream (or ``Unreachable`` when it is cut or silent for ``timeout`` seconds). First comes an
        ``open`` event without an id, once the server accepted the stream; a refusal is an ``HTTPError``."""
        conn = self._connect(timeout)
        try:
            try:
                conn.request("GET", self.path(route, params),
                             headers=self._headers({"Accept": "text/event-stream", **(headers or {})}))
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise Unreachable(_reason(exc)) from None
            if response.status >= 400:
                raise error_of(response.status, response.read())
            yield ServerEvent(None, "open", "")
            yield from _events(response)
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def error_of(status: int, data: bytes) -> HTTPError:
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError(body)
    except ValueError:
        body = {"error": "error", "message": data[:200].decode("utf-8", "replace")}
    return HTTPError(status, str(body.get("error", "error")), str(body.get("message", "")))


def _events(response: http.client.HTTPResponse) -> Iterator[ServerEvent]:
    """Parse ``text/event-stream`` (the WHATWG rules this server needs: ``id``, ``event``, multi-line
    ``data``, comments); an event is given only when its blank line arrived, so a cut mid-event gives
    nothing of it."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    while True:
        try:
            raw = response.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(_reason(exc)) from None
        if not raw:
            return  # the server ended the stream
        if not raw.endswith(b"\n"):
            raise Unreachable("the stream was cut in the middle of a line")
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(event_id, kind, "\n".join(data))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)
