"""``GET /api/v1/log/stream``: the live log as server-sent events, the contract the catalog page follows.

The JSON API (modelledger/server/) owns this path; this module serves the same contract so the UI can run,
and be tested, on its own. Keep whichever the merge prefers. The contract (docs/web.md):

- each event of the log is one SSE message: ``id: <position>`` and ``data: <the event's JSON>`` (unnamed, so
  a browser's ``onmessage`` gets it);
- ``?since=N`` starts after position N (default: the head, i.e. only new events); a reconnecting client's
  ``Last-Event-ID`` header wins over it, so nothing is missed between two connections;
- a comment line every ``KEEPALIVE`` seconds keeps proxies from closing an idle stream.

The log is polled (every ``POLL`` seconds, reading only what is new): it works the same on every backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..registry import Registry
from . import auth

POLL = 0.25
KEEPALIVE = 15.0
BATCH = 500


def _start(request: Request, since: str | None, head: int) -> int | None:
    text = request.headers.get("last-event-id") or since
    if text is None or text == "":
        return head
    text = text.strip().lstrip("#")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def _read(reg: Registry, position: int) -> list:
    return list(reg.log(since=position, limit=BATCH))


def stream_router(open_registry: Callable[[], Registry], authorize: auth.Authorize, *,
                  poll: float = POLL) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/log/stream")
    async def log_stream(request: Request, since: str | None = None) -> Response:
        who = await anyio.to_thread.run_sync(auth.viewer, request, authorize)
        if who is None:
            return JSONResponse({"error": "unauthorized", "message": "a token is needed"}, status_code=401)
        reg = open_registry()
        start = _start(request, since, await anyio.to_thread.run_sync(reg.head))
        if start is None:
            return JSONResponse({"error": "bad_input", "message": "since / Last-Event-ID: give a position number"},
                                status_code=400)

        async def events() -> AsyncIterator[str]:
            position = start
            quiet = time.monotonic()
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                batch = await anyio.to_thread.run_sync(_read, reg, position)
                for e in batch:
                    yield f"id: {e.position}\ndata: {json.dumps(e.to_json(), separators=(',', ':'))}\n\n"
                    position = e.position
                if batch:
                    quiet = time.monotonic()
                    continue
                if time.monotonic() - quiet > KEEPALIVE:
                    yield ": keepalive\n\n"
                    quiet = time.monotonic()
                await anyio.sleep(poll)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return r
