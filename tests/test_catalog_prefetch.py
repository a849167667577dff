"""The catalog's prefetch, on every catalog backend (``projections.prefetch`` and each dialect's ``prefetch``): a
command reads its model, aliases and versions once, for its decision and its fold, in the shapes the dialect's
``FoldStore`` loads them. Two laws: the prefetched rows are the rows the fold would load, and commands decided
and folded from them leave the catalog a rebuild from the log makes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contracts.catalog import Backend

from eventstore import commands as c
from eventstore.handler import execute
from eventstore.state import Target
from eventstore.verify import verify_rows
from projections.catalog import Catalog
from projections.dialects import dialect_for

META = {"actor": "test"}


@pytest.fixture
def seeded(catalog_backend: Backend, tmp_path: Path) -> Iterator[Any]:
    """A registry on the backend: model ``m`` with versions 1–3 (1 deleted), ``production`` moved 2 → 3,
    metrics on 3, a model tag."""
    registry = catalog_backend.open(tmp_path / "home")
    recorder, projection = registry.recorder, registry.projection
    for n in range(3):
        execute(recorder, projection, c.Register("m", {"source": f"s{n}", "digest": "sha256:" + f"{n}" * 64,
                                                      "size": 1}, tags={"t": str(n)}, params={"lr": n / 3}), META)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), META)
    execute(recorder, projection, c.AssignAlias("m@3", "production"), META)
    execute(recorder, projection, c.RecordMetrics("m@3", {"acc": 0.5, "n": 1}), META)
    execute(recorder, projection, c.Tag("m", {"team": "x"}), META)
    execute(recorder, projection, c.Delete("m@1"), META)
    try:
        yield registry
    finally:
        registry.close()


def test_the_prefetched_rows_are_what_the_fold_store_loads(seeded: Any) -> None:
    """The same rows, in the same shapes, as the dialect's ``FoldStore`` loads (so a change to one shows here),
    for targets by number, by alias, by the latest version, for an alias being assigned, a number past the
    last, and a model that does not exist."""
    recorder = seeded.recorder
    dialect = dialect_for(recorder.dialect)
    targets = [Target("m", 1), Target("m", 3), Target("m", None, "production", "production"), Target("m"),
               Target("m", None, None, "staging"), Target("m", 9), Target("nobody", 1), Target("nobody")]
    with recorder.write() as tx:
        conn = dialect.connection_of(tx)
        store = dialect.fold_store(conn)
        for target in targets:
            pre = dialect.prefetch(conn, target)
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


def test_commands_decided_and_folded_from_the_prefetch_fold_what_a_rebuild_folds(seeded: Any) -> None:
    """Registers, tags, aliases (moved, rolled back), metrics, deletes, an undelete and an update, each folded
    from its prefetched rows: the decisions saw the current state, and the catalog's digest equals that of
    one rebuilt from the log."""
    recorder, projection = seeded.recorder, seeded.projection
    execute(recorder, projection, c.Update("m@production", params={"lr": 1}), META)
    execute(recorder, projection, c.AssignAlias("m@2", "production"), META)
    execute(recorder, projection, c.RollbackAlias("m", "production"), META)
    execute(recorder, projection, c.Tag("m@production", {"stage": "live"}), META)
    execute(recorder, projection, c.Untag("m@3", ("stage",)), META)
    execute(recorder, projection, c.Undelete("m@1"), META)
    execute(recorder, projection, c.Register("other", {"source": "o", "digest": "sha256:" + "9" * 64, "size": 1}),
            META)
    catalog = Catalog(projection)
    assert catalog.get("m@production").version == 3
    assert catalog.get("m@4").params == {"lr": 1}
    assert catalog.get("m@3").tags.get("stage") is None
    assert not catalog.get("m@1").deleted
    folded = catalog.digest()
    projection.rebuild()
    assert Catalog(projection).digest() == folded
    assert verify_rows(recorder.raw_rows()).ok


def test_a_memo_keeps_the_versions_read_last_up_to_a_bound() -> None:
    """A process registering version after version keeps a bounded memo of its model (``kept_after``): the
    versions read last, each once, the touched ones dropped; before the bound it grew, and was copied, without
    end."""
    from projections.prefetch import KEPT_VERSIONS, Prefetched, kept_after

    target = Target("m", None)
    model = ("m",) + (None,) * 20
    kept = None
    for n in range(1, KEPT_VERSIONS + 40):
        later = Prefetched.known(target, model, [], {n: ("m", n), n + 1: None}, None, n)
        kept = kept_after(later, kept, {n}, set(), n)
        assert len(kept["versions"]) <= KEPT_VERSIONS
    last = KEPT_VERSIONS + 39
    assert list(kept["versions"])[-2:] == [last, last + 1]  # the versions read last are kept
    assert kept["versions"][last] == ("m", last)
    assert 1 not in kept["versions"]  # the oldest went first
