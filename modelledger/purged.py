"""Versions that are live but hold no bytes: gc purged them, and an undelete or a restore brought the record
back without them (their source could not be read again). What `undelete` reports as missing, the same in the
CLI, the SDK and over HTTP."""

from __future__ import annotations

from typing import Any


def purged_live(reg: Any, ref: str) -> list[str]:
    """The versions ``ref`` names (one, or a model's) that are live but hold no bytes, as ``NAME@N``. ``reg`` is
    a ``Registry`` or a ``RemoteRegistry`` (only ``get`` and ``model`` are read)."""
    if "@" in ref:
        versions = [reg.get(ref)]
    else:
        versions = list(reg.model(ref).versions or ())
    return [v.ref for v in versions if v.status == "purged" and not v.deleted]
