"""`mledger` refusals: every bad input, unknown reference and conflict exits non-zero with exactly one line
on stderr and appends nothing — in-process (``cli.main``) and through the real console script. Also the
CLI's idempotent retry (``--idempotency-key``)."""

from __future__ import annotations

import json

import pytest

BIG = 1024 * 1024 + 10


@pytest.fixture
def setup(reg, artifact, tmp_path):
    """m@1, m@2 (production), and a few payload files."""
    reg.register("m", artifact, params={"lr": 0.1})
    reg.update("m@1", params={"lr": 0.01})
    reg.alias("m@2", "production")
    files = tmp_path / "payloads"
    files.mkdir()
    (files / "big.json").write_text('{"a": "' + "x" * BIG + '"}')
    (files / "list.json").write_text("[1, 2]")
    (files / "broken.json").write_text('{"a": ')
    (files / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    return {"artifact": str(artifact), "files": files, "head": reg.head(), "reg": reg}


def _cases(art: str, files) -> list[tuple[str, list[str]]]:
    big_inline = '{"a": "' + "x" * BIG + '"}'
    cases = [
        # bad names
        *[(f"name {n!r}", ["register", n, "--artifact", art])
          for n in ("../x", "a b", "n" * 200, "", "/x", "x/", "a/b/c", "a\nb", "..", "-x")],
        # unknown references
        ("unknown model", ["show", "nosuch"]),
        ("unknown version", ["show", "m@99"]),
        ("unknown alias", ["show", "m@nosuchalias"]),
        ("tag unknown model", ["tag", "nosuch", "k=v"]),
        ("metrics unknown version", ["metrics", "m@99", "acc=1"]),
        ("alias unknown version", ["alias", "m@99", "production"]),
        ("update unknown alias", ["update", "m@nosuchalias", "--params", "{}"]),
        ("delete unknown", ["delete", "nosuch@1"]),
        ("undelete live", ["undelete", "m@1"]),
        ("history unknown", ["history", "nosuch"]),
        ("best unknown metric", ["best", "m", "--metric", "f1"]),
        ("rollback with no history", ["rollback", "m", "staging"]),
        ("unalias unknown", ["unalias", "m", "staging"]),
        ("untag missing key", ["untag", "m@1", "nokey"]),
        # malformed JSON
        ("params {", ["update", "m@1", "--params", "{"]),
        ("params [1]", ["update", "m@1", "--params", "[1]"]),
        ("params NaN", ["update", "m@1", "--params", "NaN"]),
        ("params Infinity inside", ["update", "m@1", "--params", '{"a": Infinity}']),
        ("params string", ["update", "m@1", "--params", '"text"']),
        ("register params [1]", ["register", "m", "--artifact", art, "--params", "[1]"]),
        ("structure broken @file", ["update", "m@1", "--structure", f"@{files / 'broken.json'}"]),
        ("optimizer list @file", ["update", "m@1", "--optimizer", f"@{files / 'list.json'}"]),
        ("params missing @file", ["update", "m@1", "--params", f"@{files / 'nope.json'}"]),
        ("params not utf-8 @file", ["update", "m@1", "--params", f"@{files / 'latin1.json'}"]),
        # over 1 MiB
        ("params over 1 MiB inline", ["update", "m@1", "--params", big_inline]),
        ("params over 1 MiB @file", ["update", "m@1", "--params", f"@{files / 'big.json'}"]),
        ("register params over 1 MiB @file", ["register", "m", "--artifact", art, "--params",
                                              f"@{files / 'big.json'}"]),
        # aliases
        ("alias 123", ["alias", "m@1", "123"]),
        ("alias latest", ["alias", "m@1", "latest"]),
        ("alias upper", ["alias", "m@1", "Prod"]),
        ("unalias latest", ["unalias", "m", "latest"]),
        # tags
        ("tag bad key", ["tag", "m@1", "bad key=v"]),
        ("tag empty key", ["tag", "m@1", "=v"]),
        ("tag no =", ["tag", "m@1", "novalue"]),
        ("tag value too long", ["tag", "m@1", "k=" + "v" * 1025]),
        ("register bad tag", ["register", "m", "--artifact", art, "--tag", "a b=c"]),
        ("untag bad key", ["untag", "m@1", "bad key"]),
        # metrics
        ("metric not a number", ["metrics", "m@1", "acc=high"]),
        ("metric nan", ["metrics", "m@1", "acc=nan"]),
        ("metric inf", ["metrics", "m@1", "acc=inf"]),
        ("metric empty", ["metrics", "m@1", "acc="]),
        ("metric bad key", ["metrics", "m@1", "a b=1"]),
        # update with nothing to change
        ("update nothing", ["update", "m@1"]),
        # artifacts
        ("missing artifact", ["register", "m", "--artifact", str(files / "does-not-exist.bin")]),
        ("empty artifact source", ["register", "m", "--artifact", ""]),
        ("update missing artifact", ["update", "m@1", "--artifact", str(files / "does-not-exist.bin")]),
        # argparse refusals
        ("register without --artifact", ["register", "m"]),
        ("unknown command", ["frobnicate"]),
        ("metrics without pairs", ["metrics", "m@1"]),
        ("best without --metric", ["best", "m"]),
        ("log negative since", ["log", "--since", "-1"]),
        # references
        ("bad ref @", ["show", "m@"]),
        ("bad ref @0", ["show", "m@0"]),
        ("bad ref chars", ["show", "m@Bad!"]),
    ]
    return cases


CASE_IDS = [c[0] for c in _cases("ART", __import__("pathlib").Path("F"))]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_bad_input_exits_non_zero_with_one_line_and_appends_nothing(setup, cli, index):
    label, argv = _cases(setup["artifact"], setup["files"])[index]
    code, out, err = cli(*argv)
    assert code != 0, f"{label}: exit 0 (stdout {out[:200]!r})"
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"{label}: stderr is not one line: {err[:500]!r}"
    assert lines[0].startswith("mledger"), lines[0]
    assert "Traceback" not in err
    assert len(lines[0]) < 500, f"{label}: message too long ({len(lines[0])} chars)"
    assert out == ""
    assert setup["reg"].recorder.head() == setup["head"], f"{label}: events were appended"


def test_exit_codes_tell_bad_input_from_not_found_and_conflict(setup, cli):
    assert cli("register", "a b", "--artifact", setup["artifact"])[0] == 2
    assert cli("show", "nosuch")[0] == 3
    assert cli("show", "m@99")[0] == 3
    setup["reg"].delete("m")
    assert cli("tag", "m", "k=v")[0] == 4


def test_a_refused_register_copies_no_bytes(setup, cli, home, make_artifact):
    fresh = make_artifact("fresh.bin", b"never stored")
    blobs = sorted(p for p in (home / "artifacts").rglob("*") if p.is_file())
    code, _, _ = cli("register", "a b", "--artifact", str(fresh))
    assert code == 2
    code, _, _ = cli("register", "m", "--artifact", str(fresh), "--params", "[1]")
    assert code == 2
    assert sorted(p for p in (home / "artifacts").rglob("*") if p.is_file()) == blobs


# -- the real console script --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("label", "argv", "code"),
    [
        ("bad name", ["register", "../x", "--artifact", "{art}"], 2),
        ("unknown version", ["show", "m@99"], 3),
        ("unknown alias", ["metrics", "m@nosuchalias", "acc=1"], 3),
        ("malformed json", ["update", "m@1", "--params", "{"], 2),
        ("payload over 1 MiB @file", ["update", "m@1", "--params", "@{big}"], 2),
        ("alias latest", ["alias", "m@1", "latest"], 2),
        ("metric not a number", ["metrics", "m@1", "acc=high"], 2),
        ("missing artifact", ["register", "m", "--artifact", "{missing}"], None),
        ("argparse error", ["register", "m"], 2),
    ],
)
def test_console_script_refusals(setup, mledger, label, argv, code):
    files = setup["files"]
    subst = {"{art}": setup["artifact"], "{big}": str(files / "big.json"), "{missing}": str(files / "nope.bin")}
    for key, value in subst.items():
        argv = [a.replace(key, value) for a in argv]
    proc = mledger(*argv)
    assert proc.returncode != 0, label
    if code is not None:
        assert proc.returncode == code, (label, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1, (label, proc.stderr)
    assert proc.stdout == ""
    assert setup["reg"].recorder.head() == setup["head"]


def test_console_script_register_and_show(setup, mledger):
    proc = mledger("register", "cli-model", "--artifact", setup["artifact"], "--tag", "task=vision", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ref"] == "cli-model@1"
    proc = mledger("show", "cli-model@1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tags"] == {"task": "vision"}
    assert setup["reg"].get("cli-model").version == 1


# -- idempotent retry through the CLI ------------------------------------------------------------------

def test_cli_idempotency_key_returns_the_first_result(setup, cli):
    reg, art = setup["reg"], setup["artifact"]
    code, out, err = cli("register", "m", "--artifact", art, "--params", '{"lr": 1}', "--idempotency-key",
                         "job-7", "--json")
    assert code == 0, err
    first = json.loads(out)
    head = reg.head()
    code, out, err = cli("register", "m", "--artifact", art, "--params", '{"lr": 1}', "--idempotency-key",
                         "job-7", "--json")
    assert code == 0, err
    assert json.loads(out)["ref"] == first["ref"] == "m@3"
    assert reg.head() == head
    code, out, err = cli("register", "m", "--artifact", art, "--params", '{"lr": 2}', "--idempotency-key",
                         "job-7", "--json")
    assert code == 4 and len(err.splitlines()) == 1 and "job-7" in err
    assert reg.head() == head
    code, out, err = cli("update", "m@1", "--params", '{"x": 1}', "--idempotency-key", "job-8", "--json")
    assert code == 0, err
    head = reg.head()
    code, out2, err = cli("update", "m@1", "--params", '{"x": 1}', "--idempotency-key", "job-8", "--json")
    assert code == 0 and json.loads(out2)["ref"] == json.loads(out)["ref"] and reg.head() == head


@pytest.mark.parametrize("extra", [("--artifact", "OTHER"), ("--tag", "team=b"), ("--description", "second"),
                                   ("--structure", '{"layers": 3}')])
def test_cli_idempotency_key_reused_with_another_artifact_tags_description_or_structure_is_refused(
        setup, cli, tmp_path, extra):
    reg, art = setup["reg"], setup["artifact"]
    other = tmp_path / "other.bin"
    other.write_bytes(b"other weights\n")
    base = {"--artifact": art, "--tag": "team=a", "--description": "first", "--structure": '{"layers": 2}'}
    argv = [x for k, v in base.items() for x in (k, v)]
    code, out, err = cli("register", "m", *argv, "--idempotency-key", "job-9", "--json")
    assert code == 0, err
    head = reg.head()
    changed = base | {extra[0]: str(other) if extra[1] == "OTHER" else extra[1]}
    argv = [x for k, v in changed.items() for x in (k, v)]
    code, out, err = cli("register", "m", *argv, "--idempotency-key", "job-9", "--json")
    assert code == 4, (out, err)
    assert len(err.splitlines()) == 1 and "job-9" in err
    assert reg.head() == head


def test_console_script_idempotent_retry(setup, mledger):
    reg, art = setup["reg"], setup["artifact"]
    args = ("register", "m", "--artifact", art, "--idempotency-key", "sub-1", "--json")
    first = mledger(*args)
    assert first.returncode == 0, first.stderr
    head = reg.head()
    again = mledger(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ref"] == json.loads(first.stdout)["ref"]
    assert reg.head() == head
