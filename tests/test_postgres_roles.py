"""PostgreSQL roles as docs/operations.md sets them up: a role that can only SELECT reads, lists, shows and
audits a registry, and every write fails with one line (exit 5) and changes nothing."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = pytest.mark.postgres


@pytest.fixture
def owner_and_reader(new_postgres_database):
    """A database (the owner's URL) and a new login role with no rights yet (dropped after the test)."""
    import psycopg
    from contracts.databases import admin_connection
    from psycopg import sql

    url = new_postgres_database()
    name = f"mledger_reader_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield url, name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:  # its grants, before the role can go
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        with admin_connection() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_select_only_role_reads_and_audits_and_cannot_write(cli, home, make_artifact, owner_and_reader,
                                                              monkeypatch):
    import psycopg
    from psycopg import sql

    owner_url, reader_role = owner_and_reader
    monkeypatch.setenv("MLEDGER_DATABASE", owner_url)
    art = make_artifact("m.bin", b"weights\n")
    assert cli("register", "m", "--artifact", str(art), "--tag", "task=roles")[0] == 0
    assert cli("alias", "m@1", "production")[0] == 0
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader_role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(reader_role)))
    parts = urlsplit(owner_url)
    reader_url = urlunsplit(parts._replace(netloc=f"{reader_role}@{parts.hostname}:{parts.port or 5432}"))
    monkeypatch.setenv("MLEDGER_DATABASE", reader_url)
    code, out, err = cli("show", "m@production", "--json")
    assert code == 0 and json.loads(out)["version"] == 1, err
    code, out, err = cli("list", "--json", "--search", "roles")
    assert code == 0 and [m["name"] for m in json.loads(out)["models"]] == ["m"], err
    code, out, _ = cli("log", "--json")
    head = len(out.splitlines())
    assert code == 0 and head == 4
    code, out, err = cli("audit", "--json")
    assert code == 0 and json.loads(out)["ok"], err
    code, out, err = cli("tag", "m@1", "k=v")
    assert code == 5 and "read-only for this role" in err and err.count("\n") == 1
    monkeypatch.setenv("MLEDGER_DATABASE", owner_url)
    code, out, _ = cli("log", "--json")
    assert len(out.splitlines()) == head


def test_a_role_that_cannot_upgrade_an_older_registry_reads_it_and_is_told_to_open_it_as_owner(
        cli, home, make_artifact, owner_and_reader, monkeypatch):
    """A schema-1 registry (before ``mledger_command_head``) opened first by a role without CREATE: it reads
    as before, and a command fails with one line naming the fix; once the owner has opened it, the same role
    gets the usual answer."""
    import psycopg
    from psycopg import sql

    owner_url, reader_role = owner_and_reader
    monkeypatch.setenv("MLEDGER_DATABASE", owner_url)
    assert cli("register", "m", "--artifact", str(make_artifact("m.bin", b"weights\n")))[0] == 0
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION mledger_command_head(text)")
        conn.execute("UPDATE registry_meta SET value = '1' WHERE key = 'schema'")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader_role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(reader_role)))
    parts = urlsplit(owner_url)
    reader_url = urlunsplit(parts._replace(netloc=f"{reader_role}@{parts.hostname}:{parts.port or 5432}"))
    monkeypatch.setenv("MLEDGER_DATABASE", reader_url)
    code, out, err = cli("show", "m@1", "--json")
    assert code == 0 and json.loads(out)["version"] == 1, err
    code, _, err = cli("tag", "m@1", "k=v")
    assert code == 5 and "open it once as its owner" in err and err.count("\n") == 1
    monkeypatch.setenv("MLEDGER_DATABASE", owner_url)
    assert cli("show", "m@1", "--json")[0] == 0  # the owner's open upgrades it
    monkeypatch.setenv("MLEDGER_DATABASE", reader_url)
    code, _, err = cli("tag", "m@1", "k=v")
    assert code == 5 and "read-only for this role" in err
    monkeypatch.setenv("MLEDGER_DATABASE", owner_url)
    assert cli("tag", "m@1", "k=v")[0] == 0
