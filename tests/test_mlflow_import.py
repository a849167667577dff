"""`mledger import mlflow` against a real MLflow registry (MLflow's own client and SQLite store, made by the
test): what MLflow holds arrives — names, versions, tags, aliases, bytes by digest —, a second import appends
nothing, and changes made in MLflow since arrive with the next import as exactly those changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")

from eventstore.errors import StoreError, ValidationError  # noqa: E402
from modelledger.mlflow_import import import_mlflow  # noqa: E402
from modelledger.registry import Registry  # noqa: E402

MODELS = {"vision-resnet": 9, "nlp-bert": 8, "tabular.xgb": 6}  # 23 versions in all


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def mlflow_registry(tmp_path: Path):
    """An MLflow registry with 3 models, 23 versions (one a folder per model, one deleted, one whose artifacts
    are gone), model and version tags, and aliases. Returns (client, uri, expected file bytes by version)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    files: dict[tuple[str, int], dict[str, bytes]] = {}
    for name, count in MODELS.items():
        client.create_registered_model(name, tags={"team": name.split("-")[0][:5]}, description=f"the {name} model")
        for n in range(1, count + 1):
            src = tmp_path / "art" / name.replace("/", "_") / f"v{n}"
            src.mkdir(parents=True)
            content = {"model.bin": f"{name} weights {n}".encode()}
            if n == 2:  # a folder with a sub-folder, like an MLflow model directory
                content["MLmodel"] = b"flavors: {}\n"
                content["data/config.json"] = json.dumps({"layers": n}).encode()
            for rel, data in content.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
            client.create_model_version(name, str(src), tags={"seed": str(n)})
            files[(name, n)] = content
        client.set_registered_model_alias(name, "champion", str(count - 1))
        client.set_registered_model_alias(name, "challenger", str(count))
    client.delete_model_version("nlp-bert", "3")
    gone = tmp_path / "art" / "gone"
    gone.mkdir()
    client.create_model_version("tabular.xgb", str(gone))  # version 7, whose bytes vanish before the import
    gone.rmdir()
    return client, uri, files


def _digests_of(version) -> dict[str, str]:
    art = version.artifact
    if art.get("kind") == "directory":
        return {f["path"]: f["digest"] for f in art["files"]}
    return {"": art["digest"]}


def test_import_matches_mlflow_and_is_incremental(mlflow_registry, home: Path, cli) -> None:
    client, uri, files = mlflow_registry
    with Registry.open(home) as reg:
        report = import_mlflow(reg, uri)
        assert not report.skipped
        head = reg.head()
        for name in MODELS:
            model = reg.model(name)
            rm = client.get_registered_model(name)
            assert model.tags == rm.tags
            assert model.description == rm.description
            assert model.aliases == {a: int(v) for a, v in rm.aliases.items()}
            live = {int(mv.version): mv for mv in client.search_model_versions(f"name='{name}'")}
            for v in model.versions:
                if v.version not in live:
                    assert v.deleted, f"{name}@{v.version} was deleted in MLflow"
                    continue
                mv = live[v.version]
                assert not v.deleted
                assert v.tags == mv.tags
                assert v.description == (mv.description or "")
                if (name, v.version) not in files:  # the version whose artifacts were gone
                    assert v.status == "failed" and "could not be downloaded" in v.artifact["error"]
                    continue
                assert v.status == "ready"
                content = files[(name, v.version)]
                got = _digests_of(v)
                if len(content) == 1:
                    # A folder of one file in MLflow is a folder here too.
                    assert sorted(got.values()) == [_sha(content["model.bin"])]
                else:
                    assert got == {rel: _sha(data) for rel, data in content.items()}
            # MLflow's own record of each version is kept with its event.
            created = [e for e in reg.history(name) if e.type == "VersionRegistered" and e.data["version"] == 1]
            assert created[0].data["origin"]["system"] == "mlflow"
            assert created[0].data["origin"]["created_at"].endswith("Z")
        assert reg.audit(deep=True).ok

        # Unchanged MLflow: the second import appends nothing.
        again = import_mlflow(reg, uri)
        assert again.events == 0 and reg.head() == head

        # Changes made in MLflow arrive with the next import, and only they.
        client.set_model_version_tag("vision-resnet", "4", "seed", "changed")
        client.delete_model_version_tag("vision-resnet", "5", "seed")
        client.set_registered_model_alias("nlp-bert", "champion", "1")
        client.delete_registered_model_alias("nlp-bert", "challenger")
        client.delete_model_version("tabular.xgb", "2")
        src = home.parent / "new-version"
        src.mkdir()
        (src / "model.bin").write_bytes(b"fresh weights")
        client.create_model_version("tabular.xgb", str(src))  # version 8
        client.update_registered_model("nlp-bert", description="BERT, retrained in November")
        client.update_model_version("vision-resnet", "4", description="the one we ship")
        before = reg.head()
        third = import_mlflow(reg, uri)
        types = sorted(t for m in third.models for t, n in m.event_types.items() for _ in range(n))
        assert types == ["AliasAssigned", "AliasRemoved", "ArtifactStored", "Described", "Described", "Tagged",
                         "Untagged", "VersionDeleted", "VersionRegistered"]
        # Descriptions changed in MLflow arrive as events; the past keeps the text it had.
        assert reg.model("nlp-bert").description == "BERT, retrained in November"
        assert reg.get("vision-resnet@4").description == "the one we ship"
        assert reg.catalog(as_of=before).model("nlp-bert").description == "the nlp-bert model"
        assert reg.catalog(as_of=before).get("vision-resnet@4").description == ""
        described = [e for e in reg.history("vision-resnet@4") if e.type == "Described"]
        assert [(e.data["description"], e.data["previous"]) for e in described] == [("the one we ship", "")]
        assert reg.get("vision-resnet@4").tags == {"seed": "changed"}
        assert reg.get("vision-resnet@5").tags == {}
        assert reg.model("nlp-bert").aliases == {"champion": 1}
        assert reg.get("tabular.xgb@2").deleted
        assert reg.get("tabular.xgb@8").artifact["digest"] is not None
        assert import_mlflow(reg, uri).events == 0
        assert reg.audit(deep=True).ok
    code, out, _ = cli("history", "nlp-bert")
    assert code == 0 and "Described" in out and "BERT, retrained in November" in out
    code, out, _ = cli("show", "vision-resnet@4", "--json")
    assert code == 0 and json.loads(out)["description"] == "the one we ship"


def test_dry_run_appends_and_copies_nothing(mlflow_registry, home: Path) -> None:
    _, uri, _ = mlflow_registry
    with Registry.open(home) as reg:
        report = import_mlflow(reg, uri, dry_run=True)
        assert report.events > 23  # every version, tag and alias would arrive
        assert reg.head() == 0
        assert not list(reg.store().iter_blobs())


def test_what_cannot_be_represented_is_reported(tmp_path: Path, home: Path, cli) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    client.create_registered_model("ok-model")
    client.create_model_version("ok-model", str(src), tags={"bad key with spaces": "x", "fine": "y"})
    client.set_registered_model_alias("ok-model", "Champion", "1")  # upper case: not an alias here
    code, out, err = cli("import", "mlflow", "--tracking-uri", uri, "--json")
    assert code == ValidationError.exit_code
    body = json.loads(out)
    skipped = body["models"][0]["skipped"]
    assert any("bad key with spaces" in s for s in skipped) and any("Champion" in s for s in skipped)
    with Registry.open(home) as reg:
        assert reg.get("ok-model@1").tags == {"fine": "y"}  # the rest arrived


def test_an_unreadable_mlflow_is_a_clear_error(tmp_path: Path, home: Path, cli,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's client retries a refused connection with back-off for minutes by default.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    missing = tmp_path / "no-such" / "mlflow.db"
    code, _, err = cli("import", "mlflow", "--tracking-uri", f"sqlite:///{missing}")
    assert code == StoreError.exit_code
    assert err.startswith(f"mledger: error: cannot read the MLflow registry at sqlite:///{missing}")
    assert not missing.parent.exists()  # MLflow was not left to create an empty one
    code, _, err = cli("import", "mlflow", "--tracking-uri", "http://127.0.0.1:9/")  # nothing listens
    assert code == StoreError.exit_code and "cannot read the MLflow registry" in err
    with Registry.open(home) as reg:
        assert reg.head() == 0
