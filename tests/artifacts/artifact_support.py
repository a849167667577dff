"""Helpers shared by the artifact acceptance tests (plain functions, no product logic)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from services import REDIS_DB, REDIS_HOST, REDIS_PORT, REDIS_URL, sha256_file  # noqa: F401 - re-exported for the tests

# Nothing listens here: the broker is "down". The port is bound (and never listened on) for the whole run, so
# connections are refused and no other process can take it (a fixed port number could be anyone's).
_DEAD_PORT = socket.socket()
_DEAD_PORT.bind((REDIS_HOST, 0))
DEAD_REDIS_URL = f"redis://{REDIS_HOST}:{_DEAD_PORT.getsockname()[1]}/{REDIS_DB}"


def noise(n: int) -> bytes:
    """Incompressible bytes with a fixed, format-neutral prefix, so a test's outcome never depends on what
    the format sniffer makes of random bytes (raw ``os.urandom`` in ``*.bin`` once failed ~0.6 % of
    ingests: see test_artifact_opaque_bytes.py)."""
    return b"NOISE\n" + os.urandom(max(0, n - 6))


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative POSIX path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_tree(root: Path) -> Path:
    """A nested directory artifact with an empty file and a binary file."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"layers": 3}))
    (root / "weights.dat").write_bytes(noise(256 * 1024))
    (root / "sub" / "empty.txt").write_bytes(b"")
    (root / "sub" / "deeper" / "vocab.txt").write_text("a\nb\nc\n")
    return root


def store_snapshot(artifacts: Path) -> dict[str, tuple[int, int, int]]:
    """Blob files under ``<artifacts>/sha256``: name -> (size, inode, mtime_ns). Comparing two snapshots
    shows blobs added, removed or rewritten (a rewrite changes the inode or the mtime)."""
    out = {}
    base = artifacts / "sha256"
    if base.exists():
        for p in base.rglob("*"):
            if p.is_file():
                st = p.stat()
                out[p.name] = (st.st_size, st.st_ino, st.st_mtime_ns)
    return out


def assert_store_sound(artifacts: Path) -> int:
    """Every blob under a final name rehashes to that name and sits at sha256/ab/cd/<hex>; returns the count."""
    count = 0
    for p in (artifacts / "sha256").rglob("*"):
        if p.is_file():
            assert sha256_file(p) == "sha256:" + p.name, f"blob {p} does not match its name"
            assert p.parent.name == p.name[2:4] and p.parent.parent.name == p.name[:2], p
            count += 1
    return count


def events(home: Path, type_: str | None = None) -> list[Any]:
    """The stored events, read straight from the log (no Registry: opening an embedded one would sweep)."""
    from modelledger.config import Config
    from modelledger.database import open_recorder

    rec = open_recorder(Config.load(home).location)  # MLEDGER_DATABASE as the registry uses it (SQLite or PG)
    try:
        return [e for e in rec.read() if type_ is None or e.type == type_]
    finally:
        rec.close()


def outcomes(home: Path, name: str, version: int, type_: str = "ArtifactStored") -> list[Any]:
    return [e for e in events(home, type_) if e.data.get("name") == name and e.data.get("version") == version]
