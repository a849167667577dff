"""The one table from the project's error types to HTTP statuses, and the JSON body of every error.

Every refusal is ``{"error": kind, "message": text}``; the kind is stable (clients branch on it), the text is
the same one line the CLI prints.
"""

from __future__ import annotations

from typing import Any

from eventstore.errors import (
    ArtifactError,
    AuthenticationError,
    ConflictError,
    IdempotencyError,
    IntegrityError,
    ModelLedgerError,
    NotFoundError,
    PermissionDeniedError,
    PurgedError,
    StoreError,
    TooLargeError,
    ValidationError,
)

# Most specific first: the first row the error is an instance of decides.
STATUSES: tuple[tuple[type[ModelLedgerError], int, str], ...] = (
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (TooLargeError, 413, "too_large"),
    (ValidationError, 400, "bad_input"),
    (NotFoundError, 404, "not_found"),
    (IdempotencyError, 409, "idempotency_key_reused"),
    (ConflictError, 409, "conflict"),
    (PurgedError, 410, "purged"),
    (ArtifactError, 422, "artifact"),
    (StoreError, 503, "store_unavailable"),
    (IntegrityError, 500, "integrity"),
    (ModelLedgerError, 500, "error"),
)


def status_of(exc: ModelLedgerError) -> tuple[int, str]:
    for kind, status, name in STATUSES:
        if isinstance(exc, kind):
            return status, name
    return 500, "error"


def body(kind: str, message: str) -> dict[str, Any]:
    return {"error": kind, "message": message.splitlines()[0] if message else kind}


def error_body(exc: ModelLedgerError) -> tuple[int, dict[str, Any]]:
    status, kind = status_of(exc)
    return status, body(kind, str(exc) or type(exc).__name__)
