"""A SQLite registry opened read-only (``SQLiteRecorder(path, read_only=True)``; chosen by itself when the user
cannot write the file or its folder — the read-only mounts in ``tests/reliability/test_rel_disk.py`` run that
way through the CLI). Reads answer as on a writable open, every write is one ``StoreError`` saying read-only
and changes nothing, nothing is ever created, and a catalog that lags the log is refused, not served stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.errors import StoreError
from eventstore.events import NewEvent
from eventstore.sqlite import SQLiteRecorder
from modelledger import Registry
from projections.catalog import Catalog, CatalogProjection


def _seed(home: Path, art: Path) -> None:
    with Registry.open(home, actor="seed", database=str(home / "registry.db")) as reg:
        v = reg.register("m", artifact=str(art), params={"lr": 0.1}, tags={"task": "vision"})
        v2 = reg.update(v, params={"lr": 0.2})
        reg.alias(v2, "prod")
        reg.metrics(v2, {"acc": 0.9})


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    art = tmp_path / "w.bin"
    art.write_bytes(b"weights\n")
    home = tmp_path / "home"
    _seed(home, art)
    return home / "registry.db"


def _rows(path: Path) -> list[tuple]:
    rec = SQLiteRecorder(path, read_only=True)
    try:
        return rec.raw_rows()
    finally:
        rec.close()


def test_reads_answer_as_on_a_writable_open(seeded: Path) -> None:
    rw = SQLiteRecorder(seeded)
    expected = Catalog(CatalogProjection(rw))
    want = (expected.get("m@prod"), expected.model("m"), expected.list(search="vision"), expected.digest())
    rw.close()
    ro = SQLiteRecorder(seeded, read_only=True)
    try:
        assert ro.read_only
        catalog = Catalog(CatalogProjection(ro))
        assert (catalog.get("m@prod"), catalog.model("m"), catalog.list(search="vision"), catalog.digest()) == want
        assert catalog.at(2).get("m@1").params == {"lr": 0.1}
        assert ro.guard_problems() == []
    finally:
        ro.close()


def test_every_write_is_refused_and_changes_nothing(seeded: Path) -> None:
    before = _rows(seeded)
    ro = SQLiteRecorder(seeded, read_only=True)
    try:
        for attempt in (lambda: ro.write().__enter__(), ro.restore_guards):
            with pytest.raises(StoreError, match="read-only"):
                attempt()
        # Even a statement sent around the recorder is refused by SQLite itself (mode=ro).
        with pytest.raises(Exception, match="readonly"):
            ro.connection().execute("DELETE FROM models")
    finally:
        ro.close()
    assert _rows(seeded) == before


def test_rebuild_is_refused(seeded: Path) -> None:
    before = _rows(seeded)
    ro = SQLiteRecorder(seeded, read_only=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            CatalogProjection(ro).rebuild()
    finally:
        ro.close()
    assert _rows(seeded) == before


def test_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nohome" / "registry.db"
    with pytest.raises(StoreError, match="no registry"):
        SQLiteRecorder(missing, read_only=True)
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="no registry"):
        SQLiteRecorder(empty, read_only=True)
    assert empty.read_bytes() == b""


def test_a_lagging_catalog_is_refused_not_served_stale(seeded: Path) -> None:
    rw = SQLiteRecorder(seeded)
    rw.append([NewEvent("model-m", "Tagged", {"name": "m", "tags": {"late": "yes"}},
                        {"actor": "import", "client": "test"})])  # the log grows; nothing folds it
    rw.close()
    ro = SQLiteRecorder(seeded, read_only=True)
    try:
        with pytest.raises(StoreError, match="1 event.*behind the log"):
            Catalog(CatalogProjection(ro)).model("m")
    finally:
        ro.close()
