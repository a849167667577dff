"""The time control: which moment a page shows, and the links that keep showing that moment.

Every page takes ``?as_of=`` with what the CLI's ``--as-of`` takes (``#N``, a position, or an ISO-8601
timestamp). Empty or absent means now. A page in the past carries its ``as_of`` into every link it renders,
so following links never slips back to the present unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from eventstore.errors import ValidationError

from ..registry import Registry

MAX_AS_OF = 100  # longer than any timestamp or position; refused before it reaches the recorder


@dataclass(frozen=True)
class Moment:
    """What a page shows: ``position`` None is now (``head`` is the log's end when the page was read)."""

    position: int | None
    head: int
    asked: str = ""  # what the user typed, shown back in the form
    recorded_at: str = ""  # when the event at ``position`` was recorded

    @property
    def past(self) -> bool:
        return self.position is not None

    @property
    def as_of(self) -> str | None:
        """The SDK's ``as_of`` argument for this moment (a position, so every read on the page agrees)."""
        return f"#{self.position}" if self.position is not None else None

    @property
    def shown(self) -> int:
        """The position the page reflects."""
        return self.head if self.position is None else self.position

    def query(self) -> dict[str, str]:
        return {"as_of": f"#{self.position}"} if self.position is not None else {}


def moment(reg: Registry, asked: str | None) -> Moment:
    """Resolve ``?as_of=`` against the log. Bad input is a ``ValidationError`` with the SDK's message."""
    text = (asked or "").strip()
    head = reg.head()
    if not text:
        return Moment(None, head)
    if len(text) > MAX_AS_OF:
        raise ValidationError(f"as of {text[:20]!r}...: give #N or an ISO-8601 timestamp")
    if text.isascii() and text.isdigit():
        text = f"#{text}"
    position = reg.position_of(text)
    event = next(iter(reg.log(since=position - 1, limit=1)), None) if position > 0 else None
    return Moment(position, head, asked=asked or "", recorded_at=event.recorded_at if event else "")


def href(path: str, when: Moment | None = None, **params: str | int | None) -> str:
    """A link within the UI: ``path`` (already URL-safe) with the query, keeping the page's moment."""
    query = {k: str(v) for k, v in params.items() if v not in (None, "")}
    if when is not None:
        query.update(when.query())
    return path + ("?" + urlencode(query) if query else "")


def model_path(name: str) -> str:
    # A name may hold one "/" (team/model); it stays a path separator. Suffixes start with "/-/", which no
    # name part can be (a part starts with a letter or digit), so "team/history" stays a model name.
    return "/models/" + quote(name, safe="/")


def version_path(name: str, version: int) -> str:
    return f"{model_path(name)}/-/versions/{int(version)}"
