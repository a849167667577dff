"""What one command runs and writes on the embedded SQLite catalog: only the reads its decision and its fold use,
and only the rows (so the b-tree pages) its events change. Checked through the connection's statement trace,
and with the catalog a rebuild from the log makes (the fold's laws themselves are ``test_properties``')."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelledger import Registry


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    source = tmp_path / "m.bin"
    source.write_bytes(b"WRITES " * 40)
    registry = Registry.open(str(tmp_path / "home"), broker="embedded", actor="test")
    for _ in range(3):
        registry.register("m", str(source))
    try:
        yield registry
    finally:
        registry.close()


def _statements(reg: Registry, action) -> list[str]:
    """The statements ``action`` runs on the registry's write connection, whitespace folded (a trigger's and a
    virtual table's own statements included, as the trace gives them)."""
    conn = reg.recorder.connection()
    seen: list[str] = []
    conn.set_trace_callback(lambda s: seen.append(" ".join(s.split())))
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    return seen


def _equals_its_rebuild(reg: Registry) -> bool:
    live = reg.catalog().digest()
    reg.rebuild_projections()
    return reg.catalog().digest() == live


def test_a_tag_leaves_the_versions_query_indexes_alone_and_a_delete_does_not(reg: Registry) -> None:
    """A tag does not set the status or the deleted flag of its version (SQLite would rewrite their index
    entries, two pages per commit, for nothing); a delete and a restore do, and the catalog stays the one a
    rebuild from the log makes, with ``list`` by status and by liveness right."""
    tagged = _statements(reg, lambda: reg.tag("m@2", stage="s1"))
    assert any(s.startswith("INSERT INTO events") for s in tagged)  # the trace is on the writing connection
    updates = [s for s in tagged if s.startswith("UPDATE versions SET")]
    assert updates and all("status =" not in s and "deleted =" not in s for s in updates), updates
    deleted = _statements(reg, lambda: reg.delete("m@3"))
    assert any(s.startswith("UPDATE versions SET status =") for s in deleted), deleted
    assert reg.model("m").latest == 2
    reg.tag("m@2", stage="s2")
    reg.undelete("m@3")
    assert reg.model("m").latest == 3
    assert reg.get("m@2").tags == {"stage": "s2"}
    assert _equals_its_rebuild(reg)


def test_a_tag_reads_only_the_version_it_names(reg: Registry) -> None:
    """The decision and the fold of a tag on ``m@1`` read version 1 once, and no other version (the next new
    number, which only a register or an update asks for, is not read ahead)."""
    seen = _statements(reg, lambda: reg.tag("m@1", stage="s1"))
    reads = [s for s in seen if s.startswith("SELECT") and "FROM versions WHERE name =" in s]
    assert reads == [r for r in reads if r.endswith("AND version = 1")] and len(reads) == 1, reads
    assert reg.get("m@1").tags == {"stage": "s1"}


def test_a_tag_whose_words_are_there_already_leaves_the_search_index_alone(reg: Registry) -> None:
    """Setting a tag again to a value whose tokens the version has (here a key and a value that are its tokens
    already) writes no search words and touches no FTS5 table; a new word does, and the search finds
    exactly the versions it should either way."""
    reg.tag("m@2", stage="blue-green")
    again = _statements(reg, lambda: reg.tag("m@2", {"blue-green": "stage"}))
    assert not [s for s in again if "fts" in s.lower()], again
    assert reg.get("m@2").tags == {"stage": "blue-green", "blue-green": "stage"}
    assert [r.version for r in reg.catalog().search(keyword="stage")] == [2]
    changed = _statements(reg, lambda: reg.tag("m@2", stage="red"))
    assert [s for s in changed if "versions_fts" in s], changed
    assert [r.version for r in reg.catalog().search(keyword="red")] == [2]


class _Spy:
    """A ``FoldStore`` that keeps what it loaded and what it was given to write."""

    def __init__(self, store) -> None:
        self.store, self.loaded, self.written = store, [], []

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def load_versions(self, keys):
        self.loaded.append(self.store.load_versions(keys))
        return self.loaded[-1]

    def write(self, changes) -> None:
        self.written.append(changes)


def test_a_tag_writes_the_artifact_back_as_it_was_loaded_without_parsing_it(reg: Registry) -> None:
    """The artifact, a version's biggest field (a folder's lists every file), is loaded as its stored text and
    written back as that same text by a fold that never reads it; a handler that does read it gets it parsed."""
    from eventstore.events import StoredEvent
    from projections.projector import fold
    from projections.sqlite import fold_store

    conn = reg.recorder.connection()
    stored = conn.execute("SELECT artifact FROM versions WHERE name = 'm' AND version = 2").fetchone()[0]
    head = reg.recorder.head()

    def event(position: int, type_: str, data: dict) -> StoredEvent:
        return StoredEvent(position, "model-m", position, type_, 1, data, {"actor": "t"}, "2030-01-01T00:00:00Z", "")

    spy = _Spy(fold_store(conn))
    conn.execute("SAVEPOINT spy")
    try:
        fold(spy, [event(head + 1, "Tagged", {"name": "m", "version": 2, "tags": {"k": "v"}})], head)
        fold(spy, [event(head + 2, "ArtifactFailed", {"name": "m", "version": 2, "reason": "gone"})], head + 1)
    finally:
        conn.execute("ROLLBACK TO spy")
        conn.execute("RELEASE spy")
    tagged, failed = spy.written
    loaded = spy.loaded[0][0][7]  # (the VERSION_LOADED row's artifact; the UPDATE's is VERSION_MUTABLE's 5th)
    assert loaded == stored and tagged.versions_changed[0][4] is loaded
    assert json.loads(failed.versions_changed[0][4]) == {**json.loads(stored), "error": "gone"}
