"""A description changes without a new version: ``Described`` (MLflow's update calls, an import's later
changes). The past keeps the old text; search, restore and history follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.errors import ModelLedgerError, NotFoundError, ValidationError
from eventstore.schemas import DESCRIPTION_MAX
from modelledger import Registry


@pytest.fixture
def reg(home: Path, tmp_path: Path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    with Registry.open(home) as r:
        r.register("churn", str(weights), description="first text")
        r.register("churn", str(weights), description="second version")
        yield r


def test_a_description_changes_in_place_and_the_past_keeps_the_old(reg: Registry) -> None:
    before = reg.head()
    events = reg.describe("churn@1", "gradient boosted, retrained")
    assert [(e.type, e.data["version"], e.data["previous"]) for e in events] == [("Described", 1, "first text")]
    reg.describe("churn", "the churn model")
    assert reg.get("churn@1").description == "gradient boosted, retrained"
    assert reg.model("churn").description == "the churn model"
    assert reg.model("churn").latest == 2 and len(reg.model("churn").versions) == 2  # no new version
    past = reg.catalog(as_of=before)
    assert past.get("churn@1").description == "first text"
    assert past.model("churn").description == "first text"
    # Search reads the new words (and the past the old ones).
    assert [v.ref for v in reg.search(keyword="retrained")] == ["churn@1"]
    assert not past.search(keyword="retrained")
    # The same text again changes nothing.
    head = reg.head()
    assert reg.describe("churn@1", "gradient boosted, retrained") == [] and reg.head() == head
    # Restore puts the old text back, as an ordinary event.
    reg.restore("churn", as_of=before)
    assert reg.get("churn@1").description == "first text"
    assert reg.model("churn").description == "first text"
    assert [e.type for e in reg.history("churn")][-2:] == ["Described", "Described"]
    assert reg.audit(deep=True).ok


def test_bad_descriptions_are_refused_and_change_nothing(reg: Registry) -> None:
    head = reg.head()
    with pytest.raises(ValidationError):
        reg.describe("churn@1", "x" * (DESCRIPTION_MAX + 1))
    with pytest.raises(NotFoundError):
        reg.describe("churn@9", "nope")
    with pytest.raises(NotFoundError):
        reg.describe("ghost", "nope")
    assert reg.head() == head
    reg.delete("churn@2")
    head = reg.head()
    with pytest.raises(ModelLedgerError, match="deleted"):
        reg.describe("churn@2", "on a deleted version")
    assert reg.head() == head


def test_history_shows_the_new_text(reg: Registry, cli) -> None:
    reg.describe("churn@2", "shipped on Monday")
    code, out, _ = cli("history", "churn@2")
    assert code == 0 and "Described" in out and "shipped on Monday" in out
