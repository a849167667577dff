"""A TCP proxy in front of the machine's PostgreSQL that cuts the connection around a COMMIT, for the
connection-loss tests: ``cut="before"`` drops the client's COMMIT unsent (the server rolls back),
``cut="after"`` forwards it, waits for the server's ``COMMIT`` completion and drops that reply (the change is
recorded; the client never hears so). Either way the client sees its connection die mid-commit, which is
the case where it cannot know the outcome. One cut per arming; every other byte passes through.

The URL it hands out sets ``sslmode=disable``: the proxy reads the plain protocol to find the COMMIT.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

from psycopg.conninfo import conninfo_to_dict, make_conninfo

Cut = Literal["before", "after"]


class CommitCutter:
    def __init__(self, url: str) -> None:
        info = conninfo_to_dict(url)
        self.upstream = (info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(url, host="127.0.0.1", port=str(self._server.getsockname()[1]),
                                 sslmode="disable")
        self._lock = threading.Lock()
        self._armed: Cut | None = None
        self.cuts = 0
        self._closing = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, cut: Cut) -> None:
        with self._lock:
            self._armed = cut

    def _take(self, cut: Cut) -> bool:
        with self._lock:
            if self._armed == cut:
                self._armed = None
                self.cuts += 1
                return True
            return False

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, upstream]
            state = {"await_commit_reply": False}
            threading.Thread(target=self._pump_up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client, state), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            while chunk := client.recv(65536):
                if b"COMMIT" in chunk:
                    if self._take("before"):
                        _kill(client, upstream)
                        return
                    if self._take("after"):
                        state["await_commit_reply"] = True
                upstream.sendall(chunk)
        except OSError:
            pass
        _kill(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        held = b""
        try:
            while chunk := upstream.recv(65536):
                if state["await_commit_reply"]:
                    # Hold the server's replies until its COMMIT completion has arrived, then drop them all.
                    held += chunk
                    if b"COMMIT\x00" in held:
                        _kill(client, upstream)
                        return
                    continue
                client.sendall(chunk)
        except OSError:
            pass
        _kill(client, upstream)

    def close(self) -> None:
        self._closing = True
        # shutdown first: a bare close() does not wake the thread blocked in accept(), which would go on
        # accepting on the still-open listening socket.
        _kill(self._server)
        with self._lock:
            for sock in self._sockets:
                _kill(sock)


def _kill(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
