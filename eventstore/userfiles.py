"""Reading a file a user names (``--params @FILE``, ``--verify-export FILE``): bounded and regular only.

A path given on the command line can be anything: a FIFO (a plain ``open`` blocks forever), ``/dev/zero``
(``stat`` says 0 bytes, then it never ends), a folder, a file of gigabytes. So the file is opened with
``O_NONBLOCK`` (opening a FIFO returns at once), checked *on the opened descriptor* (no check-then-use race
with whoever can swap the path), and read for at most ``limit + 1`` bytes. Links are followed: the user
reads with their own rights, and a symlinked config file is ordinary.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator
from typing import IO

from .errors import ValidationError


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str], what: str) -> Iterator[IO[bytes]]:
    """The opened regular file (binary, unbuffered reads are the caller's business); ValidationError for a
    missing or unreadable path and for anything that is not a regular file."""
    shown = os.fsdecode(path)
    if not shown or "\x00" in shown:
        raise ValidationError(f"{what}: no file named")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValidationError(f"{what}: cannot read {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValidationError(f"{what}: {shown} is {_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)  # a regular file: restore ordinary reads
        f = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of a regular file; ValidationError past it (only ``limit + 1`` bytes are read)."""
    with open_regular(path, what) as f:
        chunks: list[bytes] = []
        left = limit + 1
        try:
            while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise ValidationError(f"{what}: cannot read {os.fsdecode(path)}: {exc.strerror}") from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise ValidationError(f"{what}: {os.fsdecode(path)} is over {limit:,} bytes")
    return data


def read_text_bounded(path: str | os.PathLike[str], limit: int, what: str) -> str:
    data = read_bounded(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{what}: {os.fsdecode(path)} is not UTF-8 text") from None


def bounded_lines(f: IO[bytes], line_limit: int) -> Iterator[bytes | None]:
    """Each line of ``f`` without its ``\\n``; ``None`` for a line longer than ``line_limit`` (the rest of that
    line is never held in memory: it is skipped in chunks)."""
    reader = io.BufferedReader(f, buffer_size=1 << 16) if not isinstance(f, io.BufferedIOBase) else f
    while True:
        line = reader.readline(line_limit + 1)
        if not line:
            return
        if len(line) > line_limit and not line.endswith(b"\n"):
            while (more := reader.readline(1 << 20)) and not more.endswith(b"\n"):
                pass
            yield None
            continue
        yield line[:-1] if line.endswith(b"\n") else line
