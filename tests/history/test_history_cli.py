"""The history commands from the command line: ``--as-of`` on show/list/history/diff (positions and
timestamps, refusals), ``diff`` and ``history`` JSON, ``audit`` (healthy, tampered, export and its
verification), ``restore --dry-run`` and ``undelete`` of purged bytes."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest


def head(reg) -> int:
    return reg.recorder.head()


@pytest.fixture
def story(reg, make_artifact):
    """``m@1`` (production first), ``m@2`` derived with new params (production after), metrics on both.
    Returns the positions: after production → 1 (``p1``) and after production → 2 (``p2``)."""
    one = make_artifact("one.bin", b"weights one\n")
    v1 = reg.register("m", str(one), params={"lr": 0.1, "opt": {"name": "sgd"}}, tags={"task": "vision"})
    v2 = reg.update(v1, params={"lr": 0.01, "opt": {"momentum": 0.9}})
    reg.metrics(v1, acc=0.9, loss=0.3)
    reg.metrics(v2, acc=0.93)
    reg.alias(v1, "production")
    p1 = head(reg)
    time.sleep(0.002)  # distinct recorded_at for the timestamp test
    reg.alias(v2, "production")
    p2 = head(reg)
    return {"p1": p1, "p2": p2, "one": one}


def out_json(result: tuple[int, str, str]) -> dict:
    code, out, err = result
    assert code == 0, err
    return json.loads(out)


# -- --as-of -------------------------------------------------------------------------------------------

def test_show_alias_as_of_a_position_answers_what_it_pointed_to_then(story, cli):
    then = out_json(cli("show", "m@production", "--as-of", f"#{story['p1']}", "--json"))
    assert then["ref"] == "m@1" and then["aliases"] == ["production"]
    now = out_json(cli("show", "m@production", "--json"))
    assert now["ref"] == "m@2" and now["aliases"] == ["production"]
    assert out_json(cli("show", "m@production", "--as-of", f"#{story['p2']}", "--json"))["ref"] == "m@2"
    # Before it was assigned, there was no production.
    code, out, err = cli("show", "m@production", "--as-of", f"#{story['p1'] - 1}")
    assert code == 3 and out == "" and len(err.strip().splitlines()) == 1
    # The model as of then shows the alias where it was.
    model = out_json(cli("show", "m", "--as-of", f"#{story['p1']}", "--json"))
    assert model["aliases"] == {"production": 1}
    assert [v["aliases"] for v in model["versions"]] == [["production"], []]


def test_as_of_a_timestamp_between_two_events_picks_the_earlier(story, reg, cli):
    events = {e.position: e for e in reg.log()}
    t1 = datetime.fromisoformat(events[story["p1"]].recorded_at.replace("Z", "+00:00"))
    t2 = datetime.fromisoformat(events[story["p2"]].recorded_at.replace("Z", "+00:00"))
    assert t1 < t2
    between = t1 + (t2 - t1) / 2
    assert t1 < between < t2
    for text in (between.isoformat(), between.strftime("%Y-%m-%dT%H:%M:%S.%fZ")):
        assert reg.position_of(text) == story["p1"]
        assert out_json(cli("show", "m@production", "--as-of", text, "--json"))["ref"] == "m@1"
    # Exactly at an event's time: that event is included.
    assert out_json(cli("show", "m@production", "--as-of", events[story["p2"]].recorded_at, "--json"))["ref"] == "m@2"
    # Before the first event: nothing existed.
    first = datetime.fromisoformat(events[1].recorded_at.replace("Z", "+00:00"))
    assert out_json(cli("list", "--as-of", (first - timedelta(seconds=1)).isoformat(), "--json")) == {"models": []}
    code, _, err = cli("show", "m", "--as-of", (first - timedelta(seconds=1)).isoformat())
    assert code == 3 and len(err.strip().splitlines()) == 1


BAD_AS_OF = ["#x", "#999999", "yesterday", "#-1", "#"]


@pytest.mark.parametrize("bad", BAD_AS_OF)
@pytest.mark.parametrize("argv", [
    ["show", "m@production"], ["show", "m"], ["list"], ["best", "m", "--metric", "acc"], ["history", "m"],
    ["diff", "m@1", "m@2"], ["diff", "m@1", "m@2", "--a-as-of"], ["diff", "m@1", "m@2", "--b-as-of"],
    ["restore"], ["restore", "m"], ["restore", "--dry-run"],
], ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_a_bad_as_of_exits_2_with_one_line_and_appends_nothing(story, reg, cli, argv, bad):
    before = head(reg)
    args = [*argv, bad] if argv[-1].endswith("-as-of") else [*argv, "--as-of", bad]
    code, out, err = cli(*args)
    assert code == 2, (args, out, err)
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("mledger"), err
    assert head(reg) == before


def test_list_and_best_as_of(story, reg, cli):
    reg.delete("m@2")
    assert out_json(cli("best", "m", "--metric", "acc", "--json"))["ref"] == "m@1"
    assert out_json(cli("best", "m", "--metric", "acc", "--as-of", f"#{story['p2']}", "--json"))["ref"] == "m@2"
    listed = out_json(cli("list", "--alias", "production", "--as-of", f"#{story['p1']}", "--json"))["models"]
    assert [m["name"] for m in listed] == ["m"] and listed[0]["aliases"] == {"production": 1}
    assert out_json(cli("list", "--alias", "production", "--json")) == {"models": []}  # deleting m@2 removed it


# -- diff ----------------------------------------------------------------------------------------------

def test_diff_json_has_param_paths_metrics_side_by_side_and_lineage(story, cli):
    d = out_json(cli("diff", "m@1", "m@2", "--json"))
    assert d["a"] == "m@1" and d["b"] == "m@2"
    assert d["params"]["changed"] == {"lr": {"old": 0.1, "new": 0.01}}
    assert d["params"]["added"] == {"opt.momentum": 0.9}
    assert d["params"]["removed"] == {}
    assert d["metrics"] == {"acc": {"a": 0.9, "b": 0.93, "delta": 0.03},
                            "loss": {"a": 0.3, "b": None, "delta": None}}
    assert d["lineage"] == {"common_ancestor": 1, "chain": [1, 2]}
    assert d["aliases"] == {"a": [], "b": ["production"]}
    assert d["artifact"]["same"] is True


def test_diff_of_an_alias_then_against_now(story, cli):
    d = out_json(cli("diff", "m@production", "--a-as-of", f"#{story['p1']}", "m@production", "--json"))
    assert d["a"] == "m@1" and d["b"] == "m@2"
    assert d["params"]["changed"] == {"lr": {"old": 0.1, "new": 0.01}}
    # Then vs then: the same version, nothing changed.
    same = out_json(cli("diff", "m@production", "m@production", "--as-of", f"#{story['p1']}", "--json"))
    assert same["a"] == same["b"] == "m@1"
    assert same["params"] == {"added": {}, "removed": {}, "changed": {}}
    # Human output names both sides.
    code, out, err = cli("diff", "m@production", "--a-as-of", f"#{story['p1']}", "m@production")
    assert code == 0 and "m@1" in out and "m@2" in out and "lr" in out


def test_diff_sees_metrics_as_they_were(story, reg, cli):
    reg.metrics("m@1", acc=0.95)
    d = out_json(cli("diff", "m@1", "m@1", "--a-as-of", f"#{story['p1']}", "--json"))
    assert d["metrics"]["acc"] == {"a": 0.9, "b": 0.95, "delta": 0.05}


# -- history -------------------------------------------------------------------------------------------

@pytest.mark.local_only("expects the log to start at #1 with the model; a server's log starts with its token grant")
def test_history_json_lists_events_with_their_changes(story, reg, cli):
    data = out_json(cli("history", "m@2", "--json"))
    types = [e["type"] for e in data["events"]]
    assert types == ["ParamsUpdated", "MetricsRecorded", "AliasAssigned"]
    assert len(data["changes"]) == len(data["events"])
    assert all(e["data"]["version"] == 2 for e in data["events"])
    created, metrics, alias = data["changes"]
    assert created["params"]["changed"] == {"lr": {"old": 0.1, "new": 0.01}}
    assert metrics["metrics"]["acc"] == {"a": None, "b": 0.93, "delta": None}
    assert alias["aliases"] == {"a": [], "b": ["production"]}
    for e in data["events"]:
        assert set(e) >= {"position", "stream", "version", "type", "schema_version", "data", "meta",
                          "recorded_at", "hash"}

    whole = out_json(cli("history", "m", "--json"))
    assert [e["position"] for e in whole["events"]] == list(range(1, head(reg) + 1))
    assert whole["events"][0]["type"] == "ModelRegistered"


def test_history_as_of_stops_there_and_resolves_the_alias_then(story, cli):
    data = out_json(cli("history", "m@production", "--as-of", f"#{story['p1']}", "--json"))
    assert data["events"] and all(e["data"]["version"] == 1 for e in data["events"])
    assert max(e["position"] for e in data["events"]) == story["p1"]
    assert data["events"][-1]["type"] == "AliasAssigned"


# -- audit ---------------------------------------------------------------------------------------------

def test_audit_of_a_healthy_registry_exits_0(story, mledger):
    result = mledger("audit")
    assert result.returncode == 0, result.stderr
    result = mledger("audit", "--deep", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.sqlite_only  # edits the SQLite file by hand (PostgreSQL's guards: tests/eventstore)
def test_audit_names_the_position_of_an_event_changed_by_one_byte(story, reg, mledger):
    target = next(e.position for e in reg.log() if e.type == "ParamsUpdated")
    conn = sqlite3.connect(reg.config.db_path, isolation_level=None)
    try:
        for trigger in ("events_no_update", "events_no_delete", "events_no_replace"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        data = conn.execute("SELECT data FROM events WHERE position = ?", (target,)).fetchone()[0]
        assert "0.01" in data
        conn.execute("UPDATE events SET data = ? WHERE position = ?", (data.replace("0.01", "0.02", 1), target))
    finally:
        conn.close()
    result = mledger("audit")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"#{target}" in lines[0], result.stderr


@pytest.mark.local_only("audit --export reads the database itself; over HTTP it is refused by design")
def test_audit_export_verifies_and_an_edited_export_fails(story, cli, tmp_path: Path):
    bundle = tmp_path / "evidence.jsonl"
    summary = out_json(cli("audit", "--export", str(bundle), "--json"))
    assert summary["events"] > 0
    assert out_json(cli("audit", "--verify-export", str(bundle), "--json"))["ok"] is True

    lines = bundle.read_text(encoding="utf-8").splitlines()
    n = next(i for i, line in enumerate(lines) if '"MetricsRecorded"' in line)
    lines[n] = lines[n].replace("0.93", "0.99", 1) if "0.93" in lines[n] else lines[n].replace("0.9", "0.8", 1)
    bundle.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = cli("audit", "--verify-export", str(bundle))
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "chain" in err


# -- restore and undelete ------------------------------------------------------------------------------

def test_restore_dry_run_appends_nothing_and_shows_the_plan(story, reg, cli):
    reg.delete("m@2")
    reg.tag("m@1", stage="old")
    before = head(reg)
    plan = out_json(cli("restore", "--as-of", f"#{story['p2']}", "--dry-run", "--json"))
    assert head(reg) == before
    assert plan["dry_run"] is True and plan["as_of"] == story["p2"]
    assert [e["type"] for e in plan["events"]] == ["VersionRestored", "AliasAssigned", "Untagged"]
    code, out, err = cli("restore", "m", "--as-of", f"#{story['p2']}", "--dry-run")
    assert code == 0 and "would append 3 event(s)" in out
    assert head(reg) == before
    # The real run appends exactly that plan, and production is m@2 again.
    done = out_json(cli("restore", "--as-of", f"#{story['p2']}", "--json"))
    assert [(e["type"], e["data"]) for e in done["events"]] == [(e["type"], e["data"]) for e in plan["events"]]
    assert out_json(cli("show", "m@production", "--json"))["ref"] == "m@2"
    assert out_json(cli("restore", "--as-of", f"#{story['p2']}", "--dry-run", "--json"))["events"] == []


@pytest.mark.local_only("re-fetches purged bytes from a path on this machine; over HTTP the source is an "
                       "upload (upload://), whose bytes no one can fetch again")
def test_undelete_of_a_purged_version_brings_its_bytes_back(reg, cli, make_artifact, tmp_path: Path):
    one = make_artifact("one.bin", b"bytes only version one has\n")
    two = make_artifact("two.bin", b"bytes of version two\n")
    out_json(cli("register", "m", "--artifact", str(one), "--json"))
    out_json(cli("update", "m@1", "--artifact", str(two), "--json"))
    out_json(cli("delete", "m@1", "--json"))
    gc = out_json(cli("gc", "--grace", "0", "--json"))
    assert gc["versions"] == ["m@1"]
    assert out_json(cli("show", "m@1", "--json"))["status"] == "purged"
    code, _, err = cli("pull", "m@1", str(tmp_path / "before.bin"))
    assert code != 0 and not (tmp_path / "before.bin").exists()

    events = out_json(cli("undelete", "m@1", "--json"))["events"]
    assert [e["type"] for e in events] == ["VersionRestored", "ArtifactRequested"]
    shown = out_json(cli("show", "m@1", "--json"))
    assert shown["status"] == "ready" and shown["deleted"] is False
    dest = tmp_path / "after.bin"
    out_json(cli("pull", "m@1", str(dest), "--json"))
    assert dest.read_bytes() == one.read_bytes()
    code, out, err = cli("audit", "--deep")
    assert code == 0, err


@pytest.mark.local_only("re-fetches purged bytes from a path on this machine; over HTTP the source is an "
                       "upload (upload://), whose bytes no one can fetch again")
def test_undelete_of_a_model_whose_bytes_gc_freed_brings_them_back(reg, cli, make_artifact, tmp_path: Path):
    one = make_artifact("one.bin", b"model-level undelete bytes\n")
    out_json(cli("register", "m", "--artifact", str(one), "--json"))
    out_json(cli("delete", "m", "--json"))
    assert out_json(cli("gc", "--grace", "0", "--json"))["versions"] == ["m@1"]
    out_json(cli("undelete", "m", "--json"))
    assert out_json(cli("show", "m@1", "--json"))["status"] == "ready"
    dest = tmp_path / "after.bin"
    out_json(cli("pull", "m", str(dest), "--json"))
    assert dest.read_bytes() == one.read_bytes()


def _purge_gone(cli, make_artifact, delete_ref: str):
    """``m@1`` registered from a file, then deleted (``delete_ref``: the version or the model), purged by gc,
    and its source removed: no one can fetch its bytes again (over HTTP its source is an upload anyway)."""
    one = make_artifact("gone.bin", b"bytes whose source is gone\n")
    out_json(cli("register", "m", "--artifact", str(one), "--json"))
    if delete_ref == "m@1":
        out_json(cli("update", "m@1", "--artifact", str(make_artifact("two.bin", b"kept\n")), "--json"))
    out_json(cli("delete", delete_ref, "--json"))
    assert out_json(cli("gc", "--grace", "0", "--json"))["versions"] == ["m@1"]
    one.unlink()
    return one


def _back_without_bytes(cli, tmp_path: Path) -> None:
    shown = out_json(cli("show", "m@1", "--json"))
    assert shown["status"] == "purged" and shown["deleted"] is False  # not "failed": nothing was tried
    code, _, err = cli("pull", "m@1", str(tmp_path / "pulled.bin"))
    assert code != 0 and "purged" in err and not (tmp_path / "pulled.bin").exists()
    code, out, err = cli("audit", "--deep")
    assert code == 0, err


def test_undelete_of_a_version_whose_bytes_cannot_come_back_restores_the_record_and_says_so(
        reg, cli, make_artifact, tmp_path: Path):
    _purge_gone(cli, make_artifact, "m@1")
    code, out, err = cli("undelete", "m@1", "--json")
    assert code == 1, err
    data = json.loads(out)
    assert [e["type"] for e in data["events"]] == ["VersionRestored"] and data["missing"] == ["m@1"]
    _back_without_bytes(cli, tmp_path)
    # Undeleting again is a conflict, as for any live version: the first run did what it could.
    assert cli("undelete", "m@1")[0] == 4


def test_undelete_of_a_model_whose_bytes_cannot_come_back_says_the_same(reg, cli, make_artifact, tmp_path: Path):
    _purge_gone(cli, make_artifact, "m")
    code, out, err = cli("undelete", "m")
    assert code == 1, err
    assert "ModelRestored" in out and "ArtifactRequested" not in out
    assert "MISSING (purged, source unreadable): m@1" in out
    _back_without_bytes(cli, tmp_path)


@pytest.mark.local_only("re-fetches from a path on this machine; an upload's bytes (upload://) no one can fetch")
def test_retry_brings_back_the_bytes_of_an_undeleted_purged_version_once_its_source_is_back(
        reg, cli, make_artifact, tmp_path: Path):
    one = _purge_gone(cli, make_artifact, "m@1")
    assert cli("undelete", "m@1", "--json")[0] == 1
    one.write_bytes(b"bytes whose source is gone\n")
    shown = out_json(cli("retry", "m@1", "--json"))
    assert shown["status"] == "ready"
    out_json(cli("pull", "m@1", str(tmp_path / "pulled.bin"), "--json"))
    assert (tmp_path / "pulled.bin").read_bytes() == one.read_bytes()
    code, out, err = cli("audit", "--deep")
    assert code == 0, err
