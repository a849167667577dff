"""The CLI over HTTP (MLEDGER_URL + MLEDGER_TOKEN): the same session run locally and against a real server
gives the same answers, the same exit codes, and pulls the same verified bytes."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from services import mledger_command, reap, subprocess_env, wait_for

from modelledger import Registry


def _strip(value: Any) -> Any:
    """What differs between a local run and a remote one by design: times, positions, hashes, who acted,
    and the artifact's recorded source (a local path vs upload://<name>)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if k not in ("created_at", "updated_at", "recorded_at", "position", "hash", "meta", "created_by",
                             "source", "version" if "stream" in value else "", "restore_id")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


SESSION = [
    ("register", "m", "--artifact", "{w1}", "--tag", "task=vision", "--params", '{{"lr": 0.1}}'),
    ("update", "m@1", "--params", '{{"lr": 0.01}}'),
    ("update", "m@2", "--artifact", "{folder}"),
    ("tag", "m@2", "stage=prod"),
    ("untag", "m@2", "stage"),
    ("metrics", "m@1", "acc=0.7"),
    ("metrics", "m@2", "acc=0.9"),
    ("alias", "m@1", "prod"),
    ("alias", "m@2", "prod"),
    ("rollback", "m", "prod", "--idempotency-key", "rb-1"),
    ("rollback", "m", "prod", "--idempotency-key", "rb-1"),
    ("list",),
    ("list", "--search", "vision"),
    ("list", "--tag", "task=vision", "--alias", "prod"),
    ("show", "m"),
    ("show", "m@prod"),
    ("show", "m@3"),
    ("best", "m", "--metric", "acc"),
    ("history", "m@1"),
    ("diff", "m@1", "m@2"),
    ("delete", "m@2", "--reason", "bad"),
    ("undelete", "m@2"),
    ("audit",),
    # refusals: the exit codes must match too
    ("show", "ghost"),
    ("tag", "bad name@1", "a=b"),
    ("rollback", "m", "nosuch"),
    ("alias", "m@1", "prod"),
    ("metrics", "m@1", "acc=high"),
    ("register", "m", "--artifact", "{missing}"),
]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*mledger_command(), *args, "--json"], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cli_gives_the_same_answers_locally_and_over_http(start_server, tokens, home, tmp_path):
    w1 = tmp_path / "w1.bin"
    w1.write_bytes(b"weights one")
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "a.bin").write_bytes(b"a" * 1000)
    values = {"w1": str(w1), "folder": str(folder), "missing": str(tmp_path / "missing.bin")}
    server = start_server()
    remote_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["admin"])
    local_env = subprocess_env(tmp_path / "local")
    local_env.pop("MLEDGER_DATABASE", None)  # under a PostgreSQL pass it names the server's registry
    for step in SESSION:
        args = [a.format(**values) for a in step]
        local, remote = run(local_env, *args), run(remote_env, *args)
        assert remote.returncode == local.returncode, (args, local.stderr, remote.stderr)
        if local.returncode == 0 and args[0] == "audit":  # the server's log also holds its tokens' grants
            assert json.loads(remote.stdout)["ok"] is json.loads(local.stdout)["ok"] is True
        elif local.returncode == 0:
            assert _strip(json.loads(remote.stdout)) == _strip(json.loads(local.stdout)), args
        else:
            assert remote.stderr.startswith("mledger: error:") and remote.stderr.count("\n") == 1, remote.stderr
    # Pull over HTTP writes the same verified bytes (a file and a folder).
    for ref in ("m@1", "m@3"):
        dest_local, dest_remote = tmp_path / f"l-{ref}", tmp_path / f"r-{ref}"
        assert run(local_env, "pull", ref, str(dest_local)).returncode == 0
        out = run(remote_env, "pull", ref, str(dest_remote))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["verified"] is True
        if dest_local.is_dir():
            assert sorted(p.relative_to(dest_remote).as_posix() for p in dest_remote.rglob("*")) == \
                sorted(p.relative_to(dest_local).as_posix() for p in dest_local.rglob("*"))
            assert (dest_remote / "sub" / "a.bin").read_bytes() == b"a" * 1000
        else:
            assert dest_remote.read_bytes() == dest_local.read_bytes() == b"weights one"
    # Nothing was written to a local registry in remote mode, and the server recorded the token's name.
    assert not (tmp_path / "nowhere").exists()
    lines = run(remote_env, "log", "--since", "0").stdout.splitlines()
    actors = {json.loads(x)["meta"]["actor"] for x in lines if json.loads(x)["stream"] == "model-m"}
    assert actors == {"admin"}


def test_remote_refusals_and_local_only_commands(start_server, tokens, tmp_path):
    server = start_server()
    reader_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["reader"])
    w = tmp_path / "w.bin"
    w.write_bytes(b"w")
    out = run(reader_env, "register", "m", "--artifact", str(w))
    assert out.returncode == 9 and "reader" in out.stderr  # PermissionDeniedError
    bad_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN="mlt_wrong")
    assert run(bad_env, "list").returncode == 8  # AuthenticationError
    assert run(reader_env, "audit", "--anchor").returncode == 2
    for local_only in (["projections", "rebuild"], ["copy", "--to", str(tmp_path / "copy.db")], ["webhook", "list"]):
        out = run(reader_env, *local_only)
        assert out.returncode == 2 and "not over HTTP" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "copy.db").exists()
    # What an HTTP header cannot carry is refused before anything is sent (http.client raised ValueError).
    for key in ("two\nlines", "euro-€"):
        out = run(reader_env, "tag", "m", "a=b", "--idempotency-key", key)
        assert out.returncode == 2 and "Idempotency-Key cannot be sent" in out.stderr, out.stderr
    out = run({**reader_env, "MLEDGER_TOKEN": "mlt_a\r\nX-Injected: 1"}, "list")
    assert out.returncode == 2 and "token cannot be sent" in out.stderr, out.stderr
    down_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL="http://127.0.0.1:9", MLEDGER_TOKEN="x")
    out = run(down_env, "list")
    assert out.returncode == 5 and "cannot reach" in out.stderr
    assert not Path(tmp_path / "nowhere").exists()


def test_the_sdk_opens_the_server_when_mledger_url_is_set(start_server, tokens, tmp_path, monkeypatch):
    from modelledger.remote import RemoteRegistry

    server = start_server()
    monkeypatch.setenv("MLEDGER_URL", server.url)
    monkeypatch.setenv("MLEDGER_TOKEN", tokens["writer"])
    w = tmp_path / "w.bin"
    w.write_bytes(b"sdk weights")
    with Registry.open() as reg:
        assert isinstance(reg, RemoteRegistry)
        v1 = reg.register("sdk-model", str(w), params={"lr": 0.1}, idempotency_key="reg-1")
        assert reg.register("sdk-model", str(w), params={"lr": 0.1}, idempotency_key="reg-1").ref == v1.ref
        v2 = reg.update(v1.ref, params={"lr": 0.2})
        reg.alias(v1.ref, "prod")
        reg.alias(v2.ref, "prod")
        first = reg.rollback("sdk-model", "prod", idempotency_key="rb")
        again = reg.rollback("sdk-model", "prod", idempotency_key="rb")
        assert [e.position for e in first] == [e.position for e in again]
        assert reg.model("sdk-model").aliases == {"prod": 1}
        assert [v.ref for v in reg.search(keyword="sdk-model")] == ["sdk-model@1", "sdk-model@2"]
        out = tmp_path / "out.bin"
        reg.pull("sdk-model@prod", str(out))
        assert out.read_bytes() == b"sdk weights"
        assert reg.get("sdk-model").version == 2  # a bare name: the latest live version, as locally


# -- --url / --token / --token-file ---------------------------------------------------------------------

def _one_line_refusal(out: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("mledger: error:") and words in out.stderr, out.stderr
    assert out.stdout == ""


def test_url_and_token_options_name_the_server_and_bad_ones_are_refused(start_server, tokens, tmp_path):
    server = start_server()
    nowhere = tmp_path / "nowhere"
    env = subprocess_env(nowhere)
    env.pop("MLEDGER_DATABASE", None)  # a PostgreSQL pass would name a local registry, refused beside --url
    token_file = tmp_path / "token"
    token_file.write_text(tokens["reader"] + "\n")
    token_file.chmod(0o600)
    by_env = run({**env, "MLEDGER_URL": server.url, "MLEDGER_TOKEN": tokens["reader"]}, "list")
    assert by_env.returncode == 0, by_env.stderr
    for extra in (["--token-file", str(token_file)], ["--token", tokens["reader"]]):
        out = run(env, "list", "--url", server.url, *extra)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == json.loads(by_env.stdout)
    # MLEDGER_TOKEN_FILE, and an option winning over the environment
    assert run({**env, "MLEDGER_URL": server.url, "MLEDGER_TOKEN_FILE": str(token_file)}, "list").returncode == 0
    out = run({**env, "MLEDGER_URL": "http://127.0.0.1:9", "MLEDGER_TOKEN": "mlt_wrong"}, "list",
              "--url", server.url, "--token-file", str(token_file))
    assert out.returncode == 0, out.stderr
    _one_line_refusal(run(env, "list", "--url", server.url, "--token", "mlt_wrong"), 8, "token")
    # Bad URLs: one line, exit 2, nothing sent and nothing made locally.
    for url in ("ftp://host/", "localhost:8080", "http://", "http://host:99999", "http://user:pw@host/",
                "http://host/?q=1", "http://host /"):
        _one_line_refusal(run(env, "list", "--url", url, "--token-file", str(token_file)), 2, "URL")
    _one_line_refusal(run({**env, "MLEDGER_URL": "ftp://x"}, "list"), 2, "URL")
    # A token with no server, two tokens, a server and a local registry at once: refused, not ignored.
    _one_line_refusal(run(env, "list", "--token", "mlt_x"), 2, "--url")
    _one_line_refusal(run(env, "list", "--url", server.url, "--token", "a", "--token-file", str(token_file)), 2,
                      "not both")
    _one_line_refusal(run(env, "list", "--url", server.url, "--home", str(nowhere)), 2, "--home")
    # Token files that are not one token.
    two_lines = tmp_path / "two"
    two_lines.write_text("mlt_a\nmlt_b\n")
    for bad in (tmp_path / "missing", tmp_path, two_lines):
        _one_line_refusal(run(env, "list", "--url", server.url, "--token-file", str(bad)), 2, "token file")
    assert not nowhere.exists()
    # Documented where a user looks first.
    usage = subprocess.run([*mledger_command(), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert "--url" in usage.stdout and "--token-file" in usage.stdout and "MLEDGER_TOKEN" in usage.stdout
    usage = subprocess.run([*mledger_command(), "show", "--help"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert "--token-file FILE" in usage.stdout and "ps" in usage.stdout


# -- log --follow and wait over the event stream ----------------------------------------------------------

class _Lines:
    """The stdout lines of a child, collected by a thread as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def positions(self) -> list[int]:
        return [json.loads(x)["position"] for x in list(self.lines)]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._thread.join(timeout=30)
        err = self.proc.stderr.read()
        reap(self.proc)
        return err


def test_remote_log_follow_equals_the_local_one_across_a_server_crash(start_server, tokens, home, tmp_path):
    """`mledger log --follow` over HTTP reads the server's event stream; when the server dies (SIGKILL) and
    comes back, it reconnects with Last-Event-ID: the lines equal the local follow's, none missed or twice."""
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights")
    with Registry.open(home) as reg:
        reg.register("m", str(w), tags={"task": "x"})
    server = start_server()
    token_file = tmp_path / "token"
    token_file.write_text(tokens["reader"])
    local = _Lines([*mledger_command(), "log", "--follow", "--json"], subprocess_env(home))
    remote_env = subprocess_env(tmp_path / "nowhere")
    remote_env.pop("MLEDGER_DATABASE", None)
    remote = _Lines([*mledger_command(), "log", "--follow", "--json", "--url", server.url,
                     "--token-file", str(token_file)], remote_env)
    try:
        def caught_up(head: int) -> bool:
            return local.positions()[-1:] == [head] and remote.positions()[-1:] == [head]

        with Registry.open(home) as reg:
            reg.metrics("m@1", acc=0.5)
            wait_for(lambda: caught_up(reg.head()), 60, "both follows to print the log")
            server.kill()  # every connection cut, nothing said
            reg.tag("m@1", stage="dev")
            reg.metrics("m@1", acc=0.7)
            time.sleep(1.5)  # the remote follow is retrying meanwhile
            start_server(port=server.port)
            reg.alias("m@1", "prod")
            reg.register("m", str(w), params={"lr": 0.1})
            wait_for(lambda: caught_up(reg.head()), 90, "both follows to print what happened meanwhile")
            head = reg.head()
    finally:
        local_err, remote_err = local.stop(), remote.stop()
    assert remote.positions() == list(range(1, head + 1)), remote_err
    assert remote.lines == local.lines, (local_err, remote_err)
    assert {json.loads(x)["type"] for x in remote.lines} >= {"MetricsRecorded", "AliasAssigned", "Tagged"}


def test_remote_wait_follows_the_stream_until_the_version_is_stored(redis_url, start_server, tokens, home, tmp_path,
                                                                    monkeypatch):
    """A pending version (its job queued on Redis, no worker running): `mledger wait` over HTTP blocks, and
    returns as soon as someone stores the artifact (here a local `retry`); a timeout is exit 7."""
    monkeypatch.setenv("MLEDGER_SOURCES", str(tmp_path))
    w = tmp_path / "w.bin"
    w.write_bytes(b"queued weights")
    with Registry.open(home, broker=redis_url) as reg:
        assert reg.register("m", str(w), wait=False).status == "pending"
        assert reg.register("m", str(w), params={"lr": 1}, wait=False).status == "pending"
    server = start_server()
    env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["reader"])
    env.pop("MLEDGER_DATABASE", None)
    waiting = subprocess.Popen([*mledger_command(), "wait", "m@1", "--json"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        assert waiting.poll() is None  # still waiting: the version is pending
        with Registry.open(home) as reg:
            stored = reg.retry("m@1")  # the artifact read with the caller's rights, stored, ArtifactStored appended
        assert stored.status == "ready"
        out, err = waiting.communicate(timeout=60)
    finally:
        reap(waiting)
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "ready" and json.loads(out)["artifact"]["digest"] == stored.artifact["digest"]
    out = run(env, "wait", "m@2", "--timeout", "1")
    assert out.returncode == 7 and "still pending" in out.stderr, out.stderr


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy (absolute-URI GETs only): what it was asked, with which credentials."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        type(self).seen.append((self.path, self.headers.get("Proxy-Authorization")))
        target = urlsplit(self.path)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        skip = ("proxy-authorization", "proxy-connection", "connection", "host")
        conn.request("GET", f"{target.path}?{target.query}" if target.query else target.path,
                     headers={k: v for k, v in self.headers.items() if k.lower() not in skip})
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_reads_go_through_the_proxy_the_environment_names(start_server, tokens, tmp_path):
    """http_proxy / no_proxy are honoured by the reads (http.client) as by the artifact transfers (httpx)."""
    server = start_server()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _ForwardProxy.seen = []
    try:
        env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["reader"],
                             http_proxy=f"http://user:pw@127.0.0.1:{proxy.server_port}", no_proxy="",
                             HTTP_PROXY="", NO_PROXY="")
        env.pop("MLEDGER_DATABASE", None)
        direct = run({**env, "no_proxy": "127.0.0.1"}, "list")
        assert direct.returncode == 0, direct.stderr
        assert _ForwardProxy.seen == []
        proxied = run(env, "list")
        assert proxied.returncode == 0, proxied.stderr
        assert json.loads(proxied.stdout) == json.loads(direct.stdout)
        assert _ForwardProxy.seen == [(f"{server.url}/api/v1/list?deleted=false", "Basic dXNlcjpwdw==")]
        out = run({**env, "http_proxy": "socks5://127.0.0.1:1080"}, "list")
        assert out.returncode == 2 and "http_proxy" in out.stderr, out.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()
