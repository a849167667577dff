"""The CLI over HTTP (MLEDGER_URL + MLEDGER_TOKEN): the same session run locally and against a real server
gives the same answers, the same exit codes, and pulls the same verified bytes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from services import mledger_command, subprocess_env


def _strip(value: Any) -> Any:
    """What differs between a local run and a remote one by design: times, positions, hashes, who acted,
    and the artifact's recorded source (a local path vs upload://<name>)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if k not in ("created_at", "updated_at", "recorded_at", "position", "hash", "meta", "created_by",
                             "source", "version" if "stream" in value else "", "restore_id")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


SESSION = [
    ("register", "m", "--artifact", "{w1}", "--tag", "task=vision", "--params", '{{"lr": 0.1}}'),
    ("update", "m@1", "--params", '{{"lr": 0.01}}'),
    ("update", "m@2", "--artifact", "{folder}"),
    ("tag", "m@2", "stage=prod"),
    ("untag", "m@2", "stage"),
    ("metrics", "m@1", "acc=0.7"),
    ("metrics", "m@2", "acc=0.9"),
    ("alias", "m@1", "prod"),
    ("alias", "m@2", "prod"),
    ("rollback", "m", "prod", "--idempotency-key", "rb-1"),
    ("rollback", "m", "prod", "--idempotency-key", "rb-1"),
    ("list",),
    ("list", "--search", "vision"),
    ("list", "--tag", "task=vision", "--alias", "prod"),
    ("show", "m"),
    ("show", "m@prod"),
    ("show", "m@3"),
    ("best", "m", "--metric", "acc"),
    ("history", "m@1"),
    ("diff", "m@1", "m@2"),
    ("delete", "m@2", "--reason", "bad"),
    ("undelete", "m@2"),
    ("audit",),
    # refusals: the exit codes must match too
    ("show", "ghost"),
    ("tag", "bad name@1", "a=b"),
    ("rollback", "m", "nosuch"),
    ("alias", "m@1", "prod"),
    ("metrics", "m@1", "acc=high"),
    ("register", "m", "--artifact", "{missing}"),
]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*mledger_command(), *args, "--json"], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cli_gives_the_same_answers_locally_and_over_http(start_server, tokens, home, tmp_path):
    w1 = tmp_path / "w1.bin"
    w1.write_bytes(b"weights one")
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "a.bin").write_bytes(b"a" * 1000)
    values = {"w1": str(w1), "folder": str(folder), "missing": str(tmp_path / "missing.bin")}
    server = start_server()
    remote_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["admin"])
    local_env = subprocess_env(tmp_path / "local")
    for step in SESSION:
        args = [a.format(**values) for a in step]
        local, remote = run(local_env, *args), run(remote_env, *args)
        assert remote.returncode == local.returncode, (args, local.stderr, remote.stderr)
        if local.returncode == 0 and args[0] == "audit":  # the server's log also holds its tokens' grants
            assert json.loads(remote.stdout)["ok"] is json.loads(local.stdout)["ok"] is True
        elif local.returncode == 0:
            assert _strip(json.loads(remote.stdout)) == _strip(json.loads(local.stdout)), args
        else:
            assert remote.stderr.startswith("mledger: error:") and remote.stderr.count("\n") == 1, remote.stderr
    # Pull over HTTP writes the same verified bytes (a file and a folder).
    for ref in ("m@1", "m@3"):
        dest_local, dest_remote = tmp_path / f"l-{ref}", tmp_path / f"r-{ref}"
        assert run(local_env, "pull", ref, str(dest_local)).returncode == 0
        out = run(remote_env, "pull", ref, str(dest_remote))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["verified"] is True
        if dest_local.is_dir():
            assert sorted(p.relative_to(dest_remote).as_posix() for p in dest_remote.rglob("*")) == \
                sorted(p.relative_to(dest_local).as_posix() for p in dest_local.rglob("*"))
            assert (dest_remote / "sub" / "a.bin").read_bytes() == b"a" * 1000
        else:
            assert dest_remote.read_bytes() == dest_local.read_bytes() == b"weights one"
    # Nothing was written to a local registry in remote mode, and the server recorded the token's name.
    assert not (tmp_path / "nowhere").exists()
    lines = run(remote_env, "log", "--since", "0").stdout.splitlines()
    actors = {json.loads(x)["meta"]["actor"] for x in lines if json.loads(x)["stream"] == "model-m"}
    assert actors == {"admin"}


def test_remote_refusals_and_local_only_commands(start_server, tokens, tmp_path):
    server = start_server()
    reader_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN=tokens["reader"])
    w = tmp_path / "w.bin"
    w.write_bytes(b"w")
    out = run(reader_env, "register", "m", "--artifact", str(w))
    assert out.returncode == 9 and "reader" in out.stderr  # PermissionDeniedError
    bad_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL=server.url, MLEDGER_TOKEN="mlt_wrong")
    assert run(bad_env, "list").returncode == 8  # AuthenticationError
    assert run(reader_env, "audit", "--anchor").returncode == 2
    down_env = subprocess_env(tmp_path / "nowhere", MLEDGER_URL="http://127.0.0.1:9", MLEDGER_TOKEN="x")
    out = run(down_env, "list")
    assert out.returncode == 5 and "cannot reach" in out.stderr
    assert not Path(tmp_path / "nowhere").exists()


def test_the_sdk_opens_the_server_when_mledger_url_is_set(start_server, tokens, tmp_path, monkeypatch):
    from modelledger import Registry
    from modelledger.remote import RemoteRegistry

    server = start_server()
    monkeypatch.setenv("MLEDGER_URL", server.url)
    monkeypatch.setenv("MLEDGER_TOKEN", tokens["writer"])
    w = tmp_path / "w.bin"
    w.write_bytes(b"sdk weights")
    with Registry.open() as reg:
        assert isinstance(reg, RemoteRegistry)
        v1 = reg.register("sdk-model", str(w), params={"lr": 0.1}, idempotency_key="reg-1")
        assert reg.register("sdk-model", str(w), params={"lr": 0.1}, idempotency_key="reg-1").ref == v1.ref
        v2 = reg.update(v1.ref, params={"lr": 0.2})
        reg.alias(v1.ref, "prod")
        reg.alias(v2.ref, "prod")
        first = reg.rollback("sdk-model", "prod", idempotency_key="rb")
        again = reg.rollback("sdk-model", "prod", idempotency_key="rb")
        assert [e.position for e in first] == [e.position for e in again]
        assert reg.model("sdk-model").aliases == {"prod": 1}
        assert [v.ref for v in reg.search(keyword="sdk-model")] == ["sdk-model@1", "sdk-model@2"]
        out = tmp_path / "out.bin"
        reg.pull("sdk-model@prod", str(out))
        assert out.read_bytes() == b"sdk weights"
        assert reg.get("sdk-model").version == 2  # a bare name: the latest live version, as locally
