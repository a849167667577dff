"""The recorder contract: what every backend of the log must do, as one suite of tests.

After eventsourcing's shared recorder test cases (``eventsourcing/tests/persistence.py``): a backend's test
module subclasses ``RecorderContract`` as ``Test<Backend>Recorder``, gives it a ``location`` fixture (a fresh,
empty store) and the few hooks below, and inherits every test. A backend is done when it passes the suite.

The hooks reach the database *beside* the recorder (raw SQL on a separate driver connection, a write lock
held by someone else), because the guarantees tested here are the database's, not the Python code's: the
append-only guards refuse an UPDATE from any client, and a writer waits for another writer's lock.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore.canonical import GENESIS_HASH, chain_hash, envelope_for_hash
from eventstore.errors import ConcurrencyError, IdempotencyError, IntegrityError, StoreError, ValidationError
from eventstore.events import NewEvent
from eventstore.recorder import Recorder
from eventstore.verify import check_log, verify_rows

# A store's location as its backend names it: a file path for SQLite, a URL for PostgreSQL.
Location = Any
Opener = Callable[[], Recorder]

WRITERS = 4          # writer processes
BATCHES = 12         # batches per writer
BATCH_SIZE = 5       # events per batch


def tag(stream: str, n: int, key: str | None = None, **extra: Any) -> NewEvent:
    """A Tagged event; under an idempotency ``key`` its meta says so, as every keyed batch must."""
    meta: dict[str, Any] = {"actor": "contract@test"}
    if key is not None:
        meta["idempotency_key"] = key
    return NewEvent(stream, "Tagged", {"name": stream.removeprefix("model-"), "version": None,
                                       "tags": {"n": str(n)}, **extra}, meta=meta)


def _writer(opener: Opener, worker: int, ready: Any, results: Any, path: str = "append") -> None:
    """One writer process: open the store, wait for the others, append its batches, report their positions.
    ``path``: ``append`` (``Recorder.append``) or ``write_batched`` (a command's transaction: the stream's
    version and the head read in it, the append checked against the version read)."""
    try:
        recorder = opener()
        try:
            ready.wait(60)
            positions = []
            for b in range(BATCHES):
                batch = [tag(f"model-w{worker}", b * BATCH_SIZE + i) for i in range(BATCH_SIZE)]
                if path == "append":
                    stored = recorder.append(batch)
                else:
                    with recorder.write_batched() as tx:
                        tx.prefetch(streams=[f"model-w{worker}"])
                        at = tx.stream_version(f"model-w{worker}")
                        stored = tx.append(batch, expected={f"model-w{worker}": at})
                positions.append([e.position for e in stored])
            results.put((worker, recorder.registry_id, positions, None))
        finally:
            recorder.close()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
        results.put((worker, None, None, f"{type(exc).__name__}: {exc}"))


class RecorderContract(ABC):
    """Inherited by ``Test<Backend>Recorder``; not collected itself (no ``Test`` prefix)."""

    #: the module whose ``utc_now`` the append reads (patched to make the wall clock step back)
    backend_module: ModuleType
    #: statements any client might try; each must be refused by the database and change nothing
    refused_statements: tuple[str, ...] = (
        "UPDATE events SET data = '{}' WHERE position = 2",
        "UPDATE events SET recorded_at = '1970-01-01T00:00:00.000000Z'",
        "DELETE FROM events WHERE position = 1",
        "DELETE FROM events",
        "UPDATE idempotency SET first_position = 99",
        "DELETE FROM idempotency",
    )

    # -- hooks ------------------------------------------------------------------------------------------
    @pytest.fixture
    def location(self) -> Location:
        """A fresh, empty store (each test its own)."""
        raise NotImplementedError

    @abstractmethod
    def opener(self, location: Location, *, lock_timeout: float | None = None) -> Opener:
        """A picklable zero-argument callable that opens a recorder on ``location`` (also in a child process).
        ``lock_timeout``: how long a write waits for another writer's lock before it gives up."""

    @abstractmethod
    def raw_execute(self, location: Location, sql: str) -> list[tuple]:
        """Run ``sql`` on a new driver connection of its own (autocommit) and return its rows; the driver's
        own exception propagates."""

    @abstractmethod
    def hold_write_lock(self, location: Location) -> AbstractContextManager[None]:
        """Another client holding the log's write lock for the duration of the block."""

    @abstractmethod
    def unreachable(self, tmp_path: Path) -> Opener:
        """An opener for a store that cannot be reached (no server there, a folder that cannot exist)."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "refused_sql" in metafunc.fixturenames:
            metafunc.parametrize("refused_sql", metafunc.cls.refused_statements)

    @pytest.fixture
    def recorder(self, location: Location) -> Iterator[Recorder]:
        recorder = self.opener(location)()
        try:
            yield recorder
        finally:
            recorder.close()

    @pytest.fixture
    def populated(self, recorder: Recorder) -> Recorder:
        """Two streams, a few batches, one with an idempotency key."""
        recorder.append([tag("model-a", 1), tag("model-a", 2)])
        recorder.append([tag("model-b", 1, "k-b")], idempotency_key="k-b", fingerprint="f")
        recorder.append([tag("model-a", 3), tag("model-b", 2), tag("model-a", 4)])
        return recorder

    # -- an empty store ---------------------------------------------------------------------------------
    def test_an_empty_store_has_no_events(self, recorder: Recorder) -> None:
        assert recorder.head() == 0
        assert list(recorder.read()) == []
        assert recorder.raw_rows() == []
        assert recorder.event_at(1) is None
        assert recorder.position_at("2999-01-01T00:00:00Z") == 0
        assert recorder.stream_version("model-a") == 0

    # -- positions --------------------------------------------------------------------------------------
    @pytest.mark.parametrize("path", ["append", "write_batched"])
    def test_positions_are_gapless_and_in_commit_order_under_writer_processes(
        self, location: Location, recorder: Recorder, path: str
    ) -> None:
        """N processes append batches at once while this one tails the log: every batch gets consecutive
        positions, all batches together cover 1..total with no gap, and a reader following the log never
        sees a position before an earlier one is visible (which it would if positions were handed out in
        another order than commits). The same through a command's batched transaction."""
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Barrier(WRITERS + 1)
        results = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(self.opener(location), w, ready, results, path), daemon=True)
                 for w in range(WRITERS)]
        for p in procs:
            p.start()
        total = WRITERS * BATCHES * BATCH_SIZE
        reports = []
        try:
            ready.wait(120)
            seen = 0
            deadline = time.monotonic() + 240
            while seen < total and (any(p.is_alive() for p in procs) or seen < recorder.head()):
                assert time.monotonic() < deadline, f"the writers stalled at position {seen} of {total}"
                for event in recorder.read(since=seen):
                    assert event.position == seen + 1, f"a reader following the log saw {event.position} after {seen}"
                    seen = event.position
                time.sleep(0.001)  # leave the two cores to the writers
            for _ in procs:
                reports.append(results.get(timeout=120))
        except (queue.Empty, Exception):
            for p in procs:
                p.kill()
            raise
        finally:
            for p in procs:
                p.join(60)
        errors = [error for *_, error in reports if error]
        assert not errors, errors
        assert seen == total
        assert {registry_id for _, registry_id, _, _ in reports} == {recorder.registry_id}
        batches = [batch for *_, positions, _ in reports for batch in positions]
        for batch in batches:
            assert batch == list(range(batch[0], batch[0] + BATCH_SIZE)), f"batch interleaved: {batch}"
        assert sorted(p for batch in batches for p in batch) == list(range(1, total + 1))
        rows = recorder.raw_rows()
        assert [r[0] for r in rows] == list(range(1, total + 1))
        for w in range(WRITERS):
            versions = [r[2] for r in rows if r[1] == f"model-w{w}"]
            assert versions == list(range(1, BATCHES * BATCH_SIZE + 1))
        assert verify_rows(rows).ok

    def test_a_rolled_back_write_leaves_no_gap(self, recorder: Recorder) -> None:
        recorder.append([tag("model-a", 1)])
        with pytest.raises(RuntimeError), recorder.write() as tx:
            assert [e.position for e in tx.append([tag("model-a", 2), tag("model-a", 3)])] == [2, 3]
            raise RuntimeError("the command failed after appending")
        assert recorder.head() == 1
        assert [e.position for e in recorder.append([tag("model-a", 4)])] == [2]
        assert verify_rows(recorder.raw_rows()).ok

    # -- expected versions, atomic batches --------------------------------------------------------------
    def test_a_stale_expected_version_is_a_conflict_and_appends_nothing(self, populated: Recorder) -> None:
        at = populated.stream_version("model-a")
        head = populated.head()
        with pytest.raises(ConcurrencyError):
            populated.append([tag("model-a", 9), tag("model-b", 9)], expected={"model-a": at - 1})
        assert populated.head() == head
        stored = populated.append([tag("model-a", 9)], expected={"model-a": at})
        assert (stored[0].position, stored[0].version) == (head + 1, at + 1)
        with pytest.raises(ConcurrencyError):
            populated.append([tag("model-new", 1)], expected={"model-new": 1})
        assert populated.append([tag("model-new", 1)], expected={"model-new": 0})[0].version == 1

    def test_a_failing_batch_appends_nothing(self, populated: Recorder) -> None:
        head, rows = populated.head(), populated.raw_rows()
        bad = [tag("model-a", 10), tag("model-b", 10), tag("model-a", 11, score=math.nan)]
        with pytest.raises(ValidationError):
            populated.append(bad)
        with pytest.raises(ValidationError), populated.write() as tx:
            tx.append(bad[:2])
            tx.append(bad[2:])
        assert populated.raw_rows() == rows
        stored = populated.append(bad[:2])
        assert [e.position for e in stored] == [head + 1, head + 2]
        assert verify_rows(populated.raw_rows()).ok

    def test_a_transaction_reads_its_own_appends(self, populated: Recorder) -> None:
        head = populated.head()
        with populated.write() as tx:
            assert tx.head() == head
            stored = tx.append([tag("model-a", 20), tag("model-c", 1)])
            assert tx.head() == head + 2
            assert tx.stream_version("model-c") == 1
            assert [e.position for e in tx.read(since=head)] == [head + 1, head + 2]
            assert [e.hash for e in tx.read(since=head, limit=1)] == [stored[0].hash]
            again = tx.append([tag("model-c", 2)])
            assert (again[0].position, again[0].version) == (head + 3, 2)
        assert [e.to_json() for e in populated.read(since=head)] == [e.to_json() for e in [*stored, *again]]

    def test_a_batched_write_has_the_guarantees_of_a_write(self, populated: Recorder) -> None:
        """``write_batched`` (a command's transaction; PostgreSQL sends its statements in a pipeline): reads
        see its own appends, a stale expected version (also one prefetched) appends nothing, an exception
        rolls everything back without a gap, the key's first result comes back, and what returned is
        committed."""
        head = populated.head()
        at_a, at_b = populated.stream_version("model-a"), populated.stream_version("model-b")
        with populated.write_batched() as tx:
            tx.prefetch(streams=["model-a", "model-c"], idempotency_key="k-b")
            assert tx.head() == head
            assert [e.position for e in tx.idempotent_result("k-b", "f") or []] == [3]
            assert tx.stream_version("model-a") == at_a and tx.stream_version("model-c") == 0
            stored = tx.append([tag("model-a", 40), tag("model-c", 1)], expected={"model-a": at_a, "model-c": 0})
            assert tx.head() == head + 2 and tx.stream_version("model-c") == 1
            assert [e.position for e in tx.read(since=head)] == [head + 1, head + 2]
        assert [e.to_json() for e in populated.read(since=head)] == [e.to_json() for e in stored]
        head += 2
        for failure in (ConcurrencyError, RuntimeError):
            with pytest.raises(failure), populated.write_batched() as tx:
                tx.prefetch(streams=["model-b"])
                assert tx.stream_version("model-b") == at_b
                tx.append([tag("model-b", 41), tag("model-d", 1)], expected={"model-b": at_b - 1}
                          if failure is ConcurrencyError else {"model-b": at_b})
                raise RuntimeError("the command failed after appending")
            assert populated.head() == head
        with pytest.raises(ValidationError), populated.write_batched() as tx:
            tx.append([tag("model-a", 42)])
            tx.append([tag("model-a", 43, score=math.nan)])
        assert populated.head() == head
        assert [e.position for e in populated.append([tag("model-b", 41)], expected={"model-b": at_b})] == [head + 1]
        assert verify_rows(populated.raw_rows()).ok

    def test_a_batched_write_waits_for_the_lock_and_gives_up_with_a_store_error(
        self, location: Location, populated: Recorder
    ) -> None:
        impatient = self.opener(location, lock_timeout=0.2)()
        try:
            head = populated.head()
            with self.hold_write_lock(location):
                with pytest.raises(StoreError, match="locked"), impatient.write_batched() as tx:
                    tx.prefetch(streams=["model-a"])
                    tx.append([tag("model-a", 71)])
                assert impatient.head() == head
            with impatient.write_batched() as tx:
                assert tx.append([tag("model-a", 71)])[0].position == head + 1
        finally:
            impatient.close()

    def test_a_read_snapshot_does_not_see_later_commits(self, location: Location, populated: Recorder) -> None:
        head = populated.head()
        other = self.opener(location)()
        try:
            with populated.read_snapshot():
                assert populated.head() == head
                other.append([tag("model-a", 25)])
                assert other.head() == head + 1
                assert populated.head() == head
                assert [e.position for e in populated.read(since=head - 1)] == [head]
            assert populated.head() == head + 1
        finally:
            other.close()

    # -- idempotency ------------------------------------------------------------------------------------
    def test_an_idempotency_key_with_the_same_request_returns_the_first_result(self, populated: Recorder) -> None:
        first = populated.append([tag("model-a", 30, "K"), tag("model-a", 31, "K")], idempotency_key="K", fingerprint="f1")
        head = populated.head()
        again = populated.append([tag("model-a", 30, "K"), tag("model-a", 31, "K")], idempotency_key="K", fingerprint="f1")
        assert [e.to_json() for e in again] == [e.to_json() for e in first]
        assert populated.head() == head
        with populated.write() as tx:
            assert [e.position for e in tx.idempotent_result("K", "f1") or []] == [e.position for e in first]
            assert tx.idempotent_result("unknown", "f1") is None

    def test_a_committed_keys_first_result_is_read_while_another_writer_holds_the_lock(
            self, populated: Recorder, location: Location) -> None:
        """``Recorder.recorded_result``: the look-up a retry makes before it ingests anything reads a committed
        key's batch without the writer lock, so it neither waits for a writer nor holds one up; a different
        request under the key is refused there too."""
        first = populated.append([tag("model-a", 50, "R")], idempotency_key="R", fingerprint="f1")
        with self.hold_write_lock(location):
            assert [e.to_json() for e in populated.recorded_result("R", "f1") or []] == [e.to_json() for e in first]
            assert populated.recorded_result("unknown", "f1") is None
            with pytest.raises(IdempotencyError):
                populated.recorded_result("R", "f2")

    def test_an_idempotency_key_with_a_different_request_is_refused(self, populated: Recorder) -> None:
        populated.append([tag("model-a", 40, "K")], idempotency_key="K", fingerprint="f1")
        head = populated.head()
        with pytest.raises(IdempotencyError):
            populated.append([tag("model-a", 41, "K")], idempotency_key="K", fingerprint="f2")
        assert populated.head() == head

    # -- reads ------------------------------------------------------------------------------------------
    def test_read_since_limit_and_stream(self, populated: Recorder) -> None:
        everything = list(populated.read())
        assert [e.position for e in everything] == [1, 2, 3, 4, 5, 6]
        assert [(e.stream, e.version) for e in everything] == [
            ("model-a", 1), ("model-a", 2), ("model-b", 1), ("model-a", 3), ("model-b", 2), ("model-a", 4)]
        assert [e.position for e in populated.read(since=2)] == [3, 4, 5, 6]
        assert [e.position for e in populated.read(since=2, limit=2)] == [3, 4]
        assert [e.position for e in populated.read(since=6)] == []
        assert [e.position for e in populated.read(stream="model-b")] == [3, 5]
        assert [e.position for e in populated.read(since=3, stream="model-b")] == [5]
        assert [e.position for e in populated.read(since=0, limit=2, stream="model-a")] == [1, 2]
        assert populated.event_at(4) == everything[3]
        assert populated.event_at(7) is None
        assert everything[0].data == {"name": "a", "version": None, "tags": {"n": "1"}}
        assert everything[0].meta == {"actor": "contract@test"}
        assert populated.stream_version("model-a") == 4 and populated.stream_version("model-b") == 2

    def test_read_streams_reads_the_streams_of_a_prefix_in_log_order(self, recorder: Recorder) -> None:
        recorder.append([tag("webhook-b", 1), tag("model-x", 2), tag("webhook-a", 3), tag("webhooks", 4),
                         tag("webhook", 5), tag("webhook-b", 6)])
        assert [e.position for e in recorder.read_streams("webhook-")] == [1, 3, 6]
        assert [e.position for e in recorder.read_streams("webhook-", since=1)] == [3, 6]
        assert [e.position for e in recorder.read_streams("webhook-", since=1, limit=1)] == [3]
        assert [e.stream for e in recorder.read_streams("model-")] == ["model-x"]
        assert list(recorder.read_streams("token-")) == []
        assert list(recorder.read_streams("webhook-", since=6)) == []

    def test_raw_rows_are_the_stored_canonical_text(self, populated: Recorder) -> None:
        rows = populated.raw_rows(since=1, limit=2)
        assert [r[0] for r in rows] == [2, 3]
        position, stream, version, type_, schema_version, data, meta, recorded_at, hash_ = rows[0]
        assert (position, stream, version, type_, schema_version) == (2, "model-a", 2, "Tagged", 1)
        assert data == '{"name":"a","tags":{"n":"2"},"version":null}'
        assert meta == '{"actor":"contract@test"}'
        assert recorded_at.endswith("Z") and len(recorded_at) == len("2026-01-01T00:00:00.000000Z")

    def test_position_at_is_monotonic_and_maps_each_time_to_the_last_event_at_or_before_it(
        self, populated: Recorder
    ) -> None:
        rows = populated.raw_rows()
        assert populated.position_at("1999-01-01T00:00:00Z") == 0
        assert populated.position_at("2999-01-01T00:00:00Z") == len(rows)
        found = []
        for position, *_, recorded_at, _hash in rows:
            at = populated.position_at(recorded_at)
            assert at >= position and rows[at - 1][7] == recorded_at
            assert at == len(rows) or rows[at][7] > recorded_at
            found.append(at)
        assert found == sorted(found)

    # -- time and the chain -----------------------------------------------------------------------------
    def test_recorded_at_never_goes_backwards_when_the_clock_does(
        self, populated: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        last = populated.raw_rows()[-1][7]
        monkeypatch.setattr(self.backend_module, "utc_now", lambda: "2001-01-01T00:00:00.000000Z")
        stored = populated.append([tag("model-a", 50)])
        assert stored[0].recorded_at == last == populated.raw_rows()[-1][7]
        stamps = [r[7] for r in populated.raw_rows()]
        assert stamps == sorted(stamps)
        assert verify_rows(populated.raw_rows()).ok

    def test_the_hash_chain_verifies(self, populated: Recorder) -> None:
        rows = populated.raw_rows()
        report = verify_rows(rows)
        assert report.ok and report.checked == len(rows) and report.last_hash == rows[-1][8]
        # Recomputed from the envelope alone, independently of the append's fast path.
        import json

        previous = GENESIS_HASH
        for position, stream, version, type_, schema_version, data, meta, recorded_at, stored in rows:
            envelope = envelope_for_hash(position, stream, version, type_, schema_version, json.loads(data),
                                         json.loads(meta), recorded_at)
            assert stored == chain_hash(previous, envelope)
            previous = stored
        assert [e.hash for e in populated.read()] == [r[8] for r in rows]

    def test_check_log_passes_an_intact_log_read_page_by_page(self, populated: Recorder) -> None:
        pages: list[list[tuple]] = []
        seen: list[int] = []

        def watch(rows: Any) -> Iterator[tuple]:
            for row in rows:
                seen.append(row[0])
                yield row

        with populated.read_snapshot():
            report = check_log(populated, page=2, on_page=pages.append, watch=watch)
        head = populated.head()
        assert report.ok and [c.name for c in report.checks] == ["chain", "append_only", "idempotency"]
        assert report.chain.checked == head == report.last_position
        assert report.chain.last_hash == populated.raw_rows()[-1][8]
        assert [r for page in pages for r in page] == populated.raw_rows() and max(map(len, pages)) == 2
        assert seen == list(range(1, head + 1))

    # -- identity across reopen -------------------------------------------------------------------------
    def test_the_registry_id_and_the_log_survive_reopening(self, location: Location, populated: Recorder) -> None:
        registry_id, rows = populated.registry_id, populated.raw_rows()
        assert len(registry_id) >= 16
        populated.close()
        again = self.opener(location)()
        try:
            assert again.registry_id == registry_id
            assert again.raw_rows() == rows
            stored = again.append([tag("model-a", 60)])
            assert stored[0].position == len(rows) + 1
            assert verify_rows(again.raw_rows()).ok
        finally:
            again.close()

    # -- driver errors become the project's ---------------------------------------------------------------
    def test_an_unreachable_store_is_a_store_error(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError) as info:
            self.unreachable(tmp_path)()
        assert "\n" not in str(info.value)

    def test_a_write_lock_held_too_long_is_a_store_error_and_reads_go_on(
        self, location: Location, populated: Recorder
    ) -> None:
        impatient = self.opener(location, lock_timeout=0.2)()
        try:
            head = populated.head()
            with self.hold_write_lock(location):
                with pytest.raises(StoreError, match="locked"):
                    impatient.append([tag("model-a", 70)])
                assert impatient.head() == head
                assert len(list(impatient.read())) == head
            assert impatient.append([tag("model-a", 70)])[0].position == head + 1
        finally:
            impatient.close()

    # -- append-only inside the database ---------------------------------------------------------------
    def test_the_database_refuses_to_change_history(self, location: Location, populated: Recorder,
                                                     refused_sql: str) -> None:
        rows = populated.raw_rows()
        keys = self.raw_execute(location, "SELECT key, fingerprint, first_position, last_position FROM idempotency")
        assert keys == [("k-b", "f", 3, 3)]
        with pytest.raises(Exception, match="append-only"):  # the driver's own error, raised by the database
            self.raw_execute(location, refused_sql)
        assert populated.raw_rows() == rows
        assert self.raw_execute(location, "SELECT key, fingerprint, first_position, last_position"
                                          " FROM idempotency") == keys
        assert verify_rows(populated.raw_rows()).ok

    # -- a log copied verbatim (mledger copy) ------------------------------------------------------------
    # The other end is always a SQLite store (it needs no server): rows copied both ways between it and the
    # backend under test keep every column, and the keys still answer a retry.
    def test_copied_rows_keep_positions_versions_times_and_hashes_both_ways(
            self, tmp_path: Path, location: Location, populated: Recorder) -> None:
        from eventstore.sqlite import SQLiteRecorder

        rows, keys = populated.raw_rows(), populated.raw_keys()
        assert keys == [("k-b", "f", 3, 3)]
        other = SQLiteRecorder(tmp_path / "copy" / "registry.db")
        try:
            with other.write() as tx:
                assert tx.append_rows(rows[:3], keys) == 3
                assert tx.append_rows(rows[3:]) == len(rows)
            assert other.raw_rows() == rows and other.raw_keys() == keys
            assert other.registry_id != populated.registry_id
            # the copy answers a retry with the first result, and goes on from the same chain
            again = other.append([tag("model-b", 1, "k-b")], idempotency_key="k-b", fingerprint="f")
            assert [e.hash for e in again] == [rows[2][8]]
            other.append([tag("model-a", 99)])
            populated.append([tag("model-a", 99)])
            back = other.raw_rows()
            assert verify_rows(back).ok and back[-1][:7] == populated.raw_rows()[-1][:7]
        finally:
            other.close()
        # and the copy's log (one event longer) back into a fresh store of this backend
        with self._fresh(tmp_path, location) as target:
            with target.write() as tx:
                tx.append_rows(back, keys)
            assert target.raw_rows() == back and target.raw_keys() == keys
            assert [e.position for e in target.read(stream="model-b")] == [3, 5]
            assert target.stream_version("model-a") == 5
            assert target.append([tag("model-b", 1, "k-b")], idempotency_key="k-b", fingerprint="f")[0].position == 3

    def test_rows_that_do_not_continue_the_log_are_refused_and_nothing_is_appended(
            self, tmp_path: Path, location: Location, populated: Recorder) -> None:
        rows, keys = populated.raw_rows(), populated.raw_keys()
        forged = list(rows[1])
        forged[5] = forged[5].replace("2", "7")
        bad_key = [("k-x", None, 1, 2)]  # events 1-2 were not recorded under k-x
        cases = [
            (rows[1:], (), "position 1 is missing"),
            ([rows[0], tuple(forged), *rows[2:]], (), "hash does not match"),
            ([rows[0], rows[1][:8] + ("0" * 64,), *rows[2:]], (), "hash does not match"),
            (rows, bad_key, "not recorded under it"),
            (rows[:2], keys, "outside the copied rows"),
        ]
        with self._fresh(tmp_path, location) as target:
            for bad_rows, bad_keys, problem in cases:
                with pytest.raises(IntegrityError, match=problem):
                    with target.write() as tx:
                        tx.append_rows(bad_rows, bad_keys)
                assert target.head() == 0 and target.raw_keys() == []
            with target.write() as tx:
                tx.append_rows(rows[:2])
            # a log that already has events takes only rows that continue it
            with pytest.raises(IntegrityError, match="position 3 is missing"):
                with target.write() as tx:
                    tx.append_rows(rows)
            assert target.raw_rows() == rows[:2]
        # the populated store itself refuses its own rows again (they do not continue it)
        with pytest.raises(IntegrityError):
            with populated.write() as tx:
                tx.append_rows(rows)
        assert populated.raw_rows() == rows

    def _fresh(self, tmp_path: Path, location: Location) -> AbstractContextManager[Recorder]:
        """A second, empty store of this backend (beside ``location``)."""
        from contextlib import contextmanager

        @contextmanager
        def opened() -> Iterator[Recorder]:
            recorder = self.opener(self.second_location(tmp_path, location))()
            try:
                yield recorder
            finally:
                recorder.close()

        return opened()

    def second_location(self, tmp_path: Path, location: Location) -> Location:
        """Another fresh, empty store of the backend (a backend with a server overrides this)."""
        return tmp_path / "second" / "registry.db"


class GuardChecks:
    """Mixed into a backend's contract: its guards are compared by definition, never re-created by an open,
    and a store whose guards were changed refuses appends until ``restore_guards``. ``drop_guard_sql`` and
    ``noop_guard_sql`` are the backend's own statements."""

    drop_guard_sql: str
    noop_guard_sql: tuple[str, ...]

    def test_guards_are_in_place_on_a_new_store(self, recorder: Recorder) -> None:
        assert recorder.guard_problems() == []

    def test_a_dropped_guard_is_reported_and_appends_are_refused_until_restored(
            self, location: Any, recorder: Recorder) -> None:
        recorder.append([tag("model-a", 1)])
        recorder.close()
        self.raw_execute(location, self.drop_guard_sql)
        reopened = self.opener(location)()
        try:
            assert [p.change for p in reopened.guard_problems()] == ["missing"]
            with pytest.raises(IntegrityError):
                reopened.append([tag("model-a", 2)])
            assert reopened.head() == 1
            assert [p.change for p in reopened.restore_guards()] == ["missing"]
            assert reopened.guard_problems() == []
            reopened.append([tag("model-a", 2)])
            assert reopened.head() == 2
        finally:
            reopened.close()

    def test_a_same_named_no_op_guard_is_altered(self, location: Any, recorder: Recorder) -> None:
        recorder.close()
        for statement in self.noop_guard_sql:
            self.raw_execute(location, statement)
        reopened = self.opener(location)()
        try:
            assert "altered" in {p.change for p in reopened.guard_problems()}
        finally:
            reopened.close()

    def test_a_key_whose_events_were_removed_is_named(self, recorder: Recorder) -> None:
        recorder.append([tag("model-a", 1, "K")], idempotency_key="K", fingerprint="f")
        assert list(recorder.key_problems()) == []

    def test_check_log_names_an_event_removed_behind_a_dropped_guard(self, location: Any, recorder: Recorder) -> None:
        recorder.append([tag("model-a", 1)])
        recorder.append([tag("model-a", 2, "K")], idempotency_key="K", fingerprint="f")
        recorder.append([tag("model-a", 3)])
        recorder.close()
        self.raw_execute(location, self.drop_guard_sql)
        self.raw_execute(location, "DELETE FROM events WHERE position = 2")
        reopened = self.opener(location)()
        try:
            pages: list[list[tuple]] = []
            report = check_log(reopened, on_page=pages.append)
            checks = {c.name: c for c in report.checks}
            assert not report.ok
            assert (checks["chain"].ok, checks["chain"].position) == (False, 2)
            assert "position 2 is missing" in checks["chain"].detail
            assert not checks["append_only"].ok and "missing" in checks["append_only"].detail
            assert (checks["idempotency"].ok, checks["idempotency"].position) == (False, 2)
            # The pages after the failure are still read (an audit's replay needs the whole log).
            assert [r[0] for page in pages for r in page] == [1, 3]
        finally:
            reopened.close()
