"""Plain helpers of the reliability suite (no product logic): reading the log straight from SQLite, hashing,
polling, running the CLI and ``mledger worker`` as child processes."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from services import mledger_command, sha256_file, subprocess_env  # noqa: F401 - sha256_file re-exported


def child_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process (see tests/services.py), acting as the reliability suite."""
    return subprocess_env(home, **{"MLEDGER_ACTOR": "reliability@test", **extra})


def mledger_argv() -> list[str]:
    return mledger_command()


def run_cli(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mledger_argv(), *argv], env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit non-zero, exactly one line on stderr, no traceback; the line mentions each of ``words``."""
    assert done.returncode != 0, f"expected a failure, got 0: {done.stdout[-500:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    line = lines[0]
    assert line.startswith("mledger:"), line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    return line


def free_port() -> int:
    """A port free right now. Another process may bind it before the caller's child does: callers that
    start a server on it check that the server answering is theirs and move on otherwise (PrivateRedis)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_rows(db: Path) -> list[tuple]:
    """The log's rows as stored, read with a plain connection (opening a Registry would catch up/sweep)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT position, stream, version, type, schema_version, data, meta, recorded_at,"
                            " hash FROM events ORDER BY position").fetchall()
    finally:
        conn.close()


def events(db: Path, type_: str | None = None) -> list[dict[str, Any]]:
    out = []
    for r in raw_rows(db):
        if type_ is None or r[3] == type_:
            out.append({"position": r[0], "stream": r[1], "version": r[2], "type": r[3],
                        "data": json.loads(r[5]), "meta": json.loads(r[6])})
    return out


def verify_log(db: Path) -> int:
    """The hash chain, gapless positions, per-stream versions and time order verify; returns the rows checked."""
    from eventstore.verify import verify_rows

    rows = raw_rows(db)
    report = verify_rows(rows)
    assert report.ok, f"log does not verify: {report}"
    assert report.checked == len(rows)
    return report.checked


def digest_equals_rebuild(reg: Any) -> str:
    """The caught-up catalog equals a replay of the whole log (rebuilds the catalog in place)."""
    live = reg.catalog().digest()
    reg.rebuild_projections()
    rebuilt = reg.catalog().digest()
    assert live == rebuilt, "the catalog differs from a rebuild of the log"
    return live


def store_blobs(artifacts: Path) -> list[Path]:
    base = artifacts / "sha256"
    return [p for p in base.rglob("*") if p.is_file()] if base.exists() else []


def assert_store_sound(artifacts: Path) -> int:
    """Every file under ``sha256/`` rehashes to its own name and sits at sha256/ab/cd/<hex>."""
    count = 0
    for p in store_blobs(artifacts):
        assert sha256_file(p) == "sha256:" + p.name, f"partial or wrong blob under a final name: {p}"
        assert p.parent.name == p.name[2:4] and p.parent.parent.name == p.name[:2], p
        count += 1
    return count


def temp_files(artifacts: Path) -> list[Path]:
    tmp = artifacts / "tmp"
    return sorted(p for p in tmp.iterdir() if p.name.endswith(".part")) if tmp.is_dir() else []


class Worker:
    """``mledger worker`` as a child process, its output appended to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([*mledger_argv(), "worker", *extra], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""
