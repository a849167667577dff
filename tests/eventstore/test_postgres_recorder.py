"""The recorder contract on the PostgreSQL backend (the machine's server, a fresh database per test), and
what only this backend has: TRUNCATE refused, lost connections, the LISTEN/NOTIFY wake-up."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from contracts.recorder import GuardChecks, Opener, RecorderContract, tag
from round_trips import RoundTrips

import eventstore.postgres as postgres_backend
from eventstore.errors import IntegrityError, StoreError
from eventstore.postgres import PostgresRecorder
from eventstore.verify import verify_rows

pytestmark = pytest.mark.postgres


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=3)


class TestPostgresRecorder(RecorderContract, GuardChecks):
    drop_guard_sql = "DROP TRIGGER events_no_delete ON events"
    noop_guard_sql = ("CREATE OR REPLACE FUNCTION mledger_refuse_change() RETURNS trigger LANGUAGE plpgsql"
                      " AS $$ BEGIN RETURN NULL; END $$",)

    backend_module = postgres_backend
    refused_statements = (
        *RecorderContract.refused_statements,
        "TRUNCATE events",
        "TRUNCATE idempotency",
        "TRUNCATE events, idempotency",
        # An upsert is an UPDATE in disguise: it fires the UPDATE statement trigger.
        "INSERT INTO events SELECT * FROM events WHERE position = 1"
        " ON CONFLICT (position) DO UPDATE SET data = '{\"forged\":1}'",
        "INSERT INTO idempotency VALUES ('k-b', 'f', 1, 1) ON CONFLICT (key) DO UPDATE SET first_position = 1",
    )

    @pytest.fixture
    def location(self, new_postgres_database: Callable[[], str]) -> str:
        self._new_database = new_postgres_database
        return new_postgres_database()

    def second_location(self, tmp_path: Path, location: str) -> str:
        return self._new_database()

    def opener(self, location: str, *, lock_timeout: float | None = None) -> Opener:
        if lock_timeout is None:
            return functools.partial(PostgresRecorder, location)
        return functools.partial(PostgresRecorder, location, lock_timeout=lock_timeout)

    def raw_execute(self, location: str, sql: str) -> list[tuple]:
        with _connect(location) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    @contextmanager
    def hold_write_lock(self, location: str) -> Iterator[None]:
        with _connect(location) as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            yield
            conn.execute("ROLLBACK")

    def unreachable(self, tmp_path: Path) -> Opener:
        # Port 1 on the loopback: nothing listens there, the connection is refused at once.
        return functools.partial(PostgresRecorder, "postgresql://postgres@127.0.0.1:1/none", connect_timeout=2)


# -- what only PostgreSQL has -------------------------------------------------------------------------------

@pytest.fixture
def url(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture
def recorder(url: str) -> Iterator[PostgresRecorder]:
    rec = PostgresRecorder(url)
    try:
        yield rec
    finally:
        rec.close()


def test_a_missing_database_is_a_store_error_naming_it(postgres_server: str) -> None:
    from contracts.databases import database_url

    with pytest.raises(StoreError, match="mledger_no_such_database") as info:
        PostgresRecorder(database_url("mledger_no_such_database"))
    assert "does not exist" in str(info.value) and "\n" not in str(info.value)


def _terminate(url: str, pid: int | None = None) -> int:
    """Cut the recorder's connections from the server side (all of them, or one backend)."""
    with _connect(url) as admin:
        where = "pid = %s" if pid else "datname = current_database() AND pid <> pg_backend_pid()"
        return admin.execute(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {where}",  # noqa: S608
                             (pid,) if pid else ()).fetchone()[0]


def test_connections_the_server_dropped_between_calls_are_replaced(url: str, recorder: PostgresRecorder) -> None:
    """A server restart between two commands costs a reconnection, not a failed command."""
    recorder.append([tag("model-a", 1)])
    assert _terminate(url) >= 1
    assert recorder.head() == 1
    assert _terminate(url) >= 1
    assert recorder.append([tag("model-a", 2)])[0].position == 2
    assert verify_rows(recorder.raw_rows()).ok


def test_a_connection_lost_inside_a_write_is_a_store_error_that_appends_nothing(
    url: str, recorder: PostgresRecorder
) -> None:
    recorder.append([tag("model-a", 1)])
    with pytest.raises(StoreError, match="lost the connection") as info, recorder.write() as tx:
        tx.append([tag("model-a", 2)])
        assert _terminate(url, tx.connection.info.backend_pid) == 1
        tx.append([tag("model-a", 3)])
    assert "\n" not in str(info.value)
    assert recorder.head() == 1
    assert recorder.append([tag("model-a", 2)])[0].position == 2
    assert verify_rows(recorder.raw_rows()).ok


def test_threads_sharing_one_recorder_get_gapless_unmixed_batches(recorder: PostgresRecorder) -> None:
    errors: list[BaseException] = []
    batches: list[list[int]] = []

    def write(worker: int) -> None:
        try:
            for b in range(10):
                stored = recorder.append([tag(f"model-t{worker}", b * 3 + i) for i in range(3)])
                batches.append([e.position for e in stored])
        except BaseException as exc:  # noqa: BLE001 - failed below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(b == list(range(b[0], b[0] + 3)) for b in batches)
    assert sorted(p for b in batches for p in b) == list(range(1, 121))
    assert verify_rows(recorder.raw_rows()).ok


def test_wait_for_change_wakes_when_another_client_appends(url: str, recorder: PostgresRecorder) -> None:
    recorder.append([tag("model-a", 1)])
    other = PostgresRecorder(url)
    started = threading.Event()

    def append_later() -> None:
        started.wait(30)
        other.append([tag("model-a", 2)])

    writer = threading.Thread(target=append_later)
    writer.start()
    try:
        started.set()
        assert recorder.wait_for_change(1, timeout=60) == 2
    finally:
        writer.join()
        other.close()


@pytest.mark.timeout(120)  # a wait that trusted notifications alone would sit out its 600 s here
def test_wait_for_change_reads_the_stored_head_so_a_missed_notification_does_not_matter(
    recorder: PostgresRecorder,
) -> None:
    recorder.append([tag("model-a", 1), tag("model-a", 2)])  # committed before anyone listened
    assert recorder.wait_for_change(0, timeout=600) == 2
    assert recorder.wait_for_change(1, timeout=600) == 2
    assert recorder.wait_for_change(2, timeout=0.05) == 2  # nothing new: returns the head when time is up
    recorder.append([tag("model-a", 3)])
    assert recorder.wait_for_change(2, timeout=60) == 3


def test_the_same_events_make_the_same_rows_and_hashes_as_on_sqlite(
    tmp_path: Path, recorder: PostgresRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eventstore.sqlite as sqlite_backend
    from eventstore.events import NewEvent
    from eventstore.sqlite import SQLiteRecorder

    monkeypatch.setattr(postgres_backend, "utc_now", lambda: "2026-01-01T00:00:00.000000Z")
    monkeypatch.setattr(sqlite_backend, "utc_now", lambda: "2026-01-01T00:00:00.000000Z")
    batches = [
        [tag("model-a", 1), NewEvent("model-b", "ModelRegistered", {"name": "b", "description": "ünï ✓",
                                                                    "tags": {"x": [1, 2.5, None, True]}})],
        [tag("model-a", 2, note="quote \" and \\ and \u0001")],
    ]
    lite = SQLiteRecorder(tmp_path / "registry.db")
    try:
        for batch in batches:
            key = f"k{len(batch)}"
            batch = [replace(e, meta={**e.meta, "idempotency_key": key}) for e in batch]
            recorder.append(batch, idempotency_key=key, fingerprint="f")
            lite.append(batch, idempotency_key=key, fingerprint="f")
        assert recorder.raw_rows() == [tuple(r) for r in lite.raw_rows()]
        assert [e.to_json() for e in recorder.read()] == [e.to_json() for e in lite.read()]
    finally:
        lite.close()


def test_a_disabled_guard_is_reported_and_restored(url: str) -> None:
    """ALTER TABLE ... DISABLE TRIGGER switches a guard off without changing its definition: still caught."""
    first = PostgresRecorder(url)
    first.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_delete")
    recorder = PostgresRecorder(url)
    try:
        assert [(p.name, p.change) for p in recorder.guard_problems()] == [("events_no_delete", "altered")]
        recorder.restore_guards()
        assert recorder.guard_problems() == []
    finally:
        recorder.close()


# -- the command's batched transaction (write_batched: pipeline mode from BEGIN to COMMIT) ------------------

def test_a_statement_failing_in_a_batched_write_fails_the_commit_and_nothing_is_recorded(
    recorder: PostgresRecorder,
) -> None:
    """A statement whose result nobody read fails at the server only when the batch is synced (here: the
    COMMIT): still the project's error, nothing of the transaction is committed, and the pooled connection
    serves the next command."""
    recorder.append([tag("model-a", 1)])
    with pytest.raises(StoreError) as info, recorder.write_batched() as tx:
        tx.append([tag("model-a", 2)])
        tx.connection.execute("INSERT INTO registry_meta (key, value) VALUES ('id', 'a second id')")
    assert "\n" not in str(info.value) and "may or may not" not in str(info.value)
    assert recorder.head() == 1
    for _ in range(3):  # every pooled connection is usable again
        with recorder.write_batched() as tx:
            tx.append([tag("model-a", tx.head() + 1)])
    assert recorder.head() == 4 and verify_rows(recorder.raw_rows()).ok


def test_a_batched_write_replaces_connections_the_server_dropped_between_calls(
    url: str, recorder: PostgresRecorder
) -> None:
    """A batched write sends its first statements without waiting, so a dead pooled connection is seen
    before: a server restart between two commands costs a reconnection, not a failed command."""
    for n in range(1, 4):
        with recorder.write_batched() as tx:
            tx.append([tag("model-a", n)])
        assert _terminate(url) >= 1
    assert recorder.head() == 3 and verify_rows(recorder.raw_rows()).ok


def test_a_command_asks_for_generic_plans_for_its_own_transaction_only(recorder: PostgresRecorder) -> None:
    """A batched command's head read carries its stream's version and sets generic plans (``COMMAND_HEAD``)
    for that transaction only: the pooled connection's next reads plan as the server decides."""
    recorder.append([tag("model-a", 1)])
    with recorder.write_batched() as tx:
        tx.prefetch(streams=["model-a", "model-b"])
        assert tx.head() == 1 and tx.stream_version("model-a") == 1 and tx.stream_version("model-b") == 0
        assert tx.connection.execute("SHOW plan_cache_mode").fetchone()[0] == "force_generic_plan"
        tx.append([tag("model-b", 2)], expected={"model-b": 0})
    with recorder.write_batched() as tx:  # no prefetch: the head is read on its own
        assert tx.head() == 2
    for _ in range(3):
        assert recorder._query("SHOW plan_cache_mode") == [("auto",)]
    assert verify_rows(recorder.raw_rows()).ok


def test_a_tag_and_an_alias_move_take_two_round_trips(recorder: PostgresRecorder,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock, the head, the stream's version and the model's state come back in one round trip; the
    event, the catalog's rows and the COMMIT go in the other (13 and 14 before the batched transaction).
    The commands still decide, append and project as before. (Two trips: a command that cannot be decided
    from the memo of the last one — here, each follows a ``write()`` of its own, which forgets it; with it,
    one: tests/test_postgres_one_trip.py.)"""
    from eventstore import commands as c
    from eventstore.handler import execute
    from projections.catalog import Catalog, CatalogProjection

    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}), meta)
    execute(recorder, projection, c.Tag("m@2", {"stage": "warm"}), meta)  # warm up the prepared statements
    def forget() -> None:
        with recorder.write():
            pass

    forget()
    trips = RoundTrips(monkeypatch)
    execute(recorder, projection, c.Tag("m@2", {"stage": "test"}), meta)
    assert trips.count == 2
    monkeypatch.undo()
    forget()
    trips = RoundTrips(monkeypatch)
    execute(recorder, projection, c.AssignAlias("m@1", "production"), meta)
    assert trips.count == 2
    monkeypatch.undo()
    forget()
    trips = RoundTrips(monkeypatch)
    outcome = execute(recorder, projection, c.AssignAlias("m@production", "staging"), meta)
    assert trips.count == 2 and outcome.version == 1
    monkeypatch.undo()
    catalog = Catalog(projection)
    assert catalog.get("m@2").tags == {"stage": "test"}
    assert catalog.get("m@production").version == 1 and catalog.get("m@staging").version == 1
    with pytest.raises(Exception, match="no version 9"):
        execute(recorder, projection, c.Tag("m@9", {"stage": "x"}), meta)
    assert verify_rows(recorder.raw_rows()).ok


def test_the_prefetched_rows_are_what_the_fold_store_loads(recorder: PostgresRecorder) -> None:
    """A command's fold reads its model, versions, aliases and alias stack from the prefetch: the same rows,
    in the same shapes, as the dialect's ``FoldStore`` loads (so a change to one shows here)."""
    from eventstore import commands as c
    from eventstore.handler import execute
    from eventstore.state import Target
    from projections.catalog import CatalogProjection
    from projections.postgres import fold_store, prefetch

    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}, tags={"t": str(n)}, params={"lr": n / 3}), meta)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), meta)
    execute(recorder, projection, c.AssignAlias("m@3", "production"), meta)
    execute(recorder, projection, c.RecordMetrics("m@3", {"acc": 0.5, "n": 1}), meta)
    execute(recorder, projection, c.Delete("m@1"), meta)
    targets = [Target("m", 1), Target("m", 3), Target("m", None, "production", "production"), Target("m"),
               Target("m", None, None, "staging"), Target("nobody", 1)]
    with recorder.write() as tx:
        store = fold_store(tx.connection)
        for target in targets:
            pre = prefetch(tx.connection, target)
            names = {target.name}
            assert pre.fold_models(names) == store.load_models(names)
            assert pre.fold_aliases(names) == [tuple(r) for r in store.load_aliases(names)]
            known = [n for n in range(0, 6) if pre.knows_version(target.name, n)]
            assert known, target
            keys = {(target.name, n) for n in known}
            assert pre.fold_versions(keys) == store.load_versions(keys)
            if target.alias is not None:
                stack = {(target.name, target.alias)}
                assert pre.fold_tops(stack) == store.load_alias_tops(stack)


def test_the_prefetch_reads_the_versions_it_names_whatever_the_models_size(recorder: PostgresRecorder) -> None:
    """The prefetch reads the named version's row and the next one's by their key, under the generic plan a
    command runs with: it fetched every version of the model before (a plain join of the numbers with the
    model's versions, which the planner hashed), so a command cost more as its model grew."""
    from eventstore import commands as c
    from eventstore.handler import execute
    from eventstore.state import Target
    from projections.catalog import CatalogProjection
    from projections.postgres import prefetch

    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(30):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n % 10}" * 64,
                                                      "size": 1}), meta)
    with recorder.write() as tx:
        conn = tx.connection
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for _ in range(6):  # past psycopg's prepare threshold: the statement as a command's, prepared
            pre = prefetch(conn, Target("m", 5))
            assert pre.knows_version("m", 5) and pre.knows_version("m", 31)
            assert pre.fold_versions({("m", 5)})[0][:2] == ["m", 5]
        fetched = conn.execute("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'versions'"
                               ).fetchone()[0]
        assert fetched < 6 * 30, fetched  # fewer than the model's 30 versions a prefetch (615 in all before, 20-35 now)


def test_a_versions_record_and_its_models_aliases_are_one_statement(recorder: PostgresRecorder,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A register's record (its row and the model's aliases, read in its batched transaction) is one statement
    (two before): the same answers as ``version_row`` and ``aliases_of``, NULLs for a missing version."""
    from eventstore import commands as c
    from eventstore.handler import execute
    from projections.catalog import CatalogProjection
    from projections.postgres import aliases_of, version_row, version_with_aliases, version_with_aliases_later

    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}, params={"lr": n / 3}), meta)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), meta)
    execute(recorder, projection, c.AssignAlias("m@1", "a-first"), meta)
    sent: list[str] = []
    run = psycopg.Cursor.execute

    def counting(cursor, query, *args, **kwargs):  # noqa: ANN001, ANN202
        sent.append(str(query))
        return run(cursor, query, *args, **kwargs)

    with recorder.write() as tx:
        conn = tx.connection
        for number in (1, 2, 9):
            want = (version_row(conn, "m", number), aliases_of(conn, "m"))
            monkeypatch.setattr(psycopg.Cursor, "execute", counting)
            got = version_with_aliases(conn, "m", number)
            later = version_with_aliases_later(conn, "m", number)
            monkeypatch.undo()
            assert got == later() == want
            assert len(sent) == 2, sent
            sent.clear()
        assert want == (None, {"a-first": 1, "production": 2})


def test_a_connection_lost_inside_a_batched_write_is_a_store_error_that_appends_nothing(
    url: str, recorder: PostgresRecorder
) -> None:
    """Cut after the first round trip, with the rows sent but not committed: one line, nothing recorded, and
    the next command gets a working connection."""
    recorder.append([tag("model-a", 1)])
    with pytest.raises(StoreError, match="connection") as info, recorder.write_batched() as tx:
        tx.append([tag("model-a", 2)])
        assert _terminate(url, tx.connection.info.backend_pid) == 1
        tx.append([tag("model-a", 3)])
        assert [e.position for e in tx.read(since=1)] == [2, 3]
    assert "\n" not in str(info.value)
    assert recorder.head() == 1
    with recorder.write_batched() as tx:
        assert tx.append([tag("model-a", 2)])[0].position == 2
    assert verify_rows(recorder.raw_rows()).ok


def test_commands_racing_on_one_model_fold_exactly_what_a_rebuild_folds(recorder: PostgresRecorder) -> None:
    """Four threads tag, move aliases and register on one model at once: each command's prefetched rows
    (read under the lock) are the catalog's, so the incremental catalog equals a rebuild from the log."""
    from eventstore import commands as c
    from eventstore.handler import execute
    from projections.catalog import Catalog, CatalogProjection

    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}), meta)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                if i % 3 == 0:
                    execute(recorder, projection, c.Tag(f"m@{1 + i % 3}", {f"w{worker}": str(i)}), meta)
                elif i % 3 == 1:
                    execute(recorder, projection, c.AssignAlias(f"m@{1 + (i + worker) % 3}", "production"), meta)
                else:
                    execute(recorder, projection, c.Register("m", {"source": f"w{worker}-{i}",
                                                                   "digest": "sha256:" + "a" * 64, "size": 1},
                                                             tags={"by": str(worker)}), meta)
        except BaseException as exc:  # noqa: BLE001 - failed below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    catalog = Catalog(projection)
    incremental = catalog.digest()
    assert [v.version for v in catalog.model("m").versions] == list(range(1, 3 + 4 * 5 + 1))
    projection.rebuild()
    assert catalog.digest() == incremental
    assert verify_rows(recorder.raw_rows()).ok


# -- the command head (``mledger_command_head``: the writer lock of a batched command, schema 2) --------------

def test_a_batched_command_holds_the_writer_lock_and_commits_once_at_its_end(url: str,
                                                                            recorder: PostgresRecorder) -> None:
    """A batched command has no BEGIN or COMMIT of its own: its statements are the pipeline's one implicit
    transaction, the lock taken by the head read. Another writer cannot lock the log meanwhile, nothing of
    the command is visible before it ends, and all of it is after."""
    recorder.append([tag("model-a", 1)])
    with _connect(url) as other, recorder.write_batched() as tx:
        assert tx.head() == 1
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("BEGIN")
            other.execute("LOCK TABLE events IN EXCLUSIVE MODE NOWAIT")
        other.execute("ROLLBACK")
        tx.append([tag("model-a", 2)])
        tx.connection.execute("INSERT INTO registry_meta (key, value) VALUES ('seen', 'yes')")
        assert tx.connection.execute("SELECT count(*) FROM events").fetchone()[0] == 2  # its own writes
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert other.execute("SELECT count(*) FROM registry_meta WHERE key = 'seen'").fetchone()[0] == 0
    with _connect(url) as other:
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 2
        assert other.execute("SELECT value FROM registry_meta WHERE key = 'seen'").fetchone()[0] == "yes"
    with pytest.raises(RuntimeError), recorder.write_batched() as tx:  # a failing body: nothing of it stays
        tx.append([tag("model-a", 3)])
        raise RuntimeError("the command failed after its append")
    assert recorder.head() == 2 and verify_rows(recorder.raw_rows()).ok


def test_an_older_registry_gets_the_command_head_on_open_and_keeps_its_guards_as_they_are(url: str) -> None:
    """A schema-1 registry (no ``mledger_command_head``) opened by this version is upgraded: the function is
    added (with schema 3's ``mledger_command_check``) and the schema marked current, and nothing else is
    re-created — a guard dropped before stays reported."""
    PostgresRecorder(url).close()
    with _connect(url) as conn:
        conn.execute("DROP FUNCTION mledger_command_head(text)")
        conn.execute("DROP TRIGGER events_no_delete ON events")
        conn.execute("UPDATE registry_meta SET value = '1' WHERE key = 'schema'")
    recorder = PostgresRecorder(url)
    try:
        assert [(p.name, p.change) for p in recorder.guard_problems()] == [("events_no_delete", "missing")]
        assert recorder._query("SELECT value FROM registry_meta WHERE key = 'schema'") == [("3",)]
        assert recorder._one_trip  # the optimistic check came with the upgrade
        recorder.restore_guards()
        with recorder.write_batched() as tx:
            tx.append([tag("model-a", tx.head() + 1)])
        assert recorder.head() == 1
    finally:
        recorder.close()


def test_a_command_head_without_the_lock_is_reported_refused_and_restored(url: str) -> None:
    """The command head takes the writer lock: a copy that does not is caught like an altered guard (appends
    refused until ``restore_guards``)."""
    PostgresRecorder(url).close()
    with _connect(url) as conn:
        conn.execute("CREATE OR REPLACE FUNCTION mledger_command_head(command_stream text, OUT head_position bigint,"
                     " OUT head_hash text, OUT head_recorded_at text, OUT stream_version bigint) LANGUAGE plpgsql"
                     " AS $$ BEGIN SELECT position, hash, recorded_at INTO head_position, head_hash,"
                     " head_recorded_at FROM events ORDER BY position DESC LIMIT 1; stream_version := 0; END $$")
    recorder = PostgresRecorder(url)
    try:
        assert [(p.name, p.change) for p in recorder.guard_problems()] == [("mledger_command_head()", "altered")]
        with pytest.raises(IntegrityError), recorder.write_batched() as tx:
            tx.append([tag("model-a", 1)])
        recorder.restore_guards()
        assert recorder.guard_problems() == []
        with recorder.write_batched() as tx:
            tx.append([tag("model-a", 1)])
        assert recorder.head() == 1
    finally:
        recorder.close()
