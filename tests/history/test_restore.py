"""Restore: after random commands A (P = the head), then random commands B (deletes, gc), ``restore(as_of=P)``
makes every model's live view what it was at P, keeps the audit green, is planned exactly by its dry run,
is idempotent, tags every compensating event with the restore's id and position, and — for one model —
leaves the others alone. Purged bytes come back from their source, or are reported missing."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from command_support import (
    EVERY_KIND,
    NAMES,
    Runner,
    assert_exercised,
    command_strategies,
    leaf,
    names,
    refs,
)
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from services import examples

from eventstore.errors import ModelLedgerError, PurgedError

CONTENTS = [b"restore weights zero\n", b"restore weights one\n", b"restore weights two\n"]
TAG_KEYS = ["k1", "env"]

patches = st.dictionaries(st.sampled_from(["lr", "wd"]), leaf, max_size=2)
contents = st.integers(0, len(CONTENTS) - 1)

kinds = command_strategies(contents, patches, st.just(""),
                           st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(["x", "y"]), max_size=1),
                           TAG_KEYS, ["x", "y"], [0.5, 0.9])
# After P: a delete (of a version or a model) and a gc in random order among up to 6 other commands, so there
# is often something to bring back, and bytes to fetch again.
later = st.tuples(st.lists(st.one_of(*kinds, st.tuples(st.just("delete"), names)), max_size=6),
                  st.tuples(st.just("delete"), refs), st.just(("gc",))).flatmap(
    lambda t: st.permutations([*t[0], t[1], t[2]]))

# The restore law's oracle, written here rather than taken from the product: a model's JSON with only what a
# restore cannot (or does not promise to) bring back left out. Nothing is removed from the log, so the
# version numbers created since P stay taken, as deleted versions; the model's version count and the time of
# its last change move on.
MODEL_EXCLUDED = ("versions_count", "updated_at")


def restorable(model: dict | None) -> dict | None:
    """What the restore law compares of one model (``Catalog.model(name).to_json()``), or None if the model
    is not live."""
    if model is None or model["deleted"]:
        return None
    out = {k: v for k, v in model.items() if k not in MODEL_EXCLUDED}
    out["versions"] = [v for v in model["versions"] if not v["deleted"]]
    return out


def restorable_models(catalog, names: list[str]) -> dict[str, dict | None]:
    return {n: restorable(catalog.model(n).to_json()) if catalog.exists(n) else None for n in names}


def stored_since(want: dict[str, dict | None], now: dict[str, dict | None]) -> dict[str, dict | None]:
    """A restore never removes stored bytes, nor forgets that they were stored: a version whose artifact failed
    (or was pending) at P and was stored since (``retry``) keeps that record — ``ready``, or ``purged`` if gc
    freed the bytes since (a restore re-fetches only what was ready at P). ``want`` with those versions'
    status and artifact as they are now."""
    out = {}
    for name, model in want.items():
        current = {v["version"]: v for v in (now.get(name) or {}).get("versions", [])}
        if model is not None:
            model = model | {"versions": [
                v | {k: current[v["version"]][k] for k in ("status", "artifact")}
                if v["status"] in ("failed", "pending") and current.get(v["version"], {}).get("status") in ("ready", "purged")
                else v for v in model["versions"]]}
        out[name] = model
    return out


# After P in the explicit examples: something of every kind a restore must undo — metrics, tags added and
# removed, aliases moved and added, a derived version, deleted versions (one whose bytes gc frees), a model
# brought back, a new version of another model.
UNDO_ALL = [
    ("metrics", "a@~0", "acc", 0.9), ("tag", "a@~0", "k1", "y"), ("untag", "a@~0", "env"), ("tag", "a", "env", "x"),
    ("alias", "a@~1", "prod"), ("alias", "a@~0", "stage"), ("update", "a@~0", {"lr": 9}, None, None, None, False, None),
    ("delete", "a@~1"), ("register", "b", 2, {}, "", {}, None), ("undelete", "team/c"), ("delete", "a@1"), ("gc",),
]


def full_models(reg) -> dict[str, dict]:
    return {m.name: reg.model(m.name).to_json() for m in reg.catalog().list(include_deleted=True)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("restore")


def sources(home: Path) -> list[str]:
    files = []
    for i, content in enumerate(CONTENTS):
        path = home / "in" / f"w{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files.append(str(path))
    return files


@pytest.mark.timeout(1800)  # the PostgreSQL line makes a database per example
def test_restore_makes_every_model_what_it_was_at_p(workdir, catalog_backend):
    tally: Counter = Counter()

    @settings(max_examples=examples(25 if catalog_backend.name == "sqlite" else 12), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(before=st.lists(st.one_of(kinds), min_size=1, max_size=8), after=later)
    @example(before=EVERY_KIND, after=UNDO_ALL)
    def prop(before, after):
        home = Path(tempfile.mkdtemp(dir=workdir))
        try:
            with catalog_backend.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
                runner = Runner(reg, sources(home), tally)
                runner.setup()
                for command in before:
                    runner.run(command)
                p = reg.head()
                want = restorable_models(reg.catalog(as_of=p), NAMES)
                for command in after:
                    runner.run(command)

                head = reg.head()
                dry = reg.restore(as_of=p, dry_run=True)
                assert reg.head() == head, "a dry run appended events"
                assert dry["dry_run"] is True and dry["as_of"] == p

                report = reg.restore(as_of=f"#{p}")
                assert report["as_of"] == p
                appended = [e for e in reg.log(since=head)]
                # What the dry run said is exactly what the real run appended (in the restore's batch).
                restore_events = [e for e in appended if e.meta.get("restore")]
                assert [(e.stream, e.type, e.data) for e in restore_events] == \
                    [(e["stream"], e["type"], e["data"]) for e in dry["events"]]
                assert [e["position"] for e in report["events"]] == [e.position for e in restore_events]
                for e in restore_events:
                    assert e.meta["restore"] == {"id": report["restore_id"], "as_of": p}
                # Anything else appended is the outcome of a re-ingest the restore asked for.
                assert {e.type for e in appended if not e.meta.get("restore")} <= {"ArtifactStored"}
                assert report["missing"] == []
                event(f"restore appended {'some' if restore_events else 'no'} events")
                event(f"re-ingested {'some' if report['reingest'] else 'none'}")
                tally["law: restore appended events"] += bool(restore_events)
                tally["law: restore re-ingested bytes"] += bool(report["reingest"])

                now = restorable_models(reg.catalog(), NAMES)
                assert now == stored_since(want, now)
                for m in reg.catalog().list(include_deleted=True):
                    if want.get(m.name) is None:
                        assert reg.model(m.name).deleted, f"{m.name} did not exist (or was deleted) at #{p}"
                report_audit = reg.audit()
                assert report_audit.ok, report_audit.to_json()

                # Restoring again to the same position has nothing left to do.
                again = reg.restore(as_of=p, dry_run=True)
                assert again["events"] == [], again
        finally:
            catalog_backend.drop_all()
            shutil.rmtree(home, ignore_errors=True)

    prop()
    assert_exercised(tally, ("restore", "retry", "import", "rollback", "undelete", "gc",
                             "law: restore appended events", "law: restore re-ingested bytes"))


def test_restoring_one_model_leaves_the_others_untouched(workdir):
    from modelledger import Registry

    tally: Counter = Counter()

    @settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(before=st.lists(st.one_of(kinds), min_size=1, max_size=8), after=later, target=names)
    @example(before=EVERY_KIND, after=UNDO_ALL, target="a")
    def prop(before, after, target):
        home = Path(tempfile.mkdtemp(dir=workdir))
        try:
            with Registry.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
                runner = Runner(reg, sources(home), tally)
                runner.setup()
                runner.run(("register", "b", 1, {}, "", {}, None))
                for command in before:
                    runner.run(command)
                p = reg.head()
                want = restorable_models(reg.catalog(as_of=p), [target])
                for command in after:
                    runner.run(command)
                if not reg.catalog().exists(target):
                    with pytest.raises(ModelLedgerError):
                        reg.restore(target, as_of=p)
                    return
                others = {n: m for n, m in full_models(reg).items() if n != target}
                head = reg.head()
                report = reg.restore(target, as_of=p)
                tally["law: restore appended events"] += bool(report["events"])
                assert {e["stream"] for e in report["events"]} <= {f"model-{target}"}
                assert all(e.stream == f"model-{target}" for e in reg.log(since=head))
                now = restorable_models(reg.catalog(), [target])
                assert now == stored_since(want, now)
                assert {n: m for n, m in full_models(reg).items() if n != target} == others
                assert reg.audit().ok
        finally:
            shutil.rmtree(home, ignore_errors=True)

    prop()
    assert_exercised(tally, ("restore", "law: restore appended events"))


# -- purged bytes ----------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def purged(reg, make_artifact):
    """``m@1`` (file ``one.bin``, aliased prod, tagged) and ``m@2`` (``two.bin``); at P both live; then
    ``m@1`` deleted and gc(0) frees its bytes."""
    one = make_artifact("one.bin", b"first weights, only in m@1\n")
    two = make_artifact("two.bin", b"second weights\n")
    reg.register("m", str(one), tags={"stage": "prod"})
    reg.update("m@1", params={"lr": 0.1}, artifact=str(two))
    reg.alias("m@1", "prod")
    reg.metrics("m@1", acc=0.9)
    p = reg.head()
    reg.delete("m@1")
    gc = reg.gc(0)
    assert gc["versions"] == ["m@1"]
    assert reg.get("m@1").status == "purged"
    return reg, p, one


@pytest.mark.local_only("re-fetches purged bytes from a path on this machine; over HTTP the source is an "
                       "upload (upload://), whose bytes no one can fetch again")
def test_purged_bytes_come_back_from_their_source_byte_identical(purged, tmp_path):
    reg, p, one = purged
    report = reg.restore(as_of=p)
    assert report["reingest"] == ["m@1"] and report["missing"] == []
    types = [e["type"] for e in report["events"]]
    assert "VersionRestored" in types and "ArtifactRequested" in types
    v = reg.get("m@prod")
    assert v.version == 1 and v.status == "ready" and v.metrics == {"acc": 0.9}
    dest = tmp_path / "pulled.bin"
    reg.pull("m@1", str(dest))
    assert dest.read_bytes() == one.read_bytes()
    assert "sha256:" + sha256(dest) == v.artifact["digest"]
    assert reg.audit(deep=True).ok


def test_purged_bytes_whose_source_is_gone_are_reported_missing(purged):
    reg, p, one = purged
    one.unlink()
    report = reg.restore(as_of=p)
    assert report["missing"] == ["m@1"] and report["reingest"] == []
    assert "ArtifactRequested" not in [e["type"] for e in report["events"]]
    # The rest of the restore still happened: the version is back in the catalog, its bytes are not.
    v = reg.get("m@prod")
    assert v.version == 1 and not v.deleted and v.status == "purged"
    with pytest.raises(PurgedError):
        reg.pull("m@1", str(one.parent / "nope.bin"))
    assert reg.audit().ok


def test_restore_cli_exits_non_zero_when_bytes_are_missing(purged, cli):
    reg, p, one = purged
    one.unlink()
    head = reg.head()
    code, out, err = cli("restore", "--as-of", f"#{p}", "--json")
    assert code != 0
    data = json.loads(out)
    assert data["missing"] == ["m@1"]
    assert reg.head() > head  # the rest of the restore was appended


@pytest.mark.local_only("re-ingests from a path on this machine; the server never reads a path a client names")
def test_restore_cli_with_every_source_present_exits_zero(purged, cli):
    reg, p, _ = purged
    code, out, err = cli("restore", "--as-of", f"#{p}", "--json")
    assert code == 0, err
    assert json.loads(out)["reingest"] == ["m@1"]
    assert reg.get("m@1").status == "ready"


@pytest.mark.local_only("re-fetches purged bytes from a path on this machine; over HTTP the source is an "
                       "upload (upload://), whose bytes no one can fetch again")
def test_dry_run_of_a_purge_restore_appends_nothing_and_plans_the_reingest(purged):
    reg, p, _ = purged
    head = reg.head()
    dry = reg.restore(as_of=p, dry_run=True)
    assert reg.head() == head
    assert dry["reingest"] == ["m@1"]
    assert reg.get("m@1").status == "purged"
    real = reg.restore(as_of=p)
    assert [(e["type"], e["data"]) for e in real["events"]] == [(e["type"], e["data"]) for e in dry["events"]]


def test_each_compensating_event_names_its_restore(purged):
    reg, p, _ = purged
    report = reg.restore(as_of=p)
    assert report["events"]
    for e in report["events"]:
        assert e["meta"]["restore"] == {"id": report["restore_id"], "as_of": p}
        assert e["meta"]["actor"] == "tester@test"


def test_a_model_created_after_p_is_deleted_by_the_restore(reg, make_artifact):
    reg.register("old", str(make_artifact("o.bin", b"o")))
    p = reg.head()
    reg.register("new", str(make_artifact("n.bin", b"n")))
    reg.restore(as_of=p)
    assert reg.model("new").deleted
    assert not reg.model("old").deleted
    assert [m.name for m in reg.catalog().list()] == ["old"]


def test_restore_refuses_a_bad_position_and_appends_nothing(reg, artifact):
    reg.register("m", str(artifact))
    head = reg.head()
    for bad in ("#x", "#999", "yesterday", -1):
        with pytest.raises(ModelLedgerError):
            reg.restore(as_of=bad)
    assert reg.head() == head
