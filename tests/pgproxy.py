"""A TCP proxy in front of the machine's PostgreSQL that cuts the connection around a COMMIT, for the
connection-loss tests: ``cut="before"`` drops the client's COMMIT unsent (the server rolls back),
``cut="after"`` forwards it, waits for the server's ``COMMIT`` completion and drops that reply (the change is
recorded; the client never hears so). Either way the client sees its connection die mid-commit, which is
the case where it cannot know the outcome. One cut per arming; every other byte passes through.

A command's batched transaction (``PostgresRecorder.write_batched``) has no COMMIT statement: its pipeline's
statements are the extended protocol's implicit transaction, committed when the server reaches their Sync.
``arm(cut, at="sync")`` cuts there instead: at the first Sync after a statement that appends to ``events``
("before": the Sync is not forwarded; "after": the server's ReadyForQuery that follows the commit is dropped).

The URL it hands out sets ``sslmode=disable``: the proxy reads the plain protocol, message by message, to find
the COMMIT (a simple query, a Parse of it, or a Bind of a statement prepared from it).
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

from psycopg.conninfo import conninfo_to_dict

Cut = Literal["before", "after"]
At = Literal["commit", "sync"]


class CommitCutter:
    def __init__(self, url: str) -> None:
        info = conninfo_to_dict(url)
        self.upstream = (info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
        self._server = socket.create_server(("127.0.0.1", 0))
        # A postgresql:// URL (what MLEDGER_DATABASE takes) to the proxy, the same user and database.
        self.url = (f"postgresql://{info.get('user') or 'postgres'}@127.0.0.1:{self._server.getsockname()[1]}/"
                    f"{info.get('dbname') or 'postgres'}?sslmode=disable&gssencmode=disable")
        self._lock = threading.Lock()
        self._armed: Cut | None = None
        self._at: At = "commit"
        self.cuts = 0
        self._closing = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, cut: Cut, at: At = "commit") -> None:
        with self._lock:
            self._armed, self._at = cut, at

    def _take(self, cut: Cut, at: At) -> bool:
        with self._lock:
            if self._armed == cut and self._at == at:
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
            state = {"await_commit_reply": False, "until": b"COMMIT\x00"}
            threading.Thread(target=self._pump_up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client, state), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        reader = _ClientMessages()
        try:
            while chunk := client.recv(65536):
                complete, commits, syncs = reader.feed(chunk)
                for count, at, reply in ((commits, "commit", b"COMMIT\x00"), (syncs, "sync", _READY)):
                    if not count:
                        continue
                    if self._take("before", at):
                        _kill(client, upstream)
                        return
                    if self._take("after", at):
                        state["await_commit_reply"], state["until"] = True, reply
                if complete:
                    upstream.sendall(complete)
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
                    if state["until"] in held:
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


class _ClientMessages:
    """The client's side of the protocol, message by message: which carry a COMMIT. psycopg prepares a
    statement it has run a few times, after which a COMMIT is a Bind of that statement's name (no text):
    the names of statements parsed from "COMMIT" are remembered."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False
        self.commit_statements: set[bytes] = set()
        self.append_statements: set[bytes] = set()  # statements that insert into events
        self.appending = False  # a statement that appends ran since the last Sync

    def feed(self, data: bytes) -> tuple[bytes, int, int]:
        """The complete messages now available (to forward), how many of them are COMMITs and how many Syncs
        commit an implicit transaction that appended events."""
        self.buffer += data
        out, commits, syncs, at = [], 0, 0, 0
        while True:
            if not self.started:  # the startup message has a length but no type byte
                if len(self.buffer) - at < 4:
                    break
                size = int.from_bytes(self.buffer[at:at + 4], "big")
                if len(self.buffer) - at < size:
                    break
                out.append(self.buffer[at:at + size])
                at += size
                self.started = True
                continue
            if len(self.buffer) - at < 5:
                break
            kind = self.buffer[at:at + 1]
            size = int.from_bytes(self.buffer[at + 1:at + 5], "big")
            if len(self.buffer) - at < 1 + size:
                break
            body = self.buffer[at + 5:at + 1 + size]
            # A Parse names a statement and gives its text; a Bind names the statement it runs
            name = query = b""
            if kind == b"P":
                name, _, rest = body.partition(b"\x00")
                query = rest.partition(b"\x00")[0].strip().upper()
            elif kind == b"B":
                name = body.split(b"\x00", 2)[1]
            commits += self._commits(kind, body, name, query)
            syncs += self._syncs(kind, name, query)
            out.append(self.buffer[at:at + 1 + size])
            at += 1 + size
        self.buffer = self.buffer[at:]
        return b"".join(out), commits, syncs

    def _syncs(self, kind: bytes, name: bytes, query: bytes) -> int:
        if kind == b"P":
            if b"INSERT INTO EVENTS" in query:
                self.append_statements.add(name)
                self.appending = self.appending or name == b""
            else:
                self.append_statements.discard(name)
        elif kind == b"B":
            self.appending = self.appending or (name != b"" and name in self.append_statements)
        elif kind == b"S":
            appended, self.appending = self.appending, False
            return int(appended)
        return 0

    def _commits(self, kind: bytes, body: bytes, name: bytes, query: bytes) -> int:
        if kind == b"Q":
            return int(body.rstrip(b"\x00").strip().upper().startswith(b"COMMIT"))
        if kind == b"P":
            if query.startswith(b"COMMIT"):
                self.commit_statements.add(name)
                return int(name == b"")  # an unnamed statement runs right after its Parse
            self.commit_statements.discard(name)
            return 0
        if kind == b"B":
            return int(name != b"" and name in self.commit_statements)
        return 0


# The server's ReadyForQuery, idle: what it sends once a Sync's implicit transaction has committed.
_READY = b"Z\x00\x00\x00\x05I"


def _kill(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
