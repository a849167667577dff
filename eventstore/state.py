"""What the decider needs to know about a model, and the read-only view it asks for it.

The view is implemented by the read side (the catalog projection, read inside the same write
transaction), so deciding a command costs a few indexed lookups whatever the length of the model's
history — the decider never replays a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class VersionState:
    name: str
    version: int
    parent: int | None
    deleted: bool
    status: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    structure: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelState:
    name: str
    stream_version: int
    deleted: bool
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest: int | None
    last_version: int


class StateView(Protocol):
    def model(self, name: str) -> ModelState | None: ...

    def version(self, name: str, number: int) -> VersionState | None: ...

    def alias_history(self, name: str, alias: str) -> list[int]:
        """Versions that held ``alias``, oldest first, as a stack (rollbacks pop it)."""
        ...

    def purged_live_versions(self, name: str) -> list[VersionState]:
        """Live versions of ``name`` whose bytes gc freed (what undeleting the model must fetch again)."""
        ...
