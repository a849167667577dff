"""Private by default (security finding M7): a new registry, its database (with -wal and -shm) and its blobs
are the owner's only whatever the umask; ``MLEDGER_SHARE=group`` shares them with the home's group; pulled
files take nothing from a manifest but the executable bit, under the umask."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import mledger_command, subprocess_env

from modelledger import Registry
from workers.store import BlobStore, FileEntry, manifest_bytes


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits (with setgid) of ``root`` and everything under it, by relative path."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def populate(home: Path, tmp_path: Path) -> Registry:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"w" * 2_000_000)  # over the small-file path
    (folder / "sub" / "c.json").write_text("{}")
    reg = Registry.open(home)
    reg.register("m", folder)
    return reg


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_a_new_registry_is_private_whatever_the_umask(home: Path, tmp_path: Path, mask: int) -> None:
    with umask(mask):
        reg = populate(home, tmp_path)
    try:
        found = modes(home)  # while the registry is open: -wal and -shm exist
    finally:
        reg.close()
    assert {"registry.db-wal", "registry.db-shm", "artifacts/sha256"} <= set(found)
    blobs = [p for p in found if p.startswith("artifacts/sha256/") and len(p.rsplit("/", 1)[-1]) == 64]
    assert len(blobs) >= 3  # two files and the manifest
    for path, mode in found.items():
        is_dir = (home / path).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (path, oct(mode))


def test_group_sharing_is_a_setting(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEDGER_SHARE", "group")
    with umask(0o077):  # the most private umask still shares what the setting says
        reg = populate(home, tmp_path)
    try:
        found = modes(home)
        groups = {os.stat(home / path).st_gid for path in found}
    finally:
        reg.close()
    assert groups == {os.stat(home).st_gid}
    assert found.pop(".") == 0o2750  # setgid: what is made inside belongs to the home's group
    for path in [p for p in found if p.startswith("statcache-")]:
        # Each user's stat cache stays private: whoever can write it decides the digest a register records.
        assert found.pop(path) == 0o600, path
    for path, mode in found.items():
        is_dir = (home / path).is_dir()
        assert mode & ~stat.S_ISGID == (0o750 if is_dir else 0o640), (path, oct(mode))


def test_a_bad_share_setting_is_one_line(home: Path) -> None:
    proc = subprocess.run([*mledger_command(), "list"], env=subprocess_env(home, MLEDGER_SHARE="world"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "MLEDGER_SHARE" in proc.stderr
    assert not home.exists()


def test_the_console_script_makes_a_private_home(home: Path) -> None:
    proc = subprocess.run([*mledger_command(), "list"], env=subprocess_env(home), capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "registry.db").st_mode) == 0o600


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_pulled_files_take_only_the_executable_bit_under_the_umask(tmp_path: Path, mask: int) -> None:
    """A crafted manifest's 0o777 (or 0o4777) must not be applied: the pulled model stays the puller's."""
    store = BlobStore(str(tmp_path / "store"))
    run = store.put_bytes(b"#!/bin/sh\n")
    data = store.put_bytes(b"weights")
    manifest = store.put_bytes(manifest_bytes([
        FileEntry(path="run.sh", digest=run.digest, size=run.size, mode=0o4777),
        FileEntry(path="ww.txt", digest=data.digest, size=data.size, mode=0o666),
    ]))
    with umask(mask):
        store.pull(manifest.digest, "directory", str(tmp_path / "out"))
        store.pull(data.digest, "file", str(tmp_path / "one.bin"))
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "run.sh").st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "ww.txt").st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "one.bin").st_mode) == 0o666 & ~mask
