"""Who is calling, and what they may do.

``Authorization: Bearer <secret>`` names a token; its SHA-256 is looked up in the token table
(``projections.access``), which catches up with the log first, so a revocation by any process is refused by
every process at its next request. Roles: a reader reads; a writer also changes the models whose names start
with its prefix (all models without one); an admin also runs gc and restore and manages tokens. Every refusal
happens before anything is read for the write or appended.

Each process remembers the tokens it found, with the log position its table was read at (``_Verified``):
while one probe of the token streams' index finds no token event after that position, the remembered
token is the table's; any grant or revocation since, by any process, sends the lookup back to the table.
So a revocation is still refused at once, for one indexed read per request instead of three (the
table's checkpoint, the same probe, the lookup).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from eventstore.access import TokenState, secret_hash
from eventstore.errors import AuthenticationError, PermissionDeniedError
from eventstore.events import TOKEN_STREAM_PREFIX
from eventstore.names import parse_ref, validate_name
from projections.access import TokenTable

RANK = {"reader": 0, "writer": 1, "admin": 2}
ANONYMOUS = "anonymous"
MAX_HEADER = 512


@dataclass(frozen=True)
class Principal:
    name: str  # the token's name: the actor of everything this caller appends
    role: str
    prefix: str = ""
    anonymous: bool = False

    def require(self, role: str) -> None:
        if RANK[self.role] < RANK[role]:
            if self.anonymous:  # no credentials at all: 401, so a client knows to send a token
                raise AuthenticationError(f"this needs a token with the {role} role: send 'Authorization: Bearer <token>'")
            raise PermissionDeniedError(f"token {self.name!r} ({self.role}) may not do this: it needs the {role} role")

    def require_model(self, name: str) -> None:
        """May this caller change model ``name``? (a writer: only under its prefix)."""
        self.require("writer")
        validate_name(name)
        if self.role == "writer" and self.prefix and not name.startswith(self.prefix):
            raise PermissionDeniedError(f"token {self.name!r} may change only models under {self.prefix!r}, "
                                        f"not {name!r}")

    def require_ref(self, ref: str) -> None:
        self.require_model(parse_ref(ref).name)


@dataclass
class _Verified:
    """The tokens found in one token table, by secret hash, as the table stood at ``position`` (or later)."""

    position: int
    found: dict[str, TokenState] = field(default_factory=dict)


_verified: weakref.WeakKeyDictionary[TokenTable, _Verified] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def _find(tokens: TokenTable, digest: str) -> TokenState | None:
    """``tokens.find(digest)``, remembered until the log gains a token event: only tokens that exist are
    remembered (at most one entry per token, whatever secrets are tried)."""
    recorder = tokens.recorder
    if recorder.read_only:
        return tokens.find(digest)
    known = _verified.get(tokens)
    if known is not None and digest in known.found and \
            next(iter(recorder.read_streams(TOKEN_STREAM_PREFIX, since=known.position, limit=1)), None) is None:
        return known.found[digest]
    position = tokens.catch_up()  # the table as of at least this position: what the entries are valid for
    found = tokens.find(digest)
    with _guard:
        known = _verified.get(tokens)
        if known is None or known.position != position:
            _verified[tokens] = known = _Verified(position)
        if found is not None:
            known.found[digest] = found
    return found


def authenticate(tokens: TokenTable, authorization: str | None, *, allow_anonymous_read: bool) -> Principal:
    """The caller behind an ``Authorization`` header; ``AuthenticationError`` when there is none (unless
    anonymous reads are allowed) or it names no live token."""
    if not authorization:
        if allow_anonymous_read:
            return Principal(ANONYMOUS, "reader", anonymous=True)
        raise AuthenticationError("this server needs a token: send 'Authorization: Bearer <token>'")
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_HEADER:
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    found = _find(tokens, secret_hash(secret))
    if found is None:
        raise AuthenticationError("unknown token")
    if found.revoked:
        raise AuthenticationError(f"token {found.token!r} was revoked")
    if found.expired():
        raise AuthenticationError(f"token {found.token!r} expired at {found.expires_at}")
    return Principal(found.token, found.role, found.prefix)
