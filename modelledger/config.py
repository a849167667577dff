"""Configuration: each setting from an explicit argument, else the environment, else the default."""

from __future__ import annotations

import getpass
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from eventstore.errors import ValidationError
from eventstore.permissions import share_setting

DB_FILE = "registry.db"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
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
    # MLEDGER_DATABASE: a postgresql:// URL or a SQLite file ("" = $MLEDGER_HOME/registry.db); see database.py
    database: str = ""

    @property
    def is_postgres(self) -> bool:
        return is_postgres_url(self.database)

    @property
    def db_path(self) -> Path:
        """The SQLite file (on PostgreSQL: where it would be, unused)."""
        if self.database and not self.is_postgres:
            return Path(self.database)
        return self.home / DB_FILE

    @property
    def location(self) -> str:
        """The database as the recorder opens it: the URL, or the SQLite file's path."""
        return self.database if self.is_postgres else str(self.db_path)

    @property
    def database_label(self) -> str:
        """Where the registry's database is, for messages: never a password."""
        return mask_url(self.database) if self.is_postgres else str(self.db_path)

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
        database: str | None = None,
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
        location = database_location(database or os.environ.get("MLEDGER_DATABASE") or "", home_path)
        return cls(home=home_path, artifacts=artifacts_url, broker=broker_url, actor=who, sources=sources,
                   database=location)


# libpq's other form, key=value settings ("host=db dbname=reg user=ci"), also names a PostgreSQL database (it
# would otherwise name a SQLite file "host=db dbname=reg ...").
_CONNINFO = re.compile(r"^\s*(host|hostaddr|dbname|user|port|service)\s*=")


def is_postgres_url(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES) or _CONNINFO.match(location) is not None


def mask_url(url: str) -> str:
    """A database URL with its password (in the authority or as ``password=``) replaced by ``***``."""
    masked = re.sub(r"^([a-z]+://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", masked)


def database_location(text: str, home: Path) -> str:
    """MLEDGER_DATABASE as used: a ``postgresql://`` URL as given, a SQLite file as an absolute path (relative
    to the working folder), the home's ``registry.db`` when empty. Anything else with a scheme is refused."""
    if "\x00" in text:
        raise ValidationError("MLEDGER_DATABASE contains a NUL character")
    if not text:
        return str(home / DB_FILE)
    if is_postgres_url(text):
        return text
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite://")
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ValidationError(f"MLEDGER_DATABASE must be a postgresql:// URL or a SQLite file, not {mask_url(text)!r}")
    return str(Path(text).expanduser().resolve())
