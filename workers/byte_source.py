"""Bounded byte reading for the format sniffers: a reader over a file or a decompressed stream that knows its
absolute position, reads lines with a limit, skips without keeping what it skips, and charges every byte
and every step to one shared budget (time, decompressed bytes), so that no content can make sniffing run
long or hold much memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

CHUNK = 64 * 1024


class NotInspected(Exception):
    """The sniffer could not follow the bytes to the end (a limit of ours, or a layout we do not read)."""


class Broken(Exception):
    """The bytes end or break here in a way every loader fails on too (truncation, an unknown opcode, ...)."""


class Budget:
    """What one sniff may spend, shared by every reading of every file member.

    CPU time is measured per thread (a Redis worker runs several sniffs side by side); the step and byte
    limits make verdicts reproducible, the clock is only the backstop that keeps a slow machine bounded.
    """

    def __init__(self, max_cpu_s: float = 8.0, max_ops: int = 2_000_000,
                 max_inflated: int = 1024 * 1024 * 1024) -> None:
        self.ops_left = max_ops
        self.inflated_left = max_inflated
        self._max_cpu_s = max_cpu_s
        # The clock starts at the first check, ~16k opcodes in: reading the thread's CPU clock costs tens of
        # microseconds on a VM (measured: ~80 us), as much as sniffing a whole tiny file.
        self._deadline: float | None = None
        self._ticks = 0

    def spend_ops(self, n: int) -> None:
        self.ops_left -= n
        if self.ops_left < 0:
            raise NotInspected("too many pickle opcodes to follow")
        self._ticks += n
        if self._ticks >= 16384:
            self._ticks = 0
            self.check_clock()

    def spend_inflated(self, n: int) -> None:
        self.inflated_left -= n
        if self.inflated_left < 0:
            raise NotInspected("decompresses to more than the sniffing bound")
        self._ticks += n >> 8  # one check per ~4 MiB inflated
        if self._ticks >= 16384:
            self._ticks = 0
            self.check_clock()

    def check_clock(self) -> None:
        now = time.thread_time()
        if self._deadline is None:
            self._deadline = now + self._max_cpu_s
        elif now > self._deadline:
            raise NotInspected("the sniffing time bound was reached")


class Source:
    """Sequential reads over ``read(n)`` (a file or a decompressing stream) with an absolute position.

    ``seek`` (optional) lets skips past large payloads jump instead of reading; ``size`` (when known)
    turns a skip past the end into ``Broken`` at once.
    """

    def __init__(self, read: Callable[[int], bytes], *, start: int = 0, size: int | None = None,
                 seek: Callable[[int], object] | None = None) -> None:
        self._read = read
        self._seek = seek
        self._size = size
        self._buf = b""
        self._i = 0
        self._base = start  # absolute position of _buf[0]

    @classmethod
    def of_file(cls, f: IO[bytes], start: int, size: int) -> Source:
        f.seek(start)
        return cls(f.read, start=start, size=size, seek=f.seek)

    @property
    def pos(self) -> int:
        return self._base + self._i

    def _fill(self, need: int) -> bool:
        """At least ``need`` unread bytes buffered; False at the end of the data."""
        if self._i:
            self._buf = self._buf[self._i:]
            self._base += self._i
            self._i = 0
        while len(self._buf) < need:
            chunk = self._read(max(CHUNK, need - len(self._buf)))
            if not chunk:
                return False
            self._buf += chunk
        return True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (callers keep ``n`` small: big payloads are skipped)."""
        i = self._i
        if i + n <= len(self._buf):
            self._i = i + n
            return self._buf[i:i + n]
        if not self._fill(n):
            raise Broken("the data ends inside an opcode")
        self._i = n
        return self._buf[:n]

    def at_end(self) -> bool:
        return self._i >= len(self._buf) and not self._fill(1)

    def peek(self, n: int) -> bytes:
        if self._i + n > len(self._buf):
            self._fill(n)
        return self._buf[self._i:self._i + n]

    def readline(self, limit: int) -> bytes:
        """One line including its newline; a line longer than ``limit`` is not followed."""
        scanned = 0  # bytes after the read position already searched
        while True:
            j = self._buf.find(b"\n", self._i + scanned)
            if j >= 0:
                line = self._buf[self._i:j + 1]
                self._i = j + 1
                return line
            have = len(self._buf) - self._i
            if have > limit:
                raise NotInspected(f"a text line longer than {limit} bytes")
            scanned = have
            # Doubling: a long line costs linear time. At the end of the data, what was read is searched too.
            if not self._fill(max(2 * have, have + CHUNK)) and len(self._buf) - self._i == have:
                raise Broken("the data ends inside a text line")

    def skip(self, n: int, budget: Budget) -> None:
        """Move past ``n`` bytes without keeping them."""
        avail = len(self._buf) - self._i
        if n <= avail:
            self._i += n
            return
        target = self.pos + n
        if self._size is not None and target > self._size:
            raise Broken("a payload runs past the end of the data")
        self._buf, self._i, self._base = b"", 0, self.pos + avail
        if self._seek is not None:
            self._seek(target)
            self._base = target
            return
        left = n - avail
        while left:
            chunk = self._read(min(left, 1024 * 1024))
            if not chunk:
                raise Broken("a payload runs past the end of the data")
            left -= len(chunk)
            self._base += len(chunk)
            budget.check_clock()
