"""Acceptance: every file of the public scanners' corpora (``shared/corpora/pickles``: picklescan, fickling,
modelscan; 229 files, ``expected.tsv`` says what each must be) goes through registration in a real registry.
Every ``unsafe`` file is flagged, every ``safe`` one is not (except the documented "not inspected" cases),
nothing crashes, and nothing runs: the payloads write files, print and open connections, and none of that
may happen while the registry reads them."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from services import ROOT, unavailable

# ../shared beside the repository (CI clones it so); a worktree elsewhere names it in MLEDGER_PICKLE_CORPUS.
CORPUS = Path(os.environ.get("MLEDGER_PICKLE_CORPUS") or ROOT.parent / "shared" / "corpora" / "pickles")

# Encrypted zip members cannot be read, so they are "not inspected" (docs/operations.md, "Pickle scanning").
NOT_INSPECTED_BY_DESIGN = {
    "picklescan-data/benign_password_protected.zip": "encrypted zip member",
    "modelscan/password_protected.zip": "encrypted zip member",
}
# Files the payloads would create, relative to the working directory or absolute.
PAYLOAD_FILES = ("pwned_config.env", "evil.log", "$(echo pwned)", "/tmp/malicious.txt", "/tmp/malicious.py")


def _expected() -> list[tuple[str, str]]:
    if not (CORPUS / "expected.tsv").is_file():
        unavailable(f"the pickle corpora at {CORPUS}")
    with open(CORPUS / "expected.tsv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    return [(path, verdict) for path, verdict, _why in rows[1:]]


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def test_every_corpus_file_is_judged_as_expected_and_nothing_runs(reg, tmp_path: Path, monkeypatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    rows = _expected()
    assert len(rows) == 229, "the corpus changed: update this test's documented exceptions"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # relative payload paths land here, where the test looks
    absolute_before = {p: _stat(p) for p in PAYLOAD_FILES if p.startswith("/")}

    wrong = []
    for i, (rel, expected) in enumerate(rows):
        version = reg.register(f"corpus-{i}", artifact=str(CORPUS / rel))
        art = version.to_json()["artifact"]
        assert version.status == "ready", (rel, art)
        if expected == "unsafe" and not art["unsafe"]:
            wrong.append(f"{rel}: unsafe file recorded safe ({art.get('detail')})")
        if expected == "safe" and art["unsafe"]:
            reason = NOT_INSPECTED_BY_DESIGN.get(rel)
            if reason is None or reason not in art.get("detail", ""):
                wrong.append(f"{rel}: safe file flagged ({art.get('detail')})")
        if art["unsafe"]:
            # The record says why: the imports that made it unsafe, or what could not be inspected.
            assert art.get("imports") or "not inspected" in art.get("detail", "") \
                or "could not be resolved" in art.get("detail", ""), (rel, art)
    assert not wrong, "\n".join(wrong)

    assert list(work.iterdir()) == [], "a payload wrote into the working directory"
    assert {p: _stat(p) for p in PAYLOAD_FILES if p.startswith("/")} == absolute_before, "a payload wrote a file"
    out, err = capfd.readouterr()
    assert "pwned" not in out + err and "PROOF_OF_CONCEPT" not in out + err and "INJECTED" not in out + err


def test_a_corpus_verdict_names_only_the_imports_that_made_it_unsafe(reg) -> None:
    _expected()
    # pytorch_magic_bypass.pt: a legacy torch file that also imports allowed torch names.
    version = reg.register("bypass", artifact=str(CORPUS / "picklescan-data" / "pytorch_magic_bypass.pt"))
    art = version.to_json()["artifact"]
    assert art["unsafe"] is True
    assert set(art["imports"]) == {"builtins.eval", "posix.system"}, art["imports"]
