"""Reading a local artifact source without a check-then-use race.

Every file is opened relative to an open descriptor of the artifact's folder, one path component at a
time with ``O_NOFOLLOW``, and checked on the opened descriptor (``os.fstat``). A symbolic link inside the
folder is followed only while its target stays beneath the folder (resolved component by component, like
``openat2(RESOLVE_BENEATH)``), so swapping a file for a link to an outside file between the listing and the
copy makes the copy fail instead of reading the outside file.

A link to a folder inside the artifact is stored under both names (the link's and the target's), so a pull
gives the same tree; a link cycle is refused.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from eventstore.errors import ArtifactError

_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# A FIFO opened without O_NONBLOCK would block before fstat could refuse it.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
MAX_LINK_HOPS = 40

# Called with a file's folder-relative path right before it is opened for copying (tests make a race
# deterministic with it; None in normal use).
before_open: Callable[[str], None] | None = None


@dataclass(frozen=True)
class LocalEntry:
    """One file of a folder: its name in the artifact and where its bytes are, beneath the folder."""

    path: str
    target: tuple[str, ...]  # components from the folder's root, links resolved
    size: int
    mode: int


def check_name(name: str, where: str) -> None:
    """A file name must be UTF-8 (it becomes JSON in the manifest); refused before any byte is copied."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ArtifactError(f"file name is not UTF-8 in the artifact directory: {where}{shown!r}") from None


def _is_link_error(exc: OSError) -> bool:
    return exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


def open_root(path: str, source: str, beneath: str | None = None) -> tuple[int, os.stat_result]:
    """Open the source the caller named (following a link the caller named itself) and stat the descriptor.
    ``beneath``: a folder the source must stay in (an ``MLEDGER_SOURCES`` prefix, for a worker): the path is
    then opened from that folder's descriptor without following any link out of it."""
    try:
        fd = _open_under(path, source, beneath) if beneath is not None else os.open(path, _RDONLY | _NONBLOCK)
    except FileNotFoundError:
        raise ArtifactError(f"artifact source not found: {source}") from None
    except PermissionError:
        raise ArtifactError(f"artifact source not readable: {source}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot open artifact source {source}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        os.close(fd)
        raise ArtifactError(f"artifact source is not a regular file or a folder: {source}")
    return fd, st


def _open_under(path: str, source: str, beneath: str) -> int:
    rel = os.path.relpath(os.path.realpath(path), beneath)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ArtifactError(f"artifact source is outside the allowed sources: {source}")
    parts = () if rel == os.curdir else tuple(rel.split(os.sep))
    top = os.open(beneath, _RDONLY | _DIRECTORY)
    try:
        if not parts:
            return os.dup(top)
        return open_beneath(top, parts, source, missing="artifact source not found")
    finally:
        os.close(top)


def open_beneath(root_fd: int, parts: tuple[str, ...] | list[str], shown: str, *, directory: bool = False,
                 missing: str = "file vanished from the artifact directory") -> int:
    """Open ``parts`` beneath the folder open at ``root_fd`` without ever leaving it: each component is
    opened with ``O_NOFOLLOW``; a link met on the way is resolved textually and only inside the folder."""
    queue = list(parts)
    fds: list[int] = []  # the open folders from the root down (root_fd itself is not ours to close)
    names: list[str] = []
    hops = 0
    try:
        while True:
            while queue and queue[0] in ("", "."):
                queue.pop(0)
            if not queue:
                if directory:
                    return os.dup(fds[-1] if fds else root_fd)
                raise ArtifactError(f"not a regular file in the artifact directory: {shown}")
            name = queue.pop(0)
            if name == "..":
                if not names:
                    raise ArtifactError(f"symlink escapes the artifact directory: {shown}")
                names.pop()
                os.close(fds.pop())
                continue
            here = fds[-1] if fds else root_fd
            last = not [p for p in queue if p not in ("", ".")]
            flags = _RDONLY | _NOFOLLOW | (_NONBLOCK if last and not directory else _DIRECTORY)
            try:
                fd = os.open(name, flags, dir_fd=here)
            except OSError as exc:
                if not _is_link_error(exc):
                    if isinstance(exc, FileNotFoundError):
                        raise ArtifactError(f"{missing}: {shown}") from None
                    if isinstance(exc, PermissionError):
                        raise ArtifactError(f"file not readable in the artifact directory: {shown}") from None
                    raise
                try:
                    target = os.readlink(name, dir_fd=here)
                except OSError:
                    raise ArtifactError(f"not a regular file in the artifact directory: {shown}") from None
                hops += 1
                if hops > MAX_LINK_HOPS or target.startswith("/"):
                    raise ArtifactError(f"symlink escapes the artifact directory: {shown}") from None
                queue = target.split("/") + queue
                continue
            if last and not directory:
                return fd
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise ArtifactError(f"not a regular file in the artifact directory: {shown}")
            fds.append(fd)
            names.append(name)
    finally:
        for fd in fds:
            os.close(fd)


def open_file(root_fd: int, entry: LocalEntry) -> int:
    """Open one listed file for copying; it must still be a regular file beneath the folder."""
    if before_open is not None:
        before_open(entry.path)
    fd = open_beneath(root_fd, entry.target, entry.path)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ArtifactError(f"not a regular file in the artifact directory: {entry.path}")
    return fd


def _resolve(root_real: str, rel_dir: tuple[str, ...], link: str, shown: str) -> tuple[str, ...]:
    """The components, from the folder's root, that a link found at ``rel_dir`` names (inside only)."""
    if link.startswith("/"):
        real = os.path.normpath(link)
        if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
            raise ArtifactError(f"symlink escapes the artifact directory: {shown}")
        rel = os.path.relpath(real, root_real)
        return () if rel == "." else tuple(rel.split(os.sep))
    joined = posixpath.normpath(posixpath.join("/", *rel_dir, link))
    # normpath of an absolute path keeps it beneath "/": compare against a walk that counts the "..".
    depth = 0
    for part in [*rel_dir, *link.split("/")]:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ArtifactError(f"symlink escapes the artifact directory: {shown}")
        elif part not in ("", "."):
            depth += 1
    return tuple(p for p in joined.split("/") if p)


def list_folder(root_fd: int, root_real: str, *, max_files: int, max_names_bytes: int) -> Iterator[LocalEntry]:
    """Every file of the folder open at ``root_fd``, folder by folder, with limits and names checked as it goes
    (the caller lists everything before copying a byte). Links resolve beneath the folder only; a link to a
    folder lists that folder under the link's name too; a cycle is refused."""
    count = 0
    names_bytes = 0

    def walk(dir_fd: int, rel: tuple[str, ...], target: tuple[str, ...],
             ancestors: frozenset[tuple[int, int]]) -> Iterator[LocalEntry]:
        nonlocal count, names_bytes
        with os.scandir(dir_fd) as it:
            names = sorted(e.name for e in it)
        where = "/".join(rel) + "/" if rel else ""
        for name in names:
            check_name(name, where)
            path = (*rel, name)
            shown = "/".join(path)
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            where_bytes = target + (name,)
            if stat.S_ISLNK(st.st_mode):
                where_bytes = _resolve(root_real, target, os.readlink(name, dir_fd=dir_fd), shown)
                st = _stat_beneath(root_fd, root_real, where_bytes, shown)
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise ArtifactError(f"symlink cycle in the artifact directory: {shown}")
                sub = open_beneath(root_fd, where_bytes, shown, directory=True)
                try:
                    yield from walk(sub, path, where_bytes, ancestors | {key})
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                count += 1
                names_bytes += len(shown.encode("utf-8")) + 160  # a manifest line: path, digest, size, mode
                if count > max_files:
                    raise ArtifactError(f"the artifact directory has more than {max_files:,} files")
                if names_bytes > max_names_bytes:
                    raise ArtifactError(f"the artifact directory's manifest would exceed {max_names_bytes:,} bytes")
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                yield LocalEntry(shown, where_bytes, st.st_size, mode)
            else:
                raise ArtifactError(f"not a regular file in the artifact directory: {shown}")

    top = os.fstat(root_fd)
    yield from walk(root_fd, (), (), frozenset({(top.st_dev, top.st_ino)}))


def _stat_beneath(root_fd: int, root_real: str, parts: tuple[str, ...], shown: str, hops: int = 0) -> os.stat_result:
    """Stat what ``parts`` names beneath the folder, following links while they stay inside."""
    if hops > MAX_LINK_HOPS:
        raise ArtifactError(f"symlink cycle in the artifact directory: {shown}")
    if not parts:
        return os.fstat(root_fd)
    parent = open_beneath(root_fd, parts[:-1], shown, directory=True)
    try:
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise ArtifactError(f"broken symlink in the artifact directory: {shown}") from None
        if stat.S_ISLNK(st.st_mode):
            hop = _resolve(root_real, parts[:-1], os.readlink(parts[-1], dir_fd=parent), shown)
            return _stat_beneath(root_fd, root_real, hop, shown, hops + 1)
        return st
    finally:
        os.close(parent)
