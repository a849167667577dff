"""The shape of each event type's data: checked before an event that did not come from the decider (an
import through ``append_batch``) is appended, so no malformed event ever enters the log."""

from __future__ import annotations

import math
from typing import Any

from .errors import ValidationError
from .events import SCHEMA_VERSIONS, VERSION_CREATING, NewEvent, stream_for
from .names import check_payload_size, validate_alias, validate_name, validate_tag_key

_VERSIONED = {"ArtifactStored", "ArtifactFailed", "ArtifactPurged", "ArtifactRequested", "MetricsRecorded",
              "AliasAssigned", "AliasRemoved", "VersionDeleted", "VersionRestored"} | VERSION_CREATING


def _fail(event: NewEvent, problem: str) -> None:
    raise ValidationError(f"{event.type} for {event.stream}: {problem}")


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _object(event: NewEvent, data: dict[str, Any], key: str, *, required: bool = True) -> None:
    if key not in data:
        if required:
            _fail(event, f"'{key}' is missing")
        return
    if not isinstance(data[key], dict):
        _fail(event, f"'{key}' must be an object")


def check_event(event: NewEvent) -> None:
    """Refuse an event whose data does not have its type's shape (``ValidationError``, one line)."""
    if event.type not in SCHEMA_VERSIONS:
        _fail(event, "unknown event type")
    data = event.data
    if not isinstance(data, dict) or not isinstance(event.meta, dict):
        _fail(event, "data and meta must be objects")
    name = validate_name(data.get("name"))
    if event.stream != stream_for(name):
        _fail(event, f"belongs to stream {stream_for(name)}")
    version = data.get("version")
    if event.type in _VERSIONED and not _number(version):
        _fail(event, "'version' must be a whole number from 1")
    if event.type in ("Tagged", "Untagged") and version is not None and not _number(version):
        _fail(event, "'version' must be null (the model) or a whole number from 1")
    if event.type in VERSION_CREATING:
        for key in ("params", "structure", "optimizer", "tags", "artifact"):
            _object(event, data, key)
        if data.get("parent") is not None and not _number(data["parent"]):
            _fail(event, "'parent' must be null or a version number")
        if data.get("status", "pending") not in ("pending", "ready", "purged"):
            _fail(event, "'status' must be pending, ready or purged")
    elif event.type == "ModelRegistered":
        _object(event, data, "tags", required=False)
    elif event.type == "ArtifactStored":
        if not isinstance(data.get("digest"), str):
            _fail(event, "'digest' must be a string")
        count = data.get("file_count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            _fail(event, "'file_count' must be a whole number")
    elif event.type == "ArtifactRequested":
        if not isinstance(data.get("source"), str):
            _fail(event, "'source' must be a string")
    elif event.type == "MetricsRecorded":
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()):
            _fail(event, "'metrics' must map names to finite numbers")
    elif event.type == "Tagged":
        tags = data.get("tags")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            _fail(event, "'tags' must map keys to strings")
        for key in tags:
            validate_tag_key(key)
    elif event.type == "Untagged":
        keys = data.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            _fail(event, "'keys' must be a list of strings")
    elif event.type in ("AliasAssigned", "AliasRemoved"):
        validate_alias(data.get("alias"))
    check_payload_size(data, event.type)
