"""What a user types, turned into values: JSON documents (inline or ``@FILE``), ``key=value`` pairs, metrics,
counts and durations. Shared by the command line and any other face of the registry; every refusal is a
one-line ``ValidationError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from eventstore.errors import ValidationError
from eventstore.names import PAYLOAD_MAX, parse_json_object, parse_number, validate_tag_key
from eventstore.userfiles import read_text_bounded

# The longest grace period or interval that means anything (100 years): datetime arithmetic overflows far
# below what a float can say (``gc --grace 1e300d``).
DURATION_MAX = 100 * 365 * 86400
COUNT_MAX = 2**62  # what SQLite's 64-bit integers hold with room to add one


def json_arg(text: str | None, what: str) -> dict[str, Any] | None:
    """``JSON`` or ``@file``; refuses malformed JSON, non-objects and documents over 1 MiB. A file is read
    only if it is a regular file, and never more than 1 MiB + 1 byte of it (``eventstore/userfiles.py``)."""
    if text is None:
        return None
    if text.startswith("@"):
        text = read_text_bounded(text[1:], PAYLOAD_MAX, f"--{what}")
    if len(text.encode("utf-8", "surrogatepass")) > PAYLOAD_MAX:
        raise ValidationError(f"--{what} is over 1 MiB (the limit of one event)")
    return parse_json_object(text, f"--{what}")


def pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"{what} {item!r}: write it as key=value")
        out[validate_tag_key(key)] = value
    return out


def metric_pairs(items: Sequence[str]) -> dict[str, float]:
    return {k: parse_number(v, f"metric {k!r}") for k, v in pairs(items, "metric").items()}


def parse_count(text: str, what: str = "count") -> int:
    """A whole number from 0, in ASCII digits only (``int`` would also take ``'٣'``, ``' 5'`` or ``'1_0'``)."""
    if not (text.isascii() and text.isdigit()):
        raise ValidationError(f"{what}: not a whole number: {text[:40]!r}")
    if len(text) > 19 or int(text) >= COUNT_MAX:
        raise ValidationError(f"{what}: out of range: {text[:40]}")
    return int(text)


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` or plain seconds; at most 100 years."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    raw = text.strip().lower()
    factor = units.get(raw[-1:], None)
    number = raw[:-1] if factor else raw
    if not number.isascii() or "_" in number:
        raise ValidationError(f"not a duration: {text[:40]!r} (use e.g. 7d, 12h, 30m, 0)")
    try:
        value = float(number) * (factor or 1)
    except ValueError:
        raise ValidationError(f"not a duration: {text[:40]!r} (use e.g. 7d, 12h, 30m, 0)") from None
    if value < 0 or not math.isfinite(value):
        raise ValidationError(f"not a duration: {text[:40]!r}")
    if value > DURATION_MAX:
        raise ValidationError(f"duration {text[:40]!r} is too long (at most 100 years)")
    return value


def parse_interval(value: float, what: str) -> float:
    """A polling interval in seconds: positive and finite."""
    if not math.isfinite(value) or value <= 0 or value > DURATION_MAX:
        raise ValidationError(f"{what} must be a positive number of seconds, not {value!r}")
    return value


def check_search(text: str | None) -> str | None:
    """Search words are text: a NUL cannot be passed to the full-text index."""
    if text is not None and "\x00" in text:
        raise ValidationError("--search contains a NUL character")
    return text
