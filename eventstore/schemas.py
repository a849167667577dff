"""The exact shape of every event type's data, and of an event's meta.

``check_event`` is the import door's check (``Registry.append_batch``): an event that did not come from the
decider is appended only if every field has its type's exact JSON type, size and range, so no imported event
can stop the catalog or any read (an integer SQLite cannot hold, a list where an object belongs, ...).
``check_decided`` holds the decider's own output to the same shapes, so a command can never append what an
import would be refused for (``metrics m@1 acc=9223372036854775808`` is a ``ValidationError``, not a catalog
that cannot apply its own event). The shapes are documented in ``docs/events.md`` ("Accepted shapes").

The rules, in short:

- ``data`` has exactly its type's keys (required ones present, no unknown ones);
- whole numbers that the catalog stores as SQLite integers fit in 64 bits; version numbers are 1 to
  ``VERSION_MAX`` (what a reference ``NAME@N`` can name); positions are 0 or 1 to ``POSITION_MAX`` (2**53 - 1,
  exact in every JSON reader);
- ``params``, ``structure``, ``optimizer`` (and an artifact's ``structure``) are JSON objects nested at most
  ``JSON_DEPTH_MAX`` levels, with string keys and finite numbers; the whole event stays under 1 MiB;
- names, aliases, tag keys and values follow ``eventstore.names``; metrics map metric names to finite numbers
  (whole numbers within 64 bits); digests are ``sha256:<64 lower-case hex>``;
- ``meta`` is at most ``META_MAX`` bytes: the known keys with their types, plus at most ``META_EXTRA_KEYS``
  scalar keys of the importer's own; every text in it is plain (no control, C1 or bidi-override characters).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .access import ROLES, validate_prefix, validate_token_name
from .canonical import canonical_bytes
from .errors import ValidationError
from .events import SCHEMA_VERSIONS, TOKEN_EVENTS, VERSION_CREATING, NewEvent, stream_for, token_stream
from .names import (
    METRIC_KEY_RE,
    check_payload_size,
    validate_alias,
    validate_name,
    validate_tag_key,
    validate_tags,
)

INT64_MAX = 2**63 - 1
# A reference names a version with at most 12 digits (``names.parse_ref``): a larger number could be stored
# but never named again, and every later version of the model would be out of reach with it.
VERSION_MAX = 10**12 - 1
# Positions (``causation_id``, a restore's ``as_of``): exact as a JSON number in any reader (2**53 - 1).
POSITION_MAX = 2**53 - 1
# Real configurations nest a handful of levels; 64 keeps every recursive reader (merge patch, deep copy,
# diff, SQLite's JSON functions) far from its own limit.
JSON_DEPTH_MAX = 64
DESCRIPTION_MAX = 10_000
REASON_MAX = 1_000
SOURCE_MAX = 4096  # as ``workers.ingest.MAX_SOURCE``
PATH_MAX = 4096
FORMAT_MAX = 64
IMPORT_NAME_MAX = 4096
DETAIL_MAX = 65_536
META_MAX = 8 * 1024
META_TEXT_MAX = 1024
META_EXTRA_KEYS = 16
ACTOR_MAX = 256

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_META_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Control characters (C0, DEL, C1), the bidi embeddings, overrides and isolates, the line and paragraph
# separators: what can make a terminal or a table show something other than the text.
_UNPLAIN_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_RE = re.compile("[\x00-\x1f]")  # what ``workers.ingest.normalize_source`` refuses in a source


class _Refused(Exception):  # noqa: N818 - internal signal, always turned into a ValidationError
    """A field that does not fit: ``path`` from the event's data (or meta) down to it, and what is wrong."""

    def __init__(self, problem: str, *path: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: tuple[Any, ...] = path


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _where(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if isinstance(part, str) and _META_KEY_RE.fullmatch(part) else _show(part, 30)
            out += f".{key}" if out else key
    return out or "data"


# -- field checkers: ``check(value)`` raises _Refused(problem, *path below the field) ----------------------

Check = Callable[[Any], None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(low: int, high: int) -> Check:
    def check(value: Any) -> None:
        if not _is_int(value):
            raise _Refused(f"must be a whole number, not {type(value).__name__}")
        if not low <= value <= high:
            raise _Refused(f"{_show(value)} is out of range ({low} to {high})")
    return check


_version = _int(1, VERSION_MAX)
_size = _int(0, INT64_MAX)
_position = _int(1, POSITION_MAX)


def _optional(check: Check) -> Check:
    def optional(value: Any) -> None:
        if value is not None:
            check(value)
    return optional


def _text(limit: int, *, empty: bool = True, plain: bool = False) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, str):
            raise _Refused(f"must be text, not {type(value).__name__}")
        if not value and not empty:
            raise _Refused("must not be empty")
        if len(value) > limit:
            raise _Refused(f"is {len(value):,} characters; at most {limit:,}")
        if plain and _UNPLAIN_RE.search(value):
            raise _Refused("contains control, C1 or bidi-override characters")
    return check


def _one_of(*allowed: Any) -> Check:
    def check(value: Any) -> None:
        if isinstance(value, bool) or value not in allowed or type(value) is not type(allowed[0]):
            raise _Refused(f"must be one of {', '.join(map(repr, allowed))}, not {_show(value)}")
    return check


def _boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Refused(f"must be true or false, not {_show(value)}")


def _digest(value: Any) -> None:
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise _Refused(f"must be 'sha256:' and 64 lower-case hex digits, not {_show(value)}")


def _hex64(value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise _Refused("must be 64 lower-case hex digits")


def _source(value: Any) -> None:
    _text(SOURCE_MAX, empty=False)(value)
    if _CONTROL_RE.search(value):
        raise _Refused("contains control characters")


def _names(checker: Callable[[Any], Any]) -> Check:
    """One of ``eventstore.names``' validators, its ValidationError turned into a refusal of this field."""
    def check(value: Any) -> None:
        try:
            checker(value)
        except ValidationError as exc:
            raise _Refused(str(exc)) from None
    return check


def _list_of(item: Check, *, distinct: bool = False) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, list | tuple):
            raise _Refused(f"must be a list, not {type(value).__name__}")
        for i, v in enumerate(value):
            try:
                item(v)
            except _Refused as r:
                raise _Refused(r.problem, i, *r.path) from None
        if distinct and len(set(value)) != len(value):
            raise _Refused("lists an entry twice")
    return check


def _json_value(value: Any, depth: int) -> None:
    """Any JSON value: string keys, finite numbers, at most ``JSON_DEPTH_MAX`` levels of objects and lists."""
    if value is None or isinstance(value, str | bool | int):
        return  # the size of a whole number is bounded by the payload's (json refuses over 4,300 digits)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{value!r} is not a finite number")
        return
    if isinstance(value, dict):
        if depth >= JSON_DEPTH_MAX:
            raise _Refused(f"is nested more than {JSON_DEPTH_MAX} levels deep")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(f"has a key that is not text: {_show(key)}", key)
            try:
                _json_value(item, depth + 1)
            except _Refused as r:
                raise _Refused(r.problem, key, *r.path) from None
        return
    if isinstance(value, list | tuple):
        if depth >= JSON_DEPTH_MAX:
            raise _Refused(f"is nested more than {JSON_DEPTH_MAX} levels deep")
        for i, item in enumerate(value):
            try:
                _json_value(item, depth + 1)
            except _Refused as r:
                raise _Refused(r.problem, i, *r.path) from None
        return
    raise _Refused(f"{type(value).__name__} is not a JSON value")


def _json_object(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Refused(f"must be a JSON object, not {type(value).__name__}")
    _json_value(value, 0)


def _object(fields: dict[str, tuple[Check, bool]]) -> Check:
    """An object with exactly these keys: ``{key: (check, required)}``; any other key is refused."""
    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise _Refused(f"must be an object, not {type(value).__name__}")
        for key, (field_check, required) in fields.items():
            if key not in value:
                if required:
                    raise _Refused("is missing", key)
                continue
            try:
                field_check(value[key])
            except _Refused as r:
                raise _Refused(r.problem, key, *r.path) from None
        for key in value:
            if key not in fields:
                raise _Refused(f"is not a field of this object (allowed: {', '.join(sorted(fields))})", key)
    return check


def _tags(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Refused(f"must map tag keys to text, not {type(value).__name__}")
    for key, item in value.items():
        try:
            validate_tags({key: item})
        except ValidationError as exc:
            raise _Refused(str(exc)) from None  # the message names the key


def _metric_value(value: Any) -> None:
    if _is_int(value):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise _Refused(f"{_show(value)} is outside the 64-bit integer range a metric is stored in")
    elif not isinstance(value, float) or not math.isfinite(value):
        raise _Refused(f"must be a finite number, not {_show(value)}")


def _metrics(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Refused(f"must map metric names to numbers, not {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not METRIC_KEY_RE.fullmatch(key):
            raise _Refused("is not a metric name: 1-64 of A-Z a-z 0-9 _ . : -", key)
        try:
            _metric_value(item)
        except _Refused as r:
            raise _Refused(r.problem, key) from None


def _strings(limit: int) -> Check:
    return _list_of(_text(limit))


_FILE = _object({"path": (_text(PATH_MAX, empty=False), True), "digest": (_digest, True), "size": (_size, True)})

# What an ingest learns about stored bytes (``workers.ingest.ingest_artifact``, kept by the decider's and the
# worker's ``ArtifactStored``); the version's artifact record holds these, its ``source`` and, after a failed
# ingest, the ``error`` (an update without ``--artifact`` carries the parent's whole record).
_STORED_FIELDS: dict[str, tuple[Check, bool]] = {
    "digest": (_digest, False),
    "size": (_size, False),
    "kind": (_one_of("file", "directory"), False),
    "format": (_text(FORMAT_MAX, plain=True), False),
    "files": (_list_of(_FILE), False),
    "unsafe": (_boolean, False),
    "imports": (_strings(IMPORT_NAME_MAX), False),
    "detail": (_text(DETAIL_MAX), False),
    "structure": (_json_object, False),
    "file_count": (_size, False),  # how many files the artifact has (the event lists at most the first 1,000)
}
_ARTIFACT_RECORD = _object({"source": (_source, True), **_STORED_FIELDS, "error": (_text(REASON_MAX), False)})

_NAME = (_names(validate_name), True)


def _webhook_id(value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise _Refused(f"must be 32 lower-case hex digits, not {_show(value)}")
_VERSION = (_version, True)
_DESCRIPTION = (_text(DESCRIPTION_MAX), True)
_REASON = (_text(REASON_MAX), True)
_CHANGES = _list_of(_one_of("params", "structure", "optimizer", "artifact", "description"), distinct=True)
_PATCH = _object({k: (_json_object, False) for k in ("params", "structure", "optimizer")})

# Where an imported model or version came from (``eventstore.mirror``): the other registry's own times, user,
# ids and source, kept as it wrote them (the log's ``recorded_at`` is the import's time).
_ORIGIN = _object({
    "system": (_one_of("mlflow"), True),
    **{k: (_text(META_TEXT_MAX, plain=True), False) for k in ("uri", "created_at", "updated_at", "user", "run_id",
                                                               "status", "stage")},
    "source": (_text(SOURCE_MAX), False),
})

_VERSION_CREATED: dict[str, tuple[Check, bool]] = {
    "name": _NAME,
    "version": _VERSION,
    "parent": (_optional(_version), True),
    "description": _DESCRIPTION,
    "params": (_json_object, True),
    "structure": (_json_object, True),
    "optimizer": (_json_object, True),
    "tags": (_tags, True),
    "artifact": (_ARTIFACT_RECORD, True),
    "status": (_one_of("pending", "ready", "purged"), True),
    "changes": (_CHANGES, False),
    "patch": (_PATCH, False),
    "origin": (_ORIGIN, False),
}

# Every field each type may carry, from what the decider, the worker, gc and restore write (``docs/events.md``).
SHAPES: dict[str, Check] = {
    "ModelRegistered": _object({"name": _NAME, "description": _DESCRIPTION, "tags": (_tags, True),
                                "origin": (_ORIGIN, False)}),
    **{t: _object(_VERSION_CREATED) for t in VERSION_CREATING},
    "ArtifactStored": _object({"name": _NAME, "version": _VERSION, **_STORED_FIELDS, "digest": (_digest, True)}),
    "ArtifactFailed": _object({"name": _NAME, "version": _VERSION, "reason": _REASON}),
    "ArtifactPurged": _object({"name": _NAME, "version": _VERSION, "digest": (_optional(_digest), True),
                               "blobs": (_list_of(_digest), True)}),
    "ArtifactRequested": _object({"name": _NAME, "version": _VERSION, "source": (_source, True),
                                  "expected_digest": (_optional(_digest), True), "reason": _REASON}),
    "MetricsRecorded": _object({"name": _NAME, "version": _VERSION, "metrics": (_metrics, True),
                                "replace": (_boolean, False)}),
    "Tagged": _object({"name": _NAME, "version": (_optional(_version), True), "tags": (_tags, True)}),
    "Described": _object({"name": _NAME, "version": (_optional(_version), True), "description": _DESCRIPTION,
                          "previous": _DESCRIPTION}),
    "Untagged": _object({"name": _NAME, "version": (_optional(_version), True),
                         "keys": (_list_of(_names(validate_tag_key)), True)}),
    "AliasAssigned": _object({"name": _NAME, "alias": (_names(validate_alias), True), "version": _VERSION,
                              "previous": (_optional(_version), True), "rollback": (_boolean, False),
                              "restore": (_boolean, False)}),
    "AliasRemoved": _object({"name": _NAME, "alias": (_names(validate_alias), True), "version": _VERSION,
                             "cause": (_one_of("deleted"), False)}),
    "VersionDeleted": _object({"name": _NAME, "version": _VERSION, "reason": _REASON}),
    "ModelDeleted": _object({"name": _NAME, "reason": _REASON}),
    "VersionRestored": _object({"name": _NAME, "version": _VERSION}),
    "ModelRestored": _object({"name": _NAME}),
    # Access tokens (eventstore/access.py): ``token``, never ``name`` (which always means a model).
    "TokenGranted": _object({"token": (_names(validate_token_name), True), "role": (_one_of(*ROLES), True),
                             "prefix": (_names(validate_prefix), True),
                             "expires_at": (_optional(_text(64, empty=False, plain=True)), True),
                             "secret_sha256": (_hex64, True)}),
    "TokenRevoked": _object({"token": (_names(validate_token_name), True), "reason": _REASON}),
    # Webhook subscriptions (eventstore/webhooks.py): ``webhook`` (the id), never ``name``.
    "WebhookCreated": _object({"webhook": (_webhook_id, True), "webhook_name": (_text(64, empty=False, plain=True), True),
                               "url": (_text(2048, empty=False, plain=True), True), "events": (_strings(64), True),
                               "description": (_text(1000), True), "secret_sha256": (_hex64, True),
                               "since": (_int(0, POSITION_MAX), True)}),
    "WebhookUpdated": _object({"webhook": (_webhook_id, True), "url": (_text(2048, empty=False, plain=True), False),
                               "events": (_strings(64), False), "status": (_one_of("ACTIVE", "DISABLED"), False),
                               "description": (_text(1000), False)}),
    "WebhookDeleted": _object({"webhook": (_webhook_id, True)}),
    "WebhookDelivered": _object({"webhook": (_webhook_id, True), "through": (_position, True),
                                 "delivered": (_size, True)}),
    "WebhookReplayed": _object({"webhook": (_webhook_id, True), "through": (_int(0, POSITION_MAX), True)}),
    "WebhookClaimed": _object({"webhook": (_webhook_id, True), "claim": (_webhook_id, True),
                               "until": (_int(0, INT64_MAX), True), "holder": (_text(300, plain=True), True)}),
}
assert set(SHAPES) == set(SCHEMA_VERSIONS), "every event type has a shape"


def _meta_scalar(value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if _is_int(value):
        _int(-INT64_MAX - 1, INT64_MAX)(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{value!r} is not a finite number")
    elif isinstance(value, str):
        _text(META_TEXT_MAX, plain=True)(value)
    else:
        raise _Refused(f"must be text, a number, true, false or null, not {type(value).__name__}")


# What the registry, the worker and restore write (``docs/events.md``, "The envelope").
_META_FIELDS: dict[str, Check] = {
    "actor": _text(ACTOR_MAX, plain=True),
    "client": _text(ACTOR_MAX, plain=True),
    "correlation_id": _text(ACTOR_MAX, plain=True),
    "run_id": _text(META_TEXT_MAX, plain=True),
    "idempotency_key": _text(META_TEXT_MAX, plain=True),
    "causation_id": _position,
    "restore": _object({"id": (_text(64, plain=True), True), "as_of": (_int(0, POSITION_MAX), True)}),
}


def _check_meta(meta: Any) -> None:
    if not isinstance(meta, dict):
        raise _Refused(f"must be an object, not {type(meta).__name__}")
    extra = 0
    for key, value in meta.items():
        check = _META_FIELDS.get(key) if isinstance(key, str) else None
        if check is None:
            if not isinstance(key, str) or not _META_KEY_RE.fullmatch(key):
                raise _Refused("is not a meta key: 1-64 of A-Z a-z 0-9 _ . : -", key)
            extra += 1
            if extra > META_EXTRA_KEYS:
                raise _Refused(f"has more than {META_EXTRA_KEYS} keys of the importer's own", key)
            check = _meta_scalar
        try:
            check(value)
        except _Refused as r:
            raise _Refused(r.problem, key, *r.path) from None
    size = len(canonical_bytes(meta))
    if size > META_MAX:
        raise _Refused(f"is {size:,} bytes; at most {META_MAX:,}")


# -- the doors ----------------------------------------------------------------------------------------------

def check_data(event_type: str, data: Any) -> None:
    """Raise ``ValidationError`` (one line: the field and the problem) if ``data`` is not ``event_type``'s."""
    shape = SHAPES.get(event_type)
    if shape is None:
        raise ValidationError(f"unknown event type {_show(event_type)}")
    try:
        shape(data)
    except _Refused as r:
        raise ValidationError(f"{_where(r.path)}: {r.problem}") from None


def check_decided(event_type: str, data: dict[str, Any]) -> None:
    """The decider's own events: their shape and their size (what ``check_event`` would ask of an import)."""
    check_payload_size(data, event_type)
    check_data(event_type, data)


def check_event(event: Any, index: int | None = None) -> None:
    """Refuse an event that is not exactly its type's shape (``ValidationError``, one line naming the event
    (``events[index]``, its type and stream) and the field)."""
    where = f"events[{index}]" if index is not None else "event"
    if not isinstance(event, NewEvent):
        raise ValidationError(f"{where}: must be a NewEvent, not {type(event).__name__}")
    known = isinstance(event.type, str) and event.type in SHAPES
    where += f" {event.type if known else _show(event.type, 30)} for {_show(event.stream, 60)}"
    if not known:
        raise ValidationError(f"{where}: unknown event type")
    try:
        if not isinstance(event.data, dict):
            raise _Refused(f"must be an object, not {type(event.data).__name__}")
        check_payload_size(event.data, "the data")
        SHAPES[event.type](event.data)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    except _Refused as r:
        raise ValidationError(f"{where}: {_where(r.path)}: {r.problem}") from None
    own = (token_stream(event.data["token"]) if event.type in TOKEN_EVENTS
           else "webhook-" + event.data["webhook"] if event.type.startswith("Webhook")
           else stream_for(event.data["name"]))
    if event.stream != own:
        raise ValidationError(f"{where}: belongs to stream {_show(own, 60)}")
    schema_version = event.schema_version
    if schema_version is not None and (not _is_int(schema_version)
                                       or not 1 <= schema_version <= SCHEMA_VERSIONS[event.type]):
        raise ValidationError(f"{where}: schema_version {_show(schema_version)} is not one this code reads "
                              f"(1 to {SCHEMA_VERSIONS[event.type]})")
    try:
        _check_meta(event.meta)
    except _Refused as r:
        raise ValidationError(f"{where}: {_where(('meta', *r.path))}: {r.problem}") from None


def check_events(events: Iterable[Any]) -> list[NewEvent]:
    """``check_event`` for every event of a batch, each named by its index; the batch, as a list."""
    batch = list(events)
    for index, event in enumerate(batch):
        check_event(event, index)
    return batch
