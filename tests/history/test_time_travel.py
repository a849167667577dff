"""Time travel: for every position P of a random log, ``reg.catalog(as_of=P)`` answers exactly what a fresh
registry holding only the first P events (copied byte for byte) answers — models, versions, references
(and the kind of error when a reference does not resolve), list filters and ``best``."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from command_support import (
    ALIASES,
    EVERY_KIND,
    NAMES,
    Runner,
    assert_exercised,
    command_strategies,
    leaf,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from services import examples

from eventstore.errors import ModelLedgerError
from eventstore.sqlite import SQLiteRecorder
from projections.catalog import Catalog, CatalogProjection

CONTENTS = [b"weights zero\n", b"weights one\n", b"weights two\n"]
DESCRIPTIONS = ["", "resnet vision", "bert nlp"]
TAG_KEYS = ["k1", "env"]
TAG_VALUES = ["x", "prod", "gpu-a100"]
METRIC_VALUES = [0.5, 0.9, 0.25]
# Words and filters asked of both catalogs (punctuation and accents are covered by the tests at the end).
SEARCH_WORDS = ["a", "team", "c", "vision", "nlp", "prod", "gpu", "k1", "x", "res", "b"]
TAG_FILTERS = [{"env": "prod"}, {"k1": "x"}, {"env": "gpu-a100"}, {"k1": "prod", "env": "x"}]
FILE_FILTERS = ["w0.bin", "w1.bin", "w2.bin", "nosuch.bin"]
REFS = ["{n}", "{n}@latest", "{n}@prod", "{n}@stage", "{n}@1", "{n}@2", "{n}@3", "{n}@4", "{n}@9"]

patches = st.dictionaries(st.sampled_from(["lr", "wd", "nested"]),
                          st.one_of(leaf, st.dictionaries(st.sampled_from(["p", "q"]), leaf, max_size=2)),
                          max_size=2)
contents = st.integers(0, len(CONTENTS) - 1)

commands = st.one_of(command_strategies(
    contents, patches, st.sampled_from(DESCRIPTIONS),
    st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES), max_size=1),
    TAG_KEYS, TAG_VALUES, METRIC_VALUES))


def answer(call) -> Any:
    """What a query answers: its JSON, or the kind of error it raised."""
    try:
        result = call()
    except ModelLedgerError as exc:
        return ("error", type(exc).__name__)
    if isinstance(result, list):
        return [r.to_json() for r in result]
    return result.to_json()


def names_of(call) -> Any:
    try:
        return [m.name for m in call()]
    except ModelLedgerError as exc:
        return ("error", type(exc).__name__)


def observations(cat) -> dict[str, Any]:
    """Everything compared between the two catalogs at one position."""
    out: dict[str, Any] = {
        "list_all": answer(lambda: cat.list(include_deleted=True)),
        "list_live": answer(lambda: cat.list()),
    }
    for name in NAMES:
        out[f"model {name}"] = answer(lambda name=name: cat.model(name))
        out[f"best {name}"] = answer(lambda name=name: cat.best(name, "acc"))
        for pattern in REFS:
            ref = pattern.format(n=name)
            out[f"get {ref}"] = answer(lambda ref=ref: cat.get(ref))
    for word in SEARCH_WORDS:
        out[f"search {word}"] = names_of(lambda word=word: cat.list(search=word, include_deleted=True))
        out[f"search live {word}"] = names_of(lambda word=word: cat.list(search=word))
    for tags in TAG_FILTERS:
        out[f"tags {tags}"] = names_of(lambda tags=tags: cat.list(tags=tags, include_deleted=True))
    for file in FILE_FILTERS:
        out[f"file {file}"] = names_of(lambda file=file: cat.list(file=file))
    for alias in ALIASES:
        out[f"alias {alias}"] = names_of(lambda alias=alias: cat.list(alias=alias, include_deleted=True))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Artifact files, and an empty registry database to copy for every fresh replica."""
    from modelledger import Registry

    base = tmp_path_factory.mktemp("timetravel")
    files = []
    for i, content in enumerate(CONTENTS):
        path = base / f"w{i}.bin"
        path.write_bytes(content)
        files.append(str(path))
    Registry.open(base / "template", actor="hypothesis", artifacts=str(base / "blobs")).close()
    template = base / "template" / "registry.db"
    assert not Path(str(template) + "-wal").exists() or Path(str(template) + "-wal").stat().st_size == 0
    return base, files, template


def fold_of_prefix(template: Path, source_db: Path, position: int, dest: Path):
    """A fresh registry database holding exactly the first ``position`` events of ``source_db``, byte for
    byte; its catalog is folded from nothing by the first read. Returns (catalog, recorder)."""
    shutil.copyfile(template, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(source_db),))
        conn.execute("INSERT INTO main.events SELECT * FROM src.events WHERE position <= ?", (position,))
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    recorder = SQLiteRecorder(dest)
    return Catalog(CatalogProjection(recorder)), recorder


def test_the_catalog_as_of_every_position_equals_the_fold_of_that_prefix(workdir):
    from modelledger import Registry

    base, files, template = workdir
    tally: Counter = Counter()

    @settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=st.lists(commands, min_size=1, max_size=12))
    @example(sequence=EVERY_KIND)
    def prop(sequence):
        home = Path(tempfile.mkdtemp(dir=base))
        try:
            with Registry.open(home, actor="hypothesis", artifacts=str(home / "blobs")) as reg:
                runner = Runner(reg, files, tally)
                runner.setup()
                # The positions of SETUP are the same in every example: checked in the explicit one only.
                start = 0 if sequence == EVERY_KIND else reg.head()
                for command in sequence:
                    runner.run(command)
                head = reg.head()
                for position in range(start, head + 1):
                    past = reg.catalog(as_of=position)
                    assert past.position == position
                    fold, recorder = fold_of_prefix(template, home / "registry.db", position,
                                                    home / f"fold-{position}.db")
                    try:
                        assert recorder.head() == position
                        want = observations(fold)
                    finally:
                        recorder.close()
                    got = observations(past)
                    for key in want:
                        assert got[key] == want[key], f"as of #{position} (head #{head}): {key}"
                # And the same through the other spellings of a position.
                assert observations(reg.catalog(as_of=f"#{head}")) == observations(reg.catalog(as_of=head))
        finally:
            shutil.rmtree(home, ignore_errors=True)

    prop()
    assert_exercised(tally)


# -- known differences between the past catalog and the present one (found while writing the above) ---------

@pytest.fixture
def deleted_model(reg, artifact):
    """``m`` with version 1 (aliased prod) and version 2 deleted; then the whole model deleted."""
    reg.register("m", str(artifact))
    reg.update("m@1", params={"lr": 1})
    reg.alias("m@1", "prod")
    reg.delete("m@2")
    reg.delete("m")
    return reg


@pytest.mark.parametrize("ref", ["m@stage", "n", "n@latest"])
def test_a_ref_of_a_deleted_model_is_the_same_error_now_and_at_the_head(deleted_model, artifact, ref):
    from eventstore.errors import ConflictError

    deleted_model.register("n", str(artifact))
    deleted_model.delete("n@1")
    deleted_model.delete("n")
    with pytest.raises(ConflictError):
        deleted_model.catalog().get(ref)
    with pytest.raises(ConflictError):
        deleted_model.catalog(as_of=deleted_model.head()).get(ref)


def test_a_known_alias_and_the_bare_name_of_a_deleted_model_agree(deleted_model):
    from eventstore.errors import ConflictError

    for ref in ("m", "m@prod", "m@latest"):
        now_kind = past_kind = None
        try:
            deleted_model.catalog().get(ref)
        except ModelLedgerError as exc:
            now_kind = type(exc)
        try:
            deleted_model.catalog(as_of=deleted_model.head()).get(ref)
        except ModelLedgerError as exc:
            past_kind = type(exc)
        assert now_kind is past_kind is ConflictError, ref
    # An explicit number still finds a version of a deleted model, then and now.
    assert deleted_model.catalog().get("m@2").to_json() == deleted_model.catalog(as_of=deleted_model.head()).get(
        "m@2").to_json()


def test_search_splits_words_on_punctuation_in_the_past_as_it_does_now(reg, artifact):
    reg.register("m", str(artifact), tags={"owner": "ann,bob"})
    assert [m.name for m in reg.catalog().list(search="bob")] == ["m"]
    assert [m.name for m in reg.catalog(as_of=reg.head()).list(search="bob")] == ["m"]


def test_search_folds_accents_in_the_past_as_it_does_now(reg, artifact):
    reg.register("m", str(artifact), description="café model")
    assert [m.name for m in reg.catalog().list(search="cafe")] == ["m"]
    assert [m.name for m in reg.catalog(as_of=reg.head()).list(search="cafe")] == ["m"]
