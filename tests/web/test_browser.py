"""The web UI in a real browser: Debian's headless Chromium (/usr/bin/chromium; never a downloaded one), driven by
playwright, against a real uvicorn process serving the UI over a registry this test builds.

Skipped where chromium or playwright is missing; under CI=true / MLEDGER_REQUIRE_SERVICES=1 that fails
instead (.ci/run installs the package)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import mledger_command, subprocess_env, unavailable
from web_support import Built, Server, populate

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-test-token"
WAIT_MS = 20_000  # generous: 2 shared cores; a wait, never a timing assertion


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        unavailable("Debian's chromium (/usr/bin/chromium; apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright for Python")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("browser")
    return populate(root / "home", root / "inputs")


@pytest.fixture(scope="module")
def server(built: Built) -> Iterator[Server]:
    s = Server(built.home)
    yield s
    s.stop()


@pytest.fixture
def page(browser, server: Server):  # noqa: ANN001, ANN201 - playwright types are imported lazily
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield p
    context.close()
    # A CSP violation or a script error shows here: the pages must run clean.
    assert not [e for e in errors if "api/v1" not in e], errors


def test_search_model_version_diff_then_the_past(page, built: Built) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Words").fill("resnet")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#count")).to_have_text(re.compile(r"^1 model matches"))
    page.get_by_role("link", name="vision/resnet", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("vision/resnet")
    expect(page.locator("svg.lineage a.node")).to_have_count(3)
    page.locator("table.versions").get_by_role("link", name="@2", exact=True).first.click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("vision/resnet@2")
    expect(page.locator("main")).to_contain_text("0.93")
    page.get_by_role("link", name="what changed").click()

    expect(page).to_have_url(re.compile(r"/diff\?a=vision%2Fresnet%401&b=vision%2Fresnet%402"))
    lr = page.locator("table.diff tr.changed", has=page.locator("code", has_text=re.compile(r"^lr$")))
    expect(lr).to_contain_text("0.1")
    expect(lr).to_contain_text("0.01")
    page.locator("main h2").get_by_role("link", name="vision/resnet@1").click()

    # @1 now: production has moved on to @2
    expect(page.locator("dl.facts").first).not_to_contain_text("production")
    page.get_by_label("Show as of").fill(f"#{built.before_promotion}")
    page.get_by_role("button", name="Show").click()

    expect(page.locator(".past-note")).to_contain_text(f"as of position #{built.before_promotion}")
    expect(page.locator("body")).to_have_class("in-past")
    expect(page.locator("dl.facts").first).to_contain_text("production")  # @1 held production back then
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="vision/resnet").click()

    expect(page).to_have_url(re.compile(rf"as_of=%23{built.before_promotion}$"))
    expect(page.locator("svg.lineage a.node")).to_have_count(1)  # @2 and @3 did not exist yet
    expect(page.locator(".past-note")).to_be_visible()
    page.get_by_role("link", name="Back to now").click()
    expect(page.locator("svg.lineage a.node")).to_have_count(3)
    expect(page.locator(".past-note")).to_have_count(0)


def test_the_catalog_updates_live_when_another_process_registers(page, server: Server, built: Built,
                                                                  tmp_path: Path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#count")).to_have_text(re.compile(r"^\d+ models"))
    before = page.locator("table.catalog tbody tr").count()
    expect(page.get_by_role("link", name="live-newcomer")).to_have_count(0)
    artifact = tmp_path / "w.bin"
    artifact.write_bytes(b"new weights\n")
    subprocess.run([*mledger_command(), "register", "live-newcomer", "--artifact", str(artifact),
                    "--description", "arrived while the page was open"],
                   env=subprocess_env(built.home), check=True, capture_output=True, timeout=120)

    expect(page.get_by_role("link", name="live-newcomer")).to_be_visible()  # no reload: the stream brought it
    expect(page.locator("table.catalog tbody tr")).to_have_count(before + 1)
    expect(page.locator("#live")).to_contain_text("updated at #")


def test_keyboard_skip_link_focus_order_and_search_without_a_mouse(page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.goto("/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()  # shown when focused
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()

    # From the top: the main navigation, then the time control, then the search form, in reading order.
    page.goto("/")
    order = []
    for _ in range(40):
        page.keyboard.press("Tab")
        ident = page.evaluate("() => { const e = document.activeElement;"
                              " return e.id || e.getAttribute('href') || e.textContent.trim(); }")
        order.append(ident)
        if ident == "q":
            break
    assert order[0] == "Skip to content" or order[0] == "#content"
    assert order.index("/diff") < order.index("as_of") < order.index("q"), order
    page.keyboard.type("digits")
    page.keyboard.press("Enter")
    expect(page.locator("#count")).to_have_text(re.compile(r"^1 model matches"))
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.getAttribute('href')") == "/models/digits":
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("digits")
    # the lineage graph's nodes are links the keyboard reaches, oldest version first
    page.goto("/models/vision/resnet")
    expect(page).to_have_title(re.compile(r"^vision/resnet · modelledger$"))
    labels = []
    for _ in range(40):
        page.keyboard.press("Tab")
        label = page.evaluate("() => document.activeElement.closest('svg') ?"
                              " document.activeElement.getAttribute('aria-label') : null")
        if label:
            labels.append(label)
        elif labels:
            break
    assert labels == ["vision/resnet@1, a root, ready", "vision/resnet@2, parent @1, ready, aliases production",
                      "vision/resnet@3, parent @1, ready, deleted"], labels
    page.goto("/models/digits")
    # the unsafe pickle's warning is on the version page, reached by keyboard as well
    page.get_by_role("link", name="@1", exact=True).first.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".warning")).to_contain_text("Unsafe pickle")


def test_a_token_is_asked_once_and_kept_in_an_httponly_cookie(browser, built: Built) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    locked = Server(built.home, token=TOKEN)
    try:
        context = browser.new_context(base_url=locked.url)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.goto("/models/digits")
        expect(page).to_have_url(re.compile(r"/login\?next=%2Fmodels%2Fdigits$"))
        page.get_by_label("Token").fill("not-it")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("refused")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("digits")
        cookie = next(c for c in context.cookies() if c["name"] == "mledger_token")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert "mledger_token" not in page.evaluate("() => document.cookie")  # no script can read it
        page.goto("/log")  # asked once: the next page needs no form
        expect(page.get_by_role("heading", level=1)).to_have_text("Log")
        expect(page.locator(".who")).to_contain_text("reader-1")
        context.close()
    finally:
        locked.stop()
