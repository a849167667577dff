"""The project's own exception types.

Driver errors (sqlite3, fsspec, redis, botocore) are translated into these once, at the edge where they
happen, so callers — the CLI above all — only ever catch ``ModelLedgerError`` and print one line.
Each class carries the exit code the CLI uses for it.
"""

from __future__ import annotations


class ModelLedgerError(Exception):
    """Base of every error the registry raises on purpose."""

    exit_code = 1


class ValidationError(ModelLedgerError, ValueError):
    """Bad input: a name, reference, JSON document, size, URL or path that is refused."""

    exit_code = 2


class NotFoundError(ModelLedgerError, LookupError):
    """An unknown model, version, alias or event."""

    exit_code = 3


class ConflictError(ModelLedgerError):
    """The command cannot apply to the current state (deleted model, alias already there, ...)."""

    exit_code = 4


class AlreadyExistsError(ConflictError):
    """Creating what exists already (MLflow's RESOURCE_ALREADY_EXISTS)."""


class ConcurrencyError(ConflictError):
    """Another writer appended to the stream first (the UNIQUE(stream, version) signal)."""


class IdempotencyError(ConflictError):
    """An idempotency key was reused for a different request."""


class StoreError(ModelLedgerError):
    """The event store or a projection failed (locked too long, disk full, read-only, corrupt)."""

    exit_code = 5


class IntegrityError(ModelLedgerError):
    """The log fails a check: a broken hash chain, a gap, a time going backwards, a tampered row."""

    exit_code = 6


class ArtifactError(ModelLedgerError):
    """An artifact could not be read, stored, verified or written back."""

    exit_code = 7


class PurgedError(ArtifactError):
    """The artifact's bytes were purged by gc; the version's record remains."""


class AuthenticationError(ModelLedgerError):
    """No credentials, or credentials that are unknown, revoked or expired (the HTTP server's 401)."""

    exit_code = 8


class PermissionDeniedError(ModelLedgerError):
    """Valid credentials without the right to do this (a reader writing, a writer outside its prefix)."""

    exit_code = 9


class TooLargeError(ValidationError):
    """A request body or an upload larger than allowed (HTTP 413)."""
