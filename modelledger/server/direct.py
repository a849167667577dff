"""The hot routes answered without FastAPI's per-request machinery: a dict from (method, path) to a handler,
in front of the FastAPI app, which still serves every other request and every request this layer declines.

Why: a set-tag's command costs ~0.44 ms of CPU here, and FastAPI around it another ~0.5 ms (in-process ASGI
calls, no profiler, medians of 400): matching the path against every route (55–75 µs for MLflow's paths, which
sit behind ``/api/v1`` and the web UI), solving the token check as a dependency, validating the body, and
three hops to the thread pool for a ``/api/v1`` write (the token check, the route, the validation of the
returned dict), then ``jsonable_encoder`` walking MLflow's answers. Here a request takes one hop: token
check, body, command and JSON encoding in one worker thread; or none, for a write in ``ON_LOOP`` that is the
process's only request in flight (``_on_loop``): it runs on the event loop inside ``without_waiting()``, so
the loop never sleeps in the queue of writers (a taken lock raises ``WouldWait`` before anything is written,
and the request goes to the thread pool as any other); it waits only for its own commit (docs/http.md).

What stays the same: the same route functions run with the same arguments, the same body models validate the
body, and errors have the same statuses and bodies (``errors.error_body``, MLflow's ``error_response``). A
``/api/v1`` write whose body is not a JSON object the model accepts is handed to FastAPI unchanged (its body
replayed), so every refusal of a malformed request is FastAPI's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventstore.errors import ModelLedgerError
from eventstore.writelock import WouldWait, without_waiting

from . import mlflow_api
from . import models as m
from . import routes as r
from .errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[Request, bytes], Awaitable[Response | None]]  # None: let FastAPI answer

# The /api/v1 writes of one shape: ``fn(body, request, who, key)`` returning a dict.
WRITES: dict[str, tuple[type[BaseModel], Callable[..., dict[str, Any]]]] = {
    "/register": (m.RegisterBody, r.register),
    "/update": (m.UpdateBody, r.update),
    "/tag": (m.TagBody, r.tag),
    "/untag": (m.UntagBody, r.untag),
    "/metrics": (m.MetricsBody, r.metrics),
    "/alias": (m.AliasBody, r.alias),
    "/unalias": (m.NameAliasBody, r.unalias),
    "/rollback": (m.NameAliasBody, r.rollback),
    "/delete": (m.DeleteBody, r.delete),
    "/undelete": (m.RefBody, r.undelete),
}


# The writes that may run on the event loop itself (``_write``): commands that read and write the registry's
# database and nothing else (no artifact, no URL to fetch, no blob store to ask); a register or update only
# as ``database_only`` tells.
ON_LOOP = frozenset({"/tag", "/untag", "/metrics", "/alias", "/unalias", "/rollback", "/delete", "/register",
                     "/update"})
ALONE = "mledger.alone"  # scope key: no other request of this process was in flight when this one came
# A process that had two requests in flight at once runs every write in the thread pool for this long: under
# concurrent clients a request arriving while another's command held the loop (its fsync included) would
# wait for it before even being parsed, where the pool overlaps one request's Python with another's fsync.
CROWDED_S = 1.0


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the next app a body already read whole, then the connection's own messages (a
    disconnect): what the body limit and the dispatch below do after reading a request."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def encode(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON as FastAPI writes a route's returned dict (pydantic's compiled serializer): 0.06 ms for an MLflow
    search answer of 100 versions, against 0.18 ms through ``json.dumps``."""
    return Response(to_json(content), status_code=status, headers=headers, media_type="application/json")


def ledger_error(exc: ModelLedgerError) -> JSONResponse:
    """The app's answer to one of the project's errors (``app.on_error`` uses it too)."""
    status, payload = error_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(payload, status_code=status, headers=headers)


def _json_type(request: Request) -> bool:
    kind = request.headers.get("content-type")
    if kind is None:
        return True  # FastAPI reads a body without a content type as JSON too
    main = kind.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


def _on_loop(request: Request) -> bool:
    """May this request's command run on the event loop? Only when no other request of this process is in
    flight (none waits behind it, and none holds the write lock while it waits for the loop: a streamed
    upload) and the log is SQLite's (PostgreSQL's statements wait on the network)."""
    return request.scope.get(ALONE, False) and request.app.state.registry.recorder.dialect == "sqlite"


def database_only(request: Request, body: BaseModel) -> bool:
    """Does this write touch the registry's database alone? A register or update whose artifact is a small
    file carried in the body (``content_base64``) that the tiered store keeps in the database, written by the
    command's own transaction (``TieredBlobStore.deferring``), with a local file tier (asked whether it holds
    the blob already: one ``stat``); an update without an artifact; every other write in ``ON_LOOP``."""
    art = getattr(body, "artifact", None)
    if art is None:
        return True
    if not isinstance(art, dict) or "content_base64" not in art:
        return False  # uploaded blobs (the store is asked) or a URL (fetched)
    size = art.get("size")
    return type(size) is int and request.app.state.registry.store().writes_in_transaction(size)


def _write(model: type[BaseModel], fn: Callable[..., dict[str, Any]], on_loop: bool = False) -> Handler:
    async def handle(request: Request, raw: bytes) -> Response | None:
        if not _json_type(request):
            return None
        try:
            body = model.model_validate(json.loads(raw))
        except (ValueError, PydanticError):  # not JSON, or not this body: FastAPI's own refusal
            return None

        def run() -> Response:
            try:
                who = r.caller(request, request.headers.get("authorization"))
                return encode(fn(body, request, who, request.headers.get("idempotency-key")))
            except WouldWait:
                raise
            except ModelLedgerError as exc:
                return ledger_error(exc)

        if on_loop and _on_loop(request) and database_only(request, body):
            # Two thread switches fewer per request (1 client, tags: p50 1.8 -> 1.1 ms, docs/performance.md).
            # The loop then waits for the command's own work, fsync included, never for another writer: the
            # write lock is taken only if free at once, else nothing was written and the command runs again
            # in the thread pool, where waiting is allowed.
            try:
                with without_waiting():
                    return run()
            except WouldWait:
                pass
        return await anyio.to_thread.run_sync(run)

    return handle


def _mlflow(fn: Callable[..., Any], on_loop: bool = False) -> Handler:
    async def handle(request: Request, raw: bytes) -> Response:
        try:
            body = mlflow_api.parse_body(request, raw)
        except mlflow_api.MlflowError as exc:
            return mlflow_api.error_response(exc)

        def run() -> Response:
            try:
                answer = fn(request, body)
            except WouldWait:
                raise
            except (mlflow_api.MlflowError, ModelLedgerError) as exc:
                return mlflow_api.error_response(exc)
            return answer if isinstance(answer, Response) else encode(answer)

        if on_loop and _on_loop(request):
            # As ``_write``: MlflowClient's set_model_version_tag is a registered-models/get then a set-tag,
            # two hops to the pool and back per call otherwise. A route here is one command and nothing
            # after it, or reads only, so a ``WouldWait`` (raised before anything is written) lets the whole
            # call run again in the pool without doing anything twice.
            try:
                with without_waiting():
                    return run()
            except WouldWait:
                pass
        return await anyio.to_thread.run_sync(run)

    return handle


def table() -> dict[tuple[str, str], Handler]:
    found: dict[tuple[str, str], Handler] = {}
    for path, (model, fn) in WRITES.items():
        found[("POST", r.API + path)] = _write(model, fn, path in ON_LOOP)
    for method, path, fn in mlflow_api.FIXED_ROUTES:
        found[(method, path)] = _mlflow(fn, fn in mlflow_api.ON_LOOP)
    return found


class Direct:
    """ASGI layer: a request whose (method, path) is in ``table()`` is answered here, any other (or one its
    handler declines) by ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = table()
        self.in_flight = 0  # this process's HTTP requests being answered (touched on the event loop only)
        self.crowded_until = 0.0  # monotonic time until which nothing runs on the loop (``CROWDED_S``)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        now = time.monotonic()
        if self.in_flight > 1:
            self.crowded_until = now + CROWDED_S
        try:
            scope[ALONE] = self.in_flight == 1 and now >= self.crowded_until
            await self._dispatch(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        handler = self.routes.get((scope["method"], path))
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        raw = await request.body()
        response = await handler(request, raw)
        if response is None:
            await self.app(scope, replaying(raw, receive), send)
            return
        await response(scope, receive, send)
