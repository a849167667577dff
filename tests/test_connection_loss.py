"""A connection to PostgreSQL cut during COMMIT: the client cannot know whether its change was recorded. The
recorder says so as the project's ``StoreError`` (one line, exit 5 in the CLI), and the retried command with
the same idempotency key appends exactly once — whether the commit landed ("after") or not ("before").

The cut is made by a TCP proxy between the registry and the server (tests/pgproxy.py) at the COMMIT itself,
on every write path: ``Recorder.append`` (rows and COMMIT in one round trip), ``write()`` (COMMIT on exit), and
a command's batched transaction (``write_batched``: decide → append → project, committed by its pipeline's
Sync), decided from the memo of the last commit (one round trip) or read first (two)."""

from __future__ import annotations

import json

import pytest
from contracts.recorder import tag

from eventstore.errors import StoreError
from eventstore.verify import verify_rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def direct(new_postgres_database) -> str:
    return new_postgres_database()


@pytest.fixture
def cutter(direct):
    from pgproxy import CommitCutter

    proxy = CommitCutter(direct)
    try:
        yield proxy
    finally:
        proxy.close()


def _append(recorder, key: str, n: int):
    return recorder.append([tag("model-a", n, key), tag("model-a", n + 1, key)], idempotency_key=key,
                           fingerprint="fp-" + key)


def _write(recorder, key: str, n: int):
    with recorder.write() as tx:
        first = tx.idempotent_result(key, "fp-" + key)
        if first is not None:
            return first
        return tx.append([tag("model-a", n, key), tag("model-a", n + 1, key)], idempotency_key=key,
                         fingerprint="fp-" + key)


@pytest.mark.parametrize("path", [_append, _write], ids=["append", "write"])
@pytest.mark.parametrize("cut", ["after", "before"])
def test_a_retry_after_a_cut_commit_appends_once(direct, cutter, path, cut):
    from eventstore.postgres import PostgresRecorder

    watcher = PostgresRecorder(direct)
    recorder = PostgresRecorder(cutter.url, pool_size=1)
    try:
        path(recorder, "warm-up", 0)
        head = watcher.head()
        cutter.arm(cut)
        with pytest.raises(StoreError) as info:
            path(recorder, "k1", 10)
        assert cutter.cuts == 1
        message = str(info.value)
        assert "\n" not in message and "connection" in message
        landed = watcher.head() == head + 2
        assert landed == (cut == "after")
        if cut == "after":
            assert "may or may not be recorded" in message and "same idempotency key" in message
        # the retry (same key, same request) appends once either way, and returns the first result
        again = path(recorder, "k1", 10)
        assert [e.position for e in again] == [head + 1, head + 2]
        assert watcher.head() == head + 2
        assert path(recorder, "k1", 10) == again
        rows = watcher.raw_rows()
        assert verify_rows(rows).ok
        assert [json.loads(r[6]).get("idempotency_key") for r in rows].count("k1") == 2
        assert list(watcher.key_problems()) == []
    finally:
        recorder.close()
        watcher.close()


def test_a_server_gone_for_good_is_a_store_error_and_nothing_hangs(direct, cutter):
    from eventstore.postgres import PostgresRecorder

    recorder = PostgresRecorder(cutter.url, pool_size=1, connect_timeout=2)
    try:
        _append(recorder, "k0", 0)
        cutter.close()  # the "server" disappears: no new connection can be made either
        with pytest.raises(StoreError) as info:
            _append(recorder, "k1", 10)
        assert "\n" not in str(info.value)
        with pytest.raises(StoreError):
            recorder.head()
    finally:
        recorder.close()


@pytest.mark.parametrize("at", ["commit", "sync"])
@pytest.mark.parametrize("cut", ["after", "before"])
def test_a_command_cut_at_commit_fails_with_one_line_and_its_retry_appends_once(cli, home, make_artifact, direct,
                                                                               cutter, cut, at, monkeypatch):
    """The same through the CLI: decide → append → project in one transaction, its commit cut; exit 5 and one
    line (or, cut before the command's own commit, the command run again at once); the retry with the same
    idempotency key gives version 2 exactly once. ``commit``: the first COMMIT
    statement the CLI sends (a read snapshot's, before anything is decided); ``sync``: the command's own commit,
    the Sync of its pipeline."""
    monkeypatch.setenv("MLEDGER_DATABASE", cutter.url)
    art = make_artifact("m.bin", b"weights\n")
    assert cli("register", "m", "--artifact", str(art))[0] == 0
    argv = ["update", "m", "--params", '{"lr": 0.01}', "--idempotency-key", "run-42", "--json"]
    cutter.arm(cut, at)
    code, out, err = cli(*argv)
    assert cutter.cuts == 1, (code, out, err)
    if (cut, at) == ("before", "sync"):
        assert code == 0 and json.loads(out)["version"] == 2, err  # nothing landed: run again at once
    else:
        assert code == 5 and out == "" and err.count("\n") == 1 and "connection" in err
    code, out, err = cli(*argv)
    assert code == 0, err
    assert json.loads(out)["version"] == 2
    code, out, _ = cli("log", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    keyed = [e for e in events if e["meta"].get("idempotency_key") == "run-42"]
    assert keyed and len({e["meta"]["correlation_id"] for e in keyed}) == 1, "the keyed command appended twice"
    code, out, _ = cli("show", "m", "--json")
    assert [v["version"] for v in json.loads(out)["versions"]] == [1, 2]
    code, out, err = cli("audit", "--json", "--database", direct)
    assert code == 0 and json.loads(out)["ok"], err


def _tagged(recorder, projection, key: str):
    from eventstore import commands as c
    from eventstore.handler import execute

    return execute(recorder, projection, c.Tag("m@1", {"stage": "cut"}), {"actor": "test"}, idempotency_key=key)


@pytest.mark.parametrize("path", ["one-trip", "two-trip"])
@pytest.mark.parametrize("cut", ["after", "before"])
def test_a_command_cut_at_its_commit_appends_once_and_its_retry_returns_it(direct, cutter, path, cut):
    """A command's own commit (``write_batched``: the Sync of its pipeline, no COMMIT statement), cut, on both of
    its paths: decided from the memo of the process's last commit (one round trip) and read first (two). Cut
    after the server committed, the caller gets a one-line ``StoreError`` saying the command may be recorded, and
    the retry with its key returns the first result; cut before, nothing is recorded, and the command, having read
    on a connection of its own that its event did not land, runs again at once on a new connection. Either way:
    once in the log, the chain whole, the catalog the command's."""
    from eventstore import commands as c
    from eventstore.handler import execute
    from eventstore.postgres import PostgresRecorder
    from projections.catalog import Catalog, CatalogProjection

    watcher = PostgresRecorder(direct)
    recorder = PostgresRecorder(cutter.url, pool_size=1)
    projection = CatalogProjection(recorder)
    try:
        execute(recorder, projection, c.Register("m", {"source": "s", "digest": "sha256:" + "1" * 64, "size": 1}),
                {"actor": "test"})
        execute(recorder, projection, c.Tag("m@1", {"stage": "warm"}), {"actor": "test"})  # leaves a memo
        if path == "two-trip":
            with recorder.write():  # a write outside the handler: the memo is dropped, the next command reads first
                pass
        hits = recorder.one_trip_counts["hits"]
        head = watcher.head()
        cutter.arm(cut, at="sync")
        try:
            first, raised = _tagged(recorder, projection, "k1"), None
        except StoreError as exc:
            first, raised = None, exc
        assert cutter.cuts == 1
        if path == "one-trip":
            assert recorder.one_trip_counts["hits"] == hits  # it was tried from the memo, and did not land as one
        if cut == "before":
            # nothing landed (read on a connection of its own), so it ran again at once, on a new connection
            assert raised is None and [e.position for e in first.events] == [head + 1]
        else:
            assert raised is not None and "\n" not in str(raised) and "connection" in str(raised)
            assert "may or may not be recorded" in str(raised) and "same idempotency key" in str(raised)
            assert watcher.head() == (head + 1 if cut == "after" else head)  # the commit landed, or nothing did
        again = _tagged(recorder, projection, "k1")
        assert [e.position for e in again.events] == [head + 1]
        assert watcher.head() == head + 1
        if first is not None:
            assert again.replayed and again.events == first.events
        rows = watcher.raw_rows()
        assert verify_rows(rows).ok
        assert [json.loads(r[6]).get("idempotency_key") for r in rows].count("k1") == 1
        assert Catalog(CatalogProjection(watcher)).get("m@1").tags == {"stage": "cut"}
        assert Catalog(projection).get("m@1").tags == {"stage": "cut"}
    finally:
        recorder.close()
        watcher.close()
