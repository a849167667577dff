"""MLflow's ``model-versions/create`` naming an http(s) source under ``MLEDGER_SOURCES``: a small file is fetched
with one GET and committed with the version; anything else goes through fsspec as before. A real server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_support import head

from modelledger import Registry
from modelledger.jsonhttp import INLINE_MAX

CREATE = "/api/2.0/mlflow/model-versions/create"


class _Counting(http.server.SimpleHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path))
        super().do_GET()

    def do_HEAD(self) -> None:
        self.seen.append(("HEAD", self.path))
        super().do_HEAD()


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str, list[tuple[str, str]]]]:
    """A folder served over HTTP; the requests it answered."""
    folder = tmp_path / "served"
    folder.mkdir()
    seen: list[tuple[str, str]] = []
    handler = functools.partial(type("H", (_Counting,), {"seen": seen}), directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def mlflow_http(files, start_server, tokens, monkeypatch):
    folder, url, seen = files
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "64K")  # a token-first home is not "new": turn the tier on
    monkeypatch.setenv("MLEDGER_SOURCES", url + "allowed/")
    server = start_server()
    http = server.client(tokens["writer"])
    r = http.post("/api/2.0/mlflow/registered-models/create", json={"name": "m"})
    assert r.status_code == 200, r.text
    (folder / "allowed").mkdir()
    (folder / "elsewhere").mkdir()
    yield folder, url, seen, http
    http.close()


def _tiers(home: Path) -> dict[str, str]:
    with Registry.open(home) as reg:
        store = reg.store()
        return {d: tier for tier, s in (("small", store.small), ("large", store.large)) for d, _n, _t in s.iter_blobs()}


def test_a_small_source_is_one_get_and_one_commit(mlflow_http, home):
    folder, url, seen, http = mlflow_http
    data = b"MLBENCH small model bytes"
    (folder / "allowed" / "model.bin").write_bytes(data)
    seen.clear()
    r = http.post(CREATE, json={"name": "m", "source": url + "allowed/model.bin"})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"]["status"] == "READY"
    assert seen == [("GET", "/allowed/model.bin")]
    with Registry.open(home) as reg:
        v = reg.get("m@1")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert v.status == "ready" and v.artifact["digest"] == digest and v.artifact["size"] == len(data)
    assert v.artifact["source"] == url + "allowed/model.bin"  # retry/restore fetch it from there again
    assert v.artifact["files"][0]["path"] == "model.bin"
    assert _tiers(home)[digest] == "small"


def test_a_larger_source_and_a_folder_still_go_through_fsspec(mlflow_http, home):
    folder, url, seen, http = mlflow_http
    big = b"B" * (INLINE_MAX + 1)
    (folder / "allowed" / "big.bin").write_bytes(big)
    (folder / "allowed" / "ckpt").mkdir()
    (folder / "allowed" / "ckpt" / "a.bin").write_bytes(b"a" * 10)
    r = http.post(CREATE, json={"name": "m", "source": url + "allowed/big.bin"})
    assert r.status_code == 200 and r.json()["model_version"]["status"] == "READY", r.text
    r = http.post(CREATE, json={"name": "m", "source": url + "allowed/ckpt/"})
    assert r.status_code == 200, r.text
    with Registry.open(home) as reg:
        v1, v2 = reg.get("m@1"), reg.get("m@2")
    assert v1.artifact["digest"] == "sha256:" + hashlib.sha256(big).hexdigest()
    assert _tiers(home)[v1.artifact["digest"]] == "large"
    assert v2.artifact["kind"] == "directory"


@pytest.mark.parametrize("case", ["outside", "missing"])
def test_a_source_it_may_not_or_cannot_read_appends_nothing(mlflow_http, home, case):
    folder, url, seen, http = mlflow_http
    (folder / "elsewhere" / "model.bin").write_bytes(b"not allowed")
    source = url + ("elsewhere/model.bin" if case == "outside" else "allowed/nothing-here.bin")
    before, blobs = head(home), _tiers(home)
    seen.clear()
    r = http.post(CREATE, json={"name": "m", "source": source})
    assert r.status_code >= 400 and r.json()["error_code"], r.text
    if case == "outside":
        assert r.status_code == 403 and seen == []  # refused before anything is fetched
    assert head(home) == before and _tiers(home) == blobs


def test_search_and_get_answer_each_version_s_run_id(mlflow_http, home):
    """A run id is read from the event that created the version (the catalog's rows do not hold it): a
    search answers each version's own, empty where none was given, and filters on it."""
    folder, url, seen, http = mlflow_http
    runs = ["run-a", None, "run-b", "run-a", None]
    for k, run in enumerate(runs):
        (folder / "allowed" / f"m{k}.bin").write_bytes(b"MLBENCH model %d" % k)
        body = {"name": "m", "source": url + f"allowed/m{k}.bin", **({"run_id": run} if run else {})}
        r = http.post(CREATE, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"]["run_id"] == (run or "")
        http.post("/api/2.0/mlflow/model-versions/set-tag",
                  json={"name": "m", "version": str(k + 1), "key": "k", "value": str(k)})  # events between
    search = "/api/2.0/mlflow/model-versions/search"
    found = http.get(search, params={"filter": "name = 'm'"}).json()["model_versions"]
    assert [(v["version"], v["run_id"]) for v in found] == [(str(k + 1), run or "") for k, run in enumerate(runs)][::-1]
    found = http.get(search, params={"filter": "run_id = 'run-a'"}).json()["model_versions"]
    assert [v["version"] for v in found] == ["4", "1"]
    got = http.get("/api/2.0/mlflow/model-versions/get", params={"name": "m", "version": "3"}).json()
    assert got["model_version"]["run_id"] == "run-b"


def test_a_create_sent_again_is_one_version_within_the_window_and_a_new_one_after_it(files, make_client, tokens,
                                                                                   monkeypatch, home):
    """MLflow's client re-sends a create that timed out: within ``RETRY_WINDOW`` the same request returns the
    version the first one made; the same request made again later is a new version (as in MLflow). The
    register's own key lookup tells which (no lookup of the key before it)."""
    from modelledger.server import mlflow_api

    folder, url, seen = files
    monkeypatch.setenv("MLEDGER_SOURCES", url)
    (folder / "model.bin").write_bytes(b"MLBENCH bytes")
    http = make_client(tokens["writer"])
    assert http.post("/api/2.0/mlflow/registered-models/create", json={"name": "m"}).status_code == 200
    body = {"name": "m", "source": url + "model.bin", "run_id": "r1"}
    first = http.post(CREATE, json=body).json()["model_version"]
    again = http.post(CREATE, json=body).json()["model_version"]
    assert first["version"] == again["version"] == "1" and again["run_id"] == "r1"
    monkeypatch.setattr(mlflow_api, "RETRY_WINDOW", 0.0)  # every earlier create is now older than the window
    later = http.post(CREATE, json=body).json()["model_version"]
    assert later["version"] == "2" and later["run_id"] == "r1"
    assert http.post(CREATE, json=body).json()["model_version"]["version"] == "3"
    with Registry.open(home) as reg:
        assert [v.version for v in reg.catalog().model("m").versions] == [1, 2, 3]
