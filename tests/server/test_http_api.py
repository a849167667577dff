"""The JSON API: every command and read, the error table, bad input (right status, JSON error, nothing
appended) and idempotency keys (a retried POST appends once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_support import head, register, upload

from modelledger import Registry


def post(client, path: str, body: dict, key: str | None = None, status: int = 200) -> dict:
    r = client.post(f"/api/v1/{path}", json=body, headers={"Idempotency-Key": key} if key else {})
    assert r.status_code == status, r.text
    return r.json()


def test_every_command_and_read(admin, home):
    v1 = register(admin, "resnet", b"w1", description="vision model", tags={"task": "vision"}, params={"lr": 0.1})
    assert v1["ref"] == "resnet@1" and v1["status"] == "ready" and v1["artifact"]["source"] == "upload://model.bin"
    after_v1 = head(home)
    v2 = post(admin, "update", {"ref": "resnet@1", "params": {"lr": 0.01}})
    assert v2["ref"] == "resnet@2" and v2["parent"] == 1 and v2["params"] == {"lr": 0.01}
    v3 = post(admin, "update", {"ref": "resnet@2", "artifact": upload(admin, b"w3", "w.bin")})
    assert v3["artifact"]["digest"] != v1["artifact"]["digest"]
    post(admin, "tag", {"ref": "resnet@2", "tags": {"stage": "candidate"}})
    post(admin, "untag", {"ref": "resnet@2", "keys": ["stage"]})
    post(admin, "metrics", {"ref": "resnet@1", "metrics": {"acc": 0.7}})
    post(admin, "metrics", {"ref": "resnet@2", "metrics": {"acc": 0.9}})
    post(admin, "alias", {"ref": "resnet@1", "alias": "production"})
    mark = head(home)
    post(admin, "alias", {"ref": "resnet@2", "alias": "production"})
    rolled = post(admin, "rollback", {"name": "resnet", "alias": "production"})
    assert rolled["events"][0]["data"]["version"] == 1
    post(admin, "alias", {"ref": "resnet@3", "alias": "staging"})
    post(admin, "unalias", {"name": "resnet", "alias": "staging"})
    post(admin, "delete", {"ref": "resnet@3", "reason": "bad"})
    post(admin, "undelete", {"ref": "resnet@3"})

    get = lambda path, **q: admin.get(f"/api/v1/{path}", params=q)  # noqa: E731
    assert get("show", ref="resnet").json()["aliases"] == {"production": 1}
    assert get("show", ref="resnet@production").json()["version"] == 1
    assert get("show", ref="resnet", as_of=f"#{mark}").json()["aliases"] == {"production": 1}
    assert get("best", name="resnet", metric="acc").json()["version"] == 2
    assert get("best", name="resnet", metric="acc", min="true").json()["version"] == 1
    assert [m["name"] for m in get("list", search="vision").json()["models"]] == ["resnet"]
    assert get("list", tag="task=vision").json()["models"][0]["name"] == "resnet"
    assert get("list", file="w.bin").json()["models"][0]["name"] == "resnet"
    assert get("list", alias="production").json()["models"][0]["name"] == "resnet"
    assert get("list", search="nothing-like-it").json()["models"] == []
    ordered = get("search", name="resnet", order_by="acc").json()["versions"]
    assert [v["version"] for v in ordered] == [2, 1, 3]  # best first, without the metric last
    assert [v["version"] for v in get("search", name="resnet", order_by="acc", min="true").json()["versions"]] == [1, 2, 3]
    page = get("search", name="resnet", limit=1, offset=1).json()["versions"]
    assert [v["version"] for v in page] == [2]
    assert get("search", keyword="vision", as_of=f"#{after_v1}").json()["versions"][0]["version"] == 1
    history = get("history", ref="resnet@1").json()
    assert history["events"][0]["type"] == "VersionRegistered" and len(history["changes"]) == len(history["events"])
    assert get("diff", a="resnet@1", b="resnet@2").json()["params"]
    assert get("audit").json()["ok"] is True
    lines = get("log", since=0).text.splitlines()
    assert len(lines) == head(home)
    assert get("log", since=3, limit=2).text.count("\n") == 2

    before = head(home)
    dry = post(admin, "restore", {"name": "resnet", "as_of": f"#{after_v1}", "dry_run": True})
    assert dry["dry_run"] is True and dry["events"] and head(home) == before
    done = post(admin, "restore", {"name": "resnet", "as_of": f"#{after_v1}"})
    assert len(done["events"]) == len(dry["events"])
    assert [v["version"] for v in get("search", name="resnet").json()["versions"]] == [1]
    report = post(admin, "gc", {"grace": "0s", "dry_run": True})
    assert report["dry_run"] is True
    post(admin, "gc", {"grace": "7d"})


BAD = [
    # (path, body, status, kind)
    ("register", {"name": "bad name!", "artifact": {"digest": "sha256:" + "0" * 64, "size": 1}}, 400, "bad_input"),
    ("register", {"name": "m", "artifact": {"digest": "sha256:" + "0" * 64, "size": 1}}, 422, "artifact"),
    ("register", {"name": "m", "artifact": {"digest": "md5:x", "size": 1}}, 400, "bad_input"),
    ("register", {"name": "m", "artifact": {"source": "/etc/passwd"}}, 403, "forbidden"),
    ("register", {"name": "m", "artifact": {"source": "file:///etc/passwd"}}, 403, "forbidden"),
    ("register", {"name": "m", "artifact": {"source": "http://169.254.169.254/latest"}}, 403, "forbidden"),
    ("register", {"name": "m", "artifact": {"files": [{"path": "../x", "digest": "sha256:" + "0" * 64,
                                                       "size": 1}]}}, 400, "bad_input"),
    ("register", {"name": "m"}, 400, "bad_input"),
    ("register", {"name": 5, "artifact": {}}, 400, "bad_input"),
    ("update", {"ref": "resnet@1", "params": {"lr": float("nan")}}, 400, "bad_input"),
    ("update", {"ref": "nosuch@1", "params": {"lr": 1}}, 404, "not_found"),
    ("tag", {"ref": "resnet@1", "tags": {"k": 1}}, 400, "bad_input"),
    ("tag", {"ref": "resnet@1", "tags": {"bad key": "v"}}, 400, "bad_input"),
    ("tag", {"ref": "resnet@9", "tags": {"k": "v"}}, 404, "not_found"),
    ("untag", {"ref": "resnet@1", "keys": []}, 400, "bad_input"),
    ("metrics", {"ref": "resnet@1", "metrics": {"acc": "high"}}, 400, "bad_input"),
    ("metrics", {"ref": "resnet@1", "metrics": {"acc": 10**30}}, 400, "bad_input"),
    ("alias", {"ref": "resnet@1", "alias": "Latest!"}, 400, "bad_input"),
    ("alias", {"ref": "resnet@1", "alias": "latest"}, 400, "bad_input"),
    ("unalias", {"name": "resnet", "alias": "nosuch"}, 404, "not_found"),
    ("rollback", {"name": "resnet", "alias": "production"}, 404, "not_found"),
    ("delete", {"ref": "nosuch"}, 404, "not_found"),
    ("undelete", {"ref": "resnet@1"}, 409, "conflict"),
    ("restore", {"as_of": "#99999"}, 400, "bad_input"),
    ("restore", {"as_of": "yesterday"}, 400, "bad_input"),
    ("gc", {"grace": "-1d"}, 400, "bad_input"),
    ("tokens", {"name": "x", "role": "root"}, 400, "bad_input"),
    ("tokens", {"name": "bad name", "role": "reader"}, 400, "bad_input"),
    ("tokens", {"name": "admin", "role": "reader"}, 409, "conflict"),
    ("tokens", {"name": "r2", "role": "reader", "prefix": "team-a/"}, 400, "bad_input"),
    ("tokens/revoke", {"name": "nosuch"}, 404, "not_found"),
]


@pytest.mark.parametrize(("path", "body", "status", "kind"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_its_status_and_appends_nothing(admin, home, path, body, status, kind):
    register(admin, "resnet")
    post(admin, "alias", {"ref": "resnet@1", "alias": "production"})
    before = head(home)
    r = admin.post(f"/api/v1/{path}", json=body) if "nan" not in str(body) else admin.post(
        f"/api/v1/{path}", content=b'{"ref": "resnet@1", "params": {"lr": NaN}}',
        headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"] == kind and r.json()["message"]
    assert head(home) == before


def test_malformed_and_oversized_bodies(admin, home):
    register(admin, "resnet")
    before = head(home)
    r = admin.post("/api/v1/tag", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_input"
    big = {"ref": "resnet@1", "params": {"blob": "x" * (9 * 1024 * 1024)}}
    r = admin.post("/api/v1/update", json=big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = admin.get("/api/v1/show", params={"ref": "bad name@1"})
    assert r.status_code == 400
    assert admin.get("/api/v1/show", params={"ref": "ghost"}).status_code == 404
    assert admin.get("/api/v1/nosuch").json()["error"] == "not_found"
    assert admin.get("/api/v1/log", params={"since": -1}).status_code == 400
    r = admin.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"a": "b"}}, headers={"Idempotency-Key": ""})
    assert r.status_code == 400
    assert head(home) == before


@pytest.mark.parametrize(("path", "body"), [
    ("tag", {"ref": "resnet@1", "tags": {"stage": "prod"}}),
    ("untag", {"ref": "resnet@1", "keys": ["task"]}),
    ("metrics", {"ref": "resnet@1", "metrics": {"acc": 0.5}}),
    ("alias", {"ref": "resnet@2", "alias": "staging"}),
    ("unalias", {"name": "resnet", "alias": "production"}),
    ("rollback", {"name": "resnet", "alias": "production"}),
    ("delete", {"ref": "resnet@1"}),
    ("update", {"ref": "resnet@2", "params": {"lr": 3}}),
    ("restore", {"name": "resnet", "as_of": "#6"}),  # 4 tokens, then resnet's model and first version
])
def test_a_retried_post_with_the_same_key_appends_once(admin, home, path, body):
    register(admin, "resnet", tags={"task": "vision"})
    post(admin, "update", {"ref": "resnet@1", "params": {"lr": 1}})
    post(admin, "alias", {"ref": "resnet@1", "alias": "production"})
    post(admin, "alias", {"ref": "resnet@2", "alias": "production"})
    before = head(home)
    first = post(admin, path, body, key=f"retry-{path}")
    after_first = head(home)
    assert after_first > before
    again = post(admin, path, body, key=f"retry-{path}")
    assert head(home) == after_first  # the retry appended nothing ...
    if "events" in first:  # ... and answered what the first attempt appended
        assert [e["position"] for e in again["events"]] == [e["position"] for e in first["events"]]
    else:
        assert again["ref"] == first["ref"]
    # The same key for another request is refused, not replayed.
    other = {**body, "ref": "resnet@1" if body.get("ref") == "resnet@2" else "resnet@2"} if "ref" in body \
        else {**body, "name": "x"}
    r = admin.post(f"/api/v1/{path}", json=other, headers={"Idempotency-Key": f"retry-{path}"})
    assert r.status_code in (409, 404) and head(home) == after_first


def test_a_retried_register_upload_appends_once(admin, home):
    art = upload(admin, b"weights")
    body = {"name": "resnet", "artifact": art}
    first = post(admin, "register", body, key="k1")
    n = head(home)
    assert post(admin, "register", body, key="k1")["ref"] == first["ref"] == "resnet@1"
    assert head(home) == n


def test_gc_with_a_key_purges_once(admin, home):
    register(admin, "resnet")
    post(admin, "delete", {"ref": "resnet@1"})
    first = post(admin, "gc", {"grace": "0s"}, key="gc-1")
    assert first["versions"] == ["resnet@1"]
    n = head(home)
    again = post(admin, "gc", {"grace": "0s"}, key="gc-1")
    assert again["replayed"] is True and head(home) == n


def test_sdk_write_methods_take_idempotency_keys(home):
    """The SDK face: a retried rollback with the same key does not roll back twice."""
    with Registry.open(home) as reg:
        data = Path(home).parent / "w.bin"
        data.write_bytes(b"x")
        for _ in range(3):
            reg.register("m", str(data)) if not reg.head() else reg.update("m@latest", params={"n": reg.head()})
        for n in (1, 2, 3):
            reg.alias(f"m@{n}", "prod")
        first = reg.rollback("m", "prod", idempotency_key="rb")
        again = reg.rollback("m", "prod", idempotency_key="rb")
        assert [e.position for e in again] == [e.position for e in first]
        assert reg.model("m").aliases == {"prod": 2}
        n = reg.head()
        for call in (lambda k: reg.tag("m@1", {"a": "b"}, idempotency_key=k),
                     lambda k: reg.untag("m@1", "a", idempotency_key=k),
                     lambda k: reg.metrics("m@1", {"acc": 1.0}, idempotency_key=k),
                     lambda k: reg.alias("m@1", "x", idempotency_key=k),
                     lambda k: reg.unalias("m", "x", idempotency_key=k),
                     lambda k: reg.delete("m@1", idempotency_key=k),
                     lambda k: reg.undelete("m@1", idempotency_key=k)):
            key = f"k{n}"
            call(key)
            n = reg.head()
            call(key)
            assert reg.head() == n
