"""Combining (``eventstore/combining.py``, ``eventstore.handler._run_batch``): commands that threads of one
process run at once share one write transaction and one COMMIT, with the results of running them one by one.

Each test makes a batch for certain: a holder keeps the write lock while the threads arrive one after the
other (the first leads and waits for the lock, the others queue behind it), then lets go; the combiner's
counts show that they were one batch. Both backends, on real databases."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contracts.catalog import BACKENDS

from eventstore import commands as c
from eventstore.combining import MAX_BATCH, combiner_of
from eventstore.errors import ArtifactError, IdempotencyError, NotFoundError, StoreError
from eventstore.handler import Outcome, execute
from eventstore.recorder import Recorder
from eventstore.sqlite import SQLiteRecorder
from eventstore.verify import verify_rows
from projections.catalog import Catalog, CatalogProjection

DIGEST = "sha256:" + "1" * 64


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Recorder, CatalogProjection]]:
    if request.param == "sqlite":
        recorder: Recorder = SQLiteRecorder(tmp_path / "registry.db")
    else:
        from eventstore.postgres import PostgresRecorder

        recorder = PostgresRecorder(request.getfixturevalue("new_postgres_database")())
    try:
        yield recorder, CatalogProjection(recorder)
    finally:
        recorder.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.002)


def in_one_batch(recorder: Recorder, jobs: list[Callable[[], Any]], *, batches: int = 1, later: int = 0) -> list[Any]:
    """Run ``jobs`` each in a thread of its own, arriving in order while the write lock is held elsewhere, so
    that they are combined (into ``batches`` batches); each one's result or exception, in order. ``later``: the
    commands the jobs cause after their own (an ingest's outcome), each in a batch of its own at most."""
    combiner = combiner_of(recorder)
    results: list[Any] = [None] * len(jobs)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with recorder.write():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(60)
    before = combiner.batches, combiner.commands
    threads = []
    for i, job in enumerate(jobs):
        def run(i: int = i, job: Callable[[], Any] = job) -> None:
            try:
                results[i] = job()
            except BaseException as exc:  # noqa: BLE001 - what the caller got, whatever it is
                results[i] = exc

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        if i == 0:
            _until(combiner.leading, "the first caller leads")
        else:
            _until(lambda i=i: combiner.queued() == i, f"caller {i} queued")
    release.set()
    holder.join(60)
    for thread in threads:
        thread.join(120)
    assert combiner.commands - before[1] == len(jobs) + later
    assert batches <= combiner.batches - before[0] <= batches + later
    return results


def run(recorder: Recorder, projection: CatalogProjection, command: c.Command, actor: str = "test",
        **options: Any) -> Callable[[], Outcome]:
    return lambda: execute(recorder, projection, command, {"actor": actor}, **options)


def seeded(backend: tuple[Recorder, CatalogProjection]) -> tuple[Recorder, CatalogProjection, int]:
    recorder, projection = backend
    execute(recorder, projection, c.Register("m", {"source": "s", "digest": DIGEST, "size": 1}), {"actor": "test"})
    return recorder, projection, recorder.head()


def shape(events: list[Any]) -> list[tuple]:
    return [(e.stream, e.version, e.type, e.data, e.meta.get("actor")) for e in events]


def test_a_batch_decides_each_command_after_the_ones_before_it_as_one_by_one_would(backend, tmp_path: Path) -> None:
    """A tag of a version registered earlier in the same batch, an alias moved twice: the log holds what the
    same commands run one by one append, positions gapless in the batch's order, each command's events once."""
    recorder, projection, head = seeded(backend)
    commands = [c.Tag("m@1", {"a": "1"}), c.AssignAlias("m@1", "production"),
                c.Register("m", {"source": "s2", "digest": DIGEST, "size": 1}, params={"lr": 0.1}),
                c.Tag("m@2", {"b": "2"}), c.AssignAlias("m@2", "production"), c.RollbackAlias("m", "production"),
                c.Delete("m@2")]
    outcomes = in_one_batch(recorder, [run(recorder, projection, cmd) for cmd in commands])

    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    appended = list(recorder.read(since=head))
    assert [e.position for e in appended] == list(range(head + 1, head + 1 + len(appended)))
    assert [e for o in outcomes for e in o.events] == appended
    alone = SQLiteRecorder(tmp_path / "alone.db")
    alone_projection = CatalogProjection(alone)
    execute(alone, alone_projection, c.Register("m", {"source": "s", "digest": DIGEST, "size": 1}), {"actor": "test"})
    for cmd in commands:
        execute(alone, alone_projection, cmd, {"actor": "test"})
    assert shape(appended) == shape(list(alone.read(since=head)))
    alone.close()
    catalog = Catalog(projection)
    assert catalog.get("m@2").tags == {"b": "2"} and catalog.get("m@2").deleted
    assert catalog.get("m@production").version == 1
    assert verify_rows(recorder.raw_rows()).ok


def test_each_command_of_a_batch_is_recorded_with_its_own_callers_meta(backend) -> None:
    recorder, projection, head = seeded(backend)
    outcomes = in_one_batch(recorder, [run(recorder, projection, c.Tag("m@1", {"who": name}), actor=name)
                                       for name in ("alice", "bob", "carol")])
    assert [[e.meta["actor"] for e in o.events] for o in outcomes] == [["alice"], ["bob"], ["carol"]]
    assert [(e.data["tags"], e.meta["actor"]) for e in recorder.read(since=head)] == [
        ({"who": "alice"}, "alice"), ({"who": "bob"}, "bob"), ({"who": "carol"}, "carol")]


def test_a_key_repeated_in_a_batch_replays_the_first_result_and_a_mismatch_fails_alone(backend) -> None:
    recorder, projection, head = seeded(backend)
    outcomes = in_one_batch(recorder, [
        run(recorder, projection, c.Tag("m@1", {"x": "1"}), idempotency_key="k"),
        run(recorder, projection, c.Tag("m@1", {"x": "1"}), idempotency_key="k"),
        run(recorder, projection, c.Tag("m@1", {"x": "2"}), idempotency_key="k"),
        run(recorder, projection, c.Tag("m@1", {"y": "1"}), idempotency_key="other"),
    ])
    first, again, mismatch, other = outcomes
    assert not first.replayed and again.replayed and again.events == first.events
    assert isinstance(mismatch, IdempotencyError)
    assert not other.replayed
    assert [e.data["tags"] for e in recorder.read(since=head)] == [{"x": "1"}, {"y": "1"}]


def test_a_command_refused_before_appending_gets_its_own_error_and_the_batch_goes_on(backend) -> None:
    """A decider's refusal, a ``check``'s refusal, and a ``check`` that fails unexpectedly (which runs the
    batch's commands alone): each fails for its caller only."""
    recorder, projection, head = seeded(backend)

    def refuse(tx: Any) -> None:
        raise ArtifactError("the blobs are gone")

    def broken(tx: Any) -> None:
        raise RuntimeError("a bug in a check")

    outcomes = in_one_batch(recorder, [
        run(recorder, projection, c.Tag("m@1", {"a": "1"})),
        run(recorder, projection, c.Tag("nosuch@1", {"a": "1"})),
        run(recorder, projection, c.Tag("m@1", {"b": "1"}), check=refuse),
        run(recorder, projection, c.Tag("m@1", {"c": "1"})),
    ])
    assert isinstance(outcomes[1], NotFoundError) and isinstance(outcomes[2], ArtifactError)
    assert [e.data["tags"] for e in recorder.read(since=head)] == [{"a": "1"}, {"c": "1"}]

    head = recorder.head()
    outcomes = in_one_batch(recorder, [
        run(recorder, projection, c.Tag("m@1", {"d": "1"})),
        run(recorder, projection, c.Tag("m@1", {"e": "1"}), check=broken),
        run(recorder, projection, c.Tag("m@1", {"f": "1"})),
    ])
    assert isinstance(outcomes[1], RuntimeError)
    assert sorted(str(e.data["tags"]) for e in recorder.read(since=head)) == ["{'d': '1'}", "{'f': '1'}"]
    assert verify_rows(recorder.raw_rows()).ok


def test_a_failure_after_appending_rolls_the_batch_back_and_runs_each_command_alone(backend) -> None:
    """A bug in one command's ``finish`` (after its events were appended and folded): that caller gets it and
    its events are not kept; the others' commands are recorded once each, and the catalog agrees."""
    recorder, projection, head = seeded(backend)

    def bug(tx: Any, outcome: Outcome) -> Any:
        raise RuntimeError("a bug after the append")

    outcomes = in_one_batch(recorder, [
        run(recorder, projection, c.Tag("m@1", {"a": "1"})),
        run(recorder, projection, c.Tag("m@1", {"b": "1"}), finish=bug),
        run(recorder, projection, c.Tag("m@1", {"c": "1"})),
    ])
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[0], Outcome) and isinstance(outcomes[2], Outcome)
    appended = list(recorder.read(since=head))
    assert sorted(str(e.data["tags"]) for e in appended) == ["{'a': '1'}", "{'c': '1'}"]
    assert [e.position for e in appended] == [head + 1, head + 2]
    assert sorted(e.position for o in (outcomes[0], outcomes[2]) for e in o.events) == [head + 1, head + 2]
    assert Catalog(projection).get("m@1").tags == {"a": "1", "c": "1"}
    assert verify_rows(recorder.raw_rows()).ok


def test_a_commit_that_fails_fails_every_caller_of_the_batch_and_records_nothing(backend) -> None:
    """A statement that fails only at COMMIT (a deferred foreign key, broken by one command's ``check``): the
    batch's callers all get the error; nothing of the batch is in the log."""
    recorder, projection, head = seeded(backend)
    sqlite = isinstance(recorder, SQLiteRecorder)

    def breaks_the_commit(tx: Any) -> None:
        tx.connection.execute("CREATE TEMP TABLE combining_fk (id INTEGER PRIMARY KEY, ref INTEGER"
                              " REFERENCES combining_fk (id) DEFERRABLE INITIALLY DEFERRED)")
        tx.connection.execute("INSERT INTO combining_fk (id, ref) VALUES (1, 2)")

    def leader() -> Outcome:
        if sqlite:  # SQLite checks foreign keys only where asked to (per connection, outside a transaction)
            recorder.connection().execute("PRAGMA foreign_keys = ON")
        return execute(recorder, projection, c.Tag("m@1", {"a": "1"}), {"actor": "test"})

    outcomes = in_one_batch(recorder, [
        leader,
        run(recorder, projection, c.Tag("m@1", {"b": "1"}), check=breaks_the_commit),
        run(recorder, projection, c.Tag("m@1", {"c": "1"})),
    ])
    assert all(isinstance(o, StoreError) for o in outcomes), outcomes
    # The reason, where the driver kept it: psycopg 3.3 drops the server's message when it arrives in the same
    # read as the Sync's result (eventstore.postgres._lost_commit_error), and says so.
    assert all("foreign key" in str(o).lower() or (not sqlite and "refused the commit" in str(o))
               for o in outcomes), outcomes
    assert recorder.head() == head
    assert Catalog(projection).get("m@1").tags == {}
    if sqlite:
        recorder.connection().execute("PRAGMA foreign_keys = OFF")


def test_a_batch_holds_at_most_the_cap_and_the_next_caller_leads_the_rest(backend) -> None:
    recorder, projection, head = seeded(backend)
    count = MAX_BATCH + 6
    outcomes = in_one_batch(recorder, [run(recorder, projection, c.Tag("m@1", {"n": str(n)}))
                                       for n in range(count)], batches=2)
    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    assert [e.data["tags"]["n"] for e in recorder.read(since=head)] == [str(n) for n in range(count)]


def test_a_lone_command_is_a_batch_of_one(backend) -> None:
    recorder, projection, head = seeded(backend)
    combiner = combiner_of(recorder)
    before = combiner.batches, combiner.commands
    execute(recorder, projection, c.Tag("m@1", {"a": "1"}), {"actor": "test"})
    assert (combiner.batches - before[0], combiner.commands - before[1]) == (1, 1)
    assert recorder.head() == head + 1


KILLED_MID_BATCH = r"""
import sys, threading, time
from eventstore import commands as c
from eventstore.combining import combiner_of
from eventstore.handler import execute
from projections.catalog import CatalogProjection

location = sys.argv[1]
if location.startswith("postgresql://"):
    from eventstore.postgres import PostgresRecorder
    recorder = PostgresRecorder(location)
else:
    from eventstore.sqlite import SQLiteRecorder
    recorder = SQLiteRecorder(location)
projection = CatalogProjection(recorder)
combiner = combiner_of(recorder)

def last(tx, outcome):
    # the batch's last command: every command of it appended and folded, the COMMIT not yet made
    print("appended", tx.head(), flush=True)
    time.sleep(600)

def until(condition):
    while not condition():
        time.sleep(0.002)

held, release = threading.Event(), threading.Event()
def hold():
    with recorder.write():
        held.set()
        release.wait()
threading.Thread(target=hold, daemon=True).start()
held.wait()
for n in range(4):
    threading.Thread(target=execute, args=(recorder, projection, c.Tag("m@1", {"n": str(n)}), {"actor": "t"}),
                     kwargs={"finish": last} if n == 3 else {}, daemon=True).start()
    until(combiner.leading if n == 0 else (lambda: combiner.queued() == n))
release.set()
time.sleep(600)
"""


def test_a_process_killed_mid_batch_leaves_nothing_of_the_batch(backend, tmp_path: Path) -> None:
    """SIGKILL once every command of a batch appended and folded, before its COMMIT: none of the batch is in
    the log or the catalog, the chain verifies, and the next command goes through."""
    import os
    import signal
    import subprocess
    import sys

    from services import reap

    recorder, projection, head = seeded(backend)
    location = str(tmp_path / "registry.db") if isinstance(recorder, SQLiteRecorder) else recorder.url
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_BATCH, location], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["appended"], proc.stderr.read()[-3000:] if proc.poll() is not None else line
        assert int(line[1]) == head + 4  # the batch's four tags were in its transaction
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        reap(proc)
    assert recorder.head() == head
    assert Catalog(projection).get("m@1").tags == {}
    assert verify_rows(recorder.raw_rows()).ok
    execute(recorder, projection, c.Tag("m@1", {"after": "1"}), {"actor": "test"})
    assert Catalog(projection).get("m@1").tags == {"after": "1"} and recorder.head() == head + 1


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Where a ``Registry`` keeps its log: its home's SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield None
        return
    from contracts.databases import registry_schema

    with registry_schema(request.getfixturevalue("shared_postgres_database")) as url:
        yield url


def test_registry_callers_sharing_a_batch_each_get_their_own_version_and_actor(database, tmp_path: Path,
                                                                                monkeypatch) -> None:
    """What the HTTP server does: one registry, each request as its token's holder (``acting_as``), at once.
    Registers whose small artifacts are written by their command's transaction, and tags, in one batch:
    each caller gets its own version, ready, with its bytes; each event names its own caller."""
    from modelledger import Registry

    for var in ("MLEDGER_ARTIFACTS", "MLEDGER_BROKER", "MLEDGER_SOURCES", "MLEDGER_DATABASE", "MLEDGER_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    files = []
    for n in range(2):
        files.append(tmp_path / f"model{n}.bin")
        files[-1].write_bytes(b"weights %d" % n)
    with Registry.open(tmp_path / "home", actor="setup", database=database) as reg:
        reg.register("m", files[0])
        head = reg.head()
        jobs = [lambda: reg.acting_as("alice", "http").tag("m@1", {"by": "alice"}),
                lambda: reg.acting_as("bob", "http").register("m", files[0], params={"by": "bob"}),
                lambda: reg.acting_as("carol", "http").register("m", files[1], params={"by": "carol"}),
                lambda: reg.acting_as("dave", "http").tag("m@2", {"by": "dave"})]
        results = in_one_batch(reg.recorder, jobs)
        assert not any(isinstance(r, BaseException) for r in results), results
        bob, carol = results[1], results[2]
        assert (bob.version, bob.status, bob.params) == (2, "ready", {"by": "bob"})
        assert (carol.version, carol.status, carol.params) == (3, "ready", {"by": "carol"})
        assert reg.get("m@2").tags == {"by": "dave"} and reg.get("m@1").tags == {"by": "alice"}
        actors = [(e.type, e.meta["actor"]) for e in reg.log(since=head)]
        assert actors == [("Tagged", "alice"), ("VersionRegistered", "bob"), ("ArtifactStored", "bob"),
                          ("VersionRegistered", "carol"), ("ArtifactStored", "carol"), ("Tagged", "dave")]
        for n, version in enumerate((bob, carol)):
            reg.pull(version, str(tmp_path / f"pulled{n}"))
            assert (tmp_path / f"pulled{n}").read_bytes() == files[n].read_bytes()
        assert reg.audit().ok


INTERRUPTED_IN_THE_QUEUE = r"""
import faulthandler, sys, threading, time
faulthandler.dump_traceback_later(45, exit=True)  # a hang shows every thread's stack, before the test's timeout
import signal
# Ctrl-C as an interactive shell gives it: a process started with SIGINT ignored (a background job of a
# shell without job control, as a CI runner may start the suite) inherits that and would never get it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from eventstore import commands as c
from eventstore.combining import combiner_of
from eventstore.handler import execute
from eventstore.sqlite import SQLiteRecorder
from projections.catalog import CatalogProjection

recorder = SQLiteRecorder(sys.argv[1])
projection = CatalogProjection(recorder)
combiner = combiner_of(recorder)
held, release = threading.Event(), threading.Event()
def hold():
    with recorder.write():
        held.set()
        release.wait()
threading.Thread(target=hold, daemon=True).start()
held.wait()
leader = threading.Thread(target=execute, args=(recorder, projection, c.Tag("m@1", {"by": "leader"}), {"actor": "t"}))
leader.start()
while not combiner.leading():
    time.sleep(0.002)
def announce():
    while combiner.queued() != 1:
        time.sleep(0.002)
    print("queued", flush=True)
    if "--to-another-thread" in sys.argv:  # the Ctrl-C handed by the kernel to another thread than the main
        import signal
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
threading.Thread(target=announce, daemon=True).start()
try:
    execute(recorder, projection, c.Tag("m@1", {"by": "main"}), {"actor": "t"})
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", combiner.queued(), flush=True)
release.set()
leader.join()
execute(recorder, projection, c.Tag("m@1", {"after": "1"}), {"actor": "t"})
print("after", recorder.head(), flush=True)
"""


@pytest.mark.parametrize("delivered_to", ["process", "another thread"])
def test_a_caller_interrupted_while_queued_leaves_the_queue_and_the_others_go_on(delivered_to: str,
                                                                                 tmp_path: Path) -> None:
    """Ctrl-C in a thread queued behind a leader (a CLI's main thread beside its embedded worker's): that
    command is not run, and the process's next commands are not left waiting for it — also when the kernel
    hands the signal to another thread than the main one (which does not wake a lock wait in the main thread)."""
    import signal
    import subprocess
    import sys

    from services import reap

    recorder = SQLiteRecorder(tmp_path / "r.db")
    recorder, _, head = seeded((recorder, CatalogProjection(recorder)))
    recorder.close()
    argv = [sys.executable, "-c", INTERRUPTED_IN_THE_QUEUE, str(tmp_path / "r.db")]
    if delivered_to == "another thread":
        argv.append("--to-another-thread")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "queued", proc.stderr.read()[-3000:] if proc.poll() else ""
        if delivered_to == "process":
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert out.split("\n")[:2] == ["interrupted 0", f"after {head + 2}"], (out, err[-3000:])
    reopened = SQLiteRecorder(tmp_path / "r.db")
    assert [e.data["tags"] for e in reopened.read(since=head)] == [{"by": "leader"}, {"after": "1"}]
    reopened.close()


def test_what_a_registry_does_after_the_commit_stays_each_callers_own(database, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Two undeletes of versions whose bytes gc purged, in one batch: each caller, after the batch's COMMIT,
    sends its own version's ingest and waits for it (``Registry._dispatch``), and both come back ready with
    their bytes."""
    from modelledger import Registry

    for var in ("MLEDGER_ARTIFACTS", "MLEDGER_BROKER", "MLEDGER_SOURCES", "MLEDGER_DATABASE", "MLEDGER_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.bin")
        files[-1].write_bytes(b"bytes of " + name.encode())
    with Registry.open(tmp_path / "home", actor="setup", database=database) as reg:
        for name, path in zip(("a", "b"), files, strict=True):
            reg.register(name, path)
            reg.delete(f"{name}@1")
        reg.gc(grace_seconds=0)
        assert {reg.get("a@1").status, reg.get("b@1").status} == {"purged"}
        head = reg.head()
        results = in_one_batch(reg.recorder, [lambda: reg.acting_as("alice", "http").undelete("a@1"),
                                              lambda: reg.acting_as("bob", "http").undelete("b@1")], later=2)
        assert not any(isinstance(r, BaseException) for r in results), results
        # the batch's undeletes first (each with its request for the bytes), then the two ingests' outcomes
        after = [(e.type, e.data["name"]) for e in reg.log(since=head)]
        assert after[-2:] in ([("ArtifactStored", "a"), ("ArtifactStored", "b")],
                              [("ArtifactStored", "b"), ("ArtifactStored", "a")]), after
        assert all(t != "ArtifactStored" for t, _ in after[:-2]), after
        for n, name in enumerate(("a", "b")):
            version = reg.get(f"{name}@1")
            assert (version.status, version.deleted) == ("ready", False)
            reg.pull(version, str(tmp_path / f"pulled-{name}"))
            assert (tmp_path / f"pulled-{name}").read_bytes() == files[n].read_bytes()


def test_a_caller_that_may_not_wait_is_refused_at_once_while_another_thread_leads(backend) -> None:
    """The HTTP server runs a lone small write on its event loop inside ``without_waiting``: finding another
    thread's batch under way, it must get ``WouldWait`` at once with nothing written (and then run in a worker
    thread), never a place in the queue, which would stall every request of the process."""
    from eventstore.writelock import WouldWait, without_waiting

    recorder, projection, _ = seeded(backend)
    combiner = combiner_of(recorder)
    entered, release = threading.Event(), threading.Event()

    def slow_check(tx: Any) -> None:
        entered.set()
        release.wait(60)

    leader = threading.Thread(target=lambda: execute(recorder, projection, c.Tag("m@1", {"slow": "1"}),
                                                     {"actor": "leader"}, check=slow_check))
    leader.start()
    try:
        assert entered.wait(60)
        head = recorder.head()
        # Queued, it would sleep until the leader is released (below, after this): refused, it returns now.
        with without_waiting(), pytest.raises(WouldWait):
            execute(recorder, projection, c.Tag("m@1", {"loop": "1"}), {"actor": "loop"})
        assert recorder.head() == head
        assert combiner.queued() == 0
    finally:
        release.set()
        leader.join(60)
    tags = Catalog(projection).get("m@1").tags
    assert tags.get("slow") == "1" and "loop" not in tags


# -- an interrupt at any bytecode gives back what the caller held ------------------------------------------

def _run_batch_of_results(calls: list, take: Callable[[], list]) -> None:
    take()
    for call in calls:
        call.done(outcome=call.args)


class _AppendThenInterrupt(collections.deque):
    """A queue whose append is interrupted just after it (a SIGINT landing between the append and the wait)."""

    def append(self, call: Any) -> None:
        super().append(call)
        raise KeyboardInterrupt


def test_an_interrupt_right_after_queueing_does_not_leave_the_process_waiting_forever() -> None:
    """Ctrl-C may land at any bytecode, also between a caller's place in the queue and its wait (a CI run hung
    there for 60 s): the place is given back, the leader's batch ends, and the next command runs."""
    from eventstore.combining import Call, Combiner

    combiner = Combiner()
    entered, release = threading.Event(), threading.Event()

    def slow_batch(calls: list, take: Callable[[], list]) -> None:
        entered.set()
        release.wait(10)
        _run_batch_of_results(calls, take)

    leader = threading.Thread(target=combiner.run, args=(Call("first"), slow_batch, lambda: "alone"))
    leader.start()
    assert entered.wait(10)
    combiner._queue = _AppendThenInterrupt(combiner._queue)  # noqa: SLF001 - the race made deterministic
    with pytest.raises(KeyboardInterrupt):
        combiner.run(Call("interrupted"), _run_batch_of_results, lambda: "alone")
    assert combiner.queued() == 0
    combiner._queue = collections.deque()  # noqa: SLF001
    release.set()
    leader.join(10)
    assert not leader.is_alive()
    done: list[Any] = []
    after = threading.Thread(target=lambda: done.append(combiner.run(Call("after"), _run_batch_of_results,
                                                                     lambda: "alone")))
    after.start()
    after.join(10)
    assert done == ["after"] and not combiner.leading()


def test_an_interrupt_after_taking_the_lead_hands_it_on() -> None:
    """The same for a caller that took the lead and was interrupted before its batch began: the lead goes to
    the next queued caller (or to nobody), never stays with a caller that has gone."""
    from eventstore.combining import Call, Combiner

    class InterruptedLeader(Combiner):
        def _lead(self, call: Any, batch: Any) -> None:
            if call.args == "interrupted":
                raise KeyboardInterrupt
            super()._lead(call, batch)

    combiner = InterruptedLeader()
    with pytest.raises(KeyboardInterrupt):
        combiner.run(Call("interrupted"), _run_batch_of_results, lambda: "alone")
    assert not combiner.leading()
    assert combiner.run(Call("next"), _run_batch_of_results, lambda: "alone") == "next"
