"""A small file registered over HTTP travels inside the register request (``artifact.content_base64``): one
request, and with the small-blob tier the bytes commit with the version. Through a real ``mledger serve``."""

from __future__ import annotations

import base64
import hashlib

import pytest
from server_support import head

from modelledger import Registry
from modelledger.jsonhttp import INLINE_MAX
from modelledger.remote import RemoteRegistry


def inline(data: bytes, *, digest: str | None = None, size: int | None = None, filename: str = "model.bin") -> dict:
    return {"digest": digest or "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data) if size is None else size, "filename": filename,
            "content_base64": base64.b64encode(data).decode("ascii")}


def stored_blobs(home) -> dict[str, str]:
    """Every blob the server's store holds, by digest: ``small`` (in the database) or ``large`` (files)."""
    with Registry.open(home) as reg:
        store = reg.store()
        tiers = [("small", store.small), ("large", store.large)] if hasattr(store, "small") else [("large", store)]
        return {digest: tier for tier, s in tiers for digest, _size, _mtime in s.iter_blobs()}


@pytest.fixture
def small_tier(monkeypatch):
    # The operator's setting, as a server inherits it (a home whose first events are token grants gets the
    # tier by default too: tests/workers/test_db_blobs.py).
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "64K")


def test_a_small_file_is_one_request_and_its_bytes_live_in_the_database(small_tier, start_server, tokens, home,
                                                                        tmp_path, monkeypatch):
    import modelledger.server.client as blob_client

    def no_upload(*_a, **_k):
        raise AssertionError("a small file must not go by HEAD/PUT /blobs")

    monkeypatch.setattr(blob_client, "upload_artifact", no_upload)
    server = start_server()
    f = tmp_path / "model.bin"
    data = b"small weights " * 100
    f.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    remote = RemoteRegistry(server.url, tokens["writer"])
    sent: list[tuple[str, str]] = []
    request = remote.wire.request

    def counting(method, route, *args, **kwargs):
        sent.append((method, route))
        return request(method, route, *args, **kwargs)

    monkeypatch.setattr(remote.wire, "request", counting)
    before = head(home)
    v = remote.register("m", str(f), params={"lr": 0.1})
    assert sent == [("POST", "/api/v1/register")]
    assert v.status == "ready" and v.artifact["digest"] == digest and v.artifact["size"] == len(data)
    assert v.artifact["source"] == "upload://model.bin"
    assert head(home) > before
    assert stored_blobs(home).get(digest) == "small"
    v2 = remote.update(v.ref, artifact=str(f))  # an update carries its small file the same way
    assert v2.artifact["digest"] == digest and sent[-1] == ("POST", "/api/v1/update")
    out = tmp_path / "out.bin"
    remote.pull("m@1", str(out))
    assert out.read_bytes() == data
    remote.close()


def test_a_retried_request_appends_once_and_stores_once(small_tier, start_server, tokens, home):
    server = start_server()
    data = b"retried bytes"
    body = {"name": "m", "artifact": inline(data)}
    with server.client(tokens["writer"]) as http:
        first = http.post("/api/v1/register", json=body, headers={"Idempotency-Key": "k1"})
        after_first = head(home)
        again = http.post("/api/v1/register", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["version"] == first.json()["version"] == 1
    assert head(home) == after_first
    assert list(stored_blobs(home)).count(first.json()["artifact"]["digest"]) == 1


@pytest.mark.parametrize("case", ["digest", "size", "base64", "too_large", "reader", "prefix"])
def test_bad_inline_requests_are_refused_with_nothing_stored(small_tier, start_server, tokens, home, case):
    server = start_server()
    data = b"claimed bytes"
    secret = tokens["writer"]
    name = "m"
    art = inline(data)
    status, kind = 400, "bad_input"
    if case == "digest":
        art = inline(data, digest="sha256:" + hashlib.sha256(b"other bytes").hexdigest())
    elif case == "size":
        art = inline(data, size=len(data) + 1)
    elif case == "base64":
        art["content_base64"] = "not base64!"
    elif case == "too_large":
        data = b"x" * (INLINE_MAX + 1)
        art = inline(data)
        status, kind = 413, "too_large"
    elif case == "reader":
        secret, status, kind = tokens["reader"], 403, "forbidden"
    elif case == "prefix":
        secret, status, kind = tokens["team"], 403, "forbidden"  # a writer under team-a/ only
    before, blobs = head(home), stored_blobs(home)
    with server.client(secret) as http:
        r = http.post("/api/v1/register", json={"name": name, "artifact": art})
    assert r.status_code == status, r.text
    assert r.json()["error"] == kind and r.json()["message"]
    assert head(home) == before
    assert stored_blobs(home) == blobs


def test_large_files_and_folders_still_go_by_put_blobs(small_tier, start_server, tokens, home, tmp_path):
    server = start_server()
    big = tmp_path / "big.bin"
    big.write_bytes(b"B" * (INLINE_MAX + 1))
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(b"a" * 10)
    (folder / "b.bin").write_bytes(b"b" * 10)
    with RemoteRegistry(server.url, tokens["writer"]) as remote:
        v = remote.register("big", str(big))
        assert v.status == "ready" and v.artifact["size"] == INLINE_MAX + 1
        assert stored_blobs(home)[v.artifact["digest"]] == "large"
        w = remote.register("folder", str(folder))
        assert w.artifact["kind"] == "directory" and len(w.artifact["files"]) == 2


def test_without_the_database_tier_a_small_file_is_still_one_request(start_server, tokens, home, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")  # the operator turned the tier off (the server inherits it)
    server = start_server()
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights in files")
    with RemoteRegistry(server.url, tokens["writer"]) as remote:
        v = remote.register("m", str(f))
        assert v.status == "ready"
    assert stored_blobs(home) == {v.artifact["digest"]: "large"}
