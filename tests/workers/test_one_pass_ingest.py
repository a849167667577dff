"""One-pass ingest of local files: the digest is the file's sha256 whatever its size, a failure leaves nothing,
stored bytes are not copied again, and a sharded folder ingested in parallel is the same artifact."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from eventstore.errors import ArtifactError
from workers.blobs import base as blob_base
from workers.blobs import fsspec_store as store_mod
from workers.blobs import localcopy
from workers.store import BlobStore

CHUNK = 4096  # the pipeline's buffer size in these tests, so its boundaries are cheap to reach


@pytest.fixture(autouse=True)
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localcopy, "PIPE_CHUNK", CHUNK)
    monkeypatch.setattr(blob_base, "SMALL_FILE", 0)  # every non-empty file takes the one-pass path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> tuple[list[Path], list[Path]]:
    temps = list((root / "tmp").iterdir()) if (root / "tmp").exists() else []
    blobs = [p for p in (root / "sha256").rglob("*") if p.is_file()] if (root / "sha256").exists() else []
    return temps, blobs


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 7 * CHUNK + 3])
def test_the_digest_is_the_sha256_of_the_file_around_buffer_boundaries(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(src))
    assert info.digest == sha(data) and info.size == size
    with store.open_blob(info.digest) as f:
        assert f.read() == data
    assert leftovers(tmp_path / "store")[0] == []


@pytest.mark.parametrize("hash_thread", [True, False])
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 3])
def test_both_copies_write_the_file_and_hash_what_they_wrote(tmp_path: Path, size: int, hash_thread: bool) -> None:
    """The pipelined copy (a second thread hashes) and the one-thread copy (a folder's shards, one per core)
    give the file's bytes and their SHA-256, from the source's current offset."""
    data = os.urandom(size + 7)
    (tmp_path / "src.bin").write_bytes(data)
    src = os.open(tmp_path / "src.bin", os.O_RDONLY)
    out = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.lseek(src, 7, os.SEEK_SET)
        got = localcopy.copy_hashing(src, out, None, "src.bin", hash_thread=hash_thread)
    finally:
        os.close(src)
        os.close(out)
    assert got == (hashlib.sha256(data[7:]).hexdigest(), size)
    assert (tmp_path / "out.bin").read_bytes() == data[7:]


@pytest.mark.parametrize("hash_thread", [True, False])
def test_the_disk_is_started_on_every_written_range_and_the_blob_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hash_thread: bool) -> None:
    """Through the page cache (a file system without direct writes), the copy asks the kernel to write behind it
    (so the closing fsync waits for little): every range it names
    was written already, the ranges follow each other from the start, and the stored bytes are the file's.
    Both copies: the pipeline (one file) and the one-thread copy (a folder's shards in parallel)."""
    data = os.urandom(11 * CHUNK + 5)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    monkeypatch.setattr(localcopy, "set_direct", lambda fd, on: False)  # a file system without O_DIRECT
    monkeypatch.setattr(localcopy, "WRITEBACK_BYTES", 3 * CHUNK)
    ranges: list[tuple[int, int, int]] = []
    real = localcopy.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        ranges.append((offset, length, os.fstat(fd).st_size))
        real(fd, offset, length)

    monkeypatch.setattr(localcopy, "start_writeback", spy)
    real_copy = store_mod.copy_hashing
    modes: list[object] = []

    def copy(*args: object, **kwargs: object) -> tuple[str, int]:
        modes.append(kwargs.get("hash_thread"))
        return real_copy(*args[:4], hash_thread=hash_thread)  # type: ignore[arg-type]

    monkeypatch.setattr(store_mod, "copy_hashing", copy)
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(src))
    assert modes == [True]  # a file alone is copied by the pipeline
    assert info.digest == sha(data)
    with store.open_blob(info.digest) as f:
        assert f.read() == data
    assert [(o, n) for o, n, _ in ranges] == [(0, 3 * CHUNK), (3 * CHUNK, 3 * CHUNK), (6 * CHUNK, 3 * CHUNK)]
    assert all(o + n <= written for o, n, written in ranges)


def direct_writes_here(path: Path) -> bool:
    fd = os.open(path / "probe.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return localcopy.set_direct(fd, True)
    finally:
        os.close(fd)


@pytest.mark.parametrize("hash_thread", [True, False])
def test_whole_buffers_go_to_the_disk_directly_and_the_tail_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hash_thread: bool) -> None:
    """Where the file system allows it, the copy's aligned buffers bypass the page cache (O_DIRECT: no page is
    allocated for them, which on a VM handing freed memory back to its host costs more than the copy), and the
    file's last, unaligned bytes are written through it: the stored bytes are the file's, whole."""
    if not direct_writes_here(tmp_path):
        pytest.skip("this file system takes no O_DIRECT")
    data = os.urandom(5 * CHUNK + 3)
    (tmp_path / "src.bin").write_bytes(data)
    seen: list[tuple[int, bool]] = []
    real = localcopy.write_all

    def spy(fd: int, view: memoryview) -> None:
        seen.append((len(view), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        real(fd, view)

    monkeypatch.setattr(localcopy, "write_all", spy)
    src = os.open(tmp_path / "src.bin", os.O_RDONLY)
    out = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        got = localcopy.copy_hashing(src, out, None, "src.bin", hash_thread=hash_thread)
        os.fsync(out)
    finally:
        os.close(src)
        os.close(out)
    assert got == (hashlib.sha256(data).hexdigest(), len(data))
    assert seen == [(CHUNK, True)] * 5 + [(3, False)]
    assert (tmp_path / "out.bin").read_bytes() == data


def test_a_file_system_refusing_a_direct_write_still_gets_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system may take the O_DIRECT flag and refuse the write (EINVAL: an alignment it wants larger): the
    copy goes on through the page cache, and the blob is the file's bytes under their digest."""
    data = os.urandom(4 * CHUNK + 1)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    monkeypatch.setattr(localcopy, "set_direct", lambda fd, on: on)  # the flag is "taken"
    real = localcopy.write_all
    refused = []

    def refuse_direct(fd: int, view: memoryview) -> None:
        if not refused:
            refused.append(len(view))
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view)

    monkeypatch.setattr(localcopy, "write_all", refuse_direct)
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(src))
    assert refused == [CHUNK]
    assert info.digest == sha(data) and info.size == len(data)
    with store.open_blob(info.digest) as f:
        assert f.read() == data
    assert leftovers(tmp_path / "store")[0] == []


def test_short_reads_that_break_the_alignment_still_copy_every_byte(tmp_path: Path) -> None:
    """A source that returns fewer bytes than asked (a pipe here; a file being written) leaves the copy at an
    offset O_DIRECT cannot write: the rest goes through the page cache, every byte once, in order."""
    import threading

    data = os.urandom(6 * CHUNK + 11)
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb", buffering=0) as f:
            for piece in (data[:100], data[100:3 * CHUNK], data[3 * CHUNK:]):
                f.write(piece)

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        got = localcopy.copy_hashing(r, out, None, "pipe")
    finally:
        feeder.join()
        os.close(r)
        os.close(out)
    assert got == (hashlib.sha256(data).hexdigest(), len(data))
    assert (tmp_path / "out.bin").read_bytes() == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range(2) is Linux's")
def test_writeback_is_the_real_system_call_on_linux(tmp_path: Path) -> None:
    """On Linux the head start is sync_file_range(2) itself, not a silent no-op (it is what keeps the final
    fsync short): the kernel accepts our arguments on a written file and refuses a closed descriptor."""
    import ctypes

    call = localcopy._sync_file_range()
    assert call is not None
    fd = os.open(tmp_path / "f.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, os.urandom(1024 * 1024))
        assert call(fd, 0, 1024 * 1024, localcopy._SYNC_FILE_RANGE_WRITE) == 0
    finally:
        os.close(fd)
    assert call(fd, 0, 1024 * 1024, localcopy._SYNC_FILE_RANGE_WRITE) == -1
    assert ctypes.get_errno() == errno.EBADF


def test_a_full_disk_mid_copy_leaves_no_temp_and_no_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(5 * CHUNK))
    calls = []
    real = localcopy.write_all

    def fill_up(fd: int, view: memoryview) -> None:
        calls.append(len(view))
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, view)

    monkeypatch.setattr(localcopy, "write_all", fill_up)
    store = BlobStore(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match="No space left"):
        store.ingest(str(src))
    assert leftovers(tmp_path / "store") == ([], [])


def test_a_source_shrinking_while_read_leaves_no_temp_and_no_blob(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(6 * CHUNK))

    def shrink(done: int) -> None:
        if done == CHUNK:
            os.truncate(src, 2 * CHUNK)

    store = BlobStore(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match="changed while it was being stored"):
        store.ingest(str(src), progress=shrink)
    assert leftovers(tmp_path / "store") == ([], [])


def test_a_source_rewritten_in_place_while_read_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(6 * CHUNK))

    def rewrite(done: int) -> None:
        if done == CHUNK:
            with open(src, "r+b") as f:
                f.seek(4 * CHUNK)
                f.write(b"x" * CHUNK)  # same size; mtime and ctime move

    store = BlobStore(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match="changed while it was being stored"):
        store.ingest(str(src), progress=rewrite)
    assert leftovers(tmp_path / "store") == ([], [])


def test_bytes_already_stored_are_not_written_again(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 17)
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(data)
    b.write_bytes(data)  # another file (inode) with the same bytes: unknown to any cache
    store = BlobStore(str(tmp_path / "store"))
    first = store.ingest(str(a))
    written = store.stats.bytes_written
    blobs_before = leftovers(tmp_path / "store")[1]
    assert written == len(data)
    again = store.ingest(str(b))
    assert again.digest == first.digest
    assert store.stats.bytes_written == written and store.stats.blobs_deduplicated == 1
    assert leftovers(tmp_path / "store") == ([], blobs_before)


def make_shards(root: Path, n: int = 6) -> Path:
    d = root / "ckpt"
    (d / "sub").mkdir(parents=True)
    for i in range(n):
        (d / f"model-{i:05d}-of-{n:05d}.safetensors").write_bytes(os.urandom(3 * CHUNK + i))
    (d / "sub" / "config.json").write_text('{"a": 1}')
    (d / "empty").write_bytes(b"")
    return d


def test_a_folder_ingested_in_parallel_is_the_same_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_shards(tmp_path)
    monkeypatch.setattr(blob_base, "FOLDER_THREADS", 1)
    sequential = BlobStore(str(tmp_path / "s1")).ingest(str(folder))
    monkeypatch.setattr(blob_base, "FOLDER_THREADS", 4)
    monkeypatch.setattr(blob_base, "PARALLEL_FOLDER_BYTES", 0)
    seen_threads: set[str] = set()
    real = store_mod.copy_hashing

    modes: set[object] = set()

    def spy(*args: object, **kwargs: object) -> tuple[str, int]:
        import threading

        seen_threads.add(threading.current_thread().name)
        modes.add(kwargs.get("hash_thread"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_mod, "copy_hashing", spy)
    progress: list[int] = []
    parallel = BlobStore(str(tmp_path / "s2")).ingest(str(folder), progress=progress.append)
    assert parallel == sequential
    assert any(name.startswith("mledger-ingest") for name in seen_threads)
    assert modes == {False}  # one copy per core, each hashing in its own thread
    assert progress[-1] == sequential.size and progress == sorted(progress)


def test_a_failing_shard_in_a_parallel_folder_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_shards(tmp_path)
    monkeypatch.setattr(blob_base, "FOLDER_THREADS", 3)
    monkeypatch.setattr(blob_base, "PARALLEL_FOLDER_BYTES", 0)
    real = store_mod.copy_hashing
    count = [0]

    def fails_once(src: int, out: int, progress: object = None, shown: str = "", **kwargs: bool) -> tuple[str, int]:
        count[0] += 1
        if count[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, out, progress, shown, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_mod, "copy_hashing", fails_once)
    with pytest.raises(ArtifactError, match="No space left"):
        BlobStore(str(tmp_path / "store")).ingest(str(folder))
    assert leftovers(tmp_path / "store") == ([], [])


def test_every_shard_is_on_disk_before_its_name_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards copied in parallel are fsynced at publish time rather than by their copying thread: still, no
    blob's name is linked before its bytes were fsynced, and the folder's bytes are the shards'."""
    folder = make_shards(tmp_path)
    monkeypatch.setattr(blob_base, "FOLDER_THREADS", 3)
    monkeypatch.setattr(blob_base, "PARALLEL_FOLDER_BYTES", 0)
    synced: set[int] = set()
    unsynced_links: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.fstat(fd).st_ino)

    def link(src: str, dst: str) -> None:
        if os.stat(src).st_ino not in synced:
            unsynced_links.append(dst)
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(folder))
    assert unsynced_links == []
    assert len(info.files) == len([p for p in folder.rglob("*") if p.is_file()])
    for e in info.files:
        with store.open_blob(e.digest) as f:
            assert f.read() == (folder / e.path).read_bytes()


@pytest.mark.parametrize("parallel", [True, False])
def test_a_folder_s_new_names_are_made_durable_once_after_every_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool) -> None:
    """Publishing a folder links every blob, then fsyncs each folder whose entries changed once (the blobs'
    folders and the fan-out folders made for them): every new name is durable before the ingest returns, and
    no fsync of a folder waits for one link after another."""
    folder = make_shards(tmp_path)
    monkeypatch.setattr(blob_base, "FOLDER_THREADS", 3 if parallel else 1)
    monkeypatch.setattr(blob_base, "PARALLEL_FOLDER_BYTES", 0)
    store_root = tmp_path / "store"
    store = BlobStore(str(store_root))
    store.ingest(str(tmp_path / "ckpt" / "sub" / "config.json"))  # the store's own folders exist already
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def link(src: str, dst: str) -> None:
        real_link(src, dst)
        events.append(("link", dst))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    info = store.ingest(str(folder))
    links = [p for kind, p in events if kind == "link"]
    last_link = max(i for i, (kind, _p) in enumerate(events) if kind == "link")
    synced = [p for kind, p in events[last_link:] if kind == "fsync"]
    assert len(links) == len({e.digest for e in info.files if e.size}) + 1  # every new blob and the manifest
    assert all(kind == "link" for kind, _p in events[:last_link])  # no folder fsync between the links
    assert len(synced) == len(set(synced))  # each folder once
    new_folders = {os.path.dirname(p) for p in links} | {os.path.dirname(os.path.dirname(p)) for p in links}
    assert new_folders <= set(synced)  # every name made (blob, fan-out folder) is durable before the return


def test_fsync_each_waits_for_every_call_and_raises_the_first_error(tmp_path: Path) -> None:
    from workers.blobs.fsspec_store import fsync_each

    done: list[str] = []

    def fsync(path: str) -> None:
        if path == "bad":
            raise OSError(errno.EIO, "EIO")
        time.sleep(0.01)
        done.append(path)

    with pytest.raises(OSError, match="EIO"):
        fsync_each(fsync, ["a", "bad", "b", "c"])
    assert sorted(done) == ["a", "b", "c"]
    fsync_each(fsync, [])
    fsync_each(fsync, ["d"])
    assert done[-1] == "d"
