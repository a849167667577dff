"""`mledger serve` serves the web UI at / beside the APIs, judged by the same token check: a browser that signed
in once reads pages and the JSON API's reads (the live stream, downloads) with its cookie, never a write."""

from __future__ import annotations

import pytest

pytest.importorskip("jinja2")


def test_pages_need_a_token_and_the_cookie_reads_but_never_writes(make_client, tokens) -> None:
    browser = make_client()
    first = browser.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login")
    refused = browser.post("/login", data={"token": "mlt_wrong", "next": "/"}, follow_redirects=False)
    assert refused.status_code == 401 and "mledger_token" not in refused.cookies
    signed = browser.post("/login", data={"token": tokens["writer"], "next": "/"}, follow_redirects=False)
    assert signed.status_code == 303 and "mledger_token" in browser.cookies
    assert browser.get("/").status_code == 200
    assert browser.get("/api/v1/list").status_code == 200  # a read of the API: the cookie counts
    write = browser.post("/api/v1/tag", json={"ref": "m", "tags": {"k": "v"}})
    assert write.status_code == 401  # a write: the cookie never counts (CSRF)


def test_anonymous_read_serves_pages_without_login(make_client) -> None:
    assert make_client(allow_anonymous_read=True).get("/").status_code == 200
