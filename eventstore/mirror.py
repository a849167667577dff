"""Mirroring a model from another registry (an import): what it says → the events that make ours say it.

An importer (``modelledger.mlflow_import``) reads a model as the other registry holds it now — description,
tags, aliases, every live version with its tags, source, status and, once copied, its bytes — and asks for
one ``MirrorModel``. The decider compares that snapshot with what this registry holds *under the write lock*
and decides only the differences, so importing the same snapshot twice appends nothing, and a change made on
the other side since the last import arrives as the events that make it (a tag set, an alias moved, a
version created or deleted there).

For a model that came from elsewhere, the other registry is the source of truth while both run side by
side: a tag or alias changed here on such a model is set back by the next import (the log shows both).
Version numbers are kept as the other registry numbered them, so ``name@3`` is its version 3 on both
sides: a number the other registry has already deleted when it is first imported is recorded as a version
that failed and was deleted, with that reason, rather than silently renumbering the rest.

Pure, like ``decider``: it reads only through the ``StateView`` and returns a ``Decision``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import AlreadyExistsError, ConflictError, ValidationError
from .event_data import artifact_stored, described
from .events import stream_for
from .names import validate_alias, validate_name, validate_tags
from .schemas import DESCRIPTION_MAX, REASON_MAX, VERSION_MAX
from .state import StateView

# What the events keep of the other registry's own record: who made the object there and when (the log's
# ``recorded_at`` is the time of the import), its id for that object, and where its bytes came from.
ORIGIN_KEYS = ("system", "uri", "created_at", "updated_at", "user", "run_id", "source", "status", "stage")


@dataclass(frozen=True)
class MirroredVersion:
    version: int
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    # The ingest facts (``workers.ingest.ingest_artifact``) once the bytes were copied into our store; None
    # with ``failure`` set when they could not be (the other registry says the version failed, or its
    # artifacts are gone), or when this version's bytes are here already (nothing to copy again).
    artifact: dict[str, Any] | None = None
    failure: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MirrorModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    versions: tuple[MirroredVersion, ...] = ()
    origin: dict[str, Any] = field(default_factory=dict)
    # Create the model (with no version) and nothing else: refused if it exists (MLflow's create call).
    create_only: bool = False


def _origin(value: dict[str, Any]) -> dict[str, Any]:
    out = {k: value[k] for k in ORIGIN_KEYS if value.get(k) not in (None, "")}
    for k, v in out.items():
        if not isinstance(v, str):
            raise ValidationError(f"origin {k} must be text")
    return out


def _text(value: str, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _version_data(name: str, v: MirroredVersion, *, tags: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "version": v.version, "parent": None,
        "description": _text(v.description or "", "description", DESCRIPTION_MAX),
        "params": {}, "structure": {}, "optimizer": {}, "tags": tags,
        "artifact": {"source": v.source}, "status": "pending",
    }
    origin = _origin(v.origin)
    if origin:
        data["origin"] = origin
    return data


def _stored(name: str, number: int, facts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("ArtifactStored", artifact_stored(name, number, facts, with_structure=True))


def _failed(name: str, number: int, reason: str) -> tuple[str, dict[str, Any]]:
    return ("ArtifactFailed", {"name": name, "version": number, "reason": _text(reason, "reason", REASON_MAX)})


def _tag_events(name: str, number: int | None, now: dict[str, str],
                want: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    gone = sorted(k for k in now if k not in want)
    if gone:
        events.append(("Untagged", {"name": name, "version": number, "keys": gone}))
    changed = {k: v for k, v in want.items() if now.get(k) != v}
    if changed:
        events.append(("Tagged", {"name": name, "version": number, "tags": changed}))
    return events


def _description_events(name: str, number: int | None, now: str, want: str) -> list[tuple[str, dict[str, Any]]]:
    want = _text(want, "description", DESCRIPTION_MAX)
    return [("Described", described(name, number, want, now))] if want != now else []


def decide_mirror(cmd: MirrorModel, view: StateView) -> Any:
    from .decider import Decision  # the decider imports this module's table entry

    name = validate_name(cmd.name)
    tags = validate_tags(cmd.tags)
    aliases = {validate_alias(a): n for a, n in cmd.aliases.items()}
    versions = sorted(cmd.versions, key=lambda v: v.version)
    numbers = [v.version for v in versions]
    if len(set(numbers)) != len(numbers):
        raise ValidationError(f"model {name!r}: a version number appears twice in the import")
    for v in versions:
        if isinstance(v.version, bool) or not isinstance(v.version, int) or not 1 <= v.version <= VERSION_MAX:
            raise ValidationError(f"model {name!r}: {v.version!r} is not a version number")
        validate_tags(v.tags)
    live = {v.version for v in versions}
    for alias, number in aliases.items():
        if number not in live:
            raise ValidationError(f"model {name!r}: alias {alias!r} points at version {number}, which the "
                                  "import does not have")
    model = view.model(name)
    events: list[tuple[str, dict[str, Any]]] = []
    if cmd.create_only and (model is not None or versions):
        raise AlreadyExistsError(f"model {name!r} already exists") if model is not None else ValidationError(
            "creating a model takes no versions")
    if model is None:
        data: dict[str, Any] = {"name": name, "description": _text(cmd.description or "", "description",
                                                                   DESCRIPTION_MAX), "tags": {}}
        origin = _origin(cmd.origin)
        if origin:
            data["origin"] = origin
        events.append(("ModelRegistered", data))
        expected, last, model_tags, current_aliases = None, 0, {}, {}
    else:
        if model.deleted:
            raise ConflictError(f"model {name!r} is deleted here; undelete it to import it again")
        expected, last, model_tags, current_aliases = (model.stream_version, model.last_version, model.tags,
                                                       dict(model.aliases))

    deleted_here: set[int] = set()
    for v in versions:
        if v.version > last:
            # Numbers the other registry deleted before we saw them: kept taken, as what they are.
            for gap in range(last + 1, v.version):
                hole = MirroredVersion(gap, source=f"{cmd.origin.get('system', 'import')}:{name}/{gap}")
                events.append(("VersionRegistered", _version_data(name, hole, tags={})))
                events.append(_failed(name, gap, "deleted in the source registry before it was imported"))
                events.append(("VersionDeleted", {"name": name, "version": gap,
                                                  "reason": "deleted in the source registry before the import"}))
            events.append(("VersionRegistered", _version_data(name, v, tags=dict(v.tags))))
            if v.artifact is not None:
                events.append(_stored(name, v.version, v.artifact))
            else:
                events.append(_failed(name, v.version, v.failure or "its artifacts were not imported"))
            last = v.version
            continue
        state = view.version(name, v.version)
        if state is None or state.deleted:
            continue  # a version deleted here stays deleted: an import never undoes a deletion
        if v.artifact is not None and state.status in ("failed", "pending"):
            events.append(_stored(name, v.version, v.artifact))  # its bytes arrived since (READY there now)
        events += _tag_events(name, v.version, state.tags, dict(v.tags))
        events += _description_events(name, v.version, state.description, v.description or "")

    # Versions the other registry no longer has: deleted there since the last import.
    for number in range(1, last + 1):
        if number in live:
            continue
        state = view.version(name, number)
        if state is None or state.deleted:
            continue
        for alias, held in sorted(current_aliases.items()):
            if held == number and alias not in aliases:
                events.append(("AliasRemoved", {"name": name, "alias": alias, "version": number, "cause": "deleted"}))
                del current_aliases[alias]
        events.append(("VersionDeleted", {"name": name, "version": number,
                                          "reason": "deleted in the source registry"}))
        deleted_here.add(number)

    events += _tag_events(name, None, model_tags, tags)
    if model is not None and not cmd.create_only:
        events += _description_events(name, None, model.description, cmd.description or "")
    for alias, number in sorted(current_aliases.items()):
        if alias not in aliases:
            events.append(("AliasRemoved", {"name": name, "alias": alias, "version": number}))
    for alias, number in sorted(aliases.items()):
        previous = current_aliases.get(alias)
        if previous != number:
            events.append(("AliasAssigned", {"name": name, "alias": alias, "version": number,
                                             "previous": previous}))
    return Decision(stream_for(name), expected, events, name, None)
