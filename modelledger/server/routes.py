"""The JSON API under ``/api/v1``: one route per CLI command and read, each calling the ``Registry``.

Writes are ``POST /api/v1/<command>`` with a JSON body and an optional ``Idempotency-Key`` header; reads are
``GET /api/v1/<read>`` with query parameters, each taking ``as_of`` (``#N`` or an ISO-8601 time). Every write
checks the caller's role (and a writer's prefix) before anything is read for it or appended, and appends as
the token's name (``meta.actor``), whatever the body says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from eventstore.errors import ArtifactError, ModelLedgerError, NotFoundError, PurgedError, ValidationError
from eventstore.events import StoredEvent
from modelledger.inputs import check_search, pairs, parse_duration
from modelledger.purged import purged_live
from modelledger.registry import Registry
from projections.records import VersionRecord

from . import models as m
from .auth import Principal, authenticate
from .logstream import log_lines, sse_events
from .uploads import (
    BodyReader,
    allowed_source,
    check_declared,
    has_blob,
    inline_artifact,
    parse_range,
    receive_blob,
    stream_blob,
    uploaded_artifact,
)

API = "/api/v1"
MAX_KEY = 1024
CLIENT = "http"

router = APIRouter(prefix=API)


# -- who is calling ----------------------------------------------------------------------------------------

def registry(request: Request) -> Registry:
    return request.app.state.registry


def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    from modelledger.web.auth import authorization_of

    state = request.app.state
    # The header, else (a GET or HEAD only) the web UI's cookie: a browser's EventSource cannot send headers,
    # and the UI's download link is a plain link. A write never counts the cookie.
    presented = authorization if authorization is not None else authorization_of(request)
    return authenticate(state.registry.token_table, presented, allow_anonymous_read=state.allow_anonymous_read)


Caller = Annotated[Principal, Depends(caller)]
Key = Annotated[str | None, Header(alias="Idempotency-Key", description="a retry with the same key appends once")]
AsOf = Annotated[str | None, Query(description="#N (a position) or an ISO-8601 time: the registry as it was then")]


def _key(key: str | None) -> str | None:
    if key is not None and (not key or len(key) > MAX_KEY or any(ord(ch) < 32 for ch in key)):
        raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY} printable characters")
    return key


def acting(request: Request, who: Principal) -> Registry:
    """The registry, recording the token's name as the actor of what it appends."""
    return registry(request).acting_as(who.name, CLIENT)


def _events(events: list[StoredEvent]) -> dict[str, Any]:
    return {"events": [e.to_json() for e in events]}


def _tags(items: list[str] | None) -> dict[str, str]:
    return pairs(items or [], "tag")


def _as_of(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValidationError("as_of is empty: give #N or an ISO-8601 time")
    return value


# -- health -----------------------------------------------------------------------------------------------

@router.get("/health", tags=["server"])
def health(request: Request) -> dict[str, Any]:
    """No token needed: the load balancer's probe. Reads the head, so a broken database answers 503."""
    reg = registry(request)
    return {"ok": True, "registry_id": reg.registry_id, "head": reg.head()}


# -- writes ------------------------------------------------------------------------------------------------

def _artifact(reg: Registry, spec: dict[str, Any]) -> tuple[Registry, dict[str, Any] | str]:
    """The registry to run the command with and the artifact it names: an allowed URL, uploaded blobs, or a
    small file carried in the body (``content_base64``), held by the tiered store's deferring view until the
    command's transaction writes it with the events."""
    if "source" in spec:
        if set(spec) != {"source"}:
            raise ValidationError("artifact: a source URL stands alone")
        return reg, allowed_source(reg.sources, spec["source"])
    if "content_base64" in spec:
        store = reg.store()
        view = store.deferring() if hasattr(store, "deferring") else store  # as Registry._create
        return reg.with_store(view), inline_artifact(view, spec)
    return reg, uploaded_artifact(reg.store(), spec)


@router.post("/register", tags=["write"])
def register(body: m.RegisterBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """A new version of ``name`` (the model is created on first use) from uploaded blobs, a small file sent
    inside the body, or an allowed URL."""
    who.require_model(body.name)
    key = _key(key)
    reg, art = _artifact(acting(request, who), body.artifact)
    v = reg.register(body.name, art, description=body.description, tags=body.tags, params=body.params,
                     structure=body.structure, optimizer=body.optimizer, idempotency_key=key)
    return v.to_json()


@router.post("/update", tags=["write"])
def update(body: m.UpdateBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """Derive a new version from ``ref`` (params merge; structure/optimizer replace unless *_patch)."""
    who.require_ref(body.ref)
    key = _key(key)
    reg = acting(request, who)
    art = None
    if body.artifact is not None:
        reg, art = _artifact(reg, body.artifact)
    v = reg.update(body.ref, params=body.params, structure=body.structure, optimizer=body.optimizer,
                   artifact=art, description=body.description, structure_patch=body.structure_patch,
                   optimizer_patch=body.optimizer_patch, idempotency_key=key)
    return v.to_json()


@router.post("/tag", tags=["write"])
def tag(body: m.TagBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    return _events(acting(request, who).tag(body.ref, body.tags, idempotency_key=_key(key)))


@router.post("/untag", tags=["write"])
def untag(body: m.UntagBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    return _events(acting(request, who).untag(body.ref, *body.keys, idempotency_key=_key(key)))


@router.post("/metrics", tags=["write"])
def metrics(body: m.MetricsBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    return _events(acting(request, who).metrics(body.ref, body.metrics, idempotency_key=_key(key)))


@router.post("/alias", tags=["write"])
def alias(body: m.AliasBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    return _events(acting(request, who).alias(body.ref, body.alias, idempotency_key=_key(key)))


@router.post("/unalias", tags=["write"])
def unalias(body: m.NameAliasBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_model(body.name)
    return _events(acting(request, who).unalias(body.name, body.alias, idempotency_key=_key(key)))


@router.post("/rollback", tags=["write"])
def rollback(body: m.NameAliasBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """Move an alias back to the version it pointed to before; with a key, a retried rollback rolls back once."""
    who.require_model(body.name)
    return _events(acting(request, who).rollback(body.name, body.alias, idempotency_key=_key(key)))


@router.post("/delete", tags=["write"])
def delete(body: m.DeleteBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    return _events(acting(request, who).delete(body.ref, body.reason, idempotency_key=_key(key)))


@router.post("/undelete", tags=["write"])
def undelete(body: m.RefBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require_ref(body.ref)
    reg = acting(request, who)
    out = _events(reg.undelete(body.ref, idempotency_key=_key(key), fetchable=_fetchable(reg)))
    # Versions back without their bytes (a source this server may not fetch again): as `mledger undelete`
    # and `restore` report them.
    out["missing"] = purged_live(reg, body.ref)
    return out


def _fetchable(reg: Registry) -> Callable[[str], bool]:
    """Which recorded sources the server may fetch purged bytes from again (an undelete, a restore): only
    those its operator allowed (``MLEDGER_SOURCES``), never a path, never an upload (``upload://``: its bytes
    came in a request). Asked before anything is read, so the answer tells nothing about the server's files;
    a version whose source is not among them comes back ``purged`` and is reported missing."""
    def fetchable(source: str) -> bool:
        try:
            allowed_source(reg.sources, source)
        except ModelLedgerError:
            return False
        return True

    return fetchable


@router.post("/retry", tags=["write"])
def retry(body: m.RefBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """Ingest a failed or pending version's artifact again: only a source under MLEDGER_SOURCES."""
    who.require_ref(body.ref)
    reg = acting(request, who)
    version = reg.get(body.ref)
    allowed_source(reg.sources, version.artifact.get("source"))  # the server reads nothing a client named
    return reg.retry(body.ref, idempotency_key=_key(key)).to_json()


@router.post("/restore", tags=["admin"])
def restore(body: m.RestoreBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """Append the compensating events that make the catalog (or one model) what it was at ``as_of``."""
    who.require("admin")
    reg = acting(request, who)
    return reg.restore(body.name, as_of=body.as_of, dry_run=body.dry_run, idempotency_key=_key(key),
                       fetchable=_fetchable(reg))


@router.post("/gc", tags=["admin"])
def gc(body: m.GcBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require("admin")
    grace = parse_duration(body.grace)
    return acting(request, who).gc(grace, dry_run=body.dry_run, idempotency_key=_key(key))


# -- tokens ------------------------------------------------------------------------------------------------

@router.post("/tokens", tags=["admin"])
def create_token(body: m.TokenBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    """Grant a token; the answer holds its secret, the only time it is shown."""
    who.require("admin")
    expires = None if body.expires is None else parse_duration(body.expires)
    state, secret = acting(request, who).create_token(body.name, body.role, prefix=body.prefix, expires_in=expires,
                                                      idempotency_key=_key(key))
    return {**state.to_json(), "secret": secret}


@router.get("/tokens", tags=["admin"])
def list_tokens(request: Request, who: Caller) -> dict[str, Any]:
    who.require("admin")
    return {"tokens": [t.to_json() for t in registry(request).tokens()]}


@router.post("/tokens/revoke", tags=["admin"])
def revoke_token(body: m.RevokeBody, request: Request, who: Caller, key: Key = None) -> dict[str, Any]:
    who.require("admin")
    return _events(acting(request, who).revoke_token(body.name, body.reason, idempotency_key=_key(key)))


# -- reads -------------------------------------------------------------------------------------------------

def _page(items: list[Any], offset: int, limit: int | None) -> list[Any]:
    return items[offset: None if limit is None else offset + limit]


@router.get("/list", tags=["read"])
def list_models(request: Request, who: Caller, search: str | None = None,
                tag: Annotated[list[str] | None, Query()] = None, file: str | None = None,
                alias: str | None = None, deleted: bool = False, as_of: AsOf = None,
                limit: Annotated[int | None, Query(ge=0, le=100_000)] = None,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict[str, Any]:
    """Models matching every filter (keyword words, tags k=v, a file name, an alias), paginated."""
    catalog = registry(request).catalog(_as_of(as_of))
    found = catalog.list(search=check_search(search), tags=_tags(tag), file=file, alias=alias,
                         include_deleted=deleted, limit=None if limit is None else offset + limit)
    return {"models": [x.to_json() for x in _page(found, offset, limit)], "offset": offset}


def _metric_order(versions: list[VersionRecord], metric: str, minimize: bool) -> list[VersionRecord]:
    having = [v for v in versions if isinstance(v.metrics.get(metric), int | float)]
    lacking = [v for v in versions if not isinstance(v.metrics.get(metric), int | float)]
    having.sort(key=lambda v: (v.metrics[metric] if minimize else -v.metrics[metric], v.name, v.version))
    return having + lacking  # versions without the metric last, in catalog order


@router.get("/search", tags=["read"])
def search_versions(request: Request, who: Caller, keyword: str | None = None, name: str | None = None,
                    tag: Annotated[list[str] | None, Query()] = None, file: str | None = None,
                    alias: str | None = None, order_by: Annotated[str | None, Query(description="a metric")] = None,
                    min: bool = False, as_of: AsOf = None,
                    limit: Annotated[int | None, Query(ge=0, le=100_000)] = None,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict[str, Any]:
    """Live versions matching every filter, optionally ordered by a metric (best first), paginated."""
    catalog = registry(request).catalog(_as_of(as_of))
    found = catalog.search(keyword=check_search(keyword), name=name, tags=_tags(tag), file=file, alias=alias,
                           limit=None if (limit is None or order_by) else offset + limit)
    if order_by is not None:
        found = _metric_order(found, order_by, min)
    return {"versions": [v.to_json() for v in _page(found, offset, limit)], "offset": offset}


@router.get("/show", tags=["read"])
def show(request: Request, who: Caller, ref: str, as_of: AsOf = None) -> dict[str, Any]:
    """A model (``NAME``, with its versions) or a version (``NAME@N``, ``NAME@alias``)."""
    catalog = registry(request).catalog(_as_of(as_of))
    return catalog.get(ref).to_json() if "@" in ref else catalog.model(ref).to_json()


@router.get("/best", tags=["read"])
def best(request: Request, who: Caller, name: str, metric: str, min: bool = False,
         tag: Annotated[list[str] | None, Query()] = None, as_of: AsOf = None) -> dict[str, Any]:
    return registry(request).catalog(_as_of(as_of)).best(name, metric, minimize=min, tags=_tags(tag)).to_json()


@router.get("/history", tags=["read"])
def history(request: Request, who: Caller, ref: str, as_of: AsOf = None) -> dict[str, Any]:
    """Who did what when, with each event's before → after."""
    reg = registry(request)
    events = reg.history(ref, as_of=_as_of(as_of))
    return {"events": [e.to_json() for e in events], "changes": [x["changes"] for x in reg.changes(events)]}


@router.get("/diff", tags=["read"])
def diff(request: Request, who: Caller, a: str, b: str, as_of: AsOf = None, a_as_of: AsOf = None,
         b_as_of: AsOf = None) -> dict[str, Any]:
    return registry(request).diff(a, b, a_as_of=_as_of(a_as_of or as_of), b_as_of=_as_of(b_as_of or as_of))


@router.get("/audit", tags=["read"])
def audit(request: Request, who: Caller, deep: bool = False) -> JSONResponse:
    """The registry's checks; status 200 whatever they found (``ok`` says), a deep audit needs admin."""
    if deep:
        who.require("admin")
    return JSONResponse(registry(request).audit(deep=deep).to_json())


@router.get("/log", tags=["read"], response_class=StreamingResponse)
def log(request: Request, who: Caller, since: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1)] = None) -> StreamingResponse:
    """The events after position ``since``, as JSON Lines (one event per line, oldest first)."""
    return StreamingResponse(log_lines(registry(request), since, limit), media_type="application/jsonl")


@router.get("/log/stream", tags=["read"], response_class=StreamingResponse)
async def log_stream(request: Request, who: Caller, since: Annotated[int, Query(ge=0)] = 0,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> StreamingResponse:
    """Server-sent events: each event's id is its position; a client reconnecting with ``Last-Event-ID``
    gets everything after it."""
    start = since
    if last_event_id is not None:
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValidationError("Last-Event-ID must be a position")
        start = int(text)
    return StreamingResponse(sse_events(request, registry(request), start), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- bytes ------------------------------------------------------------------------------------------------

@router.head("/blobs/{digest}", tags=["artifacts"])
def blob_present(digest: str, request: Request, who: Caller, size: int) -> Response:
    """200 when the server holds this blob with this size (do not send it again), 404 otherwise."""
    check_declared(digest, size)
    present = has_blob(registry(request).store(), digest, size)
    return Response(status_code=200 if present else 404)


@router.put("/blobs/{digest}", tags=["artifacts"], status_code=201)
async def put_blob(digest: str, request: Request, who: Caller, size: int) -> dict[str, Any]:
    """Stream one blob into the store (hashed on the way; refused unless it is ``digest`` of ``size`` bytes)."""
    who.require("writer")
    check_declared(digest, size)
    store = registry(request).store()
    reader = BodyReader(request.stream(), size)
    return await anyio.to_thread.run_sync(receive_blob, store, reader, digest, size)


def _send_blob(request: Request, digest: str, size: int, filename: str | None = None) -> Response:
    store = registry(request).store()
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=31536000, immutable"}
    if filename:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quote(filename)}"
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag:
        wanted = None  # the client's partial copy is of other bytes: send them all
    try:
        span = parse_range(wanted, size)
    except ValueError:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    f = store.open_blob(digest)
    if span is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(stream_blob(f, 0, size - 1), media_type="application/octet-stream",
                                 headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(stream_blob(f, start, end), status_code=206, media_type="application/octet-stream",
                             headers=headers)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@router.get("/blobs/{digest}", tags=["artifacts"], response_class=StreamingResponse)
def get_blob(digest: str, request: Request, who: Caller) -> Response:
    """A blob's bytes (``ETag`` = the digest; ``Range`` resumes a cut download). A folder's files are blobs."""
    check_declared(digest, 0)
    size = registry(request).store().size_of(digest)
    return _send_blob(request, digest, size)


@router.get("/artifact", tags=["artifacts"], response_model=None)
def artifact(request: Request, who: Caller, ref: str, as_of: AsOf = None) -> Response | dict[str, Any]:
    """A version's artifact: a file's bytes (as ``GET /blobs``), or a folder's file list, whose blobs the
    client then fetches one by one (and verifies)."""
    reg = registry(request)
    version = reg.catalog(_as_of(as_of)).get(ref)
    art = version.artifact
    if version.status == "purged":
        raise PurgedError(f"{version.ref}: its artifact was purged by gc; the record remains")
    if version.status != "ready" or not art.get("digest"):
        raise ArtifactError(f"{version.ref} has no stored artifact (status {version.status})")
    if art.get("kind", "file") == "directory":
        files = reg.store().manifest(art["digest"])
        return {"version": version.to_json(), "kind": "directory", "digest": art["digest"],
                "files": [f.to_json() for f in files]}
    files = art.get("files") or []
    filename = files[0].get("path") if files and isinstance(files[0], dict) else None
    size = art.get("size")
    if not isinstance(size, int):
        raise NotFoundError(f"{version.ref}: the artifact's size is not recorded")
    return _send_blob(request, art["digest"], size, filename)

