"""The broker a registry names (``MLEDGER_BROKER`` or ``--broker``), checked without importing dramatiq.

``embedded`` (the default) is a StubBroker served by a worker thread in the same process; a ``redis://``,
``rediss://`` or ``unix://`` URL is a RedisBroker. Kept apart from ``workers.broker`` so that opening a
registry for a read checks the setting but loads neither dramatiq nor redis (``modelledger.registry``
binds the broker on first use).
"""

from __future__ import annotations

from eventstore.errors import ValidationError

EMBEDDED = "embedded"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_broker_url(url: str) -> str:
    """``url`` itself when it names a broker we can make; ``ValidationError`` otherwise."""
    if url == EMBEDDED or url.startswith(REDIS_SCHEMES):
        return url
    raise ValidationError(f"MLEDGER_BROKER must be 'embedded' or a redis:// URL, not {url!r}")


def is_embedded_url(url: str) -> bool:
    return check_broker_url(url) == EMBEDDED
