"""The structure read from an artifact's bytes becomes the version's structure when none was given, on every
path that records stored bytes: embedded register and update, the Redis worker (fakeredis and the real
server), an imported log, and `mledger retry` of an imported pending version; `mledger show --structure`
prints it. (Before: the embedded path's ArtifactStored dropped it, so the version showed ``{}``.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from eventstore.events import NewEvent

TENSORS = {"embed.weight": ("F32", [10, 4]), "head.bias": ("F16", [3]), "step": ("I64", [])}
EXPECTED_TENSORS = {name: {"dtype": d, "shape": s} for name, (d, s) in TENSORS.items()}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]] = TENSORS,
                      metadata: dict[str, str] | None = None) -> Path:
    sizes = {"F32": 4, "F16": 2, "I64": 8}
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x01" * offset)
    return path


def assert_read_structure(structure: dict) -> None:
    assert structure["format"] == "safetensors"
    assert structure["tensors"] == EXPECTED_TENSORS
    assert structure["parameters"] == 40 + 3 + 1
    assert structure["tensor_count"] == 3
    assert structure["dtypes"] == {"F16": 3, "F32": 40, "I64": 1}


def test_embedded_register_records_the_structure_read_from_the_bytes(reg, tmp_path: Path) -> None:
    src = write_safetensors(tmp_path / "model.safetensors", metadata={"format": "pt"})
    v = reg.register("st", artifact=str(src))
    assert v.status == "ready"
    assert_read_structure(v.structure)
    assert v.structure["metadata"] == {"format": "pt"}
    # It is in the log (the ArtifactStored event), not only in this process's catalog: a rebuild keeps it.
    stored = [e for e in reg.log() if e.type == "ArtifactStored"]
    assert len(stored) == 1 and stored[0].data["structure"]["tensors"] == EXPECTED_TENSORS
    reg.rebuild_projections()
    assert reg.get("st@1").structure["parameters"] == 44


def test_a_given_structure_wins_over_the_one_read(reg, tmp_path: Path) -> None:
    src = write_safetensors(tmp_path / "model.safetensors")
    v = reg.register("st", artifact=str(src), structure={"layers": [64, 10]})
    assert v.structure == {"layers": [64, 10]}
    assert v.artifact["structure"]["parameters"] == 44  # still kept with the artifact


def test_update_with_a_new_artifact_shows_the_new_files_structure(reg, tmp_path: Path) -> None:
    first = write_safetensors(tmp_path / "a.safetensors", {"w": ("F32", [2, 2])})
    reg.register("st", artifact=str(first))
    second = write_safetensors(tmp_path / "b.safetensors")
    v2 = reg.update("st@1", artifact=str(second))
    assert_read_structure(v2.structure)
    assert reg.get("st@1").structure["tensors"] == {"w": {"dtype": "F32", "shape": [2, 2]}}


def test_an_imported_log_keeps_the_structure(reg, home: Path, tmp_path: Path) -> None:
    from modelledger import Registry

    src = write_safetensors(tmp_path / "model.safetensors")
    reg.register("st", artifact=str(src))
    batch = [NewEvent(e.stream, e.type, e.data, e.meta) for e in reg.log()]
    other = Registry.open(tmp_path / "other-home", actor="tester@test")
    try:
        other.append_batch(batch)
        assert_read_structure(other.get("st@1").structure)
    finally:
        other.close()


def test_retry_of_an_imported_pending_version_reads_the_structure(home: Path, tmp_path: Path) -> None:
    from modelledger import Registry

    src = write_safetensors(tmp_path / "model.safetensors")
    reg = Registry.open(home, actor="tester@test")
    try:
        reg.append_batch([
            NewEvent("model-st", "ModelRegistered", {"name": "st", "description": "", "tags": {}}),
            NewEvent("model-st", "VersionRegistered", {
                "name": "st", "version": 1, "parent": None, "description": "", "params": {}, "structure": {},
                "optimizer": {}, "tags": {}, "artifact": {"source": str(src)}, "status": "pending"}),
        ])
        assert reg.get("st@1").status == "pending"
        v = reg.retry("st@1")
        assert v.status == "ready"
        assert_read_structure(v.structure)
    finally:
        reg.close()


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.redis), "fakeredis"])
def redis_reg(request: pytest.FixtureRequest, home: Path, worker_sources: str):
    """A registry on a Redis broker (the real server on MLEDGER_TEST_REDIS_DB, or fakeredis) with a worker."""
    import dramatiq

    from modelledger import Registry
    from workers import broker as broker_mod

    if request.param == "real":
        reg = Registry.open(home, broker=request.getfixturevalue("redis_url"), actor="tester@test")
        broker = reg.broker
    else:
        import fakeredis
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.middleware import CurrentMessage

        reg = Registry.open(home, broker="redis://127.0.0.1:1/0", actor="tester@test")
        broker = RedisBroker(client=fakeredis.FakeRedis(), namespace=reg.broker.namespace,
                             heartbeat_timeout=broker_mod.HEARTBEAT_TIMEOUT_MS)
        broker.add_middleware(CurrentMessage())
        broker_mod.use(broker)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        yield reg
    finally:
        worker.stop(timeout=10_000)
        reg.close()


def test_the_redis_worker_records_the_structure(redis_reg, tmp_path: Path) -> None:
    src = write_safetensors(tmp_path / "model.safetensors")
    v = redis_reg.register("st", artifact=str(src), wait=False)
    assert v.status == "pending"
    ready = redis_reg.wait(v, timeout=60)
    assert ready.status == "ready"
    assert_read_structure(ready.structure)


def test_show_structure_prints_it_and_json_gives_the_object(cli, tmp_path: Path) -> None:
    src = write_safetensors(tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert cli("register", "st", "--artifact", str(src))[0] == 0
    code, out, _ = cli("show", "st@1", "--structure")
    assert code == 0
    assert "parameters" in out and "44" in out
    assert "embed.weight" in out and "[10, 4]" in out  # one line per tensor
    code, out, _ = cli("show", "st@1", "--structure", "--json")
    assert code == 0
    assert_read_structure(json.loads(out))
    # A model has no structure of its own: refused with a clear message, nothing printed on stdout.
    code, out, err = cli("show", "st", "--structure")
    assert code != 0 and out == "" and "NAME@N" in err


def test_show_structure_of_a_version_without_one_says_so(cli, tmp_path: Path) -> None:
    src = tmp_path / "opaque.bin"
    src.write_bytes(b"\x00\x01 nothing recognisable " * 10)
    assert cli("register", "op", "--artifact", str(src))[0] == 0
    code, out, _ = cli("show", "op@1", "--structure")
    assert code == 0 and "no structure" in out
    code, out, _ = cli("show", "op@1", "--structure", "--json")
    assert code == 0 and json.loads(out) == {}
