"""``mledger serve``: uvicorn running ``app.from_environment`` in one or more worker processes."""

from __future__ import annotations

import os

from eventstore.errors import ValidationError
from modelledger.config import Config

from .app import ANONYMOUS_READ_ENV


def serve(config: Config, *, host: str, port: int, workers: int, allow_anonymous_read: bool) -> int:
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
                log_level="info", proxy_headers=True, server_header=False)
    return 0
