"""What the catalog answers with: frozen records whose ``to_json`` is the documented, stable JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    parent: int | None
    status: str
    deleted: bool
    description: str
    params: dict[str, Any]
    structure: dict[str, Any]
    optimizer: dict[str, Any]
    tags: dict[str, str]
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    artifact: dict[str, Any]
    created_at: str
    created_by: str
    position: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def __str__(self) -> str:
        return self.ref

    def to_json(self) -> dict[str, Any]:
        artifact = {
            "source": self.artifact.get("source"),
            "digest": self.artifact.get("digest"),
            "size": self.artifact.get("size"),
            "format": self.artifact.get("format"),
            "files": [f.get("path") for f in self.artifact.get("files") or ()],
            # Each listed file's digest and size beside its path (``files`` stays the list of paths scripts
            # read): a record read back from this JSON (over HTTP) is the record, and diffs its folder's files.
            "file_details": [{"path": f.get("path"), "digest": f.get("digest"), "size": f.get("size")}
                             for f in self.artifact.get("files") or ()],
            "unsafe": bool(self.artifact.get("unsafe", False)),
        }
        for extra in ("kind", "file_count", "imports", "detail", "error"):
            if extra in self.artifact:
                artifact[extra] = self.artifact[extra]
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "parent": self.parent,
            "status": self.status,
            "deleted": self.deleted,
            "description": self.description,
            "params": self.params,
            "structure": self.structure,
            "optimizer": self.optimizer,
            "tags": self.tags,
            "aliases": list(self.aliases),
            "metrics": self.metrics,
            "artifact": artifact,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class ModelRecord:
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest: int | None
    deleted: bool
    created_at: str
    created_by: str
    updated_at: str
    version_count: int = 0
    versions: tuple[VersionRecord, ...] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "aliases": self.aliases,
            "latest": self.latest,
            "deleted": self.deleted,
            "versions_count": self.version_count,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "updated_at": self.updated_at,
        }
        if self.versions is not None:
            out["versions"] = [v.to_json() for v in self.versions]
        return out
