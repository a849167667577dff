"""Planning a restore: the compensating events that make a model's current state equal its state at P.

Pure: it compares two records (now, and as of P) and returns the events to append — deletions for what was
created since, undeletions for what was deleted since, tags, aliases and metrics put back, and a request to
re-ingest artifacts whose bytes were purged since. Nothing is ever removed from the log; version numbers
created since P stay taken (as deleted versions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventstore import event_data as ed

from .records import ModelRecord, VersionRecord


@dataclass(frozen=True)
class RestorePlan:
    name: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reingest: list[tuple[int, str, str]] = field(default_factory=list)  # (version, source, digest)
    missing: list[str] = field(default_factory=list)  # refs whose purged bytes cannot be fetched again


def _tag_events(name: str, version: int | None, now: dict[str, str], then: dict[str, str]) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    gone = sorted(k for k in now if k not in then)
    if gone:
        events.append(("Untagged", ed.untagged(name, version, gone)))
    back = {k: v for k, v in then.items() if now.get(k) != v}
    if back:
        events.append(("Tagged", ed.tagged(name, version, back)))
    return events


def plan_model(now: ModelRecord, then: ModelRecord | None, *, source_readable: Any = None,
               reason: str = "restore") -> RestorePlan:
    """``now`` and ``then`` carry their versions. ``source_readable(source) -> bool`` decides whether purged
    bytes can be re-ingested."""
    name = now.name
    plan = RestorePlan(name)
    ev = plan.events
    if then is None:
        # The model did not exist at P: it goes, as a deletion.
        if not now.deleted:
            ev.append(("ModelDeleted", ed.model_deleted(name, reason)))
        return plan
    if now.deleted and not then.deleted:
        ev.append(("ModelRestored", ed.model_restored(name)))
    past: dict[int, VersionRecord] = {v.version: v for v in then.versions or ()}
    current: dict[int, VersionRecord] = {v.version: v for v in now.versions or ()}

    # Versions that come back first, so aliases can point at them again.
    for number, v in sorted(current.items()):
        pv = past.get(number)
        if pv is not None and v.deleted and not pv.deleted:
            ev.append(("VersionRestored", ed.version_restored(name, number)))

    # Aliases: remove those added since, move the others back.
    for alias, number in sorted(now.aliases.items()):
        if alias not in then.aliases:
            ev.append(("AliasRemoved", ed.alias_removed(name, alias, number)))
    for alias, number in sorted(then.aliases.items()):
        if now.aliases.get(alias) != number:
            ev.append(("AliasAssigned", ed.alias_assigned(name, alias, number, now.aliases.get(alias), restore=True)))

    for number, v in sorted(current.items()):
        pv = past.get(number)
        if pv is None or (pv.deleted and not v.deleted):
            if not v.deleted:
                ev.append(("VersionDeleted", ed.version_deleted(name, number, reason)))
            continue
        if pv.deleted:
            continue
        ev.extend(_tag_events(name, number, v.tags, pv.tags))
        if v.description != pv.description:
            ev.append(("Described", ed.described(name, number, pv.description, v.description)))
        if v.metrics != pv.metrics:
            ev.append(("MetricsRecorded", ed.metrics_recorded(name, number, pv.metrics, replace=True)))
        if v.status == "purged" and pv.status == "ready":
            source = pv.artifact.get("source")
            digest = pv.artifact.get("digest")
            if source and digest and (source_readable is None or source_readable(source)):
                ev.append(("ArtifactRequested", ed.artifact_requested(name, number, source, digest, reason)))
                plan.reingest.append((number, source, digest))
            else:
                plan.missing.append(f"{name}@{number}")

    ev.extend(_tag_events(name, None, now.tags, then.tags))
    if now.description != then.description:
        ev.append(("Described", ed.described(name, None, then.description, now.description)))
    if then.deleted and not now.deleted:
        ev.append(("ModelDeleted", ed.model_deleted(name, reason)))
    return plan


def live_view(model: ModelRecord) -> dict[str, Any] | None:
    """What a restore promises to bring back: the live model and its live versions, without positions,
    times or counters (version numbers created since P remain taken, as deleted versions)."""
    if model.deleted:
        return None
    return {
        "name": model.name,
        "description": model.description,
        "tags": model.tags,
        "aliases": model.aliases,
        "latest": model.latest,
        "versions": [
            {k: v.to_json()[k] for k in ("version", "parent", "status", "description", "params", "structure",
                                         "optimizer", "tags", "aliases", "metrics")}
            | {"digest": v.artifact.get("digest")}
            for v in model.versions or () if not v.deleted
        ],
    }
