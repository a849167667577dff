"""``mledger serve``: uvicorn running ``app.from_environment`` in one or more worker processes.

uvicorn's settings, and why (docs/http.md, "Why FastAPI and uvicorn"):

- ``http="httptools"``, ``loop="uvloop"``: the C parser and event loop. Both are dependencies of the
  ``server`` extra; uvicorn's default ("auto") would fall back to the pure-Python h11 and asyncio without a
  word if one were missing, so they are named: a server missing them does not start.
- ``access_log``: off unless ``--access-log``. A line per request (on stdout) cost a tag 0.09 ms of
  server CPU out of 0.95 (1 client, medians of 4 alternating runs, docs/performance.md); the log itself
  records who changed what (``mledger history``), and a proxy in front logs requests anyway.
"""

from __future__ import annotations

import os

from eventstore.errors import ValidationError
from modelledger.config import Config

from .app import ANONYMOUS_READ_ENV


def serve(config: Config, *, host: str, port: int, workers: int, allow_anonymous_read: bool,
          access_log: bool = False) -> int:
    import uvicorn

    if not 1 <= workers <= 256:
        raise ValidationError("--workers must be 1 to 256")
    if not 0 <= port <= 65535:
        raise ValidationError("--port must be 0 to 65535")
    # Each worker process builds its app from the environment: pass the resolved configuration down.
    os.environ.update({"MLEDGER_HOME": str(config.home), "MLEDGER_ARTIFACTS": config.artifacts,
                       "MLEDGER_BROKER": config.broker, "MLEDGER_ACTOR": config.actor,
                       ANONYMOUS_READ_ENV: "1" if allow_anonymous_read else "0"})
    Config.load()  # bad settings: refused here, once, not in every worker
    uvicorn.run("modelledger.server.app:from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="info", proxy_headers=True, server_header=False, http="httptools", loop="uvloop",
                access_log=access_log)
    return 0
