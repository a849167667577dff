"""Re-ingest after gc with a changed source (test-quality §0.4): a version's bytes never change under its
record. When gc freed them and the source now holds other bytes, undelete and restore leave the version
``failed`` ("the source changed"), never ``ready`` with the new bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.errors import ArtifactError


def _purged(reg, src: Path, name: str) -> str:
    src.write_bytes(b"the bytes registered first\n")
    v = reg.register(name, str(src))
    reg.delete(f"{name}@1")
    reg.gc(grace_seconds=0)
    assert reg.get(f"{name}@1").status == "purged"
    src.write_bytes(b"other bytes under the same name\n")
    return v.artifact["digest"]


def test_undelete_after_gc_with_a_changed_source_fails_and_keeps_the_record(reg, tmp_path: Path) -> None:
    digest = _purged(reg, tmp_path / "w.bin", "m")
    with pytest.raises(ArtifactError, match="source changed"):
        reg.undelete("m@1")
    v = reg.get("m@1")
    assert v.status == "failed" and "source changed" in v.artifact["error"]
    assert v.artifact["digest"] == digest
    assert not [e for e in reg.log() if e.type == "ArtifactStored" and e.position > 3]


def test_restore_after_gc_with_a_changed_source_fails_and_keeps_the_record(reg, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"the bytes registered first\n")
    v = reg.register("r", str(src))
    before = reg.head()
    reg.delete("r")
    reg.gc(grace_seconds=0)
    src.write_bytes(b"other bytes under the same name\n")
    with pytest.raises(ArtifactError, match="source changed"):
        reg.restore(as_of=before)
    now = reg.get("r@1")
    assert now.status == "failed" and now.artifact["digest"] == v.artifact["digest"]
    with pytest.raises(ArtifactError):
        reg.pull("r@1", str(tmp_path / "out"))
