"""Who may read a registry: its owner only, unless the registry is shared with a group.

The database holds every actor and source path, and the blobs hold the models: with the usual umask 022
both were world-readable. So every folder and file mledger creates gets an explicit mode, whatever the
umask:

- a new registry folder (home, artifact store): ``0700``, or ``2750`` with ``MLEDGER_SHARE=group`` (the
  setgid bit makes what is created inside belong to the folder's group);
- anything created inside an existing folder follows that folder: ``0750``/``0640`` when the folder is
  group-readable, else ``0700``/``0600``. Others never get access. So every writer of a shared registry
  (CLI, SDK, workers) keeps it shared without having to agree on a setting.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import StoreError, ValidationError

SHARE_VALUES = ("owner", "group")


@dataclass(frozen=True)
class Modes:
    folder: int
    file: int


PRIVATE = Modes(folder=0o700, file=0o600)
GROUP = Modes(folder=0o750, file=0o640)


def share_setting() -> str:
    """``MLEDGER_SHARE``: ``owner`` (the default) or ``group``."""
    value = (os.environ.get("MLEDGER_SHARE") or "owner").strip().lower()
    if value not in SHARE_VALUES:
        raise ValidationError(f"MLEDGER_SHARE must be one of {', '.join(SHARE_VALUES)}, not {value!r}")
    return value


def new_root_modes() -> Modes:
    """Modes of a registry folder created from nothing (no parent of ours to follow)."""
    return GROUP if share_setting() == "group" else PRIVATE


def modes_under(folder: str | os.PathLike[str]) -> Modes:
    """Modes for what is created inside ``folder``: shared with the group only if the folder is."""
    return GROUP if os.stat(folder).st_mode & stat.S_IRGRP else PRIVATE


def make_folder(path: str | os.PathLike[str], mode: int) -> bool:
    """mkdir with exactly ``mode`` (the umask cannot widen or narrow it); False if it existed."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    os.chmod(path, mode)
    return True


def make_root(path: str | os.PathLike[str]) -> None:
    """Create a registry folder (and missing parents) with ``new_root_modes()``; an existing one is left as
    it is (its owner chose its mode)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return
    modes = new_root_modes()
    missing = []
    p = os.path.abspath(path)
    while not os.path.exists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        for folder in reversed(missing):
            # The registry folder itself gets the setgid bit when shared: what is made inside takes its group.
            setgid = stat.S_ISGID if modes is GROUP and folder == missing[0] else 0
            make_folder(folder, modes.folder | setgid)
    except OSError as exc:
        raise StoreError(f"cannot create the registry folder {path}: {exc.strerror}") from None


def create_file(path: str | os.PathLike[str], mode: int) -> None:
    """Create an empty file with exactly ``mode`` unless it exists (the first opener wins; no truncation)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
