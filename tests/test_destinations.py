"""`pull` and `audit --export` never destroy a destination (security finding H5, test-quality §0.10).

Through the command line (``cli.main`` in-process, and the console script for the first case): a refused
DEST exits with one line on stderr, no traceback, appends nothing and leaves whatever was there as it was.
Special files are stand-ins made inside tmp folders, never the machine's own device nodes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
from pathlib import Path

import fsspec
import pytest
from services import mledger_command, subprocess_env

from eventstore.destinations import PULL_MARK
from eventstore.errors import ArtifactError
from modelledger import Registry
from workers.store import BlobStore


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")


def head(home: Path) -> int:
    with Registry.open(home) as reg:
        return reg.head()


def refused(result: tuple[int, str, str], code: int) -> str:
    rc, _, err = result
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(home: Path, tmp_path: Path) -> Path:
    """m@1 a file, d@1 a folder; returns the registry home."""
    src = tmp_path / "src"
    (src / "folder" / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"weights v1\n")
    (src / "folder" / "a.txt").write_text("a")
    (src / "folder" / "sub" / "b.txt").write_text("b")
    with Registry.open(home) as reg:
        reg.register("m", src / "model.bin")
        reg.register("d", src / "folder")
    return home


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working tree with files, the process's current folder being work/sub."""
    root = tmp_path / "sandbox" / "work"
    (root / "sub").mkdir(parents=True)
    (root / "keep.txt").write_text("mine")
    (root / "sub" / "keep2.txt").write_text("mine too")
    monkeypatch.chdir(root / "sub")
    return root


@pytest.mark.parametrize("dest", ["", ".", "..", "/", "./", "../..", "sub/..", "CWD", "PARENT", "SANDBOX"])
@pytest.mark.parametrize("ref", ["m@1", "d@1"])
def test_pull_force_never_takes_the_current_folder_or_one_above(cli, registry: Path, work: Path, dest: str,
                                                                 ref: str) -> None:
    dest = {"CWD": str(work / "sub"), "PARENT": str(work), "SANDBOX": str(work.parent)}.get(dest, dest)
    before, events = tree(work.parent), head(registry)
    refused(cli("pull", ref, dest, "--force"), 2)
    assert tree(work.parent) == before
    assert head(registry) == events
    assert sorted(p.name for p in work.parent.iterdir()) == ["work"]  # no temp left next to it


def test_the_console_script_refuses_an_empty_dest_in_one_line(registry: Path, work: Path) -> None:
    """The same through the installed ``mledger`` (what ``OUT=""; mledger pull m@1 "$OUT" --force`` runs)."""
    before = tree(work.parent)
    for dest in ("", "/"):
        proc = subprocess.run([*mledger_command(), "pull", "m@1", dest, "--force"], env=subprocess_env(registry),
                              capture_output=True, text=True, timeout=120, cwd=str(Path.cwd()))
        refused((proc.returncode, proc.stdout, proc.stderr), 2)
    assert tree(work.parent) == before


def test_pull_force_never_takes_the_home_folders_or_the_registry(cli, registry: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "userhome"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.chdir(tmp_path)
    (user_home / "notes.txt").write_text("mine")
    db = (registry / "registry.db").read_bytes()
    for dest in (user_home, user_home.parent, registry, registry / "registry.db", registry / "artifacts",
                 registry / "newfile"):
        err = refused(cli("pull", "m@1", str(dest), "--force"), 2)
        assert "refused destination" in err
    assert (user_home / "notes.txt").read_text() == "mine"
    assert (registry / "registry.db").read_bytes() == db


def special_files(folder: Path) -> dict[str, Path]:
    """A symlink, a FIFO, a socket and (as root) a character device, all inside ``folder``."""
    folder.mkdir()
    target = folder / "target.txt"
    target.write_text("the link's target")
    made = {"symlink": folder / "link", "fifo": folder / "fifo", "socket": folder / "sock"}
    made["symlink"].symlink_to(target)
    os.mkfifo(made["fifo"])
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(made["socket"]))
    sock.close()
    try:
        os.mknod(folder / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        made["device"] = folder / "null"
    except PermissionError:
        pass  # not root: the other three still prove it
    return made


def kinds(paths: dict[str, Path]) -> dict[str, int]:
    return {name: stat.S_IFMT(os.lstat(p).st_mode) for name, p in paths.items()}


def test_force_never_replaces_a_symlink_fifo_socket_or_device(cli, registry: Path, tmp_path: Path) -> None:
    made = special_files(tmp_path / "dt")
    before = kinds(made)
    events = head(registry)
    for path in made.values():
        refused(cli("pull", "m@1", str(path), "--force"), 7)
        refused(cli("pull", "d@1", str(path), "--force"), 7)
        err = refused(cli("audit", "--export", str(path)), 7)
        assert "--force" not in err  # it would only lead to a second refusal
        refused(cli("audit", "--export", str(path), "--force"), 7)
    assert kinds(made) == before
    assert os.readlink(made["symlink"]) == str(tmp_path / "dt" / "target.txt")
    assert (tmp_path / "dt" / "target.txt").read_text() == "the link's target"
    assert head(registry) == events


def test_without_force_an_existing_dest_is_refused_naming_the_flag(cli, registry: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_text("old")
    err = refused(cli("pull", "m@1", str(dest)), 7)
    assert "--force" in err and "use overwrite)" not in err
    assert dest.read_text() == "old"


def test_force_replaces_a_file_and_a_folder_a_pull_wrote_but_no_other_folder(cli, registry: Path,
                                                                             tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    err = refused(cli("pull", "d@1", str(mine), "--force"), 7)
    assert "no earlier pull" in err
    err = refused(cli("pull", "m@1", str(mine), "--force"), 7)
    assert tree(mine) == {"notes.txt": b"mine"}

    pulled = tmp_path / "pulled"
    assert cli("pull", "d@1", str(pulled))[0] == 0
    assert os.getxattr(pulled, PULL_MARK).startswith(b"sha256:")
    (pulled / "extra.txt").write_text("stale")
    proc = cli("pull", "d@1", str(pulled), "--force")
    assert proc[0] == 0, proc
    assert tree(pulled) == {"a.txt": b"a", "sub/b.txt": b"b"}
    # A folder a pull wrote may become the file artifact, and a file may become a folder.
    assert cli("pull", "m@1", str(pulled), "--force")[0] == 0
    assert pulled.read_bytes() == b"weights v1\n"
    assert cli("pull", "d@1", str(pulled), "--force")[0] == 0
    assert tree(pulled) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def corrupt(home: Path, digest: str) -> None:
    blob = home / "artifacts" / "sha256" / digest[7:9] / digest[9:11] / digest[7:]
    blob.chmod(0o600)
    blob.write_bytes(b"not the bytes it names")


def test_a_failed_pull_with_force_leaves_the_old_destination_intact(cli, registry: Path, tmp_path: Path) -> None:
    """test-quality §0.10: the new content is written next to DEST and swapped in only at the end."""
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "a.txt").write_text("a2")
    (tmp_path / "v2" / "c.txt").write_text("new file of v2")
    assert cli("register", "d", "--artifact", str(tmp_path / "v2"))[0] == 0
    (tmp_path / "f2.bin").write_text("file v2")
    assert cli("register", "m", "--artifact", str(tmp_path / "f2.bin"))[0] == 0
    folder, file = tmp_path / "folder-out", tmp_path / "file-out"
    assert cli("pull", "d@1", str(folder))[0] == 0
    assert cli("pull", "m@1", str(file))[0] == 0
    corrupt(registry, "sha256:" + hashlib.sha256(b"new file of v2").hexdigest())
    corrupt(registry, "sha256:" + hashlib.sha256(b"file v2").hexdigest())

    err = refused(cli("pull", "d@2", str(folder), "--force"), 7)
    assert "digest" in err
    assert tree(folder) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert os.getxattr(folder, PULL_MARK)
    refused(cli("pull", "m@2", str(file), "--force"), 7)
    assert file.read_bytes() == b"weights v1\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temp was left next to DEST"


def test_remote_destinations_keep_working(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "store"))
    blob = store.put_bytes(b"remote weights")
    store.pull(blob.digest, "file", "memory://pulled/model.bin")
    with pytest.raises(ArtifactError, match="--force"):
        store.pull(blob.digest, "file", "memory://pulled/model.bin")
    store.pull(blob.digest, "file", "memory://pulled/model.bin", overwrite=True)
    assert fsspec.filesystem("memory").cat("/pulled/model.bin") == b"remote weights"


def test_audit_export_needs_force_for_an_existing_file(cli, registry: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "evidence.jsonl"
    bundle.write_text("my notes")
    err = refused(cli("audit", "--export", str(bundle)), 7)
    assert "--force" in err
    assert bundle.read_text() == "my notes"
    proc = cli("audit", "--export", str(bundle), "--force")
    assert proc[0] == 0, proc
    assert cli("audit", "--verify-export", str(bundle))[0] == 0


@pytest.mark.parametrize("dest,code", [("DIR", 7), ("/nonexistent/x", 2), ("", 2), (".", 2), ("REGISTRY", 2)])
def test_audit_export_refusals_are_one_line(cli, registry: Path, work: Path, tmp_path: Path, dest: str,
                                           code: int) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep").write_text("k")
    dest = {"DIR": str(tmp_path / "adir"), "REGISTRY": str(registry / "registry.db")}.get(dest, dest)
    before, db = tree(work), (registry / "registry.db").read_bytes()
    refused(cli("audit", "--export", dest), code)
    refused(cli("audit", "--export", dest, "--force"), code)
    assert tree(work) == before
    assert (registry / "registry.db").read_bytes() == db
    assert tree(tmp_path / "adir") == {"keep": b"k"}
