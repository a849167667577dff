"""Against real `mledger serve` processes (two servers refusing a revoked token at once: test_http_auth.py,
on both backends): the live log (JSON Lines and server-sent events with Last-Event-ID), and the CLI's idempotency keys and tokens."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx
from services import mledger_command, subprocess_env

from modelledger import Registry


def test_live_log_json_lines_and_server_sent_events(start_server, tokens, home):
    server = start_server()
    with server.client(tokens["writer"]) as writer, server.client(tokens["reader"]) as reader:
        lines = reader.get("/api/v1/log", params={"since": 2}).text.splitlines()
        assert [json.loads(x)["position"] for x in lines] == [3, 4]
        received: list[dict] = []
        done = threading.Event()

        def listen(last_event_id: str | None) -> None:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            with reader.stream("GET", "/api/v1/log/stream", headers=headers, timeout=60) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                event: dict = {}
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        event["id"] = int(line[4:])
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif line == "" and "id" in event:
                        received.append(event)
                        event = {}
                        if len(received) >= 3:
                            done.set()
                            return

        # Resume after #3: the stream starts with #4 (a token grant), then follows new events live.
        t = threading.Thread(target=listen, args=("3",), daemon=True)
        t.start()
        for k in ("a", "b"):
            r = writer.post("/api/v1/register", json={"name": f"m{k}", "artifact": _upload(writer, k.encode())})
            assert r.status_code == 200, r.text
        assert done.wait(60), f"received only {received}"
        assert [e["id"] for e in received] == [4, 5, 6]
        assert all(e["id"] == e["data"]["position"] for e in received)
        assert received[1]["data"]["type"] == "ModelRegistered"
        bad = reader.get("/api/v1/log/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


def _upload(client: httpx.Client, data: bytes) -> dict:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.put(f"/api/v1/blobs/{digest}", params={"size": len(data)}, content=data).status_code == 201
    return {"digest": digest, "size": len(data), "filename": "w.bin"}


def run_cli(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*mledger_command(), *args], env=subprocess_env(home), capture_output=True, text=True,
                          timeout=120)


def test_cli_tokens_and_idempotency_keys(home, tmp_path):
    art = tmp_path / "w.bin"
    art.write_bytes(b"w")
    out = run_cli(home, "token", "create", "ci", "--role", "writer", "--prefix", "team-a/", "--expires", "30d",
                  "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["secret"].startswith("mlt_") and created["prefix"] == "team-a/"
    listed = run_cli(home, "token", "list", "--json")
    assert [t["name"] for t in json.loads(listed.stdout)["tokens"]] == ["ci"]
    assert created["secret"] not in listed.stdout
    assert run_cli(home, "token", "create", "ci", "--role", "reader").returncode == 4  # exists
    assert run_cli(home, "token", "create", "x", "--role", "reader", "--prefix", "a/").returncode == 2
    assert run_cli(home, "token", "revoke", "nosuch").returncode == 3
    # --idempotency-key on every write command: a retried rollback rolls back once.
    assert run_cli(home, "register", "m", "--artifact", str(art)).returncode == 0
    for n in (1, 2):
        assert run_cli(home, "update", "m@latest", "--params", f'{{"n": {n}}}').returncode == 0
    for n in (1, 2, 3):
        assert run_cli(home, "alias", f"m@{n}", "prod").returncode == 0
    first = run_cli(home, "rollback", "m", "prod", "--idempotency-key", "rb-1", "--json")
    again = run_cli(home, "rollback", "m", "prod", "--idempotency-key", "rb-1", "--json")
    assert first.returncode == again.returncode == 0
    assert json.loads(first.stdout) == json.loads(again.stdout)
    shown = json.loads(run_cli(home, "show", "m", "--json").stdout)
    assert shown["aliases"] == {"prod": 2}
    for args in (("tag", "m@1", "a=b"), ("untag", "m@1", "a"), ("metrics", "m@1", "acc=1"), ("alias", "m@1", "x"),
                 ("unalias", "m", "x"), ("delete", "m@1"), ("undelete", "m@1"), ("gc", "--grace", "7d"),
                 ("restore", "m", "--as-of", "#3")):
        with Registry.open(home) as reg:
            start = reg.head()
        key = "key-" + "-".join(args)
        assert run_cli(home, *args, "--idempotency-key", key).returncode in (0, 1), args
        with Registry.open(home) as reg:
            once = reg.head()
        assert run_cli(home, *args, "--idempotency-key", key).returncode in (0, 1), args
        with Registry.open(home) as reg:
            assert reg.head() == once, args
        assert once >= start


def test_requests_are_logged_only_with_access_log(start_server, tokens):
    """uvicorn's access log (a line per request on stdout) is off by default (it cost ~10% of a tag's server
    CPU) and on with ``mledger serve --access-log``; the server's own lines (on stderr) are there either way."""
    for extra, logged in (((), False), (("--access-log",), True)):
        server = start_server(*extra, stdout=subprocess.PIPE)
        with server.client(tokens["reader"]) as reader:
            assert reader.get("/api/v1/list").status_code == 200
        server.proc.terminate()
        out, err = server.proc.communicate(timeout=60)
        assert "Application startup complete" in err.decode()
        assert ('"GET /api/v1/list HTTP/1.1" 200' in out.decode()) is logged, out
