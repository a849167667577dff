"""One suite for every artifact store: local files, memory://, S3 (moto), Azure Blob (Azurite, through adlfs),
Aliyun OSS (oss:// through s3fs with virtual-hosted addressing, on moto behind a Host-recording proxy), and
the database backends — SQLite, PostgreSQL and MariaDB/MySQL (blobs in chunk rows).

Each backend is configured the way a user configures it: a URL (``MLEDGER_ARTIFACTS``) plus the standard
environment variables of its SDK; nothing here passes storage options a user could not set."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from contracts.blobs import (
    AZURE_VARS,
    OSS_VARS,
    PROXY_VARS,
    Backend,
    HostRecordingProxy,
    azurite,
    database_corrupt,
    drop_mysql_database,
    mysql_database,
    new_name,
)
from services import AWS_VARS, unavailable

from eventstore.errors import ArtifactError
from workers.blobs import BlobStore, open_store

STORES = ["local", "memory", "s3", "azure", "oss", "sqlite", "postgres", "mysql"]
DATABASES = ["sqlite", "postgres", "mysql"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- servers (one per session) and backends (a fresh bucket/container/folder per test) -------------------

@pytest.fixture(scope="session")
def azurite_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with azurite(tmp_path_factory.mktemp("azurite")) as conn:
        yield conn


@pytest.fixture(scope="session")
def oss_proxy(s3_endpoint: str) -> Iterator[HostRecordingProxy]:
    proxy = HostRecordingProxy(s3_endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


def _fs_corrupt(store_url: str) -> object:
    def corrupt(digest: str, data: bytes) -> None:
        from workers.blobs.fsspec_store import FsspecBlobStore

        store = FsspecBlobStore(store_url)
        path = store.path_of(digest)
        if store.local:
            os.chmod(path, 0o644)
            Path(path).write_bytes(data)
        else:
            store.fs.pipe_file(path, data)
            store.fs.invalidate_cache()
    return corrupt


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    kind = request.param
    if kind == "sqlite":
        url = f"sqlite://{tmp_path / 'blobs.db'}"
        return Backend(kind, url, database_corrupt(url))
    if kind == "postgres":
        from contracts.databases import ADMIN_URL, create_database, drop_database

        try:
            name = create_database()
        except Exception as exc:  # noqa: BLE001 - no server: skipped, or failed under CI
            unavailable(f"PostgreSQL ({exc})")
        request.addfinalizer(lambda: drop_database(name))
        url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name  # a URL (not a conninfo): what MLEDGER_ARTIFACTS takes
        return Backend(kind, url, database_corrupt(url))
    if kind == "mysql":
        url = mysql_database()
        request.addfinalizer(lambda: drop_mysql_database(url))
        return Backend(kind, url, database_corrupt(url))
    if kind == "local":
        url = str(tmp_path / "store")
        return Backend(kind, url, _fs_corrupt(url))
    if kind == "memory":
        url = f"memory://{new_name()}/artifacts"
        return Backend(kind, url, _fs_corrupt(url), shared=False)
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url = f"s3://{bucket}/artifacts"
        return Backend(kind, url, _fs_corrupt(url))
    if kind == "azure":
        conn = request.getfixturevalue("azurite_connection")
        import adlfs

        for var in AZURE_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
        adlfs.AzureBlobFileSystem.clear_instance_cache()
        container = new_name()
        adlfs.AzureBlobFileSystem(connection_string=conn, skip_instance_cache=True).mkdir(container)
        url = f"az://{container}/artifacts"
        request.addfinalizer(adlfs.AzureBlobFileSystem.clear_instance_cache)
        return Backend(kind, url, _fs_corrupt(url))
    assert kind == "oss"
    endpoint = request.getfixturevalue("s3_endpoint")
    proxy: HostRecordingProxy = request.getfixturevalue("oss_proxy")
    import s3fs

    for var in (*AWS_VARS, *OSS_VARS, *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    bucket = new_name()
    s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True).mkdir(bucket)
    port = endpoint.rsplit(":", 1)[1]
    # Like https://oss-<region>.aliyuncs.com: the bucket goes in front of this host (bucket.oss-test.localhost).
    # No resolver knows that name: the requests go through the proxy, which records their Host header.
    monkeypatch.setenv("MLEDGER_OSS_ENDPOINT", f"http://oss-test.localhost:{port}")
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "testing")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    s3fs.S3FileSystem.clear_instance_cache()
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)
    proxy.requests.clear()
    url = f"oss://{bucket}/artifacts"
    return Backend(kind, url, _fs_corrupt(url))


@pytest.fixture
def store(backend: Backend) -> Iterator[BlobStore]:
    store = open_store(backend.url)
    yield store
    if hasattr(store, "close"):
        store.close()  # a database backend's connection (the database is dropped next)


def make_folder(root: Path) -> Path:
    d = root / "model"
    (d / "nested").mkdir(parents=True)
    (d / "config.json").write_text('{"layers": 2}\n')
    (d / "weights.bin").write_bytes(os.urandom(300_000))
    (d / "nested" / "shard.bin").write_bytes(b"\x01\x02" * 50_000)
    (d / "nested" / "empty.txt").write_bytes(b"")
    return d


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def blobs(store: BlobStore) -> set[str]:
    return {d for d, _size, _mtime in store.iter_blobs()}


class FailingReader:
    """A source that dies part-way (a network mount dropping), after more than one chunk was sent."""

    def __init__(self, total: int, fail_at: int) -> None:
        self.total, self.fail_at, self.pos = total, fail_at, 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.fail_at:
            raise OSError("source went away")
        n = min(n, self.total - self.pos)
        self.pos += n
        return b"\xab" * n


# -- the contract ------------------------------------------------------------------------------------------

def test_put_has_open_size_delete(store: BlobStore) -> None:
    data = os.urandom(70_000)
    blob = store.put_bytes(data)
    assert blob.digest == sha(data) and blob.size == len(data)
    assert store.exists(blob.digest)
    with store.open_blob(blob.digest) as f:
        assert f.read() == data
    assert store.read_blob(blob.digest) == data
    assert store.size_of(blob.digest) == len(data)
    assert store.verify(blob.digest)
    assert blobs(store) == {blob.digest}
    assert store.delete(blob.digest) is True
    assert store.delete(blob.digest) is False  # idempotent
    assert not store.exists(blob.digest) and not store.verify(blob.digest)
    with pytest.raises(ArtifactError, match="missing"):
        store.size_of(blob.digest)
    assert blobs(store) == set()


def test_the_same_bytes_twice_are_stored_once(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024 + 5))  # past the in-memory small-file path
    copy = tmp_path / "b.bin"
    copy.write_bytes(src.read_bytes())
    first = store.ingest(str(src))
    written = store.stats.bytes_written
    assert written >= first.size
    second = store.ingest(str(copy))
    assert second.digest == first.digest
    assert store.stats.bytes_written == written  # nothing uploaded the second time
    assert store.stats.blobs_deduplicated >= 1
    assert blobs(store) == {first.digest}
    # A fresh instance (another process's view: no listing cache) also sees it and writes nothing.
    other = open_store(store.root_url)
    assert other.ingest(str(copy)).digest == first.digest and other.stats.bytes_written == 0


def test_a_failed_write_leaves_no_blob_and_nothing_to_sweep(store: BlobStore) -> None:
    with pytest.raises(ArtifactError, match="source went away"):
        store.put_stream(FailingReader(12 * 1024 * 1024, 9 * 1024 * 1024))
    assert blobs(store) == set()
    assert store.sweep_tmp(older_than_seconds=0) == 0  # the failed writer cleaned up after itself
    data = b"\xab" * (12 * 1024 * 1024)
    assert store.put_stream(FailingReader(len(data), len(data) + 1)).digest == sha(data)  # and it heals
    assert blobs(store) == {sha(data)}


# memory:// lives inside one process: there is no other process to kill, so it is not a case here.
@pytest.mark.parametrize("backend", [s for s in STORES if s != "memory"], indirect=True)
def test_a_killed_writer_leaves_no_blob_and_the_sweep_clears_what_it_left(backend: Backend, store: BlobStore,
                                                                         tmp_path: Path) -> None:
    assert backend.shared
    # 72 MiB: past s3fs' and adlfs' 50 MiB buffers, so a part/block really reached the server before the kill.
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from workers.blobs import open_store

        class Dies:
            pos = 0
            def read(self, n=-1):
                if self.pos >= 72 * 1024 * 1024:
                    os._exit(9)  # killed mid-write: no cleanup runs
                self.pos += n
                return b"k" * n

        open_store({backend.url!r}).put_stream(Dies())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=240)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert blobs(store) == set()  # nothing visible under a blob's name
    assert store.sweep_tmp(older_than_seconds=3600) == 0  # a live writer's leftovers are not touched
    time.sleep(1.1)  # object stores' modification times have a resolution of one second
    store.sweep_tmp(older_than_seconds=0)
    assert store.sweep_tmp(older_than_seconds=0) == 0  # nothing left for a second sweep
    data = b"\xab" * (9 * 1024 * 1024)
    assert store.put_stream(FailingReader(len(data), len(data) + 1)).digest == sha(data)
    assert blobs(store) == {sha(data)}


def test_folder_ingest_manifest_and_verified_pull(store: BlobStore, tmp_path: Path) -> None:
    src = make_folder(tmp_path)
    info = store.ingest(str(src))
    assert info.kind == "directory"
    assert [f.path for f in info.files] == sorted(tree(src))
    assert store.manifest(info.digest) == list(info.files)
    assert blobs(store) == {info.digest} | {f.digest for f in info.files}
    dest = tmp_path / "pulled"
    store.pull(info.digest, "directory", str(dest))
    assert tree(dest) == tree(src)
    assert store.sweep_tmp(older_than_seconds=0) == 0  # no temporary left behind by the ingest


def test_a_corrupt_blob_is_caught_by_pull_and_verify(backend: Backend, store: BlobStore, tmp_path: Path) -> None:
    src = make_folder(tmp_path)
    info = store.ingest(str(src))
    victim = next(f for f in info.files if f.path == "weights.bin")
    good = (src / "weights.bin").read_bytes()
    backend.corrupt(victim.digest, good[:-1] + bytes([good[-1] ^ 1]))
    assert not store.verify(victim.digest)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArtifactError, match="corrupt"):
        store.pull(info.digest, "directory", str(out / "model"))
    assert list(out.iterdir()) == []  # neither the destination nor a temporary


def test_registry_register_pull_gc_and_deep_audit(backend: Backend, tmp_path: Path) -> None:
    from modelledger import Registry

    src = make_folder(tmp_path)
    home = tmp_path / "home"
    with Registry.open(home, artifacts=backend.url, actor="tester@test") as reg:
        v1 = reg.register("contract", artifact=str(src))
        assert v1.status == "ready"
        reg.pull(v1, str(tmp_path / "pulled"))
        assert tree(tmp_path / "pulled") == tree(src)
        assert reg.audit(deep=True).ok
        store = reg.store()
        victim = next(f for f in v1.artifact["files"] if f["path"] == "weights.bin")
        good = (src / "weights.bin").read_bytes()
        backend.corrupt(victim["digest"], good[::-1])
        assert not reg.audit(deep=True).ok  # a rehash finds the changed bytes
        assert reg.audit().ok  # (the shallow audit only checks presence)
        backend.corrupt(victim["digest"], good)  # repaired
        assert reg.audit(deep=True).ok

        reg.delete(v1, reason="contract")
        referenced = {v1.artifact["digest"], *(f["digest"] for f in v1.artifact["files"])}
        assert referenced <= blobs(store)
        result = reg.gc(grace_seconds=0)
        assert result
        assert not referenced & blobs(reg.store())  # gc freed every blob of the deleted version, in every tier
        assert reg.audit(deep=True).ok


# -- what is particular to one backend -------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["oss"], indirect=True)
def test_oss_requests_use_virtual_hosted_addressing(backend: Backend, store: BlobStore,
                                                   oss_proxy: HostRecordingProxy, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    info = store.ingest(str(src))
    store.pull(info.digest, "file", str(tmp_path / "back.bin"))
    bucket = backend.url.split("/")[2]
    hosts = {host for _method, host, _enc in oss_proxy.requests}
    methods = {method for method, _host, _enc in oss_proxy.requests}
    assert {"PUT", "GET"} <= methods, oss_proxy.requests  # the proxy saw the writes and the reads
    # Every request named the bucket in the host (virtual-hosted), none in the path (OSS refuses path style).
    assert hosts == {f"{bucket}.oss-test.localhost:{backend_port(backend)}"}, hosts
    # Checksums only when required: no x-amz-checksum-* headers and no aws-chunked bodies (botocore >= 1.36
    # would otherwise add them; OSS refuses aws-chunked with an UNSIGNED-PAYLOAD signature, error 0017-00000804).
    # (DeleteObjects, a POST, requires a checksum by the S3 API itself: it keeps its one.)
    assert [r for r in oss_proxy.requests if r[0] == "PUT" and r[2]] == []


def backend_port(backend: Backend) -> str:
    return os.environ["MLEDGER_OSS_ENDPOINT"].rsplit(":", 1)[1]


def test_oss_store_without_an_endpoint_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventstore.errors import ValidationError

    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValidationError, match="MLEDGER_OSS_ENDPOINT") as exc:
        open_store("oss://bucket/prefix")
    assert "\n" not in str(exc.value)


def test_oss_options_follow_the_aliyun_endpoint_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.store import oss_as_s3

    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OSS_REGION", "cn-hangzhou")
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "secret")
    url, opts = oss_as_s3("oss://models/prod", {})
    assert url == "s3://models/prod"
    assert opts["endpoint_url"] == "https://oss-cn-hangzhou.aliyuncs.com"
    assert (opts["key"], opts["secret"]) == ("id", "secret")
    assert opts["config_kwargs"]["s3"] == {"addressing_style": "virtual"}
    assert opts["config_kwargs"]["request_checksum_calculation"] == "when_required"
    assert opts["client_kwargs"] == {"region_name": "cn-hangzhou"}
    monkeypatch.delenv("OSS_REGION")
    monkeypatch.setenv("OSS_ENDPOINT", "s3.oss-eu-central-1.aliyuncs.com")
    _url, opts = oss_as_s3("oss://models/prod", {})
    assert opts["endpoint_url"] == "https://s3.oss-eu-central-1.aliyuncs.com"
    assert opts["client_kwargs"] == {"region_name": "eu-central-1"}


@pytest.mark.parametrize("backend", ["azure"], indirect=True)
def test_azure_blob_is_published_whole_by_a_finished_copy(backend: Backend, store: BlobStore,
                                                           tmp_path: Path) -> None:
    """A blob's final name is written only by a server-side copy of a verified temp, and the store returns
    only once that copy reports success: the blob it names is complete when ``put`` returns."""
    from fsspec.asyn import sync

    data = os.urandom(5 * 1024 * 1024)
    blob = store.put_bytes(data)
    container, name, _ = store.fs.split_path(store.path_of(blob.digest))

    async def props():
        async with store.fs.service_client.get_blob_client(container=container, blob=name) as bc:
            return await bc.get_blob_properties()

    got = sync(store.fs.loop, props)
    assert got.copy.status == "success" and got.size == len(data)
    assert "/tmp/" in got.copy.source  # published from the temp, never uploaded under its final name
    assert store.read_blob(blob.digest) == data


@pytest.mark.parametrize("backend", ["azure"], indirect=True)
def test_azure_missing_container_is_a_one_line_artifact_error(backend: Backend, cli, tmp_path: Path) -> None:
    """adlfs wraps the SDK's error in a plain RuntimeError: it still becomes the project's one-line error."""
    missing = f"az://{new_name('absent')}/artifacts"
    with pytest.raises(ArtifactError, match="container does not exist") as exc:
        open_store(missing).put_bytes(b"x" * 100)
    assert "\n" not in str(exc.value)
    src = tmp_path / "m.bin"
    src.write_bytes(b"weights" * 20_000)  # past the small-blob tier (64 KiB): its bytes go to Azure
    code, out, err = cli("register", "m", "--artifact", str(src), "--artifacts", missing)
    assert code != 0 and "container does not exist" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, _err = cli("log", "--json")
    assert code == 0 and out.strip() == ""  # nothing was appended


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["s3", "azure", "oss"], indirect=True)
def test_redis_mode_register_gc_and_undelete_reingest(backend: Backend, redis_url: str, tmp_path: Path,
                                                      mledger_argv: list[str], child_env) -> None:
    """Redis mode with a real ``mledger worker`` configured only by its environment (the store's URL and
    SDK variables): register waits for ready, gc frees the bytes, undelete brings them back from the source."""
    from modelledger import Registry
    from workers.broker import use

    src = make_folder(tmp_path)
    home = tmp_path / "home"
    log = tmp_path / "worker.log"
    env = child_env(home, MLEDGER_BROKER=redis_url, MLEDGER_ARTIFACTS=backend.url)
    Registry.open(home, artifacts=backend.url, broker=redis_url).close()  # the home exists before the worker
    with open(log, "wb") as out:
        worker = subprocess.Popen([*mledger_argv, "worker", "--threads", "1", "--sweep-interval", "1"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with Registry.open(home, artifacts=backend.url, broker=redis_url, actor="tester@test") as reg:
            assert not reg.embedded
            v1 = reg.register("remote", artifact=str(src))
            assert reg.wait(v1, timeout=120).status == "ready"
            reg.pull(v1, str(tmp_path / "pulled"))
            assert tree(tmp_path / "pulled") == tree(src)
            digests = {v1.artifact["digest"], *(f["digest"] for f in v1.artifact["files"])}
            reg.delete(v1, reason="gc me")
            reg.gc(grace_seconds=0)
            assert not digests & blobs(reg.store())
            reg.undelete(v1, timeout=120)
            again = reg.wait(v1, timeout=120)
            assert again.status == "ready" and again.artifact["digest"] == v1.artifact["digest"]
            assert digests <= blobs(reg.store())  # the bytes came back from the source
            assert reg.audit(deep=True).ok
    finally:
        worker.terminate()
        worker.wait(30)
        use("embedded")


@pytest.mark.parametrize("backend", ["local", "s3", "azure", "oss", *DATABASES], indirect=True)
def test_a_writer_killed_after_its_upload_leaves_a_temp_the_sweep_removes(backend: Backend, store: BlobStore) -> None:
    """Killed between the temp's upload (committed, whole) and its publication under the blob's name."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from workers.blobs import open_store

        store = open_store({backend.url!r})
        type(store)._publish = lambda *args: os._exit(9)  # the kill, right before publication
        store.put_bytes(b"left behind" * 1000)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert blobs(store) == set()
    assert store.sweep_tmp(older_than_seconds=3600) == 0  # young: could be a live writer's
    time.sleep(1.1)
    assert store.sweep_tmp(older_than_seconds=0) == 1
    assert store.sweep_tmp(older_than_seconds=0) == 0


def test_abfs_url_is_the_same_azure_store(azurite_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import adlfs

    for var in AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection)
    adlfs.AzureBlobFileSystem.clear_instance_cache()
    container = new_name()
    adlfs.AzureBlobFileSystem(connection_string=azurite_connection, skip_instance_cache=True).mkdir(container)
    blob = open_store(f"az://{container}/p").put_bytes(b"same store")
    assert open_store(f"abfs://{container}/p").read_blob(blob.digest) == b"same store"
