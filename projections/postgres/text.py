"""PostgreSQL cannot hold the NUL character in ``text`` or in a ``jsonb`` string; the log can (a description
or a parameter value may contain one: the log keeps the canonical JSON text, where it is ``\\u0000``).

The catalog stores U+FFFD (the replacement character) in its place: the catalog is derived and only shown,
and a stored NUL must not stop PostgreSQL's catalog from following the log. It is the one place where the
two dialects' catalogs can differ (their digests do, for such a log); the log itself is unchanged.
"""

from __future__ import annotations

import re

NUL_STAND_IN = "\ufffd"


def text_param(value: str) -> str:
    return value.replace("\x00", NUL_STAND_IN) if "\x00" in value else value


# An escaped NUL: ``\u0000`` after an even number of backslashes (``\\u0000`` is a backslash, then "u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_param(text: str) -> str:
    """Canonical JSON text with every escaped NUL (``\\u0000``) turned into the stand-in."""
    return _ESCAPED_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text
