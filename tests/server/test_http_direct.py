"""The hot routes' dispatch in front of FastAPI (``modelledger/server/direct.py``): it answers only routes the
app has, as the app would, and hands FastAPI every request whose body it does not accept."""

from __future__ import annotations

import httpx
import pytest
from server_support import head, register


def test_the_dispatch_serves_only_routes_the_app_has(admin):
    from fastapi.routing import APIRoute

    from modelledger.server.direct import table

    def routes(items):  # FastAPI 0.165 keeps an included router whole, behind its own route
        for route in items:
            inner = getattr(route, "original_router", None)
            yield from routes(inner.routes) if inner is not None else [route]

    declared = {(method, route.path) for route in routes(admin.app.routes) if isinstance(route, APIRoute)
                for method in route.methods}
    assert set(table()) <= declared


def test_a_body_it_does_not_accept_gets_fastapi_s_own_answer(admin, home):
    register(admin, "resnet")
    before = head(home)
    body = b'{"ref": "resnet@1", "tags": {"k": "v"}}'
    r = admin.post("/api/v1/tag", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["error"] == "bad_input"
    r = admin.post("/api/v1/tag", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_input"
    r = admin.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"k": "v"}, "extra": 1})
    assert r.status_code == 400 and "extra" in r.json()["message"]
    assert head(home) == before
    r = admin.post("/api/v1/tag", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200 and r.json()["events"][0]["data"]["tags"] == {"k": "v"}


def test_refusals_keep_their_status_headers_and_shape(make_client, admin, tokens):
    register(admin, "resnet")
    anonymous = make_client()
    r = anonymous.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"k": "v"}})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthenticated"
    r = make_client(tokens["reader"]).post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"k": "v"}})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = anonymous.post("/api/2.0/mlflow/model-versions/set-tag",
                       json={"name": "resnet", "version": "1", "key": "k", "value": "v"})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    r = admin.post("/api/2.0/mlflow/model-versions/set-tag", content=b"{nope")
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_REQUEST"
    r = admin.put("/api/2.0/mlflow/model-versions/set-tag", json={})
    assert r.status_code == 405  # a method the path does not take: FastAPI's routing answers


TAGS = {"api": ("/api/v1/tag", {"ref": "resnet@1", "tags": {"stage": "prod"}}),
        "mlflow": ("/api/2.0/mlflow/model-versions/set-tag", {"name": "resnet", "version": "1", "key": "stage",
                                                              "value": "prod"})}


@pytest.mark.parametrize("api", sorted(TAGS))
def test_a_write_waiting_for_another_writer_leaves_the_server_answering(start_server, tokens, home,
                                                                       registry_database, api):
    """A tag runs on the server's event loop only while the write lock is free at once: held by another
    process, the tag waits in the thread pool instead, so the server keeps answering meanwhile, and once the
    lock is freed the tag is appended exactly once. The same for MLflow's set-tag."""
    import fcntl
    import os
    import threading

    from eventstore.writelock import lock_file_of

    if registry_database:
        pytest.skip("the SQLite log's write lock (on PostgreSQL every command runs in the thread pool)")
    server = start_server("--workers", "1")
    with server.client(tokens["admin"]) as client:
        register(client, "resnet")
        before = head(home)
        answers: list[httpx.Response] = []
        fd = os.open(lock_file_of(home / "registry.db"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process's hold, as the kernel sees it
            path, payload = TAGS[api]
            tagging = threading.Thread(target=lambda: answers.append(client.post(path, json=payload)))
            tagging.start()
            with server.client(tokens["reader"]) as reader:
                for _ in range(3):
                    r = reader.get("/api/v1/health", timeout=30)
                    assert r.status_code == 200 and r.json()["head"] == before  # the tag still waits
                    assert reader.get("/api/v1/show", params={"ref": "resnet@1"}, timeout=30).status_code == 200
            assert not answers
        finally:
            os.close(fd)
        tagging.join(60)
    assert len(answers) == 1 and answers[0].status_code == 200, answers
    assert head(home) == before + 1
    with server.client(tokens["reader"]) as reader:
        assert reader.get("/api/v1/show", params={"ref": "resnet@1"}).json()["tags"] == {"stage": "prod"}


def test_a_lone_mlflow_tag_and_its_model_read_run_on_the_event_loop(admin, home, monkeypatch, registry_database):
    """MlflowClient's set_model_version_tag sends registered-models/get, then set-tag: alone in their process
    on SQLite, neither hops to the thread pool; a route that writes then reads (create) still does."""
    import anyio

    from modelledger.server import direct

    if registry_database:
        pytest.skip("on PostgreSQL every command runs in the thread pool")
    hops: list[str] = []

    class Counting:
        @staticmethod
        async def run_sync(fn, *args):
            hops.append(getattr(fn, "__qualname__", "?"))
            return await anyio.to_thread.run_sync(fn, *args)

    monkeypatch.setattr(direct, "anyio", type("anyio", (), {"to_thread": Counting}))
    r = admin.post("/api/2.0/mlflow/registered-models/create", json={"name": "resnet"})
    assert r.status_code == 200 and len(hops) == 1
    register(admin, "resnet")
    before = head(home)
    hops.clear()
    r = admin.get("/api/2.0/mlflow/registered-models/get", params={"name": "resnet"})
    assert r.status_code == 200 and r.json()["registered_model"]["latest_versions"][0]["version"] == "1"
    r = admin.post("/api/2.0/mlflow/model-versions/set-tag", json={"name": "resnet", "version": "1", "key": "k",
                                                                   "value": "v"})
    assert r.status_code == 200 and r.json() == {}
    r = admin.post("/api/2.0/mlflow/model-versions/set-tag", json={"name": "resnet", "version": "9", "key": "k",
                                                                   "value": "v"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert hops == [] and head(home) == before + 1
