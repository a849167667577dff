"""The import door (``Registry.append_batch``) cannot stop or steer the registry.

- Each event of security finding H2 (and L9, L10) is refused with one ``ValidationError`` line naming the
  event and the field, nothing is appended, and every command still works afterwards.
- Everything the registry itself writes (the decider, the worker, gc, restore) passes the same check, so the
  check is no stricter than the product: ``check_event`` of every stored event of a full workflow.
- A property over arbitrary events of every type (``import_strategies``): a batch is either refused whole,
  or, once accepted, every read (show, list, search, best, log, history, the past), audit, export, rebuild,
  restore and the next commands succeed, and the catalog equals a rebuild's.
- A log written before the check (odd artifact records, appended around it) can still be shown.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickletools
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from import_strategies import DIGEST, TEMPLATE_BYTES, batches, deep, event_data

from eventstore import commands as c
from eventstore.decider import decide
from eventstore.errors import ArtifactError, ConflictError, NotFoundError, ValidationError
from eventstore.events import SCHEMA_VERSIONS, VERSION_CREATING, NewEvent, StoredEvent, stream_for
from eventstore.schemas import VERSION_MAX, check_event
from eventstore.state import ModelState, VersionState
from modelledger import Registry, output
from projections import schema
from projections.past import PastCatalog
from projections.projector import apply_events
from projections.rows import (
    MODEL_COLUMNS,
    VERSION_COLUMNS,
    SQLiteStateView,
    aliases_of,
    model_record,
    version_record,
)

ACTOR = "victim@test"


def run_cli(home: Path, *argv: str) -> tuple[int, str, str]:
    from modelledger.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([argv[0], "--home", str(home), "--broker", "embedded", "--actor", ACTOR, *argv[1:]])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def version_data(**changes: Any) -> dict[str, Any]:
    data = {"name": "m", "version": 3, "parent": None, "description": "", "params": {}, "structure": {},
            "optimizer": {}, "tags": {}, "artifact": {"source": "/nonexistent/x.bin"}, "status": "pending"}
    return data | changes


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry home: model ``m`` (versions 1 and 2, alias prod, tags, a metric), ``team/m`` (its version
    deleted). The artifact's source is removed afterwards, so no restore or retry can fetch bytes again."""
    base = tmp_path_factory.mktemp("imports")
    art = base / "model.bin"
    art.write_bytes(TEMPLATE_BYTES)
    home = base / "home"
    with Registry.open(home, broker="embedded", actor=ACTOR) as reg:
        v1 = reg.register("m", str(art), params={"lr": 0.1}, tags={"task": "x"}, description="the model")
        reg.update(v1, params={"lr": 0.2})
        reg.alias(v1, "prod")
        reg.metrics(v1, {"acc": 0.5})
        reg.tag("m", {"owner": "a"})
        reg.register("team/m", str(art))
        reg.delete("team/m@1")
    art.unlink()
    return home


@pytest.fixture
def imported_home(template: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(template, home)
    return home


# -- H2: each event that bricked the registry is refused, and nothing stops ----------------------------------

POISON = {
    "metric 2**63": ("MetricsRecorded", {"name": "m", "version": 1, "metrics": {"acc": 2**63}}, "metrics.acc"),
    "tag value an object": ("VersionRegistered", version_data(tags={"k": {"x": 1}}), "tags"),
    "version description a list": ("VersionRegistered", version_data(description=["x"]), "description"),
    "model description an object": ("ModelRegistered", {"name": "m", "description": {"a": 1}, "tags": {}},
                                    "description"),
    "alias on version 2**63": ("AliasAssigned", {"name": "m", "alias": "prod", "version": 2**63, "previous": None},
                               "version"),
    "delete version 2**63": ("VersionDeleted", {"name": "m", "version": 2**63, "reason": ""}, "version"),
    "files not a list": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "files": "notalist",
                                            "size": 1}, "files"),
    "size not a number": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "size": "big"}, "size"),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_an_h2_event_is_refused_in_one_line_naming_it_and_every_command_still_works(imported_home: Path,
                                                                                   case: str) -> None:
    event_type, data, field = POISON[case]
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        head = reg.head()
        fine = NewEvent("model-m", "Tagged", {"name": "m", "version": None, "tags": {"imported": "yes"}})
        with pytest.raises(ValidationError) as refused:
            reg.append_batch([fine, NewEvent("model-m", event_type, data)])
        message = str(refused.value)
        assert message.startswith(f"events[1] {event_type} for 'model-m': {field}"), message
        assert "\n" not in message
        assert reg.head() == head  # the whole batch, its good first event too
    art = imported_home.parent / "again.bin"
    art.write_bytes(b"another model\n")
    for argv in (["show", "m"], ["show", "m@1"], ["log"], ["audit"], ["audit", "--export", str(imported_home.parent /
                 "e.jsonl")], ["projections", "rebuild"], ["restore", "--as-of", "#3"], ["list"],
                 ["register", "m2", "--artifact", str(art)], ["gc", "--grace", "0s"]):
        code, _, err = run_cli(imported_home, *argv)
        assert code == 0, (argv, err)


def test_a_metric_beyond_64_bits_on_the_cli_is_a_one_line_exit_2_and_appends_nothing(imported_home: Path) -> None:
    """L9: it used to roll back with exit 5 ('the catalog cannot apply event')."""
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        head = reg.head()
    for value in (str(2**63), str(-(2**63) - 1)):
        code, _, err = run_cli(imported_home, "metrics", "m@1", f"acc={value}")
        assert code == 2, err
        assert err.count("\n") == 1 and "acc" in err and "64" in err, err
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        assert reg.head() == head
    # The edges of the range are metrics like any other.
    assert run_cli(imported_home, "metrics", "m@1", f"big={2**63 - 1}", f"small={-(2**63)}")[0] == 0
    code, out, err = run_cli(imported_home, "show", "m@1", "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"] == {"acc": 0.5, "big": 2**63 - 1, "small": -(2**63)}
    assert run_cli(imported_home, "best", "m", "--metric", "big")[0] == 0


# -- L10: meta is bounded -----------------------------------------------------------------------------------

BAD_META = {
    "50 MB of junk (here 100 kB)": ({"junk": "x" * 100_000}, "meta.junk"),
    "a junk object": ({"junk": {"a": [1, 2]}}, "meta.junk"),
    "too many keys": ({f"k{i}": i for i in range(17)}, "meta.k16"),
    "actor with a bidi override": ({"actor": "alice\u202eecila"}, "meta.actor"),
    "actor with an escape": ({"actor": "\x1b[2Jmallory"}, "meta.actor"),
    "actor with a C1 CSI": ({"actor": "\x9b2Jmallory"}, "meta.actor"),
    "actor too long": ({"actor": "a" * 257}, "meta.actor"),
    "actor not text": ({"actor": ["root"]}, "meta.actor"),
    "causation 2**63": ({"causation_id": 2**63}, "meta.causation_id"),
    "restore without its position": ({"restore": {"id": "r"}}, "meta.restore.as_of"),
    "a key that is not a name": ({"bad key": 1}, "meta"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_meta_is_bounded_and_its_texts_are_plain(reg, case: str) -> None:
    meta, where = BAD_META[case]
    head = reg.head()
    with pytest.raises(ValidationError, match=rf"^events\[0\] ModelRegistered for 'model-x': {where}"):
        reg.append_batch([NewEvent("model-x", "ModelRegistered", {"name": "x", "description": "", "tags": {}},
                                   meta)])
    assert reg.head() == head


def test_the_meta_the_registry_and_an_importer_write_is_accepted(reg) -> None:
    meta = {"actor": "importer@host", "client": "modelledger/0.1.0 sdk", "correlation_id": "5f0c",
            "run_id": "nightly-7", "idempotency_key": "k-1", "causation_id": 3,
            "restore": {"id": "8d1e", "as_of": 0}, "batch": "b-1", "size": 3, "ratio": 0.5, "dry": False,
            "note": None}
    reg.append_batch([NewEvent("model-x", "ModelRegistered", {"name": "x", "description": "", "tags": {}}, meta)])
    assert next(reg.log(since=reg.head() - 1)).meta == meta


# -- the shapes, field by field -----------------------------------------------------------------------------

REFUSED = {
    "an unknown key": ("Tagged", {"name": "m", "version": None, "tags": {}, "note": "x"}, "note"),
    "a missing key": ("VersionDeleted", {"name": "m", "version": 1}, "reason"),
    "true as a version": ("VersionDeleted", {"name": "m", "version": True, "reason": ""}, "version"),
    "version 0": ("VersionRestored", {"name": "m", "version": 0}, "version"),
    "a version no reference can name": ("VersionRestored", {"name": "m", "version": VERSION_MAX + 1}, "version"),
    "a float version": ("VersionRestored", {"name": "m", "version": 1.0}, "version"),
    "a parent 2**63": ("ParamsUpdated", version_data(parent=2**63), "parent"),
    "params nested 65 deep": ("VersionRegistered", version_data(params=deep(65)), "params"),
    "a params key that is not text": ("VersionRegistered", version_data(params={"a": {1: 2}}), "params.a"),
    "structure a list": ("StructureUpdated", version_data(structure=[1]), "structure"),
    "status failed": ("VersionRegistered", version_data(status="failed"), "status"),
    "an artifact without a source": ("VersionRegistered", version_data(artifact={}), "artifact.source"),
    "a source with a newline": ("VersionRegistered", version_data(artifact={"source": "/x\n"}), "artifact.source"),
    "an upper-case digest": ("ArtifactStored", {"name": "m", "version": 1, "digest": "sha256:" + "AB" * 32},
                             "digest"),
    "a digest that is a path": ("ArtifactStored", {"name": "m", "version": 1, "digest": "../../x"}, "digest"),
    "a file entry with an extra key": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST,
                                                          "files": [{"path": "a", "digest": DIGEST, "size": 1,
                                                                     "mode": 511}]}, "files[0].mode"),
    "a file without a path": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST,
                                                 "files": [{"path": "", "digest": DIGEST, "size": 1}]},
                              "files[0].path"),
    "a negative size": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "size": -1}, "size"),
    "unsafe as text": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "unsafe": "no"}, "unsafe"),
    "imports not text": ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "imports": [1]},
                         "imports[0]"),
    "a metric as text": ("MetricsRecorded", {"name": "m", "version": 1, "metrics": {"acc": "high"}}, "metrics.acc"),
    "a metric that is true": ("MetricsRecorded", {"name": "m", "version": 1, "metrics": {"acc": True}},
                              "metrics.acc"),
    "a metric name with a space": ("MetricsRecorded", {"name": "m", "version": 1, "metrics": {"a b": 1}},
                                   "metrics"),
    "a tag value with a control character": ("Tagged", {"name": "m", "version": 1, "tags": {"k": "\x1b[2J"}},
                                             "tags"),
    "a tag key with a space": ("Tagged", {"name": "m", "version": 1, "tags": {"a b": "v"}}, "tags"),
    "untag keys as text": ("Untagged", {"name": "m", "version": 1, "keys": "k"}, "keys"),
    "an alias that is reserved": ("AliasAssigned", {"name": "m", "alias": "latest", "version": 1,
                                                    "previous": None}, "alias"),
    "rollback as text": ("AliasAssigned", {"name": "m", "alias": "prod", "version": 1, "previous": None,
                                           "rollback": "yes"}, "rollback"),
    "a cause other than deleted": ("AliasRemoved", {"name": "m", "alias": "prod", "version": 1, "cause": "x"},
                                   "cause"),
    "a reason of 1001 characters": ("ModelDeleted", {"name": "m", "reason": "r" * 1001}, "reason"),
    "a description of 10001 characters": ("ModelRegistered", {"name": "m", "description": "d" * 10_001,
                                                              "tags": {}}, "description"),
    "purged blobs not digests": ("ArtifactPurged", {"name": "m", "version": 1, "digest": DIGEST, "blobs": ["x"]},
                                 "blobs[0]"),
    "a request without its expected digest": ("ArtifactRequested", {"name": "m", "version": 1, "source": "/x",
                                                                    "reason": "retry"}, "expected_digest"),
    "a name that is not a name": ("ModelRestored", {"name": "-m"}, "name"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_field_out_of_its_shape_is_refused_naming_the_field(reg, case: str) -> None:
    event_type, data, field = REFUSED[case]
    head = reg.head()
    name = data["name"] if data["name"] != "-m" else "m"
    with pytest.raises(ValidationError) as refused:
        reg.append_batch([NewEvent(stream_for(name), event_type, data)])
    assert str(refused.value).startswith(f"events[0] {event_type} for {stream_for(name)!r}: {field}"), \
        str(refused.value)
    assert reg.head() == head


@pytest.mark.parametrize("envelope, problem", [
    (NewEvent("model-m", "NotAType", {"name": "m"}), "unknown event type"),
    (NewEvent("model-other", "ModelRestored", {"name": "m"}), "belongs to stream 'model-m'"),
    (NewEvent("model-m", "ModelRestored", {"name": "m"}, schema_version=2), "schema_version 2"),
    (NewEvent("model-m", "ModelRestored", {"name": "m"}, schema_version=2**63), "schema_version"),
    (NewEvent("model-m", "ModelRestored", ["m"]), "must be an object"),  # type: ignore[arg-type]
    (NewEvent("model-m", "ModelRestored", {"name": "m"}, ["meta"]), "meta: must be an object"),  # type: ignore[arg-type]
    ({"stream": "model-m", "type": "ModelRestored"}, "must be a NewEvent"),
])
def test_a_malformed_envelope_is_refused(reg, envelope: Any, problem: str) -> None:
    head = reg.head()
    with pytest.raises(ValidationError, match=r"^events\[0\]") as refused:
        reg.append_batch([envelope])
    assert problem in str(refused.value)
    assert reg.head() == head


def test_the_edges_of_each_range_are_accepted(imported_home: Path) -> None:
    edge = [
        NewEvent("model-m", "ModelRegistered", {"name": "m", "description": "d" * 10_000, "tags": {"k": "v"}}),
        NewEvent("model-m", "VersionRegistered", version_data(version=VERSION_MAX, parent=1, params=deep(64),
                                                              tags={"k": "\tv"}, status="purged",
                                                              changes=["params"], patch={"params": {"a": None}})),
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": VERSION_MAX,
                                                "metrics": {"a": 2**63 - 1, "b": -(2**63), "c": 1e308}}),
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": 1, "metrics": {}, "replace": True}),
        NewEvent("model-m", "ArtifactStored", {"name": "m", "version": VERSION_MAX, "digest": DIGEST,
                                               "size": 2**63 - 1, "files": [], "kind": "directory"}),
    ]
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        reg.append_batch(edge)
        v = reg.get(f"m@{VERSION_MAX}")
        assert v.metrics == {"a": 2**63 - 1, "b": -(2**63), "c": 1e308} and v.status == "ready"
        assert reg.audit().ok


# -- what the registry writes passes the import check ------------------------------------------------------

def _evil_pickle() -> bytes:
    """A protocol-0 pickle that would call os.system: only ever sniffed, never loaded."""
    data = b"cos\nsystem\n(S'true'\ntR."
    pickletools.dis(data, out=io.StringIO())  # it is a well-formed pickle
    return data


def test_every_event_the_registry_writes_passes_the_import_check(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The decider (every command), the worker (stored, failed), gc (purged) and restore: their events, with
    their meta, are what ``check_event`` accepts — the check is not stricter than the product."""
    files = {}
    for name, content in (("a.bin", b"weights a\n"), ("b.bin", b"weights b\n"), ("c.bin", b"weights c\n"),
                          ("evil.pkl", _evil_pickle())):
        files[name] = tmp_path / name
        files[name].write_bytes(content)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "sub" / "weights.bin").write_bytes(b"folder weights\n")
    with Registry.open(tmp_path / "home", broker="embedded", actor="writer@test") as reg:
        v1 = reg.register("m", str(files["a.bin"]), params={"lr": 0.1, "nested": {"a": [1, 2.5, None]}},
                          structure={"layers": [64, 64]}, optimizer={"name": "sgd"}, tags={"task": "x"},
                          description="first", idempotency_key="key-1", run_id="run-1")
        reg.update(v1, params={"lr": 0.2})
        reg.update(v1, structure={"layers": [32]})
        reg.update(v1, optimizer={"name": "adam"})
        reg.update(v1, params={"x": 1}, structure={"y": 2}, description="both")
        reg.update(v1, artifact=str(folder), description="a folder")
        reg.register("p", str(files["evil.pkl"]))
        reg.tag("m@1", {"stage": "dev"})
        reg.tag("m", {"owner": "team"})
        reg.untag("m@1", "stage")
        reg.metrics("m@1", {"acc": 0.9, "epochs": 3})
        reg.alias("m@1", "prod")
        reg.alias("m@2", "prod")
        reg.rollback("m", "prod")
        reg.alias("m@2", "staging")
        reg.unalias("m", "staging")
        reg.alias("m@3", "canary")
        reg.delete("m@3", reason="bad")  # its alias goes first
        reg.undelete("m@3")
        gone = reg.register("g", str(files["b.bin"]))
        lost = reg.register("h", str(files["c.bin"]))
        reg.delete(gone.ref)
        reg.delete(lost.ref)
        reg.gc(0)  # ArtifactPurged
        reg.undelete(gone.ref)  # ArtifactRequested, then ArtifactStored from the worker
        files["c.bin"].unlink()
        reg.undelete(lost.ref)  # its source is gone: back without its bytes, still purged (nothing requested)
        assert reg.get(lost.ref).status == "purged"
        with pytest.raises(ArtifactError, match="cannot be read"):
            reg.retry(lost.ref)
        reg.execute(c.Register("f", {"source": str(tmp_path / "never.bin")}))  # pending, its source missing
        with pytest.raises(ArtifactError, match="could not be stored"):
            reg.retry("f@1")  # failed, never stored: its record is the source and the error
        # carries the failed parent's record, its error too; nobody reads a source this caller did not name,
        # so the new version waits for `retry` (docs/architecture.md, "Who reads a source")
        assert reg.update("f@1", params={"again": True}, wait=False).status == "pending"
        reg.delete("p@1")
        reg.gc(0)
        reg.undelete("p@1")  # the worker's ArtifactStored: the pickle's structure, imports, detail
        before = reg.head()
        reg.tag("m@1", {"late": "yes"})
        reg.describe("m@1", "described later")  # Described (the restore puts the old text back)
        reg.metrics("m@1", {"acc": 0.1})
        reg.delete("m")
        reg.restore(as_of=before)  # ModelRestored, Untagged, MetricsRecorded replace, ... with meta.restore
        reg.delete("p")
        reg.restore("p", as_of=before)
        reg.create_token("ci", "writer", prefix="team/", expires_in=3600)  # TokenGranted
        reg.revoke_token("ci", "rotated")  # TokenRevoked
        from eventstore.webhooks import ClaimDelivery, DeleteWebhook, RecordDelivered, Replay, UpdateWebhook

        monkeypatch.setenv("MLEDGER_WEBHOOK_KEY", "k" * 20)
        monkeypatch.setenv("MLEDGER_WEBHOOK_URLS", "http://127.0.0.1:9/")
        hook, _ = reg.create_webhook("ci", "http://127.0.0.1:9/in", ["model_version.created"])  # WebhookCreated
        reg.change_webhook(UpdateWebhook(hook.webhook_id, status="DISABLED"))  # WebhookUpdated
        reg.change_webhook(RecordDelivered(hook.webhook_id, reg.head(), 1))  # WebhookDelivered
        reg.change_webhook(Replay(hook.webhook_id, 1))  # WebhookReplayed
        reg.change_webhook(ClaimDelivery(hook.webhook_id, "c" * 32, 1, 0, "host:1"))  # WebhookClaimed
        reg.change_webhook(DeleteWebhook(hook.webhook_id))  # WebhookDeleted
        stored = list(reg.log())
    seen = set()
    for e in stored:
        check_event(NewEvent(e.stream, e.type, e.data, e.meta, e.schema_version), e.position)
        seen.add(e.type)
    assert seen == set(SCHEMA_VERSIONS), set(SCHEMA_VERSIONS) - seen
    assert any(e.meta.get("restore") for e in stored) and any("causation_id" in e.meta for e in stored)
    assert any(e.type == "ArtifactStored" and e.data.get("unsafe") and e.data.get("structure") for e in stored)
    assert any(e.type in VERSION_CREATING and "error" in e.data["artifact"] for e in stored)
    assert any(e.type == "ArtifactStored" and e.data.get("kind") == "directory" for e in stored)


class _View:
    """A model ``m`` whose version 1 is ready, with an alias; nothing else (the decider's StateView)."""

    def __init__(self) -> None:
        self.m = ModelState("m", 4, False, "", {"owner": "a"}, {"prod": 1}, 1, 1)
        self.v1 = VersionState("m", 1, None, False, "ready", "one", {"lr": 0.1}, {}, {}, {"task": "x"}, {"acc": 1},
                               {"source": "/x", "digest": DIGEST, "size": 3, "kind": "file", "format": "unknown",
                                "files": [{"path": "x", "digest": DIGEST, "size": 3}], "unsafe": False})

    def model(self, name: str) -> ModelState | None:
        return self.m if name == "m" else None

    def version(self, name: str, number: int) -> VersionState | None:
        return self.v1 if (name, number) == ("m", 1) else None

    def alias_history(self, name: str, alias: str) -> list[int]:
        return [1] if alias == "prod" else []

    def purged_live_versions(self, name: str) -> list[VersionState]:
        return []


texts = st.text(max_size=30)
keys = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
# Plain text: no control, format (bidi), surrogate or line-separator characters.
tag_values = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), max_size=40)
configs = st.recursive(st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False,
                       allow_infinity=False) | texts, lambda kids: st.lists(kids, max_size=3)
                       | st.dictionaries(texts, kids, max_size=3), max_leaves=10)
config_objects = st.dictionaries(texts, configs, max_size=4)
numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
legitimate = st.one_of(
    st.builds(c.Register, name=st.sampled_from(["m", "new", "team/new"]), artifact=st.just({"source": "/x.bin"}),
              description=texts, tags=st.dictionaries(keys, tag_values, max_size=3), params=config_objects,
              structure=config_objects, optimizer=config_objects),
    st.builds(c.Register, name=st.just("new"), artifact=st.just({"source": "/x.bin", "digest": DIGEST, "size": 5,
                                                                 "kind": "file", "format": "pickle", "unsafe": True,
                                                                 "imports": ["os.system"], "detail": "evil",
                                                                 "files": [{"path": "x", "digest": DIGEST,
                                                                            "size": 5}]})),
    st.builds(c.Update, ref=st.sampled_from(["m@1", "m@prod", "m"]), params=st.one_of(st.none(), config_objects),
              structure=st.one_of(st.none(), config_objects), optimizer=st.one_of(st.none(), config_objects),
              structure_patch=st.booleans(), description=st.one_of(st.none(), texts),
              artifact=st.one_of(st.none(), st.just({"source": "/y.bin"})))
    .filter(lambda u: any(x is not None for x in (u.params, u.structure, u.optimizer, u.artifact))),
    st.builds(c.Tag, ref=st.sampled_from(["m", "m@1"]), tags=st.dictionaries(keys, tag_values, min_size=1,
                                                                             max_size=3)),
    st.builds(c.Untag, ref=st.just("m@1"), keys=st.just(("task",))),
    st.builds(c.RecordMetrics, ref=st.just("m@1"), metrics=st.dictionaries(keys, numbers, min_size=1, max_size=3)),
    st.builds(c.AssignAlias, ref=st.just("m@1"), alias=st.from_regex(r"[a-z][a-z0-9_-]{0,63}", fullmatch=True)
              .filter(lambda a: a != "latest")),
    st.builds(c.RemoveAlias, name=st.just("m"), alias=st.just("prod")),
    st.builds(c.Delete, ref=st.sampled_from(["m", "m@1"]), reason=st.text(max_size=1000)),
)


@settings(max_examples=200, deadline=None)
@given(command=legitimate)
def test_the_decider_never_refuses_a_legitimate_command_for_its_shape(command: c.Command) -> None:
    """Every legitimate command is decided (no ValidationError from the shapes the decider now holds its
    own events to), and its events with the registry's meta pass the import check."""
    decision = decide(command, _View())
    meta = {"actor": "user@host", "client": "modelledger/0.1.0 sdk", "correlation_id": "c"}
    for index, (event_type, data) in enumerate(decision.events):
        check_event(NewEvent(decision.stream, event_type, data, meta), index)


# -- the property: refused whole, or nothing breaks ---------------------------------------------------------

def _every_read_and_command_works(reg: Registry, home: Path, before: int) -> None:
    cat = reg.catalog()
    head = reg.head()
    names = [m.name for m in cat.list(include_deleted=True)]
    for name in names:
        model = cat.model(name)
        json.dumps(model.to_json())
        output.model_detail(model)
        for v in model.versions or ():
            json.dumps(v.to_json())
            output.version_detail(v)
            output.version_line(v)
            assert reg.get(v.ref) == v
        for ref in (name, f"{name}@latest", *(f"{name}@{a}" for a in model.aliases)):
            with contextlib.suppress(NotFoundError, ConflictError):
                output.version_detail(cat.get(ref))
        with contextlib.suppress(NotFoundError):
            cat.best(name, "acc")
        output.history_table(reg.changes(reg.history(name)))
    for filters in ({}, {"include_deleted": True}, {"search": "m"}, {"tags": {"task": "x"}},
                    {"file": "model.bin"}, {"alias": "prod"}):
        output.models_table(cat.list(**filters))
        output.models_table(reg.catalog(as_of=head).list(**filters))
    for filters in ({}, {"keyword": "imported"}, {"file": "a/b.txt"}, {"alias": "staging"}):
        [output.version_line(v) for v in cat.search(**filters)]
        [output.version_line(v) for v in reg.catalog(as_of=head).search(**filters)]
    for e in reg.log():
        output.event_line(e)
        json.dumps(e.to_json())
    for position in range(before, head + 1):
        past = reg.catalog(as_of=position)
        for name in names:
            if past.exists(name):
                output.model_detail(past.model(name))
    for argv in (["show", "m"], ["log"], ["list", "--deleted"]):
        code, _, err = run_cli(home, *argv)
        assert code == 0, (argv, err)
    report = reg.audit()
    assert report.ok, report.to_json()
    summary = reg.export_log(home.parent / "export.jsonl")
    assert Registry.verify_export(summary.path, expected_final_hash=summary.final_hash).ok
    digest = cat.digest()
    assert reg.rebuild_projections() == head
    assert cat.digest() == digest
    # Undo the import, then keep working: every model live before it takes new commands again.
    reg.restore(as_of=before)
    assert reg.audit().ok
    reg.tag("m", {"after": "import"})
    last = cat.model("m").versions[-1].version
    artifact = home.parent / "next.bin"
    artifact.write_bytes(b"next weights\n")
    if last < VERSION_MAX:
        assert reg.register("m", str(artifact)).version == last + 1
    else:  # an import may use up a model's version numbers: the refusal says so, in one line
        with pytest.raises(ValidationError, match="out of range"):
            reg.register("m", str(artifact))


@pytest.mark.slow
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=batches)
def test_an_imported_batch_is_refused_whole_or_breaks_no_read_and_no_command(template: Path, batch: list) -> None:
    work = Path(tempfile.mkdtemp(prefix="mledger-import-"))
    try:
        home = work / "home"
        shutil.copytree(template, home)
        with Registry.open(home, broker="embedded", actor=ACTOR) as reg:
            before = reg.head()
            try:
                reg.append_batch(batch)
            except ValidationError as exc:
                event("refused")
                assert reg.head() == before
                message = str(exc)
                assert message.startswith("events[") and "\n" not in message and len(message) < 600, message
                return
            event("accepted")
            assert reg.head() == before + len(batch)
            _every_read_and_command_works(reg, home, before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the same, fast: one event of each type folded into an in-memory catalog and read back ------------------

_CATALOG: list[sqlite3.Connection] = []


def _catalog_with_m() -> sqlite3.Connection:
    """An in-memory catalog: model ``m`` with versions 1 (ready, alias prod) and 2, folded from good events
    (built once, then copied: creating the tables is most of the cost of an example)."""
    if not _CATALOG:
        _CATALOG.append(_build_catalog_with_m())
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _CATALOG[0].backup(conn)
    return conn


def _build_catalog_with_m() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.create(conn)
    good = [("ModelRegistered", {"name": "m", "description": "", "tags": {}}),
            ("VersionRegistered", version_data(version=1)),
            ("ArtifactStored", {"name": "m", "version": 1, "digest": DIGEST, "size": 3, "kind": "file",
                                "files": [{"path": "model.bin", "digest": DIGEST, "size": 3}]}),
            ("VersionRegistered", version_data(version=2, parent=1)),
            ("AliasAssigned", {"name": "m", "alias": "prod", "version": 1, "previous": None})]
    apply_events(conn, [StoredEvent(i + 1, "model-m", i + 1, t, 1, d, {}, "2026-01-01T00:00:00.000000Z", "h")
                        for i, (t, d) in enumerate(good)])
    return conn


def _read_back(conn: sqlite3.Connection, position: int) -> None:
    """Every record, listing and past state the catalog holds, as the CLI shows them; and the decider on it."""
    @contextlib.contextmanager
    def read() -> Any:
        yield conn

    view = SQLiteStateView(conn)
    for (name,) in conn.execute("SELECT name FROM models").fetchall():
        assert view.model(name) is not None
        aliases = aliases_of(conn, name)
        model = model_record(conn.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE name = ?",  # noqa: S608
                                          (name,)).fetchone(), aliases)
        output.model_detail(model)
        for row in conn.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?", (name,)).fetchall():  # noqa: S608
            v = version_record(row, aliases)
            json.dumps(v.to_json())
            output.version_detail(v)
            view.version(name, v.version)
            with contextlib.suppress(ConflictError, NotFoundError, ValidationError):
                # A derived version of what the import left; refusals are one-line errors of their own.
                decide(c.Update(v.ref, params={"x": 1}), view)
        past = PastCatalog(read, position)
        if past.exists(name):
            past_model = past.model(name)
            json.dumps(past_model.to_json())
            output.model_detail(past_model)
    past = PastCatalog(read, position)
    for filters in ({"include_deleted": True}, {"search": "m", "tags": {"task": "x"}, "file": "model.bin"}):
        output.models_table(past.list(**filters))
    [output.version_line(v) for v in past.search(file="a/b.txt", alias="prod")]


@pytest.mark.parametrize("event_type", sorted(SCHEMA_VERSIONS))
@settings(max_examples=50, deadline=None, derandomize=True)
@given(data=st.data())
def test_an_event_of_any_type_the_check_accepts_folds_and_reads_back(event_type: str, data: st.DataObject) -> None:
    """Fast and per type (so each type gets its own examples): an accepted event always folds, and every read
    of the catalog after it works; the projector fuzz (reliability) covers the events that are refused."""
    payload = data.draw(event_data(event_type, data.draw(st.sampled_from(("none", "hostile node", "hostile node")))))
    try:
        check_event(NewEvent(stream_for(payload["name"]) if isinstance(payload.get("name"), str) else "model-m",
                             event_type, payload))
    except ValidationError:
        event("refused")
        return
    event("accepted")
    stored = json.loads(json.dumps(payload))  # what the log hands the projector: the JSON text, parsed
    conn = _catalog_with_m()
    try:
        apply_events(conn, [StoredEvent(6, f"model-{stored['name']}", 1, event_type, 1, stored, {},
                                        "2026-01-01T00:00:01.000000Z", "h")])
        _read_back(conn, 6)
    finally:
        conn.close()


# -- odd but accepted: what the property must see, every run ------------------------------------------------

ODD_BUT_ACCEPTED = {
    "an alias on a deleted version": [
        NewEvent("model-team/m", "AliasAssigned", {"name": "team/m", "alias": "prod", "version": 1,
                                                   "previous": None})],
    "a version deleted under its alias": [
        NewEvent("model-m", "VersionDeleted", {"name": "m", "version": 1, "reason": "no alias removed"})],
    "a stored artifact for a version that does not exist": [
        NewEvent("model-m", "ArtifactStored", {"name": "m", "version": 9, "digest": DIGEST, "size": 1})],
    "a ready version with no bytes, a purge, a failure": [
        NewEvent("model-m", "VersionRegistered", version_data(status="ready", parent=77, tags={"task": "x"})),
        NewEvent("model-m", "ArtifactPurged", {"name": "m", "version": 3, "digest": None, "blobs": []}),
        NewEvent("model-m", "ArtifactFailed", {"name": "m", "version": 3, "reason": "imported failure"})],
    "the highest version number": [
        NewEvent("model-m", "VersionRegistered", version_data(version=VERSION_MAX, artifact={
            "source": "/nonexistent/x", "digest": DIGEST, "kind": "directory", "files": [
                {"path": "a/b.txt", "digest": DIGEST, "size": 2**63 - 1}]}, status="ready"))],
    "a model deleted, then events about it": [
        NewEvent("model-m", "ModelDeleted", {"name": "m", "reason": ""}),
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": 2, "metrics": {"acc": 2**63 - 1}}),
        NewEvent("model-m", "Tagged", {"name": "m", "version": None, "tags": {"k": "v"}})],
    "a rollback to a version the alias never held": [
        NewEvent("model-m", "AliasAssigned", {"name": "m", "alias": "prod", "version": 2, "previous": 1,
                                              "rollback": True})],
    "a second registration of a model": [
        NewEvent("model-m", "ModelRegistered", {"name": "m", "description": "again", "tags": {"owner": "b"}})],
    "metrics replaced by nothing": [
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": 1, "metrics": {}, "replace": True})],
}


@pytest.mark.parametrize("case", sorted(ODD_BUT_ACCEPTED))
def test_an_odd_but_well_shaped_import_breaks_no_read_and_no_command(imported_home: Path, case: str) -> None:
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        before = reg.head()
        reg.append_batch(ODD_BUT_ACCEPTED[case])
        _every_read_and_command_works(reg, imported_home, before)


# -- a log written before the check ---------------------------------------------------------------------------

def test_show_reads_an_odd_artifact_record_a_log_from_before_the_check_may_hold(imported_home: Path) -> None:
    """L1 "show after the odd import": the old check let these through and ``show`` died with a traceback.
    They are appended here around the check, as an old log holds them."""
    with Registry.open(imported_home, broker="embedded", actor=ACTOR) as reg:
        reg.recorder.append([NewEvent("model-m", "ArtifactStored", {
            "name": "m", "version": 1, "digest": DIGEST, "files": "notalist", "size": "big", "imports": 7,
            "format": ["x"]}), NewEvent("model-m", "ArtifactStored", {
            "name": "m", "version": 2, "digest": DIGEST, "files": [7, {"path": None}, {"path": "ok.bin"}],
            "imports": ["os.system", 1], "unsafe": True})])
    for argv in (["show", "m@1"], ["show", "m@2"], ["show", "m"], ["show", "m@1", "--json"],
                 ["list", "--file", "ok.bin"], ["list", "--file", "ok.bin", "--as-of", "#999999"],
                 ["diff", "m@1", "m@2"]):
        code, out, err = run_cli(imported_home, *argv)
        assert err.count("\n") <= 1 and "Traceback" not in err, (argv, err)
        assert code in (0, 2), (argv, err)  # --as-of beyond the head is a one-line refusal
    code, out, _ = run_cli(imported_home, "show", "m@2", "--json")
    assert json.loads(out)["artifact"]["files"] == ["ok.bin"]
    code, out, _ = run_cli(imported_home, "list", "--file", "ok.bin", "--json")
    assert [m["name"] for m in json.loads(out)["models"]] == ["m"]


def test_stored_event_round_trip_keeps_the_checked_shape() -> None:
    """What ``check_event`` accepted is what the projector reads back: JSON text parses to the same shape
    (a tuple becomes a list, and a list is what the shape asks for)."""
    data = version_data(params={"betas": (0.9, 0.999)}, changes=("params",))
    check_event(NewEvent("model-m", "ParamsUpdated", data))
    parsed = json.loads(json.dumps(data))
    stored = StoredEvent(1, "model-m", 1, "ParamsUpdated", 1, parsed, {}, "2026-01-01T00:00:00.000000Z", "h")
    check_event(NewEvent(stored.stream, stored.type, stored.data, stored.meta))
