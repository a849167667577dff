"""Random command sequences (valid and invalid) through the Registry: refusals append nothing, the
incrementally maintained catalog always equals a replay of the log (its tables and its full-text index), the
chain verifies, and the catalog keeps its invariants (latest = highest live version, aliases point at live
versions, params follow RFC 7386). Besides the commands with bad inputs below, the sequences carry those of
``command_support``: gc, restore, imports through ``append_batch``, retry, idempotency keys, structure,
optimizer and artifact updates."""

from __future__ import annotations

import copy
import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from command_support import (
    EVERY_KIND,
    LEGAL_REFUSALS,
    Runner,
    assert_exercised,
    command_strategies,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from services import examples

from eventstore.verify import verify_rows
from projections.dialects import dialect_of
from projections.search import entity_tokens, version_index_tokens

NAMES = ["a", "b", "team/c"]
BAD_NAMES = ["", "../x", "a b", "x/", "-a"]
ALIASES = ["prod", "stage"]
BAD_ALIASES = ["latest", "123", "Prod", ""]
TAG_KEYS = ["k1", "k2", "env"]
BAD_TAG_KEYS = ["bad key", "", "k=v"]


def merge_patch(target, patch):
    """RFC 7386, written here independently of the product's implementation."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


names = st.sampled_from(NAMES)
refs = st.one_of(
    names,
    st.tuples(names, st.integers(1, 5)).map(lambda t: f"{t[0]}@{t[1]}"),
    st.tuples(names, st.sampled_from([*ALIASES, "nosuch", "latest"])).map(lambda t: f"{t[0]}@{t[1]}"),
)
json_leaf = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", "y"]), st.booleans())
patches = st.dictionaries(st.sampled_from(["lr", "wd", "nested"]),
                          st.one_of(json_leaf, st.dictionaries(st.sampled_from(["p", "q"]), json_leaf, max_size=2)),
                          max_size=3)
metric_values = st.one_of(st.floats(-10, 10, allow_nan=False), st.integers(0, 5),
                          st.sampled_from([float("nan"), float("inf")]))

ops = [
    st.tuples(st.just("register"), st.one_of(names, st.sampled_from(BAD_NAMES)), patches.filter(
        lambda p: all(v is not None for v in p.values()))),
    st.tuples(st.just("update"), refs, st.one_of(st.none(), patches), st.one_of(st.none(), patches), st.booleans()),
    st.tuples(st.just("tag"), refs, st.sampled_from(TAG_KEYS + BAD_TAG_KEYS), st.sampled_from(["1", "2"])),
    st.tuples(st.just("untag"), refs, st.sampled_from(TAG_KEYS)),
    st.tuples(st.just("metrics"), refs, st.sampled_from(["acc", "loss"]), metric_values),
    st.tuples(st.just("alias"), refs, st.sampled_from(ALIASES + BAD_ALIASES)),
    st.tuples(st.just("unalias"), names, st.sampled_from(ALIASES)),
    st.tuples(st.just("rollback"), names, st.sampled_from(ALIASES)),
    st.tuples(st.just("delete"), refs),
    st.tuples(st.just("undelete"), refs),
]
# The commands of command_support, named with a "+" so that `apply` hands them to its Runner.
more = [s.map(lambda op: ("+", op)) for s in command_strategies(
    st.integers(0, 2), patches.filter(lambda p: all(v is not None for v in p.values())), st.sampled_from(["", "d"]),
    st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(["1", "2"]), max_size=1), TAG_KEYS, ["1", "2"],
    [0.5, 2.0])]
SEARCH_WORDS = ["a", "b", "team", "c", "d", "k1", "env", "1", "imported", "nosuch"]


def must_refuse(op: tuple) -> bool:
    """Inputs that are wrong whatever the state."""
    kind = op[0]
    if kind == "register":
        return op[1] in BAD_NAMES
    if kind == "update":
        return op[2] is None and op[3] is None
    if kind == "tag":
        return op[2] in BAD_TAG_KEYS
    if kind == "metrics":
        return isinstance(op[3], float) and (op[3] != op[3] or op[3] in (float("inf"), float("-inf")))
    if kind == "alias":
        return op[2] in BAD_ALIASES
    return False


def apply(reg, runner: Runner, artifact: str, op: tuple):
    kind = op[0]
    if kind == "+":
        return runner.run(op[1])
    if kind == "register":
        return reg.register(op[1], artifact, params=op[2])
    if kind == "update":
        return reg.update(op[1], params=op[2], structure=op[3], structure_patch=op[4])
    if kind == "tag":
        return reg.tag(op[1], {op[2]: op[3]})
    if kind == "untag":
        return reg.untag(op[1], op[2])
    if kind == "metrics":
        return reg.metrics(op[1], {op[2]: op[3]})
    if kind == "alias":
        return reg.alias(op[1], op[2])
    if kind == "unalias":
        return reg.unalias(op[1], op[2])
    if kind == "rollback":
        return reg.rollback(op[1], op[2])
    if kind == "delete":
        return reg.delete(op[1])
    return reg.undelete(op[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("props")
    files = []
    for i in range(3):
        art = base / f"tiny{i}.bin"
        art.write_bytes(b"tiny %d" % i)
        files.append(str(art))
    return base, files


def check_invariants(reg) -> None:
    for m in reg.catalog().list(include_deleted=True):
        model = reg.model(m.name)
        numbers = [v.version for v in model.versions]
        assert numbers == list(range(1, len(numbers) + 1))
        live = [v.version for v in model.versions if not v.deleted]
        assert model.latest == (max(live) if live else None)
        for alias, number in model.aliases.items():
            assert number in live, f"{m.name}@{alias} points at deleted/missing version {number}"
        for v in model.versions:
            assert set(v.aliases) == {a for a, n in model.aliases.items() if n == v.version}


def search_answers(reg) -> dict[str, list[str]]:
    """What the full-text index answers (it lies outside the catalog's digest)."""
    cat = reg.catalog()
    out = {}
    for word in SEARCH_WORDS:
        out[f"models {word}"] = [m.name for m in cat.list(search=word, include_deleted=True)]
        out[f"live {word}"] = [m.name for m in cat.list(search=word)]
    return out


def assert_search_index_matches_its_tables(reg) -> None:
    """The search index holds exactly the tokens of every model's name, description and tags, and of every
    version's (its model's name marked apart: ``version_index_tokens``), on any backend: an index the fold forgot to rewrite fails here."""
    want = []
    for m in reg.catalog().list(include_deleted=True):
        model = reg.model(m.name)
        want.append((m.name, 0, entity_tokens(m.name, m.description, m.tags)))
        want += [(v.name, v.version, version_index_tokens(v.name, v.description, v.tags)) for v in model.versions]
    with reg.recorder.read_snapshot() as conn:
        have = list(dialect_of(conn).words_rows(conn))
    assert sorted(have) == sorted(want)
    if reg.recorder.dialect == "sqlite":
        assert_fts_matches_its_tables(reg.config.db_path)


def assert_fts_matches_its_tables(db_path: Path) -> None:
    """SQLite's full-text indexes hold exactly what their word tables say (FTS5's own check against the
    external content): an index kept by a trigger that misses a change fails here."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for table, check in (
                ("models_fts", "INSERT INTO models_fts(models_fts, rank) VALUES ('integrity-check', 1)"),
                ("versions_fts", "INSERT INTO versions_fts(versions_fts, rank) VALUES ('integrity-check', 1)")):
            try:
                conn.execute(check)
            except sqlite3.DatabaseError as exc:
                raise AssertionError(f"{table} differs from its table: {exc}") from None
    finally:
        conn.close()


@pytest.mark.timeout(1800)  # the PostgreSQL line makes a database per example
def test_random_command_sequences_keep_the_catalog_equal_to_a_replay(workdir, catalog_backend):
    tally: Counter = Counter()

    # Every command is a round trip to the server on PostgreSQL: fewer examples there, the same laws.
    @settings(max_examples=examples(60 if catalog_backend.name == "sqlite" else 20), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=st.lists(st.one_of(*ops, *more), min_size=1, max_size=30))
    @example(sequence=[("+", command) for command in EVERY_KIND])
    def prop(sequence):
        check_against_a_replay(workdir, sequence, tally, catalog_backend)

    prop()
    assert_exercised(tally)


def check_against_a_replay(workdir, sequence, tally: Counter, backend) -> None:
    base, files = workdir
    artifact = files[0]
    home = Path(tempfile.mkdtemp(dir=base))
    reg = backend.open(home, actor="hypothesis", artifacts=str(home / "blobs"))
    try:
        runner = Runner(reg, files, tally)
        runner.setup()  # so most sequences have something to act on
        for op in sequence:
            head = reg.recorder.head()
            try:
                result = apply(reg, runner, artifact, op)
            except LEGAL_REFUSALS:
                assert reg.recorder.head() == head, f"refused {op} but appended events"
                continue
            if op[0] == "+":
                continue  # the Runner checked it
            if reg.recorder.head() > head:
                tally[op[0]] += 1
            assert not must_refuse(op), f"{op} should have been refused"
            if op[0] == "update":
                parent = reg.get(f"{result.name}@{result.parent}")
                want = merge_patch(parent.params, op[2]) if op[2] is not None else parent.params
                assert result.params == want
                if op[3] is not None:
                    want_s = merge_patch(parent.structure, op[3]) if op[4] else op[3]
                    assert result.structure == want_s
        check_invariants(reg)
        report = verify_rows(reg.recorder.raw_rows())
        assert report.ok, report
        live = reg.catalog().digest()
        models = [m.to_json() for m in reg.catalog().list(include_deleted=True)]
        found = search_answers(reg)
        assert_search_index_matches_its_tables(reg)
        reg.rebuild_projections()
        assert reg.catalog().digest() == live
        assert [m.to_json() for m in reg.catalog().list(include_deleted=True)] == models
        assert search_answers(reg) == found
        assert_search_index_matches_its_tables(reg)
    finally:
        reg.close()
        backend.drop_all()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(1800)
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(st.one_of(*ops, *more), min_size=1, max_size=15), cut=st.integers(0, 100))
@example(sequence=[("+", command) for command in EVERY_KIND], cut=len(EVERY_KIND) // 2)
def test_replaying_a_prefix_of_the_log_gives_the_catalog_at_that_point(workdir, catalog_backend, sequence, cut):
    """The catalog after N commands equals a fresh registry built from the first events of the log, and
    equals the catalog as of that position (the temporal tables)."""
    backend = catalog_backend
    base, files = workdir
    home = Path(tempfile.mkdtemp(dir=base))
    copy_home = Path(tempfile.mkdtemp(dir=base))
    try:
        with backend.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
            runner = Runner(reg, files)
            runner.setup()
            digests = {reg.head(): reg.catalog().digest()}
            for op in sequence:
                try:
                    apply(reg, runner, files[0], op)
                except LEGAL_REFUSALS:
                    pass
                digests[reg.head()] = reg.catalog().digest()
            heads = sorted(digests)
            at = heads[cut % len(heads)]
            past = past_answers(reg.catalog(as_of=at))
            # A registry holding exactly the first `at` events, copied byte for byte; its catalog is built
            # from nothing by the first read.
            with backend.open(copy_home, actor="hypothesis", artifacts=str(home / "blobs")) as replica:
                backend.copy_prefix(reg, replica, at)
        with backend.open(copy_home, actor="hypothesis", artifacts=str(home / "blobs")) as replica:
            assert replica.head() == at
            assert replica.catalog().digest() == digests[at]
            assert past_answers(replica.catalog()) == past, "the catalog as of P differs from a fold of P events"
    finally:
        backend.drop_all()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(copy_home, ignore_errors=True)


def past_answers(cat) -> dict:
    """What a catalog (present or as of a position) answers: every model with its versions, the searches."""
    out: dict = {"models": [cat.model(m.name).to_json() for m in cat.list(include_deleted=True)]}
    for word in SEARCH_WORDS:
        out[f"models {word}"] = [m.name for m in cat.list(search=word, include_deleted=True)]
        out[f"versions {word}"] = [v.ref for v in cat.search(keyword=word)]
    return out
