"""Commands: what a caller asks for. Each is decided into events by ``decider.decide``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .canonical import canonical_bytes


@dataclass(frozen=True)
class Register:
    name: str
    artifact: dict[str, Any]  # {"source": url} plus, when already stored, "digest", "size", "format", ...
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    structure: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Update:
    """Derive a new version from ``ref``. ``params`` is an RFC 7386 merge patch; structure and optimizer
    replace the parent's unless their ``*_patch`` flag asks for a merge patch too."""

    ref: str
    params: dict[str, Any] | None = None
    structure: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    structure_patch: bool = False
    optimizer_patch: bool = False
    artifact: dict[str, Any] | None = None
    description: str | None = None


@dataclass(frozen=True)
class Tag:
    ref: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Describe:
    """Change the description of a model (a bare NAME) or of a version (NAME@N / NAME@alias): annotation,
    like tags, so it does not make a new version (MLflow's update calls; an import's later changes)."""

    ref: str
    description: str


@dataclass(frozen=True)
class Untag:
    ref: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RecordMetrics:
    ref: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class AssignAlias:
    ref: str
    alias: str


@dataclass(frozen=True)
class RemoveAlias:
    name: str
    alias: str


@dataclass(frozen=True)
class RollbackAlias:
    name: str
    alias: str


@dataclass(frozen=True)
class Delete:
    ref: str
    reason: str = ""


@dataclass(frozen=True)
class Undelete:
    """``readable``: the sources of purged artifacts that the caller checked it can fetch again (the decider
    reads nothing). A version gc purged comes back with its bytes only if its source is among them; else it
    comes back without them, still ``purged`` (an upload's bytes, a source since removed)."""

    ref: str
    readable: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryArtifact:
    """Ask for a failed (or stuck pending) version's artifact to be ingested again."""

    ref: str


@dataclass(frozen=True)
class RecordArtifactStored:
    """A worker's outcome: the bytes asked for by the event at ``request`` (a new version, or a request to
    fetch purged bytes again) are stored; ``facts`` is what the ingest learnt (``workers.ingest``)."""

    request: int
    name: str
    version: int
    facts: dict[str, Any]


@dataclass(frozen=True)
class RecordArtifactFailed:
    """A worker's outcome: the bytes asked for by the event at ``request`` could not be stored."""

    request: int
    name: str
    version: int
    reason: str


@dataclass(frozen=True)
class PurgedVersion:
    """One version gc means to free bytes of: its artifact ``digest`` and the ``blobs`` freed with it."""

    name: str
    version: int
    digest: str | None
    blobs: tuple[str, ...]


@dataclass(frozen=True)
class PurgeArtifacts:
    """gc's plan (made from the catalog under the write lock): record that these versions lose their bytes."""

    versions: tuple[PurgedVersion, ...]


@dataclass(frozen=True)
class RestoreModel:
    """The compensating events that bring one model back to its state at the restore's position, planned
    (``projections.restore``) against the model's stream at ``stream_version``."""

    name: str
    stream_version: int
    events: tuple[tuple[str, dict[str, Any]], ...]


@dataclass(frozen=True)
class Restore:
    as_of: int
    models: tuple[RestoreModel, ...]


Command = (
    Register | Update | Tag | Untag | Describe | RecordMetrics | AssignAlias | RemoveAlias | RollbackAlias | Delete
    | Undelete | RetryArtifact | RecordArtifactStored | RecordArtifactFailed | PurgeArtifacts | Restore
)

# Outcomes recorded on behalf of an earlier request: their key names the request (``artifact-stored:#12``),
# not their content, so a redelivered job whose ingest learnt other facts still finds the first outcome.
ON_BEHALF = (RecordArtifactStored, RecordArtifactFailed)


def fingerprint(command: Command) -> str | None:
    """Identifies the request behind an idempotency key: a retry must ask for the same thing. None for an
    outcome recorded on behalf of a request (``ON_BEHALF``), whose key already names that request."""
    import hashlib

    if isinstance(command, ON_BEHALF):
        return None

    body = {"command": type(command).__name__, **asdict(command)}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()
