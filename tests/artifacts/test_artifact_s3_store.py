"""Acceptance: the artifact store on S3 through s3fs (moto's server): a folder artifact is stored under
``s3://bucket/prefix/sha256/...``, pulled back byte-identical, and the same bytes registered again (SDK
and CLI, configured from MLEDGER_ARTIFACTS and the standard AWS/fsspec variables) add no object."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from artifact_support import make_tree, outcomes, tree_files


@pytest.fixture(autouse=True)
def _blobs_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the file store's layout (``sha256/ab/cd/<hex>``) even for tiny artifacts: every blob
    goes to files here. The database tier of small blobs has its own tests (tests/workers/test_db_blobs.py)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")

pytestmark = pytest.mark.s3


def _objects(bucket: str) -> dict[str, tuple[int, str, str]]:
    """Every object in the bucket (key -> size, ETag, LastModified), listed by a fresh s3fs instance (no
    cached listing): a rewritten object would show a new LastModified."""
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    found = fs.find(bucket, detail=True, withdirs=False)
    return {k: (int(i["size"]), str(i.get("ETag")), str(i.get("LastModified"))) for k, i in found.items()}


_WRITES = ("put_object", "create_multipart_upload", "upload_part", "upload_part_copy", "copy_object")


@pytest.fixture
def s3_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The S3 write calls s3fs makes in this process (every PUT/copy, including temporary keys)."""
    import s3fs

    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def spy(self, method, *args, **kwargs):
        if method in _WRITES:
            calls.append(f"{method} {kwargs.get('Key')}")
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spy)
    return calls


def test_s3_directory_roundtrip_and_dedup(s3_bucket: str, s3_writes: list[str], home: Path, tmp_path: Path,
                                          mledger_argv, child_env) -> None:
    from modelledger import Registry

    store_url = f"s3://{s3_bucket}/models/store"
    src = make_tree(tmp_path / "bundle")
    expected = tree_files(src)

    with Registry.open(home, artifacts=store_url, actor="tester@test") as reg:
        v1 = reg.register("s3model", artifact=str(src))
        assert v1.status == "ready"
        assert s3_writes, "the spy saw no S3 write: it does not measure anything"
        objects = _objects(s3_bucket)
        # One object per distinct file content plus the manifest, all under the prefix, none temporary.
        digests = {"sha256:" + hashlib.sha256(d).hexdigest() for d in expected.values()}
        assert {f["digest"] for f in v1.artifact["files"]} == digests
        blob_keys = {f"{s3_bucket}/models/store/sha256/{d[7:9]}/{d[9:11]}/{d[7:]}" for d in digests}
        manifest = v1.artifact["digest"]
        blob_keys.add(f"{s3_bucket}/models/store/sha256/{manifest[7:9]}/{manifest[9:11]}/{manifest[7:]}")
        assert set(objects) == blob_keys, objects
        assert all(not k.endswith(".part") for k in objects)

        out = tmp_path / "pulled"
        reg.pull(v1, str(out))
        assert tree_files(out) == expected

        # The same bytes again (another model, another copy of the folder): no new object, no S3 write at all.
        copy = tmp_path / "copy"
        for rel, data in expected.items():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(data)
        s3_writes.clear()
        v2 = reg.register("s3model", artifact=str(copy))
        assert (v2.version, v2.status, v2.artifact["digest"]) == (2, "ready", v1.artifact["digest"])
        assert _objects(s3_bucket) == objects
        assert s3_writes == []

    # Through the console script, configured from the environment only.
    env = child_env(home, MLEDGER_ARTIFACTS=store_url)
    done = subprocess.run([*mledger_argv, "register", "s3cli", "--artifact", str(src), "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["artifact"]["digest"] == v1.artifact["digest"]
    assert _objects(s3_bucket) == objects
    pulled = subprocess.run([*mledger_argv, "pull", "s3cli@1", str(tmp_path / "cli-pulled")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(tmp_path / "cli-pulled") == expected
    for name, version in (("s3model", 1), ("s3model", 2), ("s3cli", 1)):
        assert len(outcomes(home, name, version)) == 1
