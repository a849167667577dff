"""Acceptance, embedded broker (the default): a file and a nested folder are stored content-addressed,
pulled back byte-identical, deduplicated on re-registration, with exactly one ArtifactStored each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from artifact_support import (
    assert_store_sound,
    events,
    make_tree,
    outcomes,
    sha256_file,
    store_snapshot,
    tree_files,
)


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")


def test_file_and_directory_ready_digest_pull_roundtrip(reg, home: Path, tmp_path: Path) -> None:
    src_file = tmp_path / "model.pt"
    src_file.write_bytes(b"\x80\x02weights" * 10_000)
    src_dir = make_tree(tmp_path / "bundle")

    vf = reg.register("filemodel", artifact=str(src_file))
    vd = reg.register("dirmodel", artifact=str(src_dir))

    assert vf.status == "ready"
    assert vf.artifact["digest"] == sha256_file(src_file)
    assert vf.artifact["size"] == src_file.stat().st_size

    assert vd.status == "ready"
    files = {f["path"]: f for f in vd.artifact["files"]}
    expected = tree_files(src_dir)
    assert set(files) == set(expected)
    for rel, data in expected.items():
        assert files[rel]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), rel
        assert files[rel]["size"] == len(data), rel
    assert vd.artifact["size"] == sum(len(d) for d in expected.values())
    # The folder's digest names its manifest blob: the blob's bytes hash to it and list the same files.
    manifest_path = reg.store().path_of(vd.artifact["digest"])
    manifest = Path(manifest_path).read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == vd.artifact["digest"]
    listed = {e["path"]: (e["digest"], e["size"]) for e in json.loads(manifest)["files"]}
    assert listed == {rel: (files[rel]["digest"], files[rel]["size"]) for rel in files}

    out_file = tmp_path / "out" / "model.pt"
    reg.pull(vf, str(out_file))
    assert out_file.read_bytes() == src_file.read_bytes()

    out_dir = tmp_path / "out" / "bundle"
    reg.pull(vd, str(out_dir))
    assert tree_files(out_dir) == expected
    assert (out_dir / "sub" / "empty.txt").stat().st_size == 0

    assert assert_store_sound(home / "artifacts") >= 6  # 1 file + 4 folder files + manifest
    assert not list((home / "artifacts" / "tmp").glob("*")), "temp files left behind"
    for name in ("filemodel", "dirmodel"):
        assert len(outcomes(home, name, 1)) == 1
    assert events(home, "ArtifactFailed") == []


def test_same_bytes_again_write_nothing(reg, home: Path, tmp_path: Path) -> None:
    src_file = tmp_path / "model.pt"
    src_file.write_bytes(b"some weights" * 50_000)
    src_dir = make_tree(tmp_path / "bundle")
    v1 = reg.register("dedup-file", artifact=str(src_file))
    d1 = reg.register("dedup-dir", artifact=str(src_dir))
    before = store_snapshot(home / "artifacts")
    assert before

    # Same bytes under other paths and names, and again under the same model: new versions, no new bytes.
    copy_file = tmp_path / "elsewhere" / "model-copy.pt"
    copy_file.parent.mkdir()
    copy_file.write_bytes(src_file.read_bytes())
    copy_dir = tmp_path / "elsewhere" / "bundle"
    for rel, data in tree_files(src_dir).items():
        (copy_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy_dir / rel).write_bytes(data)
    v2 = reg.register("dedup-file", artifact=str(copy_file))
    v3 = reg.register("other-name", artifact=str(src_file))
    d2 = reg.register("dedup-dir", artifact=str(copy_dir))

    assert (v2.version, v2.status, v2.artifact["digest"]) == (2, "ready", v1.artifact["digest"])
    assert v3.artifact["digest"] == v1.artifact["digest"]
    assert (d2.version, d2.status, d2.artifact["digest"]) == (2, "ready", d1.artifact["digest"])
    after = store_snapshot(home / "artifacts")
    # Same blob set, same sizes, same inodes and mtimes: nothing added, nothing rewritten.
    assert after == before
    written = sum(size for size, _, _ in after.values()) - sum(size for size, _, _ in before.values())
    assert written == 0
    assert not list((home / "artifacts" / "tmp").glob("*"))

    for name, version in (("dedup-file", 1), ("dedup-file", 2), ("other-name", 1), ("dedup-dir", 1),
                          ("dedup-dir", 2)):
        assert len(outcomes(home, name, version)) == 1, (name, version)
    assert len(events(home, "ArtifactStored")) == 5


def test_cli_register_embedded_returns_ready(cli, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"cli weights")
    code, out, err = cli("register", "climodel", "--artifact", str(src), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "ready"
    assert data["artifact"]["digest"] == sha256_file(src)
    code, out, err = cli("pull", "climodel@1", str(tmp_path / "pulled.bin"))
    assert code == 0, err
    assert (tmp_path / "pulled.bin").read_bytes() == b"cli weights"


def test_pull_refuses_existing_dest_and_corrupt_blobs(cli, home: Path, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "bundle")
    code, out, err = cli("register", "pullme", "--artifact", str(src), "--json")
    assert code == 0, err
    version = json.loads(out)

    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, _, err = cli("pull", "pullme@1", str(dest))
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert tree_files(dest) == {"keep.txt": b"mine"}
    code, _, err = cli("pull", "pullme@1", str(dest), "--force")  # a folder no pull wrote: kept
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert tree_files(dest) == {"keep.txt": b"mine"}
    dest = tmp_path / "pulled"
    code, _, err = cli("pull", "pullme@1", str(dest))
    assert code == 0, err
    code, _, err = cli("pull", "pullme@1", str(dest), "--force")
    assert code == 0, err
    assert tree_files(dest) == tree_files(src)

    assert "weights.dat" in version["artifact"]["files"]
    # Flip bytes of one stored file: pull verifies every digest and leaves nothing behind.
    digest = sha256_file(src / "weights.dat")
    blob = home / "artifacts" / "sha256" / digest[7:9] / digest[9:11] / digest[7:]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    code, _, err = cli("pull", "pullme@1", str(fresh))
    assert code != 0 and "digest" in err and len(err.strip().splitlines()) == 1, err
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fresh")], "a temp folder was left"
