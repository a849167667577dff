"""The queue of a SQLite registry's writers (``eventstore/writelock.py``): a thread lock per database in each
process and ``flock`` of ``registry.db-lock`` across processes, held from before ``BEGIN IMMEDIATE`` to after
COMMIT/ROLLBACK. Real files and real processes: writers that queue on the file stay gapless and in order, a
stopped holder makes the next writer fail with ``StoreError`` after its timeout (nothing appended), a killed
holder frees the lock, a forked child does not inherit its parent's hold, the lock file's mode follows the
home's, and a read-only open makes no lock file."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from eventstore.errors import StoreError
from eventstore.events import NewEvent
from eventstore.permissions import make_root
from eventstore.sqlite import SQLiteRecorder
from eventstore.verify import verify_rows
from eventstore.writelock import WouldWait, lock_file_of, without_waiting

SPAWN = multiprocessing.get_context("spawn")


def tag(stream: str, n: int) -> NewEvent:
    return NewEvent(stream, "Tagged", {"name": stream.removeprefix("model-"), "version": None,
                                       "tags": {"n": str(n)}}, meta={"actor": "lock@test"})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "registry.db"
    SQLiteRecorder(path).close()
    return path


@contextmanager
def file_lock_held(db: Path) -> Iterator[None]:
    """Another process's hold of the lock file, as the kernel sees it (a descriptor of its own)."""
    fd = os.open(lock_file_of(db), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _append_many(path: str, worker: int, count: int, opened: Any, go: Any, results: Any) -> None:
    try:
        recorder = SQLiteRecorder(path, timeout=60)  # opening writes (under the lock): before the test holds it
        opened.wait(60)
        go.wait(60)
        positions = [[e.position for e in recorder.append([tag(f"model-w{worker}", 2 * i),
                                                          tag(f"model-w{worker}", 2 * i + 1)])]
                     for i in range(count)]
        recorder.close()
        results.put((worker, positions, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((worker, None, f"{type(exc).__name__}: {exc}"))


def _hold_write(path: str, holding: Any) -> None:
    """Open a write transaction, append one event, say so, and never finish (stopped or killed by the test)."""
    recorder = SQLiteRecorder(path)
    with recorder.write() as tx:
        tx.append([tag("model-holder", 1)])
        holding.set()
        threading.Event().wait(600)


def test_writer_processes_queued_on_the_lock_file_stay_gapless_and_in_order(db: Path) -> None:
    """Four processes start appending while the lock file is held elsewhere: none gets through (they queue on
    the file, not on SQLite's lock), then all do, each batch consecutive and the log gapless and verified."""
    writers, count = 4, 15
    opened, go, results = SPAWN.Barrier(writers + 1), SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_append_many, args=(str(db), w, count, opened, go, results), daemon=True)
             for w in range(writers)]
    for p in procs:
        p.start()
    opened.wait(120)
    with file_lock_held(db):
        go.set()
        threading.Event().wait(0.5)  # time enough for every writer to reach the lock
        reader = SQLiteRecorder(db, read_only=True)  # opening to write would queue behind the test
        assert reader.head() == 0, "a writer appended while another process held the lock file"
    try:
        reports = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
    assert [error for *_, error in reports if error] == []
    batches = [batch for _, positions, _ in reports for batch in positions]
    assert all(batch == [batch[0], batch[0] + 1] for batch in batches)
    rows = reader.raw_rows()
    assert [r[0] for r in rows] == list(range(1, writers * count * 2 + 1))
    for w in range(writers):
        assert [r[2] for r in rows if r[1] == f"model-w{w}"] == list(range(1, 2 * count + 1))
    assert verify_rows(rows).ok
    reader.close()


def test_a_stopped_holder_makes_the_next_writer_fail_after_its_timeout_and_nothing_is_appended(db: Path) -> None:
    holding = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_write, args=(str(db), holding), daemon=True)
    holder.start()
    impatient = SQLiteRecorder(db, timeout=0.3)
    try:
        assert holding.wait(60)
        os.kill(holder.pid, signal.SIGSTOP)
        with pytest.raises(StoreError, match="stayed locked by another writer.*registry.db-lock"):
            impatient.append([tag("model-a", 1)])
        with pytest.raises(StoreError, match="locked"), impatient.write() as tx:  # a second try: the same
            tx.append([tag("model-a", 1)])
        assert impatient.head() == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
        holder.join(60)
    assert [e.position for e in impatient.append([tag("model-a", 1)])] == [1]
    assert [e.stream for e in impatient.read()] == ["model-a"]  # the holder's uncommitted event is gone
    impatient.close()


def test_a_writer_that_may_not_wait_gives_up_at_once_with_nothing_written(db: Path) -> None:
    """``without_waiting()`` (the HTTP server's event loop): a lock held by another process, another thread of
    this one or a program that takes only SQLite's own lock is refused at once, before anything is written, and leaves the lock free for the next writer;
    a free lock is taken as usual."""
    recorder = SQLiteRecorder(db, timeout=60)
    with file_lock_held(db), without_waiting(), pytest.raises(WouldWait):
        recorder.append([tag("model-a", 1)])
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with recorder.write() as tx:
            tx.append([tag("model-b", 1)])
            holding.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(60)
    with without_waiting(), pytest.raises(WouldWait):
        recorder.append([tag("model-a", 1)])
    done.set()
    holder.join(60)
    assert [e.stream for e in recorder.read()] == ["model-b"]
    other = sqlite3.connect(db, isolation_level=None)  # SQLite's own lock, by a program without the lock file
    other.execute("BEGIN IMMEDIATE")
    with without_waiting(), pytest.raises(WouldWait):
        recorder.append([tag("model-a", 1)])
    other.execute("ROLLBACK")
    other.close()
    with without_waiting():
        assert [e.position for e in recorder.append([tag("model-a", 1)])] == [2]
    recorder.append([tag("model-a", 2)])  # waiting allowed again outside the block
    assert recorder.head() == 3
    recorder.close()


def test_a_killed_holder_does_not_block_the_next_writer(db: Path) -> None:
    holding = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_write, args=(str(db), holding), daemon=True)
    holder.start()
    assert holding.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(60)
    recorder = SQLiteRecorder(db, timeout=10)
    try:
        assert [e.position for e in recorder.append([tag("model-a", 1)])] == [1]
        assert recorder.head() == 1
    finally:
        recorder.close()


def test_threads_of_one_process_append_gapless_and_a_failed_write_frees_the_lock(db: Path) -> None:
    recorder = SQLiteRecorder(db, timeout=0.5)
    with pytest.raises(RuntimeError), recorder.write() as tx:
        tx.append([tag("model-a", 0)])
        raise RuntimeError("the command failed")
    errors: list[str] = []

    def work(t: int) -> None:
        try:
            mine = SQLiteRecorder(db, timeout=60)  # another recorder of the same file, as a server's threads
            for i in range(20):
                (mine if i % 2 else recorder).append([tag(f"model-t{t}", i)])
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []
    rows = recorder.raw_rows()
    assert [r[0] for r in rows] == list(range(1, 121))
    assert verify_rows(rows).ok
    recorder.close()


def test_a_nested_write_in_one_thread_is_refused_at_once(db: Path) -> None:
    """The same connection: refused as before; a second recorder of the same file in the same thread would
    wait for itself: refused at once too, and the outer write still commits."""
    first, second = SQLiteRecorder(db, timeout=30), SQLiteRecorder(db, timeout=30)
    with first.write() as tx:
        tx.append([tag("model-a", 1)])
        with pytest.raises(StoreError, match="nested write"), first.write():
            pass
        with pytest.raises(StoreError, match="nested write"), second.write():
            pass
    assert second.head() == 1
    first.close()
    second.close()


def _write_in_child(path: str, results: Any) -> None:
    try:
        SQLiteRecorder(path, timeout=0.3).append([tag("model-child", 1)])
        results.put("appended")
    except StoreError as exc:
        results.put(f"StoreError: {exc}")


def test_a_forked_child_does_not_share_its_parents_hold(db: Path) -> None:
    """A child forked while its parent holds the lock has a copy of the descriptor (and so of the flock): it
    must still queue behind the parent, not write beside it."""
    recorder = SQLiteRecorder(db)
    results = multiprocessing.get_context("fork").Queue()
    with recorder.write() as tx:
        tx.append([tag("model-parent", 1)])
        child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(str(db), results))
        child.start()
        answer = results.get(timeout=60)
        child.join(60)
    assert answer.startswith("StoreError") and "locked" in answer, answer
    assert [e.stream for e in recorder.read()] == ["model-parent"]
    recorder.close()


@pytest.mark.parametrize(("share", "mode"), [("owner", 0o600), ("group", 0o640)])
def test_the_lock_file_follows_the_homes_permissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     share: str, mode: int) -> None:
    monkeypatch.setenv("MLEDGER_SHARE", share)
    old = os.umask(0o077 if share == "group" else 0o000)  # the umask never decides
    try:
        home = tmp_path / "home"
        make_root(home)
        SQLiteRecorder(home / "registry.db").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(home / "registry.db-lock").st_mode) == mode
    assert stat.S_IMODE(os.stat(home / "registry.db").st_mode) == mode


def test_a_read_only_open_makes_no_lock_file(db: Path) -> None:
    SQLiteRecorder(db).append([tag("model-a", 1)])
    lock_file_of(db).unlink()
    reader = SQLiteRecorder(db, read_only=True)
    try:
        assert reader.head() == 1
        with pytest.raises(StoreError, match="read-only"), reader.write():
            pass
    finally:
        reader.close()
    assert not lock_file_of(db).exists()


def test_a_lock_file_that_cannot_be_used_leaves_writers_to_sqlites_lock(tmp_path: Path) -> None:
    """``registry.db-lock`` is a folder (or any file that cannot be opened): writes go on, excluded by SQLite's
    own lock, as before there was a lock file."""
    db = tmp_path / "registry.db"
    lock_file_of(db).mkdir()
    recorder = SQLiteRecorder(db)
    try:
        assert [e.position for e in recorder.append([tag("model-a", 1)])] == [1]
    finally:
        recorder.close()


def test_many_registries_written_in_one_process_keep_no_lock_file_open(tmp_path: Path) -> None:
    """A long-running process (a server, a test suite) that writes to many registries holds no descriptor of
    their lock files once their recorders are closed, and one per open registry between its writes."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")

    def lock_fds(i: int) -> int:
        mine = os.path.realpath(lock_file_of(tmp_path / f"r{i}" / "registry.db"))
        found = 0
        for fd in fds.iterdir():
            try:
                found += os.readlink(fd) == mine
            except FileNotFoundError:  # the listing's own descriptor, closed since
                pass
        return found

    before = len(list(fds.iterdir()))
    for i in range(40):
        recorder = SQLiteRecorder(tmp_path / f"r{i}" / "registry.db")
        for n in range(3):
            recorder.append([tag("model-a", n)])
        assert lock_fds(i) == 1
        recorder.close()
        assert lock_fds(i) == 0
    assert len(list(fds.iterdir())) == before
    assert all(lock_file_of(tmp_path / f"r{i}" / "registry.db").is_file() for i in range(40))


INTERRUPTED_WHILE_LOCKED_OUT = r"""
import faulthandler, signal, sys, threading, time
faulthandler.dump_traceback_later(45, exit=True)
import signal
# Ctrl-C as an interactive shell gives it: a process started with SIGINT ignored (a background job of a
# shell without job control, as a CI runner may start the suite) inherits that and would never get it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from eventstore.events import NewEvent
from eventstore.sqlite import SQLiteRecorder
recorder = SQLiteRecorder(sys.argv[1], timeout=30)  # opening writes: before the test holds the lock
print("opened", flush=True)
sys.stdin.readline()  # the test holds the lock now
event = NewEvent("model-a", "Tagged", {"name": "a", "version": None, "tags": {"n": "1"}}, meta={"actor": "t"})
def ctrl_c_to_this_thread():
    time.sleep(1.0)  # the main thread waits for the lock file by now
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
threading.Thread(target=ctrl_c_to_this_thread, daemon=True).start()
began = time.monotonic()
try:
    recorder.append([event])
    print("appended while locked out", flush=True)
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - began:.1f}", flush=True)
sys.stdin.readline()  # the test lets the lock go
print("appended", [e.position for e in recorder.append([event])], flush=True)
"""


def test_ctrl_c_handed_to_another_thread_interrupts_a_main_thread_locked_out_and_frees_its_wait(db: Path) -> None:
    """A CLI waiting for another process's write (up to its 30 s timeout) is interrupted by Ctrl-C at once, even
    when the kernel hands the signal to one of its other threads (which does not wake a lock wait in the main
    thread); and the wait it gave up does not keep the lock for nobody when it comes: its next write goes in."""
    import subprocess
    import sys

    from services import reap

    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_WHILE_LOCKED_OUT, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "opened", proc.stderr.read()[-3000:] if proc.poll() else ""
        with file_lock_held(db):
            proc.stdin.write("locked\n")
            proc.stdin.flush()
            first = proc.stdout.readline().split()
            assert first[:1] == ["interrupted"] and float(first[1]) < 10, (first, proc.stderr.read()[-3000:]
                                                                           if proc.poll() is not None else "")
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        reap(proc)
    assert out.strip() == "appended [1]", (out, err[-3000:])
