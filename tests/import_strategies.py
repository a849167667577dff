"""Events as an importer could hand them to ``Registry.append_batch``: for every event type, data in its
documented shape (``docs/events.md``), then, often, one field replaced by a hostile value, dropped, or joined
by an unknown key; meta and envelope sometimes hostile too. Shared by ``test_imports.py`` and the projector
fuzz (``reliability/test_rel_fuzz.py``).

The values are written from the event reference, not from ``eventstore.schemas``: whether an event is
accepted is the product's decision, and the properties check what follows from it either way.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st

from eventstore.events import SCHEMA_VERSIONS, TOKEN_EVENTS, NewEvent, stream_for, token_stream

NAMES = ("m", "team/m", "ghost")
ALIASES = ("prod", "staging")
TAG_KEYS = ("task", "k", "owner")
# The bytes a test registry holds (the template's artifact): imported events name a blob that exists, so
# audit's blob check has nothing to report and every failure it reports is a real one.
TEMPLATE_BYTES = b"imported weights\n"
DIGEST = "sha256:" + hashlib.sha256(TEMPLATE_BYTES).hexdigest()
SOURCE = "/nonexistent/imported/model.bin"  # never readable: nothing here makes a worker fetch bytes
VERSION_TOP = 10**12 - 1  # the highest number a reference NAME@N can name (12 digits)

EVENT_TYPES = tuple(SCHEMA_VERSIONS)
WEBHOOK_IDS = ("0" * 32, "f" * 32)


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# What an importer's bug or a hostile file could put anywhere (each was seen to break something, or is a
# boundary): integers SQLite cannot hold, wrong containers, control and bidi characters, deep nesting,
# values that are not JSON at all.
HOSTILE: tuple[Any, ...] = (
    2**63, 2**63 - 1, -(2**63) - 1, 2**64, 2**53, VERSION_TOP, VERSION_TOP + 1, 0, -1, True, False, 1.5, 1e308,
    None, "", "x" * 20_000, "\x1b[2J", "a\u202eb", "\x9b31m", "line\nbreak", {}, [], {"k": {"x": 1}}, ["x"],
    "notalist", "big", deep(70), {"a": 2**70}, ("t", "u"), {1: 2}, b"bytes", float("nan"), float("inf"),
    {"x": {1, 2}}, "sha256:" + "AB" * 32, "../../etc/passwd", [{"path": 1}], [DIGEST, 7],
)
hostile = st.sampled_from(HOSTILE)

names = st.sampled_from(NAMES)
versions = st.sampled_from((1, 2, 3, 7, VERSION_TOP))
maybe_version = st.one_of(st.none(), versions)
text = st.sampled_from(("", "imported", "a\tb", "ünïcode ✓", "x" * 300))
reasons = st.sampled_from(("", "superseded", "restore to #3"))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=3)
                          | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)
json_objects = st.dictionaries(st.text(max_size=5), json_value, max_size=4)
tag_maps = st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(("x", "y", "", "a b", "v" * 1024)),
                           min_size=1, max_size=3)
metric_values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
metric_maps = st.dictionaries(st.sampled_from(("acc", "loss")), metric_values, min_size=1, max_size=2)
files = st.lists(st.fixed_dictionaries({"path": st.sampled_from(("model.bin", "a/b.txt", "w.pt")),
                                        "digest": st.just(DIGEST), "size": st.integers(0, 2**63 - 1)}), max_size=3)
STORED_OPTIONAL = {
    "size": st.integers(0, 2**63 - 1),
    "kind": st.sampled_from(("file", "directory")),
    "format": st.sampled_from(("unknown", "pickle", "safetensors")),
    "files": files,
    "unsafe": st.booleans(),
    "imports": st.lists(st.sampled_from(("os.system", "collections.OrderedDict")), max_size=2),
    "detail": text,
    "structure": json_objects,
}
artifact_records = st.fixed_dictionaries({"source": st.just(SOURCE)},
                                         optional={"digest": st.just(DIGEST), **STORED_OPTIONAL,
                                                   "error": reasons})


def _version_created() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": names, "version": versions, "parent": maybe_version, "description": text, "params": json_objects,
         "structure": json_objects, "optimizer": json_objects, "tags": tag_maps, "artifact": artifact_records,
         "status": st.sampled_from(("pending", "ready", "purged"))},
        optional={"changes": st.lists(st.sampled_from(("params", "structure", "optimizer", "artifact",
                                                       "description")), unique=True, max_size=3),
                  "patch": st.fixed_dictionaries({}, optional={"params": json_objects, "structure": json_objects})})


SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ModelRegistered": st.fixed_dictionaries({"name": names, "description": text, "tags": tag_maps}),
    "VersionRegistered": _version_created(),
    "ParamsUpdated": _version_created(),
    "StructureUpdated": _version_created(),
    "OptimizerUpdated": _version_created(),
    "ArtifactStored": st.fixed_dictionaries({"name": names, "version": versions, "digest": st.just(DIGEST)},
                                            optional=STORED_OPTIONAL),
    "ArtifactFailed": st.fixed_dictionaries({"name": names, "version": versions, "reason": reasons}),
    "ArtifactPurged": st.fixed_dictionaries({"name": names, "version": versions,
                                             "digest": st.one_of(st.none(), st.just(DIGEST)),
                                             "blobs": st.lists(st.just(DIGEST), max_size=2)}),
    "ArtifactRequested": st.fixed_dictionaries({"name": names, "version": versions, "source": st.just(SOURCE),
                                                "expected_digest": st.one_of(st.none(), st.just(DIGEST)),
                                                "reason": reasons}),
    "MetricsRecorded": st.fixed_dictionaries({"name": names, "version": versions, "metrics": metric_maps},
                                             optional={"replace": st.booleans()}),
    "Tagged": st.fixed_dictionaries({"name": names, "version": maybe_version, "tags": tag_maps}),
    "Described": st.fixed_dictionaries({"name": names, "version": maybe_version,
                                        "description": st.sampled_from(("", "new text")),
                                        "previous": st.sampled_from(("", "old text"))}),
    "Untagged": st.fixed_dictionaries({"name": names, "version": maybe_version,
                                       "keys": st.lists(st.sampled_from(TAG_KEYS), max_size=2)}),
    "AliasAssigned": st.fixed_dictionaries({"name": names, "alias": st.sampled_from(ALIASES), "version": versions,
                                            "previous": maybe_version},
                                           optional={"rollback": st.booleans(), "restore": st.booleans()}),
    "AliasRemoved": st.fixed_dictionaries({"name": names, "alias": st.sampled_from(ALIASES), "version": versions},
                                          optional={"cause": st.just("deleted")}),
    "VersionDeleted": st.fixed_dictionaries({"name": names, "version": versions, "reason": reasons}),
    "ModelDeleted": st.fixed_dictionaries({"name": names, "reason": reasons}),
    "VersionRestored": st.fixed_dictionaries({"name": names, "version": versions}),
    "ModelRestored": st.fixed_dictionaries({"name": names}),
    # Access tokens (eventstore/access.py): ``token`` instead of ``name``, on the stream token-<token>.
    "TokenGranted": st.fixed_dictionaries({"token": st.sampled_from(("ci", "alice")),
                                           "role": st.sampled_from(("reader", "writer", "admin")),
                                           "prefix": st.sampled_from(("", "team/")),
                                           "expires_at": st.sampled_from((None, "2030-01-01T00:00:00.000000Z")),
                                           "secret_sha256": st.just("ab" * 32)}),
    "TokenRevoked": st.fixed_dictionaries({"token": st.sampled_from(("ci", "alice")), "reason": reasons}),
    # Webhook subscriptions (eventstore/webhooks.py): ``webhook`` (an id) on the stream webhook-<id>.
    "WebhookCreated": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS),
                                             "webhook_name": st.sampled_from(("ci", "audit")),
                                             "url": st.just("http://127.0.0.1:9/hook"),
                                             "events": st.just(["model_version.created"]),
                                             "description": st.just(""), "secret_sha256": st.just("cd" * 32),
                                             "since": st.integers(0, 10)}),
    "WebhookUpdated": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS)},
                                            optional={"status": st.sampled_from(("ACTIVE", "DISABLED"))}),
    "WebhookDeleted": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS)}),
    "WebhookDelivered": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS), "through": st.integers(1, 10),
                                               "delivered": st.integers(0, 10)}),
    "WebhookReplayed": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS), "through": st.integers(0, 10)}),
    "WebhookClaimed": st.fixed_dictionaries({"webhook": st.sampled_from(WEBHOOK_IDS),
                                             "claim": st.sampled_from(WEBHOOK_IDS),
                                             "until": st.sampled_from((0, 1_796_000_000_000)),
                                             "holder": st.sampled_from(("", "host-1:4242"))}),
}
assert set(SHAPES) == set(EVENT_TYPES)


# What replaces a node, by the type of what was there (a number by out-of-range and wrong-typed numbers, a
# text by control characters and containers, ...), or anything hostile at all.
HOSTILE_NUMBERS = (2**63, -(2**63) - 1, 2**64, 10**20, VERSION_TOP + 1, 0, -1, 1.5, True, "1", None)
HOSTILE_TEXTS = ("", "x" * 20_000, "\x1b[2J", "a\u202eb", "\x9b31m", "line\nbreak", {"x": 1}, ["x"], 7, None)
HOSTILE_CONTAINERS = ("notalist", [], {}, {"k": {"x": 1}}, ["x"], deep(70), 5, None, {1: 2}, ("t",), [{"path": 1}])


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below ``value`` (object keys, list indices), containers and leaves alike."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        out.append((*path, key))
        out += _nodes(item, (*path, key))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def hostile_for(draw: st.DrawFn, old: Any) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(hostile)
    if isinstance(old, bool | int | float):
        return draw(st.sampled_from(HOSTILE_NUMBERS))
    if isinstance(old, str):
        return draw(st.sampled_from(HOSTILE_TEXTS))
    return draw(st.sampled_from(HOSTILE_CONTAINERS))


@st.composite
def event_data(draw: st.DrawFn, event_type: str, fault: str = "any") -> dict[str, Any]:
    """Data of ``event_type`` in its documented shape, with ``fault`` (or, for "any", a random one of): none,
    one node at any depth replaced by a hostile value of its kind, a field missing, an unknown key."""
    data = dict(draw(SHAPES[event_type]))
    how = draw(st.sampled_from(FAULTS)) if fault == "any" else fault
    if how == "hostile node":
        path = draw(st.sampled_from(_nodes(data)))
        data = _replace(data, path, draw(hostile_for(_get(data, path))))
    elif how == "missing field" and data:
        del data[draw(st.sampled_from(sorted(data)))]
    elif how == "unknown key":
        data[draw(st.sampled_from(("note", "", "\x1b", "version_", "tags ")))] = draw(st.one_of(text, hostile))
    return data


FAULTS = ("none", "hostile node", "hostile node", "missing field", "unknown key")


GOOD_META = {"actor": "importer@test", "client": "migration/1.0", "correlation_id": "c-1"}
metas = st.one_of(
    st.just(GOOD_META), st.just({}),
    st.fixed_dictionaries({"actor": st.one_of(hostile, st.sampled_from(("a\u202eb", "x" * 300, "\x1b]0;x\x07")))}),
    st.just({"junk": "x" * 20_000}), st.just({f"k{i}": i for i in range(20)}),
    st.fixed_dictionaries({"restore": st.fixed_dictionaries({"id": st.just("r"), "as_of": hostile})}),
    st.fixed_dictionaries({"causation_id": hostile}), st.fixed_dictionaries({"batch": hostile}),
)


@st.composite
def imported_events(draw: st.DrawFn) -> NewEvent:
    """An event, clean about half the time; otherwise one thing is wrong with its data, its meta or its
    envelope (type, stream, schema version)."""
    fault = draw(st.sampled_from(("clean",) * 5 + ("data",) * 3 + ("meta", "envelope")))
    event_type = draw(st.sampled_from(EVENT_TYPES))
    data = draw(event_data(event_type, "any" if fault == "data" else "none"))
    name = data.get("name")
    stream = stream_for(name) if isinstance(name, str) else "model-m"
    if event_type in TOKEN_EVENTS and isinstance(data.get("token"), str):
        stream = token_stream(data["token"])
    if event_type.startswith("Webhook") and isinstance(data.get("webhook"), str):
        stream = "webhook-" + data["webhook"]
    meta: Any = GOOD_META
    schema_version: Any = None
    if fault == "meta":
        meta = draw(metas)
    elif fault == "envelope":
        what = draw(st.sampled_from(("type", "stream", "schema_version")))
        if what == "type":
            event_type = draw(st.sampled_from(("NotAType", "", "modelregistered")))
        elif what == "stream":
            stream = draw(st.sampled_from(("model-other", "m", "", "model-m\n")))
        else:
            schema_version = draw(st.sampled_from((1, 0, 2, 2**63, "1", True)))
    return NewEvent(stream, event_type, data, meta, schema_version)


batches = st.lists(imported_events(), min_size=1, max_size=3)
