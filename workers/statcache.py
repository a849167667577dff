"""The stat cache: (device, inode, size, mtime_ns, ctime_ns) of a local file → the digest its bytes had.

Registering a file that has not changed since it was last hashed then reads none of its bytes (as DVC and
git's index do). It lives in the registry's home (``statcache.db``, mode 0600), never in the log: it is a
cache, so losing it only costs a re-hash, and every failure to open, read or write it is ignored.

An entry is trusted only if all five fields still match the file's descriptor, and only if the file's
mtime and ctime were safely older than the moment it was hashed (``RACY_NS``): a file written in the same
timestamp tick as, or just after, its hashing keeps the same mtime and would otherwise look unchanged
("racy git"). Such a file is simply hashed again next time, and cached once it has settled.

Nothing that verifies the store (``audit --deep``) uses this cache.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any

# Filesystem timestamps come from a coarse clock (a kernel tick, up to 10 ms; FAT: 2 s), and a network
# filesystem's clock may lag ours: an mtime within this margin of the hashing is not trusted.
RACY_NS = 2_000_000_000
# Rows kept (the newest); a row is ~150 bytes, so the file stays around 15 MB at most.
MAX_ROWS = 100_000
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, digest TEXT NOT NULL, hashed_at_ns INTEGER NOT NULL,
    UNIQUE (dev, ino)
)
"""


def _signed(v: int) -> int:
    # st_ino / st_dev are unsigned 64-bit; SQLite integers are signed.
    return v - (1 << 64) if v >= (1 << 63) else v


@dataclass(frozen=True)
class FileKey:
    """What identifies one state of a file: any write, rename-over or truncation changes one of these."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(_signed(st.st_dev), _signed(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def settled(self, hashed_at_ns: int) -> bool:
        """Was the file last changed safely before ``hashed_at_ns``? (Else a later change may keep this key.)"""
        return max(self.mtime_ns, self.ctime_ns) + RACY_NS <= hashed_at_ns


def now_ns() -> int:
    """The moment a hashing starts, to pass back to ``remember``."""
    return time.time_ns()


class StatCache:
    """One cache file; safe to share between threads (one connection under a lock), opened lazily."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._db: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()
        self.hits = 0  # counters for tests and the bench (not records)
        self.misses = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_db=None, _broken=False, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection | None:
        if self._db is not None or self._broken:
            return self._db
        try:
            # Created 0600 and never through a link; someone else's file (or not a file) is not ours to trust.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o600)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                    raise PermissionError(f"stat cache not private: {self.path}")
            finally:
                os.close(fd)
            db = sqlite3.connect(self.path, timeout=0.2, isolation_level=None, check_same_thread=False)
            try:
                # A cache: no fsync per entry (WAL + NORMAL stays consistent; a crash may lose recent entries).
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
            except BaseException:
                db.close()
                raise
        except (OSError, sqlite3.Error):
            self._broken = True
            return None
        self._db = db
        return db

    def lookup(self, key: FileKey) -> str | None:
        """The digest recorded for exactly this state of the file, or None (unknown, changed, racy, no cache)."""
        with self._lock:
            db = self._open()
            if db is None:
                return None
            try:
                row = db.execute("SELECT size, mtime_ns, ctime_ns, digest, hashed_at_ns FROM entries"
                                 " WHERE dev = ? AND ino = ?", (key.dev, key.ino)).fetchone()
            except sqlite3.Error:
                self._broken = True
                return None
        if (row is None or tuple(row[:3]) != (key.size, key.mtime_ns, key.ctime_ns)
                or not isinstance(row[3], str) or not _DIGEST_RE.match(row[3])
                or not isinstance(row[4], int) or not key.settled(row[4])):
            self.misses += 1
            return None
        self.hits += 1
        return row[3]

    def remember(self, key: FileKey, digest: str, hashed_at_ns: int) -> None:
        """Record that the file in state ``key``, read from ``hashed_at_ns`` on, hashed to ``digest`` — unless
        it changed too recently to be sure (then it is hashed again next time)."""
        if not key.settled(hashed_at_ns) or not _DIGEST_RE.match(digest):
            return
        with self._lock:
            db = self._open()
            if db is None:
                return
            try:
                cur = db.execute("INSERT OR REPLACE INTO entries (dev, ino, size, mtime_ns, ctime_ns, digest,"
                                 " hashed_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns, digest, hashed_at_ns))
                if cur.lastrowid is not None and cur.lastrowid > MAX_ROWS:
                    db.execute("DELETE FROM entries WHERE rowid <= ?", (cur.lastrowid - MAX_ROWS,))
            except sqlite3.Error:
                pass  # busy (another process writing), read-only, full disk: the entry is simply not kept

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
