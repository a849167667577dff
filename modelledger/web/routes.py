"""The web UI's routes: ``router(open_registry, authorize)`` gives a FastAPI router to include at ``/``.

Read-only pages rendered on the server (pages.py reads, templates/ render), a little JavaScript for the live
catalog and nothing that needs a build step. URLs:

    /                                       the catalog: ?q= &tag=k=v (repeatable) &file= &alias= &sort=METRIC &order=
    /models/NAME                            a model: versions, lineage, aliases and their history
    /models/NAME/-/versions/N               a version: params, structure, optimizer, metrics, files
    /models/NAME/-/history                  who did what when to the model (…/-/versions/N/history: one version)
    /diff?a=REF&b=REF                       two versions side by side
    /log                                    the registry's latest events
    /audit                                  the audit, run when the page is asked for
    /login, /logout                         the token form (only when ``authorize`` refuses an anonymous reader)

Every page takes ``?as_of=#N`` or ``?as_of=<ISO-8601 timestamp>`` and is then visibly in the past. A NAME holds
at most one "/", and "-" cannot be a name's part, so "/-/" separates a name from what follows it.

``open_registry()`` is called once per request and returns the process's ``Registry`` (the router never
closes it). ``authorize(request)`` returns the viewer's name, or None to refuse; see auth.py for the cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from eventstore.errors import ConflictError, ModelLedgerError, NotFoundError, StoreError, ValidationError

from ..registry import Registry
from . import auth, pages
from .render import HEADERS, HERE, page
from .timecontrol import Moment, href, moment

STATIC = {  # name -> media type; only these files are served (no path from a request reaches the disk)
    "app.css": "text/css; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
STATUS = ((ValidationError, 400), (NotFoundError, 404), (ConflictError, 409), (StoreError, 503))
MAX_FORM = 16 * 1024


def _status(exc: ModelLedgerError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def _now(reg: Registry) -> Moment | None:
    try:
        return Moment(None, reg.head())
    except ModelLedgerError:  # the store itself is what failed: a page without the time control
        return None


def router(open_registry: Callable[[], Registry], authorize: auth.Authorize) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def show(request: Request, template: str, build: Callable[[Registry, Moment], dict[str, Any]],
             as_of: str | None, nav: str, **extra: Any) -> Response:
        """Authorize, resolve the moment, build the page's data, render; an error is a page with a status."""
        who = auth.viewer(request, authorize)
        if who is None:
            if request.query_params.get("partial"):  # the live update's fetch: no login page in the table
                return Response("a token is needed", status_code=401, media_type="text/plain", headers=HEADERS)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(href("/login", next=target), status_code=303, headers=HEADERS)
        reg = open_registry()
        # The other query parameters, kept when the time control changes the moment.
        keep = [(k, v) for k, v in request.query_params.multi_items() if k not in ("as_of", "partial", "before")]
        common = {"viewer": who, "nav": nav, "path": quote(request.url.path, safe="/"), "as_of_asked": as_of or "",
                  "logged_in": auth.cookie_token(request) is not None, "keep": keep, "keep_query": urlencode(keep),
                  "step_query": lambda n: urlencode([*keep, ("as_of", f"#{n}")]), **extra}
        try:
            when = moment(reg, as_of)
        except ModelLedgerError as exc:
            # The time control stays on the page, to correct what was typed into it.
            return page("error.html", _status(exc), when=_now(reg), error=str(exc),
                        title="Cannot show that moment", **common)
        try:
            data = build(reg, when)
        except ModelLedgerError as exc:
            return page("error.html", _status(exc), when=when, error=str(exc), title="Not shown", **common)
        return page(template, when=when, **common, **data)

    @r.get("/")
    def catalog_page(request: Request, q: str | None = None, tag: list[str] = Query(default=[]),  # noqa: B008
                     file: str | None = None, alias: str | None = None, sort: str | None = None,
                     order: str = "desc", deleted: bool = False, as_of: str | None = None,
                     partial: bool = False, start: int = 0) -> Response:
        def build(reg: Registry, when: Moment) -> dict[str, Any]:
            return pages.catalog(reg, when, q=q, tags=tag, file=file, alias=alias, sort=sort, order=order,
                                 deleted=deleted, start=start)
        # partial: only the results, for the live update to swap in (same filters, same escaping).
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("partial", "start")]

        def at(offset: int) -> str:  # this listing from another row on (the pager's links)
            return "/?" + urlencode([*query, ("start", str(offset))] if offset else query)

        return show(request, "catalog_rows.html" if partial else "catalog.html", build, as_of, "catalog",
                    refresh="/?" + urlencode([*query, ("start", str(start)), ("partial", "1")]), at=at)

    @r.get("/models/{name:path}/-/versions/{number:int}/history")
    def version_history_page(request: Request, name: str, number: int, before: int | None = None,
                             as_of: str | None = None) -> Response:
        return show(request, "history.html",
                    lambda reg, when: pages.history(reg, when, f"{name}@{number}", before=before), as_of, "catalog",
                    name=name, number=number)

    @r.get("/models/{name:path}/-/versions/{number:int}")
    def version_page(request: Request, name: str, number: int, as_of: str | None = None) -> Response:
        return show(request, "version.html", lambda reg, when: pages.version(reg, when, name, number), as_of,
                    "catalog", name=name)

    @r.get("/models/{name:path}/-/history")
    def model_history_page(request: Request, name: str, before: int | None = None,
                           as_of: str | None = None) -> Response:
        return show(request, "history.html", lambda reg, when: pages.history(reg, when, name, before=before),
                    as_of, "catalog", name=name, number=None)

    @r.get("/models/{name:path}")
    def model_page(request: Request, name: str, as_of: str | None = None) -> Response:
        return show(request, "model.html", lambda reg, when: pages.model(reg, when, name), as_of, "catalog",
                    name=name)

    @r.get("/diff")
    def diff_page(request: Request, a: str | None = None, b: str | None = None,
                  as_of: str | None = None) -> Response:
        return show(request, "diff.html", lambda reg, when: pages.diff(reg, when, a, b), as_of, "diff")

    @r.get("/log")
    def log_page(request: Request, before: int | None = None, as_of: str | None = None) -> Response:
        return show(request, "log.html", lambda reg, when: pages.log(reg, when, before=before), as_of, "log")

    @r.get("/audit")
    def audit_page(request: Request, as_of: str | None = None) -> Response:
        # The audit proves the whole log as it is now; a past moment only changes where the other links go.
        return show(request, "audit.html", lambda reg, when: pages.audit(reg), as_of, "audit")

    @r.get("/static/{file}")
    def static(file: str) -> Response:
        if file not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = (HERE / "static" / file).read_bytes()
        return Response(body, media_type=STATIC[file], headers={"Cache-Control": "max-age=300",
                                                                 "X-Content-Type-Options": "nosniff"})

    # -- the token form ------------------------------------------------------------------------------------
    @r.get("/login")
    def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query's name
        return page("login.html", title="Sign in", next=auth.safe_next(next), error=None,
                    when=None, nav="login", viewer=None, logged_in=False)

    @r.post("/login")
    async def login(request: Request) -> Response:
        if not auth.same_origin(request):
            return Response("cross-site login refused", status_code=403, media_type="text/plain")
        body = await request.body()
        form = parse_qs(body[:MAX_FORM].decode("utf-8", "replace")) if len(body) <= MAX_FORM else {}
        token = (form.get("token") or [""])[0].strip()
        target = auth.safe_next((form.get("next") or ["/"])[0])
        who = await run_in_threadpool(auth.check_token, request, token, authorize)
        if who is None:
            return page("login.html", 401, title="Sign in", next=target, when=None, nav="login", viewer=None,
                        logged_in=False, error="That token was refused (unknown, revoked or expired).")
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(auth.COOKIE, token, max_age=auth.COOKIE_MAX_AGE, httponly=True, samesite="strict",
                            secure=auth.secure(request), path="/")
        return response

    @r.post("/logout")
    def logout(request: Request) -> Response:
        if not auth.same_origin(request):
            return Response("cross-site logout refused", status_code=403, media_type="text/plain")
        response = RedirectResponse("/login", status_code=303, headers=HEADERS)
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict", secure=auth.secure(request))
        return response

    return r

