"""Where ``pull`` and ``audit --export`` may write: a destination is never destroyed by accident.

A DEST that is empty, ``.``, ``..``, ``/``, the home folder, ``MLEDGER_HOME``, the current folder or any
folder above it, or anything inside the registry's own folders is refused outright (one empty shell
variable once made ``pull --force ''`` delete the working tree). An existing DEST is replaced only with
``--force`` and only when it is a regular file or a folder an earlier ``pull`` wrote; a symlink, FIFO,
socket or device is never replaced. The new content is written next to DEST and swapped in at the end, so
a failure leaves the old DEST as it was.

A pulled folder is marked with the extended attribute ``user.mledger.pulled`` (the artifact's digest):
invisible to the model's own files and to a later ``register`` of the folder (a marker file inside would
change its digest). Where the filesystem has no user xattrs, pulled folders are unmarked and ``--force``
refuses them: remove the folder yourself.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ArtifactError, ValidationError

PULL_MARK = "user.mledger.pulled"
FORCE_HINT = "use --force (overwrite=True in the SDK)"


@dataclass(frozen=True)
class Destination:
    """A checked destination: ``path`` is absolute with its parent resolved; ``existing`` is what was there
    (``lstat``) when it was checked, or None."""

    path: str
    shown: str
    existing: os.stat_result | None

    @property
    def parent(self) -> str:
        return os.path.dirname(self.path)

    def temp_name(self, suffix: str) -> str:
        """A fresh name next to the destination (same filesystem, so the final move is a rename)."""
        return os.path.join(self.parent, f".{os.path.basename(self.path)}.{uuid.uuid4().hex}{suffix}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def has_pull_mark(path: str) -> bool:
    try:
        return bool(os.getxattr(path, PULL_MARK, follow_symlinks=False))
    except (OSError, AttributeError):  # no such attribute, no xattr support, or not Linux
        return False


def set_pull_mark(path: str, digest: str) -> None:
    try:
        os.setxattr(path, PULL_MARK, digest.encode("ascii"), follow_symlinks=False)
    except (OSError, AttributeError):
        pass  # no user xattrs here: the folder stays unmarked, and --force will refuse it (documented)


def _guarded_above() -> list[tuple[str, str]]:
    """Folders that neither DEST nor any folder above them may be: (resolved path, what it is)."""
    out = []
    for raw, what in ((os.getcwd, "the current folder"), (lambda: os.path.expanduser("~"), "your home folder"),
                      (lambda: os.environ.get("MLEDGER_HOME") or "", "MLEDGER_HOME")):
        try:
            value = raw()
        except OSError:
            continue
        if value and value != "~":
            out.append((os.path.realpath(value), what))
    return out


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_destination(
    dest: str | os.PathLike[str],
    *,
    overwrite: bool,
    protected: Sequence[str] = (),
    folder_ok: bool = True,
) -> Destination:
    """Refuse a DEST that must never be written (ValidationError) or that exists and may not be replaced
    (ArtifactError). ``protected``: folders (the registry's home, its store) that DEST may not be, contain,
    or lie inside. ``folder_ok``: an existing folder with the pull mark may be replaced."""
    shown = os.fsdecode(dest)
    if not shown.strip():
        raise ValidationError("destination is empty")
    if "\x00" in shown:
        raise ValidationError("destination contains a NUL character")
    trimmed = shown.rstrip(os.sep) or os.sep
    base = os.path.basename(trimmed)
    if base in ("", ".", ".."):
        raise ValidationError(f"refused destination {shown!r}: name the file or folder to write")
    parent = os.path.realpath(os.path.dirname(os.path.abspath(trimmed)))
    path = os.path.join(parent, base)
    for folder, what in _guarded_above():
        if _inside(folder, path):
            raise ValidationError(f"refused destination {shown!r}: it is {what} or a folder above it")
    for folder in protected:
        real = os.path.realpath(folder)
        if _inside(real, path) or _inside(path, real):
            raise ValidationError(f"refused destination {shown!r}: it is inside or above the registry's folder {real}")
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return Destination(path, shown, None)
    except OSError as exc:
        raise ArtifactError(f"cannot use destination {shown}: {exc.strerror}") from None
    # What may never be replaced is said first: suggesting --force for it would only lead to a second refusal.
    mode = existing.st_mode
    if stat.S_ISDIR(mode) and not folder_ok:
        raise ArtifactError(f"destination exists: {shown} is a folder; name a file")
    if stat.S_ISDIR(mode) and not has_pull_mark(path):
        raise ArtifactError(f"destination exists: {shown} is a folder that no earlier pull wrote (remove it yourself)")
    if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        raise ArtifactError(f"destination exists: {shown} is {_kind(mode)}; it is never replaced")
    if not overwrite:
        raise ArtifactError(f"destination exists: {shown} ({FORCE_HINT})")
    return Destination(path, shown, existing)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, stat.S_IFMT(a.st_mode)) == (b.st_dev, b.st_ino, stat.S_IFMT(b.st_mode))


def remove_entry(path: str) -> None:
    """Remove a file or a real folder (never follows a symlink); missing is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def move_into_place(tmp: str, dest: Destination) -> None:
    """Give the finished ``tmp`` the destination's name. The old entry, if any, is the one that was checked
    (otherwise refused) and is removed only once the new one is in place."""
    try:
        now = os.lstat(dest.path)
    except FileNotFoundError:
        now = None
    if dest.existing is None:
        if now is not None:
            raise ArtifactError(f"destination exists: {dest.shown} (it appeared during the pull; {FORCE_HINT})")
        if os.path.isdir(tmp):
            os.rename(tmp, dest.path)
        else:
            try:
                os.link(tmp, dest.path)  # no-clobber: a destination that appeared meanwhile is kept
            except FileExistsError:
                raise ArtifactError(f"destination exists: {dest.shown} ({FORCE_HINT})") from None
            os.unlink(tmp)
        return
    if now is None or not _same(now, dest.existing):
        raise ArtifactError(f"destination {dest.shown} changed during the pull; nothing was replaced")
    if stat.S_ISREG(now.st_mode) and not os.path.isdir(tmp):
        os.replace(tmp, dest.path)  # atomic: the old file or the new one, never neither
        return
    # A folder cannot be swapped atomically: park the old entry, move the new one in, then drop the old.
    old = dest.temp_name(".old")
    os.rename(dest.path, old)
    try:
        os.rename(tmp, dest.path)
    except BaseException:
        os.rename(old, dest.path)
        raise
    remove_entry(old)
