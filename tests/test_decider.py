"""Commands → events, seen through the Registry: derived versions, merge patches, tags, aliases and
rollback, delete/undelete, refusals (which append nothing), idempotent retries."""

from __future__ import annotations

import pytest

from eventstore import commands as c
from eventstore.decider import EmptyState, decide
from eventstore.errors import (
    ConflictError,
    IdempotencyError,
    ModelLedgerError,
    NotFoundError,
    ValidationError,
)
from eventstore.verify import verify_rows


def _types(events) -> list[str]:
    return [e.type for e in events]


def _new_events(reg, since: int) -> list:
    return list(reg.log(since=since))


def refused(reg, exc_type, fn, *args, **kwargs) -> ModelLedgerError:
    """Call ``fn``, expect ``exc_type``, and check that nothing was appended."""
    head = reg.head()
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert reg.head() == head, "a refused command appended events"
    return info.value


# -- derived versions -----------------------------------------------------------------------------

def test_update_makes_the_next_version_with_a_parent_and_merged_params(reg, artifact):
    v1 = reg.register("m", artifact, params={"lr": 0.1, "layers": {"a": 1, "b": 2}, "dropout": 0.5},
                      structure={"kind": "mlp"}, optimizer={"name": "sgd"}, description="first")
    head = reg.head()
    v2 = reg.update(v1, params={"lr": 0.01, "layers": {"b": None, "c": 3}, "dropout": None})
    assert (v2.name, v2.version, v2.parent) == ("m", 2, 1)
    assert v2.params == {"lr": 0.01, "layers": {"a": 1, "c": 3}}
    assert v2.structure == {"kind": "mlp"} and v2.optimizer == {"name": "sgd"}
    assert v2.description == "first"
    # The parent's artifact comes along, already stored: nothing to copy, status ready.
    assert v2.artifact["digest"] == v1.artifact["digest"] and v2.status == "ready"
    events = _new_events(reg, head)
    assert _types(events) == ["ParamsUpdated"]
    assert events[0].data["patch"] == {"params": {"lr": 0.01, "layers": {"b": None, "c": 3}, "dropout": None}}
    assert events[0].data["changes"] == ["params"]
    # The parent is untouched.
    assert reg.get("m@1").params == {"lr": 0.1, "layers": {"a": 1, "b": 2}, "dropout": 0.5}
    assert reg.get("m").version == 2


def test_update_structure_and_optimizer_replace_unless_patch(reg, artifact):
    reg.register("m", artifact, structure={"a": 1, "b": 2}, optimizer={"name": "sgd", "momentum": 0.9})
    head = reg.head()
    v2 = reg.update("m@1", structure={"c": 3})
    assert v2.structure == {"c": 3}
    v3 = reg.update("m@1", structure={"b": None, "c": 3}, structure_patch=True)
    assert v3.structure == {"a": 1, "c": 3} and v3.parent == 1
    v4 = reg.update("m@1", optimizer={"name": "adam"})
    assert v4.optimizer == {"name": "adam"}
    v5 = reg.update("m@1", optimizer={"momentum": None, "lr": 1e-3}, optimizer_patch=True)
    assert v5.optimizer == {"name": "sgd", "lr": 1e-3}
    v6 = reg.update("m@1", params={"x": 1}, optimizer={"name": "adam"})
    assert _types(_new_events(reg, head)) == [
        "StructureUpdated", "StructureUpdated", "OptimizerUpdated", "OptimizerUpdated", "VersionRegistered",
    ]
    assert v6.parent == 1 and v6.params == {"x": 1} and v6.optimizer == {"name": "adam"}


def test_update_with_a_new_artifact_stores_it(reg, artifact, make_artifact):
    v1 = reg.register("m", artifact, params={"lr": 0.1})
    other = make_artifact("retrained.bin", b"different weights\n")
    head = reg.head()
    v2 = reg.update(v1, artifact=str(other))
    assert v2.artifact["digest"] != v1.artifact["digest"]
    assert v2.to_json()["artifact"]["files"] == ["retrained.bin"] and v2.status == "ready"
    assert v2.params == {"lr": 0.1} and v2.parent == 1
    assert _types(_new_events(reg, head)) == ["VersionRegistered", "ArtifactStored"]


def test_update_from_an_older_version_and_by_alias(reg, artifact):
    reg.register("m", artifact, params={"lr": 0.1})
    reg.update("m", params={"lr": 0.2})
    reg.update("m", params={"lr": 0.3})
    reg.alias("m@2", "staging")
    v4 = reg.update("m@1", params={"wd": 1})
    assert (v4.version, v4.parent, v4.params) == (4, 1, {"lr": 0.1, "wd": 1})
    v5 = reg.update("m@staging", params={"wd": 2})
    assert (v5.version, v5.parent, v5.params) == (5, 2, {"lr": 0.2, "wd": 2})


def test_update_with_nothing_to_change_is_refused(reg, artifact):
    reg.register("m", artifact)
    err = refused(reg, ValidationError, reg.update, "m@1")
    assert "at least one" in str(err)


def test_a_derived_version_starts_with_its_parents_tags(reg, artifact):
    reg.register("m", artifact, tags={"task": "vision"})
    reg.tag("m@1", reviewed="yes")
    v2 = reg.update("m@1", params={"a": 1})
    assert v2.tags == {"task": "vision", "reviewed": "yes"}


def test_version_numbers_are_never_reused(reg, artifact):
    reg.register("m", artifact)
    reg.register("m", artifact)
    reg.delete("m@2")
    assert reg.get("m").version == 1
    assert reg.register("m", artifact).version == 3


# -- tags -----------------------------------------------------------------------------------------

def test_tags_on_the_model_and_on_a_version_are_separate(reg, artifact):
    reg.register("m", artifact)
    reg.register("m", artifact)
    reg.tag("m", owner="team-a")
    reg.tag("m@1", stage="old")
    assert reg.model("m").tags == {"owner": "team-a"}
    assert reg.get("m@1").tags == {"stage": "old"}
    assert reg.get("m@2").tags == {}
    # Setting a tag to the value it has appends nothing.
    head = reg.head()
    assert reg.tag("m@1", stage="old") == []
    assert reg.head() == head
    # Overwrite then remove.
    reg.tag("m@1", stage="older")
    assert reg.get("m@1").tags == {"stage": "older"}
    reg.untag("m@1", "stage")
    assert reg.get("m@1").tags == {}
    reg.untag("m", "owner")
    assert reg.model("m").tags == {}


def test_tag_refusals_append_nothing(reg, artifact):
    reg.register("m", artifact)
    refused(reg, NotFoundError, reg.untag, "m@1", "never-set")
    refused(reg, ValidationError, reg.tag, "m@1", {"bad key": "v"})
    refused(reg, ValidationError, reg.tag, "m@1", {"k": "x" * 1025})
    refused(reg, ValidationError, reg.tag, "m@1", {"k": "line\nbreak"})
    refused(reg, ValidationError, reg.tag, "m@1", {})
    refused(reg, NotFoundError, reg.tag, "nosuch", {"k": "v"})
    refused(reg, NotFoundError, reg.tag, "m@7", {"k": "v"})


def test_metrics_merge_per_version_and_refuse_non_numbers(reg, artifact):
    reg.register("m", artifact)
    reg.metrics("m@1", accuracy=0.8, loss=1.5)
    reg.metrics("m@1", accuracy=0.9)
    assert reg.get("m@1").metrics == {"accuracy": 0.9, "loss": 1.5}
    for bad in ({"acc": float("nan")}, {"acc": float("inf")}, {"acc": "high"}, {"acc": True}, {}):
        refused(reg, ValidationError, reg.metrics, "m@1", bad)


# -- aliases and rollback ---------------------------------------------------------------------------

def test_alias_moves_and_rollback_walks_back(reg, artifact):
    for _ in range(4):
        reg.register("m", artifact)
    reg.alias("m@1", "production")
    reg.alias("m@2", "production")
    reg.alias("m@3", "production")
    assert reg.model("m").aliases == {"production": 3}
    assert reg.get("m@production").version == 3
    assert reg.get("m@3").aliases == ("production",)
    assert reg.get("m@2").aliases == ()
    # Pointing it where it already points appends nothing.
    head = reg.head()
    assert reg.alias("m@3", "production") == []
    assert reg.head() == head
    reg.rollback("m", "production")
    assert reg.get("m@production").version == 2
    reg.rollback("m", "production")
    assert reg.get("m@production").version == 1
    refused(reg, NotFoundError, reg.rollback, "m", "production")
    assert reg.get("m@production").version == 1


def test_rollback_skips_deleted_versions(reg, artifact):
    for _ in range(3):
        reg.register("m", artifact)
    for n in (1, 2, 3):
        reg.alias(f"m@{n}", "production")
    reg.delete("m@2")
    reg.rollback("m", "production")
    assert reg.get("m@production").version == 1


def test_rollback_after_the_holder_was_deleted_goes_to_the_previous_live_holder(reg, artifact):
    for _ in range(3):
        reg.register("m", artifact)
    reg.alias("m@1", "production")
    reg.alias("m@3", "production")
    reg.delete("m@3")
    assert "production" not in reg.model("m").aliases
    reg.rollback("m", "production")
    assert reg.get("m@production").version == 1


def test_unalias_and_alias_refusals(reg, artifact):
    reg.register("m", artifact)
    reg.alias("m@1", "production")
    reg.unalias("m", "production")
    assert reg.model("m").aliases == {}
    refused(reg, NotFoundError, reg.unalias, "m", "production")
    refused(reg, NotFoundError, reg.get, "m@production")
    for bad in ("latest", "123", "Prod", "-x", "a" * 65, ""):
        refused(reg, ValidationError, reg.alias, "m@1", bad)
    refused(reg, NotFoundError, reg.rollback, "m", "never")


# -- delete and undelete ----------------------------------------------------------------------------

def test_deleting_a_version_removes_its_aliases_and_recomputes_latest(reg, artifact):
    for _ in range(3):
        reg.register("m", artifact)
    reg.alias("m@3", "production")
    reg.alias("m@3", "candidate")
    reg.alias("m@2", "staging")
    head = reg.head()
    reg.delete("m@3", reason="bad accuracy")
    assert _types(_new_events(reg, head)) == ["AliasRemoved", "AliasRemoved", "VersionDeleted"]
    model = reg.model("m")
    assert model.latest == 2 and model.aliases == {"staging": 2}
    assert reg.get("m").version == 2
    assert reg.get("m@3").deleted is True  # an explicit number still finds it
    refused(reg, NotFoundError, reg.get, "m@production")
    refused(reg, ConflictError, reg.tag, "m@3", {"k": "v"})
    refused(reg, ConflictError, reg.alias, "m@3", "production")
    refused(reg, ConflictError, reg.update, "m@3", params={"a": 1})
    refused(reg, ConflictError, reg.delete, "m@3")
    reg.undelete("m@3")
    model = reg.model("m")
    assert model.latest == 3 and model.aliases == {"staging": 2}  # aliases do not come back
    refused(reg, ConflictError, reg.undelete, "m@3")


def test_deleting_every_version_leaves_no_latest(reg, artifact):
    reg.register("m", artifact)
    reg.delete("m@1")
    assert reg.model("m").latest is None
    refused(reg, NotFoundError, reg.get, "m")
    refused(reg, NotFoundError, reg.metrics, "m@latest", {"acc": 1.0})
    # A new registration becomes the latest again.
    assert reg.register("m", artifact).version == 2
    assert reg.model("m").latest == 2


def test_a_deleted_model_refuses_writes_until_undeleted(reg, artifact):
    reg.register("m", artifact)
    reg.alias("m@1", "production")
    reg.delete("m", reason="retired")
    assert reg.model("m").deleted is True
    refused(reg, ConflictError, reg.register, "m", artifact)
    refused(reg, ConflictError, reg.update, "m@1", params={"a": 1})
    refused(reg, ConflictError, reg.tag, "m", {"k": "v"})
    refused(reg, ConflictError, reg.tag, "m@1", {"k": "v"})
    refused(reg, ConflictError, reg.metrics, "m@1", {"acc": 1.0})
    refused(reg, ConflictError, reg.alias, "m@1", "staging")
    refused(reg, ConflictError, reg.unalias, "m", "production")
    refused(reg, ConflictError, reg.rollback, "m", "production")
    refused(reg, ConflictError, reg.delete, "m")
    refused(reg, ConflictError, reg.delete, "m@1")
    refused(reg, ConflictError, reg.undelete, "m@1")
    reg.undelete("m")
    assert reg.model("m").deleted is False
    assert reg.register("m", artifact).version == 2
    refused(reg, ConflictError, reg.undelete, "m")


def _purged_and_gone(reg, make_artifact, delete_model: bool):
    """m@1 deleted (or its model), purged by gc, and its source removed: no one can fetch its bytes again."""
    one = make_artifact("only-m1.bin", b"bytes only m@1 had\n")
    reg.register("m", one)
    if not delete_model:
        reg.update("m@1", artifact=make_artifact("kept.bin", b"kept\n"))
    reg.delete("m" if delete_model else "m@1")
    assert reg.gc(0)["versions"] == ["m@1"]
    one.unlink()
    return one


@pytest.mark.parametrize("delete_model", [False, True], ids=["version", "model"])
def test_undelete_of_purged_bytes_that_cannot_be_fetched_again_keeps_the_version_purged(
        reg, make_artifact, delete_model):
    _purged_and_gone(reg, make_artifact, delete_model)
    events = reg.undelete("m" if delete_model else "m@1")
    assert _types(events) == ["ModelRestored" if delete_model else "VersionRestored"]  # nothing asked of a worker
    v = reg.get("m@1")
    assert v.status == "purged" and not v.deleted and not v.artifact.get("error")
    assert reg.audit().ok


@pytest.mark.local_only("re-reads a path on this machine; over HTTP the source is an upload (upload://)")
def test_retry_of_a_purged_version_is_refused_while_its_source_cannot_be_read(reg, make_artifact):
    _purged_and_gone(reg, make_artifact, False)
    refused(reg, ConflictError, reg.retry, "m@1")  # deleted: undelete it first (that is what fetches bytes)
    reg.undelete("m@1")
    refused(reg, ModelLedgerError, reg.retry, "m@1")  # locally: unreadable; over HTTP: an upload, not allowed
    assert reg.get("m@1").status == "purged"


def test_unknown_references_are_not_found(reg, artifact):
    reg.register("m", artifact)
    for ref in ("nosuch", "m@99", "m@nosuchalias", "nosuch@1"):
        refused(reg, NotFoundError, reg.get, ref)
        refused(reg, NotFoundError, reg.metrics, ref, {"acc": 1.0})
    for ref in ("", "m@", "m@0", "../x", "a b", "m@Bad!", "a/b/c"):
        refused(reg, ValidationError, reg.get, ref)


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 200, "", "/x", "x/", "a/b/c", "..", "a/..", ".hidden",
                                  "-x", "a\nb", "a\x00b", "ü"])
def test_bad_model_names_are_refused_before_anything_is_stored(reg, artifact, home, name):
    refused(reg, ValidationError, reg.register, name, artifact)
    blobs = [p for p in (home / "artifacts").rglob("*") if p.is_file()] if (home / "artifacts").exists() else []
    assert blobs == [], "a refused registration copied the artifact"


@pytest.mark.parametrize("name", ["a", "A1", "resnet-50", "my_model.v2", "team/name", "t.e_a-m/x", "x" * 128,
                                  f"{'a' * 128}/{'b' * 128}"])
def test_good_model_names_are_accepted(reg, artifact, name):
    assert reg.register(name, artifact).ref == f"{name}@1"
    assert reg.get(name).name == name


def test_an_event_payload_over_one_mib_is_refused(reg, artifact):
    reg.register("m", artifact)
    half = "x" * (600 * 1024)
    refused(reg, ValidationError, reg.register, "m", artifact, params={"a": half}, structure={"b": half})
    refused(reg, ValidationError, reg.update, "m@1", params={"a": "y" * (1024 * 1024 + 1)})
    # A derived version's event carries the merged params (parent + patch) and the patch itself.
    quarter = "q" * (400 * 1024)
    reg.update("m@1", params={"a": quarter})
    refused(reg, ValidationError, reg.update, "m@2", params={"b": quarter})


def test_at_latest_means_the_latest_version_not_the_model(reg, artifact):
    reg.register("m", artifact)
    reg.register("m", artifact)
    assert reg.get("m@latest").version == 2
    reg.tag("m@latest", k="v")
    assert reg.get("m@2").tags == {"k": "v"} and reg.model("m").tags == {}
    reg.delete("m@latest")
    assert reg.model("m").deleted is False
    assert reg.get("m@2").deleted is True and reg.model("m").latest == 1


# -- idempotent retries (SDK) ------------------------------------------------------------------------

def test_register_with_the_same_idempotency_key_appends_once(reg, artifact):
    first = reg.register("m", artifact, params={"lr": 0.1}, idempotency_key="run-42")
    head = reg.head()
    again = reg.register("m", artifact, params={"lr": 0.1}, idempotency_key="run-42")
    assert again.ref == first.ref == "m@1"
    assert reg.head() == head
    assert reg.model("m").version_count == 1
    # Same key, different request: refused, nothing appended.
    err = refused(reg, IdempotencyError, reg.register, "m", artifact, params={"lr": 0.2},
                  idempotency_key="run-42")
    assert "run-42" in str(err)
    refused(reg, IdempotencyError, reg.register, "other", artifact, params={"lr": 0.1}, idempotency_key="run-42")
    # A new key makes a new version.
    assert reg.register("m", artifact, params={"lr": 0.1}, idempotency_key="run-43").version == 2


@pytest.mark.local_only("checks the stored rows' chain, which only the local registry reads")
def test_update_with_the_same_idempotency_key_appends_once(reg, artifact):
    reg.register("m", artifact)
    v2 = reg.update("m@1", params={"lr": 0.5}, idempotency_key="u-1")
    reg.register("m", artifact)  # latest moves on; the retry still answers with the first result
    head = reg.head()
    assert reg.update("m@1", params={"lr": 0.5}, idempotency_key="u-1").ref == v2.ref
    assert reg.head() == head
    refused(reg, IdempotencyError, reg.update, "m@1", params={"lr": 0.6}, idempotency_key="u-1")
    assert verify_rows(reg.recorder.raw_rows()).ok


@pytest.mark.parametrize("change", ["artifact", "tags", "description", "structure", "optimizer", "params"])
def test_a_key_reused_for_a_register_that_differs_in_any_field_is_refused(reg, artifact, make_artifact, change):
    """The fingerprint covers the whole request: a retry that names another artifact (or tags, description,
    structure, ...) is another request, never answered with the first version."""
    other = make_artifact("other.bin", b"other weights\n")
    request = {"artifact": str(artifact), "tags": {"team": "a"}, "description": "first", "structure": {"layers": 2},
               "optimizer": {"lr": 0.1}, "params": {"epochs": 1}}
    first = reg.register("m", idempotency_key="k-1", **request)
    differs = {"artifact": str(other), "tags": {"team": "b"}, "description": "second", "structure": {"layers": 3},
               "optimizer": {"lr": 0.2}, "params": {"epochs": 2}}
    err = refused(reg, IdempotencyError, reg.register, "m", idempotency_key="k-1", **(request | {change: differs[change]}))
    assert "k-1" in str(err)
    assert reg.model("m").version_count == 1
    assert reg.get("m@latest").ref == first.ref


@pytest.mark.parametrize("change", ["artifact", "structure", "optimizer", "description", "ref"])
def test_a_key_reused_for_an_update_that_differs_in_any_field_is_refused(reg, artifact, make_artifact, change):
    other = make_artifact("other.bin", b"other weights\n")
    reg.register("m", artifact)
    reg.register("m", artifact)
    request = {"params": {"lr": 0.5}, "artifact": str(artifact), "structure": {"layers": 2},
               "optimizer": {"lr": 0.1}, "description": "first"}
    reg.update("m@1", idempotency_key="u-1", **request)
    differs = {"artifact": str(other), "structure": {"layers": 3}, "optimizer": {"lr": 0.2}, "description": "second"}
    ref = "m@2" if change == "ref" else "m@1"
    refused(reg, IdempotencyError, reg.update, ref, idempotency_key="u-1",
            **(request | ({change: differs[change]} if change in differs else {})))
    assert reg.model("m").version_count == 3


# -- the decider alone --------------------------------------------------------------------------------

def test_decide_register_on_an_empty_state():
    decision = decide(c.Register("m", {"source": "/x"}, params={"a": 1}), EmptyState())
    assert decision.stream == "model-m" and decision.expected is None and decision.version == 1
    assert [t for t, _ in decision.events] == ["ModelRegistered", "VersionRegistered"]
    assert decision.events[1][1]["status"] == "pending"


def test_decide_refuses_an_artifact_without_a_source():
    with pytest.raises(ValidationError):
        decide(c.Register("m", {"source": ""}), EmptyState())
    with pytest.raises(NotFoundError):
        decide(c.Tag("m", {"k": "v"}), EmptyState())
