"""Disk full and a read-only home: a one-line error (exit non-zero), no corruption.

Tests run as root, and chmod does not stop root, so the faults are real mounts: a read-only bind mount of a
registry home, and small tmpfs mounts that fill up (where ``mount`` is refused the tests are ``unavailable``:
they fail in CI and skip, with the reason, elsewhere).

- Read-only home: every command (write or read) fails with one line; the registry seen read-write
  afterwards is exactly what it was (same head, chain verifies, audit passes). The line says that the home
  is read-only.
- Disk full, artifact store: the artifact store (MLEDGER_ARTIFACTS) on a 3 MiB tmpfs, registering new
  256 KiB artifacts until the disk is full: the command fails with one line, no temp file or partial blob
  is left, the log verifies; after the tmpfs is grown, the catalog equals a rebuild and registering works.
- Disk full, database: the home on a 2 MiB tmpfs, the artifacts elsewhere, registering with ~100 KiB of
  params until SQLite cannot write: same checks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from reliability_support import (
    assert_one_line_error,
    assert_store_sound,
    child_env,
    digest_equals_rebuild,
    raw_rows,
    run_cli,
    temp_files,
    verify_log,
)

READ_COMMANDS = [["list"], ["show", "m"], ["history", "m"], ["log"], ["audit"]]
WRITE_COMMANDS = [["tag", "m", "a=b"], ["alias", "m", "prod"], ["delete", "m@1"], ["register", "m", "--artifact",
                                                                                    "ART"]]


def _seed(home: Path, art: Path) -> None:
    from modelledger import Registry

    with Registry.open(home, actor="seed") as reg:
        v = reg.register("m", artifact=str(art), params={"lr": 0.1})
        reg.update(v, params={"lr": 0.2})
        reg.tag("m", {"team": "x"})


@pytest.fixture
def read_only_home(tmp_path: Path, read_only_view) -> tuple[Path, Path, Path]:
    """(the home, a read-only view of it, an artifact)."""
    art = tmp_path / "a.bin"
    art.write_bytes(b"read only weights\n")
    home = tmp_path / "home"
    _seed(home, art)
    return home, read_only_view(home), art


def test_read_only_home_one_line_errors_and_no_change(read_only_home, figures) -> None:
    home, view, art = read_only_home
    head_rows = raw_rows(home / "registry.db")
    env = child_env(view)
    for argv in WRITE_COMMANDS + READ_COMMANDS:
        argv = [str(art) if a == "ART" else a for a in argv]
        done = run_cli(env, *argv)
        assert_one_line_error(done)
        assert done.returncode == 5, (argv, done.returncode, done.stderr)
        figures.add("disk: commands refused on a read-only home", 1)
    assert raw_rows(home / "registry.db") == head_rows
    verify_log(home / "registry.db")
    from modelledger import Registry

    with Registry.open(home, actor="checker") as reg:
        assert reg.audit().ok


def test_read_only_home_error_says_read_only(read_only_home) -> None:
    _, view, _ = read_only_home
    line = assert_one_line_error(run_cli(child_env(view), "tag", "m", "a=b"))
    assert "read-only" in line or "read only" in line, line


def _grow(path: Path, size: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _after_space_freed(home: Path, art: Path, figures, artifacts: str | None = None) -> None:
    from modelledger import Registry

    with Registry.open(home, artifacts=artifacts, actor="checker") as reg:
        digest_equals_rebuild(reg)
        report = reg.audit()
        assert report.ok, report.to_json()
        v = reg.register("after", artifact=str(art))
        assert v.status == "ready"
    figures.add("disk: registries healed after space was freed", 1)


@pytest.mark.slow
def test_artifact_store_fills_up(tmp_path: Path, tmpfs, figures) -> None:
    store = tmpfs("full-store", "3m")
    home = tmp_path / "home"
    env = child_env(home, MLEDGER_ARTIFACTS=str(store))
    src = tmp_path / "src"
    src.mkdir()
    failure = None
    for i in range(40):
        art = src / f"w{i}.bin"
        art.write_bytes(bytes([i]) * 6 + (f"{i}:".encode() * 90_000)[: 256 * 1024])
        done = run_cli(env, "register", f"f{i % 3}", "--artifact", str(art), "--json")
        if done.returncode != 0:
            failure = done
            break
        assert json.loads(done.stdout)["status"] == "ready"
    assert failure is not None, "3 MiB never filled up"
    line = assert_one_line_error(failure)
    assert "space" in line.lower() or "full" in line.lower(), line
    print(f"artifact store full: {line}")
    figures.add("disk: registrations until the artifact store was full", i)

    db = home / "registry.db"
    figures.add("disk: events verified after disk full", verify_log(db))
    assert not temp_files(store), "a failed blob write left its temp file"
    assert_store_sound(store)
    registered = [r for r in raw_rows(db) if r[3] == "VersionRegistered"]
    assert len(registered) == i, "the failed registration appended something"
    _grow(store, "64m")
    _after_space_freed(home, src / "w0.bin", figures, artifacts=str(store))


@pytest.mark.slow
def test_database_fills_up(tmp_path: Path, tmpfs, figures) -> None:
    home = tmpfs("full-db", "2m")
    env = child_env(home, MLEDGER_ARTIFACTS=str(tmp_path / "artifacts"))
    art = tmp_path / "a.bin"
    art.write_bytes(b"db full weights\n")
    failure = None
    for i in range(40):
        params = tmp_path / f"p{i}.json"
        params.write_text(json.dumps({"blob": f"{i}-" + "x" * 100_000}))
        done = run_cli(env, "register", "big", "--artifact", str(art), "--params", f"@{params}", "--json")
        if done.returncode != 0:
            failure = done
            break
    assert failure is not None, "2 MiB never filled up"
    line = assert_one_line_error(failure)
    assert "full" in line.lower() or "space" in line.lower(), line
    assert failure.returncode == 5, failure.returncode
    print(f"database full: {line}")
    figures.add("disk: registrations until the database disk was full", i)

    db = home / "registry.db"
    figures.add("disk: events verified after disk full", verify_log(db))
    assert len([r for r in raw_rows(db) if r[3] == "VersionRegistered"]) == i
    _grow(home, "64m")
    _after_space_freed(home, art, figures, artifacts=str(tmp_path / "artifacts"))
