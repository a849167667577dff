"""Who reads an artifact's source (security findings H3, H4).

H3: an imported pending version names a source (a secret file, an internal HTTP URL). No later opener
(the SDK, `list`, `show`, `log --follow`, `wait`, the sweep, `mledger worker`) may read it on the
importer's behalf: nothing is appended and the HTTP service sees no request, until a user runs
`mledger retry`, which reads it with that user's rights in that user's process.

H4: with a Redis worker running as a more privileged account, a user who cannot read a file cannot get it
stored: the client copies its own files, and the worker reads only sources under ``MLEDGER_SOURCES``.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifact_support import events
from services import wait_for

from eventstore.errors import ArtifactError
from eventstore.events import NewEvent

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- (stand-in)\n"


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.hits.append(f"GET {self.path}")
        body = b'{"internal": "metadata"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.hits.append(f"HEAD {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "24")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def internal_service() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP service standing in for an internal one; yields (URL, the requests it saw)."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/meta.json", hits
    finally:
        server.shutdown()
        server.server_close()


def _import_pending(home: Path, sources: dict[str, str]) -> None:
    from modelledger import Registry

    batch = []
    for name, src in sources.items():
        stream = f"model-{name}"
        batch += [NewEvent(stream, "ModelRegistered", {"name": name, "description": "", "tags": {}}),
                  NewEvent(stream, "VersionRegistered", {
                      "name": name, "version": 1, "parent": None, "description": "", "params": {},
                      "structure": {}, "optimizer": {}, "tags": {}, "artifact": {"source": src},
                      "status": "pending"})]
    with Registry.open(home) as reg:
        reg.append_batch(batch)


def _stored(home: Path) -> list[str]:
    return [e.data["name"] for e in events(home, "ArtifactStored")]


def test_imported_pending_versions_are_read_by_nobody_until_a_user_retries(
        home: Path, tmp_path: Path, internal_service, redis_url: str, mledger_argv, child_env) -> None:
    from modelledger import Registry
    from workers import actors
    from workers.broker import use

    url, hits = internal_service
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    _import_pending(home, {"innocent-model": str(secret), "innocent-model-2": url})

    # Every opener after "the sweep window": the SDK (its sweep and wait), the CLI's reads, a follower.
    with Registry.open(home) as reg:
        assert reg.sweep(older_than=0) == 0
        with pytest.raises(ArtifactError, match="mledger retry"):
            reg.wait("innocent-model@1", timeout=0.3)
        reg.update("innocent-model@1", params={"lr": 0.1})  # carries the pending source: not read either
        positions = reg.catalog().pending_positions()
    env = child_env(home)
    for argv in (["list"], ["show", "innocent-model@1"], ["show", "innocent-model-2@1"]):
        done = subprocess.run([*mledger_argv, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([*mledger_argv, "log", "--follow", "--interval", "0.1"], env=env, capture_output=True,
                       timeout=3)

    # `mledger worker` (Redis, db of this run): its start-up sweep, and the job itself delivered to it (what
    # a forged message or an old sweep would send) — it declines every one.
    log = tmp_path / "worker.log"
    worker_env = child_env(home, MLEDGER_BROKER=redis_url)
    with open(log, "wb") as out:
        worker = subprocess.Popen([*mledger_argv, "worker", "--threads", "1", "--sweep-interval", "1"],
                                  env=worker_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with Registry.open(home, broker=redis_url) as reg:
            for position in positions:
                actors.ingest.send(position, reg.registry_id)
        wait_for(lambda: log.read_text().count("left pending for `mledger retry`") >= len(positions), 60,
                 f"the worker to decline {len(positions)} jobs")
    finally:
        worker.terminate()
        worker.wait(30)
        use("embedded")

    assert _stored(home) == [], "a source named by an import was read"
    assert hits == [], f"the internal service was called: {hits}"
    with Registry.open(home) as reg:
        assert {v.status for v in reg.search()} == {"pending"}

    # A user who asks reads it, with their own rights, in their own process.
    done = subprocess.run([*mledger_argv, "retry", "innocent-model@1", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _stored(home) == ["innocent-model"]
    pulled = tmp_path / "pulled"
    assert subprocess.run([*mledger_argv, "pull", "innocent-model@1", str(pulled)], env=env,
                          capture_output=True, timeout=60).returncode == 0
    assert pulled.read_bytes() == SECRET
    assert hits == []


def _unprivileged() -> list[str]:
    """Root without the capabilities that bypass file permissions (as in the finding), or skip."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a user that cannot read another's file")
    probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr!r}")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.redis
def test_redis_worker_never_reads_for_a_user_what_the_user_cannot_read(
        home: Path, tmp_path: Path, redis_url: str, mledger_argv, child_env) -> None:
    from modelledger import Registry
    from workers import actors
    from workers.broker import use

    user = _unprivileged()
    private = tmp_path / "privsecret"
    private.mkdir()
    credentials = private / "credentials"
    credentials.write_bytes(SECRET)
    credentials.chmod(0o600)
    os.chown(credentials, 1234, 1234)
    private.chmod(0o700)
    os.chown(private, 1234, 1234)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "shared.bin").write_bytes(b"shared weights\n" * 100)
    base = tmp_path / "base.bin"
    base.write_bytes(b"base weights\n")

    env = child_env(home, MLEDGER_BROKER=redis_url, MLEDGER_SOURCES=str(allowed))
    assert subprocess.run([*user, "cat", str(credentials)], capture_output=True).returncode != 0
    seed = subprocess.run([*user, *mledger_argv, "register", "seed", "--artifact", str(base), "--no-wait", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert seed.returncode == 0, seed.stderr  # not under MLEDGER_SOURCES: the client copied it itself

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([*mledger_argv, "worker", "--processes", "1", "--threads", "2",
                                   "--sweep-interval", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        exfil = subprocess.run([*user, *mledger_argv, "register", "exfil", "--artifact", str(credentials),
                                "--timeout", "60"], env=env, capture_output=True, text=True, timeout=120)
        assert exfil.returncode != 0, exfil.stdout
        assert len(exfil.stderr.strip().splitlines()) == 1 and "credentials" in exfil.stderr, exfil.stderr
        # Through the log instead: the user appends a pending version naming the file, and the job is
        # delivered to the worker; the worker, which could read it, declines.
        script = ("import sys\nfrom modelledger import Registry\nfrom eventstore.events import NewEvent\n"
                  "with Registry.open() as r:\n"
                  "    r.append_batch([NewEvent('model-exfil2', 'ModelRegistered', {'name': 'exfil2', "
                  "'description': '', 'tags': {}}), NewEvent('model-exfil2', 'VersionRegistered', {'name': "
                  "'exfil2', 'version': 1, 'parent': None, 'description': '', 'params': {}, 'structure': {}, "
                  "'optimizer': {}, 'tags': {}, 'artifact': {'source': sys.argv[1]}, 'status': 'pending'})])\n")
        done = subprocess.run([*user, sys.executable, "-c", script, str(credentials)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with Registry.open(home, broker=redis_url) as reg:
            actors.ingest.send(reg.catalog().request_position("exfil2", 1), reg.registry_id)
        wait_for(lambda: "left pending for `mledger retry`" in log.read_text(), 60, "the worker to decline")
        # What the operator allowed, the worker does read (the client only queued it).
        shared = subprocess.run([*user, *mledger_argv, "register", "shared", "--artifact",
                                 str(allowed / "shared.bin"), "--json", "--timeout", "60"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert shared.returncode == 0, shared.stderr + log.read_text()[-2000:]
    finally:
        worker.terminate()
        worker.wait(30)
        use("embedded")

    assert sorted(_stored(home)) == ["seed", "shared"]
    with Registry.open(home) as reg:
        assert reg.get("exfil2@1").status == "pending"
        assert not reg.catalog().exists("exfil")
        assert reg.get("shared@1").artifact["source"] == str(allowed / "shared.bin")
    stolen = tmp_path / "stolen.txt"
    subprocess.run([*user, *mledger_argv, "pull", "exfil2@1", str(stolen)], env=env, capture_output=True, timeout=60)
    assert not stolen.exists()
