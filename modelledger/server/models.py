"""The JSON bodies of the write routes (they also document the API in its OpenAPI).

Strict: a field of the wrong JSON type is refused (400), never coerced ("1" is not 1), and unknown fields are
refused, so a misspelt option cannot be silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


ARTIFACT = ("{digest, size, filename} of an uploaded file; {digest, size, filename, content_base64} of a file of "
            "at most 64 KiB sent inside this request (base64; the server checks it hashes to digest, 400 if not, "
            "413 above 64 KiB): one request and one commit; {files: [{path, digest, size, mode}]} of an uploaded "
            "folder; or {source: URL} under the server's MLEDGER_SOURCES")


class RegisterBody(_Body):
    name: str
    artifact: dict[str, Any] = Field(description=ARTIFACT)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    structure: dict[str, Any] = Field(default_factory=dict)
    optimizer: dict[str, Any] = Field(default_factory=dict)


class UpdateBody(_Body):
    ref: str
    params: dict[str, Any] | None = None
    structure: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    structure_patch: bool = False
    optimizer_patch: bool = False
    artifact: dict[str, Any] | None = Field(default=None, description=ARTIFACT)
    description: str | None = None


class TagBody(_Body):
    ref: str
    tags: dict[str, str]


class UntagBody(_Body):
    ref: str
    keys: list[str] = Field(min_length=1)


class MetricsBody(_Body):
    ref: str
    metrics: dict[str, float | int]


class AliasBody(_Body):
    ref: str
    alias: str


class NameAliasBody(_Body):
    name: str
    alias: str


class DeleteBody(_Body):
    ref: str
    reason: str = ""


class RefBody(_Body):
    ref: str


class RestoreBody(_Body):
    name: str | None = None
    as_of: str | int
    dry_run: bool = False


class GcBody(_Body):
    grace: str = "7d"
    dry_run: bool = False


class TokenBody(_Body):
    name: str
    role: str
    prefix: str = ""
    expires: str | None = Field(default=None, description="a duration: 30d, 12h, ...")


class RevokeBody(_Body):
    name: str
    reason: str = ""
