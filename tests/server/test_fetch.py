"""The server's GET of a small source (``modelledger/server/fetch.py``): one connection per origin kept for the
next fetch, and every answer it cannot use left to fsspec's path (None)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("httptools")

from modelledger.server import fetch  # noqa: E402 - after the skip
from modelledger.server.fetch import Origins, get_small  # noqa: E402


class _Files(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    connections: list[int]
    requests: list[str]
    drop_second: bool = False  # read a connection's second request, then close it without an answer

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)
        self.on_this = 0

    def handle_one_request(self) -> None:
        self.on_this += 1
        if self.drop_second and self.on_this == 2:
            self.raw_requestline = self.rfile.readline(65537)
            self.close_connection = True
            return
        super().handle_one_request()

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path == "/page.html":
            body = b"<html>a listing</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/chunked.bin":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")
            return
        if self.path == "/gzip.bin":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"abc")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """``serve(protocol="HTTP/1.1", drop_second=False)``: a folder served over HTTP; its URL, the connections
    it accepted and the paths it was asked for."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"first file")
    (folder / "b.bin").write_bytes(b"second file")
    (folder / "big.bin").write_bytes(b"B" * 2000)
    started: list[http.server.ThreadingHTTPServer] = []

    def start(protocol: str = "HTTP/1.1", drop_second: bool = False) -> tuple[str, list[int], list[str]]:
        connections: list[int] = []
        requests: list[str] = []
        kind = type("H", (_Files,), {"protocol_version": protocol, "connections": connections,
                                     "requests": requests, "drop_second": drop_second})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(kind, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/", connections, requests

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def test_fetches_from_one_origin_share_one_connection(serve) -> None:
    url, connections, requests = serve()
    origins = Origins()
    try:
        got = [get_small(origins, url + name) for name in ("a.bin", "b.bin", "a.bin", "b.bin")]
    finally:
        origins.close()
    assert got == [b"first file", b"second file", b"first file", b"second file"]
    assert requests == ["/a.bin", "/b.bin", "/a.bin", "/b.bin"] and len(connections) == 1


def test_a_server_that_closes_after_each_answer_gets_a_connection_per_fetch(serve) -> None:
    url, connections, _ = serve(protocol="HTTP/1.0")
    origins = Origins()
    try:
        assert [get_small(origins, url + "a.bin") for _ in range(3)] == [b"first file"] * 3
    finally:
        origins.close()
    assert len(connections) == 3


def test_a_kept_connection_closed_before_its_answer_is_retried_once_on_a_new_one(serve) -> None:
    url, connections, requests = serve(drop_second=True)
    origins = Origins()
    try:
        assert get_small(origins, url + "a.bin") == b"first file"
        assert get_small(origins, url + "b.bin") == b"second file"  # the kept connection drops it: sent again
    finally:
        origins.close()
    assert requests == ["/a.bin", "/b.bin"] and len(connections) == 2


def test_a_connection_idle_too_long_is_not_reused(serve, monkeypatch) -> None:
    url, connections, _ = serve()
    monkeypatch.setattr(fetch, "IDLE_S", -1.0)
    origins = Origins()
    try:
        assert get_small(origins, url + "a.bin") == get_small(origins, url + "a.bin") == b"first file"
    finally:
        origins.close()
    assert len(connections) == 2


@pytest.mark.parametrize("path", ["big.bin", "missing.bin", "page.html", "chunked.bin", "gzip.bin", "a.bin/",
                                  "a.bin%20x HTTP/1.1\r\nX-Injected: 1\r\n", "caf\u00e9.bin", "a bin"])
def test_what_one_get_cannot_take_is_left_to_the_usual_path(serve, path: str) -> None:
    url, _, requests = serve()
    origins = Origins()
    try:
        assert get_small(origins, url + path, limit=1000) is None
        assert get_small(origins, url + "a.bin", limit=1000) == b"first file"  # the pool still works after it
    finally:
        origins.close()
    assert all("\r" not in r and " " not in r for r in requests)


def test_a_closed_pool_keeps_nothing(serve) -> None:
    url, connections, _ = serve()
    origins = Origins()
    origins.close()
    assert get_small(origins, url + "a.bin") == get_small(origins, url + "a.bin") == b"first file"
    assert len(connections) == 2


def test_at_most_so_many_connections_wait_per_origin(serve, monkeypatch) -> None:
    url, _, _ = serve()
    monkeypatch.setattr(fetch, "IDLE_PER_ORIGIN", 2)
    origins = Origins()
    try:
        socks = [origins.connect(("http", "127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")))) for _ in range(3)]
        origin = ("http", "127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")))
        for sock in socks:
            origins.give(origin, sock)
        assert socks[2].fileno() == -1  # the third was closed, not kept
        assert origins.take(origin) is socks[1] and origins.take(origin) is socks[0] and origins.take(origin) is None
        socks[0].close()
        socks[1].close()
    finally:
        origins.close()
