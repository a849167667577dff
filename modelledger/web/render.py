"""Turning page data into HTML: one Jinja environment, escaping on, and the headers every page carries.

Everything a user wrote (a description, a tag, a file name, an actor, a param key) is hostile input. Jinja's
autoescape makes it text in HTML; ``_visible`` also shows control and bidi characters as ``\\x1b`` /
``\\u202e`` escapes (what the CLI's ``plain`` does), so a value cannot reorder what a page shows. The
Content-Security-Policy allows scripts and styles from this site only — an injected ``<script>`` or
``onerror=`` would not run even if escaping failed somewhere.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse

from eventstore.names import UNSAFE_CHARS_RE

from ..output import human_size, short_digest, when
from .timecontrol import href, model_path, version_path

HERE = Path(__file__).parent
# Newlines and tabs are layout in HTML (a multi-line description, pretty JSON), not a hiding place.
LAYOUT = "\n\t"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in LAYOUT:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Markup) and UNSAFE_CHARS_RE.search(value):
        return UNSAFE_CHARS_RE.sub(_escape_char, value)
    return value


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        finalize=visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=human_size, digest=short_digest, when=when, pretty=pretty, short=short,
                       number=number)
    env.globals.update(href=href, model_path=model_path, version_path=version_path)
    return env


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)
