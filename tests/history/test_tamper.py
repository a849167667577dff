"""Truncation and forgery, tried as someone with write access to the database file would (the tamper script of
security finding H6), each run through ``mledger audit`` in a fresh open of the registry: every row of H6's
table that used to pass audit now fails it, or is caught by an anchor kept outside the registry; the anchors
themselves (``--anchor``, ``--expect``, ``--expected-hash``) on the live registry and on exports; the
idempotency table against the events it points at."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from eventstore.canonical import envelope_json, hash_envelope_json
from eventstore.errors import IntegrityError, ValidationError

# These edit or read the SQLite file by hand (MLEDGER_TEST_DATABASE=postgresql leaves them out): the same
# attacks on PostgreSQL are the recorder contract's guard tests (tests/eventstore) and the hand-edited
# catalog row of tests/test_catalog_dialects.py.
pytestmark = pytest.mark.sqlite_only


class Tamper:
    """H6's tamper script: raw SQL on the registry file, dropping and re-creating the guards around an edit
    exactly as they were (so that, name and definition, nothing shows)."""

    def __init__(self, db_path: Path) -> None:
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.triggers = dict(self.db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"))
        assert set(self.triggers) == {"events_no_update", "events_no_delete", "events_no_replace"}

    def drop(self) -> None:
        for name in self.triggers:
            self.db.execute(f"DROP TRIGGER {name}")

    def recreate(self) -> None:
        for sql in self.triggers.values():
            self.db.execute(sql)

    def head(self) -> int:
        return self.db.execute("SELECT max(position) FROM events").fetchone()[0]

    def delete_tail(self, count: int = 1) -> None:
        self.db.execute("DELETE FROM events WHERE position > ?", (self.head() - count,))

    def rechain(self, start: int) -> None:
        """Recompute every hash from ``start`` to the head: the chain is valid again after an edit."""
        previous = self.db.execute("SELECT hash FROM events WHERE position = ?", (start - 1,)).fetchone()
        previous_hash = previous[0] if previous else "0" * 64
        rows = self.db.execute("SELECT position, stream, version, type, schema_version, data, meta, recorded_at"
                               " FROM events WHERE position >= ? ORDER BY position", (start,)).fetchall()
        for row in rows:
            previous_hash = hash_envelope_json(previous_hash, envelope_json(*row))
            self.db.execute("UPDATE events SET hash = ? WHERE position = ?", (previous_hash, row[0]))

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def base(reg, make_artifact):
    """H6's base registry: two versions, an alias, a tag, metrics."""
    art = make_artifact("m.bin", b"weights\n")
    v1 = reg.register("m", str(art), params={"lr": 0.1})
    v2 = reg.update(v1, params={"lr": 0.01})
    reg.alias(v2, "production")
    reg.tag(v1, stage="old")
    reg.metrics(v2, acc=0.9)
    reg.projection.ensure_current()
    return reg


@pytest.fixture
def tamper(base):
    t = Tamper(base.config.db_path)
    yield t
    t.close()


def audit_fails(cli, *argv: str) -> tuple[str, str]:
    """``mledger audit ARGV`` must exit 6 with one line on stderr: returns (that line, stdout)."""
    code, out, err = cli("audit", *argv)
    assert code == 6, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0], out


def audit_passes(cli, *argv: str) -> str:
    code, out, err = cli("audit", *argv)
    assert code == 0, (out, err)
    return out


def anchor_now(cli) -> str:
    code, out, err = cli("audit", "--anchor")
    assert code == 0, err
    return out.strip()


# -- H6, row by row ---------------------------------------------------------------------------------------------

def test_dropped_guards_stay_dropped_on_open_and_fail_the_audit(base, tamper, cli):
    """H6 row 1 (was: ok, because opening re-ran CREATE TRIGGER IF NOT EXISTS before the check)."""
    tamper.drop()
    line, out = audit_fails(cli)
    assert "append_only" in line and "events_no_update missing" in line
    assert "events_no_delete missing" in out and "events_no_replace missing" in out
    # Opening the registry (as the audit did) did not put them back.
    assert tamper.db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
                             ).fetchone()[0] == 0


def test_same_named_no_op_guards_and_a_deleted_tail_fail_the_audit(base, tamper, cli):
    """H6 row 2 (was: ok, only the names were checked)."""
    tamper.drop()
    tamper.db.execute("CREATE TRIGGER events_no_delete BEFORE DELETE ON events WHEN 0 BEGIN SELECT 1; END")
    tamper.db.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN 0 BEGIN SELECT 1; END")
    tamper.db.execute("CREATE TRIGGER events_no_replace BEFORE INSERT ON events WHEN 0 BEGIN SELECT 1; END")
    tamper.delete_tail()  # the no-op guard lets it through
    line, out = audit_fails(cli, "--json")
    report = json.loads(out)
    guards = next(c for c in report["checks"] if c["name"] == "append_only")
    assert not guards["ok"]
    assert "events_no_delete altered: CREATE TRIGGER events_no_delete BEFORE DELETE ON events WHEN 0" in guards["detail"]
    assert "events_no_update altered" in guards["detail"] and "events_no_replace altered" in guards["detail"]


def test_a_deleted_newest_event_after_a_rebuild_is_caught_by_an_earlier_anchor(base, tamper, cli):
    """H6 row 5 (was: ok). The chain alone cannot see it; the anchor at the old head can."""
    kept = anchor_now(cli)
    old_head = tamper.head()
    tamper.drop()
    tamper.delete_tail()
    tamper.recreate()
    code, _, err = cli("projections", "rebuild")
    assert code == 0, err
    audit_passes(cli)  # what the log alone can prove: a shorter, consistent history
    line, _ = audit_fails(cli, "--expect", kept)
    assert f"anchor #{old_head}" in line and f"ends at #{old_head - 1}" in line and "truncated" in line
    line, _ = audit_fails(cli, "--expected-hash", kept.split(":")[1])
    assert "final_hash" in line


def test_an_old_event_rewritten_with_every_later_hash_recomputed(base, tamper, cli):
    """H6 row 6 (was: ok after a rebuild). Which check catches a whole-chain rewrite from P to the head:
    before a rebuild the replay (the catalog saw the original); after one, only an anchor at or after P."""
    p = next(pos for pos, t in tamper.db.execute("SELECT position, type FROM events") if t == "MetricsRecorded")
    kept = anchor_now(cli)
    before_p = tamper.db.execute("SELECT hash FROM events WHERE position = ?", (p - 1,)).fetchone()[0]
    earlier = f"#{p - 1}:{before_p}"
    tamper.drop()
    data = tamper.db.execute("SELECT data FROM events WHERE position = ?", (p,)).fetchone()[0]
    tamper.db.execute("UPDATE events SET data = ? WHERE position = ?", (data.replace("0.9", "0.99"), p))
    tamper.rechain(p)
    tamper.recreate()
    line, out = audit_fails(cli)  # the stored catalog still says 0.9
    assert "replay" in line
    assert "ok   chain" in out
    code, _, err = cli("projections", "rebuild")
    assert code == 0, err
    audit_passes(cli)  # the log and the catalog agree again
    line, _ = audit_fails(cli, "--expect", kept)
    assert "anchors" in line and "rewritten" in line
    audit_passes(cli, "--expect", earlier)  # an anchor before P speaks only about what came before


def test_same_meaning_bytes_fail_the_chain(base, tamper, cli):
    """H6 row 8 / L3 (was: ok). A duplicate key first: Python reads the last copy (the chain's canonical
    form is unchanged), SQLite's json_extract reads the forged first one."""
    p, data = next((pos, d) for pos, t, d in tamper.db.execute("SELECT position, type, data FROM events")
                   if t == "VersionRegistered")
    forged = '{"name":"forged",' + data[1:]
    assert json.loads(forged) == json.loads(data)
    tamper.drop()
    tamper.db.execute("UPDATE events SET data = ? WHERE position = ?", (forged, p))
    tamper.recreate()
    assert tamper.db.execute("SELECT json_extract(data, '$.name') FROM events WHERE position = ?",
                             (p,)).fetchone()[0] == "forged"
    line, _ = audit_fails(cli)
    assert f"chain at #{p}" in line and "canonical form" in line


def test_white_space_in_meta_fails_the_chain(base, tamper, cli):
    tamper.drop()
    meta = tamper.db.execute("SELECT meta FROM events WHERE position = 2").fetchone()[0]
    tamper.db.execute("UPDATE events SET meta = ? WHERE position = 2", (meta.replace(":", ": "),))
    tamper.recreate()
    line, _ = audit_fails(cli)
    assert "chain at #2" in line and "meta is not stored in canonical form" in line


def test_a_forged_tail_after_the_last_anchor_is_not_detectable_by_the_log(base, tamper, cli):
    """H6 row 7, as documented in docs/operations.md: an event appended at head + 1 with a correct hash and
    a made-up actor, no guard touched, is a valid log: audit passes and every earlier anchor still holds.
    Only an anchor taken after it (by the real head's owner) or signed events could tell."""
    kept = anchor_now(cli)
    head, last_hash, stream, version = tamper.db.execute(
        "SELECT position, hash, stream, (SELECT max(version) FROM events WHERE stream = e.stream), recorded_at"
        " FROM events e ORDER BY position DESC LIMIT 1").fetchone()[:4]
    recorded_at = tamper.db.execute("SELECT recorded_at FROM events WHERE position = ?", (head,)).fetchone()[0]
    data = '{"alias":"ceo-pick","name":"m","version":1}'
    meta = '{"actor":"ceo@corp"}'
    env = envelope_json(head + 1, stream, version + 1, "AliasAssigned", 1, data, meta, recorded_at)
    tamper.db.execute("INSERT INTO events VALUES (?, ?, ?, 'AliasAssigned', 1, ?, ?, ?, ?)",
                      (head + 1, stream, version + 1, data, meta, recorded_at, hash_envelope_json(last_hash, env)))
    audit_passes(cli, "--expect", kept)
    code, out, _ = cli("show", "m@ceo-pick", "--json")
    assert code == 0 and json.loads(out)["ref"] == "m@1"


# -- what commands do on a registry whose guards changed -----------------------------------------------------

def test_commands_refuse_to_append_until_the_guards_are_restored(base, tamper, cli):
    tamper.db.execute("DROP TRIGGER events_no_delete")
    head = tamper.head()
    code, out, err = cli("tag", "m@1", "k=v")
    assert code == 6 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "events_no_delete missing" in err and "--restore-guards" in err
    assert tamper.head() == head
    code, out, _ = cli("show", "m@1", "--json")  # reading still works
    assert code == 0 and json.loads(out)["ref"] == "m@1"
    code, out, err = cli("audit", "--restore-guards")
    assert code == 0, (out, err)
    assert "restored guards: events_no_delete missing" in err
    assert cli("tag", "m@1", "k=v")[0] == 0
    assert tamper.head() == head + 1
    with pytest.raises(sqlite3.IntegrityError, match="DELETE refused"):
        tamper.db.execute("DELETE FROM events WHERE position = ?", (head + 1,))


def test_an_extra_trigger_on_the_log_is_reported(base, tamper, cli):
    tamper.db.execute("CREATE TRIGGER events_shadow AFTER INSERT ON events BEGIN SELECT 1; END")
    line, _ = audit_fails(cli)
    assert "events_shadow extra: CREATE TRIGGER events_shadow AFTER INSERT ON events" in line
    code, _, err = cli("audit", "--restore-guards")
    assert code == 0 and "events_shadow extra" in err
    assert tamper.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events_shadow'").fetchone()[0] == 0


def test_a_changed_idempotency_guard_is_reported(base, tamper, cli):
    tamper.db.execute("DROP TRIGGER idempotency_no_delete")
    tamper.db.execute("CREATE TRIGGER idempotency_no_delete BEFORE DELETE ON idempotency WHEN 0 "
                      "BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: DELETE refused'); END")
    line, _ = audit_fails(cli)
    assert "idempotency_no_delete altered" in line


# -- anchors and expected hashes ----------------------------------------------------------------------------

def test_anchor_prints_the_head_and_holds_on_a_grown_log(base, cli):
    kept = anchor_now(cli)
    head = base.recorder.head()
    assert kept == f"#{head}:{base.recorder.raw_rows()[-1][8]}"
    code, out, _ = cli("audit", "--anchor", "--json")
    assert code == 0 and json.loads(out) == {"position": head, "hash": kept.split(":")[1], "anchor": kept}
    base.tag("m@2", grown="yes")
    base.metrics("m@1", acc=0.5)
    second = anchor_now(cli)
    out = audit_passes(cli, "--expect", kept, "--expect", second)
    assert "anchors" in out and f"#{head}" in out
    # The head's hash moved on: the old head hash is no longer the final one, but its anchor still holds.
    line, _ = audit_fails(cli, "--expected-hash", kept.split(":")[1])
    assert "--expect" in line
    audit_passes(cli, "--expected-hash", second.split(":")[1].upper())


def test_an_anchor_beyond_the_head_or_with_another_hash_fails_with_one_line(base, cli):
    head = base.recorder.head()
    line, _ = audit_fails(cli, "--expect", f"#{head + 5}:{'a' * 64}")
    assert f"anchor #{head + 5}" in line and "truncated" in line
    line, _ = audit_fails(cli, "--expect", f"#2:{'b' * 64}")
    assert "anchor #2" in line and "rewritten" in line
    # One good anchor does not hide a bad one.
    line, _ = audit_fails(cli, "--expect", anchor_now(cli), "--expect", f"#1:{'c' * 64}")
    assert "anchor #1" in line


@pytest.mark.parametrize("bad", ["5:abc", "#x:" + "a" * 64, "#1:" + "g" * 64, "#1", "#١:" + "a" * 64,
                                 "#0:" + "a" * 64, ""])
def test_a_malformed_anchor_or_hash_is_refused_with_one_line(base, cli, bad):
    head = base.recorder.head()
    for argv in (["--expect", bad], ["--expected-hash", bad]):
        code, out, err = cli("audit", *argv)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (argv, err)
    assert base.recorder.head() == head


def test_expected_hash_on_the_live_registry_is_checked(base, cli):
    """Was silently ignored (rc 0 with a wrong hash)."""
    last = base.recorder.raw_rows()[-1][8]
    out = audit_passes(cli, "--expected-hash", last)
    assert "final_hash" in out
    line, _ = audit_fails(cli, "--expected-hash", "0" * 64)
    assert "final_hash" in line and last in line


def test_the_sdk_audits_against_anchors(base):
    kept = base.anchor()
    assert str(kept) == f"#{base.recorder.head()}:{base.recorder.raw_rows()[-1][8]}"
    base.tag("m@1", more="x")
    report = base.audit(expect=[kept, str(base.anchor())], expected_hash=base.anchor().hash)
    assert report.ok, report.to_json()
    assert report.check("anchors").ok and report.check("final_hash").ok
    report = base.audit(expect=[f"#{kept.position + 50}:{kept.hash}"])
    assert not report.ok and report.first_failure.name == "anchors"
    with pytest.raises(ValidationError):
        base.audit(expect=["nonsense"])


def test_verify_export_with_anchors(base, cli, tmp_path: Path):
    kept = anchor_now(cli)
    base.tag("m@1", later="yes")
    bundle = tmp_path / "evidence.jsonl"
    assert cli("audit", "--export", str(bundle))[0] == 0
    out = audit_passes(cli, "--verify-export", str(bundle), "--expect", kept)
    assert "anchors" in out
    # Truncated and re-headed consistently: it verifies alone, the anchor catches it.
    lines = bundle.read_text().splitlines()
    position = int(kept[1:].split(":")[0])
    kept_lines = lines[1:position]  # up to position - 1
    last = json.loads(kept_lines[-1])
    header = json.loads(lines[0]) | {"events": last["position"], "final_hash": last["hash"]}
    bundle.write_text("\n".join([json.dumps(header), *kept_lines]) + "\n")
    audit_passes(cli, "--verify-export", str(bundle))
    line, _ = audit_fails(cli, "--verify-export", str(bundle), "--expect", kept)
    assert f"anchor #{position}" in line and "truncated" in line
    report = base.verify_export(bundle, expect=[kept])
    assert not report.ok and report.check("anchors").position == position


def test_a_same_meaning_edit_of_an_export_line_is_caught(base, cli, tmp_path: Path):
    bundle = tmp_path / "evidence.jsonl"
    assert cli("audit", "--export", str(bundle))[0] == 0
    lines = bundle.read_text().splitlines()
    lines[2] = '{"data":{"forged":1},' + lines[2][1:]  # position 2 gets a duplicate "data" key first
    bundle.write_text("\n".join(lines) + "\n")
    line, _ = audit_fails(cli, "--verify-export", str(bundle))
    assert "line 3" in line and "canonical form" in line


# -- idempotency keys against the log ---------------------------------------------------------------------

def test_a_retry_after_its_events_were_truncated_is_one_line_and_audit_names_the_key(base, tamper, cli):
    """H6: `update m@1 --params '{"x":1}' --idempotency-key job-42`, its event truncated and the catalog
    rebuilt: the retry gave a traceback, and audit passed."""
    code, _, err = cli("update", "m@1", "--params", '{"x":1}', "--idempotency-key", "job-42")
    assert code == 0, err
    tamper.drop()
    tamper.delete_tail()
    tamper.recreate()
    assert cli("projections", "rebuild")[0] == 0
    head = tamper.head()
    code, out, err = cli("update", "m@1", "--params", '{"x":1}', "--idempotency-key", "job-42")
    assert code == 6 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "job-42" in err and "truncated" in err and "Traceback" not in err
    assert tamper.head() == head
    line, _ = audit_fails(cli)
    assert "idempotency" in line and "job-42" in line and f"ends at #{head}" in line


def test_a_key_pointing_at_an_event_not_recorded_under_it_is_caught(base, tamper, cli):
    """Truncate a keyed command and put another event in its place: the key now points at a forgery."""
    code, _, err = cli("update", "m@1", "--params", '{"x":1}', "--idempotency-key", "job-7")
    assert code == 0, err
    head = tamper.head()
    tamper.drop()
    row = tamper.db.execute("SELECT stream, version, type, schema_version, data, meta, recorded_at FROM events"
                            " WHERE position = ?", (head,)).fetchone()
    meta = json.loads(row[5])
    assert meta["idempotency_key"] == "job-7"
    forged_meta = json.dumps({"actor": "mallory"}, separators=(",", ":"))
    tamper.db.execute("UPDATE events SET meta = ? WHERE position = ?", (forged_meta, head))
    tamper.rechain(head)
    tamper.recreate()
    assert cli("projections", "rebuild")[0] == 0
    line, _ = audit_fails(cli)
    assert "idempotency" in line and "job-7" in line and "not recorded under it" in line
    code, _, err = cli("update", "m@1", "--params", '{"x":1}', "--idempotency-key", "job-7")
    assert code == 6 and "job-7" in err and len(err.strip().splitlines()) == 1


def test_worker_outcome_keys_cross_check(base, make_artifact):
    """An outcome the worker records on behalf of a request (key ``artifact-stored:#N``, ``causation_id`` N)
    is related to its key: purged bytes fetched again pass."""
    one, two = make_artifact("one.bin", b"bytes one\n"), make_artifact("two.bin", b"bytes two\n")
    base.register("w", str(one), idempotency_key="reg-w")
    base.update("w@1", artifact=str(two))
    base.delete("w@1")
    assert base.gc(0)["versions"] == ["w@1"]
    base.undelete("w@1")  # ArtifactRequested, then the worker's ArtifactStored under its own key
    assert base.get("w@1").status == "ready"
    keys = {k: (f, last) for k, f, last in base.recorder.connection().execute(
        "SELECT key, first_position, last_position FROM idempotency")}
    outcome = [k for k in keys if k.startswith("artifact-stored:#")]
    assert outcome, keys
    stored = base.recorder.event_at(keys[outcome[0]][0])
    assert stored.type == "ArtifactStored" and outcome[0] == f"artifact-stored:#{stored.meta['causation_id']}"
    assert "idempotency_key" not in stored.meta or stored.meta["idempotency_key"] != outcome[0]
    report = base.audit()
    assert report.ok, report.to_json()
    assert report.check("idempotency").ok


def test_the_recorder_refuses_a_keyed_batch_whose_events_do_not_name_the_key(base):
    from eventstore.events import NewEvent, stream_for

    head = base.recorder.head()
    event = NewEvent(stream_for("m"), "Tagged", {"name": "m", "version": 1, "tags": {"a": "b"}}, {"actor": "t"})
    with pytest.raises(ValidationError, match="idempotency"):
        base.recorder.append([event], idempotency_key="k-1")
    assert base.recorder.head() == head


def test_retry_through_the_sdk_raises_integrity_error(base, tamper):
    base.update("m@1", params={"y": 2}, idempotency_key="sdk-1")
    tamper.drop()
    tamper.delete_tail()
    tamper.recreate()
    with pytest.raises(IntegrityError, match="sdk-1"):
        base.update("m@1", params={"y": 2}, idempotency_key="sdk-1")


@pytest.mark.parametrize("argv", [
    ["--anchor", "--expect", "#1:" + "a" * 64], ["--anchor", "--expected-hash", "a" * 64], ["--anchor", "--deep"],
    ["--export", "x.jsonl", "--expect", "#1:" + "a" * 64], ["--anchor", "--export", "x.jsonl"],
    ["--verify-export", "x.jsonl", "--deep"], ["--verify-export", "x.jsonl", "--anchor"],
    ["--verify-export", "x.jsonl", "--restore-guards"],
], ids=" ".join)
def test_audit_options_that_would_be_ignored_are_refused(base, cli, argv, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("audit", *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (argv, out, err)
    assert not (tmp_path / "x.jsonl").exists()
