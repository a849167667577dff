"""What several test suites share: child processes (environment, the CLI), the services some tests need,
and the policy when one is missing: the tests *fail* when
``MLEDGER_REQUIRE_SERVICES=1`` or ``CI=true`` is set (CI must not pass by skipping), and skip otherwise (a
newcomer's machine without Redis)."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Hypothesis: "ci" replays a fixed set of examples (a failure in CI is reproducible; print_blob says how);
# "nightly" explores, with ten times the examples; the default explores at the budgets the tests set.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")


def examples(n: int) -> int:
    """A property's example budget under the current profile."""
    return n * 10 if HYPOTHESIS_PROFILE == "nightly" else n


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Database 15 unless MLEDGER_TEST_REDIS_DB says otherwise. Runs may share it: every registry has a Redis
# namespace of its own (mledger-<registry id>), and the tests delete only the keys of their own registries —
# never FLUSHDB — so a concurrent run (or the Redis benchmark) cannot drop another's jobs.
REDIS_DB = int(os.environ.get("MLEDGER_TEST_REDIS_DB", "15"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def registry_namespaces(root: Path) -> list[str]:
    """The Redis namespaces of the registries whose database lies under ``root``."""
    import sqlite3

    out = []
    for db in root.rglob("registry.db"):
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM registry_meta WHERE key = 'id'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            continue
        if row:
            out.append(f"mledger-{row[0][:12]}")
    return out


def forget_redis_keys(client: Any, namespaces: list[str]) -> int:
    """Delete the keys of these namespaces only (what FLUSHDB would have done to ours, and only ours)."""
    deleted = 0
    for namespace in namespaces:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            deleted += client.delete(*keys)
    return deleted

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL",
            "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def services_required() -> bool:
    return os.environ.get("MLEDGER_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true"


def unavailable(what: str) -> None:
    if services_required():
        pytest.fail(f"{what} is required (MLEDGER_REQUIRE_SERVICES=1 or CI=true) but not available")
    pytest.skip(f"{what} not available")


ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: the working tree importable, the registry home explicit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MLEDGER_ACTOR", "tester@test")
    for var in ("MLEDGER_ARTIFACTS", "MLEDGER_BROKER", "MLEDGER_RUN_ID"):
        env.pop(var, None)
    if home is not None:
        env["MLEDGER_HOME"] = str(home)
    env.update(extra)
    return env


def mledger_command() -> list[str]:
    """The installed ``mledger`` console script next to this interpreter; where the package is not installed
    (a bare dev checkout), the same entry point the console script calls."""
    exe = Path(sys.executable).parent / "mledger"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from modelledger.cli import main; sys.exit(main())"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after a (generous) timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """A file's digest the way the store names blobs (``sha256:<hex>``), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def reap(proc: subprocess.Popen) -> None:
    """Kill a child a test left running (its assertion failed midway) and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


# -- the HTTP face: the CLI and SDK suites against a real `mledger serve` (MLEDGER_TEST_FACE=http) ----------

FACE_TOKEN_NAME = "tester@test"  # the admin token's name: over HTTP the actor of every write, as MLEDGER_ACTOR is


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """Ask a child to end (SIGTERM), give it 20 s to finish what it is doing, then reap it whatever it did."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    reap(proc)


class PortTaken(Exception):
    """The port ``free_port()`` named was taken by another process before our server could bind it."""


def serve_on_a_free_port(spawn: Callable[[int], subprocess.Popen], mine: Callable[[int], bool | None],
                         what: str,
                         *, port: int | None = None, interval: float = 0.05) -> tuple[int, subprocess.Popen]:
    """Start a server child on a free port (``port`` if given: a restart keeps its port) and wait until it
    answers: ``(port, process)``. ``spawn(port)`` starts it, its output piped (stderr, or stdout merged);
    ``mine(port)`` probes the port: None while nothing answers, True when our server does, False when another
    one does.

    Why the identity probe: ``free_port()`` only names a port that was free a moment ago. With a worker per
    core, another test's server can take it first; ours then exits ("address already in use") while theirs
    answers a plain probe with its own registry (a CI run failed so: "unknown token" at a test's first
    request). A port taken so means another one, up to five times."""
    for attempt in range(5):
        chosen = port or free_port()
        proc = spawn(chosen)

        def up(chosen: int = chosen, proc: subprocess.Popen = proc) -> bool:
            if proc.poll() is not None:
                pipe = proc.stderr or proc.stdout
                output = pipe.read().decode(errors="replace") if pipe else ""
                if "address already in use" in output.lower():
                    raise PortTaken(chosen)
                raise AssertionError(f"{what} exited with {proc.returncode}: {output[-2000:]}")
            answer = mine(chosen)
            if answer is False:
                raise PortTaken(chosen)  # another server holds the port
            return bool(answer)

        try:
            wait_for(up, 60, f"{what} to answer on port {chosen}", interval=interval)
            return chosen, proc
        except PortTaken:
            stop_process(proc)
            if port is not None or attempt == 4:
                raise
    raise AssertionError("unreachable")


def health_of(port: int, registry_id: str) -> bool | None:
    """``serve_on_a_free_port``'s probe of a ``mledger serve``: whose registry answers ``/api/v1/health``."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/v1/health")
        answer = conn.getresponse()
        if answer.status != 200:
            return None
        return json.loads(answer.read()).get("registry_id") == registry_id
    except OSError:
        return None
    finally:
        conn.close()


class ForkedProcess:
    """A child of the test process's ``face_zygote`` with the part of ``subprocess.Popen``'s interface that
    ``serve_on_a_free_port``, ``stop_process`` and ``reap`` use. The zygote reaps it and tells its exit status."""

    stdout = None

    def __init__(self, zygote: Zygote, pid: int, stderr_path: str) -> None:
        self.zygote, self.pid, self.returncode = zygote, pid, None
        self.stderr = open(stderr_path, "rb")  # noqa: SIM115 - closed by reap(), as a Popen's pipe is

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.ask({"op": "status", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """``tests/face_zygote.py`` for this test process: ``mledger serve``'s modules imported once, a server
    forked per test (its docstring says why: ~0.75 s of CPU per cold start, ~660 starts in CI's HTTP passes).
    ``MLEDGER_TEST_ZYGOTE=0`` starts every server cold instead."""

    _mine: Zygote | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        env = subprocess_env()
        env.pop("MLEDGER_HOME", None)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("face_zygote.py"))], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        # the children's stderr files (read when a server fails to start), outside every test's home
        self.folder = tempfile.mkdtemp(prefix="mledger-face-")
        atexit.register(shutil.rmtree, self.folder, True)
        self.spawned = 0

    @classmethod
    def of_this_process(cls) -> Zygote | None:
        if os.environ.get("MLEDGER_TEST_ZYGOTE", "1") == "0" or not hasattr(os, "fork"):
            return None
        with cls._lock:
            if cls._mine is None or cls._mine.proc.poll() is not None:
                cls._mine = cls()
            return cls._mine

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        import json

        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the face zygote exited with {self.proc.wait()}")
        return json.loads(line)

    def spawn(self, argv: list[str], env: dict[str, str]) -> ForkedProcess:
        self.spawned += 1
        stderr_path = os.path.join(self.folder, f"{self.spawned}.stderr")
        Path(stderr_path).touch()
        answer = self.ask({"op": "spawn", "argv": argv, "env": env, "cwd": os.getcwd(), "stderr": stderr_path})
        return ForkedProcess(self, answer["pid"], stderr_path)


class FaceServer:
    """A real ``mledger serve`` for ``home`` (and ``MLEDGER_DATABASE`` when the environment names one) on a
    free port, with an admin token named ``FACE_TOKEN_NAME`` granted first (``secret``). The child gets the
    local registry's environment, never ``MLEDGER_URL``: a server serves its own database."""

    def __init__(self, home: Path) -> None:
        from modelledger import Registry

        with Registry.open(home, actor="operator@host") as reg:
            _state, secret = reg.create_token(FACE_TOKEN_NAME, "admin")
            registry_id = reg.registry_id
        assert secret is not None
        self.secret = secret
        env = subprocess_env(home)
        for var in ("MLEDGER_URL", "MLEDGER_TOKEN", "MLEDGER_TOKEN_FILE"):
            env.pop(var, None)
        zygote = Zygote.of_this_process()

        def spawn(port: int) -> subprocess.Popen | ForkedProcess:
            argv = ["serve", "--port", str(port)]
            if zygote is not None:
                return zygote.spawn(argv, env)
            return subprocess.Popen([*mledger_command(), *argv], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)

        self.port, self.proc = serve_on_a_free_port(spawn, lambda port: health_of(port, registry_id),
                                                    "mledger serve")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
