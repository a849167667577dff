"""Inputs are bounded and plain (security findings M4, M5, M6, L1, L4, L5, L13).

Every refusal exits with the right code, one line on stderr, no traceback, and appends nothing. Special
files are stand-ins made in tmp folders (a FIFO, a character device node like /dev/zero), never the
machine's own devices.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from services import mledger_command, subprocess_env

from eventstore.merge_patch import merge_patch
from eventstore.schemas import JSON_DEPTH_MAX
from modelledger import Registry
from modelledger.output import plain


def refused(result: tuple[int, str, str], code: int) -> str:
    rc, _, err = result
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def setup(home: Path, tmp_path: Path) -> dict:
    """m@1 (params {"lr": 0.1}); returns the head and a folder for payload files."""
    art = tmp_path / "base.bin"
    art.write_text("hello\n")
    with Registry.open(home) as reg:
        reg.register("m", art, params={"lr": 0.1})
        events = reg.head()
    files = tmp_path / "payloads"
    files.mkdir()
    return {"home": home, "art": str(art), "files": files, "head": events}


def head(home: Path) -> int:
    with Registry.open(home) as reg:
        return reg.head()


def zero_device(folder: Path) -> Path | None:
    """A stand-in for /dev/zero (same major/minor) inside ``folder``; None when not root."""
    node = folder / "zero"
    try:
        os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        return None
    return node


# -- M4: @file arguments and exports are read with a bound ---------------------------------------------

def test_at_file_refuses_fifos_devices_folders_and_oversize(cli, setup) -> None:
    files: Path = setup["files"]
    fifo = files / "fifo"
    os.mkfifo(fifo)  # a plain open() of it would block for ever
    (files / "big.json").write_text('{"a": "' + "x" * (1024 * 1024) + '"}')
    cases = [(fifo, "FIFO"), (files, "folder"), (files / "big.json", "over"), (files / "missing.json", "cannot read")]
    if (zero := zero_device(files)) is not None:
        cases.append((zero, "device"))
    for path, says in cases:
        for option in ("--params", "--structure", "--optimizer"):
            err = refused(cli("update", "m@1", option, f"@{path}"), 2)
            assert says in err, err
    assert head(setup["home"]) == setup["head"]


def test_at_file_reads_at_most_the_limit_plus_one_byte(tmp_path: Path) -> None:
    """A 256 MiB (sparse) file: refused after reading 1 MiB + 1 byte, never loaded whole. Measured as the peak
    of Python allocations, not as time."""
    import tracemalloc

    from eventstore.errors import ValidationError
    from modelledger.inputs import json_arg

    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(256 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match="over"):
            json_arg(f"@{huge}", "params")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak:,} bytes"


def test_at_file_reads_a_regular_file_through_a_symlink(cli, setup) -> None:
    files: Path = setup["files"]
    (files / "p.json").write_text('{"lr": 0.5}')
    (files / "link.json").symlink_to(files / "p.json")
    code, out, err = cli("update", "m@1", "--params", f"@{files / 'link.json'}", "--json")
    assert code == 0, err
    assert json.loads(out)["params"] == {"lr": 0.5}


def _bundle(cli, tmp_path: Path) -> list[str]:
    path = tmp_path / "good.jsonl"
    assert cli("audit", "--export", str(path))[0] == 0
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.local_only("audit --export reads the database itself; over HTTP it is refused by design")
def test_verify_export_refuses_what_is_not_a_bundle_in_one_line(cli, setup, tmp_path: Path) -> None:
    files: Path = setup["files"]
    good = _bundle(cli, tmp_path)
    fifo = files / "fifo"
    os.mkfifo(fifo)
    cases = [(files / "missing.jsonl", 2), (files, 2), (fifo, 2)]
    if (zero := zero_device(files)) is not None:
        cases.append((zero, 2))
    (files / "latin1.jsonl").write_bytes(good[0].encode() + b"\n" + b'{"stream": "caf\xe9"}\n')
    (files / "deep.jsonl").write_text(good[0] + "\n" + "[" * 10_000 + "\n")
    (files / "deep-header.jsonl").write_text("[" * 10_000 + "\n")
    (files / "long.jsonl").write_text(good[0] + "\n" + '"' + "x" * (9 * 1024 * 1024) + '"\n')
    for name in ("latin1.jsonl", "deep.jsonl", "deep-header.jsonl", "long.jsonl"):
        cases.append((files / name, 6))  # a file that is not a valid bundle: the audit fails, at its line
    for path, code in cases:
        err = refused(cli("audit", "--verify-export", str(path)), code)
        if code == 6:
            assert "line" in err, err


# -- M6: names, aliases and tag keys match the whole string --------------------------------------------

def test_a_trailing_newline_is_refused_in_names_aliases_and_tag_keys(cli, setup) -> None:
    art = setup["art"]
    refused(cli("register", "resnet\n", "--artifact", art), 2)
    refused(cli("alias", "m@1", "production\n"), 2)
    refused(cli("tag", "m@1", "k\n=v"), 2)
    refused(cli("show", "m\n@1"), 2)
    refused(cli("metrics", "m@1", "acc\n=1"), 2)
    assert head(setup["home"]) == setup["head"]


# -- L4: ASCII digits only -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["show", "m@\uff11"], ["show", "m@\u0663"], ["show", "m", "--as-of", "#\uff11"],
                                  ["metrics", "m@1", "acc=\u0663"], ["log", "--since", "\uff11"],
                                  ["list", "--limit", "\u0663"], ["gc", "--grace", "\u0663d"]])
def test_unicode_digits_are_refused(cli, setup, argv: list[str]) -> None:
    refused(cli(*argv), 2)
    assert head(setup["home"]) == setup["head"]


# -- L5: controls, C1 and bidi overrides in tag values ----------------------------------------------------

@pytest.mark.parametrize("value", ["a\x7fb", "a\x9bb", "a\u202eb", "a\u2066b", "a\u200fb", "a\x1bb", "a\nb"])
def test_control_and_bidi_characters_are_refused_in_tag_values(cli, setup, value: str) -> None:
    refused(cli("tag", "m@1", f"k={value}"), 2)
    refused(cli("register", "n", "--artifact", setup["art"], "--tag", f"k={value}"), 2)
    assert head(setup["home"]) == setup["head"]


def test_ordinary_unicode_and_tabs_stay_allowed_in_tag_values(cli, setup) -> None:
    code, _, err = cli("tag", "m@1", "k=café ↔ naïve\tx")
    assert code == 0, err


# -- M5: every human output escapes what could rewrite a terminal ---------------------------------------

@pytest.mark.local_only("sets a hostile actor through MLEDGER_ACTOR; over HTTP the actor is the token's name")
def test_human_output_escapes_descriptions_file_names_tags_and_actors(cli, setup, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "\x1b[31mred\x1b[0m\r").write_text("x")
    (folder / "two\nlines").write_text("y")
    monkeypatch.setenv("MLEDGER_ACTOR", "root\u202e\x9b")  # printable enough for the config, not for a terminal
    description = "ResNet\x1b[8m\u202e"
    code, out, err = cli("register", "evil", "--artifact", str(folder), "--description", description,
                         "--tag", "k=a\tb", "--json")
    assert code == 0, err
    assert json.loads(out)["description"] == description  # JSON output unchanged
    for argv in (["show", "evil@1"], ["show", "evil"], ["history", "evil@1"], ["log"], ["list"],
                 ["diff", "m@1", "evil@1"]):
        code, out, err = cli(*argv)
        assert code == 0, err
        for bad in ("\x1b", "\r", "\u202e", "\x9b", "\t"):
            assert bad not in out, (argv, out)
        assert not [line for line in out.splitlines() if line.lstrip().startswith("lines")], (argv, out)
    code, out, _ = cli("show", "evil@1")
    assert "ResNet\\x1b[8m\\u202e" in out
    assert "\\x1b[31mred\\x1b[0m\\x0d" in out and "two\\x0alines" in out
    assert "root\\u202e\\x9b" in out
    assert len(out.splitlines()) == 16  # no forged line
    code, out, _ = cli("show", "evil@1", "--json")
    assert json.loads(out)["created_by"] == "root\u202e\x9b"


def test_plain_leaves_ordinary_text_alone() -> None:
    assert plain("café — naïve 日本") == "café — naïve 日本"
    assert plain("a\x1bb\u2028c\x00") == "a\\x1bb\\u2028c\\x00"


# -- L1: one-line errors with the right exit code -----------------------------------------------------------

def test_huge_metric_integers_are_refused(cli, setup) -> None:
    refused(cli("metrics", "m@1", "acc=" + "9" * 4000), 2)
    refused(cli("metrics", "m@1", f"acc={2**63}"), 2)
    refused(cli("metrics", "m@1", f"acc={-(2**63) - 1}"), 2)
    assert head(setup["home"]) == setup["head"]
    assert cli("metrics", "m@1", f"acc={2**63 - 1}")[0] == 0


def test_params_nested_beyond_the_limit_are_refused_and_an_update_of_a_deep_parent_merges(cli, setup) -> None:
    """L1: a 500-deep parent made ``update`` die in a RecursionError. Params are now bounded in depth at the
    door (``eventstore.schemas.JSON_DEPTH_MAX``), and a parent at that depth merges."""
    files: Path = setup["files"]

    def nested(depth: int) -> dict:
        deep: dict = {}
        cur = deep
        for _ in range(depth - 1):
            cur["a"] = {}
            cur = cur["a"]
        return deep

    (files / "deep600.json").write_text(json.dumps(nested(600)))
    code, _, err = cli("register", "deep", "--artifact", setup["art"], "--params", f"@{files / 'deep600.json'}")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert cli("show", "deep")[0] != 0  # nothing was appended
    (files / "deep.json").write_text(json.dumps(nested(JSON_DEPTH_MAX)))
    assert cli("register", "deep", "--artifact", setup["art"], "--params", f"@{files / 'deep.json'}")[0] == 0
    code, out, err = cli("update", "deep@1", "--params", '{"b": 1}', "--json")
    assert code == 0, err
    params = json.loads(out)["params"]
    assert params["b"] == 1 and "a" in params


def test_merge_patch_follows_rfc_7386_without_recursion() -> None:
    # RFC 7386 appendix A, a few rows.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    target = {"keep": [{"x": [1, {"y": 2}]}]}
    result = merge_patch(target, {"new": 1})
    result["keep"][0]["x"][1]["y"] = 99
    assert target == {"keep": [{"x": [1, {"y": 2}]}]}  # a deep copy: the parent's params are not touched
    deep: dict = {}
    cur = deep
    for _ in range(5000):
        cur["a"] = {}
        cur = cur["a"]
    merged = merge_patch(deep, {"a": {"a": None}})
    assert merged == {"a": {}}


@pytest.mark.parametrize("argv,code", [
    (["pull", "m@1", "nosuch://x/y"], 2),
    (["pull", "m@1", "http://127.0.0.1:9/x"], 7),
    (["audit", "--export", "/nonexistent/x"], 2),
    (["gc", "--grace", "1e300d"], 2),
    (["gc", "--grace", "inf"], 2),
    (["log", "--follow", "--interval", "-1"], 2),
    (["log", "--follow", "--interval", "nan"], 2),
    (["list", "--search", "a\x00b"], 2),
])
def test_one_line_errors(cli, setup, tmp_path: Path, argv: list[str], code: int) -> None:
    refused(cli(*argv), code)
    assert head(setup["home"]) == setup["head"]


@pytest.mark.local_only("audit --export reads the database itself; over HTTP it is refused by design")
def test_audit_export_to_a_directory_is_one_line(cli, setup, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    refused(cli("audit", "--export", str(tmp_path / "d")), 7)
    refused(cli("audit", "--export", str(tmp_path / "d"), "--force"), 7)
    assert list((tmp_path / "d").iterdir()) == []


def test_the_console_script_refuses_a_fifo_param_at_once(setup) -> None:
    """Through the installed ``mledger``: ``--params @fifo`` once blocked for ever."""
    fifo = setup["files"] / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([*mledger_command(), "update", "m@1", "--params", f"@{fifo}"],
                          env=subprocess_env(setup["home"]), capture_output=True, text=True, timeout=120)
    refused((proc.returncode, proc.stdout, proc.stderr), 2)
    assert head(setup["home"]) == setup["head"]
