"""A progress line for transfers: bytes and rate on stderr, only on a terminal, only after a second."""

from __future__ import annotations

import sys
import time

from .output import human_size


class Progress:
    """Callable with the number of bytes done so far (it may restart from 0 for a second pass)."""

    def __init__(self, label: str, total: int | None = None, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.started
        if elapsed < 1.0 or now - self.last_draw < 0.2:
            return
        self.last_draw = now
        rate = done / elapsed if elapsed > 0 else 0
        of = f" / {human_size(self.total)}" if self.total else ""
        sys.stderr.write(f"\r{self.label}: {human_size(done)}{of}  {human_size(int(rate))}/s   ")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
