"""SQLite and PostgreSQL keep the same catalog: the same log folded by either gives the same digest and the
same answers, and a keyword search finds exactly the same models on both (and in the catalog as of any
position), because the tokens are defined once (``projections.search``) and both indexes only store them."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from command_support import EVERY_KIND, LEGAL_REFUSALS, Runner, command_strategies
from contracts.catalog import PostgresBackend, require_postgres
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from services import examples

from eventstore.events import StoredEvent
from projections import sqlite as sqlite_catalog
from projections.projector import fold
from projections.search import entity_tokens, matches, query_words, split

commands = st.one_of(*command_strategies(st.integers(0, 2), st.dictionaries(st.sampled_from(["lr", "wd"]), st.integers(-3, 3),
                                                                 max_size=2),
                              st.sampled_from(["", "d"]), st.dictionaries(st.sampled_from(["k1", "env"]),
                                                                          st.sampled_from(["1", "x.y"]), max_size=1),
                              ["k1", "env"], ["1", "x.y"], [0.5, -0.0, 1e16, 2.0]))
WORDS = ["a", "b", "team", "c", "d", "k1", "env", "x.y", "x", "imported", "nosuch"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("dialects")
    files = []
    for i in range(3):
        art = base / f"tiny{i}.bin"
        art.write_bytes(b"tiny %d" % i)
        files.append(str(art))
    return base, files


def answers(cat) -> dict:
    out: dict = {"models": [cat.model(m.name).to_json() for m in cat.list(include_deleted=True)]}
    for word in WORDS:
        out[f"models {word}"] = [m.name for m in cat.list(search=word, include_deleted=True)]
        out[f"versions {word}"] = [v.ref for v in cat.search(keyword=word)]
    return out


def test_the_same_log_folded_by_sqlite_and_postgresql_gives_the_same_catalog(workdir, monkeypatch,
                                                                            shared_postgres_database):
    require_postgres()
    base, files = workdir
    tally: Counter = Counter()
    # The two registries share one artifact folder; the small-blob tier would keep bytes in each database
    # (what `mledger copy` carries over, tests/test_copy.py). This law is about the catalogs.
    monkeypatch.setenv("MLEDGER_SMALL_BLOBS", "0")

    @settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=st.lists(commands, min_size=1, max_size=20), cut=st.integers(0, 100))
    @example(sequence=list(EVERY_KIND), cut=7)
    def prop(sequence, cut):
        from modelledger import Registry

        home, pg_home = Path(tempfile.mkdtemp(dir=base)), Path(tempfile.mkdtemp(dir=base))
        pg = PostgresBackend(monkeypatch, shared_postgres_database)
        try:
            with Registry.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
                runner = Runner(reg, files, tally)
                runner.setup()
                for command in sequence:
                    try:
                        runner.run(command)
                    except LEGAL_REFUSALS:
                        pass
                at = cut % (reg.head() + 1)
                want, want_at = reg.catalog().digest(), answers(reg.catalog(as_of=at))
                want_now = answers(reg.catalog())
                # The whole log, byte for byte, into PostgreSQL; its catalog is folded there from nothing.
                with pg.open(pg_home, actor="hypothesis", artifacts=str(home / "blobs")) as copy:
                    pg.copy_prefix(reg, copy, reg.head())
                with pg.open(pg_home, actor="hypothesis", artifacts=str(home / "blobs")) as copy:
                    assert copy.catalog().digest() == want
                    assert answers(copy.catalog()) == want_now
                    assert answers(copy.catalog(as_of=at)) == want_at
                    copy.rebuild_projections()
                    assert copy.catalog().digest() == want
                    report = copy.audit()
                    assert report.ok, report.to_json()
        finally:
            pg.drop_all()
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(pg_home, ignore_errors=True)

    prop()


# -- search, tokens and both indexes ----------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
names = st.sampled_from(["m0", "m1", "m2", "m3"])


def _events(docs: list[tuple[str, str, dict[str, str]]]) -> list[StoredEvent]:
    return [StoredEvent(i + 1, f"model-{name}", 1, "ModelRegistered",
                        1, {"name": name, "description": description, "tags": tags}, {},
                        "2026-01-01T00:00:00.000000Z", "h")
            for i, (name, description, tags) in enumerate(docs)]


@pytest.fixture(scope="module")
def pg_catalog():
    """A bare PostgreSQL catalog (its own database, the catalog's tables), for folding directly."""
    require_postgres()
    import psycopg
    from contracts.databases import create_database, database_url, drop_database

    from projections import postgres as pg_catalog_module

    name = create_database()
    conn = psycopg.connect(database_url(name), autocommit=True)
    try:
        with conn.transaction():
            pg_catalog_module.create(conn)
        yield conn
    finally:
        conn.close()
        drop_database(name)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.dictionaries(names, st.tuples(texts, st.dictionaries(st.sampled_from(["k", "env"]), texts,
                                                                    max_size=2)), min_size=1, max_size=4),
       query=st.one_of(texts, st.sampled_from(["resnet-50", "v1.2", "my_model", "café", "CAFE", "ﬁle", "İs"])))
@example(docs={"m0": ("Café résumé v1.2 my_model resnet-50", {"k": "ÅNGSTRÖM"})}, query="cafe RESUM v1. my_m ang")
@example(docs={"m0": ("a.b-c_d", {})}, query="a.b-c")
def test_a_search_finds_the_same_models_in_sqlite_postgresql_and_the_past(pg_catalog, docs, query):
    if not query.replace('"', " ").split():
        return  # blank: refused before any index is asked
    words = query_words(query)
    ordered = sorted(docs.items())
    events = _events([(name, description, tags) for name, (description, tags) in ordered])
    expected = [name for name, (description, tags) in ordered
                if matches(words, entity_tokens(name, description, tags))]

    lite = sqlite3.connect(":memory:", isolation_level=None)
    try:
        lite.execute("BEGIN")
        sqlite_catalog.create(lite)
        fold(sqlite_catalog.fold_store(lite), events, 0)
        found_lite = [r[0] for r in sqlite_catalog.list_models(lite, words=words, tags={}, file=None, alias=None,
                                                               include_deleted=True, limit=None)]
    finally:
        lite.close()
    from projections import postgres as pg

    with pg_catalog.transaction(force_rollback=True):
        fold(pg.fold_store(pg_catalog), events, 0)
        found_pg = [r[0] for r in pg.list_models(pg_catalog, words=words, tags={}, file=None, alias=None,
                                                 include_deleted=True, limit=None)]
    assert found_lite == expected
    assert found_pg == expected


model_names = st.sampled_from(["m0", "resnet-50", "team/vision-net", "bert.v2"])
word_pool = st.sampled_from(["m0", "resnet", "50", "team", "vision", "net", "bert", "v2", "gpu", "prod", "x"])
few_words = st.lists(word_pool, min_size=1, max_size=3).map(" ".join)


def _version_events(docs: list[tuple[str, tuple[str, dict], tuple[str, dict]]]) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    for name, (description, tags), (v_description, v_tags) in docs:
        out.append(StoredEvent(len(out) + 1, f"model-{name}", 1, "ModelRegistered", 1,
                               {"name": name, "description": description, "tags": tags}, {}, "2026-01-01T00:00:00Z", "h"))
        out.append(StoredEvent(len(out) + 1, f"model-{name}", 2, "VersionRegistered", 1,
                               {"name": name, "version": 1, "parent": None, "description": v_description,
                                "params": {}, "structure": {}, "optimizer": {}, "tags": v_tags, "status": "pending",
                                "artifact": {}}, {}, "2026-01-01T00:00:00Z", "h"))
    return out


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.dictionaries(model_names, st.tuples(
           st.tuples(few_words | texts, st.dictionaries(st.sampled_from(["k", "env"]), few_words, max_size=2)),
           st.tuples(few_words | texts, st.dictionaries(st.sampled_from(["k", "env"]), few_words, max_size=2))),
           min_size=1, max_size=4),
       query=few_words | texts)
@example(docs={"resnet-50": (("", {}), ("nightly", {"env": "gpu"}))}, query="resnet gpu")
@example(docs={"resnet-50": (("", {"env": "prod"}), ("nightly", {"env": "gpu"}))}, query="prod gpu")
@example(docs={"team/vision-net": (("", {}), ("", {}))}, query="vision net")
def test_a_version_search_finds_the_same_in_sqlite_postgresql_and_the_rule(pg_catalog, docs, query):
    """Versions are indexed by their own words and their model's name apart (``version_index_tokens``); a
    search still finds a model (``list``) or a version (``search``) exactly when every word begins a token of
    the model, or of the version — name, description, tags — as the Python rule says, on both dialects."""
    if not query.replace('"', " ").split():
        return
    words = query_words(query)
    ordered = sorted(docs.items())
    events = _version_events([(name, model, version) for name, (model, version) in ordered])

    def model_hit(name, model):
        return matches(words, entity_tokens(name, *model))

    def version_hit(name, version):
        return matches(words, entity_tokens(name, *version))

    want_models = [name for name, (model, version) in ordered if model_hit(name, model) or version_hit(name, version)]
    want_versions = [(name, 1) for name, (model, version) in ordered
                     if model_hit(name, model) or version_hit(name, version)]
    from projections import postgres as pg

    lite = sqlite3.connect(":memory:", isolation_level=None)
    try:
        lite.execute("BEGIN")
        sqlite_catalog.create(lite)
        fold(sqlite_catalog.fold_store(lite), events, 0)
        got_lite = ([r[0] for r in sqlite_catalog.list_models(lite, words=words, tags={}, file=None, alias=None,
                                                              include_deleted=True, limit=None)],
                    [(r[0], r[1]) for r in sqlite_catalog.search_versions(lite, words=words, name=None, tags={},
                                                                          file=None, alias=None, limit=None)])
    finally:
        lite.close()
    with pg_catalog.transaction(force_rollback=True):
        fold(pg.fold_store(pg_catalog), events, 0)
        got_pg = ([r[0] for r in pg.list_models(pg_catalog, words=words, tags={}, file=None, alias=None,
                                                 include_deleted=True, limit=None)],
                  [(r[0], r[1]) for r in pg.search_versions(pg_catalog, words=words, name=None, tags={}, file=None,
                                                             alias=None, limit=None)])
    assert got_lite == (want_models, want_versions)
    assert got_pg == (want_models, want_versions)


def test_tokens_keep_dots_underscores_and_dashes_and_fold_case_and_accents():
    assert split("ResNet-50 v1.2 my_model Café ÅNGSTRÖM") == ["resnet-50", "v1.2", "my_model", "cafe", "angstrom"]
    assert matches(query_words("resn v1 my_ caf"), split("ResNet-50 v1.2 my_model Café"))
    assert not matches(query_words("resnet 50"), split("ResNet-50"))  # "50" begins no token
    assert query_words("*") == [] and not matches([], ["x"])  # a query with no token matches nothing


# -- PostgreSQL: what only it needs ------------------------------------------------------------------------

@pytest.fixture
def pg_registry(tmp_path, monkeypatch, make_artifact, shared_postgres_database):
    require_postgres()
    backend = PostgresBackend(monkeypatch, shared_postgres_database)
    reg = backend.open(tmp_path / "home", actor="tester@test", artifacts=str(tmp_path / "blobs"))
    try:
        yield reg, backend
    finally:
        reg.close()
        backend.drop_all()


def test_audit_of_a_postgresql_catalog_replays_the_log_and_names_a_hand_edited_row(pg_registry, make_artifact):
    import psycopg

    reg, backend = pg_registry
    v1 = reg.register("resnet", artifact=str(make_artifact("m1.bin", b"one")), params={"lr": 0.1},
                      tags={"task": "vision"})
    v2 = reg.update(v1, params={"lr": 0.01})
    reg.metrics(v2, acc=0.93)
    reg.alias(v2, "production")
    report = reg.audit()
    assert report.ok, report.to_json()
    assert "equals the replay" in report.check("replay").detail
    with psycopg.connect(backend.url(reg.config.home), autocommit=True) as conn:
        conn.execute("UPDATE versions SET params = '{\"lr\": 0.5}' WHERE name = 'resnet' AND version = 2")
    replay = reg.audit().check("replay")
    assert not replay.ok and replay.position == v2.position
    assert '"lr":0.5' in replay.detail and '"lr":0.01' in replay.detail


def test_a_nul_in_a_description_or_a_parameter_does_not_stop_the_postgresql_catalog(pg_registry, make_artifact):
    """PostgreSQL's text and jsonb cannot hold NUL; the log can. The catalog shows U+FFFD in its place."""
    reg, _ = pg_registry
    v = reg.register("m", artifact=str(make_artifact("m.bin", b"x")), description="a\x00b",
                     params={"k": "c\x00d", "\\u0000": "e"})
    got = reg.get(v.ref)
    assert got.description == "a\ufffdb"
    assert got.params == {"k": "c\ufffdd", "\\u0000": "e"}  # an escaped backslash before u0000 is kept
    assert [m.name for m in reg.models(search="a")] == ["m"]


def test_a_postgresql_role_that_can_only_select_reads_and_audits_but_never_serves_a_stale_catalog(
        pg_registry, make_artifact, tmp_path):
    import uuid

    import psycopg
    from psycopg import sql as pgsql
    from psycopg.conninfo import make_conninfo

    from eventstore.errors import StoreError
    from eventstore.events import NewEvent
    from eventstore.postgres import PostgresRecorder
    from projections.catalog import Catalog, CatalogProjection

    reg, backend = pg_registry
    v = reg.register("m", artifact=str(make_artifact("m.bin", b"x")), tags={"team": "vision"})
    reg.metrics(v, acc=0.5)
    owner_url = backend.url(reg.config.home)
    role = f"mledger_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role)))
        # The registry's own schema (the run's database holds one per test registry).
        schema = pgsql.Identifier(conn.execute("SELECT current_schema()").fetchone()[0])
        conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, pgsql.Identifier(role)))
        conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, pgsql.Identifier(role)))
    recorder = PostgresRecorder(make_conninfo(owner_url, user=role))
    try:
        catalog = Catalog(CatalogProjection(recorder))  # opening a current catalog writes nothing
        assert catalog.get("m").metrics == {"acc": 0.5}
        assert [m.name for m in catalog.list(search="vision")] == ["m"]
        assert catalog.at(1).model("m").version_count == 0
        assert catalog.digest() == reg.catalog().digest()
        from projections.audit import audit

        report = audit(recorder, blob_exists=lambda digest: True)
        assert report.ok, report.to_json()
        # The log grows without its projection (an import): the reader cannot fold it, and says so.
        reg.recorder.append([NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"k": "v"}})])
        with pytest.raises(StoreError, match=r"1 event\(s\) behind the log .*not answering from a stale catalog"):
            catalog.get("m")
        assert reg.get("m").tags == {"team": "vision", "k": "v"}  # a writer brings it level...
        assert catalog.get("m").tags == {"team": "vision", "k": "v"}  # ...and the reader answers again
    finally:
        recorder.close()
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP OWNED BY {}").format(pgsql.Identifier(role)))
            conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_a_catalog_schema_upgrade_folds_beside_without_the_write_lock_then_swaps(catalog_backend, tmp_path,
                                                                                 monkeypatch, make_artifact):
    """The stored catalog is of another shape: the new one is folded page by page beside it while other writers
    append (each page, a writer takes the lock and appends: it would wait out its timeout if the build held
    it), then the tail is folded in and the tables swapped; the result equals a rebuild from the log."""
    import importlib

    import projections.catalog as catalog_module
    from eventstore.events import NewEvent

    monkeypatch.setattr(catalog_module, "PAGE", 200)
    home = tmp_path / "home"
    reg = catalog_backend.open(home, actor="tester@test", artifacts=str(tmp_path / "blobs"))
    reg.register("m", artifact=str(make_artifact("m.bin", b"x")))
    reg.recorder.append([NewEvent("model-m", "Tagged", {"name": "m", "version": 1, "tags": {"k": str(i)}})
                         for i in range(1_000)])
    reg.get("m")  # the stored catalog is current...
    sql = reg.projection.sql
    with reg.recorder.write() as tx:  # ...and then of another shape (as an older modelledger left it)
        conn = sql.connection_of(tx)
        update = "UPDATE projection_checkpoint SET position = position + 100 WHERE name = 'schema'"
        conn.execute(update)
    other = type(reg.recorder)(reg.recorder.path if sql.NAME == "sqlite" else reg.recorder.url)
    pages: list[int] = []
    side = importlib.import_module(sql.__name__ + ".beside").Beside
    side_fold = side.fold

    def fold_and_let_a_writer_in(self, events, position):
        # Another writer appends meanwhile: the build holds no lock (its events are the tail, folded at the swap).
        other.append([NewEvent("model-m", "Tagged", {"name": "m", "tags": {"during": str(len(pages))}})])
        pages.append(position)
        return side_fold(self, events, position)

    monkeypatch.setattr(side, "fold", fold_and_let_a_writer_in)
    reg.close()
    try:
        reg = catalog_backend.open(home, actor="tester@test", artifacts=str(tmp_path / "blobs"))
        assert len(pages) >= 4, pages  # folded beside, a page at a time, with writers in between
        assert reg.projection.lag() == 0
        assert reg.model("m").tags == {"during": str(len(pages) - 1)}
        assert reg.get("m").tags["k"] == "999"
        upgraded = reg.catalog().digest()
        reg.rebuild_projections()
        assert reg.catalog().digest() == upgraded
    finally:
        other.close()
        reg.close()
