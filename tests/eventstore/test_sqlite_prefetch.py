"""The SQLite catalog's prefetch (``projections/sqlite/prefetched.py``): a command reads its model, aliases and
versions once, for its decision and its fold, in the ``FoldStore``'s shapes."""

from __future__ import annotations

from pathlib import Path

from eventstore import commands as c
from eventstore.handler import execute
from eventstore.sqlite import SQLiteRecorder
from eventstore.state import Target
from eventstore.verify import verify_rows
from projections.catalog import Catalog, CatalogProjection
from projections.sqlite import fold_store, prefetch


def _seeded(tmp_path: Path) -> tuple[SQLiteRecorder, CatalogProjection]:
    recorder = SQLiteRecorder(tmp_path / "registry.db")
    projection = CatalogProjection(recorder)
    meta = {"actor": "test"}
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}, tags={"t": str(n)}, params={"lr": n / 3}), meta)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), meta)
    execute(recorder, projection, c.AssignAlias("m@3", "production"), meta)
    execute(recorder, projection, c.RecordMetrics("m@3", {"acc": 0.5, "n": 1}), meta)
    execute(recorder, projection, c.Tag("m", {"team": "x"}), meta)
    execute(recorder, projection, c.Delete("m@1"), meta)
    return recorder, projection


def test_the_prefetched_rows_are_what_the_fold_store_loads(tmp_path: Path) -> None:
    """The same rows, in the same shapes, as ``FoldStore`` loads (so a change to one shows here)."""
    recorder, _ = _seeded(tmp_path)
    targets = [Target("m", 1), Target("m", 3), Target("m", None, "production", "production"), Target("m"),
               Target("m", None, None, "staging"), Target("m", 9), Target("nobody", 1), Target("nobody")]
    with recorder.write() as tx:
        store = fold_store(tx.connection)
        for target in targets:
            pre = prefetch(tx.connection, target)
            assert pre.stored_checkpoint() == store.checkpoint()
            names = {target.name}
            assert pre.fold_models(names) == store.load_models(names)
            assert pre.fold_aliases(names) == [tuple(r) for r in store.load_aliases(names)]
            known = [n for n in range(0, 10) if pre.knows_version(target.name, n)]
            if target.name == "m":
                assert known, target
            keys = {(target.name, n) for n in known}
            if keys:
                assert pre.fold_versions(keys) == store.load_versions(keys)
            if target.alias is not None:
                stack = {(target.name, target.alias)}
                assert pre.fold_tops(stack) == store.load_alias_tops(stack)
    recorder.close()


def test_commands_decided_and_folded_from_the_prefetch_fold_what_a_rebuild_folds(tmp_path: Path) -> None:
    """Registers, tags, aliases (moved, rolled back), metrics, deletes and an update, each folded from its
    prefetched rows: the catalog equals one rebuilt from the log, and the decisions saw the current state."""
    recorder, projection = _seeded(tmp_path)
    meta = {"actor": "test"}
    execute(recorder, projection, c.Update("m@production", params={"lr": 1}), meta)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), meta)
    execute(recorder, projection, c.RollbackAlias("m", "production"), meta)
    execute(recorder, projection, c.Tag("m@production", {"stage": "live"}), meta)
    execute(recorder, projection, c.Untag("m@3", ("stage",)), meta)
    execute(recorder, projection, c.Undelete("m@1"), meta)
    execute(recorder, projection, c.Register("other", {"source": "o", "digest": "sha256:" + "9" * 64, "size": 1}),
            meta)
    catalog = Catalog(projection)
    assert catalog.get("m@production").version == 3
    assert catalog.get("m@4").params == {"lr": 1}
    before = {name: recorder.connection().execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()  # noqa: S608
              for name in ("models", "versions", "aliases", "alias_history", "tags", "model_states",
                           "version_states", "artifact_states")}
    projection.rebuild()
    after = {name: recorder.connection().execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()  # noqa: S608
             for name in before}
    assert before == after
    assert verify_rows(recorder.raw_rows()).ok
    recorder.close()
