"""What the decider needs to know about a model, and the read-only view it asks for it.

The view is implemented by the read side (the catalog projection, read inside the same write
transaction), so deciding a command costs a few indexed lookups whatever the length of the model's
history — the decider never replays a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ValidationError
from .names import parse_ref


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


@dataclass(frozen=True)
class Target:
    """What a command names, read from its fields before it is decided: the model whose state its decision
    and its events will read, the version it names (a number, or ``ref_alias`` / the latest to resolve) and
    the alias it moves. A hint only (``eventstore.handler`` passes it on, so that a backend can fetch that
    state in one round trip); the decider reads whatever it needs through the ``StateView`` regardless."""

    name: str
    version: int | None = None
    ref_alias: str | None = None
    alias: str | None = None


def target_of(command: object) -> Target | None:
    """The ``Target`` of a command that names one model (None for one spanning several, or malformed: the
    decider then says what is wrong)."""
    alias = getattr(command, "alias", None)
    alias = alias if isinstance(alias, str) else None
    ref = getattr(command, "ref", None)
    if ref is not None:
        try:
            parsed = parse_ref(ref)
        except ValidationError:
            return None
        return Target(parsed.name, parsed.version, parsed.alias, alias)
    name = getattr(command, "name", None)
    if not isinstance(name, str) or not name:
        return None
    version = getattr(command, "version", None)
    return Target(name, version if isinstance(version, int) and not isinstance(version, bool) else None, None, alias)
