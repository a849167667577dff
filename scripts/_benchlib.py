"""Small helpers for the ``scripts/bench*.py`` and the peers' workers: machine facts, medians, a table, temp
dirs, test files. Standard library only (a peer's venv imports it too).

Not part of the product (nothing imports it but the bench). Figures from a noisy machine are compared
with a baseline measured in the same run, as a ratio; absolute times are printed for orientation only.
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in load] if load else None,
        "executable": sys.executable,
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return ordered[int(rank) - 1]


def alternate(repeats: int, ours: Callable[[], Any], peer: Callable[[], Any]) -> tuple[list[Any], list[Any]]:
    """``repeats`` rounds of (ours, peer) back to back, alternating which goes first."""
    a, b = [], []
    for r in range(repeats):
        if r % 2 == 0:
            a.append(ours())
            b.append(peer())
        else:
            b.append(peer())
            a.append(ours())
    return a, b


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def add_repo_to_path() -> None:
    """The bench imports the product packages from the repository it lives in."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


@contextmanager
def temp_dir(parent: str | None, prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Row:
    """One line of the table: ``value`` beside ``baseline`` (same unit), ratio = value / baseline unless
    the row gives its own (a latency ratio, where lower is better)."""

    name: str
    label: str
    value: float
    unit: str
    baseline_label: str
    baseline: float
    ratio: float
    target: str = ""
    ok: bool | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fmt_num(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    if unit == "ms":
        return f"{value:,.2f} {unit}"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def render(rows: Sequence[Row]) -> str:
    cells = []
    for r in rows:
        verdict = "" if r.ok is None else ("OK" if r.ok else "MISS")
        target = f"(target {r.target})" if r.target else ""
        cells.append([
            r.name,
            f"{r.label} {fmt_num(r.value, r.unit)}",
            f"{r.baseline_label} {fmt_num(r.baseline, r.unit)}",
            f"ratio {r.ratio:.2f}",
            target,
            verdict,
        ])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))] if cells else []
    lines = []
    for c, r in zip(cells, rows, strict=True):
        line = "  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip()
        lines.append(line)
        if r.note:
            lines.append("    " + r.note)
    return "\n".join(lines)


def small_files(folder: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        p = os.path.join(folder, f"model-{i}.bin")
        with open(p, "wb") as f:
            # A fixed text header: random bytes can look like a pickle (0x80 0x02..0x05) to the format sniffer.
            f.write(b"MLBENCH " + rng.randbytes(rng.randint(200, 600)))
        paths.append(p)
    return paths


def tree_bytes(root: str) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under ``root``; files vanishing meanwhile are skipped."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
