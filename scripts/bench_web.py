"""How long the web UI's pages take over a registry of N models, beside the SDK read each page is built on
(measured in the same run): the page's cost is what rendering adds to the read.

    .venv/bin/python scripts/bench_web.py [N]       # default 1000 models, one version and one metric each
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "web")]

from fastapi.testclient import TestClient  # noqa: E402
from web_app import make_app  # noqa: E402

from modelledger import Registry  # noqa: E402


def median_ms(fn: Callable[[], object], n: int = 5) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    art = tmp / "w.bin"
    art.write_bytes(b"x" * 100)
    with Registry.open(tmp / "home", actor="bench") as reg:
        for i in range(n):
            v = reg.register(f"model-{i:05d}", artifact=str(art), tags={"team": f"t{i % 7}"},
                             description=f"model number {i}")
            reg.metrics(v, accuracy=(i * 37 % 100) / 100)
        client = TestClient(make_app(reg))
        cases = [  # page, the SDK read it stands on
            ("/", lambda: reg.catalog().list()),
            ("/?sort=accuracy", lambda: reg.catalog().search()),
            ("/?tag=team=t3", lambda: reg.catalog().list(tags={"team": "t3"})),
            (f"/?as_of=%23{n}", lambda: reg.catalog(f"#{n}").list()),
            ("/models/model-00007", lambda: reg.catalog().model("model-00007")),
            ("/log", lambda: list(reg.log(since=reg.head() - 50))),
        ]
        print(f"{n} models, {reg.head()} events")
        print(f"{'page':32s} {'page ms':>9s} {'SDK read ms':>12s} {'ratio':>6s}")
        for path, read in cases:
            page = median_ms(lambda path=path: client.get(path).raise_for_status())
            base = median_ms(read)
            print(f"{path:32s} {page:9.1f} {base:12.1f} {page / base:6.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
