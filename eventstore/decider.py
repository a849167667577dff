"""The decider: (what is known about a model, a command) → the events that record it.

Pure: it reads only through the ``StateView`` it is given and returns a ``Decision``; the handler
appends. Every refusal happens here, before anything is written. A command that would change nothing
(tagging the value a tag already has, moving an alias where it already points) decides no events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import commands as c
from .errors import ConflictError, NotFoundError, ValidationError
from .events import stream_for
from .merge_patch import merge_patch
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
class Decision:
    stream: str
    expected: int | None  # the stream version decided against (None: a new model, no check)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    name: str = ""
    version: int | None = None  # the version the command produced or acted on


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


def _version_event(
    name: str, number: int, parent: int | None, *, description: str, params: dict, structure: dict,
    optimizer: dict, tags: dict, artifact: dict, status: str, changes: list[str] | None = None,
    patch: dict | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "version": number,
        "parent": parent,
        "description": description,
        "params": params,
        "structure": structure,
        "optimizer": optimizer,
        "tags": tags,
        "artifact": artifact,
        "status": status,
    }
    if changes is not None:
        data["changes"] = changes
    if patch is not None:
        data["patch"] = patch
    return data


def _stored_artifact_event(name: str, number: int, artifact: dict[str, Any]) -> dict[str, Any]:
    # "structure": what the bytes declare (tensors, shapes); the version shows it when none was given.
    keep = ("digest", "size", "kind", "format", "files", "file_count", "unsafe", "imports", "detail", "structure")
    return {"name": name, "version": number, **{k: artifact[k] for k in keep if k in artifact}}


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
        events.append(("ModelRegistered", {"name": name, "description": description, "tags": {}}))
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
        _version_event(name, number, None, description=description, params=params, structure=structure,
                       optimizer=optimizer, tags=tags, artifact=source_only, status="pending"),
    ))
    if stored:
        events.append(("ArtifactStored", _stored_artifact_event(name, number, artifact)))
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
        _version_event(model.name, number, parent.version, description=description, params=params,
                       structure=structure, optimizer=optimizer, tags=dict(parent.tags),
                       artifact=version_artifact, status=status, changes=changes, patch=patch),
    ))
    if stored:
        events.append(("ArtifactStored", _stored_artifact_event(model.name, number, artifact)))
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
    events = [("Tagged", {"name": model.name, "version": number, "tags": changed})] if changed else []
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
    events = [("Untagged", {"name": model.name, "version": number, "keys": sorted(set(keys))})]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, number)


def decide_metrics(cmd: c.RecordMetrics, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    metrics = validate_metrics(cmd.metrics)
    model, version = resolve(view, ref)
    events = [("MetricsRecorded", {"name": model.name, "version": version.version, "metrics": metrics})]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_alias(cmd: c.AssignAlias, view: StateView) -> Decision:
    alias = validate_alias(cmd.alias)
    model, version = resolve(view, parse_ref(cmd.ref))
    previous = model.aliases.get(alias)
    events = []
    if previous != version.version:
        events.append(("AliasAssigned", {"name": model.name, "alias": alias, "version": version.version,
                                         "previous": previous}))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_unalias(cmd: c.RemoveAlias, view: StateView) -> Decision:
    name = validate_name(cmd.name)
    alias = validate_alias(cmd.alias)
    model = _model(view, name)
    if alias not in model.aliases:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}")
    number = model.aliases[alias]
    events = [("AliasRemoved", {"name": name, "alias": alias, "version": number})]
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
    events = [("AliasAssigned", {"name": name, "alias": alias, "version": target, "previous": current,
                                 "rollback": True})]
    return Decision(stream_for(name), model.stream_version, events, name, target)


def decide_delete(cmd: c.Delete, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    reason = _text(cmd.reason, "reason", REASON_MAX)
    if ref.is_model:
        model = _model(view, ref.name, allow_deleted=True)
        if model.deleted:
            raise ConflictError(f"model {ref.name!r} is already deleted")
        events = [("ModelDeleted", {"name": model.name, "reason": reason})]
        return Decision(stream_for(model.name), model.stream_version, events, model.name, None)
    model, version = resolve(view, ref)
    events: list[tuple[str, dict[str, Any]]] = [
        ("AliasRemoved", {"name": model.name, "alias": a, "version": version.version, "cause": "deleted"})
        for a, n in sorted(model.aliases.items()) if n == version.version
    ]
    events.append(("VersionDeleted", {"name": model.name, "version": version.version, "reason": reason}))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def _refetch(version: VersionState, reason: str) -> tuple[str, dict[str, Any]]:
    """Fetch a version's freed bytes again from where they came from (checked against its digest)."""
    return ("ArtifactRequested", {"name": version.name, "version": version.version,
                                  "source": version.artifact["source"],
                                  "expected_digest": version.artifact.get("digest"), "reason": reason})


def decide_undelete(cmd: c.Undelete, view: StateView) -> Decision:
    ref = parse_ref(cmd.ref)
    if ref.is_model:
        model = _model(view, ref.name, allow_deleted=True)
        if not model.deleted:
            raise ConflictError(f"model {ref.name!r} is not deleted")
        events: list[tuple[str, dict[str, Any]]] = [("ModelRestored", {"name": model.name})]
        # Versions whose bytes gc freed while the model was deleted come back with their bytes.
        events += [_refetch(v, "undelete") for v in view.purged_live_versions(model.name)
                   if v.artifact.get("source")]
        return Decision(stream_for(model.name), model.stream_version, events, model.name, None)
    model, version = resolve(view, ref, allow_deleted=True)
    if model.deleted:
        raise ConflictError(f"model {ref.name!r} is deleted (undelete the model first)")
    if not version.deleted:
        raise ConflictError(f"{model.name}@{version.version} is not deleted")
    events: list[tuple[str, dict[str, Any]]] = [("VersionRestored", {"name": model.name, "version": version.version})]
    if version.status == "purged" and version.artifact.get("source"):
        events.append(_refetch(version, "undelete"))
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


def decide_retry(cmd: c.RetryArtifact, view: StateView) -> Decision:
    model, version = resolve(view, parse_ref(cmd.ref), allow_deleted=True)
    if version.status not in ("failed", "pending"):
        raise ConflictError(f"{model.name}@{version.version} is {version.status}; only a failed or pending "
                            "artifact is retried")
    if not version.artifact.get("source"):
        raise ConflictError(f"{model.name}@{version.version} has no artifact source to fetch again")
    events = [_refetch(version, "retry")]
    return Decision(stream_for(model.name), model.stream_version, events, model.name, version.version)


_DECIDERS = {
    c.Register: decide_register,
    c.Update: decide_update,
    c.Tag: decide_tag,
    c.Untag: decide_untag,
    c.RecordMetrics: decide_metrics,
    c.AssignAlias: decide_alias,
    c.RemoveAlias: decide_unalias,
    c.RollbackAlias: decide_rollback,
    c.Delete: decide_delete,
    c.Undelete: decide_undelete,
    c.RetryArtifact: decide_retry,
}


def decide(command: c.Command, view: StateView) -> Decision:
    decider = _DECIDERS.get(type(command))
    if decider is None:
        raise ValidationError(f"unknown command {type(command).__name__}")
    decision = decider(command, view)
    for event_type, data in decision.events:
        # The shapes an import is held to: nothing a command appends can stop the catalog either.
        check_decided(event_type, data)
    return decision


class _Empty:
    """A state with no models: what a stateless check decides against."""

    def model(self, name: str) -> ModelState | None:
        return None

    def version(self, name: str, number: int) -> VersionState | None:
        return None

    def alias_history(self, name: str, alias: str) -> list[int]:
        return []

    def purged_live_versions(self, name: str) -> list[VersionState]:
        return []


def precheck(command: c.Command) -> None:
    """The checks that need no state (names, JSON, sizes), run before an artifact is copied, so that bad
    input costs nothing and leaves nothing behind."""
    if isinstance(command, c.Register):
        decide(command, _Empty())
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
