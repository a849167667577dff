"""The live log: JSON Lines of the events after a position, and server-sent events that follow the log.

Each server-sent event's ``id`` is its position, so a client that reconnects with ``Last-Event-ID`` misses
nothing and sees nothing twice. Between batches the stream waits with the recorder's ``wait_for_change``
where it has one (PostgreSQL: LISTEN/NOTIFY), else polls the head from the last position it sent; nothing is
kept per client but that position.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi import Request

from modelledger.registry import Registry

PAGE = 500
POLL = 0.25  # seconds between head reads when the recorder cannot wake us
WAIT = 5.0  # a wait_for_change call returns at least this often (to notice a gone client)
KEEPALIVE = 15.0  # a comment line this often keeps proxies from closing an idle stream


def log_lines(reg: Registry, since: int, limit: int | None) -> Iterator[bytes]:
    """The events after ``since`` (at most ``limit``), one JSON object per line, read a page at a time."""
    left = limit
    while left is None or left > 0:
        page = PAGE if left is None else min(PAGE, left)
        batch = list(reg.log(since=since, limit=page))
        for e in batch:
            yield (json.dumps(e.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
        if len(batch) < page:
            return
        since = batch[-1].position
        if left is not None:
            left -= len(batch)


async def _wait(reg: Registry, position: int, timeout: float) -> None:
    """Until the log passes ``position`` or ``timeout`` seconds pass. Polling sleeps on the event loop, not in
    a worker thread: an idle stream must not hold one of the threads the other routes run in."""
    waiter = getattr(reg.recorder, "wait_for_change", None)
    if waiter is not None:
        await anyio.to_thread.run_sync(waiter, position, timeout, abandon_on_cancel=True)
        return
    end = anyio.current_time() + timeout
    while anyio.current_time() < end:
        if await anyio.to_thread.run_sync(reg.head) > position:
            return
        await anyio.sleep(POLL)


def _page(reg: Registry, since: int) -> list:
    return list(reg.log(since=since, limit=PAGE))


async def sse_events(request: Request, reg: Registry, since: int) -> AsyncIterator[bytes]:
    position = since
    idle = 0.0
    yield b"retry: 1000\n\n"
    while not await request.is_disconnected():
        batch = await anyio.to_thread.run_sync(_page, reg, position)
        for e in batch:
            data = json.dumps(e.to_json(), ensure_ascii=False)
            yield f"id: {e.position}\nevent: {e.type}\ndata: {data}\n\n".encode()
            position = e.position
        if batch:
            idle = 0.0
            continue
        started = anyio.current_time()
        await _wait(reg, position, WAIT)
        idle += anyio.current_time() - started
        if idle >= KEEPALIVE:
            idle = 0.0
            yield b": keep-alive\n\n"
