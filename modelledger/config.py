"""Configuration: each setting from an explicit argument, else the environment, else the default."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from eventstore.errors import ValidationError
from eventstore.permissions import share_setting

DB_FILE = "registry.db"
# (device, inode, size, mtime, ctime) → digest of local sources already hashed: workers/statcache.py. One per
# user, mode 0600 even in a group-shared home: whoever can write it decides which digest a register records.
STATCACHE_FILE = "statcache-{uid}.db"


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Config:
    home: Path
    artifacts: str
    broker: str
    actor: str
    # MLEDGER_SOURCES: what a worker may read on someone's behalf (workers/sources.py); default none.
    sources: str = ""

    @property
    def db_path(self) -> Path:
        return self.home / DB_FILE

    @property
    def statcache_path(self) -> Path:
        return self.home / STATCACHE_FILE.format(uid=os.geteuid())

    @classmethod
    def load(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        artifacts: str | None = None,
        broker: str | None = None,
        actor: str | None = None,
        sources: str | None = None,
    ) -> Config:
        home_path = Path(home or os.environ.get("MLEDGER_HOME") or Path.home() / ".mledger").expanduser()
        if "\x00" in str(home_path):
            raise ValidationError("MLEDGER_HOME contains a NUL character")
        home_path = home_path.resolve()
        share_setting()  # MLEDGER_SHARE (owner | group): checked here, applied when the home is created
        artifacts_url = artifacts or os.environ.get("MLEDGER_ARTIFACTS") or str(home_path / "artifacts")
        broker_url = broker or os.environ.get("MLEDGER_BROKER") or "embedded"  # checked by workers.broker
        who = actor or os.environ.get("MLEDGER_ACTOR") or default_actor()
        if len(who) > 256 or any(ord(ch) < 32 for ch in who):
            raise ValidationError("MLEDGER_ACTOR must be at most 256 printable characters")
        sources = os.environ.get("MLEDGER_SOURCES", "") if sources is None else sources
        return cls(home=home_path, artifacts=artifacts_url, broker=broker_url, actor=who, sources=sources)
