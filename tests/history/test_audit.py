"""Audit: the four checks pass on an honest registry and each kind of tampering is caught at its position;
the evidence export verifies on its own and any edit to it is caught at its line."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from eventstore.canonical import GENESIS_HASH, canonical_json
from eventstore.sqlite import SQLiteRecorder
from eventstore.verify import resume, verify_rows
from projections.audit import EXPORT_FORMAT, export, verify_export

# These edit or read the SQLite file by hand (MLEDGER_TEST_DATABASE=postgresql leaves them out): the same
# attacks on PostgreSQL are the recorder contract's guard tests (tests/eventstore) and the hand-edited
# catalog row of tests/test_catalog_dialects.py.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")

SELECT_CONTENT = ("SELECT stream, version, type, schema_version, data, meta, recorded_at, hash FROM events"
                  " WHERE position = ?")
UPDATE_CONTENT = ("UPDATE events SET stream = ?, version = ?, type = ?, schema_version = ?, data = ?, meta = ?,"
                  " recorded_at = ?, hash = ? WHERE position = ?")


ALL_OK = {"chain": True, "append_only": True, "idempotency": True, "replay": True, "blobs": True}


def names_ok(report) -> dict[str, bool]:
    return {c.name: c.ok for c in report.checks}


# -- an honest registry ---------------------------------------------------------------------------------------

def test_audit_passes_after_a_mix_of_commands(mixed, audit_of):
    report = audit_of(mixed, deep=True)
    assert report.ok, report.to_json()
    assert names_ok(report) == ALL_OK
    assert report.events_checked == mixed.recorder.head()
    assert report.last_hash == mixed.recorder.raw_rows()[-1][8]
    assert report.first_failure is None
    json.dumps(report.to_json())  # JSON-able for `mledger audit --json`


def test_audit_of_an_empty_registry(reg, audit_of):
    report = audit_of(reg, deep=True)
    assert report.ok and report.events_checked == 0 and report.last_hash == GENESIS_HASH


def test_audit_streams_the_log_in_pages_and_checks_across_page_boundaries(mixed, monkeypatch, audit_of):
    """Pages of 2 events: streams continue across pages (per-stream versions, recorded_at, the chain), and
    no read asks for more than a page — memory stays flat on a long log."""
    limits: list[int | None] = []
    original = SQLiteRecorder.raw_rows

    def spy(self, since=0, limit=None):
        limits.append(limit)
        return original(self, since, limit)

    monkeypatch.setattr(SQLiteRecorder, "raw_rows", spy)
    report = audit_of(mixed, page=2)
    assert report.ok, report.to_json()
    assert limits and all(limit == 2 for limit in limits)
    assert len(limits) >= mixed.recorder.head() // 2


def test_audit_on_a_longer_log_with_small_pages(reg, make_artifact, audit_of):
    art = make_artifact("x.bin", b"x")
    v = reg.register("long", artifact=str(art))
    for i in range(60):
        reg.metrics(v, step=float(i))
        reg.tag(v, round=str(i))
    report = audit_of(reg, page=7)
    assert report.ok, report.to_json()
    assert report.events_checked == reg.recorder.head()


def test_verify_rows_resumes_from_a_page_boundary(mixed):
    rows = mixed.recorder.raw_rows()
    first = verify_rows(rows[:5])
    assert first.ok
    second = verify_rows(rows[5:], **resume(first, 5))
    assert second.ok, second
    # Without the carried state the second page is not checkable on its own.
    assert not verify_rows(rows[5:], start_position=5, start_hash=first.last_hash).ok


# -- tampering with the log ----------------------------------------------------------------------------------

def _flip_one_byte(conn: sqlite3.Connection, position: int) -> None:
    data = conn.execute("SELECT data FROM events WHERE position = ?", (position,)).fetchone()[0]
    assert "0.01" in data
    conn.execute("UPDATE events SET data = ? WHERE position = ?", (data.replace("0.01", "0.02", 1), position))


def test_one_changed_byte_in_data_is_caught_at_its_position(mixed, raw, audit_of, drop_triggers, positions_of):
    position = positions_of(mixed, "ParamsUpdated")[0]
    drop_triggers(raw)
    _flip_one_byte(raw, position)
    report = audit_of(mixed)
    assert not report.ok
    chain = report.check("chain")
    assert not chain.ok and chain.position == position
    assert "hash does not match" in chain.detail and f"position {position}" in chain.detail
    assert report.first_failure == chain
    assert not report.check("append_only").ok  # the dropped triggers are reported too


def test_a_changed_event_is_caught_even_when_the_triggers_are_put_back(mixed, raw, audit_of, drop_triggers, positions_of):
    position = positions_of(mixed, "ParamsUpdated")[0]
    drop_triggers(raw)
    _flip_one_byte(raw, position)
    assert mixed.restore_guards()  # what an operator (or the attacker) does after
    report = audit_of(mixed)
    assert report.check("append_only").ok
    assert report.check("chain").position == position
    assert not report.ok


def test_a_changed_event_with_its_hash_recomputed_breaks_the_next_link(mixed, raw, audit_of, drop_triggers, positions_of):
    """The attacker recomputes the edited event's own hash: the next event's hash no longer follows."""
    from eventstore.canonical import envelope_json, hash_envelope_json

    position = positions_of(mixed, "ParamsUpdated")[0]
    drop_triggers(raw)
    _flip_one_byte(raw, position)
    row = raw.execute("SELECT * FROM events WHERE position = ?", (position,)).fetchone()
    previous = raw.execute("SELECT hash FROM events WHERE position = ?", (position - 1,)).fetchone()[0]
    new_hash = hash_envelope_json(previous, envelope_json(*row[:8]))
    raw.execute("UPDATE events SET hash = ? WHERE position = ?", (new_hash, position))
    chain = audit_of(mixed).check("chain")
    assert not chain.ok and chain.position == position + 1


def test_a_deleted_event_is_caught_at_its_position(mixed, raw, audit_of, drop_triggers, positions_of):
    position = positions_of(mixed, "Tagged")[0]
    drop_triggers(raw, "events_no_delete")
    raw.execute("DELETE FROM events WHERE position = ?", (position,))
    report = audit_of(mixed)
    chain = report.check("chain")
    assert not chain.ok and chain.position == position and "missing" in chain.detail
    replay = report.check("replay")
    assert not replay.ok and replay.position == position + 1  # the replay cannot cross the gap
    assert report.check("append_only").detail.startswith("append-only guards changed: events_no_delete missing")


def test_a_deleted_last_event_is_caught_by_the_replay(mixed, raw, audit_of):
    """Truncating the tail (the guard put back exactly as it was) leaves a valid chain; the catalog has seen
    the lost events."""
    head = mixed.recorder.head()
    sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'events_no_delete'").fetchone()[0]
    raw.execute("DROP TRIGGER events_no_delete")
    raw.execute("DELETE FROM events WHERE position = ?", (head,))
    raw.execute(sql)
    report = audit_of(mixed)
    assert report.check("chain").ok and report.check("append_only").ok
    replay = report.check("replay")
    assert not replay.ok and replay.position == head and "missing from the log" in replay.detail


def test_two_swapped_events_are_caught_at_the_first(mixed, raw, audit_of, drop_triggers, positions_of):
    tagged, untagged = positions_of(mixed, "Tagged")[0], positions_of(mixed, "Untagged")[0]
    metrics = positions_of(mixed, "MetricsRecorded")[0]
    a, b = tagged, metrics  # two events of the same stream, contents (and hashes) swapped
    assert a < untagged < b
    drop_triggers(raw)
    row_a = raw.execute(SELECT_CONTENT, (a,)).fetchone()
    row_b = raw.execute(SELECT_CONTENT, (b,)).fetchone()
    raw.execute("UPDATE events SET version = -version WHERE position IN (?, ?)", (a, b))  # UNIQUE(stream, version)
    raw.execute(UPDATE_CONTENT, (*row_b, a))
    raw.execute(UPDATE_CONTENT, (*row_a, b))
    report = audit_of(mixed)
    chain = report.check("chain")
    assert not chain.ok and chain.position == a


def test_two_swapped_events_keeping_their_versions_are_caught_by_the_hash(mixed, raw, audit_of, drop_triggers, positions_of):
    a, b = positions_of(mixed, "Tagged")[0], positions_of(mixed, "MetricsRecorded")[0]
    drop_triggers(raw)
    row_a = raw.execute("SELECT type, data, meta FROM events WHERE position = ?", (a,)).fetchone()
    row_b = raw.execute("SELECT type, data, meta FROM events WHERE position = ?", (b,)).fetchone()
    raw.execute("UPDATE events SET type = ?, data = ?, meta = ? WHERE position = ?", (*row_b, a))
    raw.execute("UPDATE events SET type = ?, data = ?, meta = ? WHERE position = ?", (*row_a, b))
    chain = audit_of(mixed).check("chain")
    assert not chain.ok and chain.position == a and "hash" in chain.detail


def test_a_dropped_trigger_is_reported_by_name(mixed, raw, audit_of, drop_triggers):
    drop_triggers(raw, "events_no_replace")
    report = audit_of(mixed)
    assert names_ok(report) == ALL_OK | {"append_only": False}
    assert "events_no_replace missing" in report.check("append_only").detail
    assert report.first_failure.name == "append_only"


def test_a_malformed_column_does_not_crash_the_audit(mixed, raw, audit_of, drop_triggers, positions_of):
    position = positions_of(mixed, "Tagged")[0]
    drop_triggers(raw)
    raw.execute("UPDATE events SET recorded_at = 12345 WHERE position = ?", (position,))
    chain = audit_of(mixed).check("chain")
    assert not chain.ok and chain.position == position


# -- the catalog against the log ----------------------------------------------------------------------------

def test_a_hand_edited_catalog_row_is_caught_by_the_replay(mixed, raw, audit_of):
    position = mixed.get("resnet@2").position
    raw.execute("UPDATE versions SET params = ? WHERE name = 'resnet' AND version = 2", ('{"lr":0.5}',))
    report = audit_of(mixed)
    assert report.check("chain").ok
    replay = report.check("replay")
    assert not replay.ok and replay.position == position
    assert '"lr":0.5' in replay.detail and "stored" in replay.detail and "replayed" in replay.detail


def test_a_hand_added_alias_is_caught_by_the_replay(mixed, raw, audit_of):
    raw.execute("INSERT INTO aliases (name, alias, version) VALUES ('resnet', 'staging', 3)")
    replay = audit_of(mixed).check("replay")
    assert not replay.ok and '"staging"' in replay.detail


def test_a_catalog_behind_the_log_is_compared_at_its_checkpoint(mixed, make_artifact):
    """Events appended after the catalog's snapshot are not a finding: the replay stops where the catalog is."""
    from eventstore.events import NewEvent, stream_for

    mixed.append_batch([NewEvent(stream_for("resnet"), "Tagged", {"name": "resnet", "version": 1,
                                                                   "tags": {"late": "yes"}}, {"actor": "t"})])
    store = mixed.store()
    from projections.audit import audit

    report = audit(mixed.recorder, mixed.recorder.connection(), blob_exists=store.exists)
    assert report.ok, report.to_json()
    assert "log head" in report.check("replay").detail


# -- blobs ---------------------------------------------------------------------------------------------------

def _blob_path(reg, ref: str, file_index: int | None = None) -> tuple[str, Path]:
    art = reg.get(ref).artifact
    digest = art["digest"] if file_index is None else art["files"][file_index]["digest"]
    return digest, Path(reg.store().path_of(digest))


def test_a_blob_deleted_from_the_store_is_reported(mixed, audit_of):
    digest, path = _blob_path(mixed, "team/folder-model@1", file_index=1)
    os.remove(path)
    report = audit_of(mixed)
    blobs = report.check("blobs")
    assert not blobs.ok and digest in blobs.detail and "missing" in blobs.detail
    assert "team/folder-model@1" in blobs.detail and blobs.position == mixed.get("team/folder-model@1").position
    assert names_ok(report) == ALL_OK | {"blobs": False}


def test_corrupted_blob_bytes_are_caught_by_deep_only(mixed, audit_of):
    digest, path = _blob_path(mixed, "resnet@3")
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    assert audit_of(mixed).ok  # present: the shallow audit does not read bytes
    blobs = audit_of(mixed, deep=True).check("blobs")
    assert not blobs.ok and digest in blobs.detail and "does not match" in blobs.detail
    assert "resnet@3" in blobs.detail


def test_each_distinct_blob_is_rehashed_once(mixed):
    seen: list[str] = []
    store = mixed.store()

    def rehash(digest: str) -> bool:
        seen.append(digest)
        return store.verify(digest)

    from projections.audit import audit

    report = audit(mixed.recorder, mixed.recorder.connection(), blob_exists=store.exists, blob_rehash=rehash)
    assert report.ok
    assert len(seen) == len(set(seen)) >= 4  # resnet@1 and @2 share a blob; the folder has a manifest + 2 files


def test_a_store_error_is_reported_not_raised(mixed):
    from projections.audit import audit

    def broken(digest: str) -> bool:
        raise OSError("network down")

    blobs = audit(mixed.recorder, mixed.recorder.connection(), blob_exists=broken).check("blobs")
    assert not blobs.ok and "network down" in blobs.detail


# -- the evidence export -------------------------------------------------------------------------------------

@pytest.fixture
def bundle(mixed, tmp_path: Path) -> Path:
    path = tmp_path / "evidence.jsonl"
    summary = export(mixed.recorder, path)
    assert summary.events == mixed.recorder.head()
    assert summary.final_hash == mixed.recorder.raw_rows()[-1][8]
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_export_holds_every_row_exactly_as_stored(mixed, bundle):
    lines = _lines(bundle)
    header = json.loads(lines[0])
    assert header == {"format": EXPORT_FORMAT, "version": 1, "events": mixed.recorder.head(),
                      "final_hash": mixed.recorder.raw_rows()[-1][8]}
    for line, row in zip(lines[1:], mixed.recorder.raw_rows(), strict=True):
        obj = json.loads(line)
        assert (obj["position"], obj["stream"], obj["version"], obj["type"], obj["schema_version"]) == row[:5]
        assert obj["data"] == json.loads(row[5]) and obj["meta"] == json.loads(row[6])
        assert (obj["recorded_at"], obj["hash"]) == row[7:]
    assert [p.name for p in bundle.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_export_verifies_on_its_own(bundle, mixed):
    report = verify_export(bundle)
    assert report.ok, report.to_json()
    assert report.events_checked == mixed.recorder.head()
    assert verify_export(bundle, expected_final_hash=report.last_hash).ok


def test_events_appended_while_an_export_runs_are_left_out_and_the_bundle_still_verifies(mixed, tmp_path,
                                                                                          monkeypatch):
    """A registry keeps taking writes during an export: the header's count and final hash describe exactly
    the rows written (those up to the snapshot the header was read in), so the bundle verifies against it."""
    from eventstore.events import NewEvent

    head = mixed.recorder.head()
    read_pages = mixed.recorder.raw_rows

    def raw_rows_while_a_writer_appends(since: int = 0, limit: int | None = None):
        mixed.recorder.append([NewEvent("model-late", "ModelRegistered",
                                        {"name": "late", "description": "", "tags": {}})])
        return read_pages(since=since, limit=limit)

    monkeypatch.setattr(mixed.recorder, "raw_rows", raw_rows_while_a_writer_appends)
    path = tmp_path / "evidence.jsonl"
    summary = export(mixed.recorder, path, page=3)
    monkeypatch.undo()
    assert mixed.recorder.head() > head  # the writer did append meanwhile
    lines = _lines(path)
    assert summary.events == json.loads(lines[0])["events"] == head == len(lines) - 1
    assert json.loads(lines[-1])["position"] == head
    report = verify_export(path)
    assert report.ok, report.to_json()


def test_an_edited_value_in_an_export_is_caught_at_its_line(bundle):
    lines = _lines(bundle)
    n = next(i for i, line in enumerate(lines) if '"MetricsRecorded"' in line)
    obj = json.loads(lines[n])
    obj["data"]["metrics"]["acc"] = 0.99
    lines[n] = canonical_json(obj)  # a new value, written as export writes
    _write(bundle, lines)
    report = verify_export(bundle)
    chain = report.check("chain")
    assert not report.ok and chain.position == obj["position"] == n
    assert f"line {n + 1}" in chain.detail


def test_a_removed_line_is_caught(bundle):
    lines = _lines(bundle)
    del lines[5]  # position 5
    _write(bundle, lines)
    chain = verify_export(bundle).check("chain")
    assert not chain.ok and chain.position == 5 and "missing" in chain.detail and "line 6" in chain.detail


def test_an_added_line_is_caught(bundle):
    lines = _lines(bundle)
    _write(bundle, [*lines[:4], lines[3], *lines[4:]])
    chain = verify_export(bundle).check("chain")
    assert not chain.ok and chain.position == 4 and "line 5" in chain.detail


def test_an_added_line_at_the_end_is_caught_by_the_count(bundle):
    lines = _lines(bundle)
    _write(bundle, [*lines, lines[-1]])
    report = verify_export(bundle)
    assert not report.ok
    # a copy of the last event repeats its position: the chain names the extra line
    assert not report.check("chain").ok and report.check("chain").position == len(lines)


def test_swapped_lines_are_caught(bundle):
    lines = _lines(bundle)
    lines[3], lines[4] = lines[4], lines[3]
    _write(bundle, lines)
    chain = verify_export(bundle).check("chain")
    assert not chain.ok and chain.position == 3 and "line 4" in chain.detail


def test_an_edited_header_final_hash_is_caught(bundle):
    lines = _lines(bundle)
    header = json.loads(lines[0])
    header["final_hash"] = "f" * 64
    lines[0] = json.dumps(header)
    _write(bundle, lines)
    report = verify_export(bundle)
    assert report.check("chain").ok
    final = report.check("final_hash")
    assert not final.ok and final.position == 1 and "line 1" in final.detail


def test_an_edited_header_count_is_caught(bundle):
    lines = _lines(bundle)
    header = json.loads(lines[0])
    header["events"] += 1
    lines[0] = json.dumps(header)
    _write(bundle, lines)
    report = verify_export(bundle)
    assert not report.ok and not report.check("count").ok


def test_a_foreign_header_is_refused(bundle):
    lines = _lines(bundle)
    lines[0] = json.dumps({"format": "something-else", "version": 1, "events": 1, "final_hash": "x"})
    _write(bundle, lines)
    report = verify_export(bundle)
    assert not report.ok and report.first_failure.name == "header" and report.first_failure.position == 1


def test_a_consistently_truncated_export_needs_an_outside_anchor(bundle, mixed):
    """Dropping the tail and fixing the header leaves a valid bundle; the live head hash exposes it."""
    lines = _lines(bundle)
    kept = lines[:-2]
    last = json.loads(kept[-1])
    header = json.loads(lines[0]) | {"events": last["position"], "final_hash": last["hash"]}
    _write(bundle, [json.dumps(header), *kept[1:]])
    assert verify_export(bundle).ok
    live = mixed.recorder.raw_rows()[-1][8]
    report = verify_export(bundle, expected_final_hash=live)
    assert not report.ok and not report.check("final_hash").ok


def test_a_non_json_line_or_wrong_field_type_names_its_line(bundle):
    lines = _lines(bundle)
    original = list(lines)
    lines[2] = lines[2][:-1]
    _write(bundle, lines)
    chain = verify_export(bundle).check("chain")
    assert not chain.ok and chain.position == 3 and "line 3" in chain.detail
    obj = json.loads(original[2])
    obj["position"] = str(obj["position"])
    _write(bundle, [*original[:2], json.dumps(obj), *original[3:]])
    chain = verify_export(bundle).check("chain")
    assert not chain.ok and chain.position == 3 and "position" in chain.detail
