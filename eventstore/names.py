"""Validation of everything a user names: models, references, aliases, tags, metrics, JSON payloads.

Every check raises ``ValidationError`` with a one-line message that says what was wrong and what is
allowed. The decider calls these before it produces a single event, so bad input never reaches the log.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .canonical import canonical_bytes
from .errors import ValidationError

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
NAME_RE = re.compile(rf"{_PART}(?:/{_PART})?\Z")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
TAG_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
METRIC_KEY_RE = TAG_KEY_RE
TAG_VALUE_MAX = 1024
PAYLOAD_MAX = 1024 * 1024
RESERVED_ALIASES = frozenset({"latest"})
# Characters that can rewrite a terminal or reorder what it shows: C0 and C1 controls, DEL, bidi marks and
# overrides (U+061C, U+200E/F, U+202A-202E, U+2066-2069), zero-width and line/paragraph separators, BOM.
# Refused in tag values; escaped in every human output (modelledger/output.py). A tab stays allowed in values.
UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
# Integers a metric may hold: SQLite's 64-bit range (a larger one cannot even become a float faithfully).
METRIC_INT_RANGE = (-(2**63), 2**63 - 1)


def _show(value: str, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("model name is empty")
    if "." not in name and NAME_RE.fullmatch(name):
        return name  # no dot, so no "." or ".." part: the common case, without splitting the name twice
    if not NAME_RE.fullmatch(name) or any(p in (".", "..") for p in name.split("/")):
        if len(name) > 257 or any(len(p) > 128 for p in name.split("/")):
            raise ValidationError(f"model name is too long ({len(name)} characters; at most 128 per part)")
        raise ValidationError(
            f"invalid model name {_show(name)}: use letters, digits, '.', '_', '-' (starting with a letter or "
            "digit), optionally one 'team/' namespace"
        )
    return name


def validate_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise ValidationError(
            f"invalid alias {_show(str(alias))}: lower-case letter first, then a-z 0-9 _ - (at most 64)"
        )
    if alias in RESERVED_ALIASES:
        raise ValidationError(f"alias {alias!r} is reserved")
    return alias


def validate_tag_key(key: Any) -> str:
    if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
        raise ValidationError(f"invalid tag key {_show(str(key))}: 1-64 of A-Z a-z 0-9 _ . : -")
    return key


def validate_tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise ValidationError("tags must be a mapping of key to value")
    out: dict[str, str] = {}
    for key, value in tags.items():
        validate_tag_key(key)
        if not isinstance(value, str):
            raise ValidationError(f"tag {key!r}: the value must be a string")
        if len(value) > TAG_VALUE_MAX:
            raise ValidationError(f"tag {key!r}: the value is {len(value)} characters, at most {TAG_VALUE_MAX}")
        if any(c != "\t" for c in UNSAFE_CHARS_RE.findall(value)):
            raise ValidationError(f"tag {key!r}: the value contains control or bidi-override characters")
        out[key] = value
    return out


def validate_metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict) or not metrics:
        raise ValidationError("metrics must be a non-empty mapping of name to number")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not METRIC_KEY_RE.fullmatch(key):
            raise ValidationError(f"invalid metric name {_show(str(key))}: 1-64 of A-Z a-z 0-9 _ . : -")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"metric {key!r}: the value must be a finite number, not {_show(repr(value))}")
        if isinstance(value, int) and not METRIC_INT_RANGE[0] <= value <= METRIC_INT_RANGE[1]:
            raise ValidationError(f"metric {key!r}: the integer is out of range (64 bits); write it as a float")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"metric {key!r}: the value must be a finite number, not {value!r}")
        out[key] = value
    return out


def parse_number(text: str, what: str) -> float | int:
    if not text.isascii():  # int() and float() also take '٣' or '１'
        raise ValidationError(f"{what}: {_show(text)} is not a number (ASCII digits only)")
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise ValidationError(f"{what}: {_show(text)} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{what}: {_show(text)} is not a finite number")
    return value


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from text; NaN/Infinity and non-objects are refused."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"{what}: malformed JSON ({exc})") from None
    return validate_json_object(value, what)


def validate_json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        canonical_bytes(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {exc}") from None
    return value


def check_payload_size(data: dict[str, Any], what: str = "event") -> None:
    try:
        size = len(canonical_bytes(data))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{what} payload is not JSON: {exc}") from None
    if size > PAYLOAD_MAX:
        raise ValidationError(f"{what} payload is {size:,} bytes; the limit is {PAYLOAD_MAX:,} (1 MiB)")


@dataclass(frozen=True)
class Ref:
    """``NAME`` (latest live version), ``NAME@7`` or ``NAME@alias``."""

    name: str
    version: int | None = None
    alias: str | None = None
    latest: bool = False  # ``NAME@latest``: the latest live version, never the model itself

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return f"{self.name}@latest" if self.latest else self.name

    @property
    def is_model(self) -> bool:
        """A bare ``NAME``: tag/untag/delete act on the model; reads take its latest live version."""
        return self.version is None and self.alias is None and not self.latest


def parse_ref(text: Any) -> Ref:
    if not isinstance(text, str) or not text:
        raise ValidationError("reference is empty")
    return _parse_ref(text)


# A command parses its reference several times (the request's check, the decision's target, the decision): a
# ``Ref`` is frozen, so one parse per text serves them all. Bounded: a server parses what clients send.
@lru_cache(maxsize=4096)
def _parse_ref(text: str) -> Ref:
    name, sep, selector = text.partition("@")
    validate_name(name)
    if not sep:
        return Ref(name)
    if not selector:
        raise ValidationError(f"reference {_show(text)} ends with '@': give a version number or an alias")
    if selector.isascii() and selector.isdigit():  # not "１" or "٣", which int() would take
        if len(selector) > 12:
            raise ValidationError(f"reference {_show(text)}: the version number is too large")
        number = int(selector)
        if number < 1:
            raise ValidationError(f"reference {_show(text)}: versions start at 1")
        return Ref(name, version=number)
    if selector == "latest":
        return Ref(name, latest=True)
    if not ALIAS_RE.fullmatch(selector):
        raise ValidationError(f"reference {_show(text)}: after '@' give a version number or an alias")
    return Ref(name, alias=selector)
