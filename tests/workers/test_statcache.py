"""The stat cache: an unchanged local file is not read again; any change, a racy mtime or a broken cache file
means the file is read (and hashed) as if there were no cache."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from modelledger.registry import Registry
from workers import statcache
from workers.blobs import fsspec_store as store_mod
from workers.statcache import FileKey, StatCache
from workers.store import BlobStore

SIZE = 2 * 1024 * 1024 + 5  # over the small-file path, where the cache is consulted


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Reads:
    """Counts the one-pass copies (the only way a local store reads a big source's bytes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = store_mod.copy_hashing

        def spy(*args: object, **kwargs: object) -> tuple[str, int]:
            self.count += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store_mod, "copy_hashing", spy)


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file counts as settled 50 ms after its last change (instead of 2 s), so tests need not sleep long."""
    monkeypatch.setattr(statcache, "RACY_NS", 50_000_000)


def wait_settled() -> None:
    time.sleep(0.1)


def make(tmp_path: Path, data: bytes | None = None) -> tuple[Path, bytes]:
    data = os.urandom(SIZE) if data is None else data
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    return src, data


def cached_store(tmp_path: Path) -> BlobStore:
    return BlobStore(str(tmp_path / "store"), statcache=tmp_path / "home" / "statcache.db")


@pytest.fixture(autouse=True)
def home_dir(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None) -> None:
    src, data = make(tmp_path)
    wait_settled()
    reads = Reads(monkeypatch)
    store = cached_store(tmp_path)
    first = store.ingest(str(src))
    assert reads.count == 1
    written = store.stats.bytes_written
    again = cached_store(tmp_path).ingest(str(src))  # a new process's store: the cache is a file in the home
    assert again == first and first.digest == sha(data)
    assert reads.count == 1  # not read at all
    assert store.stats.bytes_written == written
    assert stat_mode(tmp_path / "home" / "statcache.db") == 0o600


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_a_cached_file_whose_blob_is_gone_is_copied_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          settled: None) -> None:
    src, data = make(tmp_path)
    wait_settled()
    store = cached_store(tmp_path)
    info = store.ingest(str(src))
    assert store.delete(info.digest)  # gc freed it
    reads = Reads(monkeypatch)
    assert store.ingest(str(src)).digest == sha(data)
    assert reads.count == 1 and store.verify(info.digest)


def rewrite_same_size_restoring_mtime(src: Path) -> bytes:
    st = src.stat()
    data = bytearray(src.read_bytes())
    data[SIZE // 2] ^= 0xFF
    src.write_bytes(bytes(data))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime; only ctime tells
    assert src.stat().st_mtime_ns == st.st_mtime_ns and src.stat().st_size == st.st_size
    return bytes(data)


def replace_by_rename(src: Path) -> bytes:
    data = os.urandom(SIZE)
    other = src.with_name("new.bin")
    other.write_bytes(data)
    st = src.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, src)  # another inode under the same name
    return data


def grow(src: Path) -> bytes:
    st = src.stat()
    with open(src, "ab") as f:
        f.write(b"more")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    return src.read_bytes()


@pytest.mark.parametrize("change", [rewrite_same_size_restoring_mtime, replace_by_rename, grow])
def test_a_changed_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None,
                                      change: object) -> None:
    src, _ = make(tmp_path)
    wait_settled()
    cached_store(tmp_path).ingest(str(src))
    new = change(src)  # type: ignore[operator]
    wait_settled()
    reads = Reads(monkeypatch)
    info = cached_store(tmp_path).ingest(str(src))
    assert reads.count == 1
    assert info.digest == sha(new)


def test_a_file_changed_in_the_tick_it_was_hashed_is_not_trusted(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src, data = make(tmp_path)  # just written: its mtime is now, within the filesystem's timestamp granularity
    reads = Reads(monkeypatch)
    cached_store(tmp_path).ingest(str(src))
    assert cached_store(tmp_path).ingest(str(src)).digest == sha(data)
    assert reads.count == 2  # read both times: the first hashing could not be trusted to cover later writes


def test_an_entry_recorded_too_close_to_the_files_mtime_is_not_used(tmp_path: Path) -> None:
    src, _ = make(tmp_path)
    key = FileKey.of(src.stat())
    cache = StatCache(tmp_path / "home" / "statcache.db")
    digest = "sha256:" + "ab" * 32
    # Written by hand as if recorded 1 ms after the last change (remember() refuses to record it at all).
    cache.remember(key, digest, max(key.mtime_ns, key.ctime_ns) + statcache.RACY_NS)
    assert cache.lookup(key) == digest
    db = cache._db
    assert db is not None
    db.execute("UPDATE entries SET hashed_at_ns = ?", (max(key.mtime_ns, key.ctime_ns) + 1_000_000,))
    assert cache.lookup(key) is None
    db.execute("DELETE FROM entries")
    cache.remember(key, digest, max(key.mtime_ns, key.ctime_ns) + 1_000_000)
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0  # not even recorded
    assert cache.lookup(key) is None


@pytest.mark.parametrize("damage", ["garbage", "directory", "shared", "symlink"])
def test_a_broken_cache_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None,
                                   damage: str) -> None:
    path = tmp_path / "home" / "statcache.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
        path.chmod(0o600)
    elif damage == "directory":
        path.mkdir()  # cannot be opened as a file
    elif damage == "shared":
        StatCache(path).lookup(FileKey(1, 1, 1, 1, 1))
        path.chmod(0o666)  # someone else could have written it: not trusted
    else:
        (tmp_path / "elsewhere.db").write_bytes(b"")
        path.symlink_to(tmp_path / "elsewhere.db")
    src, data = make(tmp_path)
    wait_settled()
    reads = Reads(monkeypatch)
    for _ in range(2):
        assert cached_store(tmp_path).ingest(str(src)).digest == sha(data)
    assert reads.count == 2  # read each time, never an error


def test_an_unwritable_cache_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None) -> None:
    blocker = tmp_path / "home" / "not-a-folder"
    blocker.write_bytes(b"")  # the cache's folder is a file: it can be neither created nor read, even by root
    src, data = make(tmp_path)
    wait_settled()
    reads = Reads(monkeypatch)
    for _ in range(2):
        store = BlobStore(str(tmp_path / "store"), statcache=blocker / "statcache.db")
        assert store.ingest(str(src)).digest == sha(data)
    assert reads.count == 2


def test_a_second_register_of_an_unchanged_file_reads_nothing(home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, settled: None) -> None:
    src, data = make(tmp_path)
    wait_settled()
    reads = Reads(monkeypatch)
    with Registry.open(home) as reg:
        v1 = reg.register("m", src)
    with Registry.open(home) as reg:
        v2 = reg.register("m", src)
        assert reg.store().statcache is not None and reg.store().statcache.hits == 1
    assert v1.artifact["digest"] == v2.artifact["digest"] == sha(data)
    assert reads.count == 1
    assert list(home.glob("statcache-*.db")) and stat_mode(next(home.glob("statcache-*.db"))) == 0o600


def test_a_folder_of_unchanged_shards_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        settled: None) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for i in range(3):
        (folder / f"shard-{i}.bin").write_bytes(os.urandom(SIZE + i))
    wait_settled()
    reads = Reads(monkeypatch)
    first = cached_store(tmp_path).ingest(str(folder))
    assert reads.count == 3
    assert cached_store(tmp_path).ingest(str(folder)) == first
    assert reads.count == 3
