"""The web UI: read-only pages over the ``Registry`` (``routes.router``), served by ``mledger serve`` at ``/``.

``stream.stream_router`` serves the live log's server-sent events (``/api/v1/log/stream``) for when the UI runs
without the JSON API. See docs/web.md.
"""

from .routes import router
from .stream import stream_router

__all__ = ["router", "stream_router"]
