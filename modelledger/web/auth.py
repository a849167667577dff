"""Who is looking: the UI's side of authentication.

The router does not know tokens. It is given ``authorize(request) -> name | None`` (the server's token check,
or one that lets anyone read when the server runs with ``--allow-anonymous-read``) and asks it about every
page. A browser cannot send ``Authorization: Bearer`` on a link it follows, so the UI asks for the token once
(the login form), keeps it in a cookie (HttpOnly: no script reads it; SameSite=Strict: no other site's page
makes the browser send it) and presents it to ``authorize`` as the Bearer header it would have sent. An
``Authorization`` header the client sent itself wins over the cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "mledger_token"
COOKIE_MAX_AGE = 30 * 86400
MAX_TOKEN = 4096

Authorize = Callable[[Request], "str | None"]


def with_bearer(request: Request, token: str) -> Request:
    """The same request, as if the client had sent ``Authorization: Bearer <token>``."""
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    return Request({**request.scope, "headers": headers}, request.receive)


def cookie_token(request: Request) -> str | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable():
        return None
    return token


def viewer(request: Request, authorize: Authorize) -> str | None:
    """The name ``authorize`` gives this request: its own Authorization header first, then the cookie's token."""
    if "authorization" in request.headers:
        return authorize(request)
    token = cookie_token(request)
    if token is not None:
        return authorize(with_bearer(request, token))
    return authorize(request)


def authorization_of(request: Request) -> str | None:
    """The ``Authorization`` value a read of the JSON API should judge: the request's own header, else, for a
    GET or HEAD only, the UI's cookie as a Bearer token. The browser reaches the live stream (an
    ``EventSource`` cannot send headers) and the download link with the cookie; a write never counts it (a
    cookie rides along on requests the user did not mean to make; SameSite=Strict is the second lock)."""
    header = request.headers.get("authorization")
    if header is not None:
        return header
    if request.method in ("GET", "HEAD"):
        token = cookie_token(request)
        if token is not None:
            return f"Bearer {token}"
    return None


def check_token(request: Request, token: str, authorize: Authorize) -> str | None:
    """What ``authorize`` says about a token typed into the login form (None: refused)."""
    if not token or len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable():
        return None
    return authorize(with_bearer(request, token))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never ``//evil``, ``/\\evil`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


def same_origin(request: Request) -> bool:
    """A form POST from a page of this site. Browsers send ``Origin`` on POST; a missing one (an old client,
    curl) is let through, a foreign one is refused (login CSRF: logging a victim in with the attacker's token)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def secure(request: Request) -> bool:
    """Mark the cookie Secure when the page came over HTTPS (behind a TLS proxy: uvicorn --proxy-headers)."""
    return request.url.scheme == "https"
