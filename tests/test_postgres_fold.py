"""The PostgreSQL catalog's writes: a command's inline fold (one row per table as scalar parameters, the tables'
statements grouped into one) leaves the rows a rebuild (arrays, pages of many rows) leaves; statements on one
table keep their order."""

from __future__ import annotations

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

from projections.postgres.fold import grouped

commands = st.one_of(*command_strategies(st.integers(0, 2), st.dictionaries(st.sampled_from(["lr", "wd"]), st.integers(-3, 3),
                                                                 max_size=2),
                              st.sampled_from(["", "d"]), st.dictionaries(st.sampled_from(["k1", "env"]),
                                                                          st.sampled_from(["1", "x.y"]), max_size=1),
                              ["k1", "env"], ["1", "x.y"], [0.5, -0.0, 1e16, 2.0]))


def test_statements_on_distinct_tables_share_one_and_a_table_seen_again_starts_the_next():
    parts = [("models", "UPDATE models %s", [1]), ("tags", "DELETE tags %s", [2]), ("tags", "INSERT tags %s", [3]),
             ("versions", "UPDATE versions %s", [4]), ("projection_checkpoint", "INSERT cp %s", [5])]
    assert grouped(parts) == [
        ("WITH w0 AS (UPDATE models %s) DELETE tags %s", [1, 2]),
        ("WITH w0 AS (INSERT tags %s), w1 AS (UPDATE versions %s) INSERT cp %s", [3, 4, 5]),
    ]
    assert grouped(parts[:1]) == [("UPDATE models %s", [1])]


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
