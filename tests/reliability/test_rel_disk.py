"""Disk full and a read-only home: a one-line error (exit non-zero), no corruption.

Tests run as root, and chmod does not stop root, so the faults are real mounts: a read-only bind mount of a
registry home, and small tmpfs mounts that fill up (where ``mount`` is refused the tests are ``unavailable``:
they fail in CI and skip, with the reason, elsewhere).

- Read-only home (issue 10, point 6): every read (`show`, `list`, `log`, `history`, `diff`, `best`,
  `--as-of`) answers exactly what it answers on the writable home, and `audit` passes; every write fails with
  one line saying the home is read-only (exit 5). Nothing is created beside the file; the registry seen
  read-write afterwards is exactly what it was (same head, chain verifies, audit passes). Both ways SQLite
  reads a WAL file without writing: a home closed cleanly (no ``-wal``/``-shm``: opened ``immutable``) and one
  a writer holds open elsewhere (``-shm`` present: ``mode=ro`` sees its commits, even one made after).
- Disk full, artifact store: the artifact store (MLEDGER_ARTIFACTS) on a 3 MiB tmpfs, registering new
  256 KiB artifacts until the disk is full: the command fails with one line, no temp file or partial blob
  is left, the log verifies; after the tmpfs is grown, the catalog equals a rebuild and registering works.
- Disk full, database: the home on a 2 MiB tmpfs, the artifacts elsewhere, registering with ~100 KiB of
  params until SQLite cannot write: same checks.
"""

from __future__ import annotations

import json
import sqlite3
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

READ_COMMANDS = [["list"], ["list", "--search", "m", "--tag", "team=x"], ["show", "m"], ["show", "m@1"],
                 ["show", "m@prod"], ["history", "m"], ["history", "m@2"], ["log"], ["diff", "m@1", "m@2"],
                 ["best", "m", "--metric", "acc"], ["show", "m", "--as-of", "#3"], ["list", "--as-of", "#2"],
                 ["diff", "m@1", "m@2", "--as-of", "#4"]]
WRITE_COMMANDS = [["tag", "m", "a=b"], ["alias", "m", "prod"], ["delete", "m@1"], ["register", "m", "--artifact",
                                                                                    "ART"],
                  ["projections", "rebuild"], ["audit", "--restore-guards"]]


def _seed(home: Path, art: Path) -> None:
    from modelledger import Registry

    with Registry.open(home, actor="seed") as reg:
        v = reg.register("m", artifact=str(art), params={"lr": 0.1})
        v2 = reg.update(v, params={"lr": 0.2})
        reg.tag("m", {"team": "x"})
        reg.metrics(v2, {"acc": 0.9})
        reg.alias(v2, "prod")


@pytest.fixture
def read_only_home(tmp_path: Path, read_only_view) -> tuple[Path, Path, Path]:
    """(the home, a read-only view of it, an artifact)."""
    art = tmp_path / "a.bin"
    art.write_bytes(b"read only weights\n")
    home = tmp_path / "home"
    _seed(home, art)
    return home, read_only_view(home), art


def _close_cleanly(db: Path) -> None:
    """Open and close ``db`` read-write: the last connection to close checkpoints and removes -wal and -shm
    (``raw_rows``' read-only connection leaves them)."""
    conn = sqlite3.connect(db)
    conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()


def _answers(env: dict[str, str]) -> list[str]:
    out = []
    for argv in READ_COMMANDS:
        done = run_cli(env, *argv, "--json")
        assert done.returncode == 0, (argv, done.returncode, done.stderr)
        out.append(done.stdout)
    return out


def test_read_only_home_reads_answer_and_writes_refused(read_only_home, figures) -> None:
    home, view, art = read_only_home
    expected = _answers(child_env(home))  # the same questions where the home can be written
    head_rows = raw_rows(home / "registry.db")
    _close_cleanly(home / "registry.db")
    files = sorted(p.name for p in home.iterdir())
    # no -wal, no -shm: the view can only open the file immutable (the writers' lock file stays, unused by reads)
    assert files == ["registry.db", "registry.db-lock"]
    env = child_env(view)
    assert _answers(env) == expected
    figures.add("disk: reads answered on a read-only home", len(READ_COMMANDS))
    done = run_cli(env, "audit", "--deep", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    for argv in WRITE_COMMANDS:
        argv = [str(art) if a == "ART" else a for a in argv]
        done = run_cli(env, *argv)
        line = assert_one_line_error(done)
        assert "read-only" in line.lower() or "read only" in line.lower(), (argv, line)
        assert done.returncode == 5, (argv, done.returncode, done.stderr)
        figures.add("disk: writes refused on a read-only home", 1)
    assert sorted(p.name for p in home.iterdir()) == files  # nothing made beside the file either
    assert raw_rows(home / "registry.db") == head_rows
    verify_log(home / "registry.db")
    from modelledger import Registry

    with Registry.open(home, actor="checker") as reg:
        assert reg.audit().ok


def test_read_only_home_sees_a_live_writer(read_only_home) -> None:
    """A writer holds the home open elsewhere (its ``-wal`` and ``-shm`` exist): the read-only view reads
    through them, including a commit made after the view was first read."""
    home, view, _ = read_only_home
    from modelledger import Registry

    with Registry.open(home, actor="writer") as writer:
        writer.tag("m", {"live": "1"})
        assert (home / "registry.db-shm").exists()
        with Registry.open(view, actor="reader") as reader:
            assert reader.recorder.read_only
            assert reader.get("m").tags.get("live") is None  # a version's tags; the model's follow
            assert reader.model("m").tags["live"] == "1"
            writer.tag("m", {"live": "2"})
            assert reader.model("m").tags["live"] == "2"
            assert reader.recorder.head() == writer.recorder.head()


def test_read_only_home_error_says_read_only(read_only_home) -> None:
    _, view, _ = read_only_home
    line = assert_one_line_error(run_cli(child_env(view), "tag", "m", "a=b"))
    assert "read-only" in line or "read only" in line, line


def test_gc_dry_run_on_a_read_only_home_only_reads(tmp_path: Path, read_only_view) -> None:
    """A dry run of gc is a question: it answers on a read-only home what it answers where the home can be
    written, and the real run is refused there as any write is."""
    from modelledger import Registry

    home = tmp_path / "gc-home"
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    one.write_bytes(b"bytes only the deleted version has\n")
    two.write_bytes(b"bytes the live version keeps\n")
    with Registry.open(home, actor="seed") as reg:
        reg.update(reg.register("m", artifact=str(one)), artifact=str(two))
        reg.delete("m@1")
    writable = run_cli(child_env(home), "gc", "--grace", "0", "--dry-run", "--json")
    assert writable.returncode == 0, writable.stderr
    expected = json.loads(writable.stdout)
    assert expected["versions"] == ["m@1"] and expected["bytes"] > 0 and expected["events"] == []
    _close_cleanly(home / "registry.db")
    before = raw_rows(home / "registry.db")
    view = read_only_view(home)
    env = child_env(view)
    done = run_cli(env, "gc", "--grace", "0", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    refused = run_cli(env, "gc", "--grace", "0")
    assert "read-only" in assert_one_line_error(refused).lower() and refused.returncode == 5
    assert raw_rows(home / "registry.db") == before


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


def test_read_only_home_lists_tokens_it_never_folded(read_only_home) -> None:
    """`token list` is a read: on a read-only home whose token table was never made (or is behind the log) it
    folds the token events in memory and answers what the writable home answers, writing nothing."""
    from modelledger import Registry

    home, view, _art = read_only_home
    with Registry.open(home, actor="admin@host") as reg:
        reg.create_token("ci", "writer", prefix="team-a/")
        reg.create_token("old", "reader")
        reg.revoke_token("old", "rotated")
    before = raw_rows(home / "registry.db")
    _close_cleanly(home / "registry.db")
    seen = run_cli(child_env(view), "token", "list", "--json")
    assert seen.returncode == 0, seen.stderr
    # nothing made beside the file (the lock file is the writable opens' above)
    assert sorted(p.name for p in home.iterdir()) == ["registry.db", "registry.db-lock"]
    assert raw_rows(home / "registry.db") == before
    expected = run_cli(child_env(home), "token", "list", "--json")  # folds into the table: a write
    assert expected.returncode == 0, expected.stderr
    assert json.loads(seen.stdout) == json.loads(expected.stdout)
    listed = {t["name"]: t for t in json.loads(seen.stdout)["tokens"]}
    assert set(listed) == {"ci", "old"}
    assert listed["old"]["revoked"] and not listed["ci"]["revoked"]
