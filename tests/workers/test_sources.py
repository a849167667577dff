"""``MLEDGER_SOURCES``: which sources a worker may read for someone else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore.errors import ValidationError
from workers.sources import SourcePolicy


def test_nothing_is_allowed_by_default() -> None:
    for text in (None, "", "  ,  "):
        policy = SourcePolicy.parse(text)
        assert not policy.allows("/etc/passwd") and not policy.allows("http://127.0.0.1:18777/meta.json")


def test_a_prefix_matches_whole_segments_and_resolves_links(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "models-secret").mkdir()
    (models / "escape").symlink_to(tmp_path / "models-secret")
    policy = SourcePolicy.parse(f"/nonexistent/x{os.pathsep}{models},https://host/releases/")
    assert policy.allows(str(models / "a.bin")) and policy.allows(str(models))
    assert not policy.allows(str(tmp_path / "models-secret" / "a.bin"))
    assert not policy.allows(str(models / ".." / "models-secret" / "a.bin"))
    assert not policy.allows(str(models / "escape" / "a.bin"))
    assert policy.local_prefix(str(models / "sub" / "a.bin")) == os.path.realpath(models)
    assert policy.allows("https://host/releases/v1/model.bin")
    assert not policy.allows("https://host/releases-old/model.bin")
    assert not policy.allows("https://host/releases/../admin")
    assert not policy.allows("https://host/releases/%2e%2e/admin")
    assert not policy.allows("https://host@evil.example/releases/x")
    assert not policy.allows("relative/path")


def test_a_relative_prefix_is_refused_in_one_line() -> None:
    with pytest.raises(ValidationError, match="neither an absolute path nor a URL"):
        SourcePolicy.parse("models")
