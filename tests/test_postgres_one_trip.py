"""Optimistic one-trip commands on PostgreSQL (``PostgresRecorder.write_batched(optimistic=True)``): a command
decided from the memo of this process's last own commit sends the check (``mledger_command_check``), its rows and
the Sync in one round trip; another writer in between makes the check refuse, nothing is committed, and the
command runs again the two-trip way — the caller sees one success. Positions, hashes, idempotency and the
catalog are what the two-trip path gives."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from contracts.recorder import tag
from round_trips import RoundTrips

from eventstore import commands as c
from eventstore.errors import ConflictError, NotFoundError, ValidationError
from eventstore.handler import Outcome, execute
from eventstore.postgres import PostgresRecorder
from eventstore.verify import verify_rows
from projections.catalog import Catalog, CatalogProjection

pytestmark = pytest.mark.postgres

META = {"actor": "test"}


def _artifact(n: int) -> dict:
    return {"source": f"s{n}", "digest": "sha256:" + f"{n % 10}" * 64, "size": 1}


@pytest.fixture
def url(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture
def opened(url: str) -> Iterator[Callable[..., tuple[PostgresRecorder, CatalogProjection]]]:
    made: list[PostgresRecorder] = []

    def open_one(**kwargs) -> tuple[PostgresRecorder, CatalogProjection]:  # noqa: ANN003
        recorder = PostgresRecorder(kwargs.pop("at", url), **kwargs)
        made.append(recorder)
        return recorder, CatalogProjection(recorder)

    try:
        yield open_one
    finally:
        for recorder in made:
            recorder.close()


def _model(recorder: PostgresRecorder, projection: CatalogProjection, versions: int = 3) -> None:
    for n in range(versions):
        execute(recorder, projection, c.Register("m", _artifact(n)), META)


def _counts(recorder: PostgresRecorder) -> dict[str, int]:
    return dict(recorder.one_trip_counts)


def test_a_tag_an_alias_move_and_a_register_after_a_command_take_one_round_trip(opened, monkeypatch):
    recorder, projection = opened()
    _model(recorder, projection)
    execute(recorder, projection, c.Tag("m@2", {"stage": "warm"}), META)
    execute(recorder, projection, c.AssignAlias("m@1", "production"), META)  # the alias stack read once
    for command in (c.Tag("m@2", {"stage": "test"}), c.AssignAlias("m@2", "production"),
                    c.AssignAlias("m@1", "production"), c.Register("m", _artifact(7))):
        before = _counts(recorder)["hits"]
        trips = RoundTrips(monkeypatch)
        outcome = execute(recorder, projection, command, META)
        monkeypatch.undo()
        assert trips.count == 1, command
        assert _counts(recorder)["hits"] == before + 1
        assert outcome.events
    catalog = Catalog(projection)
    assert catalog.get("m@2").tags == {"stage": "test"}
    assert catalog.get("m@production").version == 1
    assert catalog.get("m").version == 4
    assert verify_rows(recorder.raw_rows()).ok
    assert _counts(recorder)["misses"] == 0


def test_another_writer_in_between_makes_a_miss_and_the_command_still_succeeds(opened):
    recorder, projection = opened()
    other, other_projection = opened()
    _model(recorder, projection)
    execute(recorder, projection, c.Tag("m@1", {"k": "0"}), META)
    head = recorder.head()
    execute(other, other_projection, c.Tag("m@1", {"k": "other"}), META)  # another process's writer
    outcome = execute(recorder, projection, c.Tag("m@1", {"k": "1"}), META)
    assert _counts(recorder)["misses"] == 1
    # decided again against the other writer's event: the next position, chained to it
    assert [e.position for e in outcome.events] == [head + 2]
    rows = recorder.raw_rows()
    assert verify_rows(rows).ok and [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1][7] >= rows[-2][7]  # recorded_at never goes backwards
    assert Catalog(projection).get("m@1").tags == {"k": "1"}


def test_a_stale_memo_never_answers_a_refusal_or_a_no_op(opened):
    """A decision that appends nothing (a refusal, a tag already set) made from a memo another writer has made
    stale is checked as well: the command is decided again against the real state."""
    recorder, projection = opened()
    other, other_projection = opened()
    _model(recorder, projection)
    execute(recorder, projection, c.Tag("m@1", {"k": "v"}), META)
    execute(other, other_projection, c.Tag("m@1", {"k": "w"}), META)
    outcome = execute(recorder, projection, c.Tag("m@1", {"k": "v"}), META)  # a no-op by the memo; not now
    assert [e.type for e in outcome.events] == ["Tagged"]
    for n in range(3):  # the back-off after the miss (2 commands), then a hit
        execute(recorder, projection, c.Tag("m@1", {"k": f"x{n}"}), META)
    assert _counts(recorder)["two_trip"] == 2
    execute(other, other_projection, c.Delete("m@1"), META)
    with pytest.raises(Exception, match="deleted"):  # noqa: PT011 - the decider's refusal, whatever its class
        execute(recorder, projection, c.Tag("m@1", {"k": "y"}), META)  # the memo has it live
    assert _counts(recorder)["misses"] == 2
    assert verify_rows(recorder.raw_rows()).ok


def test_the_hash_chain_is_the_two_trip_paths(opened, new_postgres_database, monkeypatch):
    """The same commands at the same clock on two registries, one with optimistic commands and one without:
    the same rows, byte for byte, hashes included."""
    import eventstore.postgres as backend

    def run(optimistic: bool) -> list[tuple]:
        clock = (f"2026-12-02T01:{n // 60:02d}:{n % 60:02d}.000000Z" for n in itertools.count())
        monkeypatch.setattr(backend, "utc_now", lambda: next(clock))
        recorder, projection = opened(at=new_postgres_database())
        recorder._one_trip = optimistic
        _model(recorder, projection)
        for n in range(6):
            execute(recorder, projection, c.Tag("m@2", {"n": str(n)}), META, idempotency_key=f"key-{n}")
            execute(recorder, projection, c.AssignAlias(f"m@{1 + n % 3}", "production"), META)
        execute(recorder, projection, c.Register("m", _artifact(9)), META)
        assert _counts(recorder)["hits"] == (15 if optimistic else 0)  # all but the first register
        return recorder.raw_rows()

    one_trip, two_trip = run(True), run(False)
    assert one_trip == two_trip and verify_rows(one_trip).ok


def test_an_idempotency_key_returns_the_first_result_on_either_path(opened):
    recorder, projection = opened()
    other, other_projection = opened()
    _model(recorder, projection)
    execute(recorder, projection, c.Tag("m@1", {"k": "0"}), META)
    first = execute(recorder, projection, c.Tag("m@1", {"k": "1"}), META, idempotency_key="run-1")
    assert _counts(recorder)["hits"] >= 1 and not first.replayed
    head = recorder.head()
    again = execute(recorder, projection, c.Tag("m@1", {"k": "1"}), META, idempotency_key="run-1")  # checked
    assert again.replayed and again.events == first.events and recorder.head() == head
    # the same key from another process, and back: the first result each time, appended once
    assert execute(other, other_projection, c.Tag("m@1", {"k": "1"}), META, idempotency_key="run-1").replayed
    execute(recorder, projection, c.Tag("m@1", {"k": "2"}), META)
    assert execute(recorder, projection, c.Tag("m@1", {"k": "1"}), META, idempotency_key="run-1").events \
        == first.events
    with pytest.raises(Exception, match="different request"):  # noqa: PT011
        execute(recorder, projection, c.Tag("m@1", {"k": "other"}), META, idempotency_key="run-1")
    keyed = [r for r in recorder.raw_rows() if '"idempotency_key":"run-1"' in r[6]]
    assert len(keyed) == 1 and list(recorder.key_problems()) == []


def test_the_catalog_equals_a_rebuild_after_hits_and_misses(opened):
    """Two writers on two models, interleaved at random: the catalog each keeps inline equals the one a
    replay of the log builds, and the chain holds."""
    rng = random.Random(7)
    writers = [opened(), opened()]
    recorder, projection = writers[0]
    for name in ("a", "b"):
        for n in range(3):
            execute(recorder, projection, c.Register(name, _artifact(n)), META)
    outcomes: list[Outcome] = []
    for i in range(80):
        rec, proj = writers[0] if rng.random() < 0.85 else writers[1]
        name = "a" if rng.random() < 0.8 else "b"
        number = rng.randint(1, 3 + (i // 20))
        command = rng.choice([
            c.Tag(f"{name}@{number}", {"i": str(i % 4)}),
            c.AssignAlias(f"{name}@{number}", rng.choice(["production", "staging"])),
            c.RecordMetrics(f"{name}@{number}", {"acc": i / 100}),
            c.Register(name, _artifact(i)) if i % 20 == 0 else c.Untag(f"{name}@{number}", ["i"]),
        ])
        try:
            outcomes.append(execute(rec, proj, command, META))
        except (NotFoundError, ValidationError, ConflictError):  # a refusal is an answer too
            pass
    counts = _counts(recorder)
    assert counts["hits"] >= 10 and counts["misses"] > 0, counts
    assert verify_rows(recorder.raw_rows()).ok
    catalog = Catalog(projection)
    inline = catalog.digest()
    projection.rebuild()
    assert catalog.digest() == inline


def test_misses_back_off_and_leave_the_prepared_statements_usable(opened):
    """After a miss the next 2 commands go the two-trip way, then 4 after a second miss in a row (or a two-trip
    command that saw another writer's commit since its memo), ...; a hit starts over. An aborted pipeline leaves psycopg's prepared statements as the server has them: one pooled
    connection, its statements prepared, many misses in a row, and every command succeeds."""
    recorder, projection = opened(pool_size=1)
    other, other_projection = opened()
    _model(recorder, projection)
    for n in range(8):  # psycopg prepares a statement at its 5th run
        execute(recorder, projection, c.Tag("m@1", {"n": str(n)}), META)
    assert _counts(recorder) == {"hits": 10, "misses": 0, "two_trip": 0}  # all but the first register
    execute(other, other_projection, c.Tag("m@1", {"n": "other"}), META)
    execute(recorder, projection, c.Tag("m@1", {"n": "a"}), META)  # miss, then two trips
    assert _counts(recorder) == {"hits": 10, "misses": 1, "two_trip": 0}
    for n in range(2):
        execute(recorder, projection, c.Tag("m@1", {"n": f"b{n}"}), META)
    assert _counts(recorder) == {"hits": 10, "misses": 1, "two_trip": 2}
    execute(recorder, projection, c.Tag("m@1", {"n": "c"}), META)
    assert _counts(recorder)["hits"] == 11
    for n in range(12):  # another writer before every command
        execute(other, other_projection, c.Tag("m@1", {"n": f"o{n}"}), META)
        execute(recorder, projection, c.Tag("m@1", {"n": f"d{n}"}), META)
    counts = _counts(recorder)
    # One miss; then every two-trip command sees a head that is not its memo's — optimism would have missed —
    # and backs off further at no cost (4, 8, ... 64): no second miss however long the contention lasts.
    assert counts["misses"] == 1 + 1 and counts["two_trip"] == 2 + 11, counts
    assert verify_rows(recorder.raw_rows()).ok
    assert Catalog(projection).get("m@1").tags == {"n": "d11"}


def test_a_connection_the_server_dropped_between_commands_costs_no_failed_command(opened, url):
    recorder, projection = opened()
    _model(recorder, projection)
    for n in range(3):
        execute(recorder, projection, c.Tag("m@1", {"n": str(n)}), META)
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    outcome = execute(recorder, projection, c.Tag("m@1", {"n": "last"}), META)
    assert outcome.events[0].position == recorder.head()
    assert verify_rows(recorder.raw_rows()).ok


def test_a_role_that_cannot_upgrade_a_schema_2_registry_runs_commands_in_two_trips(opened, url, monkeypatch):
    from contracts.databases import admin_connection
    from psycopg import sql

    recorder, projection = opened()
    _model(recorder, projection)
    role = f"mledger_writer_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP FUNCTION mledger_command_check(bigint, text, text)")
            conn.execute("UPDATE registry_meta SET value = '2' WHERE key = 'schema'")
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}")
                         .format(sql.Identifier(role)))
        parts = urlsplit(url)
        writer, writer_projection = opened(
            at=urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}")))
        assert not writer._one_trip
        execute(writer, writer_projection, c.Tag("m@1", {"n": "warm"}), META)  # the pool's first connection
        for n in range(3):
            trips = RoundTrips(monkeypatch)
            execute(writer, writer_projection, c.Tag("m@1", {"n": str(n)}), META)
            monkeypatch.undo()
            assert trips.count == 2
        assert _counts(writer) == {"hits": 0, "misses": 0, "two_trip": 0}
        assert Catalog(writer_projection).get("m@1").tags == {"n": "2"}
        writer.close()
        assert verify_rows(recorder.raw_rows()).ok
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with admin_connection() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_raw_write_batched_stays_two_trip(opened):
    """Only a caller that decides again on ``ConcurrencyError`` (the handler) asks for optimism."""
    recorder, _ = opened()
    for n in range(1, 4):
        with recorder.write_batched() as tx:
            tx.append([tag("model-a", tx.head() + 1)])
        assert n == recorder.head()
    assert _counts(recorder) == {"hits": 0, "misses": 0, "two_trip": 0}


def test_a_keyed_commands_look_up_of_its_key_keeps_the_memo(opened, monkeypatch):
    """A retry's look-up of its key (``first_result``, what a keyed register or update does before its ingest) is
    one statement without the writer lock, and leaves the memo: the command after it is still one round trip.
    (It was a locked transaction that dropped the memo: a keyed register cost 1.5x an unkeyed one.)"""
    from eventstore.handler import first_result

    recorder, projection = opened()
    _model(recorder, projection)
    command = c.Register("m", _artifact(8))
    trips = RoundTrips(monkeypatch)
    assert first_result(recorder, "key-8", command) is None
    assert trips.count == 1
    monkeypatch.undo()
    hits = _counts(recorder)["hits"]
    trips = RoundTrips(monkeypatch)
    outcome = execute(recorder, projection, command, META, idempotency_key="key-8")
    assert trips.count == 1 and _counts(recorder)["hits"] == hits + 1
    monkeypatch.undo()
    again = first_result(recorder, "key-8", command)
    assert again is not None and again.replayed and again.events == outcome.events
