"""`mledger copy --to DATABASE`: a registry's log into another, empty database — SQLite to PostgreSQL and
back, and SQLite to SQLite — with positions, stream versions, recorded times and hashes identical, the
idempotency keys carried along, the target's catalog built and audited; a non-empty target refused with
nothing written."""

from __future__ import annotations

import json
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest

from eventstore.events import NewEvent, stream_for

EVENTS = 10_000  # the acceptance's size: at least this many events in the copied log


def _build(cli, make_artifact, *, tags: int) -> None:
    """A registry with real versions (ingested blobs), aliases, a deletion, a keyed command, then ``tags``
    Tagged events appended in batches (the SDK's import door), so the log is big without 10,000 commands."""
    from modelledger import Registry

    for i in range(3):
        art = make_artifact(f"m{i}.bin", f"weights {i}\n".encode())
        assert cli("register", f"team/m{i}", "--artifact", str(art), "--tag", "task=copy")[0] == 0
        assert cli("update", f"team/m{i}", "--params", json.dumps({"lr": 0.1 * (i + 1)}))[0] == 0
    assert cli("alias", "team/m0@2", "production")[0] == 0
    assert cli("metrics", "team/m1@1", "acc=0.9")[0] == 0
    assert cli("delete", "team/m2@1", "--reason", "bad")[0] == 0
    assert cli("update", "team/m1", "--params", '{"lr": 0.5}', "--idempotency-key", "upd-once")[0] == 0
    with Registry.open() as reg:
        meta = {"actor": "loader@test", "client": "test", "correlation_id": str(uuid.uuid4())}
        batch = []
        for n in range(tags):
            name = f"team/m{n % 2}"
            batch.append(NewEvent(stream_for(name), "Tagged",
                                  {"name": name, "version": 1 + n % 3, "tags": {"n": str(n)}}, meta))
            if len(batch) == 2_000:
                reg.append_batch(batch)
                batch = []
        if batch:
            reg.append_batch(batch)


def _log(cli, *database: str) -> list[dict]:
    code, out, err = cli("log", "--json", *database)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _copy(cli, to: str, *database: str) -> dict:
    code, out, err = cli("copy", "--to", to, "--json", *database)
    assert code == 0, err
    report = json.loads(out)
    assert report["audit_ok"] and report["audit"]["ok"]
    return report


def _digest_and_models(cli, *database: str) -> tuple[str, list]:
    code, out, err = cli("list", "--json", "--deleted", *database)
    assert code == 0, err
    code2, out2, _ = cli("projections", "rebuild", "--json", *database)
    assert code2 == 0
    return json.loads(out2)["digest"], json.loads(out)["models"]


@pytest.mark.postgres
def test_copy_to_postgresql_and_back_keeps_the_log_identical(cli, home, make_artifact, tmp_path,
                                                              new_postgres_database, monkeypatch):
    monkeypatch.delenv("MLEDGER_DATABASE", raising=False)  # the source is the home's SQLite file here
    _build(cli, make_artifact, tags=EVENTS)
    source = _log(cli)
    assert len(source) >= EVENTS
    pg = new_postgres_database()
    there = _copy(cli, pg)
    assert there["events"] == len(source) and there["head_hash"] == source[-1]["hash"]
    assert there["keys"] >= 1 and there["target_id"] != there["source_id"]
    assert there["target"] == pg  # (a password would show as ***)
    assert _log(cli, "--database", pg) == source
    code, out, err = cli("audit", "--json", "--database", pg)
    assert code == 0 and json.loads(out)["ok"], err
    # and back: from PostgreSQL into a new SQLite file
    back_file = tmp_path / "back" / "registry.db"
    back = _copy(cli, str(back_file), "--database", pg)
    assert back["events"] == len(source)
    assert _log(cli, "--database", str(back_file)) == source
    # the same catalog on all three
    digest, models = _digest_and_models(cli)
    assert _digest_and_models(cli, "--database", pg) == (digest, models)
    assert _digest_and_models(cli, "--database", str(back_file)) == (digest, models)
    # a retry of the keyed command against the copy appends nothing
    head = len(source)
    code, out, err = cli("update", "team/m1", "--params", '{"lr": 0.5}', "--idempotency-key", "upd-once",
                         "--database", pg, "--json")
    assert code == 0 and json.loads(out)["version"] == 3, err
    assert len(_log(cli, "--database", pg)) == head
    # the copy is a registry of its own: it goes on from the same chain
    assert cli("tag", "team/m0", "moved=yes", "--database", pg)[0] == 0
    moved = _log(cli, "--database", pg)
    assert moved[:head] == source and moved[head]["position"] == head + 1


def test_copy_between_sqlite_files_keeps_the_log_and_builds_the_catalog(cli, home, make_artifact, tmp_path,
                                                                         monkeypatch):
    monkeypatch.delenv("MLEDGER_DATABASE", raising=False)
    _build(cli, make_artifact, tags=500)
    source = _log(cli)
    target = tmp_path / "elsewhere" / "copy.db"
    report = _copy(cli, str(target))
    assert report["events"] == len(source) and report["keys"] >= 1
    assert _log(cli, "--database", str(target)) == source
    assert _digest_and_models(cli, "--database", str(target)) == _digest_and_models(cli)
    code, out, _ = cli("show", "team/m0@production", "--json", "--database", str(target))
    assert code == 0 and json.loads(out)["version"] == 2


def test_copy_refuses_a_non_empty_target_and_writes_nothing(cli, home, make_artifact, tmp_path, monkeypatch):
    monkeypatch.delenv("MLEDGER_DATABASE", raising=False)
    art = make_artifact("a.bin", b"a\n")
    assert cli("register", "a", "--artifact", str(art))[0] == 0
    other = tmp_path / "other" / "registry.db"
    assert cli("register", "b", "--artifact", str(art), "--database", str(other))[0] == 0
    before = _log(cli, "--database", str(other))
    code, out, err = cli("copy", "--to", str(other))
    assert code == 4 and out == ""
    assert f"already holds {len(before)} event(s)" in err and "nothing was written" in err
    assert err.count("\n") == 1
    assert _log(cli, "--database", str(other)) == before
    # a SQLite file that is not a registry: refused, untouched
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    data = foreign.read_bytes()
    code, _, err = cli("copy", "--to", str(foreign))
    assert code == 4 and "not a registry" in err
    assert foreign.read_bytes() == data
    # onto itself
    code, _, err = cli("copy", "--to", str(home / "registry.db"))
    assert code == 2 and "own database" in err
    # an unknown scheme
    code, _, err = cli("copy", "--to", "mysql://root@127.0.0.1/x")
    assert code == 2 and "postgresql:// URL or a SQLite file" in err


@pytest.mark.postgres
def test_copy_refuses_a_non_empty_postgresql_target(cli, home, make_artifact, new_postgres_database, monkeypatch):
    monkeypatch.delenv("MLEDGER_DATABASE", raising=False)
    art = make_artifact("a.bin", b"a\n")
    assert cli("register", "a", "--artifact", str(art))[0] == 0
    pg = new_postgres_database()
    _copy(cli, pg)
    copied = _log(cli, "--database", pg)
    code, _, err = cli("copy", "--to", pg)
    assert code == 4 and f"already holds {len(copied)} event(s)" in err
    assert _log(cli, "--database", pg) == copied
    # a database with other tables than a registry's is not touched either
    import psycopg

    foreign = new_postgres_database()
    with psycopg.connect(foreign, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    code, _, err = cli("copy", "--to", foreign)
    assert code == 4 and "other tables" in err and "mine" in err
    with psycopg.connect(foreign, autocommit=True) as conn:
        assert [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()] == ["mine"]


def test_a_postgresql_url_without_psycopg_is_a_clear_error(mledger_argv, child_env, home, tmp_path):
    """psycopg is an extra: without it, one line naming what to install (and never the password)."""
    import subprocess

    code = ("import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None; "
            "from modelledger.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "list", "--database",
                           "postgresql://alice:s3cret@127.0.0.1:5432/reg"],
                          env=child_env(home), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "modelledger[postgres]" in proc.stderr and proc.stderr.count("\n") == 1
    assert "s3cret" not in proc.stderr + proc.stdout


def test_a_password_never_appears_in_messages(cli, home):
    # nothing listens on port 1: the error names host, port and database, not the password
    code, out, err = cli("list", "--database", "postgresql://alice:s3cret@127.0.0.1:1/reg?connect_timeout=2")
    assert code == 5 and "127.0.0.1:1/reg" in err
    assert "s3cret" not in err + out
    code, out, err = cli("list", "--database", "postgresql://127.0.0.1:1/reg?password=s3cret&connect_timeout=2")
    assert code == 5 and "s3cret" not in err + out


def test_the_database_setting_resolves_like_the_cli(tmp_path, monkeypatch):
    from eventstore.errors import ValidationError
    from modelledger.config import Config, mask_url

    monkeypatch.delenv("MLEDGER_DATABASE", raising=False)
    assert Config.load(tmp_path / "h").location == str((tmp_path / "h" / "registry.db").resolve())
    monkeypatch.chdir(tmp_path)
    assert Config.load(tmp_path / "h", database="x.db").location == str(tmp_path.resolve() / "x.db")
    monkeypatch.setenv("MLEDGER_DATABASE", "postgresql://u:pw@db.example/reg")
    config = Config.load(tmp_path / "h")
    assert config.is_postgres and config.location == "postgresql://u:pw@db.example/reg"
    assert config.database_label == "postgresql://u:***@db.example/reg"
    assert mask_url("postgresql://db/reg?user=u&password=pw") == "postgresql://db/reg?user=u&password=***"
    assert Config.load(tmp_path / "h", database=str(tmp_path / "y.db")).location == str(tmp_path / "y.db")
    assert Path(Config.load(tmp_path / "h", database="sqlite:///" + str(tmp_path / "z.db")).location).name == "z.db"
    kv = Config.load(tmp_path / "h", database="host=db dbname=reg password=pw")  # libpq's key=value form
    assert kv.is_postgres and kv.location == "host=db dbname=reg password=pw"
    assert kv.database_label == "host=db dbname=reg password=***"
    with pytest.raises(ValidationError, match="postgresql:// URL or a SQLite file"):
        Config.load(tmp_path / "h", database="mysql://db/reg")
