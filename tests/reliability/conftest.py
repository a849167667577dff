"""Fixtures of the reliability suite: services (the real Redis, db 15 only; a private redis-server that can be
stopped and started; moto's S3 server), mounts (tmpfs, read-only bind), and the figures printed at the end.

Service policy (as in tests/artifacts): a service that does not answer makes its tests *fail* when
``MLEDGER_REQUIRE_SERVICES=1`` or ``CI=true`` is set, and skip otherwise.

The figures (crashes injected, events checked, ...) are collected by the ``figures`` fixture and printed by
``pytest_terminal_summary`` below, so every run says how much was actually exercised.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from reliability_support import free_port
from services import AWS_VARS, unavailable

# -- figures -----------------------------------------------------------------------------------------------

_FIGURES: Counter[str] = Counter()


class Figures:
    """``figures.add("writer crashes injected", 1)``: counters summed over the session, printed at the end."""

    def add(self, name: str, n: int = 1) -> None:
        _FIGURES[name] += n

    def __getitem__(self, name: str) -> int:
        return _FIGURES[name]


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - hook signature
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    width = max(len(k) for k in _FIGURES)
    for name in sorted(_FIGURES):
        terminalreporter.write_line(f"{name:<{width}}  {_FIGURES[name]:>10,}")


# -- a private redis-server that can be stopped ----------------------------------------------------------

class PrivateRedis:
    """``redis-server --port P --save '' --appendonly no`` as a child process: nothing persists, so a stop
    loses every queued job (what a broker outage without persistence does)."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/15"
        self.started = False

    def start(self) -> None:
        """Start on ``self.port``. The first start may find the port taken since ``free_port()`` chose it
        (another process can bind it in between): then it moves to a new port, up to 3 times. A restart after
        ``stop()`` keeps the port (clients reconnect to the same URL)."""
        for attempt in range(3):
            try:
                return self._start()
            except RuntimeError:
                taken = "Address already in use" in (self.workdir / "redis.log").read_text(errors="replace")
                if self.started or not taken or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"redis://127.0.0.1:{self.port}/15"

    def _start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                # Whoever answers on the port must be our child (not a process that took the port first).
                answering = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                                        socket_connect_timeout=0.5).info("server")["process_id"]
            except (redis.RedisError, OSError):
                answering = None
            if answering == self.proc.pid:
                self.started = True
                return
            if answering is not None or self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise RuntimeError(f"redis-server did not start: {(self.workdir / 'redis.log').read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # an outage, not a shutdown: no chance to save anything
            self.proc.wait(10)
        # The port must refuse connections before the test goes on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.02)
            except OSError:
                return


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server (to run a private Redis that can be stopped)")
    workdir = tmp_path / "private-redis"
    workdir.mkdir()
    server = PrivateRedis(exe, workdir)
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


# -- moto's S3 server ------------------------------------------------------------------------------------

@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], dict[str, str]]]:
    """``aws_env(endpoint)``: set the AWS/fsspec variables of this process to ``endpoint`` (region left unset:
    s3fs' mkdir(bucket) fails with us-east-1) and return them, for child processes too. s3fs' instance cache
    is cleared around the test (an instance bound to another endpoint must not be reused)."""
    import s3fs

    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()

    def point(endpoint: str) -> dict[str, str]:
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_ENDPOINT_URL_S3": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        return env

    yield point
    s3fs.S3FileSystem.clear_instance_cache()


# -- mounts (root only) ------------------------------------------------------------------------------------

def _mount(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, size)`` mounts a tmpfs of ``size`` (e.g. "3m") at tmp_path/name; unmounted afterwards.
    Where mounting is not allowed the test is ``unavailable`` (fails in CI, skips elsewhere): chmod does not
    stop root, only a real mount can make a folder full or read-only for it."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        if done.returncode != 0:
            unavailable(f"mounting a tmpfs ({done.stderr.strip()}; the test needs a real full disk)")
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        _umount(path)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``read_only_view(folder)``: a read-only bind mount of ``folder`` (root ignores mode bits, not ``ro``)."""
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        view = tmp_path / f"ro-{folder.name}"
        view.mkdir()
        done = _mount("--bind", str(folder), str(view))
        if done.returncode != 0:
            unavailable(f"a bind mount ({done.stderr.strip()}; root ignores chmod, so a read-only home needs a "
                        "read-only mount)")
        mounted.append(view)
        done = _mount("-o", "remount,bind,ro", str(view))
        if done.returncode != 0:
            unavailable(f"a read-only remount ({done.stderr.strip()})")
        return view

    yield make
    for path in reversed(mounted):
        _umount(path)
