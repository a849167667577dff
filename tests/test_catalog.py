"""The read side: list/search filters, best, read-your-writes, rebuild equality, and the documented JSON
shapes of `show`, `list`, `log`, `history` and `projections rebuild`."""

from __future__ import annotations

import hashlib
import json

import pytest

from eventstore.errors import NotFoundError, ValidationError
from eventstore.events import NewEvent

VERSION_FIELDS = {"name", "version", "ref", "parent", "status", "deleted", "description", "params", "structure",
                  "optimizer", "tags", "aliases", "metrics", "artifact", "created_at", "created_by"}
ARTIFACT_FIELDS = {"source", "digest", "size", "format", "files", "unsafe"}
MODEL_FIELDS = {"name", "description", "tags", "aliases", "latest", "deleted"}
EVENT_FIELDS = ["position", "stream", "version", "type", "schema_version", "data", "meta", "recorded_at", "hash"]


@pytest.fixture
def populated(reg, make_artifact):
    """resnet (vision, 3 versions), bert (nlp), digits (vision, deleted model), team/vit (namespaced)."""
    weights = make_artifact("resnet.safetensors", b"resnet weights")
    tok = make_artifact("tokenizer.json", b'{"vocab": []}')
    reg.register("resnet-50", weights, description="Residual network for image classification",
                 tags={"task": "vision", "framework": "torch"})
    reg.update("resnet-50@1", params={"lr": 0.01})
    reg.update("resnet-50@2", params={"lr": 0.001})
    reg.metrics("resnet-50@1", accuracy=0.71, loss=0.9)
    reg.metrics("resnet-50@2", accuracy=0.93, loss=0.4)
    reg.metrics("resnet-50@3", accuracy=0.88, loss=0.3)
    reg.alias("resnet-50@2", "production")
    reg.register("bert", tok, description="Transformer encoder for text",
                 tags={"task": "nlp", "framework": "torch"})
    reg.tag("bert", owner="text-team")
    reg.register("digits", weights, description="small digits classifier", tags={"task": "vision"})
    reg.delete("digits", reason="retired")
    reg.register("team/vit", tok, description="vision transformer", tags={"task": "vision", "framework": "jax"})
    reg.alias("team/vit@1", "staging")
    return reg


def names(models) -> list[str]:
    return [m.name for m in models]


# -- list filters ---------------------------------------------------------------------------------

def test_list_without_filters_excludes_deleted_models(populated):
    cat = populated.catalog()
    assert names(cat.list()) == ["bert", "resnet-50", "team/vit"]
    assert names(cat.list(include_deleted=True)) == ["bert", "digits", "resnet-50", "team/vit"]


def test_search_matches_word_prefixes_in_names_descriptions_and_tags(populated):
    cat = populated.catalog()
    assert names(cat.list(search="resid")) == ["resnet-50"]
    assert names(cat.list(search="resnet")) == ["resnet-50"]
    assert names(cat.list(search="transf")) == ["bert", "team/vit"]
    assert names(cat.list(search="vis")) == ["resnet-50", "team/vit"]  # a version tag value
    assert names(cat.list(search="text-team")) == ["bert"]  # a model tag value
    assert names(cat.list(search="vision transformer")) == ["team/vit"]  # every word required
    assert names(cat.list(search="vision", include_deleted=True)) == ["digits", "resnet-50", "team/vit"]
    assert cat.list(search="nomatch") == []


VISION = ["resnet-50", "team/vit"]


@pytest.mark.parametrize(("words", "found"), [
    # FTS5 operators are words like any other: every word is required, and nobody's text has "not", "or"...
    ("vision NOT transformer", []), ("bert OR resnet", []), ("NEAR(vision transformer)", []),
    ("transformer AND", []), ("a AND", []),
    # ... and the punctuation of FTS5 syntax is no syntax: prefix stars, quotes, groups, columns, anchors.
    ("vis*", VISION), ('"vision transformer"', ["team/vit"]), ("(vision)", VISION), ("^vision", VISION),
    ("'vision'", VISION), ("task:vision", VISION), ("text-team", ["bert"]),
    # Nothing but punctuation: no word to look for.
    ("*", []), ("OR", []), ("(", []), ("^x", []), ("-", []), ("'", []), ("a:b", []),
])
def test_search_treats_fts_syntax_as_plain_words(populated, words, found):
    cat = populated.catalog()
    assert names(cat.list(search=words)) == found
    assert sorted({v.name for v in cat.search(keyword=words)}) == found


def test_search_for_a_lone_quote_is_refused_clearly_or_finds_nothing(populated):
    cat = populated.catalog()
    try:
        assert cat.list(search='"') == [] and cat.search(keyword='"') == []
    except ValidationError:
        pass  # a clear refusal is fine too; a driver error is not


def test_tag_filters_are_anded_and_see_model_and_version_tags(populated):
    cat = populated.catalog()
    assert names(cat.list(tags={"framework": "torch"})) == ["bert", "resnet-50"]
    assert names(cat.list(tags={"framework": "torch", "task": "vision"})) == ["resnet-50"]
    assert names(cat.list(tags={"owner": "text-team"})) == ["bert"]
    assert names(cat.list(tags={"framework": "torch", "owner": "text-team"})) == ["bert"]
    assert cat.list(tags={"task": "vision", "framework": "none"}) == []


def test_a_named_search_by_tags_finds_what_the_unnamed_search_finds_of_that_model(populated):
    """A search by name and tags (looked up through the model's matching versions on SQLite) finds exactly the
    versions the search by tags alone finds of that model: the model's own tags count for every version, a
    version's own value beside the model's matches too, deleted versions and models never."""
    reg = populated
    reg.tag("resnet-50@3", stage="prod")
    reg.tag("resnet-50", team="vision-team")
    reg.tag("resnet-50@1", team="other")
    reg.delete("resnet-50@2")
    cat = reg.catalog()
    for tags in ({"stage": "prod"}, {"team": "vision-team"}, {"team": "other"}, {"team": "vision-team", "stage": "prod"},
                 {"task": "vision"}, {"task": "vision", "framework": "torch"}, {"stage": "none"},
                 {"owner": "text-team"}):
        for name in ("resnet-50", "bert", "digits", "team/vit"):
            named = [v.ref for v in cat.search(name=name, tags=tags)]
            assert named == [v.ref for v in cat.search(tags=tags) if v.name == name], (name, tags)
    assert [v.ref for v in cat.search(name="resnet-50", tags={"team": "vision-team"})] == ["resnet-50@1", "resnet-50@3"]
    assert [v.ref for v in cat.search(name="resnet-50", tags={"team": "other"})] == ["resnet-50@1"]
    assert [v.ref for v in cat.search(name="resnet-50", tags={"team": "vision-team", "stage": "prod"})] == [
        "resnet-50@3"]
    assert [v.ref for v in cat.search(name="bert", tags={"owner": "text-team"})] == ["bert@1"]


@pytest.mark.local_only("registers again from another version's recorded source, a local path; over HTTP it is upload://NAME")
def test_a_deleted_version_no_longer_makes_its_model_match(populated):
    reg = populated
    reg.register("solo", reg.get("bert").artifact["source"], tags={"only": "here"})
    assert names(reg.catalog().list(tags={"only": "here"})) == ["solo"]
    assert names(reg.catalog().list(search="here")) == ["solo"]
    reg.delete("solo@1")
    assert reg.catalog().list(tags={"only": "here"}) == []
    assert reg.catalog().list(search="here") == []
    reg.undelete("solo@1")
    assert names(reg.catalog().list(tags={"only": "here"})) == ["solo"]


def test_file_and_alias_filters(populated):
    cat = populated.catalog()
    assert names(cat.list(file="resnet.safetensors")) == ["resnet-50"]
    assert names(cat.list(file="tokenizer.json")) == ["bert", "team/vit"]
    assert names(cat.list(file="tokenizer.json", include_deleted=True)) == ["bert", "team/vit"]
    assert names(cat.list(file="resnet.safetensors", include_deleted=True)) == ["digits", "resnet-50"]
    assert cat.list(file="nothing.bin") == []
    assert names(cat.list(alias="production")) == ["resnet-50"]
    assert names(cat.list(alias="staging")) == ["team/vit"]
    assert names(cat.list(alias="staging", search="vision", tags={"framework": "jax"})) == ["team/vit"]


def test_search_returns_live_versions(populated):
    reg = populated
    hits = reg.catalog().search(keyword="resnet")
    assert [v.ref for v in hits] == ["resnet-50@1", "resnet-50@2", "resnet-50@3"]
    reg.delete("resnet-50@1")
    assert [v.ref for v in reg.catalog().search(tags={"task": "vision"})] == [
        "resnet-50@2", "resnet-50@3", "team/vit@1"]
    assert [v.ref for v in reg.catalog().search(alias="production")] == ["resnet-50@2"]
    assert [v.ref for v in reg.catalog().search(name="bert", file="tokenizer.json")] == ["bert@1"]


# -- best -----------------------------------------------------------------------------------------

def test_best_picks_max_or_min_and_ignores_deleted_versions(populated):
    reg = populated
    cat = reg.catalog()
    assert cat.best("resnet-50", "accuracy").ref == "resnet-50@2"
    assert cat.best("resnet-50", "loss", minimize=True).ref == "resnet-50@3"
    assert cat.best("resnet-50", "accuracy", minimize=True).ref == "resnet-50@1"
    reg.delete("resnet-50@2")
    assert cat.best("resnet-50", "accuracy").ref == "resnet-50@3"
    with pytest.raises(NotFoundError):
        cat.best("resnet-50", "f1")
    with pytest.raises(NotFoundError):
        cat.best("nosuch", "accuracy")


def test_best_breaks_ties_with_the_newest_version(reg, artifact):
    for _ in range(3):
        reg.register("m", artifact)
    reg.metrics("m@1", acc=0.5)
    reg.metrics("m@2", acc=0.9)
    reg.metrics("m@3", acc=0.9)
    assert reg.catalog().best("m", "acc").version == 3


def test_metrics_are_overwritten_not_accumulated_for_best(reg, artifact):
    reg.register("m", artifact)
    reg.register("m", artifact)
    reg.metrics("m@1", acc=0.99)
    reg.metrics("m@2", acc=0.5)
    reg.metrics("m@1", acc=0.1)
    assert reg.catalog().best("m", "acc").version == 2


# -- read-your-writes and catch-up -----------------------------------------------------------------

def test_a_second_registry_sees_writes_at_once(home, artifact):
    from modelledger import Registry

    with Registry.open(home) as a, Registry.open(home) as b:
        a.register("m", artifact)
        assert b.get("m").version == 1
        b.tag("m@1", by="b")
        assert a.get("m@1").tags == {"by": "b"}
        a.alias("m@1", "production")
        assert b.get("m@production").version == 1


def test_two_registries_on_different_homes_in_one_process(tmp_path, artifact):
    from modelledger import Registry

    with Registry.open(tmp_path / "one") as one, Registry.open(tmp_path / "two") as two:
        assert two.register("m", artifact, timeout=5).status == "ready"
        assert one.register("m", artifact, timeout=5).status == "ready"
        assert one.register("other", artifact, timeout=5).status == "ready"


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_events_appended_behind_the_projection_are_folded_in_on_the_next_read(reg, artifact):
    reg.register("m", artifact)
    reg.append_batch([
        NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"imported": "yes"}}),
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": 1, "metrics": {"acc": 0.5}}),
    ])
    assert reg.projection.lag() == 2
    v = reg.get("m@1")
    assert v.tags == {"imported": "yes"} and v.metrics == {"acc": 0.5}
    assert reg.projection.lag() == 0  # the stored checkpoint is at the head (on either backend)


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_a_command_after_a_long_import_folds_the_lag_in_pages_and_decides_on_all_of_it(reg, artifact, monkeypatch):
    from eventstore import handler

    monkeypatch.setattr(handler, "CATCH_UP_PAGE", 100)  # so a lag of 250 takes three pages
    reg.register("m", artifact)
    reg.append_batch([NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"n": str(i)}})
                      for i in range(250)])
    commits = []
    original = reg.recorder.write_batched  # a command's transactions (``Recorder.write_batched``)

    def counting_write(first=None, **kwargs):
        commits.append(reg.projection.lag())
        return original(first, **kwargs)

    monkeypatch.setattr(reg.recorder, "write_batched", counting_write)
    reg.tag("m@1", n="after")
    # Two pages are committed on their own; the command folds the last 50 and decides in the third.
    assert commits == [250, 150, 50]
    assert reg.get("m@1").tags == {"n": "after"}
    assert [e.data["tags"] for e in reg.history("m")[-1:]] == [{"n": "after"}]


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_version_count_is_the_number_of_versions_now_and_as_of_the_past_even_with_an_imported_gap(reg, artifact):
    from eventstore.event_data import version_created

    reg.register("m", artifact)
    reg.register("m", artifact)
    before = reg.head()
    # An import may number versions with a gap: the count is what exists, not the highest number.
    reg.append_batch([NewEvent("model-m", "VersionRegistered", version_created(
        "m", 7, None, description="", params={}, structure={}, optimizer={}, tags={},
        artifact={"source": str(artifact)}, status="pending"))])
    assert [(m.name, m.version_count) for m in reg.catalog().list()] == [("m", 3)]
    assert reg.catalog().model("m").version_count == 3
    assert [(m.name, m.version_count) for m in reg.catalog(as_of=reg.head()).list()] == [("m", 3)]
    assert reg.catalog(as_of=before).model("m").version_count == 2


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_an_imported_event_that_is_not_json_is_refused_with_a_validation_error(reg, artifact):
    reg.register("m", artifact)
    head = reg.head()
    with pytest.raises(ValidationError, match="not JSON"):
        reg.append_batch([NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"k": "v"},
                                                         "note": {1, 2}})])
    assert reg.head() == head


@pytest.mark.local_only("projections rebuild runs only where the database is")
def test_rebuild_gives_the_same_catalog_and_the_same_search_results(populated):
    reg = populated
    reg.delete("resnet-50@1")
    reg.alias("resnet-50@3", "production")
    reg.rollback("resnet-50", "production")
    reg.untag("bert", "owner")
    cat = reg.catalog()
    before = (cat.digest(), names(cat.list(search="vision")), names(cat.list(search="text")),
              [v.ref for v in cat.search(keyword="torch")], cat.model("resnet-50").to_json())
    applied = reg.rebuild_projections()
    assert applied == reg.head()
    after = (cat.digest(), names(cat.list(search="vision")), names(cat.list(search="text")),
             [v.ref for v in cat.search(keyword="torch")], cat.model("resnet-50").to_json())
    assert after == before


def _folder(tmp_path) -> tuple[str, dict[str, dict[str, object]]]:
    """A folder of two files, and what each file is: its digest and size."""
    folder = tmp_path / "folder-art"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"eleven byte")
    want = {p.relative_to(folder).as_posix(): {"digest": "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest(),
                                               "size": p.stat().st_size}
            for p in folder.rglob("*") if p.is_file()}
    return str(folder), want


def test_a_version_record_knows_each_file_s_digest_and_size(reg, tmp_path):
    # Read back through the SDK (over HTTP in that pass, where the record is parsed from the server's JSON).
    folder, want = _folder(tmp_path)
    v = reg.register("folder", folder)
    got = reg.get("folder@1")
    assert {f["path"]: {"digest": f["digest"], "size": f["size"]} for f in got.artifact["files"]} == want
    assert got.artifact["file_count"] == 2
    assert got.to_json() == v.to_json()


def test_a_file_is_found_by_its_path_in_the_folder_or_by_its_base_name_only(reg, tmp_path):
    """One index (the base name) answers both questions: a path finds the file at that path only, a base name
    the file wherever it is; versions and models alike."""
    folder, _ = _folder(tmp_path)
    reg.register("folder", folder)
    other = tmp_path / "other-art"
    (other / "elsewhere").mkdir(parents=True)
    (other / "elsewhere" / "weights.bin").write_bytes(b"other bytes")
    reg.register("other", str(other))
    cat = reg.catalog()
    assert names(cat.list(file="sub/weights.bin")) == ["folder"]
    assert names(cat.list(file="elsewhere/weights.bin")) == ["other"]
    assert names(cat.list(file="weights.bin")) == ["folder", "other"]
    assert names(cat.list(file="config.json")) == ["folder"]
    assert cat.list(file="weights.bin/") == [] and cat.list(file="nothere/weights.bin") == []
    assert [v.ref for v in reg.search(file="sub/weights.bin")] == ["folder@1"]
    assert [v.ref for v in reg.search(file="weights.bin")] == ["folder@1", "other@1"]


def test_show_json_lists_each_file_with_its_digest_and_size(reg, cli, tmp_path):
    folder, want = _folder(tmp_path)
    code, out, err = cli("register", "folder", "--artifact", folder, "--json")
    assert code == 0, err
    code, out, err = cli("show", "folder@1", "--json")
    assert code == 0, err
    art = json.loads(out)["artifact"]
    assert art["files"] == sorted(want)  # the paths, as before
    assert {f["path"]: {"digest": f["digest"], "size": f["size"]} for f in art["file_details"]} == want
    assert art["file_count"] == 2
    # The same JSON as the registry's own record (the CLI may have gone through a server).
    assert art == reg.get("folder@1").to_json()["artifact"] | {"source": art["source"]}


@pytest.mark.local_only("projections rebuild runs only where the database is")
def test_a_rebuild_in_pages_of_three_events_gives_the_same_catalog_and_indexes(populated, monkeypatch):
    """A rebuild reads the log's rows itself, a page at a time, and builds the query indexes (the full-text
    index too) after its last page: cut into pages of three events, every page boundary falls inside some
    model's history, and the catalog, its digest and what its indexes answer are still the inline fold's."""
    import projections.catalog

    reg = populated
    reg.tag("resnet-50@2", stage="prod")
    reg.alias("resnet-50@3", "production")
    reg.delete("resnet-50@1")
    cat = reg.catalog()

    def answers():
        return (cat.digest(), names(cat.list(search="vision")), names(cat.list(search="res")),
                names(cat.list(tags={"stage": "prod"})), names(cat.list(alias="production")),
                names(cat.list(file="tokenizer.json")),
                [v.ref for v in cat.search(keyword="torch")], [v.ref for v in cat.search(tags={"stage": "prod"})],
                cat.model("resnet-50").to_json(), reg.catalog(as_of=reg.head() - 2).model("resnet-50").to_json())

    before = answers()
    assert before[1] and before[3] and before[4] and before[5], "the fixture's searches must find something to compare"
    monkeypatch.setattr(projections.catalog, "REBUILD_PAGE", 3)
    assert reg.rebuild_projections() == reg.head()
    assert answers() == before

# -- JSON shapes through the CLI ---------------------------------------------------------------------

def test_show_json_has_the_documented_fields(populated, cli):
    code, out, err = cli("show", "resnet-50@production", "--json")
    assert code == 0, err
    v = json.loads(out)
    assert VERSION_FIELDS <= set(v)
    assert ARTIFACT_FIELDS <= set(v["artifact"])
    assert v["ref"] == "resnet-50@2" and v["parent"] == 1 and v["aliases"] == ["production"]
    assert v["status"] == "ready" and v["deleted"] is False
    assert v["artifact"]["files"] == ["resnet.safetensors"]
    assert v["artifact"]["digest"].startswith("sha256:")
    assert v["metrics"] == {"accuracy": 0.93, "loss": 0.4}
    assert v["created_by"] == "tester@test"

    code, out, err = cli("show", "resnet-50", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert MODEL_FIELDS | {"versions"} <= set(m)
    assert m["aliases"] == {"production": 2} and m["latest"] == 3
    assert [x["version"] for x in m["versions"]] == [1, 2, 3]
    assert all(VERSION_FIELDS <= set(x) for x in m["versions"])


def test_list_json_has_the_model_fields(populated, cli):
    code, out, err = cli("list", "--json", "--tag", "task=vision")
    assert code == 0, err
    doc = json.loads(out)
    assert [m["name"] for m in doc["models"]] == ["resnet-50", "team/vit"]
    assert all(MODEL_FIELDS <= set(m) for m in doc["models"])
    code, out, _ = cli("list", "--json", "--search", "vis", "--deleted")
    assert [m["name"] for m in json.loads(out)["models"]] == ["digits", "resnet-50", "team/vit"]


def test_log_json_is_json_lines_of_envelopes(populated, cli):
    code, out, err = cli("log", "--json")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == populated.head()
    docs = [json.loads(line) for line in lines]
    assert all(list(d) == EVENT_FIELDS for d in docs)
    assert [d["position"] for d in docs] == list(range(1, len(docs) + 1))
    code, out, _ = cli("log", "--json", "--since", "5")
    assert [json.loads(line)["position"] for line in out.splitlines()] == list(range(6, len(docs) + 1))


def test_history_of_a_model_and_of_a_version(populated, cli):
    code, out, err = cli("history", "resnet-50@2", "--json")
    assert code == 0, err
    events = json.loads(out)["events"]
    assert {e["data"]["version"] for e in events} == {2}
    assert [e["type"] for e in events] == ["ParamsUpdated", "MetricsRecorded", "AliasAssigned"]
    code, out, _ = cli("history", "resnet-50", "--json")
    events = json.loads(out)["events"]
    assert {e["stream"] for e in events} == {"model-resnet-50"}
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))


def test_write_commands_print_what_they_produced(reg, artifact, cli):
    code, out, err = cli("register", "m", "--artifact", str(artifact), "--params", '{"lr": 0.1}', "--json")
    assert code == 0, err
    assert json.loads(out)["ref"] == "m@1"
    code, out, err = cli("update", "m@1", "--params", '{"lr": null, "wd": 1}', "--json")
    v2 = json.loads(out)
    assert (v2["ref"], v2["parent"], v2["params"]) == ("m@2", 1, {"wd": 1})
    code, out, err = cli("tag", "m@2", "k=v", "x=y", "--json")
    assert code == 0, err
    assert [e["type"] for e in json.loads(out)["events"]] == ["Tagged"]
    code, out, err = cli("alias", "m@2", "production", "--json")
    assert json.loads(out)["events"][0]["data"]["version"] == 2
    code, out, err = cli("metrics", "m@2", "acc=0.5", "n=3", "--json")
    assert json.loads(out)["events"][0]["data"]["metrics"] == {"acc": 0.5, "n": 3}
    code, out, err = cli("best", "m", "--metric", "acc", "--json")
    assert json.loads(out)["ref"] == "m@2"


@pytest.mark.local_only("projections rebuild runs only where the database is")
def test_projections_rebuild_from_the_cli_gives_an_identical_catalog(populated, cli):
    before = populated.catalog().digest()
    code, out, err = cli("projections", "rebuild", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["identical"] is True and doc["digest"] == before and doc["position"] == populated.head()
    assert populated.catalog().digest() == before


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_imported_events_about_unknown_models_change_nothing_and_block_nothing(reg, artifact):
    """append_batch checks shapes, not history: an event about a model the log never registered folds to
    nothing (the same on every replay), and the name stays usable."""
    from eventstore.events import NewEvent

    reg.append_batch([
        NewEvent("model-ghost", "Tagged", {"name": "ghost", "version": None, "tags": {"k": "v"}}),
        NewEvent("model-ghost", "VersionRegistered", {
            "name": "ghost", "version": 7, "parent": None, "description": "", "params": {}, "structure": {},
            "optimizer": {}, "tags": {}, "artifact": {"source": "/nowhere"}, "status": "pending"}),
        NewEvent("model-ghost", "AliasAssigned", {"name": "ghost", "alias": "prod", "version": 7, "previous": None}),
    ])
    assert not reg.catalog().exists("ghost")
    v = reg.register("ghost", artifact)
    assert v.ref == "ghost@1" and v.status == "ready" and v.aliases == ()
    assert reg.audit().ok


@pytest.mark.local_only("appends raw imported events with append_batch, which runs only where the database is")
def test_append_batch_refuses_a_malformed_event_and_appends_nothing(reg, artifact):
    from eventstore.errors import ValidationError
    from eventstore.events import NewEvent

    reg.register("m", artifact)
    head = reg.head()
    bad = [
        NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"ok": "yes"}}),
        NewEvent("model-m", "MetricsRecorded", {"name": "m", "version": 1, "metrics": {"acc": "high"}}),
    ]
    with pytest.raises(ValidationError, match="metrics"):
        reg.append_batch(bad)
    with pytest.raises(ValidationError, match="stream"):
        reg.append_batch([NewEvent("model-other", "Tagged", {"name": "m", "version": None, "tags": {}})])
    assert reg.head() == head


def test_search_with_a_nul_is_bad_input_in_the_sdk_too(reg) -> None:
    """L13 through the SDK: a NUL in the search words is a ValidationError, not a database error."""
    with pytest.raises(ValidationError, match="NUL"):
        reg.catalog().list(search="vision\x00x")
    with pytest.raises(ValidationError, match="NUL"):
        reg.catalog().search(keyword="a\x00")
