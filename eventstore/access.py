"""Access tokens of the HTTP server, as events in the log: who gave whom access, and when.

A token is granted (``TokenGranted``) and revoked (``TokenRevoked``) on its own stream ``token-<name>``, so
``mledger history``-style reads of the log and the audit chain cover access exactly as they cover models.
Only the SHA-256 of the secret is recorded. The secret is 256 random bits, so its hash cannot be reversed or
guessed from the log, and a reader who sees the log cannot sign in with a hash (the server hashes what it is
given). The secret itself is printed once, to whoever created the token.

Token events carry ``token``, never ``name``: in every other event ``name`` is a model, and the catalog's
projector keys its rows by it.

The decision needs the token's own stream, not the catalog's state, so it is decided here: the stream is
read and folded under the write lock, decided by the pure functions below, and appended with the stream's
version as the expectation (a concurrent grant of the same name is decided again).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .canonical import canonical_bytes
from .clock import FORMAT
from .errors import ConcurrencyError, ConflictError, NotFoundError, StoreError, ValidationError
from .events import NewEvent, StoredEvent, token_stream
from .recorder import Recorder

ROLES = ("reader", "writer", "admin")
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,255}\Z")
SECRET_PREFIX = "mlt_"
MAX_ATTEMPTS = 20


def validate_token_name(name: Any) -> str:
    if not isinstance(name, str) or not TOKEN_NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid token name {str(name)[:40]!r}: letters, digits, '.', '_', '@', '-' "
                              "(starting with a letter or digit, at most 64)")
    return name


def validate_prefix(prefix: Any) -> str:
    """'' (every model) or the start of the model names a writer may change, e.g. ``team-a/``."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix) or ".." in prefix or "//" in prefix:
        raise ValidationError(f"invalid model prefix {str(prefix)[:40]!r}: the start of a model name, "
                              "e.g. 'team-a/'")
    return prefix


def validate_role(role: Any) -> str:
    if role not in ROLES:
        raise ValidationError(f"invalid role {str(role)[:20]!r}: one of {', '.join(ROLES)}")
    return role


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe, recognisable by its prefix (secret scanners, logs)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the log and the token table keep of a secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# -- commands and state -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateToken:
    token: str
    role: str
    secret_sha256: str
    prefix: str = ""
    expires_at: str | None = None  # UTC, in the log's timestamp form


@dataclass(frozen=True)
class RevokeToken:
    token: str
    reason: str = ""


@dataclass(frozen=True)
class TokenState:
    """A token as its stream tells it (the newest grant, and whether it was revoked since)."""

    token: str
    role: str
    prefix: str
    expires_at: str | None
    secret_sha256: str
    granted_at: str
    granted_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        moment = (now or datetime.now(UTC)).strftime(FORMAT)
        return self.expires_at <= moment

    def to_json(self) -> dict[str, Any]:
        """What ``token list`` shows: never the hash (it is in the log, but there is no reason to spread it)."""
        return {"name": self.token, "role": self.role, "prefix": self.prefix, "expires_at": self.expires_at,
                "granted_at": self.granted_at, "granted_by": self.granted_by, "revoked": self.revoked,
                "revoked_at": self.revoked_at, "revoked_by": self.revoked_by}


def fold(events: Iterable[StoredEvent]) -> TokenState | None:
    state: TokenState | None = None
    for e in events:
        actor = str(e.meta.get("actor", ""))
        if e.type == "TokenGranted":
            d = e.data
            state = TokenState(d["token"], d["role"], d["prefix"], d["expires_at"], d["secret_sha256"],
                               e.recorded_at, actor)
        elif e.type == "TokenRevoked" and state is not None:
            state = TokenState(state.token, state.role, state.prefix, state.expires_at, state.secret_sha256,
                               state.granted_at, state.granted_by, e.recorded_at, actor)
    return state


def decide_create(command: CreateToken, current: TokenState | None) -> list[tuple[str, dict[str, Any]]]:
    validate_token_name(command.token)
    validate_role(command.role)
    validate_prefix(command.prefix)
    if not re.fullmatch(r"[0-9a-f]{64}", command.secret_sha256 or ""):
        raise ValidationError("a token is recorded by the SHA-256 of its secret (64 hex digits)")
    if current is not None and not current.revoked:
        raise ConflictError(f"a token named {command.token!r} exists (revoke it first)")
    return [("TokenGranted", {"token": command.token, "role": command.role, "prefix": command.prefix,
                              "expires_at": command.expires_at, "secret_sha256": command.secret_sha256})]


def decide_revoke(command: RevokeToken, current: TokenState | None) -> list[tuple[str, dict[str, Any]]]:
    validate_token_name(command.token)
    if not isinstance(command.reason, str) or len(command.reason) > 1000:
        raise ValidationError("the reason must be text of at most 1000 characters")
    if current is None:
        raise NotFoundError(f"no token named {command.token!r}")
    if current.revoked:
        return []  # revoking twice changes nothing
    return [("TokenRevoked", {"token": command.token, "reason": command.reason})]


def expiry_after(seconds: float | None, now: datetime | None = None) -> str | None:
    if seconds is None:
        return None
    start = now or datetime.now(UTC)
    return datetime.fromtimestamp(start.timestamp() + seconds, UTC).strftime(FORMAT)


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """A retry with the same idempotency key must ask for the same thing (the secret, new each time, is not
    part of what was asked for)."""
    return hashlib.sha256(canonical_bytes(dict(request))).hexdigest()


@dataclass(frozen=True)
class AccessOutcome:
    events: list[StoredEvent]
    state: TokenState | None
    replayed: bool = False


def execute_access(recorder: Recorder, command: CreateToken | RevokeToken, meta: Mapping[str, Any], *,
                   idempotency_key: str | None = None, request: Mapping[str, Any] | None = None) -> AccessOutcome:
    """Decide ``command`` against its token's stream and append the result, atomically. ``request``: what the
    caller asked for (the idempotency fingerprint); a retry under the same key appends nothing."""
    stream = token_stream(validate_token_name(command.token))
    fp = request_fingerprint(request or {"command": type(command).__name__, "token": command.token}) \
        if idempotency_key is not None else None
    event_meta = dict(meta)
    if idempotency_key is not None:
        event_meta["idempotency_key"] = idempotency_key
    decide = decide_create if isinstance(command, CreateToken) else decide_revoke
    for _ in range(MAX_ATTEMPTS):
        try:
            with recorder.write() as tx:
                if idempotency_key is not None:
                    first = tx.idempotent_result(idempotency_key, fp)
                    if first is not None:
                        return AccessOutcome(first, fold(first), replayed=True)
                history = list(recorder.read(stream=stream))  # type: ignore[call-arg]
                current = fold(history)
                decided = decide(command, current)  # type: ignore[arg-type]
                if not decided:
                    return AccessOutcome([], current)
                from .schemas import check_decided  # schemas imports this module's validators

                for event_type, data in decided:
                    check_decided(event_type, data)
                new = [NewEvent(stream, t, d, event_meta) for t, d in decided]
                stored = tx.append(new, expected={stream: history[-1].version if history else 0},
                                   idempotency_key=idempotency_key, fingerprint=fp)
                return AccessOutcome(stored, fold(history + stored))
        except ConcurrencyError:
            continue
    raise StoreError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")
