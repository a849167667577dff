"""Blobs in the registry's own database: ``MLEDGER_ARTIFACTS=db`` (every blob) and the small-blob tier of a new
registry (small blobs in the database, written in the command's own transaction; large ones in files).

What a user relies on: a small register commits bytes and events together (one commit); reads find a blob
in whichever tier holds it, so an existing registry needs no migration; gc frees database blobs in the same
commit as its ``ArtifactPurged`` events and ``audit --deep`` passes after it; a writer killed mid-blob leaves
nothing visible on any backend, and the next attempt heals."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from contracts.blobs import drop_mysql_database, mysql_database
from services import unavailable

from modelledger import Registry
from workers.blobs import open_store
from workers.blobs.database import DatabaseBlobStore
from workers.blobs.tiered import TieredBlobStore

ROOT = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def db_rows(home: Path, table: str) -> int:
    with sqlite3.connect(home / "registry.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our own table names


def test_a_new_registry_keeps_a_small_artifact_in_its_database_and_a_large_one_in_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(10_000))
    large.write_bytes(os.urandom(200_000))
    home = tmp_path / "home"
    with Registry.open(home, actor="t@t") as reg:
        s = reg.register("m", artifact=str(small))
        big = reg.register("m", artifact=str(large))
        store = reg.store()
        assert isinstance(store, TieredBlobStore)
        assert store.small.exists(s.artifact["digest"]) and not store.large.exists(s.artifact["digest"])
        assert store.large.exists(big.artifact["digest"]) and not store.small.exists(big.artifact["digest"])
        reg.pull(s, str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == small.read_bytes()
        assert reg.audit(deep=True).ok
    assert not list((home / "artifacts").rglob(s.artifact["digest"].split(":")[1]))


def test_a_home_whose_first_events_are_token_grants_is_still_new(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What a server's home looks like: tokens are made before any model. Its small blobs still go to the
    database tier; a registry whose models already keep their blobs in files stays as it is (no migration)."""
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(5_000))
    served = tmp_path / "served"
    with Registry.open(served, actor="admin@t") as reg:
        reg.create_token("ci", role="writer")
    with Registry.open(served, actor="ci") as reg:
        v = reg.register("m", artifact=str(small))
        assert isinstance(reg.store(), TieredBlobStore)
        assert reg.store().small.exists(v.artifact["digest"])
    old = tmp_path / "old"
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")  # a registry made before the tier: blobs in files
    with Registry.open(old, actor="t@t") as reg:
        reg.register("m", artifact=str(small))
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS")
    with Registry.open(old, actor="t@t") as reg:
        small.write_bytes(os.urandom(5_000))
        w = reg.register("m", artifact=str(small))
        assert not isinstance(reg.store(), TieredBlobStore)
        assert reg.store().exists(w.artifact["digest"])


def test_a_small_register_commits_once_with_its_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blob and the events go in one transaction: the registry database sees one commit, and a command
    refused after the ingest (a name taken by a conflicting request) writes no blob either."""
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 100)
    home = tmp_path / "home"
    with Registry.open(home, actor="t@t") as reg:
        reg.register("warm", artifact=str(tmp_path / "w.bin"))  # the store exists: count only the next one
        commits = []
        conn = reg.recorder.connection()
        conn.set_trace_callback(lambda statement: commits.append(statement) if statement.strip().upper()
                                .startswith("COMMIT") else None)
        src.write_bytes(b"other weights" * 100)
        v = reg.register("m", artifact=str(src))
        conn.set_trace_callback(None)
        assert v.status == "ready"
        assert len(commits) == 1, commits
        assert reg.store().small.exists(v.artifact["digest"])


def test_a_small_blob_already_stored_in_either_tier_is_stored_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The register's transaction finds a blob the database tier holds (nothing written again), and the ingest
    finds one the file tier holds (not copied into the database)."""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")
    home = tmp_path / "home"
    in_files = tmp_path / "files.bin"
    in_files.write_bytes(b"kept in a file" * 10)
    with Registry.open(home, actor="t@t") as reg:
        reg.register("m", artifact=str(in_files))
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "64K")
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 100)
    with Registry.open(home, actor="t@t") as reg:
        a = reg.register("m", artifact=str(src))
        b = reg.register("n", artifact=str(src))
        c = reg.register("m", artifact=str(in_files))
        assert a.artifact["digest"] == b.artifact["digest"] and b.status == c.status == "ready"
        store = reg.store()
        assert isinstance(store, TieredBlobStore)
        assert store.small.exists(a.artifact["digest"]) and not store.small.exists(c.artifact["digest"])
        assert store.large.exists(c.artifact["digest"])
        assert reg.audit(deep=True).ok
    assert db_rows(home, "blob_store") == 1 and db_rows(home, "blob_chunks") == 1


def test_an_existing_registry_keeps_writing_files_and_reads_both(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")  # a registry made before the tier existed
    home = tmp_path / "home"
    old = tmp_path / "old.bin"
    old.write_bytes(b"old bytes")
    with Registry.open(home, actor="t@t") as reg:
        v1 = reg.register("m", artifact=str(old))
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS")
    with Registry.open(home, actor="t@t") as reg:
        store = reg.store()
        assert not isinstance(store, TieredBlobStore)  # not new, no blob table: unchanged, no migration
        assert reg.audit(deep=True).ok
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "64K")  # turned on for it: new small blobs go to the database
    new = tmp_path / "new.bin"
    new.write_bytes(b"new bytes")
    with Registry.open(home, actor="t@t") as reg:
        v2 = reg.register("m", artifact=str(new))
        store = reg.store()
        assert isinstance(store, TieredBlobStore)
        assert store.large.exists(v1.artifact["digest"]) and store.small.exists(v2.artifact["digest"])
        for v, src in ((v1, old), (v2, new)):
            reg.pull(v, str(tmp_path / f"{v.version}.out"))
            assert (tmp_path / f"{v.version}.out").read_bytes() == src.read_bytes()
        assert reg.audit(deep=True).ok


@pytest.mark.parametrize("mode", ["db", "tiered"])
def test_gc_frees_database_blobs_in_the_commit_of_its_purge_events(mode: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    if mode == "db":
        monkeypatch.setenv("MLEDGER_ARTIFACTS", "db")
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "w.bin").write_bytes(os.urandom(300_000))
    home = tmp_path / "home"
    with Registry.open(home, actor="t@t") as reg:
        v = reg.register("m", artifact=str(folder))
        keep = reg.register("k", artifact=str(folder / "config.json"))
        store = reg.store()
        digests = {v.artifact["digest"], *(f["digest"] for f in v.artifact["files"])}
        assert digests <= {d for d, _s, _m in store.iter_blobs()}
        reg.delete(v, reason="gc me")
        seen: list[tuple[int, int]] = []
        real_delete = DatabaseBlobStore.delete

        def watched(self: DatabaseBlobStore, digest: str, tx: object = None) -> bool:
            assert tx is not None  # through gc's own transaction
            out = real_delete(self, digest, tx)
            # Inside gc's transaction: a second connection still sees the rows (nothing committed yet) ...
            seen.append((db_rows(home, "blob_store"), db_rows(home, "events")))
            return out

        monkeypatch.setattr(DatabaseBlobStore, "delete", watched)
        before = db_rows(home, "blob_store")
        head = db_rows(home, "events")
        report = reg.gc(grace_seconds=0)
        assert seen and all(rows == before and pos == head for rows, pos in seen)
        # ... and after the commit, the rows and the ArtifactPurged events are there together.
        assert db_rows(home, "events") > head and report["events"]
        assert db_rows(home, "blob_store") < before
        left = {d for d, _s, _m in store.iter_blobs()}
        assert not (digests - {keep.artifact["digest"]}) & left
        assert keep.artifact["digest"] in left
        assert reg.audit(deep=True).ok
        assert reg.get("m@1").status == "purged"


def test_mledger_artifacts_db_keeps_every_blob_in_the_registry_database(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEDGER_ARTIFACTS", "db")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunk rows
    home = tmp_path / "home"
    with Registry.open(home, actor="t@t") as reg:
        v = reg.register("m", artifact=str(src))
        assert isinstance(reg.store(), DatabaseBlobStore)
        assert db_rows(home, "blob_chunks") == 4
        reg.pull(v, str(tmp_path / "out.bin"))
        assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
        assert reg.audit(deep=True).ok
    assert not (home / "artifacts").exists()


# -- a writer killed mid-ingest, on every database backend ------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'blobs.db'}"
    if request.param == "postgres":
        from contracts.databases import ADMIN_URL, create_database, drop_database

        try:
            name = create_database()
        except Exception as exc:  # noqa: BLE001
            unavailable(f"PostgreSQL ({exc})")
        request.addfinalizer(lambda: drop_database(name))
        return ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    url = mysql_database()
    request.addfinalizer(lambda: drop_mysql_database(url))
    return url


def test_a_killed_folder_ingest_leaves_no_blob_and_the_next_attempt_heals(database: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for i in range(3):
        (folder / f"shard{i}.bin").write_bytes(bytes([i]) * (5 * 1024 * 1024))
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from workers.blobs import open_store
        from workers.blobs import database as db

        store = open_store({database!r})
        real = db.fixed_chunks
        sent = [0]
        def dies(reader, size):
            for chunk in real(reader, size):
                sent[0] += 1
                if sent[0] == 13:  # in the third shard: two are staged, one is half-written
                    os._exit(9)
                yield chunk
        db.fixed_chunks = dies
        store.ingest({str(folder)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=240)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    store = open_store(database)
    try:
        assert list(store.iter_blobs()) == []  # nothing visible
        assert store.sweep_tmp(older_than_seconds=3600) == 0  # could be a live writer's
        info = store.ingest(str(folder))  # the next attempt heals
        assert {d for d, _s, _m in store.iter_blobs()} == {info.digest, *(f.digest for f in info.files)}
        store.pull(info.digest, "directory", str(tmp_path / "back"))
        assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["shard0.bin", "shard1.bin", "shard2.bin"]
        time.sleep(0.05)
        assert store.sweep_tmp(older_than_seconds=0) >= 1  # what the killed writer left
        assert store.sweep_tmp(older_than_seconds=0) == 0
        assert all(store.verify(d) for d, _s, _m in store.iter_blobs())
    finally:
        store.close()


def test_a_small_blob_limit_that_is_not_a_size_is_a_clear_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from eventstore.errors import ValidationError

    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "lots")
    with Registry.open(tmp_path / "home", actor="t@t") as reg, pytest.raises(ValidationError, match="MLEDGER_SMALL"):
        reg.store()


def test_multipart_parts_grow_so_a_huge_blob_fits_the_part_limits() -> None:
    """S3 allows 10,000 parts (Azure 50,000 blocks): fixed 8 MiB parts would refuse a blob past 78 GiB."""
    from workers.blobs import multipart

    assert multipart.part_size(1) == multipart.part_size(1000) == 8 * 1024 * 1024
    assert multipart.part_size(1001) == 16 * 1024 * 1024
    assert sum(multipart.part_size(n) for n in range(1, 10_001)) > 1024 ** 4  # over 1 TiB within S3's limit
    data = [os.urandom(3_000_000) for _ in range(7)]
    parts = list(multipart._parts(iter(data)))
    assert b"".join(parts) == b"".join(data)
    assert all(len(p) == 8 * 1024 * 1024 for p in parts[:-1])


def test_a_stream_goes_to_the_tier_its_size_picks_even_read_in_short_pieces(tmp_path: Path) -> None:
    class Trickle:
        """A source that hands out at most 1,000 bytes per read (a pipe, a socket)."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, n: int = -1) -> bytes:
            k = min(n if n >= 0 else len(self.data), 1000)
            out, self.data = self.data[:k], self.data[k:]
            return out

    from workers.blobs.fsspec_store import FsspecBlobStore

    small = DatabaseBlobStore(f"sqlite://{tmp_path / 'r.db'}", shares_log=True)
    store = TieredBlobStore(small, FsspecBlobStore(str(tmp_path / "files")), 64 * 1024)
    tiny, big = os.urandom(10_000), os.urandom(100_000)
    assert store.put_stream(Trickle(tiny)).digest == sha(tiny)
    assert store.put_stream(Trickle(big)).digest == sha(big)
    assert small.exists(sha(tiny)) and not small.exists(sha(big))
    assert store.large.exists(sha(big)) and not store.large.exists(sha(tiny))
    assert store.read_blob(sha(tiny)) == tiny and store.read_blob(sha(big)) == big
    small.close()


# -- PostgreSQL: the small blob rides the command's pipeline ------------------------------------------------

def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Waits for the server's answer (a plain execute, a pipeline's fetch, sync or exit), as
    ``scripts/profile_pg.py`` counts them."""
    import psycopg

    count = [0]
    wait = psycopg.Connection.wait

    def counting(conn, gen, *args, **kwargs):  # noqa: ANN001, ANN202
        name = getattr(getattr(gen, "gi_code", None), "co_name", "")
        pipeline = conn._pipeline
        if name in ("_sync_gen", "_exit_gen") or (name == "_fetch_gen" and pipeline and pipeline.result_queue) \
                or (name not in ("_fetch_gen", "_enter_gen") and pipeline is None):
            count[0] += 1
        return wait(conn, gen, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "wait", counting)
    return count


@pytest.mark.postgres
def test_a_small_register_on_postgresql_takes_a_tags_two_round_trips(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_postgres_database) -> None:  # noqa: ANN001
    """The small blob is written by one statement whose result nobody reads, so it goes out with the events and
    the COMMIT (reading whether the blob existed was a third round trip: a tag takes two). The same bytes registered again are
    stored once; a blob of several chunk rows, or of none, is whole. (One round trip, not two, since a command
    after one of this process's on the same model is decided from its memo: tests/test_postgres_one_trip.py.)"""
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "3M")
    url = new_postgres_database()
    files = []
    for i, size in enumerate((400, 400, 2 * 1024 * 1024 + 5, 0)):
        files.append(tmp_path / f"w{i}.bin")
        files[-1].write_bytes(os.urandom(size))
    with Registry.open(tmp_path / "home", actor="t@t", database=url) as reg:
        # The store exists, the statements are prepared, the model exists (a new model's fold reads once more).
        reg.register("m", artifact=str(files[1]))
        trips = _count_round_trips(monkeypatch)
        v = reg.register("m", artifact=str(files[0]))
        assert trips[0] == 1
        monkeypatch.undo()
        again = reg.register("n", artifact=str(files[0]))  # already in the database tier: written once
        big = reg.register("m", artifact=str(files[2]))  # three chunk rows, in the same one statement
        empty = reg.register("m", artifact=str(files[3]))  # no chunk row
        store = reg.store()
        assert isinstance(store, TieredBlobStore)
        for version, src in ((v, files[0]), (again, files[0]), (big, files[2]), (empty, files[3])):
            assert version.status == "ready" and store.small.exists(version.artifact["digest"])
            out = tmp_path / f"{version.name}{version.version}.out"
            reg.pull(version, str(out))
            assert out.read_bytes() == src.read_bytes()
        assert reg.audit(deep=True).ok
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM blob_store").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM blob_chunks").fetchone()[0] == 1 + 1 + 3


@pytest.mark.parametrize("log", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_register_refused_by_the_decider_writes_no_small_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                request: pytest.FixtureRequest, log: str) -> None:
    """The small blobs a register deferred to its transaction are written once its events are appended: a
    command the decider refuses (here: its model was deleted) leaves no blob, though its transaction commits
    (it may carry other commands' events). On both logs: PostgreSQL writes the blob with its own statement."""
    from eventstore.errors import ConflictError

    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    database = request.getfixturevalue("new_postgres_database")() if log == "postgresql" else None
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"first weights" * 10)
    second.write_bytes(b"second weights" * 10)
    with Registry.open(tmp_path / "home", actor="t@t", database=database) as reg:
        kept = reg.register("m", artifact=str(first)).artifact["digest"]
        reg.delete("m", reason="gone")
        with pytest.raises(ConflictError, match="deleted"):
            reg.register("m", artifact=str(second))
        assert [digest for digest, _size, _created in reg.store().small.iter_blobs()] == [kept]


def test_a_small_register_checks_its_input_once_and_bad_input_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A register of a small local file writes nothing outside its transaction, so its input is checked by the
    command's own decision only (not a second time before the ingest). What is written outside it — a blob of
    the file tier — waits for the checks, so bad input still leaves nothing behind, and is named before a
    missing source is."""
    from eventstore import decider
    from eventstore.errors import ValidationError
    from modelledger import registry

    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    calls: list[str] = []

    def counted(command: object) -> None:
        calls.append(type(command).__name__)
        decider.precheck(command)

    monkeypatch.setattr(registry, "precheck", counted)
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(1000))
    large.write_bytes(os.urandom(300_000))
    home = tmp_path / "home"
    with Registry.open(home, actor="t@t") as reg:
        assert reg.register("m", artifact=str(small)).status == "ready"
        assert calls == []
        assert reg.register("m", artifact=str(large)).status == "ready"
        assert calls == ["Register"]  # before the file tier's write
        store = reg.store()
        for bad in (small, large, tmp_path / "missing.bin"):
            with pytest.raises(ValidationError, match="tag"):
                reg.register("m", artifact=str(bad), tags={"": "empty key"})
        assert reg.model("m").latest == 2
        assert sorted(d for d, _s, _m in store.iter_blobs()) == sorted(
            "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in (small, large))


def test_a_store_tells_whether_a_blob_is_written_by_the_commands_transaction(tmp_path: Path) -> None:
    """What the server asks before running a write on its event loop: only the tiered store's small blobs, with
    a local file tier (asked with a ``stat``), are written by the command's own transaction."""
    database = f"sqlite://{tmp_path / 'registry.db'}"
    tiered = open_store(str(tmp_path / "artifacts"), database=database, new_registry=True)
    remote = open_store("memory://writes-in-transaction", database=database, new_registry=True)
    every = open_store("db", database=database)
    try:
        assert isinstance(tiered, TieredBlobStore) and isinstance(remote, TieredBlobStore)
        assert tiered.writes_in_transaction(0) and tiered.writes_in_transaction(tiered.limit)
        assert tiered.deferring().writes_in_transaction(400)
        assert not tiered.writes_in_transaction(tiered.limit + 1)
        assert not remote.writes_in_transaction(400)  # its file tier is asked over the network
        assert not tiered.large.writes_in_transaction(400)
        assert not every.writes_in_transaction(400)  # written by the store's own transaction
    finally:
        for store in (tiered, remote, every):
            store.close()


# -- what gc leaves readable ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["tiered", "db", "sqlite-store"])
def test_gc_leaves_no_copy_of_a_purged_blobs_bytes_in_sqlite_files(mode: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A user who deletes a model and runs gc expects its bytes gone, not only unlisted. SQLite frees deleted
    rows' pages with their bytes in them unless it was built with SECURE_DELETE (Debian's is, python.org's and
    many others' are not: simulated here by turning it off on every connection), and its write-ahead log keeps
    the pages the blob was written in. Checked while the registry is still open (a server's, whose log is not
    checkpointed by a close): no byte sequence of the purged file in any file of the database, and the kept
    file's bytes still there (the scan can see them)."""
    monkeypatch.delenv("MLEDGER_SMALL_BLOBS", raising=False)
    real_connect = sqlite3.connect

    def build_without_secure_delete(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", build_without_secure_delete)
    size = 40_000 if mode == "tiered" else 2 * 1024 * 1024 + 5  # the small tier's, or several chunk rows
    gone, kept = b"PURGED-BYTES-" + os.urandom(8), b"KEPT-BYTES-" + os.urandom(8)
    (tmp_path / "gone.bin").write_bytes((gone * (size // len(gone) + 1))[:size])
    (tmp_path / "kept.bin").write_bytes((kept * (size // len(kept) + 1))[:size])
    files = tmp_path / "home" / "registry.db"
    if mode == "db":
        monkeypatch.setenv("MLEDGER_ARTIFACTS", "db")
    elif mode == "sqlite-store":
        files = tmp_path / "blobs.db"
        monkeypatch.setenv("MLEDGER_ARTIFACTS", f"sqlite://{files}")

    def copies(marker: bytes) -> int:
        return sum(p.read_bytes().count(marker) for p in files.parent.glob(files.name + "*") if p.is_file())

    with Registry.open(tmp_path / "home", actor="t@t") as reg:
        v = reg.register("m", artifact=str(tmp_path / "gone.bin"))
        reg.register("k", artifact=str(tmp_path / "kept.bin"))
        assert isinstance(reg.store(), TieredBlobStore if mode == "tiered" else DatabaseBlobStore)
        assert copies(gone) > 0 and copies(kept) > 0
        reg.delete(v, reason="erase me")
        report = reg.gc(grace_seconds=0)
        assert report["bytes"] == size
        assert copies(gone) == 0
        assert copies(kept) > 0
        assert reg.audit(deep=True).ok
        if mode == "sqlite-store":
            # A file of blobs only gives the freed pages back: the purged model stops costing disk (the file
            # holds the kept blob's pages, not both blobs').
            assert files.stat().st_size + Path(f"{files}-wal").stat().st_size < 1.5 * size
