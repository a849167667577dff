"""UTC timestamps in the one fixed-width form the log stores, so that text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import ValidationError

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def normalize_timestamp(text: str) -> str:
    """Any ISO-8601 timestamp → the stored form. A naive timestamp is taken as UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"not an ISO-8601 timestamp: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime(FORMAT)
