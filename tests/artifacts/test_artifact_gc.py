"""Acceptance: ``mledger gc``. Delete is logical; gc frees only the blobs no live version references, after
the grace period, appends ArtifactPurged, keeps shared blobs, leaves the record readable (status purged);
``--dry-run`` changes nothing; unreferenced blobs older than the grace are removed."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from artifact_support import assert_store_sound, events, noise, store_snapshot, tree_files


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")


def _blob_path(artifacts: Path, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return artifacts / "sha256" / hexd[:2] / hexd[2:4] / hexd


def _dir(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return root


def test_gc_frees_unique_blobs_of_deleted_versions_only(cli, home: Path, tmp_path: Path) -> None:
    artifacts = home / "artifacts"
    shared, only1, only2 = noise(70_000), noise(30_000), noise(50_000)
    d1 = _dir(tmp_path / "v1", {"shared.dat": shared, "only1.dat": only1})
    d2 = _dir(tmp_path / "v2", {"shared.dat": shared, "only2.dat": only2})
    code, out, err = cli("register", "gcm", "--artifact", str(d1), "--json")
    assert code == 0, err
    v1 = json.loads(out)
    code, out, err = cli("register", "gcm", "--artifact", str(d2), "--json")
    assert code == 0, err
    v2 = json.loads(out)
    manifest1 = _blob_path(artifacts, v1["artifact"]["digest"])
    unique1 = {manifest1, _blob_path(artifacts, "sha256:" + hashlib.sha256(only1).hexdigest())}
    unique_bytes = sum(p.stat().st_size for p in unique1)

    code, out, err = cli("delete", "gcm@1", "--reason", "superseded")
    assert code == 0, err
    before = store_snapshot(artifacts)
    n_events = len(events(home))

    # Default grace (7 days): nothing is freed right after a delete.
    code, out, err = cli("gc", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["bytes"], report["blobs"], report["versions"], report["events"]) == (0, 0, [], [])
    assert store_snapshot(artifacts) == before

    # Dry run: says exactly what would go, changes nothing.
    code, out, err = cli("gc", "--grace", "0", "--dry-run", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["versions"] == ["gcm@1"]
    assert (report["blobs"], report["bytes"]) == (2, unique_bytes)  # the manifest's bytes included
    assert store_snapshot(artifacts) == before
    assert len(events(home)) == n_events

    # The real thing.
    code, out, err = cli("gc", "--grace", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["versions"] == ["gcm@1"]
    assert (report["blobs"], report["bytes"], report["orphan_blobs"]) == (2, unique_bytes, 0)
    purged = [e for e in events(home, "ArtifactPurged")]
    assert [(e.data["name"], e.data["version"]) for e in purged] == [("gcm", 1)]
    assert [e["type"] for e in report["events"]] == ["ArtifactPurged"]
    after = store_snapshot(artifacts)
    assert set(before) - set(after) == {p.name for p in unique1}
    assert set(after) < set(before)
    assert assert_store_sound(artifacts) == len(after)

    # The record stays; its bytes are gone; the live version still pulls byte-identical.
    code, out, err = cli("show", "gcm@1", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "purged" and shown["deleted"] is True
    assert shown["artifact"]["digest"] == v1["artifact"]["digest"]
    code, out, err = cli("show", "gcm@1")
    assert code == 0 and "purged" in out

    dest = tmp_path / "out1"
    code, out, err = cli("pull", "gcm@1", str(dest))
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "purged" in err, err
    assert not dest.exists()
    code, out, err = cli("pull", "gcm@2", str(tmp_path / "out2"))
    assert code == 0, err
    assert tree_files(tmp_path / "out2") == {"shared.dat": shared, "only2.dat": only2}
    code, out, err = cli("show", "gcm@2", "--json")
    assert code == 0, err
    shown2 = json.loads(out)  # gc left the live version and its bytes alone
    assert (shown2["status"], shown2["artifact"]["digest"]) == ("ready", v2["artifact"]["digest"])

    # Again: nothing left to free, no second ArtifactPurged.
    code, out, err = cli("gc", "--grace", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["bytes"] == 0
    assert len(events(home, "ArtifactPurged")) == 1


def test_gc_removes_old_orphan_blobs_keeps_young_ones(cli, home: Path, tmp_path: Path) -> None:
    artifacts = home / "artifacts"
    src = tmp_path / "live.bin"
    src.write_bytes(b"live model")
    code, _, err = cli("register", "live", "--artifact", str(src))
    assert code == 0, err

    def place(data: bytes, age_days: float) -> Path:
        path = _blob_path(artifacts, "sha256:" + hashlib.sha256(data).hexdigest())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        old = time.time() - age_days * 86400
        os.utime(path, (old, old))
        return path

    old_orphan = place(b"left by a crashed import" * 100, age_days=8)
    young_orphan = place(b"being written by someone right now", age_days=0)
    live_blob = _blob_path(artifacts, "sha256:" + hashlib.sha256(b"live model").hexdigest())
    # Age the live blob too: being referenced is what protects it, not its mtime.
    os.utime(live_blob, (time.time() - 30 * 86400,) * 2)

    code, out, err = cli("gc", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["orphan_blobs"] == 1
    assert old_orphan.exists()

    code, out, err = cli("gc", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["orphan_blobs"], report["blobs"]) == (1, 1)
    assert report["bytes"] == len(b"left by a crashed import" * 100)
    assert report["versions"] == [] and events(home, "ArtifactPurged") == []
    assert not old_orphan.exists()
    assert young_orphan.exists() and live_blob.exists()
    code, _, err = cli("pull", "live@1", str(tmp_path / "pulled.bin"))
    assert code == 0, err


def test_gc_bytes_include_the_manifest(reg, home: Path, tmp_path: Path) -> None:
    """Regression (was xfail until 3c2b316): a folder's manifest blob counts in the bytes gc reports."""
    artifacts = home / "artifacts"
    only = noise(10_000)
    v = reg.register("manifested", artifact=str(_dir(tmp_path / "d", {"only.dat": only})))
    freed_paths = [_blob_path(artifacts, v.artifact["digest"]),
                   _blob_path(artifacts, "sha256:" + hashlib.sha256(only).hexdigest())]
    on_disk = sum(p.stat().st_size for p in freed_paths)
    reg.delete("manifested@1")
    assert reg.gc(0, dry_run=True)["bytes"] == on_disk
    report = reg.gc(0)
    assert not any(p.exists() for p in freed_paths)
    assert report["bytes"] == on_disk


def test_gc_keeps_blobs_a_derived_version_carries(reg, home: Path, tmp_path: Path) -> None:
    """``update --params`` makes a version that carries its parent's artifact: deleting the parent must
    not free bytes the live child still needs."""
    src = _dir(tmp_path / "d", {"a.dat": noise(5_000), "b.dat": b"b"})
    v1 = reg.register("derived", artifact=str(src))
    v2 = reg.update(v1, params={"lr": 0.01})
    assert (v2.status, v2.artifact["digest"]) == ("ready", v1.artifact["digest"])
    reg.delete("derived@1")
    before = store_snapshot(home / "artifacts")
    report = reg.gc(0)
    assert (report["blobs"], report["versions"]) == (0, [])
    assert store_snapshot(home / "artifacts") == before
    reg.pull("derived@2", str(tmp_path / "out"))
    assert tree_files(tmp_path / "out") == tree_files(src)


def test_gc_after_model_delete_purges_every_version(reg, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "w.dat"
    src.write_bytes(noise(4_000))
    v1 = reg.register("doomed", artifact=str(src))
    reg.update(v1, params={"x": 1})
    reg.delete("doomed")
    report = reg.gc(0)
    assert report["versions"] == ["doomed@1", "doomed@2"]
    assert (report["blobs"], report["bytes"]) == (1, 4_000)
    assert not _blob_path(home / "artifacts", v1.artifact["digest"]).exists()
    assert [reg.get(f"doomed@{n}").status for n in (1, 2)] == ["purged", "purged"]
    assert len(events(home, "ArtifactPurged")) == 2


def test_gc_between_dedup_and_commit_makes_the_ingest_copy_again(reg, home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A new version deduplicates against a blob of a deleted version, and gc frees that blob before the
    ingest records its outcome: the ingest notices and copies again instead of recording a missing blob."""
    from workers import actors

    src = tmp_path / "w.dat"
    src.write_bytes(noise(6_000))
    reg.register("again", artifact=str(src))
    reg.delete("again@1")

    original = actors.ingest_artifact
    calls: list[int] = []

    def ingest_then_gc(*args, **kwargs):
        facts = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            # Our copy found the blob present (dedup): gc removes it now, before our commit.
            assert reg.gc(0)["versions"] == ["again@1"]
            assert not _blob_path(home / "artifacts", facts["digest"]).exists()
        return facts

    monkeypatch.setattr(actors, "ingest_artifact", ingest_then_gc)
    # Embedded registers run the same ingest in the caller's thread before the commit (the registry finds
    # it in workers.ingest when it first needs it).
    from workers import ingest
    monkeypatch.setattr(ingest, "ingest_artifact", ingest_then_gc)
    v2 = reg.register("again", artifact=str(src), timeout=60)
    assert len(calls) == 2, "the ingest did not notice the vanished blob"
    assert v2.status == "ready"
    assert _blob_path(home / "artifacts", v2.artifact["digest"]).exists()
    assert assert_store_sound(home / "artifacts") == 1
    reg.pull(v2, str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
