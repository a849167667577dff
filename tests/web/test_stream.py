"""The live log's server-sent events as the catalog page consumes them, from a real uvicorn process: the id of
each message is its position, ``?since=N`` starts after N, ``Last-Event-ID`` resumes after a cut, and an
event another process appends arrives on an open stream."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import mledger_command, subprocess_env
from web_support import Built, Server, populate

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("stream")
    return populate(root / "home", root / "inputs")


@pytest.fixture(scope="module")
def server(built: Built) -> Iterator[Server]:
    s = Server(built.home)
    yield s
    s.stop()


class Stream:
    def __init__(self, server: Server, query: str = "", headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.conn.request("GET", "/api/v1/log/stream" + query, headers=headers or {})
        self.response = self.conn.getresponse()

    def messages(self, n: int) -> list[tuple[int, dict]]:
        """The next ``n`` messages as (id, data); comments and the retry line are skipped."""
        out: list[tuple[int, dict]] = []
        fields: dict[str, str] = {}
        while len(out) < n:
            line = self.response.readline().decode().rstrip("\n")
            if line == "":
                if "data" in fields:
                    out.append((int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        return out

    def close(self) -> None:
        self.conn.close()


def test_since_starts_after_that_position_and_ids_are_positions(server: Server, built: Built) -> None:
    s = Stream(server, f"?since={built.head - 3}")
    try:
        assert s.response.status == 200
        assert s.response.getheader("content-type").startswith("text/event-stream")
        got = s.messages(3)
        assert [i for i, _ in got] == [built.head - 2, built.head - 1, built.head]
        assert all(data["position"] == i for i, data in got)
        assert got[-1][1]["type"] == "MetricsRecorded"
    finally:
        s.close()


def test_last_event_id_resumes_after_the_last_message_seen(server: Server, built: Built) -> None:
    s = Stream(server, "?since=0", headers={"Last-Event-ID": str(built.head - 1)})
    try:
        assert s.messages(1)[0][0] == built.head
    finally:
        s.close()


def test_an_event_appended_by_another_process_arrives_on_an_open_stream(server: Server, built: Built,
                                                                         tmp_path: Path) -> None:
    s = Stream(server)  # no since: from the head on, only what is new
    try:
        assert s.response.status == 200
        artifact = tmp_path / "w.bin"
        artifact.write_bytes(b"streamed\n")
        subprocess.run([*mledger_command(), "register", "streamed", "--artifact", str(artifact)],
                       env=subprocess_env(built.home), check=True, capture_output=True, timeout=120)
        first = s.messages(1)[0]
        assert first[1]["type"] == "ModelRegistered" and first[1]["data"]["name"] == "streamed"
        assert first[0] > built.head
    finally:
        s.close()


def test_a_bad_since_is_a_400_json_error(server: Server) -> None:
    s = Stream(server, "?since=abc")
    try:
        assert s.response.status == 400
        assert json.loads(s.response.read())["error"] == "bad_input"
    finally:
        s.close()
