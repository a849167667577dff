"""Screenshots of the web UI for docs/web.md: a fresh registry (the browser tests' one), the UI served by
uvicorn, Debian's headless chromium driven by playwright.

    .venv/bin/python scripts/web_screenshots.py [docs/screenshots]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "web")]

from playwright.sync_api import sync_playwright  # noqa: E402
from test_browser import CHROMIUM, Server  # noqa: E402
from web_support import populate  # noqa: E402

SHOTS = [  # file, path (with {before}: the position before the promotion), full page
    ("catalog.png", "/?sort=accuracy", False),
    ("model.png", "/models/vision/resnet", True),
    ("version-unsafe.png", "/models/digits/-/versions/1", True),
    ("diff.png", "/diff?a=vision/resnet@1&b=vision/resnet@2", True),
    ("history.png", "/models/vision/resnet/-/history", False),
    ("past.png", "/models/vision/resnet?as_of=%23{before}", False),
    ("audit.png", "/audit", False),
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        built = populate(Path(tmp) / "home", Path(tmp) / "inputs")
        server = Server(built.home)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.url)
                for name, path, full in SHOTS:
                    page.goto(path.format(before=built.before_promotion))
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(out / name), full_page=full)
                    print(out / name)
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
