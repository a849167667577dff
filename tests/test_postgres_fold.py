"""The PostgreSQL catalog's writes: a command's inline fold (one row per table as scalar parameters, the tables'
statements grouped into one) leaves the rows a rebuild (arrays, pages of many rows) leaves; statements on one
table keep their order: no statement writes a table twice."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from command_support import EVERY_KIND, LEGAL_REFUSALS, Runner, command_strategies
from contracts.catalog import PostgresBackend, require_postgres
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from services import examples

from projections.postgres.fold import FoldStore

commands = st.one_of(*command_strategies(st.integers(0, 2), st.dictionaries(st.sampled_from(["lr", "wd"]), st.integers(-3, 3),
                                                                 max_size=2),
                              st.sampled_from(["", "d"]), st.dictionaries(st.sampled_from(["k1", "env"]),
                                                                          st.sampled_from(["1", "x.y"]), max_size=1),
                              ["k1", "env"], ["1", "x.y"], [0.5, -0.0, 1e16, 2.0]))


class _Sent:
    """``FoldStore.write`` with its connection's ``execute`` recorded: the statements the fold really sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[tuple[str, list]] = []
        write, sent = FoldStore.write, self.statements

        class Recording:
            def __init__(self, conn) -> None:  # noqa: ANN001
                self.conn = conn

            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(self.conn, name)

            def execute(self, statement, params=None):  # noqa: ANN001, ANN202
                sent.append((statement, list(params or ())))
                return self.conn.execute(statement, params)

        def recording(store: FoldStore, changes) -> None:  # noqa: ANN001
            conn, store.conn = store.conn, Recording(store.conn)
            try:
                write(store, changes)
            finally:
                store.conn = conn

        monkeypatch.setattr(FoldStore, "write", recording)

    def take(self) -> list[tuple[str, list]]:
        taken = list(self.statements)
        self.statements.clear()
        return taken


_WRITTEN = re.compile(r"(?:INSERT INTO|(?<!DO )UPDATE|DELETE FROM) (\w+)")


def test_a_commands_fold_is_one_statement_and_no_statement_writes_a_table_twice(workdir, monkeypatch,
                                                                                shared_postgres_database):
    """A tag's and an alias move's catalog rows go out as one statement each, a register's as two (its 8 tables,
    two rows in each state table as scalar parameters, and the checkpoint: over the 50 parameters of psycopg's
    cache limit for one); a rebuild's pages, where a table is written twice (a tag removed and others set), as
    several, none writing a table twice."""
    require_postgres()
    base, files = workdir
    home = Path(tempfile.mkdtemp(dir=base))
    pg = PostgresBackend(monkeypatch, shared_postgres_database)
    sent = _Sent(monkeypatch)
    try:
        with pg.open(home, actor="test", artifacts=str(home / "blobs")) as reg:
            reg.register("m", artifact=files[0])
            for count, command in ((2, lambda: reg.register("m", artifact=files[1])),
                                   (1, lambda: reg.tag("m@1", {"k": "v"})), (1, lambda: reg.tag("m@1", {"j": "w"})),
                                   (1, lambda: reg.untag("m@1", "k")), (1, lambda: reg.alias("m@2", "production"))):
                sent.take()
                command()
                statements = sent.take()
                assert len(statements) == count, [s[:60] for s, _ in statements]
                assert all(len(params) <= 50 for _, params in statements)
                written = [table for statement, _ in statements for table in _WRITTEN.findall(statement)]
                assert len(written) == len(set(written)), written
            reg.rebuild_projections()
            statements = sent.take()
            assert len(statements) > 1
            for statement, _ in statements:
                written = _WRITTEN.findall(statement)
                assert written and len(written) == len(set(written)), statement
    finally:
        pg.drop_all()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("pgfold")
    files = []
    for i in range(3):
        art = base / f"tiny{i}.bin"
        art.write_bytes(b"tiny %d" % i)
        files.append(str(art))
    return base, files


def test_commands_folded_inline_leave_the_catalog_a_rebuild_folds(workdir, monkeypatch, shared_postgres_database):
    require_postgres()
    base, files = workdir
    tally: Counter = Counter()

    @settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=st.lists(commands, min_size=1, max_size=20))
    @example(sequence=list(EVERY_KIND))
    def prop(sequence):
        home = Path(tempfile.mkdtemp(dir=base))
        pg = PostgresBackend(monkeypatch, shared_postgres_database)
        try:
            with pg.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
                runner = Runner(reg, files, tally)
                runner.setup()
                for command in sequence:
                    try:
                        runner.run(command)
                    except LEGAL_REFUSALS:
                        pass
                inline = reg.catalog().digest()
                reg.rebuild_projections()
                assert reg.catalog().digest() == inline
        finally:
            pg.drop_all()
            shutil.rmtree(home, ignore_errors=True)

    prop()
