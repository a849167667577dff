"""The web UI on its own, as a test (and a screenshot session) serves it: the router plus the live log's
stream over one registry, with a token check standing in for the server's.

    uvicorn --factory web_app:build --app-dir tests/web      # MLEDGER_HOME=... [WEB_TEST_TOKEN=secret]

``WEB_TEST_TOKEN`` set: only ``Authorization: Bearer <it>`` reads (the viewer is ``reader-1``); unset: anyone
reads (``--allow-anonymous-read``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from fastapi import FastAPI
from starlette.requests import Request

from modelledger import Registry
from modelledger.web import router, stream_router


def bearer_check(token: str | None) -> Callable[[Request], str | None]:
    def authorize(request: Request) -> str | None:
        if token is None:
            return "anonymous"
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode()):
            return "reader-1"
        return None

    return authorize


def make_app(reg: Registry, token: str | None = None) -> FastAPI:
    app = FastAPI()
    authorize = bearer_check(token)
    app.include_router(stream_router(lambda: reg, authorize, poll=0.1))
    app.include_router(router(lambda: reg, authorize))
    return app


def build() -> FastAPI:
    reg = Registry.open(os.environ["MLEDGER_HOME"], client="web")
    app = make_app(reg, os.environ.get("WEB_TEST_TOKEN") or None)
    # Which test started this process (``web_support.Server``'s probe): another test's server may hold a
    # port its free_port() named a moment earlier.
    nonce = os.environ.get("WEB_TEST_NONCE", "")
    app.add_api_route("/__test_nonce", lambda: {"nonce": nonce}, methods=["GET"])
    return app
