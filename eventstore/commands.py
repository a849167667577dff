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
    ref: str


@dataclass(frozen=True)
class RetryArtifact:
    """Ask for a failed (or stuck pending) version's artifact to be ingested again."""

    ref: str


Command = (
    Register | Update | Tag | Untag | RecordMetrics | AssignAlias | RemoveAlias | RollbackAlias | Delete
    | Undelete | RetryArtifact
)


def fingerprint(command: Command) -> str:
    """Identifies the request behind an idempotency key: a retry must ask for the same thing."""
    import hashlib

    body = {"command": type(command).__name__, **asdict(command)}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()
