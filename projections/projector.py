"""The catalog projector: folds events into the catalog, a page at a time, in any SQL dialect.

The fold itself is plain Python over a working set: before a page of events is folded, the rows it touches
(its models with their aliases, the versions it names) are read in a few set-based statements; each event
then changes those rows in memory (one small function per event type, ``HANDLERS``) and records the states
the temporal tables keep; at the end the changes are written with one ``executemany`` per table, together
with the checkpoint. So folding costs a handful of round trips per page, not several per event (what made
a catch-up of a bulk import, a rebuild and an audit's replay slow, and would be worse over a network), and
both dialects run the same fold: the same log gives the same catalog, row for row, on SQLite and PostgreSQL.
The dialect modules (``projections.sqlite``, ``projections.postgres``) only read and write rows.

``apply`` runs inside the caller's write transaction and moves the checkpoint in the same transaction as the
rows, so a crash can neither apply an event twice nor skip one.

The fold is total for every event ``eventstore.schemas`` accepts (what ``append_batch`` lets in, and what the
decider is held to): an event about a model or version the catalog does not have (possible only for imported
events, which are checked for their shape but not against history) changes nothing, the same way on every
replay; an alias may point at a deleted version, a version may be ready without bytes — odd, but every read
and command copes. So no imported event can stop the catalog from following the log. An event outside those
shapes (appended around the check) stops it with a ``StoreError`` naming the event's position; every value
is checked while the event is folded, before anything is written, so a refused page writes nothing.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eventstore.canonical import canonical_json
from eventstore.errors import StoreError
from eventstore.events import SCHEMA_VERSIONS, VERSION_CREATING, StoredEvent
from eventstore.upcast import upcast

from .dialects import dialect_of
from .search import entity_tokens, version_index_tokens

CHECKPOINT = "catalog"
INT64 = (-(2**63), 2**63 - 1)
_quote = json.encoder.encode_basestring  # json's own quoting of a str (``canonical_json`` of text is this)


def _scalar(value: Any) -> str:
    """``canonical_json`` of one value, with a short way for the two kinds every state holds (a whole number,
    text): the encoder's general path costs ~1 µs per call, and a state has several scalars per event."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)  # what json writes for an int
    if kind is str:
        return _quote(value)
    return canonical_json(value)


# -- the log as a rebuild reads it -------------------------------------------------------------------------

_scan = json.decoder.JSONDecoder().scan_once  # json.loads' own scanner (C), with json.loads' default options


def _decode(text: Any) -> Any:
    """``json.loads(text)``, the same value or the same error, for a third of the CPU on a log's rows:
    ``json.loads`` checks its argument, then ``JSONDecoder.decode`` calls ``raw_decode`` and matches the
    trailing white space with a regex — 1.6 µs per call around a 0.55 µs scan for an event's ``data``
    (``timeit``, this machine). A document the scanner alone does not take whole (white space around it, bytes,
    an error) goes to ``json.loads``."""
    if type(text) is str:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)


class LogEvent:
    """An event read straight from a row of the log's ``events`` table (``eventstore.sealing.COLUMNS`` order),
    with what the handlers read of a ``StoredEvent``: a rebuild folds every event of the log, and the
    recorder's read (a frozen dataclass per event, its ``meta`` decoded) cost 2.5x the raw read + decode
    itself (``scripts/bench_fold.py --parts``: 11.2 against 4.5 µs per event). ``data`` is upcast as the
    recorder's read upcasts it; ``meta`` (read only for a creation's actor) is decoded on first use."""

    __slots__ = ("position", "stream", "version", "type", "schema_version", "data", "recorded_at", "_meta")

    def __init__(self, position: int, stream: str, version: int, type_: str, schema_version: int,
                 data: Any, meta: str, recorded_at: str) -> None:
        self.position, self.stream, self.version, self.type = position, stream, version, type_
        self.schema_version, self.data, self._meta, self.recorded_at = schema_version, data, meta, recorded_at

    @property
    def meta(self) -> dict[str, Any]:
        if isinstance(self._meta, str):
            self._meta = _decode(self._meta)
        return self._meta


def log_events(rows: Iterable[Sequence[Any]]) -> list[LogEvent]:
    """Rows of the ``events`` table (``eventstore.sealing.COLUMNS`` order) as the fold's events."""
    decode, targets = _decode, SCHEMA_VERSIONS
    out = []
    for position, stream, version, type_, schema_version, data, meta, recorded_at, _ in rows:
        decoded = decode(data)
        if schema_version < targets.get(type_, schema_version):
            schema_version, decoded = upcast(type_, schema_version, decoded)
        out.append(LogEvent(position, stream, version, type_, schema_version, decoded, meta, recorded_at))
    return out


# -- the working set -------------------------------------------------------------------------------------

class ModelRow:
    """A ``models`` row being folded (``MODEL_FIELDS`` order in and out)."""

    __slots__ = ("name", "stream_version", "description", "tags", "deleted", "latest", "last_version",
                 "created_at", "created_by", "updated_at", "version_count", "deleted_at",
                 "new", "words", "aliases", "original_tags", "original_aliases",
                 "_tags_of", "_tags_json", "_aliases_seen", "_aliases_json", "_description_of",
                 "_description_json", "_created_json")

    def __init__(self, values: Sequence[Any], aliases: dict[str, int], *, new: bool = False) -> None:
        (self.name, self.stream_version, self.description, self.tags, self.deleted, self.latest, self.last_version,
         self.created_at, self.created_by, self.updated_at, self.version_count, self.deleted_at) = values
        self.new = new
        self.words = new  # the search tokens must be (re)written
        self.aliases = aliases
        self.original_tags: dict[str, str] = {} if new else dict(self.tags)
        self.original_aliases: dict[str, int] = dict(aliases)
        self._tags_of: Any = None
        self._aliases_seen: Any = None
        self._description_of: Any = None
        self._created_json: str | None = None

    def tags_json(self) -> str:
        """The tags as canonical JSON, encoded again only when the handlers replaced them (they never change a
        tags dict in place): a model's tags change far less often than its stream version."""
        if self._tags_of is not self.tags:
            self._tags_of, self._tags_json = self.tags, canonical_json(self.tags)
        return self._tags_json

    def values(self) -> tuple[Any, ...]:
        return (self.name, self.stream_version, self.description, self.tags_json(), self.deleted,
                self.latest, self.last_version, self.created_at, self.created_by, self.updated_at,
                self.version_count, self.deleted_at)

    def mutable(self) -> tuple[Any, ...]:
        """``MODEL_MUTABLE`` then the name (an UPDATE's parameters)."""
        return (self.stream_version, self.tags_json(), self.deleted, self.latest, self.last_version,
                self.updated_at, self.version_count, self.deleted_at, self.description, self.name)

    def state(self) -> str:
        """The ``model_states`` entry: the MODEL_COLUMNS after the name (tags nested), then the aliases —
        ``canonical_json`` of that list, byte for byte. One is written after every event of the model.

        Each piece is kept encoded and encoded again only when it changed: the tags and the description when
        replaced (text and the handlers' tags dicts are never changed in place), the aliases when they differ
        from the copy last encoded (the alias handlers change them in place), the creation's time and actor
        never. The whole numbers go into the text as they are: ``stream_version``, ``deleted`` (0/1 on every
        dialect: the stores and the prefetch turn PostgreSQL's boolean into an int), ``latest`` (or null),
        ``last_version`` and ``version_count`` are ints, whose ``str`` is their JSON; ``updated_at`` is the
        event's time, text. The earlier cache, keyed on a tuple of the fields, re-encoded seven of them whenever
        one changed (a version created, an alias moved: most events of ``scripts/bench_fold.py``'s log). Measured
        by valgrind's instruction count of a page's Python side (log rows to events, handlers, states,
        ``Fold.changes``; 5,000 events of that log, no SQL): 118,126 -> 109,112 instructions per event."""
        tags, aliases, description = self.tags, self.aliases, self.description
        if tags is not self._tags_of:
            self._tags_of, self._tags_json = tags, canonical_json(tags)
        if aliases != self._aliases_seen:
            self._aliases_seen, self._aliases_json = dict(aliases), canonical_json(aliases)
        if description is not self._description_of:
            self._description_of, self._description_json = description, _scalar(description)
        if self._created_json is None:
            self._created_json = f"{_scalar(self.created_at)},{_scalar(self.created_by)}"
        latest = self.latest
        return (f"[{self.stream_version},{self._description_json},{self._tags_json},{self.deleted},"
                f"{'null' if latest is None else latest},{self.last_version},{self._created_json},"
                f"{_quote(self.updated_at)},{self.version_count},{self._aliases_json}]")


MODEL_FIELDS = ModelRow.__slots__[:12]
MODEL_MUTABLE = ("stream_version", "tags", "deleted", "latest", "last_version", "updated_at", "version_count",
                 "deleted_at", "description")


class VersionRow:
    """A ``versions`` row being folded (``VERSION_FIELDS`` order in and out)."""

    __slots__ = ("name", "version", "parent", "status", "deleted", "description", "params", "structure",
                 "optimizer", "tags", "metrics", "artifact", "created_at", "created_by", "position", "deleted_at",
                 "requested_at", "new", "dirty", "words", "files", "original_tags", "original_metrics",
                 "original_indexed", "_json_of", "_json", "_description_of", "_description_json")

    def __init__(self, values: Sequence[Any], *, new: bool = False) -> None:
        (self.name, self.version, self.parent, self.status, self.deleted, self.description, self.params,
         self.structure, self.optimizer, self.tags, self.metrics, self.artifact, self.created_at, self.created_by,
         self.position, self.deleted_at, self.requested_at) = values
        self.new = new
        self.dirty = new
        self.words = new
        self.files = new  # files and blob_refs must be rewritten from the artifact
        self.original_tags: dict[str, str] = {} if new else dict(self.tags)
        self.original_metrics: dict[str, Any] = {} if new else dict(self.metrics)
        self.original_indexed = None if new else (self.status, self.deleted)  # the columns a query index holds
        self._json_of: list[Any] = [None, None, None]  # the tags, metrics, artifact last encoded (held: ids stay)
        self._json: list[str] = ["", "", ""]
        self._description_of: Any = None

    def _encoded(self, i: int, value: Any) -> str:
        """``value`` (the tags, metrics or artifact: ``i`` 0, 1, 2) as canonical JSON, encoded again only when the
        handlers replaced it (they never change these dicts in place). A version's tags, metrics and artifact
        go into its row and into its states; a page encodes each once, not once per event and row."""
        if self._json_of[i] is not value:
            self._json_of[i], self._json[i] = value, canonical_json(value)
        return self._json[i]

    def tags_json(self) -> str:
        return self._encoded(0, self.tags)

    def metrics_json(self) -> str:
        return self._encoded(1, self.metrics)

    def artifact_json(self) -> str:
        if type(self.artifact) is str:
            return self.artifact  # as loaded: the text the fold wrote (canonical), not parsed since
        return self._encoded(2, self.artifact)

    def parsed_artifact(self) -> dict[str, Any]:
        """The artifact record. A dialect that stores it as JSON text (SQLite) may load it as that text: it is
        parsed when a handler first reads it, and written back as it was when none did. A version's artifact is
        its biggest field (a folder's lists every file), and most events (a tag, a metric, an alias, a delete)
        never read it: a tag parsed it and encoded it again for its UPDATE."""
        if type(self.artifact) is str:
            text = self.artifact
            self.artifact = json.loads(text)
            self._json_of[2], self._json[2] = self.artifact, text
        return self.artifact

    @classmethod
    def loaded(cls, values: Sequence[Any]) -> VersionRow:
        """A stored row, from ``VERSION_LOADED`` (a version's content never changes: it is not read); the
        artifact parsed, or its stored JSON text (``parsed_artifact``)."""
        name, version, status, deleted, description, tags, metrics, artifact, deleted_at, requested_at = values
        return cls((name, version, None, status, deleted, description, None, None, None, tags, metrics, artifact,
                    None, None, None, deleted_at, requested_at))

    def mutable(self) -> tuple[Any, ...]:
        """``VERSION_MUTABLE`` then the key (an UPDATE's parameters)."""
        return (self.status, self.deleted, self.tags_json(), self.metrics_json(), self.artifact_json(),
                self.deleted_at, self.requested_at, self.description, self.name, self.version)

    def values(self) -> tuple[Any, ...]:
        return (self.name, self.version, self.parent, self.status, self.deleted, self.description,
                _content_json(self.params), _content_json(self.structure), _content_json(self.optimizer),
                self.tags_json(), self.metrics_json(), self.artifact_json(),
                self.created_at, self.created_by, self.position, self.deleted_at, self.requested_at)

    def state(self) -> str:
        """``canonical_json([status, deleted, tags, metrics, description])``, byte for byte, from the cached
        pieces. The description is mutable too (``Described``); entries written before it have four fields.
        Inlined (one call, not five: it runs after most events; 109,112 -> 106,280 instructions per event,
        measured as ``ModelRow.state``): the status is text (checked at creation, constants after), ``deleted``
        0/1 (see ``ModelRow.state``)."""
        of, encoded = self._json_of, self._json
        tags, metrics, description = self.tags, self.metrics, self.description
        if of[0] is not tags:
            of[0], encoded[0] = tags, canonical_json(tags)
        if of[1] is not metrics:
            of[1], encoded[1] = metrics, canonical_json(metrics)
        if description is not self._description_of:
            self._description_of, self._description_json = description, _scalar(description)
        return f"[{_quote(self.status)},{self.deleted},{encoded[0]},{encoded[1]},{self._description_json}]"


def _content_json(value: Any) -> str:
    """``canonical_json`` of a version's params, structure or optimizer; often empty (``{}``), which skips the
    encoder's call (~1 µs each, a new version's row has three)."""
    return "{}" if type(value) is dict and not value else canonical_json(value)


VERSION_FIELDS = VersionRow.__slots__[:17]
VERSION_LOADED = ("name", "version", "status", "deleted", "description", "tags", "metrics", "artifact",
                  "deleted_at", "requested_at")
VERSION_MUTABLE = ("status", "deleted", "tags", "metrics", "artifact", "deleted_at", "requested_at", "description")


@dataclass
class AliasStack:
    """What the fold knows of one ``alias_history`` stack: its top, and the changes made to it."""

    top: int  # the highest seq in the stack (0: empty)
    cut: int | None = None  # stored entries above this seq are deleted
    pushed: list[tuple[int, int]] = field(default_factory=list)  # new (seq, version) entries


@dataclass
class Changes:
    """Everything one page changes, for the dialect to write (one statement per list)."""

    position: int
    models_new: list[tuple] = field(default_factory=list)
    models_changed: list[tuple] = field(default_factory=list)
    versions_new: list[tuple] = field(default_factory=list)
    versions_changed: list[tuple] = field(default_factory=list)
    # The (name, version) of the ``versions_changed`` rows whose status and deleted are the ones loaded: the
    # only mutable columns a query index holds. SQLite rewrites the index entries of every column an UPDATE
    # sets, changed or not (``versions_live`` and ``versions_status``: 2 of a tag's 14 pages per commit), so
    # it leaves the two out for these; PostgreSQL compares the values itself (HOT) and may ignore this.
    versions_unindexed: set[tuple[str, int]] = field(default_factory=set)
    model_words: list[tuple[str, list[str]]] = field(default_factory=list)
    version_words: list[tuple[str, int, list[str]]] = field(default_factory=list)
    tags_set: list[tuple[str, int, str, str]] = field(default_factory=list)
    tags_removed: list[tuple[str, int, str]] = field(default_factory=list)
    metrics_set: list[tuple[str, int, str, float]] = field(default_factory=list)
    metrics_removed: list[tuple[str, int, str]] = field(default_factory=list)
    files_cleared: list[tuple[str, int]] = field(default_factory=list)
    files: list[tuple[str, int, str, str]] = field(default_factory=list)
    blob_refs: list[tuple[str, str, int, int | None]] = field(default_factory=list)
    aliases_set: list[tuple[str, str, int]] = field(default_factory=list)
    aliases_removed: list[tuple[str, str]] = field(default_factory=list)
    alias_history_cut: list[tuple[str, str, int]] = field(default_factory=list)
    alias_history: list[tuple[str, str, int, int]] = field(default_factory=list)
    model_states: list[tuple[str, int, str]] = field(default_factory=list)
    version_states: list[tuple[str, int, int, str]] = field(default_factory=list)
    artifact_states: list[tuple[str, int, int, str]] = field(default_factory=list)


class Fold:
    """One page being folded: the rows it touches, read up front through ``store`` (a dialect's
    ``FoldStore``), changed in memory, written by ``changes()``."""

    def __init__(self, store: Any, events: Sequence[StoredEvent]) -> None:
        self.store = store
        names: set[str] = set()
        keys: set[tuple[str, int]] = set()
        stacks: set[tuple[str, str]] = set()
        low, high = INT64
        for e in events:
            d = e.data
            if not isinstance(d, dict):
                continue
            name = d.get("name")
            if not isinstance(name, str):
                continue
            names.add(name)
            number = d.get("version")
            if type(number) is int and low <= number <= high:
                keys.add((name, number))
            if e.type == "AliasAssigned" and isinstance(d.get("alias"), str):
                stacks.add((name, d["alias"]))
        aliases: dict[str, dict[str, int]] = {n: {} for n in names}
        for name, alias, number in store.load_aliases(names):
            aliases[name][alias] = number
        # In key order, so ``changes`` lists each table's rows in key order (a set's order is its hashes', which
        # differ per process): SQLite's inserts then go along its b-trees, not all over them.
        self.models: dict[str, ModelRow | None] = dict.fromkeys(sorted(names))
        for values in store.load_models(names):
            self.models[values[0]] = ModelRow(values, aliases[values[0]])
        self.versions: dict[tuple[str, int], VersionRow | None] = dict.fromkeys(sorted(keys))
        for values in store.load_versions(keys):
            self.versions[(values[0], values[1])] = VersionRow.loaded(values)
        self.stacks: dict[tuple[str, str], AliasStack] = {
            key: AliasStack(top) for key, top in store.load_alias_tops(stacks).items()}
        self.live: dict[str, set[int]] = {}  # live version numbers of a model, read when first needed
        self.out = Changes(0)

    # -- lookups ------------------------------------------------------------------------------------
    def model(self, name: Any) -> ModelRow | None:
        return self.models.get(name) if isinstance(name, str) else None

    def version(self, name: Any, number: Any) -> VersionRow | None:
        if type(number) is not int or not isinstance(name, str):  # ``_is_int`` inlined: once per event
            return None
        return self.versions.get((name, number))

    def live_versions(self, name: str) -> set[int]:
        live = self.live.get(name)
        if live is None:
            live = set(self.store.live_versions(name))
            for (n, number), row in self.versions.items():
                if n == name and row is not None:
                    (live.discard if row.deleted else live.add)(number)
            self.live[name] = live
        return live

    def stack(self, name: str, alias: str) -> AliasStack:
        key = (name, alias)
        if key not in self.stacks:
            self.stacks[key] = AliasStack(0)
        return self.stacks[key]

    # -- the result ---------------------------------------------------------------------------------
    def changes(self, position: int) -> Changes:
        out = self.out
        out.position = position
        for model in self.models.values():
            if model is None:
                continue
            if model.new:
                out.models_new.append(model.values())
            else:
                out.models_changed.append(model.mutable())
            if model.words:
                out.model_words.append((model.name, entity_tokens(model.name, model.description, model.tags)))
            _diff(out.tags_set, out.tags_removed, (model.name, 0), model.original_tags, model.tags)
            for alias, number in model.aliases.items():
                if model.original_aliases.get(alias) != number:
                    out.aliases_set.append((model.name, alias, number))
            out.aliases_removed += [(model.name, a) for a in model.original_aliases if a not in model.aliases]
        for version in self.versions.values():
            if version is None or not version.dirty:
                continue
            if version.new:
                out.versions_new.append(version.values())
            else:
                out.versions_changed.append(version.mutable())
                if version.original_indexed == (version.status, version.deleted):
                    out.versions_unindexed.add((version.name, version.version))
            key = (version.name, version.version)
            if version.words:
                out.version_words.append((*key, version_index_tokens(version.name, version.description, version.tags)))
            _diff(out.tags_set, out.tags_removed, key, version.original_tags, version.tags)
            _diff(out.metrics_set, out.metrics_removed, key, version.original_metrics, version.metrics)
            if version.files:
                if not version.new:
                    out.files_cleared.append(key)
                files, refs = _files_of(version.parsed_artifact())
                out.files += [(*key, path, path.rpartition("/")[2]) for path in files]  # posixpath.basename
                out.blob_refs += [(digest, *key, size) for digest, size in refs.items()]
        for (name, alias), stack in self.stacks.items():
            if stack.cut is not None:
                out.alias_history_cut.append((name, alias, stack.cut))
            out.alias_history += [(name, alias, seq, number) for seq, number in stack.pushed]
        return out


def _is_int(value: Any) -> bool:
    return type(value) is int


def _diff(set_: list, removed: list, key: tuple, before: dict[str, Any], after: dict[str, Any]) -> None:
    for k, v in after.items():
        if k not in before or before[k] != v or type(before[k]) is not type(v):
            set_.append((*key, k, v))
    removed += [(*key, k) for k in before if k not in after]


def _files_of(artifact: dict[str, Any]) -> tuple[list[str], dict[str, int | None]]:
    """The file paths (for ``list --file``) and the blobs (digest → size) a version's artifact needs. A log
    written before the import check may hold odd records: an entry without a text path or digest names no
    file or blob, a size that is not a 64-bit whole number is unknown (None) — on every dialect alike."""
    files = artifact.get("files")
    entries = [f for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)] \
        if isinstance(files, list) else []
    paths = list(dict.fromkeys(f["path"] for f in entries))
    digest = artifact.get("digest")
    if not digest or not isinstance(digest, str):
        return paths, {}
    refs: dict[str, int | None] = {digest: _size(artifact.get("size")) if artifact.get("kind") != "directory"
                                   else None}
    for f in entries:
        if f.get("digest") and isinstance(f["digest"], str):
            refs[f["digest"]] = _size(f.get("size"))
    return paths, refs


# -- checks of what an event would write (an event outside the accepted shapes fails here, named) ----------

def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {type(value).__name__}")
    return value


def _int64(value: Any) -> int:
    if not _is_int(value) or not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"expected a 64-bit whole number, not {value!r}")
    return value


def _size(value: Any) -> int | None:
    return value if _is_int(value) and INT64[0] <= value <= INT64[1] else None


def _tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("tags must map text to text")
    for k, v in value.items():  # a loop, not ``all()`` of a generator: a third of the cost, once per tag event
        if not (isinstance(k, str) and isinstance(v, str)):
            raise TypeError("tags must map text to text")
    return dict(value)


def _json(value: Any) -> Any:
    """A JSON value from an event. Events come from the log's JSON text (or the decider, held to the same
    shapes), so it is serialisable: it is encoded once, when its row is written (``Fold.changes``)."""
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a metric must be a number, not {type(value).__name__}")
    return float(value)


def _actor(event: StoredEvent) -> str:
    return str(event.meta.get("actor", ""))


# -- one function per event type -------------------------------------------------------------------------

def on_model_registered(f: Fold, e: StoredEvent) -> None:
    d = e.data
    name = _text(d["name"])
    if f.model(name) is not None:
        return  # registered twice: the first one stands
    tags = _tags(d.get("tags") or {})
    f.models[name] = ModelRow((name, e.version, _text(d.get("description", "")), tags, 0, None, 0, e.recorded_at,
                               _actor(e), e.recorded_at, 0, None), {}, new=True)


def on_version_created(f: Fold, e: StoredEvent) -> None:
    d = e.data
    name, number = d["name"], d["version"]
    tags = d.get("tags") or {}
    artifact = d.get("artifact") or {}
    model = f.model(name)
    if model is None:
        return  # a version of a model the log never registered
    _int64(number)
    if f.version(name, number) is not None:
        return  # that version number exists already: the first one stands
    parent = d.get("parent")
    row = VersionRow((name, number, None if parent is None else _int64(parent), _text(d.get("status", "pending")),
                      0, _text(d.get("description", "")), _json(d.get("params") or {}),
                      _json(d.get("structure") or {}), _json(d.get("optimizer") or {}), _tags(tags), {},
                      _json(artifact), e.recorded_at, _actor(e), e.position, None, e.position), new=True)
    if not isinstance(row.artifact, dict):
        raise TypeError("the artifact record must be an object")
    f.versions[(name, number)] = row
    model.last_version = max(model.last_version, number)
    model.latest = max(model.latest or 0, number)
    model.version_count += 1
    if name in f.live:
        f.live[name].add(number)


_STORED_KEYS = ("digest", "size", "kind", "format", "files", "file_count", "unsafe", "imports", "detail")  # + structure


def on_artifact_stored(f: Fold, e: StoredEvent) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    if version is None:
        return
    artifact = dict(version.parsed_artifact())
    artifact.pop("error", None)
    artifact.update({k: _json(d[k]) for k in _STORED_KEYS if k in d})
    # What the file's header says (e.g. safetensors tensors) stays in the artifact record: a version's own
    # content never changes after it is created; records show it as the structure when none was given.
    if isinstance(d.get("structure"), dict):
        artifact["structure"] = _json(d["structure"])
    version.artifact, version.status = artifact, "ready"
    version.dirty = version.files = True


def on_artifact_failed(f: Fold, e: StoredEvent) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    if version is None:
        return
    version.artifact = {**version.parsed_artifact(), "error": _json(d.get("reason", ""))}
    version.status = "failed"
    version.dirty = True


def on_artifact_purged(f: Fold, e: StoredEvent) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    if version is not None:
        version.status = "purged"
        version.dirty = True


def on_artifact_requested(f: Fold, e: StoredEvent) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    if version is not None:
        version.status, version.requested_at = "pending", e.position
        version.dirty = True


def on_metrics(f: Fold, e: StoredEvent) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    if version is None:
        return
    new = d["metrics"]
    if not isinstance(new, dict) or not all(isinstance(k, str) for k in new):
        raise TypeError("metrics must map names to numbers")
    for value in new.values():
        _number(value)
    # A restore (replace) puts back exactly the metrics a version had.
    version.metrics = {**({} if d.get("replace") else version.metrics), **new}
    version.dirty = True


def _change_tags(f: Fold, e: StoredEvent, set_: dict[str, str], remove: list[str]) -> None:
    d = e.data
    number = d.get("version")
    if number is None:
        target: ModelRow | VersionRow | None = f.model(d["name"])
    else:
        target = f.version(d["name"], number)
    if target is None:
        return
    tags = {**target.tags, **_tags(set_)}
    for key in remove:
        tags.pop(_text(key), None)
    target.tags = tags
    target.words = True
    if isinstance(target, VersionRow):
        target.dirty = True


def on_tagged(f: Fold, e: StoredEvent) -> None:
    _change_tags(f, e, e.data["tags"], [])


def on_untagged(f: Fold, e: StoredEvent) -> None:
    keys = e.data["keys"]
    if not isinstance(keys, list):
        raise TypeError("keys must be a list")
    _change_tags(f, e, {}, keys)


def on_described(f: Fold, e: StoredEvent) -> None:
    d = e.data
    number = d.get("version")
    target: ModelRow | VersionRow | None = f.model(d["name"]) if number is None else f.version(d["name"], number)
    if target is None:
        return
    target.description = _text(d["description"])
    target.words = True  # the description is searched
    if isinstance(target, VersionRow):
        target.dirty = True


def on_alias_assigned(f: Fold, e: StoredEvent) -> None:
    d = e.data
    name, alias, number = d["name"], d["alias"], d["version"]
    model = f.model(name)
    if model is None or f.version(name, number) is None:
        return  # an alias can only point at a version the catalog has
    model.aliases[_text(alias)] = number
    stack = f.stack(name, alias)
    if d.get("rollback"):
        # A rollback pops the stack down to the newest entry for the version it went back to.
        seq = next((s for s, n in reversed(stack.pushed) if n == number), None)
        if seq is None:
            seq = f.store.alias_seq_of(name, alias, number, stack.cut)
            stack.pushed.clear()
            stack.cut = seq if seq is not None else 0
        else:
            stack.pushed = [(s, n) for s, n in stack.pushed if s <= seq]
        if seq is not None:
            stack.top = seq
            return
        stack.top = 0
    stack.top += 1
    stack.pushed.append((stack.top, number))


def on_alias_removed(f: Fold, e: StoredEvent) -> None:
    model = f.model(e.data["name"])
    if model is not None:
        model.aliases.pop(e.data["alias"], None)


def _set_deleted(f: Fold, e: StoredEvent, deleted: int) -> None:
    d = e.data
    version = f.version(d["name"], d["version"])
    model = f.model(d["name"])
    if version is not None:
        version.deleted, version.deleted_at = deleted, (e.recorded_at if deleted else None)
        version.dirty = True
    if model is not None:
        live = f.live_versions(model.name)
        if version is not None:
            (live.discard if deleted else live.add)(version.version)
        model.latest = max(live) if live else None


def on_version_deleted(f: Fold, e: StoredEvent) -> None:
    _set_deleted(f, e, 1)


def on_version_restored(f: Fold, e: StoredEvent) -> None:
    _set_deleted(f, e, 0)


def on_model_deleted(f: Fold, e: StoredEvent) -> None:
    model = f.model(e.data["name"])
    if model is not None:
        model.deleted, model.deleted_at = 1, e.recorded_at


def on_model_restored(f: Fold, e: StoredEvent) -> None:
    model = f.model(e.data["name"])
    if model is not None:
        model.deleted, model.deleted_at = 0, None


HANDLERS: dict[str, Callable[[Fold, StoredEvent], None]] = {
    "ModelRegistered": on_model_registered,
    **{t: on_version_created for t in VERSION_CREATING},
    "ArtifactStored": on_artifact_stored,
    "ArtifactFailed": on_artifact_failed,
    "ArtifactPurged": on_artifact_purged,
    "ArtifactRequested": on_artifact_requested,
    "MetricsRecorded": on_metrics,
    "Tagged": on_tagged,
    "Untagged": on_untagged,
    "Described": on_described,
    "AliasAssigned": on_alias_assigned,
    "AliasRemoved": on_alias_removed,
    "VersionDeleted": on_version_deleted,
    "VersionRestored": on_version_restored,
    "ModelDeleted": on_model_deleted,
    "ModelRestored": on_model_restored,
}


# Events that name a version without changing its status, tags, metrics or artifact: the version's newest
# state stays the one "as of" any later position, so no new row (and no page written) is needed.
_VERSION_UNCHANGED = frozenset({"AliasAssigned", "AliasRemoved"})
# Events after which a version's artifact record differs (the others leave its newest artifact state valid).
_ARTIFACT_CHANGING = VERSION_CREATING | {"ArtifactStored", "ArtifactFailed"}


# A page at least this long is folded with the cycle collector paused (``collector_paused``): a catch-up, a
# rebuild, the beside-build of an upgrade, an audit's replay — never a command's own few events.
PAUSE_AT = 1_000


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with Python's cycle collector off (and back on after, if it was on).

    A long fold allocates a container or two per event (the decoded event, its rows' dicts) and keeps them for
    the page, so the collector's allocation-count trigger fires every ~700 of them, and its older generations
    walk every object the page holds: 4–5 µs of a 28–30 µs event, ~15 % of a SQLite rebuild's CPU
    (``scripts/bench_fold.py``'s 20,000-event log, collector on / off, same run). The fold makes no cyclic
    garbage to collect (a rebuild with the collector off leaves 0 unreachable objects to ``gc.collect()``), so
    pausing it frees nothing later than refcounting does. Process-wide, so only turned back on by whoever
    turned it off: a concurrent long fold that found it off leaves it to the first."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fold(store: Any, events: Iterable[StoredEvent], start: int) -> int:
    """Fold ``events`` (which must follow ``start`` without a gap) through ``store`` (a dialect's
    ``FoldStore`` on the caller's transaction); write the rows and the checkpoint; return the new checkpoint.
    Unknown event types are skipped (a newer writer's), but still advance the checkpoint."""
    position = start
    page = [e for e in events if e.position > start]
    if not page:
        return position
    if len(page) >= PAUSE_AT:
        with collector_paused():
            return _fold_page(store, page, position)
    return _fold_page(store, page, position)


def _fold_page(store: Any, page: list[StoredEvent], position: int) -> int:
    f = Fold(store, page)
    models, versions, out = f.models, f.versions, f.out
    model_states, version_states, artifact_states = out.model_states, out.version_states, out.artifact_states
    handlers = HANDLERS
    for e in page:
        at, kind = e.position, e.type
        if at != position + 1:
            raise StoreError(f"projection gap: at {position}, next event is {at}")
        handler = handlers.get(kind)
        try:
            if handler is not None:
                handler(f, e)
            # The temporal states after the event: the model it concerns and, if it changed one, the version
            # (its artifact too when that changed). Inlined here: this runs once per event.
            d = e.data
            name = d.get("name")
            model = models.get(name) if isinstance(name, str) else None
            if model is not None:
                model.stream_version, model.updated_at = e.version, e.recorded_at
                model_states.append((name, at, model.state()))
                if kind not in _VERSION_UNCHANGED:
                    number = d.get("version")
                    version = versions.get((name, number)) if type(number) is int else None
                    if version is not None:
                        version_states.append((name, number, at, version.state()))
                        if kind in _ARTIFACT_CHANGING:
                            artifact_states.append((name, number, at, version.artifact_json()))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            # Only an event outside the shapes ``eventstore.schemas`` accepts gets here — one appended around
            # ``append_batch``'s check (a log written before it, or by hand): say which.
            raise StoreError(f"the catalog cannot apply event #{e.position} ({e.type}): "
                             f"{type(exc).__name__}: {exc}") from None
        position = at
    try:
        changes = f.changes(position)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # a value JSON cannot hold
        where = f"event #{page[0].position} ({page[0].type})" if len(page) == 1 else \
            f"the events #{page[0].position} to #{position}"
        raise StoreError(f"the catalog cannot apply {where}: {type(exc).__name__}: {exc}") from None
    store.write(changes)
    return position


# -- on a bare connection (tests, tools): the dialect is the connection's ---------------------------------

def checkpoint(conn: Any) -> int:
    """The position the catalog on ``conn`` has folded up to."""
    return dialect_of(conn).fold_store(conn).checkpoint()


def apply_events(conn: Any, events: Iterable[StoredEvent], *, start: int | None = None) -> int:
    """Fold ``events`` into the catalog on ``conn`` (inside the caller's transaction); the new checkpoint."""
    store = dialect_of(conn).fold_store(conn)
    return fold(store, events, store.checkpoint() if start is None else start)
