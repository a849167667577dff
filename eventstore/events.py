"""The event envelope: what a caller appends (``NewEvent``) and what the log holds (``StoredEvent``).

Event types are past-tense names; a stored type is never renamed. ``SCHEMA_VERSIONS`` says which
schema version of each type this code writes; older ones are upgraded on read (see ``upcast``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSIONS: dict[str, int] = {
    "ModelRegistered": 1,
    "VersionRegistered": 1,
    "ParamsUpdated": 1,
    "StructureUpdated": 1,
    "OptimizerUpdated": 1,
    "ArtifactStored": 1,
    "ArtifactFailed": 1,
    "MetricsRecorded": 1,
    "Tagged": 1,
    "Untagged": 1,
    "Described": 1,
    "AliasAssigned": 1,
    "AliasRemoved": 1,
    "VersionDeleted": 1,
    "ModelDeleted": 1,
    "VersionRestored": 1,
    "ModelRestored": 1,
    "ArtifactPurged": 1,
    "ArtifactRequested": 1,
    # Access to the HTTP server (eventstore/access.py): on a stream ``token-<name>`` each.
    "TokenGranted": 1,
    "TokenRevoked": 1,
    "WebhookCreated": 1,
    "WebhookUpdated": 1,
    "WebhookDeleted": 1,
    "WebhookDelivered": 1,
    "WebhookReplayed": 1,
    "WebhookClaimed": 1,
}

# Events that create a new version of a model (each carries the version's whole content).
VERSION_CREATING = frozenset({"VersionRegistered", "ParamsUpdated", "StructureUpdated", "OptimizerUpdated"})
# Events whose position is an ingest job: a new version, or a request to fetch purged bytes again.
ARTIFACT_REQUESTS = VERSION_CREATING | {"ArtifactRequested"}

STREAM_PREFIX = "model-"


def stream_for(name: str) -> str:
    return STREAM_PREFIX + name


TOKEN_STREAM_PREFIX = "token-"
TOKEN_EVENTS = frozenset({"TokenGranted", "TokenRevoked"})


def token_stream(token: str) -> str:
    """The stream of an access token's grants and revocations (not a model: its events carry no ``name``)."""
    return TOKEN_STREAM_PREFIX + token


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended. ``stream`` is e.g. ``model-resnet``."""

    stream: str
    type: str
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int | None = None

    def resolved_schema_version(self) -> int:
        return self.schema_version if self.schema_version is not None else SCHEMA_VERSIONS.get(self.type, 1)


@dataclass(frozen=True)
class StoredEvent:
    """One row of the log, as read back (after upcasting)."""

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": self.data,
            "meta": self.meta,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
        }
