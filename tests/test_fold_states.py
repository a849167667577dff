"""The fold encodes a model's and a version's temporal state from cached pieces (``projections.projector``):
whatever the handlers change between two events, in place (a model's aliases) or by replacing a dict (tags,
metrics, artifact), the state text is byte for byte ``canonical_json`` of the whole state, as before the cache.
A stale piece would put a wrong past into ``model_states`` / ``version_states`` — what ``--as-of`` answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.canonical import canonical_json
from projections.projector import ModelRow, VersionRow

TEXT = st.text(max_size=6)
TAGS = st.dictionaries(st.sampled_from(["a", "b", "é", "k\"q"]), TEXT, max_size=3)
METRICS = st.dictionaries(st.sampled_from(["acc", "loss"]), st.integers(-3, 3) | st.floats(-2, 2), max_size=2)
NUMBER = st.integers(0, 2**63 - 1)

MODEL_STEP = st.one_of(
    st.tuples(st.just("tags"), TAGS),
    st.tuples(st.just("alias"), st.sampled_from(["prod", "dev"]), st.integers(1, 9)),
    st.tuples(st.just("unalias"), st.sampled_from(["prod", "dev"])),
    st.tuples(st.just("version"), st.integers(1, 50)),
    st.tuples(st.just("deleted"), st.sampled_from([0, 1])),
    st.tuples(st.just("latest"), st.none() | st.integers(1, 50)),
    st.tuples(st.just("touch"), NUMBER, TEXT),
)


def _model_state(m: ModelRow) -> str:
    return canonical_json([m.stream_version, m.description, m.tags, m.deleted, m.latest, m.last_version,
                           m.created_at, m.created_by, m.updated_at, m.version_count, m.aliases])


@settings(max_examples=200, deadline=None)
@given(TEXT, TAGS, st.lists(MODEL_STEP, max_size=12))
def test_model_state_is_canonical_json_after_any_changes(description: str, tags: dict, steps: list) -> None:
    m = ModelRow(("m", 1, description, tags, 0, None, 0, "2026-01-01T00:00:00Z", "ann", "2026-01-01T00:00:00Z", 0,
                  None), {})
    assert m.state() == _model_state(m)
    for step in steps:
        kind = step[0]
        if kind == "tags":
            m.tags = dict(step[1])  # the handlers replace a model's tags, never change them in place
        elif kind == "alias":
            m.aliases[step[1]] = step[2]  # ... but change its aliases in place
        elif kind == "unalias":
            m.aliases.pop(step[1], None)
        elif kind == "version":
            m.last_version = max(m.last_version, step[1])
            m.version_count += 1
        elif kind == "deleted":
            m.deleted = step[1]
        elif kind == "latest":
            m.latest = step[1]
        else:
            m.stream_version, m.updated_at = step[1], step[2]
        assert m.state() == _model_state(m)
        assert m.values()[3] == canonical_json(m.tags) and m.mutable()[1] == canonical_json(m.tags)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tags", "metrics", "artifact", "status", "deleted", "description"]), TAGS, METRICS,
                          TEXT), max_size=10))
def test_version_state_and_columns_are_canonical_json(steps: list) -> None:
    v = VersionRow(("m", 1, None, "pending", 0, "", {}, {}, {}, {}, {}, {"source": "s"}, "t", "ann", 1, None, 1),
                   new=True)
    for kind, tags, metrics, text in steps:
        if kind == "tags":
            v.tags = dict(tags)
        elif kind == "metrics":
            v.metrics = {**v.metrics, **metrics}
        elif kind == "artifact":
            v.artifact = {**v.artifact, "digest": text}
        elif kind == "status":
            v.status = text
        elif kind == "description":
            v.description = text
        else:
            v.deleted = 1 - v.deleted
        assert v.state() == canonical_json([v.status, v.deleted, v.tags, v.metrics, v.description])
        assert v.mutable()[2:5] == (canonical_json(v.tags), canonical_json(v.metrics), canonical_json(v.artifact))
        assert v.artifact_json() == canonical_json(v.artifact)
