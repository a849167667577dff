"""The queue of one SQLite database's writers: a lock that sleeps in the kernel and wakes the next writer at once.

SQLite makes a writer that finds the write lock taken sleep in its busy handler (1, 2, 5, 10, 15, 20, 25, … ms,
then 100 ms a try) and try again, however soon the holder finishes: one writer runs many commands in a row
while the others sleep, some for seconds. ``scripts/bench_writers.py`` measured it (``docs/performance.md``,
"Writers queued on a file lock"): 8 processes tagging had a p99 of 0.64–0.86 s and a max of 1.1–1.5 s, and
queued here 83–88 ms and ~0.1 s, at about the same total rate (0.90–1.12x) for ~0.4–0.8 ms more CPU per
command; the HTTP server's 8-client creates and tags went 1.18x and 1.36x (medians of 5 rounds). So before ``BEGIN IMMEDIATE`` every writer of the database queues here first, and holds this lock
until its COMMIT or ROLLBACK has returned:

- in its process, on a ``threading.Lock`` per database (a futex: the next thread is woken when it is freed);
- across processes, on ``flock(LOCK_EX)`` of a small file beside the database (``registry.db-lock``). The
  kernel wakes the waiters when it is unlocked, and frees it when its holder dies, however it dies.

Why ``flock`` rather than ``fcntl`` record locks: classic POSIX record locks belong to the process (two threads
would not exclude each other, and closing *any* descriptor of the file — a second recorder on the same path
closing — drops them all); open-file-description locks (``F_OFD_SETLKW``) fix both but exist on Linux only
and need a descriptor opened for writing. ``flock`` belongs to the open file description on Linux, macOS and
the BSDs alike and works on a descriptor opened read-only (so a writer who may write the database but not a
lock file another user made still queues). Neither waits with a timeout.

SQLite's own lock is still taken (``BEGIN IMMEDIATE``): it is what excludes programs that do not know this
file (an older modelledger, the ``sqlite3`` shell, the blob tables' own transactions). Correctness never rests
on this lock; when the file cannot be made or opened (a read-only folder, no ``fcntl``), writers fall back to
SQLite's lock alone, as before.

A stuck holder (a process stopped with SIGSTOP, a thread blocked) must not hang the others forever: the lock is
tried without waiting first, and only when it is taken does the writer wait, for at most the recorder's
timeout, for a waiter thread (one per database and process) that blocks in ``flock`` on a descriptor of its
own (``flock`` cannot be told to give up, but the writer can stop waiting for the thread): after the timeout
the writer fails with the same ``StoreError`` as SQLite's "database is locked", and the waiter thread hands the
lock back whenever it finally comes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError
from .permissions import create_file, modes_under

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's lock alone across processes
    fcntl = None  # type: ignore[assignment]

SUFFIX = "-lock"


def lock_file_of(database: str | os.PathLike[str]) -> Path:
    """The lock file of a SQLite database: ``<database>-lock`` beside it."""
    return Path(str(database) + SUFFIX)


class WouldWait(StoreError):
    """A writer inside ``without_waiting()`` found the lock taken (or unusable): it took nothing and did
    nothing, so the caller can run the whole write again where waiting is allowed."""


_thread = threading.local()


@contextmanager
def without_waiting() -> Iterator[None]:
    """Writes of this thread inside the block take the lock only if it is free at once, else raise
    ``WouldWait`` before anything is written: what lets the HTTP server run a small command on its event
    loop, which must never sleep in a queue of writers (``modelledger/server/direct.py``)."""
    before = getattr(_thread, "no_wait", False)
    _thread.no_wait = True
    try:
        yield
    finally:
        _thread.no_wait = before


def waiting_allowed() -> bool:
    """False inside ``without_waiting()``: the recorder then begins its transaction without SQLite's busy
    handler too (a program that does not know the lock file may hold SQLite's own lock)."""
    return not getattr(_thread, "no_wait", False)


# How long the main thread sleeps at a time in a lock wait (``acquire_interruptibly``).
MAIN_THREAD_SLICE = 0.05


def acquire_interruptibly(lock: threading.Lock, timeout: float | None = None) -> bool:
    """``lock.acquire(timeout=...)`` (None: no limit) that a Ctrl-C interrupts in the main thread. A signal the
    kernel hands to another thread of the process (a CLI's embedded worker's, a leader's) does not wake a lock
    wait in the main thread: Python runs the handler, which raises KeyboardInterrupt, only when the main thread
    next runs bytecode (measured: a SIGINT sent to another thread left the main thread queued until the test's
    60 s timeout). So the main thread waits in slices; other threads, which never get KeyboardInterrupt, at
    once."""
    if threading.current_thread() is not threading.main_thread():
        return lock.acquire(timeout=-1 if timeout is None else min(timeout, threading.TIMEOUT_MAX))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = MAIN_THREAD_SLICE if deadline is None else min(MAIN_THREAD_SLICE, deadline - time.monotonic())
        if lock.acquire(timeout=max(left, 0.0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def locked_error(database: str | os.PathLike[str], timeout: float) -> StoreError:
    """What a writer that waited ``timeout`` seconds raises: what SQLite's own "database is locked" says."""
    return StoreError(f"the registry database stayed locked by another writer: database is locked (waited "
                      f"{timeout:g} s for {lock_file_of(database).name})")


class _Wait:
    """One writer's wait for the file lock on ``fd``, done by the database's waiter thread (``_Database.wait``)."""

    __slots__ = ("error", "fd", "guard", "signal", "state")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.signal = threading.Lock()  # released by the waiter thread when the wait is over
        self.signal.acquire()
        self.guard = threading.Lock()
        self.state = "waiting"  # then "granted", "failed" (error) or "given up" (the writer left)
        self.error: OSError | None = None


# How long a database's waiter thread stays for the next contended write before it ends (the next one starts
# another).
WAITER_IDLE_S = 10.0


class _Database:
    """This process's side of one database's lock (one per lock file per process). One descriptor of the lock
    file stays open between writes (``spare``: unlocked), until a recorder of the database closes: opening and
    closing the file around every write was ~4 % of a small register's time (``py-spy`` over
    ``scripts/ab_register.py``'s loop: ``_close`` 2.7 %, ``_open`` 0.9 %), the close being the kernel's
    release of the flock. A lock file replaced under it (deleted and made again) would leave this process
    locking the old one: SQLite's own lock still excludes the writers (correctness never rests on this one)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads = threading.Lock()
        self.owner: int | None = None   # the thread that holds it
        self.held: int | None = None    # the descriptor whose flock is held, while held
        self.unusable = fcntl is None   # the file cannot be used: SQLite's lock alone
        self.spare: int | None = None   # an open, unlocked descriptor for the next write (only its owner's)
        self.guard = threading.Lock()
        self.waits: queue.SimpleQueue[_Wait] | None = None

    def wait(self, request: _Wait) -> None:
        """Hand ``request`` to this database's waiter thread (one per database and process, started when
        needed). A thread started per wait cost 0.13–0.32 ms more CPU per contended write than a plain
        blocking ``flock`` (``bench_writers.py --handoff``, docs/performance.md); a waiter kept alive costs two
        lock hand-overs."""
        with self.guard:
            if self.waits is None:
                self.waits = queue.SimpleQueue()
                threading.Thread(target=self._waiter, args=(self.waits,), name="mledger-writelock",
                                 daemon=True).start()
            self.waits.put(request)

    def _waiter(self, waits: queue.SimpleQueue[_Wait]) -> None:
        """Blocks in ``flock`` for each request in turn. A request whose writer gave up (its timeout passed)
        is still waited for, and the lock handed straight back when it comes: the requests behind it (writers
        of this process, who would time out anyway while the holder is stuck) wait their turn."""
        while True:
            try:
                request = waits.get(timeout=WAITER_IDLE_S)
            except queue.Empty:
                with self.guard:
                    if waits.empty():
                        self.waits = None
                        return
                continue
            try:
                fcntl.flock(request.fd, fcntl.LOCK_EX)
                error = None
            except OSError as exc:
                error = exc
            with request.guard:
                if request.state == "given up":
                    _close(request.fd)  # unlocks, if the lock came
                    continue
                request.state, request.error = ("granted", None) if error is None else ("failed", error)
            request.signal.release()


_databases: dict[str, _Database] = {}
_guard = threading.Lock()
_fds: set[int] = set()  # the descriptors of lock files open in this process now (closed in a forked child)


def _close(fd: int) -> None:
    """Unlock (if locked) and close a descriptor of ours."""
    with _guard:
        _fds.discard(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _database(path: str) -> _Database:
    found = _databases.get(path)
    if found is None:
        with _guard:
            found = _databases.setdefault(path, _Database(path))
    return found


def _after_fork_in_child() -> None:
    """A forked child starts with no lock of its parent's: another thread's held ``threading.Lock`` would stay
    held forever, and a copy of a descriptor shares its open file description (so its flock) with the parent.
    The copies are closed, never unlocked (unlocking would free the parent's lock)."""
    global _guard, _databases
    _guard = threading.Lock()
    _databases = {}
    for fd in list(_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WriteLock:
    """The writers' queue of the SQLite database at ``database`` (shared by every ``WriteLock`` of that file in
    the process). ``held(timeout)`` around a write transaction, from before ``BEGIN`` to after its end."""

    def __init__(self, database: str | os.PathLike[str]) -> None:
        self.database = Path(database)
        self.path = os.path.realpath(lock_file_of(database))

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def acquire(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the lock (``StoreError`` then, as SQLite's timeout does). A
        thread that holds it already gets ``StoreError`` at once: it would wait for itself."""
        db = _database(self.path)
        me = threading.get_ident()
        if db.owner == me:
            raise StoreError(f"nested write transaction on the registry database {self.database} in one thread")
        deadline = time.monotonic() + timeout
        if not waiting_allowed():
            if db.unusable or not db.threads.acquire(blocking=False):  # unusable: SQLite's busy handler would wait
                raise WouldWait(f"the write lock of {self.database} is taken")
        elif not acquire_interruptibly(db.threads, max(timeout, 0.0)):
            raise locked_error(self.database, timeout)
        try:
            if not db.unusable:
                db.held = self._lock_file(db, deadline, timeout)
            if db.held is None and not waiting_allowed():
                raise WouldWait(f"no lock file for {self.database}: SQLite's busy handler would wait")
        except BaseException:
            db.threads.release()
            raise
        db.owner = me

    def release(self) -> None:
        db = _database(self.path)
        if db.owner != threading.get_ident():
            return  # a forked child, or a lock never taken: nothing of this thread's to free
        held, db.held, db.owner = db.held, None, None
        try:
            if held is not None:
                if db.spare is None:
                    fcntl.flock(held, fcntl.LOCK_UN)
                    db.spare = held
                else:
                    _close(held)
        finally:
            db.threads.release()

    def close(self) -> None:
        """Close the spare descriptor of the lock file (a recorder of the database is closing); the next write
        opens it again. Left to the next ``release`` when another thread holds the lock now."""
        db = _database(self.path)
        if not db.threads.acquire(blocking=False):
            return
        try:
            spare, db.spare = db.spare, None
            if spare is not None:
                _close(spare)
        finally:
            db.threads.release()

    # -- the file ----------------------------------------------------------------------------------
    def _open(self, db: _Database) -> int | None:
        """A descriptor of the lock file (made, with the mode the database's folder gives new files —
        ``eventstore/permissions.py`` — when missing); None when it cannot be had (SQLite's lock alone).
        Opened for each write (a few microseconds against a write's milliseconds)."""
        flags = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            try:
                fd = os.open(db.path, os.O_RDWR | flags)
            except FileNotFoundError:
                create_file(db.path, modes_under(os.path.dirname(db.path)).file)
                fd = os.open(db.path, os.O_RDWR | flags)
        except PermissionError:
            try:  # another user's lock file in a shared home: flock needs no write access
                fd = os.open(db.path, os.O_RDONLY | flags)
            except OSError:
                return None
        except OSError:
            return None
        with _guard:
            _fds.add(fd)
        return fd

    def _lock_file(self, db: _Database, deadline: float, timeout: float) -> int | None:
        fd, db.spare = db.spare, None
        if fd is None:
            fd = self._open(db)
        if fd is None:
            db.unusable = True
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not waiting_allowed():
                _close(fd)
                raise WouldWait(f"the write lock of {self.database} is taken") from None
        except OSError:  # no flock on this file system (ENOLCK): SQLite's lock alone
            _close(fd)
            db.unusable = True
            return None
        # Taken by another process: the waiter thread waits for it, this writer at most until the deadline.
        request = _Wait(fd)
        try:
            db.wait(request)
        except BaseException:
            _close(fd)
            raise
        try:
            acquire_interruptibly(request.signal, max(0.0, deadline - time.monotonic()))
        except BaseException:
            # Interrupted (Ctrl-C) while waiting: give the wait up, or the lock it gets would be held for
            # nobody; if it was granted meanwhile, let it go.
            with request.guard:
                if request.state == "waiting":
                    request.state = "given up"
                    raise
            _close(fd)  # granted meanwhile, or failed: closing unlocks
            raise
        with request.guard:
            if request.state == "waiting":
                request.state = "given up"  # the waiter thread closes the descriptor when the lock comes
                raise locked_error(self.database, timeout)
        if request.state == "failed":
            _close(fd)
            raise StoreError(f"cannot lock {db.path}: {request.error.strerror if request.error else ''}")
        return fd
