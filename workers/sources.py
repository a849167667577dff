"""Which artifact sources a worker may read on someone else's behalf (``MLEDGER_SOURCES``).

A source named in the log is data, not an instruction: whoever wrote the event (a client, or an importer
through ``append_batch``) chose it. A process reads a source only

- for the command its own caller ran, in that caller's process, with that caller's rights; or
- when the source is under a prefix the operator listed in ``MLEDGER_SOURCES`` (comma- or
  ``os.pathsep``-separated local paths or URLs; default: none), which a Redis worker then reads itself.

A prefix matches whole path segments: ``/data/models`` allows ``/data/models/a.bin`` but not
``/data/models-secret/a.bin``; ``https://host/models/`` does not allow ``https://host/other``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from eventstore.errors import ValidationError

_SPLIT = re.compile(r"[,\n]")


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("/")


@dataclass(frozen=True)
class SourcePolicy:
    """The prefixes a worker may read from; empty: none (clients put the bytes in the store themselves)."""

    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> SourcePolicy:
        if not text or not text.strip():
            return cls(())
        out: list[str] = []
        parts = [p for chunk in _SPLIT.split(text) for p in (chunk.split(os.pathsep) if not _is_url(chunk)
                                                                 else [chunk])]
        for raw in parts:
            item = raw.strip()
            if not item:
                continue
            if any(ord(ch) < 32 for ch in item):
                raise ValidationError("MLEDGER_SOURCES contains control characters")
            if _is_url(item):
                if item.startswith("file://"):
                    item = item[len("file://"):]
                else:
                    out.append(item.rstrip("/"))
                    continue
            if not os.path.isabs(item):
                raise ValidationError(f"MLEDGER_SOURCES: {item!r} is neither an absolute path nor a URL")
            # The operator's own path, resolved once: a prefix behind a symlink is the folder it names.
            out.append(os.path.realpath(item).rstrip(os.sep) or os.sep)
        return cls(tuple(out))

    def allows(self, source: str) -> bool:
        """True when ``source`` (normalised, as in the log) lies under an allowed prefix. A local path is
        compared after resolving its links, so a link under the prefix cannot point outside it."""
        if not self.prefixes or not isinstance(source, str) or not source:
            return False
        if _is_url(source):
            if source.startswith("file://"):
                source = source[len("file://"):]
            else:
                path = source.split("?", 1)[0].split("#", 1)[0]
                if any(seg in ("..", ".") for seg in path.split("/")[3:]) or "%2e" in path.lower():
                    return False  # a server would resolve the dots out of the allowed prefix
                return any(source == p or source.startswith(p + "/") for p in self.prefixes if _is_url(p))
        if not os.path.isabs(source):
            return False
        real = os.path.realpath(source)
        for p in self.prefixes:
            if _is_url(p):
                continue
            if p == os.sep or real == p or real.startswith(p + os.sep):
                return True
        return False

    def local_prefix(self, source: str) -> str | None:
        """The allowed local folder that holds ``source`` (a worker opens the source from it), or None."""
        if _is_url(source) and not source.startswith("file://"):
            return None
        path = source[len("file://"):] if source.startswith("file://") else source
        real = os.path.realpath(path)
        for p in self.prefixes:
            if not _is_url(p) and (p == os.sep or real == p or real.startswith(p + os.sep)):
                return p
        return None

    def describe(self) -> str:
        return ", ".join(self.prefixes) if self.prefixes else "(none)"
