"""The log itself: envelope, gapless positions, per-stream versions, time order, hash chain, append-only
enforced by the database, atomic batches, optimistic concurrency and idempotency at the recorder."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import replace

import pytest

from eventstore.canonical import GENESIS_HASH, chain_hash, envelope_for_hash
from eventstore.errors import ConcurrencyError, IdempotencyError, ValidationError
from eventstore.events import NewEvent
from eventstore.verify import verify_rows

ENVELOPE = ("position", "stream", "version", "type", "schema_version", "data", "meta", "recorded_at", "hash")


def _populate(reg, artifact) -> None:
    v1 = reg.register("alpha", artifact, params={"lr": 0.1}, tags={"task": "vision"})
    reg.register("team/beta", artifact, description="second model")
    v2 = reg.update(v1, params={"lr": 0.01})
    reg.tag("alpha", owner="ml")
    reg.metrics(v2, accuracy=0.9)
    reg.alias(v2, "production")
    reg.update("team/beta@1", optimizer={"name": "adam"})
    reg.delete("alpha@1", reason="superseded")


def _raw(home):
    conn = sqlite3.connect(home / "registry.db")
    try:
        return conn.execute("SELECT * FROM events ORDER BY position").fetchall()
    finally:
        conn.close()


def test_envelope_positions_streams_time_and_chain(reg, artifact):
    _populate(reg, artifact)
    rows = reg.recorder.raw_rows()
    assert len(rows) == reg.recorder.head() > 10
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), "positions must be gapless from 1"
    per_stream: dict[str, list[int]] = {}
    for r in rows:
        per_stream.setdefault(r[1], []).append(r[2])
    assert set(per_stream) == {"model-alpha", "model-team/beta"}
    for stream, versions in per_stream.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream} versions not gapless: {versions}"
    stamps = [r[7] for r in rows]
    assert stamps == sorted(stamps), "recorded_at went backwards"
    # The chain recomputed independently of the store's fast path (canonical dict → SHA-256).
    previous = GENESIS_HASH
    for position, stream, version, type_, schema_version, data, meta, recorded_at, stored in rows:
        env = envelope_for_hash(position, stream, version, type_, schema_version, json.loads(data),
                                json.loads(meta), recorded_at)
        assert stored == chain_hash(previous, env) == hashlib.sha256(
            (previous + json.dumps(env, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).encode()
        ).hexdigest()
        previous = stored
    report = verify_rows(rows)
    assert report.ok, report
    assert report.checked == len(rows) and report.last_hash == rows[-1][8]


def test_event_json_has_the_documented_envelope_and_meta(reg, artifact):
    reg.register("alpha", artifact, idempotency_key="k-1")
    events = list(reg.log())
    assert [e.type for e in events] == ["ModelRegistered", "VersionRegistered", "ArtifactStored"]
    for e in events:
        doc = e.to_json()
        assert tuple(doc) == ENVELOPE
        assert doc["stream"] == "model-alpha" and doc["schema_version"] == 1
        assert doc["recorded_at"].endswith("Z")
        assert doc["meta"]["actor"] == "tester@test"
        assert doc["meta"]["client"].startswith("modelledger/")
        assert doc["meta"]["idempotency_key"] == "k-1"
    # One command, one correlation id shared by all of its events.
    assert len({e.meta["correlation_id"] for e in events}) == 1


def test_recorded_at_never_goes_backwards_when_the_clock_does(reg, artifact, monkeypatch):
    reg.register("alpha", artifact)
    last = reg.recorder.raw_rows()[-1][7]
    import eventstore.sqlite as store

    monkeypatch.setattr(store, "utc_now", lambda: "2001-01-01T00:00:00.000000Z")
    reg.tag("alpha", stepped="back")
    rows = reg.recorder.raw_rows()
    assert rows[-1][7] == last
    assert verify_rows(rows).ok


def test_position_at_maps_a_timestamp_to_the_last_event_at_or_before_it(reg, artifact):
    _populate(reg, artifact)
    rows = reg.recorder.raw_rows()
    assert reg.recorder.position_at("1999-01-01T00:00:00Z") == 0
    assert reg.recorder.position_at("2999-01-01T00:00:00Z") == len(rows)
    for position, *_, recorded_at, _hash in rows:
        at = reg.recorder.position_at(recorded_at)
        assert at >= position and rows[at - 1][7] == recorded_at


# -- append-only in the database ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE events SET data = '{}' WHERE position = 2", "events are append-only: UPDATE refused"),
        ("UPDATE events SET recorded_at = '1970-01-01T00:00:00.000000Z'", "events are append-only: UPDATE refused"),
        ("DELETE FROM events WHERE position = 1", "events are append-only: DELETE refused"),
        ("DELETE FROM events", "events are append-only: DELETE refused"),
        ("UPDATE idempotency SET first_position = 99", "idempotency keys are append-only: UPDATE refused"),
        ("DELETE FROM idempotency", "idempotency keys are append-only: DELETE refused"),
    ],
)
def test_raw_sql_cannot_update_or_delete_events(reg, artifact, home, sql, message):
    reg.register("alpha", artifact, idempotency_key="once")
    reg.tag("alpha", k="v")
    before = _raw(home)
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match=message) as info:
            conn.execute(sql)
        assert isinstance(info.value, sqlite3.IntegrityError)
        idem = conn.execute("SELECT * FROM idempotency").fetchall()
    finally:
        conn.close()
    assert _raw(home) == before
    assert [row[0] for row in idem if not row[0].startswith("artifact-")] == ["once"]
    assert verify_rows(reg.recorder.raw_rows()).ok


def test_raw_sql_cannot_replace_a_stored_event(reg, artifact, home):
    reg.register("alpha", artifact)
    before = _raw(home)
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(
                "INSERT OR REPLACE INTO events (position, stream, version, type, schema_version, data, meta,"
                " recorded_at, hash) SELECT position, stream, version, type, schema_version, '{\"forged\":1}',"
                " meta, recorded_at, hash FROM events WHERE position = 1"
            )
    finally:
        conn.close()
    assert _raw(home) == before


# -- tampering is found ---------------------------------------------------------------------------

def _tamper(home, sql: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute(sql, params)
    finally:
        conn.close()


def test_changing_one_byte_of_data_breaks_the_chain_at_that_position(reg, artifact, home):
    _populate(reg, artifact)
    rows = reg.recorder.raw_rows()
    target = next(r for r in rows if r[3] == "MetricsRecorded")
    assert '"accuracy":0.9' in target[5]
    _tamper(home, "UPDATE events SET data = replace(data, '0.9', '0.8') WHERE position = ?", (target[0],))
    report = verify_rows(reg.recorder.raw_rows())
    assert not report.ok
    assert report.position == target[0]
    assert report.checked == target[0] - 1


def test_deleting_a_row_is_reported_as_a_gap(reg, artifact, home):
    _populate(reg, artifact)
    _tamper(home, "DELETE FROM events WHERE position = 5")
    report = verify_rows(reg.recorder.raw_rows())
    assert not report.ok and report.position == 5 and "missing" in report.problem


def test_rewriting_a_hash_is_found(reg, artifact, home):
    _populate(reg, artifact)
    _tamper(home, "UPDATE events SET hash = ? WHERE position = 3", ("0" * 64,))
    report = verify_rows(reg.recorder.raw_rows())
    assert not report.ok and report.position == 3


def test_changing_the_meta_actor_is_found(reg, artifact, home):
    _populate(reg, artifact)
    _tamper(home, "UPDATE events SET meta = replace(meta, 'tester@test', 'mallory@evil') WHERE position = 4")
    report = verify_rows(reg.recorder.raw_rows())
    assert not report.ok and report.position == 4


# -- batches, expected versions, idempotency at the recorder ---------------------------------------

def _ev(stream: str, n: int, **data) -> NewEvent:
    return NewEvent(stream, "Tagged", {"name": stream[6:], "version": None, "tags": {"n": str(n)}, **data})


def test_a_batch_is_atomic(reg, artifact):
    reg.register("alpha", artifact)
    head = reg.recorder.head()
    bad = [_ev("model-alpha", 1), _ev("model-alpha", 2), _ev("model-alpha", 3, bad=float("nan"))]
    with pytest.raises(ValidationError):
        reg.recorder.append(bad)
    assert reg.recorder.head() == head
    stored = reg.recorder.append(bad[:2])
    assert [e.position for e in stored] == [head + 1, head + 2]
    assert verify_rows(reg.recorder.raw_rows()).ok


def test_a_stale_expected_version_is_a_conflict_and_appends_nothing(reg, artifact):
    reg.register("alpha", artifact)
    at = reg.recorder.stream_version("model-alpha")
    reg.tag("alpha", k="v")
    head = reg.recorder.head()
    with pytest.raises(ConcurrencyError):
        reg.recorder.append([_ev("model-alpha", 1)], expected={"model-alpha": at})
    assert reg.recorder.head() == head
    stored = reg.recorder.append([_ev("model-alpha", 1)], expected={"model-alpha": at + 1})
    assert stored[0].version == at + 2


def _keyed(event: NewEvent, key: str) -> NewEvent:
    return replace(event, meta={**event.meta, "idempotency_key": key})


def test_recorder_idempotency_key_appends_once(reg, artifact):
    reg.register("alpha", artifact)
    first = reg.recorder.append([_keyed(_ev("model-alpha", 1), "K")], idempotency_key="K", fingerprint="f1")
    head = reg.recorder.head()
    again = reg.recorder.append([_keyed(_ev("model-alpha", 1), "K")], idempotency_key="K", fingerprint="f1")
    assert again == first
    assert reg.recorder.head() == head
    with pytest.raises(IdempotencyError):
        reg.recorder.append([_keyed(_ev("model-alpha", 2), "K")], idempotency_key="K", fingerprint="f2")
    assert reg.recorder.head() == head


def test_reopening_the_registry_keeps_the_log_and_the_chain(home, artifact):
    from modelledger import Registry

    with Registry.open(home) as a:
        _populate(a, artifact)
        digest, head = a.catalog().digest(), a.head()
    with Registry.open(home) as b:
        assert b.head() == head
        assert b.catalog().digest() == digest
        b.tag("alpha", again="yes")
        assert verify_rows(b.recorder.raw_rows()).ok


def test_a_catalog_that_cannot_follow_the_log_fails_the_command_instead_of_looping(tmp_path):
    from eventstore import commands as c
    from eventstore.errors import StoreError
    from eventstore.handler import execute
    from eventstore.sqlite import SQLiteRecorder

    recorder = SQLiteRecorder(tmp_path / "registry.db")
    recorder.append([NewEvent("model-m", "ModelRegistered", {"name": "m", "description": "", "tags": {}})])

    class StuckCatalog:  # e.g. a projection bug that never gets past an event
        def catch_up(self, tx, limit=None):
            return 0

        def apply(self, tx, events):
            raise AssertionError("nothing may be decided on a catalog that is behind")

        def view(self, tx):
            raise AssertionError("nothing may be decided on a catalog that is behind")

    with pytest.raises(StoreError, match="cannot follow the log after #0"):
        execute(recorder, StuckCatalog(), c.Tag("m", {"k": "v"}), {"actor": "test"})
    assert recorder.head() == 1


# -- INSERT OR REPLACE (test-quality §0.2) --------------------------------------------------------

def test_replace_at_a_new_position_with_an_existing_stream_version_is_refused(reg, artifact, home):
    """The guard's second branch: at head + 1 the position does not collide, (stream, version) does; without
    it REPLACE would silently delete the old event."""
    reg.register("alpha", artifact)
    reg.tag("alpha", k="v")
    before = _raw(home)
    head = before[-1][0]
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="events are append-only: REPLACE refused"):
            conn.execute(
                "INSERT OR REPLACE INTO events (position, stream, version, type, schema_version, data, meta,"
                " recorded_at, hash) SELECT ?, stream, version, type, schema_version, '{\"forged\":1}', meta,"
                " recorded_at, hash FROM events WHERE position = 1", (head + 1,)
            )
    finally:
        conn.close()
    assert _raw(home) == before  # the old event survives, nothing was added


def test_replace_of_an_idempotency_key_is_refused(reg, artifact, home):
    reg.register("alpha", artifact, idempotency_key="once")
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        row = conn.execute("SELECT * FROM idempotency WHERE key = 'once'").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="idempotency keys are append-only: REPLACE refused"):
            conn.execute("INSERT OR REPLACE INTO idempotency (key, fingerprint, first_position, last_position)"
                         " VALUES ('once', 'forged', 99, 99)")
        assert conn.execute("SELECT * FROM idempotency WHERE key = 'once'").fetchone() == row
    finally:
        conn.close()


# -- guards: created with the database, never re-created, compared by definition -------------------

# The schema script of the releases before guards were checked (CREATE ... IF NOT EXISTS on every open):
# registries it made must keep passing.
OLD_SCHEMA_GUARDS = """
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
-- INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers (unless the connection
-- enabled recursive_triggers, which another client would not): refuse any insert that would collide.
CREATE TRIGGER IF NOT EXISTS events_no_replace BEFORE INSERT ON events
WHEN NEW.position <= (SELECT max(position) FROM events)
  OR EXISTS (SELECT 1 FROM events WHERE stream = NEW.stream AND version = NEW.version)
BEGIN SELECT RAISE(ABORT, 'events are append-only: REPLACE refused'); END;
CREATE TRIGGER IF NOT EXISTS idempotency_no_replace BEFORE INSERT ON idempotency
WHEN EXISTS (SELECT 1 FROM idempotency WHERE key = NEW.key)
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: REPLACE refused'); END;
CREATE TRIGGER IF NOT EXISTS idempotency_no_update BEFORE UPDATE ON idempotency
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS idempotency_no_delete BEFORE DELETE ON idempotency
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: DELETE refused'); END;
"""


def _triggers(path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    finally:
        conn.close()


def test_a_new_database_gets_every_guard(tmp_path):
    from eventstore.sqlite import GUARDS, SQLiteRecorder

    recorder = SQLiteRecorder(tmp_path / "r.db")
    try:
        assert recorder.guard_problems() == []
    finally:
        recorder.close()
    assert set(_triggers(tmp_path / "r.db")) == set(GUARDS)


def test_a_registry_made_by_the_old_schema_script_passes(tmp_path):
    from eventstore.sqlite import TABLES, SQLiteRecorder

    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    conn.executescript(TABLES + OLD_SCHEMA_GUARDS)
    conn.close()
    recorder = SQLiteRecorder(tmp_path / "r.db")
    try:
        assert recorder.guard_problems() == []
        recorder.append([_ev("model-alpha", 1)])  # not refused
        assert verify_rows(recorder.raw_rows()).ok
    finally:
        recorder.close()


def test_opening_never_recreates_a_dropped_guard_and_appends_are_refused(tmp_path):
    from eventstore.errors import IntegrityError
    from eventstore.recorder import GuardProblem
    from eventstore.sqlite import SQLiteRecorder

    SQLiteRecorder(tmp_path / "r.db").close()
    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    conn.execute("DROP TRIGGER idempotency_no_update")
    conn.close()
    recorder = SQLiteRecorder(tmp_path / "r.db")
    try:
        assert "idempotency_no_update" not in _triggers(tmp_path / "r.db")
        assert recorder.guard_problems() == [GuardProblem("idempotency_no_update", "missing")]
        with pytest.raises(IntegrityError, match="idempotency_no_update missing"):
            recorder.append([_ev("model-alpha", 1)])
        assert recorder.head() == 0
        assert recorder.restore_guards() == [GuardProblem("idempotency_no_update", "missing")]
        assert recorder.guard_problems() == []
        assert recorder.append([_ev("model-alpha", 1)])[0].position == 1
    finally:
        recorder.close()


def test_guards_are_compared_by_definition_not_name(tmp_path):
    from eventstore.sqlite import SQLiteRecorder

    recorder = SQLiteRecorder(tmp_path / "r.db")
    try:
        conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
        conn.execute("DROP TRIGGER events_no_update")
        # Same name, same message, but never fires.
        conn.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN 0\n"
                     "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END")
        conn.execute("DROP TRIGGER events_no_delete")
        # White space alone is not a change.
        conn.execute("CREATE TRIGGER   events_no_delete  BEFORE DELETE\n\tON events   BEGIN SELECT RAISE(ABORT, "
                     "'events are append-only: DELETE refused');  END")
        conn.execute("CREATE TRIGGER idempotency_audit AFTER INSERT ON idempotency BEGIN SELECT 1; END")
        conn.close()
        problems = {(p.name, p.change) for p in recorder.guard_problems()}
        assert problems == {("events_no_update", "altered"), ("idempotency_audit", "extra")}
        altered = next(p for p in recorder.guard_problems() if p.change == "altered")
        assert "WHEN 0" in altered.found and "WHEN 0" in str(altered)
    finally:
        recorder.close()


# -- verify_rows: each check on its own, with an otherwise valid chain (test-quality §0.6) ---------

def _rechain(rows: list[tuple]) -> list[tuple]:
    """The rows with every hash recomputed from the first: a valid chain whatever was edited."""
    from eventstore.canonical import envelope_json, hash_envelope_json

    out, previous = [], GENESIS_HASH
    for row in rows:
        previous = hash_envelope_json(previous, envelope_json(*row[:8]))
        out.append((*row[:8], previous))
    return out


def test_a_backdated_recorded_at_with_a_valid_chain_is_caught(reg, artifact):
    _populate(reg, artifact)
    rows = [list(r) for r in reg.recorder.raw_rows()]
    rows[5][7] = "2001-01-01T00:00:00.000000Z"
    rows = _rechain([tuple(r) for r in rows])
    report = verify_rows(rows)
    assert not report.ok and report.position == 6 and report.problem == "recorded_at goes backwards"


def test_a_skipped_stream_version_with_a_valid_chain_is_caught(reg, artifact):
    _populate(reg, artifact)
    rows = [list(r) for r in reg.recorder.raw_rows()]
    last = rows[-1]
    later = [r for r in rows if r[1] == last[1]]
    last[2] = later[-1][2] + 1  # the stream jumps from v to v + 2
    rows = _rechain([tuple(r) for r in rows])
    report = verify_rows(rows)
    assert not report.ok and report.position == last[0] and "jumps to version" in report.problem


def test_a_rechained_log_with_nothing_else_wrong_passes_the_chain(reg, artifact):
    """The control for the two tests above: rechaining alone is invisible to verify_rows."""
    _populate(reg, artifact)
    assert verify_rows(_rechain(reg.recorder.raw_rows())).ok


@pytest.mark.parametrize(("column", "edit"), [
    (5, lambda text: '{"name":"x",' + text[1:]),  # a duplicate key, first: json_extract reads it
    (5, lambda text: text.replace(",", ", ")),  # white space
    (6, lambda text: text.replace(":", " : ")),
])
def test_stored_text_that_is_not_canonical_fails_even_with_the_same_meaning(reg, artifact, column, edit):
    _populate(reg, artifact)
    rows = [list(r) for r in reg.recorder.raw_rows()]
    before = rows[2][column]
    rows[2][column] = edit(before)
    assert json.loads(rows[2][column]) == json.loads(before)
    report = verify_rows(rows)  # the hashes are unchanged: the canonical form is the same
    assert not report.ok and report.position == 3 and "not stored in canonical form" in report.problem


def test_the_hash_of_an_event_is_unchanged():
    """Existing registries must keep verifying: the chain's definition is pinned."""
    from eventstore.canonical import envelope_json, hash_envelope_json

    envelope = envelope_json(1, "model-m", 1, "ModelRegistered", 1, '{"name":"m"}', '{"actor":"a"}',
                             "2026-01-01T00:00:00.000000Z")
    assert envelope == ('{"data":{"name":"m"},"meta":{"actor":"a"},"position":1,"recorded_at":'
                        '"2026-01-01T00:00:00.000000Z","schema_version":1,"stream":"model-m",'
                        '"type":"ModelRegistered","version":1}')
    assert hash_envelope_json(GENESIS_HASH, envelope) == hashlib.sha256((GENESIS_HASH + envelope).encode()).hexdigest()
    assert hash_envelope_json(GENESIS_HASH, envelope) == "6d5a817d1f4bb7eed76d9a97274061db38aa7195c9b13a51ba1e1a0548e945aa"


# -- idempotency keys against the events ----------------------------------------------------------

def test_which_events_are_recorded_under_a_key():
    from eventstore.idempotency import recorded_under

    assert recorded_under("job-42", {"idempotency_key": "job-42"})
    assert not recorded_under("job-42", {"idempotency_key": "job-43"})
    assert not recorded_under("job-42", {"actor": "x"})
    # A worker's outcome: its own key names the request; it carries the requester's key, if any.
    assert recorded_under("artifact-stored:#12", {"causation_id": 12, "idempotency_key": "job-42"})
    assert not recorded_under("artifact-stored:#12", {"causation_id": 1})
    assert not recorded_under("artifact-stored:#12", {"causation_id": True})
    assert not recorded_under("job-42", ["idempotency_key"])


def test_key_problems_name_a_key_beyond_the_head_and_one_not_named_by_its_event(tmp_path):
    from eventstore.sqlite import SQLiteRecorder

    recorder = SQLiteRecorder(tmp_path / "r.db")
    try:
        recorder.append([_keyed(_ev("model-a", 1), "k-1"), _keyed(_ev("model-a", 2), "k-1")], idempotency_key="k-1")
        recorder.append([_keyed(_ev("model-a", 3), "k-2")], idempotency_key="k-2")
        assert list(recorder.key_problems()) == []
        conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("DELETE FROM events WHERE position = 3")
        conn.execute("UPDATE events SET meta = '{}' WHERE position = 2")
        conn.close()
        problems = {(p.key, p.position): p.problem for p in recorder.key_problems()}
        assert problems == {
            ("k-1", 2): "points at #2, whose event was not recorded under it",
            ("k-2", 3): "points at #3..#3 but the log ends at #2: events were removed from the log",
        }
    finally:
        recorder.close()
