"""Fixtures for audit and diff: a registry after a mix of commands, raw access to its database file (what
an attacker with file access could do), and the audit run the way the SDK would wire it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from projections.audit import AuditReport, audit


def run_audit(reg, *, deep: bool = False, page: int = 10_000) -> AuditReport:
    """``mledger audit [--deep]`` as the lead is expected to wire it."""
    reg.projection.ensure_current()
    store = reg.store()
    return audit(reg.recorder, reg.recorder.connection(), blob_exists=store.exists,
                 blob_rehash=store.verify if deep else None, page=page)


@pytest.fixture
def audit_of() -> Callable[..., AuditReport]:
    return run_audit


@pytest.fixture
def mixed(reg, make_artifact, tmp_path: Path):
    """A registry after a mix of commands: two models (a file and a folder artifact), derived versions,
    tags, metrics, aliases, a delete and an undelete, an untag and an alias rollback."""
    f1 = make_artifact("m1.bin", b"weights one\n")
    f2 = make_artifact("m2.bin", b"weights two\n")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02")
    v1 = reg.register("resnet", artifact=str(f1), params={"lr": 0.1, "layers": [{"units": 64}]},
                      tags={"task": "vision"})
    v2 = reg.update(v1, params={"lr": 0.01})
    reg.update(v2, artifact=str(f2), optimizer={"name": "adam"})
    reg.register("team/folder-model", artifact=str(folder), description="a folder")
    reg.tag(v2, stage="candidate")
    reg.untag(v2, "stage")
    reg.metrics(v1, acc=0.9)
    reg.metrics(v2, acc=0.93)
    reg.alias(v1, "production")
    reg.alias(v2, "production")
    reg.rollback("resnet", "production")
    reg.delete("resnet@3", reason="bad run")
    reg.undelete("resnet@3")
    reg.delete("team/folder-model@1")
    reg.projection.ensure_current()
    return reg


@pytest.fixture
def raw(reg):
    """A second, plain sqlite3 connection to the registry's database file (autocommit)."""
    conn = sqlite3.connect(reg.config.db_path, isolation_level=None)
    yield conn
    conn.close()


def _drop_triggers(conn: sqlite3.Connection, *names: str) -> None:
    for name in names or ("events_no_update", "events_no_delete", "events_no_replace"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def _positions_of(reg, event_type: str) -> list[int]:
    return [row[0] for row in reg.recorder.raw_rows() if row[3] == event_type]


@pytest.fixture
def drop_triggers() -> Callable[..., None]:
    """``drop_triggers(conn, *names)``: what an attacker does first (all three append-only triggers by default)."""
    return _drop_triggers


@pytest.fixture
def positions_of() -> Callable[[object, str], list[int]]:
    """``positions_of(reg, type)``: the positions of the stored events of that type."""
    return _positions_of
