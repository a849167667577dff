"""diff_versions / format_diff: nested key paths, metrics side by side, tags and aliases, folder files, lineage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from projections.diff import diff_values, diff_versions, format_diff, lineage


def parent_of(reg):
    return lambda name, number: reg.get(f"{name}@{number}").parent


def test_nested_params_changes_by_key_path(reg, artifact):
    v1 = reg.register("net", artifact=str(artifact), params={
        "lr": 0.1, "dropout": 0.5, "layers": [{"units": 64, "act": "relu"}, {"units": 10}],
        "sched": {"kind": "cos", "warmup": 5}, "a.b": 1})
    v2 = reg.update(v1, params={
        "dropout": None, "momentum": 0.9, "layers": [{"units": 128, "act": "relu"}, {"units": 10}, {"units": 2}],
        "sched": {"warmup": 10}, "a.b": 2})
    d = diff_versions(v1, v2)
    p = d["params"]
    assert p["changed"] == {"layers.0.units": {"old": 64, "new": 128}, "sched.warmup": {"old": 5, "new": 10},
                            "a\\.b": {"old": 1, "new": 2}}
    assert p["added"] == {"momentum": 0.9, "layers.2": {"units": 2}}
    assert p["removed"] == {"dropout": 0.5}
    assert d["structure"] == d["optimizer"] == {"added": {}, "removed": {}, "changed": {}}
    assert d["fields"] == {"parent": {"old": None, "new": 1}}
    assert d["a"] == "net@1" and d["b"] == "net@2"
    json.dumps(d)  # JSON-able as it is


def test_diff_values_edge_cases():
    d = diff_values({"x": 1, "y": [1, 2], "z": {"k": 1}, "w": {}}, {"x": 1.0, "y": {"0": 1}, "z": None})
    assert d["changed"] == {"x": {"old": 1, "new": 1.0}, "y": {"old": [1, 2], "new": {"0": 1}},
                            "z": {"old": {"k": 1}, "new": None}}
    assert d["removed"] == {"w": {}} and d["added"] == {}
    assert diff_values([1, 2, 3], [1, 5])["changed"] == {"1": {"old": 2, "new": 5}}
    assert diff_values([1, 2, 3], [1, 5])["removed"] == {"2": 3}
    assert diff_values({"a\\b": {"c.d": 1}}, {"a\\b": {"c.d": 2}})["changed"] == {
        "a\\\\b.c\\.d": {"old": 1, "new": 2}}
    assert diff_values({"t": True}, {"t": 1})["changed"] == {"t": {"old": True, "new": 1}}


def test_structure_and_optimizer_are_diffed_too(reg, artifact):
    v1 = reg.register("opt", artifact=str(artifact), structure={"blocks": [{"type": "conv", "k": 3}]},
                      optimizer={"name": "sgd", "momentum": 0.9})
    v2 = reg.update(v1, structure={"blocks": [{"type": "conv", "k": 5}, {"type": "fc"}]},
                    optimizer={"name": "adam", "betas": [0.9, 0.999]})
    d = diff_versions(v1, v2)
    assert d["structure"]["changed"] == {"blocks.0.k": {"old": 3, "new": 5}}
    assert d["structure"]["added"] == {"blocks.1": {"type": "fc"}}
    assert d["optimizer"] == {"added": {"betas": [0.9, 0.999]}, "removed": {"momentum": 0.9},
                              "changed": {"name": {"old": "sgd", "new": "adam"}}}


def test_metrics_side_by_side_tags_and_aliases(reg, artifact):
    v1 = reg.register("m", artifact=str(artifact), tags={"task": "vision", "owner": "ann", "team.x": "a"})
    v2 = reg.update(v1, params={"lr": 0.01})
    reg.metrics(v1, acc=0.9, loss=0.3, f1=0.5)
    reg.metrics(v2, acc=0.93, loss=0.25, auc=0.8)
    reg.tag(v2, task="detection", stage="prod")
    reg.tag(v2, **{"team.x": "a"})
    reg.untag(v2, "owner")
    reg.alias(v1, "stable")
    reg.alias(v2, "production")
    d = diff_versions(reg.get("m@1"), reg.get("m@2"))
    assert d["metrics"] == {
        "acc": {"a": 0.9, "b": 0.93, "delta": 0.03},
        "auc": {"a": None, "b": 0.8, "delta": None},
        "f1": {"a": 0.5, "b": None, "delta": None},
        "loss": {"a": 0.3, "b": 0.25, "delta": -0.05},
    }
    assert d["tags"] == {"added": {"stage": "prod"}, "removed": {"owner": "ann"},
                         "changed": {"task": {"old": "vision", "new": "detection"}}}
    assert d["aliases"] == {"a": ["stable"], "b": ["production"]}


def test_directory_artifact_file_changes(reg, tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        (folder / "sub").mkdir(parents=True)
    (one / "config.json").write_text("{}")
    (one / "sub" / "weights.bin").write_bytes(b"old weights")
    (one / "vocab.txt").write_text("a b c")
    (two / "config.json").write_text("{}")
    (two / "sub" / "weights.bin").write_bytes(b"new weights!")
    (two / "tokenizer.json").write_text("{}")
    v1 = reg.register("folder", artifact=str(one))
    v2 = reg.update(v1, artifact=str(two))
    art = diff_versions(v1, v2)["artifact"]
    assert art["same"] is False
    assert art["a"]["kind"] == art["b"]["kind"] == "directory"
    assert art["files"]["added"] == ["tokenizer.json"]
    assert art["files"]["removed"] == ["vocab.txt"]
    assert [c["path"] for c in art["files"]["changed"]] == ["sub/weights.bin"]
    change = art["files"]["changed"][0]
    assert (change["a"]["size"], change["b"]["size"]) == (11, 12)
    assert change["a"]["digest"] != change["b"]["digest"]


def test_same_artifact_and_a_single_file(reg, artifact, make_artifact):
    v1 = reg.register("file", artifact=str(artifact))
    v2 = reg.update(v1, params={"lr": 1})
    v3 = reg.update(v2, artifact=str(make_artifact("other.bin", b"other")))
    same = diff_versions(v1, v2)["artifact"]
    assert same["same"] is True and same["files"] is None
    assert diff_versions(v2, v3)["artifact"]["same"] is False
    pending = dataclasses.replace(v3, artifact={"source": "x"})
    assert diff_versions(v2, pending)["artifact"]["same"] is None


@pytest.fixture
def branched(reg, artifact):
    """v1 → v2 → v3 and v1 → v4; v5 registered anew (no parent)."""
    v1 = reg.register("tree", artifact=str(artifact), params={"lr": 0.1})
    v2 = reg.update(v1, params={"lr": 0.05})
    reg.update(v2, params={"lr": 0.01})
    reg.update(v1, params={"lr": 0.2})
    reg.register("tree", artifact=str(artifact), params={"fresh": True})
    return reg


def test_lineage_through_a_common_ancestor_across_branches(branched):
    d = diff_versions(branched.get("tree@3"), branched.get("tree@4"), lineage=parent_of(branched))
    assert d["lineage"] == {"common_ancestor": 1, "chain": [3, 2, 1, 4]}
    back = diff_versions(branched.get("tree@4"), branched.get("tree@3"), lineage=parent_of(branched))
    assert back["lineage"] == {"common_ancestor": 1, "chain": [4, 1, 2, 3]}


def test_lineage_of_an_ancestor_and_of_itself(branched):
    po = parent_of(branched)
    assert lineage("tree", 1, 3, po) == {"common_ancestor": 1, "chain": [1, 2, 3]}
    assert lineage("tree", 3, 1, po) == {"common_ancestor": 1, "chain": [3, 2, 1]}
    assert lineage("tree", 2, 2, po) == {"common_ancestor": 2, "chain": [2]}


def test_lineage_without_a_common_ancestor_or_across_models(branched, artifact):
    po = parent_of(branched)
    assert lineage("tree", 3, 5, po) == {"common_ancestor": None, "chain": None}
    other = branched.register("other", artifact=str(artifact))
    assert diff_versions(branched.get("tree@1"), other, lineage=po)["lineage"] is None
    assert diff_versions(branched.get("tree@1"), branched.get("tree@3"))["lineage"] is None  # no callable


def test_lineage_survives_a_cycle_in_corrupted_parents():
    parents = {1: 2, 2: 1, 3: 1}
    assert lineage("x", 3, 2, lambda _n, v: parents.get(v)) == {"common_ancestor": 1, "chain": [3, 1, 2]}


def test_format_diff_for_people(branched):
    reg = branched
    reg.metrics("tree@3", acc=0.9)
    reg.metrics("tree@4", acc=0.93, loss=0.1)
    reg.tag("tree@4", stage="prod")
    d = diff_versions(reg.get("tree@3"), reg.get("tree@4"), lineage=parent_of(reg))
    text = format_diff(d)
    lines = text.splitlines()
    assert lines[0] == "tree@3 → tree@4"
    assert "lineage: common ancestor @1: @3 → @2 → @1 → @4" in lines
    assert "  ~ parent  2 → 1" in lines
    assert "  ~ lr  0.01 → 0.2" in lines
    acc = next(line for line in lines if line.lstrip().startswith("~ acc"))
    assert acc.split() == ["~", "acc", "0.9", "0.93", "(+0.03)"]
    loss = next(line for line in lines if "loss" in line)
    assert loss.split()[:2] == ["+", "loss"]
    # the metric columns line up
    assert acc.index("0.93") + len("0.93") == loss.index("0.1") + len("0.1")
    assert "  + stage  \"prod\"" in lines
    assert any(line.startswith("artifact: same") for line in lines)


def test_format_diff_aligns_paths_and_lists_folder_files(reg, tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "a.bin").write_bytes(b"1")
    (one / "gone.txt").write_text("x")
    (two / "a.bin").write_bytes(b"22")
    (two / "new.txt").write_text("y")
    v1 = reg.register("f", artifact=str(one), params={"layers": [{"units": 1}], "lr": 1})
    v2 = reg.update(v1, artifact=str(two), params={"layers": [{"units": 2}], "lr": None, "extra": {"k": 1}})
    lines = format_diff(diff_versions(v1, v2)).splitlines()
    params = lines[lines.index("params:") + 1: lines.index("params:") + 4]
    assert [p.split()[0] for p in params] == ["+", "-", "~"]
    assert len({p.index(p.split()[2]) for p in params}) == 1  # the value column lines up
    assert "    + new.txt" in lines and "    - gone.txt" in lines
    assert any(line.startswith("    ~ a.bin") and "1 → 2 bytes" in line for line in lines)
