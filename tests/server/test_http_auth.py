"""Tokens and roles over HTTP: who may do what, what is refused before anything is appended, and whose
name the log records; on each backend (SQLite, PostgreSQL), since each keeps its own token table
(projections/sqlite/access.py, projections/postgres/access.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from server_support import bearer, head, register, upload
from services import mledger_command, subprocess_env

from modelledger import Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on both backends: "" is the home's registry.db; on PostgreSQL, a schema of its own
    in the run's shared database (dropped after), as the suite's MLEDGER_TEST_DATABASE=postgresql pass does."""
    if request.param == "sqlite":
        yield ""
        return
    from contracts.databases import registry_schema

    with registry_schema(request.getfixturevalue("shared_postgres_database")) as url:
        yield url


def test_no_token_is_401_and_unknown_token_is_401(make_client, tokens, home):
    anonymous = make_client()
    r = anonymous.get("/api/v1/list")
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    assert r.headers["www-authenticate"] == "Bearer"
    stranger = make_client("mlt_not-a-token")
    assert stranger.get("/api/v1/list").status_code == 401
    assert anonymous.post("/api/v1/tag", json={"ref": "m@1", "tags": {"a": "b"}}).status_code == 401
    r = make_client().get("/api/v1/list", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]


def test_health_and_openapi_need_no_token(make_client):
    client = make_client()
    assert client.get("/api/v1/health").json()["ok"] is True
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/register" in spec["paths"] and "/api/v1/log/stream" in spec["paths"]


def test_reader_reads_but_cannot_write(make_client, writer, tokens, home):
    register(writer, "resnet")
    reader = make_client(tokens["reader"])
    assert reader.get("/api/v1/show", params={"ref": "resnet@1"}).json()["ref"] == "resnet@1"
    before = head(home)
    r = reader.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"stage": "prod"}})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = reader.put("/api/v1/blobs/sha256:" + "0" * 64, params={"size": 1}, content=b"x")
    assert r.status_code == 403
    assert head(home) == before


def test_writer_changes_only_models_under_its_prefix(make_client, tokens, home):
    team = make_client(tokens["team"])
    v = register(team, "team-a/resnet")
    assert v["ref"] == "team-a/resnet@1"
    before = head(home)
    r = team.post("/api/v1/register", json={"name": "team-b/resnet", "artifact": upload(team, b"other")})
    assert r.status_code == 403 and "team-a/" in r.json()["message"]
    for path, body in (("/api/v1/tag", {"ref": "team-b/x@1", "tags": {"a": "b"}}),
                       ("/api/v1/alias", {"ref": "team-b/x@1", "alias": "prod"}),
                       ("/api/v1/rollback", {"name": "team-b/x", "alias": "prod"}),
                       ("/api/v1/delete", {"ref": "team-b/x"}),
                       ("/api/v1/update", {"ref": "team-b/x@1", "params": {"lr": 1}})):
        r = team.post(path, json=body)
        assert r.status_code == 403, (path, r.text)
    assert head(home) == before


def test_admin_commands_are_refused_to_writers(writer, home):
    register(writer, "resnet")
    before = head(home)
    assert writer.post("/api/v1/gc", json={"grace": "0s"}).status_code == 403
    assert writer.post("/api/v1/restore", json={"as_of": "#1"}).status_code == 403
    assert writer.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    assert writer.get("/api/v1/tokens").status_code == 403
    assert writer.post("/api/v1/tokens/revoke", json={"name": "reader"}).status_code == 403
    assert writer.get("/api/v1/audit", params={"deep": "true"}).status_code == 403
    assert head(home) == before


def test_the_actor_is_the_token_name_never_the_client(writer, home):
    v = register(writer, "resnet")
    assert v["created_by"] == "writer"
    # A body naming another actor is refused outright (no field is silently ignored) ...
    r = writer.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"a": "b"}, "actor": "root"})
    assert r.status_code == 400
    # ... and a header cannot set it either.
    r = writer.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"a": "b"}}, headers={"X-Actor": "root"})
    assert r.status_code == 200
    with Registry.open(home) as reg:
        actors = {e.meta["actor"] for e in reg.log() if e.stream == "model-resnet"}
        clients = {e.meta["client"] for e in reg.log() if e.stream == "model-resnet"}
    assert actors == {"writer"}
    assert all(c.endswith(" http") for c in clients)


def test_tokens_over_http_grant_revoke_and_audit_trail(admin, make_client, home):
    r = admin.post("/api/v1/tokens", json={"name": "ci", "role": "writer", "prefix": "team-a/", "expires": "30d"})
    assert r.status_code == 200, r.text
    granted = r.json()
    secret = granted["secret"]
    assert secret.startswith("mlt_") and granted["expires_at"] is not None
    ci = make_client(secret)
    assert ci.get("/api/v1/list").status_code == 200
    listed = admin.get("/api/v1/tokens").json()["tokens"]
    assert {t["name"] for t in listed} >= {"ci", "admin"}
    assert all("secret" not in t and "secret_sha256" not in t for t in listed)
    assert admin.post("/api/v1/tokens/revoke", json={"name": "ci", "reason": "left"}).status_code == 200
    r = ci.get("/api/v1/list")
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    with Registry.open(home) as reg:
        trail = [e for e in reg.log() if e.stream == "token-ci"]
    assert [(e.type, e.meta["actor"]) for e in trail] == [("TokenGranted", "admin"), ("TokenRevoked", "admin")]
    # The log keeps the hash of the secret, never the secret.
    assert secret not in str([e.to_json() for e in trail])
    assert secret[4:] not in str([e.to_json() for e in trail])


def test_expired_token_is_refused(home, make_client):
    from datetime import UTC, datetime, timedelta

    from eventstore.access import CreateToken, execute_access, new_secret, secret_hash
    from eventstore.clock import FORMAT

    secret = new_secret()
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime(FORMAT)
    with Registry.open(home) as reg:
        execute_access(reg.recorder, CreateToken("old", "reader", secret_hash(secret), "", past), {"actor": "op"})
    r = make_client(secret).get("/api/v1/list")
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_anonymous_reads_only_when_allowed(make_client, writer, home):
    register(writer, "resnet")
    open_reads = make_client(allow_anonymous_read=True)
    assert open_reads.get("/api/v1/show", params={"ref": "resnet"}).status_code == 200
    before = head(home)
    r = open_reads.post("/api/v1/tag", json={"ref": "resnet@1", "tags": {"a": "b"}})
    assert r.status_code == 401
    # A bad token is still refused, even where reads are open.
    assert open_reads.get("/api/v1/list", headers=bearer("mlt_wrong")).status_code == 401
    assert head(home) == before


def test_a_revoked_token_is_refused_at_once_by_every_server_process(start_server, tokens, home, registry_database):
    """Two `mledger serve` processes on one registry (SQLite file or PostgreSQL database), each reading the
    registry's token table: a grant through one works on the other, and a revocation, through either or by
    the CLI (a third process), is refused by both from their next request on."""
    one, two = start_server(), start_server()
    with one.client(tokens["admin"]) as admin, two.client(tokens["reader"]) as reader_on_two, \
            one.client(tokens["reader"]) as reader_on_one:
        assert reader_on_two.get("/api/v1/list").status_code == 200
        assert reader_on_one.get("/api/v1/list").status_code == 200
        granted = admin.post("/api/v1/tokens", json={"name": "ci", "role": "writer"}).json()
        with two.client(granted["secret"]) as ci_on_two, one.client(granted["secret"]) as ci_on_one:
            assert ci_on_two.post("/api/v1/tag", json={"ref": "nosuch", "tags": {"a": "b"}}).status_code == 404
            assert ci_on_one.get("/api/v1/list").status_code == 200
            assert admin.post("/api/v1/tokens/revoke", json={"name": "ci"}).status_code == 200
            r = ci_on_two.get("/api/v1/list")
            assert r.status_code == 401 and r.json()["error"] == "unauthenticated" and "revoked" in r.json()["message"]
            assert ci_on_one.get("/api/v1/list").status_code == 401
        out = subprocess.run([*mledger_command(), "token", "revoke", "reader"], env=subprocess_env(home),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert reader_on_two.get("/api/v1/list").status_code == 401
        assert reader_on_one.get("/api/v1/list").status_code == 401
        assert httpx.get(f"{two.url}/api/v1/list").status_code == 401
    with Registry.open(home) as reg:
        assert reg.recorder.dialect == ("postgresql" if registry_database else "sqlite")
        listed = {t.token: t for t in reg.tokens()}
    assert listed["ci"].revoked and listed["reader"].revoked and not listed["admin"].revoked
    assert listed["ci"].revoked_by == "admin" and listed["ci"].granted_by == "admin"


def test_revocation_and_grant_behind_many_writes_are_seen_at_the_next_request(make_client, writer, tokens, home):
    """The token table folds only token events: a revocation (and a new grant) made by another process after
    many model events, while this server already answered requests, is in force at its very next request."""
    register(writer, "busy")
    reader = make_client(tokens["reader"])
    for k in range(30):  # model events after the table's last fold
        assert writer.post("/api/v1/tag", json={"ref": "busy@1", "tags": {"k": str(k)}}).status_code == 200
        assert reader.get("/api/v1/show", params={"ref": "busy@1"}).status_code == 200
    with Registry.open(home, actor="operator@host") as reg:  # another process: the local CLI's registry
        reg.revoke_token("reader", "rotated")
        _state, fresh = reg.create_token("reader2", "reader")
        reg.tag("busy@1", {"after": "revoke"})
    r = reader.get("/api/v1/show", params={"ref": "busy@1"})
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    shown = make_client(fresh).get("/api/v1/show", params={"ref": "busy@1"})
    assert shown.status_code == 200 and shown.json()["tags"]["after"] == "revoke"
    assert writer.post("/api/v1/tag", json={"ref": "busy@1", "tags": {"k": "last"}}).status_code == 200


def test_the_token_table_writes_only_when_a_token_event_arrived(home, tokens, tmp_path):
    """Model events appended by another process need no fold (nothing is written for them: the table is read
    on every request); a revocation among them is folded and refused at the next lookup."""
    from eventstore.access import secret_hash

    w = tmp_path / "w.bin"
    w.write_bytes(b"weights")
    with Registry.open(home) as server_side, Registry.open(home, actor="other@host") as other:
        table = server_side.token_table
        reader = secret_hash(tokens["reader"])
        assert table.find(reader).token == "reader"

        def checkpoint() -> int:
            with server_side.recorder.read_snapshot() as conn:
                return table.sql.checkpoint(conn)

        folded = checkpoint()
        other.register("m", str(w))
        other.tag("m@1", stage="dev")
        assert not table.find(reader).revoked
        assert checkpoint() == folded  # read, not written
        other.revoke_token("reader", "rotated")
        revoked_at = other.head()
        other.tag("m@1", stage="prod")
        found = table.find(reader)
        assert found.revoked and found.revoked_by == "other@host"
        assert checkpoint() == revoked_at  # folded through the revocation; the tag after it needs no fold


def test_a_remembered_token_is_refused_as_soon_as_another_registry_revokes_it(home, tokens):
    """A server process remembers the tokens it found (``auth._find``), yet a revocation or a new grant made
    through another open registry (another process, as far as the log can tell) counts from the next lookup:
    nothing is remembered past a token event."""
    from eventstore.errors import AuthenticationError
    from modelledger.server.auth import authenticate

    with Registry.open(home) as server, Registry.open(home, actor="operator@host") as operator:
        table = server.token_table
        for _ in range(2):  # the second lookup is the remembered one
            assert authenticate(table, f"Bearer {tokens['writer']}", allow_anonymous_read=False).name == "writer"
        _state, fresh = operator.create_token("fresh", "reader")
        assert authenticate(table, f"Bearer {fresh}", allow_anonymous_read=False).role == "reader"
        assert authenticate(table, f"Bearer {tokens['writer']}", allow_anonymous_read=False).name == "writer"
        operator.revoke_token("writer")
        with pytest.raises(AuthenticationError, match="revoked"):
            authenticate(table, f"Bearer {tokens['writer']}", allow_anonymous_read=False)
        assert authenticate(table, f"Bearer {fresh}", allow_anonymous_read=False).name == "fresh"
        with pytest.raises(AuthenticationError, match="unknown token"):
            authenticate(table, "Bearer mlt_nosuch", allow_anonymous_read=False)
