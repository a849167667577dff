"""Artifact bytes over HTTP: ask before sending, stream in hashing, folders file by file, downloads with the
digest as ETag and Range to resume, and the server reading no path a client names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from server_support import head, upload

from modelledger import Registry
from modelledger.server.client import download_blob, file_digest, upload_artifact, upload_blob


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_ask_first_then_send_only_what_is_missing(writer, tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"abc" * 100_000)
    digest, size = file_digest(f)
    assert writer.head(f"/api/v1/blobs/{digest}", params={"size": size}).status_code == 404
    assert upload_blob(writer, f) == (digest, size, True)
    assert writer.head(f"/api/v1/blobs/{digest}", params={"size": size}).status_code == 200
    assert writer.head(f"/api/v1/blobs/{digest}", params={"size": size + 1}).status_code == 404
    assert upload_blob(writer, f) == (digest, size, False)  # unchanged bytes are not sent again
    art, sent = upload_artifact(writer, f)
    assert sent == 0
    v = writer.post("/api/v1/register", json={"name": "m", "artifact": art}).json()
    assert v["artifact"]["digest"] == digest and v["artifact"]["size"] == size


def test_an_upload_that_is_not_what_it_claims_is_refused(writer, home):
    data = b"real bytes"
    before = head(home)
    r = writer.put(f"/api/v1/blobs/{sha(b'other')}", params={"size": len(data)}, content=data)
    assert r.status_code == 400 and "hash to" in r.json()["message"]
    r = writer.put(f"/api/v1/blobs/{sha(data)}", params={"size": 3}, content=data)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = writer.put(f"/api/v1/blobs/{sha(data)}", params={"size": 100}, content=data)
    assert r.status_code == 400
    assert writer.head(f"/api/v1/blobs/{sha(data)}", params={"size": 100}).status_code == 404
    r = writer.put("/api/v1/blobs/sha256:../../etc", params={"size": 1}, content=b"x")
    assert r.status_code in (400, 404)
    assert head(home) == before


def test_folder_uploads_file_by_file_and_downloads_verified(writer, tmp_path):
    root = tmp_path / "ckpt"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 3}')
    (root / "sub" / "shard-1.bin").write_bytes(b"1" * 50_000)
    (root / "sub" / "shard-2.bin").write_bytes(b"2" * 50_000)
    art, sent = upload_artifact(writer, root)
    assert sent == 3
    v1 = writer.post("/api/v1/register", json={"name": "llm", "artifact": art}).json()
    assert v1["artifact"]["kind"] == "directory" and len(v1["artifact"]["files"]) == 3
    # One shard changes: only that file is sent again.
    (root / "sub" / "shard-2.bin").write_bytes(b"3" * 50_000)
    art, sent = upload_artifact(writer, root)
    assert sent == 1
    v2 = writer.post("/api/v1/update", json={"ref": "llm@1", "artifact": art}).json()
    listing = writer.get("/api/v1/artifact", params={"ref": v2["ref"]}).json()
    assert listing["kind"] == "directory"
    out = tmp_path / "pulled"
    out.mkdir()
    for f in listing["files"]:
        dest = out / f["path"].replace("/", "_")
        download_blob(writer, f["digest"], dest)
        assert file_digest(dest) == (f["digest"], f["size"])
    assert (out / "sub_shard-2.bin").read_bytes() == b"3" * 50_000


def test_download_streams_with_etag_and_resumes_with_range(writer, tmp_path):
    data = bytes(range(256)) * 8192  # 2 MiB
    art = upload(writer, data, "weights.safetensors")
    v = writer.post("/api/v1/register", json={"name": "m", "artifact": art}).json()
    r = writer.get("/api/v1/artifact", params={"ref": v["ref"]})
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{art["digest"]}"' and r.headers["accept-ranges"] == "bytes"
    assert "weights.safetensors" in r.headers["content-disposition"]
    part = writer.get("/api/v1/artifact", params={"ref": v["ref"]}, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert writer.get(f"/api/v1/blobs/{art['digest']}", headers={"Range": "bytes=-10"}).content == data[-10:]
    assert writer.get(f"/api/v1/blobs/{art['digest']}",
                      headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert writer.get(f"/api/v1/blobs/{art['digest']}",
                      headers={"If-None-Match": f'"{art["digest"]}"'}).status_code == 304
    # A cut download resumes where it stopped, and the whole is verified.
    dest = tmp_path / "w.bin"
    Path(f"{dest}.part").write_bytes(data[:700_000])
    received = download_blob(writer, art["digest"], dest)
    assert received == len(data) - 700_000
    assert dest.read_bytes() == data
    # A partial copy of other bytes: If-Range does not match, the server sends everything again.
    Path(f"{dest}.part").write_bytes(b"garbage")
    other = upload(writer, b"x" * 10, "x.bin")
    received = download_blob(writer, other["digest"], tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == b"x" * 10


def test_the_server_reads_no_path_a_client_names(writer, home, tmp_path, monkeypatch, make_client, tokens):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    before = head(home)
    for source in (str(secret), f"file://{secret}", "memory://allowed/x.bin"):
        r = writer.post("/api/v1/register", json={"name": "m", "artifact": {"source": source}})
        assert r.status_code == 403, (source, r.text)
    assert head(home) == before
    # Under MLEDGER_SOURCES the operator allows a URL prefix: that one is fetched.
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/allowed/x.bin", b"remote weights")
    monkeypatch.setenv("MLEDGER_SOURCES", "memory://allowed")
    allowed = make_client(tokens["writer"])
    r = allowed.post("/api/v1/register", json={"name": "m", "artifact": {"source": "memory://allowed/x.bin"}})
    assert r.status_code == 200, r.text
    assert r.json()["artifact"]["digest"] == sha(b"remote weights")
    r = allowed.post("/api/v1/register", json={"name": "m", "artifact": {"source": "memory://elsewhere/x.bin"}})
    assert r.status_code == 403


def test_purged_and_pending_artifacts_are_refused_cleanly(admin, home):
    art = upload(admin, b"to be purged")
    admin.post("/api/v1/register", json={"name": "m", "artifact": art})
    admin.post("/api/v1/delete", json={"ref": "m@1"})
    admin.post("/api/v1/gc", json={"grace": "0s"})
    r = admin.get("/api/v1/artifact", params={"ref": "m@1"})
    assert r.status_code in (409, 410), r.text  # deleted (conflict) or purged
    with Registry.open(home) as reg:
        assert reg.store().exists(art["digest"]) is False


@pytest.mark.slow
def test_upload_memory_stays_flat(start_server, tokens, tmp_path):
    """256 MiB through a real server process: its peak RSS grows by far less than the upload (the 2 GiB
    figure is scripts/http_upload_memory.py's, in docs/performance.md)."""
    import httpx

    server = start_server()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB, not all zeros
        for _ in range(256):
            f.write(block)
    before = _peak_rss(server.proc.pid)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['writer']}"},
                      timeout=600) as client:
        digest, size, sent = upload_blob(client, big)
    assert sent
    grown = _peak_rss(server.proc.pid) - before
    assert grown < 100 * 1024 * 1024, f"server peak RSS grew by {grown / 2**20:.0f} MiB for a 256 MiB upload"


def _peak_rss(pid: int) -> int:
    """VmHWM of the process and its children (uvicorn runs the app in the process itself with 1 worker)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_undeleting_a_purged_version_fetches_no_path_named_in_the_log(admin, home, tmp_path):
    """A version registered locally records its path; over HTTP, undeleting it after gc must not make the
    server read that path (the confused deputy of security finding H3)."""
    private = tmp_path / "private.bin"
    private.write_bytes(b"someone's local file")
    with Registry.open(home) as reg:
        reg.register("local", str(private))
        reg.delete("local@1")
        reg.gc(0)
        before = reg.head()
    r = admin.post("/api/v1/undelete", json={"ref": "local@1"})
    # The record comes back, its bytes do not: no ArtifactRequested, the version stays purged, and the
    # operator can `mledger retry local@1` where the path may be read.
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["events"]] == ["VersionRestored"]
    assert r.json()["missing"] == ["local@1"]  # as `mledger undelete` and `restore` report it
    assert head(home) == before + 1
    with Registry.open(home) as reg:
        v = reg.get("local@1")
        assert v.status == "purged" and not v.deleted
        assert reg.retry("local@1").status == "ready"  # locally, with the caller's own rights


def test_restore_over_http_refetches_no_path_named_in_the_log(admin, home, tmp_path):
    private = tmp_path / "private.bin"
    private.write_bytes(b"someone's local file")
    with Registry.open(home) as reg:
        reg.register("local", str(private))
        mark = reg.head()
        reg.delete("local@1")
        reg.gc(0)
        before = reg.head()
    dry = admin.post("/api/v1/restore", json={"name": "local", "as_of": f"#{mark}", "dry_run": True})
    assert dry.status_code == 200 and dry.json()["reingest"] == [] and dry.json()["missing"] == ["local@1"]
    assert head(home) == before
    r = admin.post("/api/v1/restore", json={"name": "local", "as_of": f"#{mark}"})
    assert r.status_code == 200, r.text
    assert r.json()["missing"] == ["local@1"] and "ArtifactRequested" not in [e["type"] for e in r.json()["events"]]
    with Registry.open(home) as reg:
        assert reg.get("local@1").status == "purged"
