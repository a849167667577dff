"""The data of each event, built in one place: what the decider, restore's planner, the actors, the
benchmarks and the tests append.

Each builder returns the ``data`` dict of one event type exactly as the log stores it (an optional field is
left out unless given, so the canonical text and the hash chain stay what they were). The shapes are checked
by ``eventstore.schemas``; the meaning of every field is in ``docs/events.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .schemas import REASON_MAX

# What an ``ArtifactStored`` event carries from an ingest's facts (``workers.ingest.ingest_artifact``).
STORED_FACTS = ("digest", "size", "kind", "format", "files", "file_count", "unsafe", "imports", "detail")


def version_created(
    name: str, number: int, parent: int | None, *, description: str, params: dict, structure: dict,
    optimizer: dict, tags: dict, artifact: dict, status: str, changes: list[str] | None = None,
    patch: dict | None = None,
) -> dict[str, Any]:
    """``VersionRegistered`` / ``ParamsUpdated`` / ``StructureUpdated`` / ``OptimizerUpdated``: the version's
    whole content (``changes`` and ``patch`` only on a version derived from a parent)."""
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


def artifact_stored(name: str, number: int, facts: Mapping[str, Any], *,
                    with_structure: bool = False) -> dict[str, Any]:
    """``ArtifactStored`` from an ingest's facts. ``with_structure``: keep what the file's header says (a
    worker's outcome does; the decider's own, appended with the version it stores, has the version's)."""
    keep = STORED_FACTS + ("structure",) if with_structure else STORED_FACTS
    return {"name": name, "version": number, **{k: facts[k] for k in keep if k in facts}}


def artifact_failed(name: str, number: int, reason: str) -> dict[str, Any]:
    """``ArtifactFailed``; the reason is cut to what the schema keeps."""
    return {"name": name, "version": number, "reason": reason[:REASON_MAX]}


def artifact_purged(name: str, number: int, digest: str | None, blobs: Sequence[str]) -> dict[str, Any]:
    """``ArtifactPurged``: gc freed ``blobs`` (the version's artifact is ``digest``)."""
    return {"name": name, "version": number, "digest": digest, "blobs": list(blobs)}


def artifact_requested(name: str, number: int, source: str, expected_digest: str | None,
                       reason: str) -> dict[str, Any]:
    """``ArtifactRequested``: fetch a version's bytes again from ``source`` (they must hash to the digest)."""
    return {"name": name, "version": number, "source": source, "expected_digest": expected_digest,
            "reason": reason}


def model_registered(name: str, description: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "tags": dict(tags or {})}


def described(name: str, version: int | None, description: str, previous: str) -> dict[str, Any]:
    """``Described``: ``version`` None describes the model; ``previous`` is the text it replaces."""
    return {"name": name, "version": version, "description": description, "previous": previous}


def tagged(name: str, version: int | None, tags: dict[str, str]) -> dict[str, Any]:
    """``Tagged``: ``version`` None tags the model."""
    return {"name": name, "version": version, "tags": tags}


def untagged(name: str, version: int | None, keys: list[str]) -> dict[str, Any]:
    return {"name": name, "version": version, "keys": keys}


def metrics_recorded(name: str, version: int, metrics: dict[str, float], *, replace: bool = False) -> dict[str, Any]:
    """``MetricsRecorded``: ``replace`` (a restore) sets the version's metrics to exactly these."""
    data: dict[str, Any] = {"name": name, "version": version, "metrics": metrics}
    if replace:
        data["replace"] = True
    return data


def alias_assigned(name: str, alias: str, version: int, previous: int | None, *, rollback: bool = False,
                   restore: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "alias": alias, "version": version, "previous": previous}
    if rollback:
        data["rollback"] = True
    if restore:
        data["restore"] = True
    return data


def alias_removed(name: str, alias: str, version: int, *, cause: str | None = None) -> dict[str, Any]:
    """``AliasRemoved``: ``cause="deleted"`` when it went with its version."""
    data: dict[str, Any] = {"name": name, "alias": alias, "version": version}
    if cause is not None:
        data["cause"] = cause
    return data


def version_deleted(name: str, version: int, reason: str) -> dict[str, Any]:
    return {"name": name, "version": version, "reason": reason}


def model_deleted(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "reason": reason}


def version_restored(name: str, version: int) -> dict[str, Any]:
    return {"name": name, "version": version}


def model_restored(name: str) -> dict[str, Any]:
    return {"name": name}
