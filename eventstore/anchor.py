"""Anchors: a position of the log and its hash, written down somewhere the registry cannot reach.

The hash of event N covers every event up to N, so ``#N:hash`` kept elsewhere proves later that the first N
events are still the ones that were there: a log truncated below N no longer reaches N, and one rewritten at or
before N holds another hash at N — however carefully every later hash was recomputed. A log that has grown
since still matches: the anchor only speaks about its prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .canonical import GENESIS_HASH
from .errors import ValidationError

_ANCHOR = re.compile(r"#([0-9]{1,18}):([0-9a-f]{64})", re.ASCII)


@dataclass(frozen=True)
class Anchor:
    position: int
    hash: str

    def __str__(self) -> str:
        return f"#{self.position}:{self.hash}"

    def to_json(self) -> dict[str, object]:
        return {"position": self.position, "hash": self.hash, "anchor": str(self)}

    @classmethod
    def parse(cls, text: str | Anchor) -> Anchor:
        """``#N:hash`` (N in ASCII digits, the hash as 64 lower-case hex digits) → an Anchor;
        ``ValidationError`` otherwise."""
        if isinstance(text, Anchor):
            return text
        match = _ANCHOR.fullmatch(text.strip().lower()) if isinstance(text, str) else None
        if match is None:
            raise ValidationError(f"an anchor is #N:HASH (a position and its 64-hex-digit hash, as printed by "
                                  f"`mledger audit --anchor`), not {str(text)[:80]!r}")
        anchor = cls(int(match.group(1)), match.group(2))
        if anchor.position == 0 and anchor.hash != GENESIS_HASH:
            raise ValidationError(f"anchor {anchor}: position 0 is the empty log, whose hash is {GENESIS_HASH}")
        return anchor


def anchor_problem(anchor: Anchor, hash_at: str | None, head: int) -> str | None:
    """What is wrong with ``anchor`` on a log whose last position is ``head`` and whose event at the anchor's
    position has hash ``hash_at`` (None if the log does not hold it); None when it holds."""
    if anchor.position == 0:
        return None
    if anchor.position > head:
        return (f"anchor #{anchor.position}: the log ends at #{head}: events were removed from the log "
                "(truncated)")
    if hash_at is None:
        return f"anchor #{anchor.position}: the log does not hold that position: events were removed from the log"
    if hash_at != anchor.hash:
        return (f"anchor #{anchor.position}: the log holds hash {hash_at} there, the anchor says {anchor.hash}: "
                "the history up to that position was rewritten (or the anchor is another registry's)")
    return None


def parse_hash(text: str) -> str:
    """A hash given by a user (``--expected-hash``): 64 hex digits, any case → lower case."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if not re.fullmatch(r"[0-9a-f]{64}", value, re.ASCII):
        raise ValidationError(f"a hash is 64 hex digits (as printed by `mledger audit`), not {str(text)[:80]!r}")
    return value
