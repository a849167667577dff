"""Acceptance: artifacts are opaque bytes. A pickle whose ``__reduce__`` calls ``os.system`` is registered
through the console script without ever being executed; it is flagged ``unsafe`` with the import named,
and the human ``show`` warns."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import pytest


class _Canary:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_bytes(canary: Path, protocol: int) -> bytes:
    # Dumping only records the reference to os.system; nothing runs here.
    return pickle.dumps({"weights": [1.0, 2.0], "hook": _Canary(f"touch {canary}")}, protocol=protocol)


def _evil_pickle(path: Path, canary: Path, protocol: int) -> Path:
    path.write_bytes(_evil_bytes(canary, protocol))
    return path


def _evil_torch_zip(path: Path, canary: Path) -> Path:
    """A checkpoint laid out as torch.save writes it, whose data.pkl runs os.system under torch.load."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _evil_bytes(canary, 2))
        z.writestr("archive/version", "3\n")
    return path


def _evil_joblib(path: Path, canary: Path) -> Path:
    import joblib

    joblib.dump({"weights": [1.0, 2.0], "hook": _Canary(f"touch {canary}")}, path)
    return path


@pytest.mark.parametrize("layout,protocol", [("file", 0), ("file", 2), ("file", 5), ("directory", 4),
                                             ("model.pt", 2), ("model.joblib", 4), ("pytorch_model.bin", 2)])
def test_os_system_pickle_is_flagged_never_run(layout: str, protocol: int, home: Path, tmp_path: Path,
                                               mledger_argv, child_env) -> None:
    canary = tmp_path / "CANARY"
    if layout == "file":
        artifact = _evil_pickle(tmp_path / "model.pkl", canary, protocol)
    elif layout == "model.pt":
        artifact = _evil_torch_zip(tmp_path / layout, canary)
    elif layout == "model.joblib":
        artifact = _evil_joblib(tmp_path / layout, canary)
    elif layout == "pytorch_model.bin":
        artifact = _evil_pickle(tmp_path / layout, canary, protocol)
    else:
        artifact = tmp_path / "bundle"
        artifact.mkdir()
        (artifact / "config.json").write_text("{}")
        _evil_pickle(artifact / "model.pkl", canary, protocol)
    env = child_env(home)

    def mledger(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*mledger_argv, *argv], env=env, capture_output=True, text=True, timeout=60,
                              cwd=str(tmp_path))

    done = mledger("register", "evil", "--artifact", str(artifact))
    assert done.returncode == 0, done.stderr
    assert not canary.exists(), "registering executed the pickle"

    shown = mledger("show", "evil@1", "--json")
    assert shown.returncode == 0, shown.stderr
    art = json.loads(shown.stdout)["artifact"]
    assert art["unsafe"] is True
    assert {"os.system", "posix.system"} & set(art.get("imports") or ()), art

    human = mledger("show", "evil@1")
    assert human.returncode == 0, human.stderr
    assert "WARNING" in human.stdout and "system" in human.stdout, human.stdout
    warning = next(line for line in human.stdout.splitlines() if "WARNING" in line)
    # Only what made it unsafe is named, not the allowed imports around it.
    assert "builtins.list" not in warning and "collections" not in warning, warning

    # Pulling hands the bytes back untouched, still without running them.
    pulled = mledger("pull", "evil@1", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    assert not canary.exists(), "the pickle was executed"


def test_show_names_only_the_imports_that_made_a_file_unsafe(reg, tmp_path: Path) -> None:
    from modelledger.output import version_detail

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"state": __import__("collections").OrderedDict(a=1), "hook": _Canary("true")},
                                  protocol=4))
    v = reg.register("mixed", artifact=str(path))
    art = v.to_json()["artifact"]
    assert art["unsafe"] is True and art["imports"] == ["posix.system"]
    warning = next(line for line in version_detail(v).splitlines() if "WARNING" in line)
    assert "posix.system" in warning and "OrderedDict" not in warning, warning


def test_a_file_that_is_not_inspected_says_so_in_show(reg, tmp_path: Path) -> None:
    from modelledger.output import version_detail

    path = tmp_path / "model.7z"
    path.write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 64)
    v = reg.register("archive", artifact=str(path))
    assert v.to_json()["artifact"]["unsafe"] is True
    warning = next(line for line in version_detail(v).splitlines() if "WARNING" in line)
    assert "not inspected" in warning and "7z" in warning, warning


def test_plain_pickle_is_not_flagged(reg, tmp_path: Path) -> None:
    """The contrast: a pickle of plain data is not unsafe (the flag is not raised for every pickle)."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "name": "plain"}, protocol=4))
    v = reg.register("plain", artifact=str(path))
    assert v.status == "ready"
    assert v.to_json()["artifact"]["unsafe"] is False
