"""The decider: (what is known about a model, a command) → the events that record it.

Pure: it reads only through the ``StateView`` it is given and returns a ``Decision``; the handler
appends. Every refusal happens here, before anything is written. A command that would change nothing
(tagging the value a tag already has, moving an alias where it already points) decides no events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import commands as c
from . import event_data as ed
from .errors import ConflictError, NotFoundError, ValidationError
from .events import stream_for
from .merge_patch import merge_patch
from .mirror import MirrorModel, decide_mirror
from .names import (
    Ref,
    check_payload_size,
    parse_ref,
    validate_alias,
    validate_json_object,
    validate_metrics,
    validate_name,
    validate_tag_key,
    validate_tags,
)
from .schemas import DESCRIPTION_MAX, REASON_MAX, check_decided
from .state import ModelState, StateView, VersionState


@dataclass(frozen=True)
class StreamEvents:
    """The events a decision appends to one stream, and the stream version it was decided against."""

    stream: str
    expected: int | None  # None: no check (a new model, whose stream may hold imported events)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    stream: str
    expected: int | None  # the stream version decided against (None: a new model, no check)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    name: str = ""
    version: int | None = None  # the version the command produced or acted on
    # Further streams appended in the same atomic batch, after ``events`` (gc's purge, a restore).
    more: tuple[StreamEvents, ...] = ()

    def parts(self) -> list[StreamEvents]:
        """Every stream's events, in the order they are appended."""
        first = [StreamEvents(self.stream, self.expected, self.events)] if self.events else []
        return first + [p for p in self.more if p.events]

    def expected_versions(self) -> dict[str, int]:
        """The version each stream was decided against (the recorder refuses the batch if one moved)."""
        return {p.stream: p.expected for p in self.parts() if p.expected is not None}


def batch(parts: list[StreamEvents], name: str = "", version: int | None = None) -> Decision:
    """A decision spanning several streams, appended as one atomic batch."""
    parts = [p for p in parts if p.events]
    if not parts:
        return Decision("", None, [], name, version)
    return Decision(parts[0].stream, parts[0].expected, parts[0].events, name, version, tuple(parts[1:]))


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    if len(value) > limit:
        raise ValidationError(f"{what} is {len(value)} characters; at most {limit}")
    return value


def _model(view: StateView, name: str, *, allow_deleted: bool = False) -> ModelState:
    model = view.model(name)
    if model is None:
        raise NotFoundError(f"no model named {name!r}")
    if model.deleted and not allow_deleted:
        raise ConflictError(f"model {name!r} is deleted (undelete it first)")
    return model


def resolve(view: StateView, ref: Ref, *, allow_deleted: bool = False) -> tuple[ModelState, VersionState]:
    model = _model(view, ref.name, allow_deleted=allow_deleted)
    if ref.version is not None:
        number = ref.version
    elif ref.alias is not None:
        if ref.alias not in model.aliases:
            raise NotFoundError(f"model {ref.name!r} has no alias {ref.alias!r}")
        number = model.aliases[ref.alias]
    else:
        if model.latest is None:
            raise NotFoundError(f"model {ref.name!r} has no live version")
        number = model.latest
    version = view.version(ref.name, number)
    if version is None:
        raise NotFoundError(f"model {ref.name!r} has no version {number}")
    if version.deleted and not allow_deleted:
        raise ConflictError(f"{ref.name}@{number} is deleted (undelete it first)")
    return model, version


def _artifact(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("source"), str) or not value["source"]:
        raise ValidationError("an artifact needs a source (a path or URL)")
    return dict(value)


def _status_for_new(artifact: dict[str, Any]) -> str:
    return "ready" if artifact.get("digest") else "pending"


def decide_register(cmd: c.Register, view: StateView) -> Decision:
    name = validate_name(cmd.name)
    description = _text(cmd.description, "description", DESCRIPTION_MAX)
    tags = validate_tags(cmd.tags)
    params = validate_json_object(cmd.params or {}, "params")
    structure = validate_json_object(cmd.structure or {}, "structure")
    optimizer = validate_json_object(cmd.optimizer or {}, "optimizer")
    artifact = _artifact(cmd.artifact)
    model = view.model(name)
    events: list[tuple[str, dict[str, Any]]] = []
    expected: int | None
    if model is None:
        events.append(("ModelRegistered", ed.model_registered(name, description)))
        # No expected version: the stream may hold imported events the catalog could not place.
        number, expected = 1, None
    else:
        if model.deleted:
            raise ConflictError(f"model {name!r} is deleted (undelete it first)")
        number, expected = model.last_version + 1, model.stream_version
    stored = artifact.get("digest")
    source_only = {"source": artifact["source"]}
    events.append((
        "VersionRegistered",
        ed.version_created(name, number, None, description=description, params=params, structure=structure,
                       optimizer=optimizer, tags=tags, artifact=source_only, status="pending"),
    ))
    if stored:
        events.append(("ArtifactStored", ed.artifact_stored(name, number, artifact, with_structure=True)))
    return Decision(stream_for(name), expected, events, name, number)


def decide_update(cmd: c.Update, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    model, parent = resolve(view, ref)
    changes: list[str] = []
    patch: dict[str, Any] = {}
    params, structure, optimizer = parent.params, parent.structure, parent.optimizer
    if cmd.params is not None:
        patch["params"] = validate_json_object(cmd.params, "params")
        params = merge_patch(parent.params, cmd.params)
        changes.append("params")
    if cmd.structure is not None:
        patch["structure"] = validate_json_object(cmd.structure, "structure")
        structure = merge_patch(parent.structure, cmd.structure) if cmd.structure_patch else cmd.structure
        changes.append("structure")
    if cmd.optimizer is not None:
        patch["optimizer"] = validate_json_object(cmd.optimizer, "optimizer")
        optimizer = merge_patch(parent.optimizer, cmd.optimizer) if cmd.optimizer_patch else cmd.optimizer
        changes.append("optimizer")
    if cmd.artifact is not None:
        artifact = _artifact(cmd.artifact)
        changes.append("artifact")
    else:
        artifact = dict(parent.artifact)
    description = parent.description if cmd.description is None else _text(cmd.description, "description",
                                                                            DESCRIPTION_MAX)
    if cmd.description is not None and cmd.description != parent.description:
        changes.append("description")
    if not changes:
        raise ValidationError("update needs at least one of --params, --structure, --optimizer, --artifact")
    # The type names the content that changed; a new artifact or description rides along with it.
    content = [k for k in changes if k in ("params", "structure", "optimizer")]
    if content == ["params"]:
        event_type = "ParamsUpdated"
    elif content == ["structure"]:
        event_type = "StructureUpdated"
    elif content == ["optimizer"]:
        event_type = "OptimizerUpdated"
    else:
        event_type = "VersionRegistered"  # several kinds of content at once, or only a new artifact
    number = model.last_version + 1
    events: list[tuple[str, dict[str, Any]]] = []
    if cmd.artifact is not None:
        stored = artifact.get("digest")
        version_artifact = {"source": artifact["source"]}
        status = "pending"
    else:
        stored = None
        version_artifact = artifact  # the parent's bytes, already stored (or still pending with it)
        status = parent.status if parent.status in ("ready", "purged") else "pending"
    events.append((
        event_type,
        ed.version_created(model.name, number, parent.version, description=description, params=params,
                       structure=structure, optimizer=optimizer, tags=dict(parent.tags),
                       artifact=version_artifact, status=status, changes=changes, patch=patch),
    ))
    if stored:
        events.append(("ArtifactStored", ed.artifact_stored(model.name, number, artifact, with_structure=True)))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, number)


def _tag_target(view: StateView, ref: Ref) -> tuple[ModelState, dict[str, str], int | None]:
    """A bare NAME tags the model; NAME@N / NAME@alias / NAME@latest tag that version."""
    if ref.is_model:
        model = _model(view, ref.name)
        return model, model.tags, None
    model, version = resolve(view, ref)
    return model, version.tags, version.version


def decide_tag(cmd: c.Tag, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    tags = validate_tags(cmd.tags)
    if not tags:
        raise ValidationError("give at least one tag as key=value")
    model, current, number = _tag_target(view, ref)
    changed = {k: v for k, v in tags.items() if current.get(k) != v}
    events = [("Tagged", ed.tagged(model.name, number, changed))] if changed else []
    return Decision(stream_for(model.name), model.stream_version, events, model.name, number)


def decide_describe(cmd: c.Describe, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    description = _text(cmd.description, "description", DESCRIPTION_MAX)
    if ref.is_model:
        model = _model(view, ref.name)
        number, previous = None, model.description
    else:
        model, version = resolve(view, ref)
        number, previous = version.version, version.description
    events = [("Described", ed.described(model.name, number, description, previous))] \
        if description != previous else []
    return Decision(stream_for(model.name), model.stream_version, events, model.name, number)


def decide_untag(cmd: c.Untag, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    if not cmd.keys:
        raise ValidationError("give at least one tag key to remove")
    keys = [validate_tag_key(k) for k in cmd.keys]
    model, current, number = _tag_target(view, ref)
    missing = [k for k in keys if k not in current]
    if missing:
        raise NotFoundError(f"{ref} has no tag {missing[0]!r}")
    events = [("Untagged", ed.untagged(model.name, number, sorted(set(keys))))]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, number)


def decide_metrics(cmd: c.RecordMetrics, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    metrics = validate_metrics(cmd.metrics)
    model, version = resolve(view, ref)
    events = [("MetricsRecorded", ed.metrics_recorded(model.name, version.version, metrics))]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_alias(cmd: c.AssignAlias, view: StateView) -> Decision:
    alias = validate_alias(cmd.alias)
    model, version = resolve(view, parse_ref(cmd.ref))
    previous = model.aliases.get(alias)
    events = []
    if previous != version.version:
        events.append(("AliasAssigned", ed.alias_assigned(model.name, alias, version.version, previous)))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_unalias(cmd: c.RemoveAlias, view: StateView) -> Decision:
    name = validate_name(cmd.name)
    alias = validate_alias(cmd.alias)
    model = _model(view, name)
    if alias not in model.aliases:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}")
    number = model.aliases[alias]
    events = [("AliasRemoved", ed.alias_removed(name, alias, number))]
    return Decision(stream_for(name), model.stream_version, events, name, number)


def decide_rollback(cmd: c.RollbackAlias, view: StateView) -> Decision:
    name = validate_name(cmd.name)
    alias = validate_alias(cmd.alias)
    model = _model(view, name)
    current = model.aliases.get(alias)
    stack = view.alias_history(name, alias)
    # Pop the current holder, then any holder that has since been deleted.
    candidates = stack[:-1] if current is not None and stack and stack[-1] == current else stack
    target = None
    for number in reversed(candidates):
        v = view.version(name, number)
        if number != current and v is not None and not v.deleted:
            target = number
            break
    if target is None:
        raise NotFoundError(f"alias {alias!r} of {name!r} has no earlier live version to roll back to")
    events = [("AliasAssigned", ed.alias_assigned(name, alias, target, current, rollback=True))]
    return Decision(stream_for(name), model.stream_version, events, name, target)


def decide_delete(cmd: c.Delete, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    reason = _text(cmd.reason, "reason", REASON_MAX)
    if ref.is_model:
        model = _model(view, ref.name, allow_deleted=True)
        if model.deleted:
            raise ConflictError(f"model {ref.name!r} is already deleted")
        events = [("ModelDeleted", ed.model_deleted(model.name, reason))]
        return Decision(stream_for(model.name), model.stream_version, events, model.name, None)
    model, version = resolve(view, ref)
    events: list[tuple[str, dict[str, Any]]] = [
        ("AliasRemoved", ed.alias_removed(model.name, a, version.version, cause="deleted"))
        for a, n in sorted(model.aliases.items()) if n == version.version
    ]
    events.append(("VersionDeleted", ed.version_deleted(model.name, version.version, reason)))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def _refetch(version: VersionState, reason: str) -> tuple[str, dict[str, Any]]:
    """Fetch a version's freed bytes again from where they came from (checked against its digest)."""
    return ("ArtifactRequested", ed.artifact_requested(version.name, version.version, version.artifact["source"],
                                                       version.artifact.get("digest"), reason))


def decide_undelete(cmd: c.Undelete, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    if ref.is_model:
        model = _model(view, ref.name, allow_deleted=True)
        if not model.deleted:
            raise ConflictError(f"model {ref.name!r} is not deleted")
        events: list[tuple[str, dict[str, Any]]] = [("ModelRestored", ed.model_restored(model.name))]
        # Versions whose bytes gc freed while the model was deleted come back with their bytes, from a source
        # that can still be read; the others stay purged (not "failed": nothing was tried).
        events += [_refetch(v, "undelete") for v in view.purged_live_versions(model.name)
                   if v.artifact.get("source") in cmd.readable]
        return Decision(stream_for(model.name), model.stream_version, events, model.name, None)
    model, version = resolve(view, ref, allow_deleted=True)
    if model.deleted:
        raise ConflictError(f"model {ref.name!r} is deleted (undelete the model first)")
    if not version.deleted:
        raise ConflictError(f"{model.name}@{version.version} is not deleted")
    events: list[tuple[str, dict[str, Any]]] = [("VersionRestored", ed.version_restored(model.name, version.version))]
    if version.status == "purged" and version.artifact.get("source") in cmd.readable:
        events.append(_refetch(version, "undelete"))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_retry(cmd: c.RetryArtifact, view: StateView) -> Decision:
    model, version = resolve(view, parse_ref(cmd.ref), allow_deleted=True)
    if version.status == "purged" and (version.deleted or model.deleted):
        raise ConflictError(f"{model.name}@{version.version} is deleted; undelete it (its bytes come back with it "
                            "when their source can be read)")
    # A live purged version: undeleted when its source could not be read; its bytes can come back later.
    if version.status not in ("failed", "pending", "purged"):
        raise ConflictError(f"{model.name}@{version.version} is {version.status}; only a failed, pending or "
                            "purged artifact is retried")
    if not version.artifact.get("source"):
        raise ConflictError(f"{model.name}@{version.version} has no artifact source to fetch again")
    events = [_refetch(version, "retry")]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def awaits_artifact(view: StateView, name: str, number: int) -> bool:
    """Is the version still waiting for its bytes? A late or duplicate job (the version since stored by another
    request, or failed and retried) must not record a second outcome."""
    version = view.version(name, number)
    return version is not None and version.status == "pending"


def _outcome(name: str, number: int, view: StateView, event: tuple[str, dict[str, Any]]) -> Decision:
    model = view.model(name)
    if model is None or not awaits_artifact(view, name, number):
        return Decision(stream_for(name), None, [], name, number)
    return Decision(stream_for(name), model.stream_version, [event], name, number)


def decide_artifact_stored(cmd: c.RecordArtifactStored, view: StateView) -> Decision:
    data = ed.artifact_stored(cmd.name, cmd.version, cmd.facts, with_structure=True)
    return _outcome(cmd.name, cmd.version, view, ("ArtifactStored", data))


def decide_artifact_failed(cmd: c.RecordArtifactFailed, view: StateView) -> Decision:
    data = ed.artifact_failed(cmd.name, cmd.version, cmd.reason)
    return _outcome(cmd.name, cmd.version, view, ("ArtifactFailed", data))


def decide_purge(cmd: c.PurgeArtifacts, view: StateView) -> Decision:
    """gc's plan, checked against the state it is appended to: a version that is live again keeps its bytes
    (the plan is refused, nothing is purged), one already purged gets no second ``ArtifactPurged``."""
    parts: dict[str, StreamEvents] = {}
    for p in cmd.versions:
        model = view.model(p.name)
        version = view.version(p.name, p.version)
        if model is None or version is None:
            raise NotFoundError(f"gc planned to purge {p.name}@{p.version}, which does not exist")
        if not (model.deleted or version.deleted):
            raise ConflictError(f"gc planned to purge {p.name}@{p.version}, which is live: nothing was purged "
                                "(run gc again)")
        if version.status == "purged":
            continue
        part = parts.setdefault(p.name, StreamEvents(stream_for(p.name), model.stream_version, []))
        part.events.append(("ArtifactPurged", ed.artifact_purged(p.name, p.version, p.digest, p.blobs)))
    return batch(list(parts.values()))


# What a restore may append: compensations only, never a new version or bytes of its own.
RESTORE_EVENTS = frozenset({
    "ModelDeleted", "ModelRestored", "VersionDeleted", "VersionRestored", "AliasAssigned", "AliasRemoved",
    "Tagged", "Untagged", "Described", "MetricsRecorded", "ArtifactRequested",
})


def decide_restore(cmd: c.Restore, view: StateView) -> Decision:
    """The planned compensations (``projections.restore``), refused if a model moved since it was planned."""
    parts = []
    for plan in cmd.models:
        model = view.model(plan.name)
        if model is None:
            raise NotFoundError(f"no model named {plan.name!r}")
        if model.stream_version != plan.stream_version:
            raise ConflictError(f"model {plan.name!r} changed while the restore was planned (run it again)")
        for event_type, data in plan.events:
            if event_type not in RESTORE_EVENTS:
                raise ValidationError(f"a restore does not append {event_type}")
            if data.get("name") != plan.name:
                raise ValidationError(f"a restore of {plan.name!r} planned an event of {data.get('name')!r}")
        parts.append(StreamEvents(stream_for(plan.name), plan.stream_version, list(plan.events)))
    return batch(parts)


_DECIDERS = {
    c.Register: decide_register,
    c.Update: decide_update,
    c.Tag: decide_tag,
    c.Untag: decide_untag,
    c.Describe: decide_describe,
    c.RecordMetrics: decide_metrics,
    c.AssignAlias: decide_alias,
    c.RemoveAlias: decide_unalias,
    c.RollbackAlias: decide_rollback,
    c.Delete: decide_delete,
    c.Undelete: decide_undelete,
    c.RetryArtifact: decide_retry,
    c.RecordArtifactStored: decide_artifact_stored,
    c.RecordArtifactFailed: decide_artifact_failed,
    c.PurgeArtifacts: decide_purge,
    c.Restore: decide_restore,
    MirrorModel: decide_mirror,
}


def decide(command: c.Command, view: StateView) -> Decision:
    decider = _DECIDERS.get(type(command))
    if decider is None:
        raise ValidationError(f"unknown command {type(command).__name__}")
    decision = decider(command, view)
    for part in decision.parts():
        for event_type, data in part.events:
            # The shapes an import is held to: nothing a command appends can stop the catalog either.
            check_decided(event_type, data)
    return decision


class EmptyState:
    """A state with no models: what a stateless check decides against."""

    def model(self, name: str) -> ModelState | None:
        return None

    def version(self, name: str, number: int) -> VersionState | None:
        return None

    def alias_history(self, name: str, alias: str) -> list[int]:
        return []

    def purged_live_versions(self, name: str) -> list[VersionState]:
        return []


class _EveryModel(EmptyState):
    """A state in which every model exists, with no versions: what a register's precheck decides against. The
    model's own event (``ModelRegistered``: its name, its description, no tags) holds nothing the version's
    does not hold under the same rules, so deciding as if the model existed checks the same input with one
    event instead of two (the command's real decision checks a new model's event too)."""

    def model(self, name: str) -> ModelState | None:
        return ModelState(name=name, stream_version=0, deleted=False, description="", tags={}, aliases={},
                          latest=None, last_version=0)


def precheck(command: c.Command) -> None:
    """The checks that need no state (names, JSON, sizes), run before an artifact is copied, so that bad
    input costs nothing and leaves nothing behind."""
    if isinstance(command, c.Register):
        decide(command, _EveryModel())
    elif isinstance(command, c.Update):
        parse_ref(command.ref)
        patch = {}
        for what in ("params", "structure", "optimizer"):
            value = getattr(command, what)
            if value is not None:
                patch[what] = validate_json_object(value, what)
        check_payload_size(patch, "update")
        if command.artifact is not None:
            _artifact(command.artifact)
