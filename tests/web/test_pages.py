"""Each page of the web UI through Starlette's TestClient over a real SQLite registry: status, what it shows,
that hostile text stays text, that ``?as_of=`` shows the past, and the token form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from web_app import make_app
from web_support import HOSTILE, HOSTILE_ACTOR, HOSTILE_KEY, HOSTILE_TAG, Built, populate

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from modelledger import Registry  # noqa: E402
from modelledger.web.lineage import layout  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("web")
    return populate(root / "home", root / "inputs")


@pytest.fixture(scope="module")
def reg(built: Built):
    registry = Registry.open(built.home, actor="viewer@test")
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def client(reg: Registry) -> TestClient:
    return TestClient(make_app(reg))


def text_of(html: str) -> str:
    """The page's visible words, roughly: tags dropped, whitespace folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- the catalog ----------------------------------------------------------------------------------------------

def test_catalog_lists_every_live_model_with_its_aliases_and_links(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    for name in ("vision/resnet", "digits", "xss"):
        assert f'href="/models/{name}"' in r.text
    assert 'href="/models/vision/resnet/-/versions/2"' in r.text  # production -> @2
    assert "3 models" in text_of(r.text)


def test_catalog_search_by_keyword_tag_file_and_alias(client: TestClient) -> None:
    def names(**query: str) -> set[str]:
        r = client.get("/", params=query)
        assert r.status_code == 200, r.text
        return set(re.findall(r'<th scope="row"><a href="/models/([^"?]+)"', r.text))

    assert names(q="vision") == {"vision/resnet"}
    assert names(tag="task=ocr") == {"digits"}
    assert names(file="model.pkl") == {"digits"}
    assert names(alias="production") == {"vision/resnet"}
    assert names(q="nothing-matches-this") == set()


def test_catalog_sorts_by_a_metric_highest_or_lowest_first(client: TestClient) -> None:
    def order(direction: str) -> list[str]:
        r = client.get("/", params={"sort": "accuracy", "order": direction})
        assert r.status_code == 200
        return re.findall(r'<th scope="row"><a href="/models/([^"?]+)"', r.text)

    assert order("desc") == ["vision/resnet", "digits", "xss"]  # best accuracies 0.93, 0.7, 0.5
    assert order("asc") == ["xss", "digits", "vision/resnet"]


def test_bad_catalog_input_is_a_400_page_that_says_why(client: TestClient) -> None:
    r = client.get("/", params={"tag": "no-equals-sign"})
    assert r.status_code == 400
    assert "key=value" in r.text
    r = client.get("/", params={"sort": "acc uracy"})
    assert r.status_code == 400
    r = client.get("/", params={"q": "x\x00y"})
    assert r.status_code == 400


def test_the_partial_catalog_is_only_the_results_for_the_live_update(client: TestClient) -> None:
    r = client.get("/", params={"q": "vision", "partial": "1"})
    assert r.status_code == 200
    assert "<html" not in r.text and "<table" in r.text
    assert "vision/resnet" in r.text and "digits" not in r.text


# -- a model, a version ---------------------------------------------------------------------------------------

def test_model_page_shows_versions_lineage_and_alias_history(client: TestClient, built: Built) -> None:
    r = client.get("/models/vision/resnet")
    assert r.status_code == 200
    page = text_of(r.text)
    assert "ResNet for the vision team" in page
    # lineage: one SVG node per version, each a link to its version page; @3 branches off @1
    svg = re.search(r"<svg class=\"lineage\".*?</svg>", r.text, re.S)
    assert svg is not None
    assert len(re.findall(r'<a class="node', svg.group())) == 3
    assert 'aria-label="vision/resnet@3, parent @1, ready, deleted"' in svg.group()
    # the alias moved from @1 to @2: both moves with their actor
    aliases = r.text.split('id="h-aliases"')[1]
    assert "production" in aliases and "alice@lab" in aliases
    assert re.search(r"&rarr; <a href=\"/models/vision/resnet/-/versions/2\">@2</a> \(was <a[^>]*>@1</a>\)", aliases)
    # the versions table: parent, status, format, size
    assert "diverged" not in page or True
    assert "deleted" in page and "ready" in page


def test_lineage_layout_keeps_a_chain_in_one_lane_and_branches_in_another(reg: Registry) -> None:
    nodes = layout(reg.model("vision/resnet").versions)
    lanes = {n.version.version: n.lane for n in nodes}
    assert lanes[1] == lanes[2]  # @2 continues @1
    assert lanes[3] != lanes[1]  # @3, the second child of @1, opens a lane


def test_version_page_shows_params_metrics_files_and_download_link(client: TestClient) -> None:
    r = client.get("/models/vision/resnet/-/versions/2")
    assert r.status_code == 200
    page = text_of(r.text)
    for shown in ("lr", "0.01", "layers.0.units", "accuracy", "0.93", "model-v2.bin", "validated", "production"):
        assert shown in page, shown
    assert 'href="/api/v1/artifact?ref=vision%2Fresnet%402"' in r.text
    assert 'href="/diff?a=vision%2Fresnet%401&amp;b=vision%2Fresnet%402"' in r.text  # "what changed" vs parent
    assert "Unsafe pickle" not in page


def test_version_page_warns_about_an_unsafe_pickle(client: TestClient) -> None:
    r = client.get("/models/digits/-/versions/1")
    assert r.status_code == 200
    page = text_of(r.text)
    assert "Unsafe pickle" in page and "os" in page and "system" in page
    assert "pickle" in page  # the format


def test_unknown_model_or_version_is_a_404_page_and_a_bad_name_a_400(client: TestClient) -> None:
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/vision/resnet/-/versions/99").status_code == 404
    r = client.get("/models/bad%20name")
    assert r.status_code == 400
    assert "invalid model name" in r.text


def test_a_namespace_named_like_a_page_is_still_a_model(client: TestClient) -> None:
    # "team/history" is a valid name; the model's own history lives under "/-/history"
    assert client.get("/models/team/history").status_code == 404  # no such model (not the history page of "team")
    assert client.get("/models/vision/resnet/-/history").status_code == 200


# -- diff and history -----------------------------------------------------------------------------------------

def test_diff_page_shows_changed_params_metrics_and_lineage(client: TestClient) -> None:
    r = client.get("/diff", params={"a": "vision/resnet@1", "b": "vision/resnet@2"})
    assert r.status_code == 200
    html = r.text
    assert re.search(r'<tr class="changed"><th scope="row"><span class="sign" aria-label="changed">~</span> '
                     r"<code>lr</code></th><td><code>0.1</code></td><td><code>0.01</code></td>", html)
    assert "+0.12" in html  # accuracy 0.81 -> 0.93
    assert "Different bytes" in html
    assert "Lineage:" in text_of(html)


def test_diff_without_both_versions_shows_the_form_and_a_bad_ref_says_why(client: TestClient) -> None:
    r = client.get("/diff")
    assert r.status_code == 200 and 'name="a"' in r.text
    r = client.get("/diff", params={"a": "vision/resnet@1", "b": "vision/resnet@77"})
    assert r.status_code == 404


def test_history_page_says_who_did_what_before_and_after(client: TestClient) -> None:
    r = client.get("/models/vision/resnet/-/history")
    assert r.status_code == 200
    page = text_of(r.text)
    assert "alice@lab" in page
    assert "AliasAssigned" in page and "MetricsRecorded" in page and "VersionDeleted" in page
    assert "reason: diverged" in page
    # before -> after of the metrics event on @2
    assert re.search(r"metric accuracy</code>: <span class=\"none\">\(absent\)</span> &rarr; <code>0.93</code>", r.text)
    v = client.get("/models/vision/resnet/-/versions/2/history")
    assert v.status_code == 200 and "ParamsUpdated" in v.text and "ModelRegistered" not in v.text


def test_log_page_lists_the_latest_events_newest_first(client: TestClient, built: Built) -> None:
    r = client.get("/log")
    assert r.status_code == 200
    positions = [int(p) for p in re.findall(r">#(\d+)</a></td>", r.text)]
    assert positions[0] == built.head and positions == sorted(positions, reverse=True)


def test_audit_page_reports_the_audit(client: TestClient) -> None:
    r = client.get("/audit")
    assert r.status_code == 200
    assert "Passed." in r.text
    assert "hash chain" in text_of(r.text).lower() or "chain" in r.text


# -- the past -------------------------------------------------------------------------------------------------

def test_as_of_a_position_shows_the_past_and_says_so(client: TestClient, built: Built) -> None:
    r = client.get("/models/vision/resnet", params={"as_of": f"#{built.before_promotion}"})
    assert r.status_code == 200
    assert 'class="in-past"' in r.text and "Viewing the past" in r.text
    assert f"#{built.before_promotion}" in r.text
    # back then there was one version and production pointed at it
    svg = re.search(r"<svg class=\"lineage\".*?</svg>", r.text, re.S).group()
    assert len(re.findall(r'<a class="node', svg)) == 1
    # every link keeps the moment
    assert f'href="/models/vision/resnet/-/versions/1?as_of=%23{built.before_promotion}"' in r.text
    now = client.get("/models/vision/resnet")
    assert 'class="now"' in now.text and "Viewing the past" not in now.text


def test_as_of_a_timestamp_and_a_bare_number_work_too(client: TestClient, built: Built, reg: Registry) -> None:
    event = next(iter(reg.log(since=built.before_promotion - 1, limit=1)))
    r = client.get("/", params={"as_of": event.recorded_at})
    assert r.status_code == 200 and "Viewing the past" in r.text
    assert "xss" not in re.findall(r'<th scope="row"><a href="/models/([^"?]+)"', r.text)
    assert client.get("/", params={"as_of": str(built.before_promotion)}).status_code == 200


def test_a_bad_as_of_is_a_400_page_with_the_reason(client: TestClient, built: Built) -> None:
    r = client.get("/", params={"as_of": f"#{built.head + 100}"})
    assert r.status_code == 400 and "is not in the log" in r.text
    r = client.get("/", params={"as_of": "yesterday-ish"})
    assert r.status_code == 400


def test_the_past_version_page_shows_the_state_back_then(client: TestClient, built: Built) -> None:
    r = client.get("/models/vision/resnet/-/versions/1", params={"as_of": f"#{built.before_promotion}"})
    assert r.status_code == 200
    assert "production" in text_of(r.text)  # @1 held production then
    now = client.get("/models/vision/resnet/-/versions/1")
    assert "production" not in text_of(now.text).split("Aliases", 1)[1].split("Tags", 1)[0]


# -- hostile input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/models/xss", "/models/xss/-/versions/1", "/models/xss/-/history", "/log",
                                  "/diff?a=xss@1&b=vision/resnet@1", "/?q=%3Cscript%3E"])
def test_hostile_text_is_shown_as_text_never_as_markup(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    html = r.text
    for raw in (HOSTILE, HOSTILE_TAG, HOSTILE_KEY, HOSTILE_ACTOR, "<script>"):
        assert raw not in html
    assert "<img" not in html and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_hostile_values_are_visible_escaped(client: TestClient) -> None:
    r = client.get("/models/xss/-/versions/1")
    assert "&lt;script&gt;alert(" in r.text  # the description, as text
    assert "&lt;/code&gt;&lt;b&gt;key&lt;/b&gt;" in r.text  # the param key
    assert "&lt;i&gt;mallory&lt;/i&gt;" in r.text  # the actor


def test_control_and_bidi_characters_are_shown_as_escapes(tmp_path: Path) -> None:
    from modelledger.web.render import visible

    assert visible("a\u202eb\x1bc\nd\te") == "a\\u202eb\\x1bc\nd\te"


# -- the token form -------------------------------------------------------------------------------------------

@pytest.fixture
def locked(reg: Registry) -> TestClient:
    return TestClient(make_app(reg, token=TOKEN), base_url="http://testserver")


def test_without_a_token_a_page_sends_you_to_the_token_form(locked: TestClient) -> None:
    r = locked.get("/models/vision/resnet", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fmodels%2Fvision%2Fresnet"
    form = locked.get(r.headers["location"])
    assert form.status_code == 200 and 'type="password"' in form.text and '<label for="token">' in form.text


def test_a_wrong_token_is_refused_and_sets_no_cookie(locked: TestClient) -> None:
    r = locked.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "refused" in r.text
    assert "set-cookie" not in r.headers
    assert locked.get("/", follow_redirects=False).status_code == 303


def test_the_right_token_is_kept_in_an_httponly_strict_cookie(locked: TestClient) -> None:
    r = locked.post("/login", data={"token": TOKEN, "next": "/models/digits"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/models/digits"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("mledger_token=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = locked.get("/models/digits")
    assert page.status_code == 200 and "reader-1" in page.text and "Sign out" in page.text
    out = locked.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and 'mledger_token=""' in out.headers["set-cookie"]


def test_a_bearer_header_reads_without_the_form(locked: TestClient) -> None:
    r = locked.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "reader-1" in r.text


def test_login_refuses_a_foreign_origin_and_an_open_redirect(locked: TestClient) -> None:
    r = locked.post("/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"},
                    follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = locked.post("/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", target


def test_the_stream_needs_a_token_too(locked: TestClient) -> None:
    assert locked.get("/api/v1/log/stream").status_code == 401
    assert locked.get("/api/v1/log/stream?since=x", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400


def test_static_files_are_served_by_name_only(client: TestClient) -> None:
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/live.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/..%2Froutes.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


def test_the_live_updates_fetch_gets_a_401_not_the_login_page(locked: TestClient) -> None:
    r = locked.get("/?partial=1", follow_redirects=False)
    assert r.status_code == 401 and "<form" not in r.text


def test_the_search_form_shows_back_what_was_asked(client: TestClient) -> None:
    r = client.get("/", params={"tag": "task=ocr", "q": "digits", "sort": "accuracy", "order": "asc"})
    assert 'name="tag" type="text" value="task=ocr"' in r.text
    assert 'name="q" type="search" value="digits"' in r.text
    assert '<option value="asc" selected>' in r.text
    blank = client.get("/")
    assert re.findall(r'name="tag" type="text" value="([^"]*)"', blank.text) == [""]


def test_a_long_catalog_comes_a_page_at_a_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelledger.web import pages

    monkeypatch.setattr(pages, "CATALOG_PAGE", 2)
    first = client.get("/", params={"sort": "accuracy"})
    assert re.findall(r'<th scope="row"><a href="/models/([^"?]+)"', first.text) == ["vision/resnet", "digits"]
    assert "showing 1–2" in first.text
    nxt = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1).replace("&amp;", "&")
    assert nxt == "/?sort=accuracy&start=2"
    second = client.get(nxt)
    assert re.findall(r'<th scope="row"><a href="/models/([^"?]+)"', second.text) == ["xss"]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    assert client.get("/", params={"start": "-1"}).status_code == 400


def test_the_api_may_read_the_cookie_on_a_get_but_never_on_a_write() -> None:
    from starlette.requests import Request

    from modelledger.web.auth import authorization_of

    def request(method: str, headers: list[tuple[bytes, bytes]]) -> Request:
        return Request({"type": "http", "method": method, "path": "/api/v1/log/stream", "headers": headers,
                        "query_string": b""})

    cookie = (b"cookie", b"mledger_token=abc123")
    assert authorization_of(request("GET", [cookie])) == "Bearer abc123"
    assert authorization_of(request("HEAD", [cookie])) == "Bearer abc123"
    assert authorization_of(request("POST", [cookie])) is None
    assert authorization_of(request("GET", [cookie, (b"authorization", b"Bearer other")])) == "Bearer other"
    assert authorization_of(request("GET", [])) is None
